#!/usr/bin/env -S MALLOC_ARENA_MAX=2 node --max-semi-space-size=4
// The `charmflow` command. Runs dist/main.js (built by `npm install` and
// `npm start`, see scripts/build.js) when it is newer than every TypeScript
// source, else the sources themselves through tsx's loader.
//
// --max-semi-space-size=4 (MB; `npm start` and the image pass it too): V8's young
// generation stays small, which keeps a busy controller's resident memory about
// 60 MB lower for a little more garbage collection. MALLOC_ARENA_MAX=2 (in the same
// three places): glibc's per-thread malloc arenas (Temporal's core threads, libuv's
// pool) otherwise held about 80 MB more of a busy controller's memory.
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
