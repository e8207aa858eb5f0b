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

function startUp(env: Record<string, string>): Up {
  const child = spawn(process.execPath, [cliPath, 'up', '--headless', '--quiet'], {
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
  return { child, output: () => out, exited };
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

describe('charmflow up', () => {
  const dirs: string[] = [];
  after(() => {
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
