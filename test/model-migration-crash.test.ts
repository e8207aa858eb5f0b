// migrate-model with the source's worker killed in the middle (issue 11): the source
// runs its API and its worker as separate processes on a shared Postgres store, as in
// production; the worker is killed while the migration waits for the target, and a new
// one takes over. The migration must finish (the target runs the model, the source has
// let go of it) without running any hook twice, while kv-web keeps serving.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { type CliResult, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { KV_STORE_CHARM, KV_WEB_CHARM, pollKvWeb, waitForKvWebConnected } from './helpers/kv-charms.ts';
import { createTestDatabase, postgresUrl } from './helpers/postgres.ts';
import { settle } from './helpers/relations.ts';
import { waitFor } from './helpers/wait.ts';
import { spawnWorker } from './helpers/worker.ts';

const unsupported =
  fleetUnsupportedReason() ??
  (postgresUrl ? undefined : 'needs CHARMFLOW_TEST_DATABASE_URL (a Postgres the API and the worker share)');

describe('migrate-model with the source worker killed mid-way', { skip: unsupported }, () => {
  let fleet: Fleet;
  let src: TestController;
  let dst: TestController;
  let dir: string;
  let dropDb: () => Promise<void>;
  const workers: ChildProcess[] = [];

  const cli = (c: TestController, ...args: string[]): Promise<CliResult> =>
    runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir }, 240_000);
  const ok = async (c: TestController, ...args: string[]) => {
    const r = await cli(c, ...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const startWorker = () => {
    const w = spawnWorker(src, join(dir, `worker-${workers.length}.log`));
    workers.push(w);
    return w;
  };
  /** Hook runs of the model's units that are not periodic, by unit (context ids: each execution once). */
  const hookRuns = async (c: TestController) =>
    (
      await c.store.db
        .selectFrom('hook_runs')
        .select(['unit', 'hook', 'context_id'])
        .where('hook', '!=', 'update-status')
        .orderBy('context_id')
        .execute()
    ).map((r) => `${r.unit} ${r.hook} ${r.context_id}`);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cf-mm-crash-'));
    const db = await createTestDatabase();
    dropDb = db.drop;
    [fleet, src, dst] = await Promise.all([
      createFleet(2),
      startTestController({ databaseUrl: db.url, worker: false }),
      startTestController(),
    ]);
    startWorker();
    await ok(src, 'add-model', 'fleet', '--cloud', 'manual');
    for (const h of fleet.hosts) {
      await ok(src, 'add-machine', `ssh:root@${h.address}:${h.port}`, '--private-key', h.privateKeyPath, '-m', 'fleet');
    }
    await ok(src, 'deploy', KV_STORE_CHARM, 'kv-store', '--to', '0', '-m', 'fleet');
    await ok(src, 'deploy', KV_WEB_CHARM, 'kv-web', '--to', '1', '-m', 'fleet');
    await ok(src, 'integrate', 'kv-web', 'kv-store', '-m', 'fleet');
    await settle(src, ['fleet'], 240_000);
    await waitForKvWebConnected(fleet.hosts[1].address, 8080, { database: 'web' });
  });
  after(async () => {
    for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
    await Promise.all([src?.stop(), dst?.stop()]);
    await fleet?.destroy();
    await dropDb?.();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the worker dies while the target imports: a new worker finishes the move, no hook runs twice', async (t) => {
    const web = fleet.hosts[1].address;
    const ranBefore = await hookRuns(src);
    const poll = pollKvWeb(web);
    const start = await ok(src, 'migrate-model', 'fleet', '--to', dst.apiUrl, '--token', dst.adminToken, '--no-wait');
    const opId = Number(/operation (\d+)/.exec(start.stdout)?.[1]);
    assert.ok(opId > 0, start.stdout);
    // kill it once the target has the export (the source waits on the target's operations then)
    let killedAt = '';
    await waitFor(
      'the migration to reach the target',
      async () => {
        const op = await src.api('GET', `/v1/operations/${opId}`);
        const step = String(op.body.progress?.step ?? '');
        if (/the target imports|handing/.test(step) || op.body.state !== 'running') {
          killedAt = `${op.body.state}: ${step}`;
          return true;
        }
        return false;
      },
      60_000,
    );
    const killed = Date.now();
    const w = workers[0];
    const gone = new Promise((r) => w.once('exit', r));
    w.kill('SIGKILL');
    await gone;
    startWorker();
    const op = await src.waitOperation(opId, 240_000);
    t.diagnostic(`worker killed at "${killedAt}"; the move ended ${((Date.now() - killed) / 1000).toFixed(1)} s later`);
    assert.equal(op.state, 'succeeded', op.error);
    assert.match(op.progress.step, /model fleet moved to .*: 2 unit agent\(s\) handed over/);

    // the source let go; the target runs the model, with every hook run the source had, once
    assert.equal(
      (await src.store.db.selectFrom('models').select('name').where('name', '=', 'fleet').execute()).length,
      0,
    );
    await settle(dst, ['fleet'], 120_000);
    const ranAfter = await hookRuns(dst);
    assert.deepEqual(ranAfter, ranBefore, 'no hook ran again, and none was lost, across the crash and the move');
    const { requests, failures } = await poll.end();
    assert.ok(requests > 10, `the client polled the whole time (${requests} requests)`);
    assert.deepEqual(failures, [], `${failures.length} of ${requests} requests failed`);
    console.log(`migrate-model with a worker killed: ${requests} requests, ${failures.length} failed`);

    // the target runs the units' hooks from now on
    await ok(dst, 'config', 'kv-web', 'database=moved', '-m', 'fleet');
    const page = await waitForKvWebConnected(web, 8080, { database: 'moved' });
    assert.equal(page.host, fleet.hosts[0].address);
  });
});
