// Supervises the embedded Temporal dev server (the Temporal CLI's `server start-dev`).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes.ts';

const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Finds the Temporal CLI the install step provided. */
export function findTemporalCli(): string {
  if (process.env.TEMPORAL_CLI) return process.env.TEMPORAL_CLI;
  const local = join(projectRoot, 'tools', 'bin', 'temporal');
  if (existsSync(local)) return local;
  const r = spawnSync('sh', ['-c', 'command -v temporal'], { encoding: 'utf8' });
  if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  throw new Error(
    'the Temporal CLI was not found: run `npm install` (it builds it into tools/bin), or set TEMPORAL_CLI=/path/to/temporal, or set TEMPORAL_ADDRESS to use an existing cluster',
  );
}

export interface TemporalServerOptions {
  dbFile: string;
  pidFile: string;
  logFile: string;
  port: number;
  uiPort: number;
  namespace: string;
  /** No Web UI (tests). */
  headless?: boolean;
}

export interface TemporalServer {
  address: string;
  uiUrl: string | null;
  child: ChildProcess;
  stop(): Promise<void>;
}

export function waitForPort(host: string, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolvePromise, reject) => {
    const attempt = () => {
      const sock = connect({ host, port });
      sock.once('connect', () => {
        sock.destroy();
        resolvePromise();
      });
      sock.once('error', () => {
        sock.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`));
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

/** Kills a dev server left behind by a controller that died without cleaning up. */
function killStale(pidFile: string): void {
  if (!existsSync(pidFile)) return;
  const pid = Number.parseInt(readFileSync(pidFile, 'utf8'), 10);
  if (Number.isInteger(pid) && pid > 1) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (cmdline.includes('start-dev')) process.kill(-pid, 'SIGTERM');
    } catch {
      // gone already
    }
  }
  rmSync(pidFile, { force: true });
}

export async function startTemporalServer(opts: TemporalServerOptions): Promise<TemporalServer> {
  const cli = findTemporalCli();
  mkdirSync(dirname(opts.dbFile), { recursive: true });
  killStale(opts.pidFile);
  const args = [
    'server',
    'start-dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(opts.port),
    '--db-filename',
    opts.dbFile,
    '--namespace',
    opts.namespace,
    '--log-level',
    'warn',
    // write-ahead log, synced at checkpoints: durable across a crash of any
    // process, far fewer fsyncs per workflow task than the rollback journal
    '--sqlite-pragma',
    'journal_mode=wal',
    '--sqlite-pragma',
    'synchronous=normal',
    // an activity scheduled by a workflow task goes straight back to the worker
    // that completed it, skipping a round through the task queue
    '--dynamic-config-value',
    'system.enableActivityEagerExecution=true',
  ];
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTES)) args.push('--search-attribute', `${name}=${type}`);
  if (opts.headless) args.push('--headless');
  else args.push('--ui-port', String(opts.uiPort));
  const log = openSync(opts.logFile, 'a');
  // Own process group, so stopping it also stops anything it started.
  const child = spawn(cli, args, { stdio: ['ignore', log, log], detached: true });
  writeFileSync(opts.pidFile, String(child.pid));
  let exited = false;
  const exitPromise = new Promise<void>((r) =>
    child.once('exit', () => {
      exited = true;
      r();
    }),
  );
  try {
    await Promise.race([
      waitForPort('127.0.0.1', opts.port, 60_000),
      exitPromise.then(() => {
        throw new Error(`the Temporal dev server exited at start; see ${opts.logFile}`);
      }),
    ]);
  } catch (err) {
    if (!exited) process.kill(-child.pid!, 'SIGKILL');
    throw err;
  }
  return {
    address: `127.0.0.1:${opts.port}`,
    uiUrl: opts.headless ? null : `http://127.0.0.1:${opts.uiPort}`,
    child,
    async stop() {
      if (exited) return;
      try {
        process.kill(-child.pid!, 'SIGTERM');
      } catch {
        return;
      }
      const timer = setTimeout(() => {
        try {
          process.kill(-child.pid!, 'SIGKILL');
        } catch {
          // already gone
        }
      }, 5000);
      await exitPromise;
      clearTimeout(timer);
      rmSync(opts.pidFile, { force: true });
    },
  };
}
