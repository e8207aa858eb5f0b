// The charm package: metadata, archives, config values, and building ops charms.
export * from './build-ops-charm.ts';
export * from './charm-archive.ts';
export * from './config-values.ts';
export * from './metadata.ts';
