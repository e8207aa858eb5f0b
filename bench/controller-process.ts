// A controller as users run it: `charmflow up` in a process of its own, with a
// fresh data dir and free ports.
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Operation } from '../api/schemas.ts';
import { ApiClient } from '../cli/api-client.ts';
import { waitForOperation } from '../cli/wait.ts';
import { cliPath, projectRoot } from '../test/helpers/cli.ts';
import { freePort } from '../test/helpers/ports.ts';
import { waitOperationEnd } from '../test/helpers/wait.ts';

export interface ControllerEnv extends Record<string, string> {
  CHARMFLOW_DATA_DIR: string;
  CHARMFLOW_API_PORT: string;
}

export async function controllerEnv(): Promise<ControllerEnv> {
  return {
    CHARMFLOW_DATA_DIR: mkdtempSync(join(tmpdir(), 'cf-bench-')),
    CHARMFLOW_API_PORT: String(await freePort()),
    CHARMFLOW_TEMPORAL_PORT: String(await freePort()),
    CHARMFLOW_TEMPORAL_UI_PORT: String(await freePort()),
  };
}

const discarded: string[] = [];

/**
 * A run's data dir is removed when the bench process ends, not at once: on an ext4
 * without a journal (this project's CI machines), for minutes after tens of
 * thousands of files are removed, every file created in their block groups walks
 * past them (up to ~9% of the host's CPU), so the next run in the same
 * `npm run bench` would pay for the last one's clean-up.
 */
export function discardDataDir(env: ControllerEnv): void {
  // CHARMFLOW_BENCH_KEEP_DATA=1 keeps them, to look into a run afterwards
  if (process.env.CHARMFLOW_BENCH_KEEP_DATA === '1') console.log(`  (data dir kept: ${env.CHARMFLOW_DATA_DIR})`);
  else discarded.push(env.CHARMFLOW_DATA_DIR);
}

function removeDiscarded(): void {
  for (const dir of discarded.splice(0)) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch (err) {
      // a controller stopped by the same Ctrl-C may still be writing into it
      console.error(`  (could not remove ${dir}: ${(err as Error).message})`);
    }
  }
}
process.once('exit', removeDiscarded);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    removeDiscarded();
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

/** The node flags and environment `npm start` runs the controller with, from package.json. */
function startCommand(): { flags: string[]; env: Record<string, string> } {
  const pkg = JSON.parse(readFileSync(join(projectRoot, 'package.json'), 'utf8'));
  const m = /(?:env ((?:\w+=\S* )*))?node ((?:--\S+ )*)(?:bin\/charmflow\.js up|scripts\/start\.js)/.exec(
    pkg.scripts.start,
  );
  if (!m) throw new Error(`cannot read the controller's node flags from "npm start": ${pkg.scripts.start}`);
  const env = Object.fromEntries(
    (m[1] ?? '')
      .split(' ')
      .filter(Boolean)
      .map((a) => [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)]),
  );
  return { flags: m[2].split(' ').filter(Boolean), env };
}

/** Starts `charmflow up` and waits for a healthy API; ms is the time that took. */
export async function startUp(env: ControllerEnv, args: string[] = []): Promise<{ child: ChildProcess; ms: number }> {
  const t0 = performance.now();
  // extra flags for the controller, e.g. CHARMFLOW_BENCH_NODE_FLAGS=--cpu-prof to profile it
  const start = startCommand();
  const flags = [...start.flags, ...(process.env.CHARMFLOW_BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean)];
  const child = spawn(process.execPath, [...flags, cliPath, 'up', '--quiet', ...args], {
    env: { ...start.env, ...process.env, ...env },
    stdio: 'ignore',
  });
  const url = `http://127.0.0.1:${env.CHARMFLOW_API_PORT}/healthz`;
  while (true) {
    if (child.exitCode !== null) throw new Error('up exited');
    try {
      if ((await fetch(url)).ok) return { child, ms: performance.now() - t0 };
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function stopUp(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const done = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await done;
}

/** A small API client with the controller's admin token. */
export function apiClient(env: ControllerEnv) {
  const base = `http://127.0.0.1:${env.CHARMFLOW_API_PORT}`;
  const token = readFileSync(join(env.CHARMFLOW_DATA_DIR, 'admin-token'), 'utf8').trim();
  const headers = { authorization: `Bearer ${token}` };
  async function api(method: string, path: string, body?: unknown): Promise<{ status: number; body: any }> {
    const r = await fetch(`${base}${path}`, {
      method,
      headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    return { status: r.status, body: await r.json() };
  }
  async function upload(path: string, bytes: Buffer) {
    const r = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(bytes),
    });
    return { status: r.status, body: await r.json() };
  }
  const waitOperation = (id: number, timeoutMs = 60_000) => waitOperationEnd((path) => api('GET', path), id, timeoutMs);
  /**
   * Follows an operation the way `charmflow` follows one (its wait loop, its poll
   * rate): it ends when the controller records the operation finished.
   */
  const followAsCli = (operation: Operation, timeoutMs: number) =>
    waitForOperation(new ApiClient({ url: base, token }), operation, { quiet: true, timeoutMs }).catch(
      (err: Error) => ({ state: 'failed', error: err.message, finishedAt: null }),
    );
  return { base, token, headers, api, upload, waitOperation, followAsCli };
}
