// Bundles charmflow's own TypeScript (cli, controller, api, activities, store,
// charm) into dist/ (dist/main.js and the chunks it loads on demand, so a plain
// CLI command never loads the controller); packages in node_modules stay plain
// imports.
// bin/charmflow.js runs the bundle while it is newer than every source file, and
// the sources through tsx otherwise: a controller run from the bundle carries no
// TypeScript loader (about 90 MB less resident memory).
import { existsSync, rmSync } from 'node:fs';
import { build } from 'esbuild';

const root = new URL('..', import.meta.url).pathname;

if (!existsSync(`${root}/cli/main.ts`)) {
  // `npm ci` in an image build runs before the sources are copied in
  console.log('charmflow: no sources yet; dist/ not built');
  process.exit(0);
}
rmSync(`${root}/dist`, { recursive: true, force: true });
await build({
  absWorkingDir: root,
  entryPoints: ['cli/main.ts'],
  outdir: 'dist',
  bundle: true,
  splitting: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  // resolve(dirname(import.meta.url), '..') still names the project root from dist/
  packages: 'external',
  logLevel: 'warning',
});
