// `charmflow up` as a user runs it: one process tree, stopped cleanly by a signal,
// finding all its state again on restart.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { startTemporalServer } from '../controller/temporal-server.ts';
import { cliPath, runCli } from './helpers/cli.ts';
import { freePort } from './helpers/ports.ts';
import { createTestDatabase, postgresUrl } from './helpers/postgres.ts';

interface Up {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

/** Every `up` a test started, stopped at the end even when the test failed half way. */
const started: Up[] = [];

function startUp(env: Record<string, string>, command = [process.execPath, cliPath, 'up']): Up {
  const child = spawn(command[0], [...command.slice(1), '--headless', '--quiet'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => {
    out += d;
  });
  child.stderr!.on('data', (d) => {
    out += d;
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
  const up = { child, output: () => out, exited };
  started.push(up);
  return up;
}

async function waitHealthy(url: string, up: Up, timeoutMs = 90_000): Promise<number> {
  const started = Date.now();
  while (Date.now() - started < timeoutMs) {
    if (up.child.exitCode !== null) throw new Error(`up exited early:\n${up.output()}`);
    try {
      const r = await fetch(`${url}/healthz`);
      if (r.ok) return Date.now() - started;
    } catch {
      // not yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`not healthy after ${timeoutMs} ms:\n${up.output()}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function processesMentioning(text: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(text)) pids.push(Number(entry));
    } catch {
      // raced with exit
    }
  }
  return pids;
}

/** Every process descended from pid (children first seen, then theirs). */
function descendants(pid: number): number[] {
  const parentOf = new Map<number, number>();
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      parentOf.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      // raced with exit
    }
  }
  const found: number[] = [];
  const walk = (p: number) => {
    for (const [child, parent] of parentOf) {
      if (parent === p) {
        found.push(child);
        walk(child);
      }
    }
  };
  walk(pid);
  return found;
}

async function waitGone(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let left = pids.filter(alive);
  while (left.length > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 100));
    left = left.filter(alive);
  }
  return left;
}

function describeProcs(pids: number[]): string {
  return pids
    .map((p) => {
      try {
        return `${p}: ${readFileSync(`/proc/${p}/cmdline`, 'utf8').replaceAll('\0', ' ').slice(0, 120)}`;
      } catch {
        return `${p}: (gone)`;
      }
    })
    .join('\n');
}

describe('charmflow up', () => {
  const dirs: string[] = [];
  after(async () => {
    for (const up of started) {
      if (up.child.exitCode !== null || up.child.signalCode !== null) continue;
      const tree = descendants(up.child.pid!);
      up.child.kill('SIGTERM');
      await Promise.race([up.exited, new Promise((r) => setTimeout(r, 15_000))]);
      for (const pid of [up.child.pid!, ...tree]) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  /** A new data dir and free ports for one `up`. */
  async function freshController(prefix: string) {
    const dataDir = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(dataDir);
    const env = {
      CHARMFLOW_DATA_DIR: dataDir,
      CHARMFLOW_API_PORT: String(await freePort()),
      CHARMFLOW_TEMPORAL_PORT: String(await freePort()),
      CHARMFLOW_TEMPORAL_UI_PORT: String(await freePort()),
    };
    return { dataDir, env };
  }

  test('starts, serves, stops on SIGTERM with no orphan, and finds its state again', async () => {
    const { dataDir, env } = await freshController('cf-up-');
    const url = `http://127.0.0.1:${env.CHARMFLOW_API_PORT}`;
    const first = startUp(env);
    const firstMs = await waitHealthy(url, first);
    // readiness banner says where everything is
    while (!first.output().includes('Press Ctrl-C')) await new Promise((r) => setTimeout(r, 50));
    assert.match(first.output(), new RegExp(`API:\\s+${url}/v1`));
    assert.match(first.output(), /API docs:\s+http.*\/docs/);
    assert.match(first.output(), /Temporal UI:/);
    assert.match(first.output(), new RegExp(`Admin token:\\s+${join(dataDir, 'admin-token')}`));
    const tokenFile = join(dataDir, 'admin-token');
    assert.equal(statSync(tokenFile).mode & 0o777, 0o600, 'admin token readable by its owner only');

    const cliEnv = { CHARMFLOW_DATA_DIR: dataDir };
    const add = await runCli(['add-model', 'kept'], cliEnv);
    assert.equal(add.code, 0, add.stderr);
    const temporalPid = Number(readFileSync(join(dataDir, 'temporal.pid'), 'utf8'));
    assert.ok(alive(temporalPid), 'dev server running');

    first.child.kill('SIGTERM');
    assert.equal(await first.exited, 0, first.output());
    assert.ok(!alive(temporalPid), 'dev server stopped with the controller');
    assert.deepEqual(processesMentioning(dataDir), [], 'no process left that uses the data dir');
    assert.ok(!existsSync(join(dataDir, 'temporal.pid')));

    const second = startUp(env);
    const secondMs = await waitHealthy(url, second);
    const models = JSON.parse((await runCli(['models', '--format', 'json'], cliEnv)).stdout);
    assert.deepEqual(
      models.models.map((m: { name: string }) => m.name),
      ['default', 'kept'],
    );
    // the old admin token still works: same file, same token
    const ops = JSON.parse((await runCli(['operations', '--format', 'json'], cliEnv)).stdout);
    assert.ok(ops.operations.length >= 2);
    second.child.kill('SIGINT');
    assert.equal(await second.exited, 0);
    assert.deepEqual(processesMentioning(dataDir), []);
    process.stderr.write(`# up: first start healthy in ${firstMs} ms, restart in ${secondMs} ms\n`);
  });

  test('a signal the moment the API answers (start-up not yet finished) still stops everything', async () => {
    const { dataDir, env } = await freshController('cf-up-early-');
    const up = startUp(env);
    await waitHealthy(`http://127.0.0.1:${env.CHARMFLOW_API_PORT}`, up);
    up.child.kill('SIGTERM');
    const code = await Promise.race([up.exited, new Promise((r) => setTimeout(() => r('timeout'), 30_000))]);
    assert.equal(code, 0, up.output());
    assert.deepEqual(processesMentioning(dataDir), []);
  });

  test('`npm start` stops, with everything it started, on a SIGTERM sent to npm alone', async () => {
    const { dataDir, env } = await freshController('cf-npm-start-');
    const up = startUp(env, ['npm', 'start', '--silent', '--']);
    await waitHealthy(`http://127.0.0.1:${env.CHARMFLOW_API_PORT}`, up);
    const started = descendants(up.child.pid!);
    const names = describeProcs(started);
    assert.match(names, /start-dev/, `the dev server is among them:\n${names}`);
    assert.doesNotMatch(names, /esbuild/, `the build's service does not outlive the build:\n${names}`);
    // npm's script became the controller itself (no shell between), young generation still small
    const [script] = descendants(up.child.pid!).filter((p) => {
      const stat = readFileSync(`/proc/${p}/stat`, 'utf8');
      return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]) === up.child.pid;
    });
    assert.match(describeProcs([script]), /^\d+: node --max-semi-space-size=4 scripts\/start\.js --headless --quiet/);
    // what a process manager does: signal the process it started, npm, and nothing else
    const t0 = Date.now();
    up.child.kill('SIGTERM');
    const left = await waitGone(started, 15_000);
    assert.deepEqual(left, [], `still running 15 s after SIGTERM to npm:\n${describeProcs(left)}`);
    assert.deepEqual(processesMentioning(dataDir), []);
    await up.exited;
    process.stderr.write(
      `# npm start: all ${started.length} processes gone ${Date.now() - t0} ms after SIGTERM to npm\n`,
    );
  });

  test('the dev server is restarted when it dies (/healthz says so meanwhile), and never outlives a SIGKILLed up', async () => {
    const { dataDir, env } = await freshController('cf-up-supervise-');
    const url = `http://127.0.0.1:${env.CHARMFLOW_API_PORT}`;
    const up = startUp(env);
    await waitHealthy(url, up);
    const healthy = await (await fetch(`${url}/healthz`)).json();
    assert.deepEqual(
      Object.fromEntries(Object.entries(healthy.parts).map(([k, v]) => [k, (v as { ok: boolean }).ok])),
      { store: true, temporal: true, worker: true },
    );

    const first = Number(readFileSync(join(dataDir, 'temporal.pid'), 'utf8'));
    assert.match(describeProcs([first]), /temporal server start-dev/);
    process.kill(first, 'SIGKILL');
    // down, named, until it is back
    let degraded: { status: number; body: any } | undefined;
    const deadline = Date.now() + 30_000;
    while (!degraded && Date.now() < deadline) {
      const r = await fetch(`${url}/healthz`);
      if (r.status !== 200) degraded = { status: r.status, body: await r.json() };
      else await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(degraded, '/healthz never reported the dead dev server');
    assert.equal(degraded.status, 503);
    assert.equal(degraded.body.status, 'degraded');
    assert.equal(degraded.body.parts.temporal.ok, false);
    assert.equal(degraded.body.parts.store.ok, true);
    assert.match(degraded.body.message, /temporal down/);
    const backMs = await waitHealthy(url, up, 60_000);
    const second = Number(readFileSync(join(dataDir, 'temporal.pid'), 'utf8'));
    assert.notEqual(second, first);
    assert.ok(alive(second));
    assert.match(up.output(), /Temporal dev server exited .*starting it again/);
    assert.match(up.output(), /Temporal dev server is up again/);
    // the worker and the API's client found the new server: a workflow-backed operation runs
    const add = await runCli(['add-model', 'after-restart'], { CHARMFLOW_DATA_DIR: dataDir });
    assert.equal(add.code, 0, add.stderr + up.output());

    // a controller killed outright leaves no dev server (nor its guard) behind
    const tree = descendants(up.child.pid!);
    assert.ok(tree.includes(second));
    const t0 = Date.now();
    up.child.kill('SIGKILL');
    await up.exited;
    const left = await waitGone(tree, 5000);
    process.stderr.write(`# up: guard and dev server gone ${Date.now() - t0} ms after SIGKILL of up\n`);
    assert.deepEqual(left, [], `left running 5 s after SIGKILL of up:\n${describeProcs(left)}`);
    assert.deepEqual(processesMentioning(dataDir), []);
    process.stderr.write(`# up: dev server back and healthy ${backMs} ms after it was killed\n`);
  });

  test('with TEMPORAL_ADDRESS and DATABASE_URL it uses them instead of embedded parts', {
    skip: postgresUrl ? undefined : 'CHARMFLOW_TEST_DATABASE_URL not set (CI sets it)',
  }, async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'cf-up-ext-'));
    dirs.push(dataDir);
    const pgdb = await createTestDatabase();
    const tport = await freePort();
    const temporal = await startTemporalServer({
      dbFile: join(dataDir, 'external-temporal.db'),
      pidFile: join(dataDir, 'external-temporal.pid'),
      logFile: join(dataDir, 'external-temporal.log'),
      port: tport,
      uiPort: await freePort(),
      namespace: 'default',
      headless: true,
    });
    try {
      const env = {
        CHARMFLOW_DATA_DIR: dataDir,
        CHARMFLOW_API_PORT: String(await freePort()),
        TEMPORAL_ADDRESS: `127.0.0.1:${tport}`,
        DATABASE_URL: pgdb.url,
      };
      const up = startUp(env);
      await waitHealthy(`http://127.0.0.1:${env.CHARMFLOW_API_PORT}`, up);
      const h = await (await fetch(`http://127.0.0.1:${env.CHARMFLOW_API_PORT}/healthz`)).json();
      assert.equal(h.store, 'postgres');
      assert.ok(!existsSync(join(dataDir, 'store')), 'no embedded store created');
      assert.ok(!existsSync(join(dataDir, 'temporal.db')), 'no embedded Temporal started');
      const add = await runCli(['add-model', 'pg-model'], { CHARMFLOW_DATA_DIR: dataDir });
      assert.equal(add.code, 0, add.stderr);
      up.child.kill('SIGTERM');
      assert.equal(await up.exited, 0);
    } finally {
      await temporal.stop();
      await pgdb.drop();
    }
  });
});
