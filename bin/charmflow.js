#!/usr/bin/env node
// The `charmflow` command. Runs dist/main.js (built by `npm install` and
// `npm start`, see scripts/build.js) when it is newer than every TypeScript
// source, else the sources themselves through tsx's loader.
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const SOURCE_DIRS = ['activities', 'api', 'charm', 'cli', 'controller', 'store', 'workflows'];

function newestSource(dir, newest = 0) {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) newest = newestSource(p, newest);
    else if (e.name.endsWith('.ts')) newest = Math.max(newest, statSync(p).mtimeMs);
  }
  return newest;
}

function bundleIsFresh() {
  let built;
  try {
    built = statSync(join(root, 'dist', 'main.js')).mtimeMs;
  } catch {
    return false;
  }
  return SOURCE_DIRS.every((d) => newestSource(join(root, d)) <= built);
}

if (process.env.CHARMFLOW_FROM_SOURCE !== '1' && bundleIsFresh()) {
  await import('../dist/main.js');
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../cli/main.ts');
}
