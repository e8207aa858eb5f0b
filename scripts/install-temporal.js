#!/usr/bin/env node
// Provides the Temporal CLI (its dev server is charmflow's embedded Temporal).
// Order: $TEMPORAL_CLI, a `temporal` on PATH, the project-local tools/bin/temporal,
// else build the pinned release with `go install`. Plain JS: it runs before deps are usable.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const TEMPORAL_CLI_VERSION = 'v1.5.1';
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const toolsBin = join(root, 'tools', 'bin');
const local = join(toolsBin, 'temporal');

function works(path) {
  const r = spawnSync(path, ['--version'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

function onPath() {
  const r = spawnSync('sh', ['-c', 'command -v temporal'], { encoding: 'utf8' });
  return r.status === 0 ? r.stdout.trim() : null;
}

function main() {
  if (process.env.CHARMFLOW_SKIP_TEMPORAL_CLI) {
    console.log('charmflow: CHARMFLOW_SKIP_TEMPORAL_CLI set; not providing the Temporal CLI (use TEMPORAL_ADDRESS)');
    return;
  }
  if (process.env.TEMPORAL_CLI) {
    const v = works(process.env.TEMPORAL_CLI);
    if (!v) fail(`TEMPORAL_CLI=${process.env.TEMPORAL_CLI} does not run ('--version' failed).`);
    console.log(`charmflow: using Temporal CLI from TEMPORAL_CLI (${v})`);
    return;
  }
  const found = onPath();
  if (found && works(found)) {
    console.log(`charmflow: using Temporal CLI on PATH: ${found}`);
    return;
  }
  if (existsSync(local) && works(local)) {
    console.log(`charmflow: Temporal CLI present at ${local}`);
    return;
  }
  const go = spawnSync('go', ['version'], { encoding: 'utf8' });
  if (go.status !== 0) {
    fail(
      'the Temporal CLI is missing and Go is not installed to build it.\n' +
        '  Either install Go (https://go.dev/dl, or `apt-get install golang`) and run `npm install` again,\n' +
        '  or install the Temporal CLI yourself and set TEMPORAL_CLI=/path/to/temporal.',
    );
  }
  mkdirSync(toolsBin, { recursive: true });
  console.log(
    `charmflow: building the Temporal CLI ${TEMPORAL_CLI_VERSION} into ${toolsBin} (first install only, a few minutes)...`,
  );
  try {
    execFileSync('go', ['install', `github.com/temporalio/cli/cmd/temporal@${TEMPORAL_CLI_VERSION}`], {
      stdio: 'inherit',
      env: { ...process.env, GOBIN: toolsBin, CGO_ENABLED: process.env.CGO_ENABLED ?? '0' },
    });
  } catch {
    fail(
      '`go install github.com/temporalio/cli/cmd/temporal` failed (see above). Set TEMPORAL_CLI to an existing binary to skip the build.',
    );
  }
  const v = works(local);
  if (!v) fail(`built ${local} but it does not run.`);
  console.log(`charmflow: Temporal CLI ready: ${v}`);
}

function fail(msg) {
  console.error(`charmflow install: ${msg}`);
  process.exit(1);
}

main();
