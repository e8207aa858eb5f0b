// Kill the worker in the middle of a deploy and start a new one: the deploy
// completes, and no hook of that deploy runs twice. The API and the workers are
// separate processes on a shared Postgres store, as in production.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { createTestDatabase, postgresUrl } from './helpers/postgres.ts';
import { waitFor } from './helpers/wait.ts';
import { spawnWorker } from './helpers/worker.ts';

const counterCharm = join(projectRoot, 'test', 'fixtures', 'charms', 'counter');

describe('a worker killed mid-deploy', {
  skip: postgresUrl ? undefined : 'CHARMFLOW_TEST_DATABASE_URL not set (CI sets it)',
}, () => {
  let c: TestController;
  let dropDb: () => Promise<void>;
  const workers: ChildProcess[] = [];

  function startWorker(): ChildProcess {
    const child = spawnWorker(c);
    workers.push(child);
    return child;
  }

  before(async () => {
    const db = await createTestDatabase();
    dropDb = db.drop;
    c = await startTestController({ databaseUrl: db.url, worker: false });
  });
  after(async () => {
    for (const w of workers) w.kill('SIGKILL');
    await c?.stop();
    await dropDb?.();
  });

  test('the deploy completes and every hook ran exactly once', async () => {
    const first = startWorker();
    const env = { CHARMFLOW_DATA_DIR: c.dataDir };
    const d = await runCli(['deploy', counterCharm, 'count', '-n', '2', '--config', 'sleep=4', '--no-wait'], env);
    assert.equal(d.code, 0, d.stderr);
    const opId = Number(d.stdout.match(/operation (\d+)/)![1]);
    // wait until an install hook is running on a machine, then kill the worker hard
    await waitFor(
      'an install hook to be running',
      async () =>
        c.store.db
          .selectFrom('hook_runs')
          .select('context_id')
          .where('hook', '=', 'install')
          .where('finished_at', 'is', null)
          .executeTakeFirst(),
      90_000,
    );
    first.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 1000));
    startWorker();
    const op = await c.waitOperation(opId, 180_000);
    assert.equal(op.state, 'succeeded', op.error);

    for (const unit of ['count/0', 'count/1']) {
      const u = await c.store.db.selectFrom('units').selectAll().where('name', '=', unit).executeTakeFirstOrThrow();
      assert.equal(u.workload_status, 'active');
      const m = await c.store.db
        .selectFrom('machines')
        .select('root_dir')
        .where('id', '=', u.machine_id!)
        .executeTakeFirstOrThrow();
      const log = readFileSync(join(m.root_dir, 'units', unit.replace('/', '-'), 'counter', 'hooks.log'), 'utf8')
        .trim()
        .split('\n')
        .filter((h) => h !== 'update-status');
      const leaderHook = u.leader ? 'leader-elected' : 'leader-settings-changed';
      assert.deepEqual(
        log.slice(0, 4),
        ['install', leaderHook, 'config-changed', 'start'],
        `${unit} ran each hook once`,
      );
      // the leader's leader-set in leader-elected reaches the other unit afterwards, as in Juju
      assert.ok(
        log.slice(4).every((h) => !u.leader && h === 'leader-settings-changed'),
        `${unit}: nothing but leader-settings-changed after start: ${log.join(', ')}`,
      );
    }
  });
});
