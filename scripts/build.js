// Bundles charmflow's own TypeScript (cli, controller, api, activities, store,
// charm) into dist/ (dist/main.js and the chunks it loads on demand, so a plain
// CLI command never loads the controller); packages in node_modules stay plain
// imports.
// bin/charmflow.js runs the bundle while it is newer than every source file, and
// the sources through tsx otherwise: a controller run from the bundle carries no
// TypeScript loader (about 90 MB less resident memory).
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build, stop } from 'esbuild';

const root = fileURLToPath(new URL('..', import.meta.url));

/**
 * Builds dist/; false when there are no sources to build (an image's `npm ci` before
 * the copy). The bundle is built aside and its files renamed into dist/ one by one,
 * main.js last, so a charmflow starting meanwhile never finds dist/ empty or half
 * written (chunk names are their content's hash: unchanged code keeps its files).
 */
export async function buildDist() {
  if (!existsSync(`${root}/cli/main.ts`)) return false;
  const dist = `${root}/dist`;
  const aside = `${dist}/.build-${process.pid}`;
  rmSync(aside, { recursive: true, force: true });
  await build({
    absWorkingDir: root,
    entryPoints: ['cli/main.ts'],
    outdir: aside,
    bundle: true,
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    // resolve(dirname(import.meta.url), '..') still names the project root from dist/
    packages: 'external',
    logLevel: 'warning',
  });
  // esbuild's service process would otherwise live (about 25 MB) as long as this one:
  // `npm start` goes on to run the controller in this process
  await stop();
  mkdirSync(dist, { recursive: true });
  const built = readdirSync(aside).sort((a, b) => Number(a === 'main.js') - Number(b === 'main.js'));
  for (const f of built) renameSync(`${aside}/${f}`, `${dist}/${f}`);
  rmSync(aside, { recursive: true, force: true });
  for (const f of readdirSync(dist)) {
    if (!built.includes(f) && !f.startsWith('.build-')) rmSync(`${dist}/${f}`, { recursive: true, force: true });
  }
  return true;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (!(await buildDist())) console.log('charmflow: no sources yet; dist/ not built');
}
