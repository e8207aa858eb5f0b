// Retention: pruning removes exactly what is old or beyond a model's cap, and never
// what is still needed; the controller keeps a Temporal Schedule that runs it.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import { ensureRetentionSchedule, retentionScheduleId } from '../controller/retention-schedule.ts';
import { DEFAULT_RETENTION, type PruneCounts, pruneStore } from '../store/retention.ts';
import { openStore, type Store } from '../store/store.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { storeBackends } from './helpers/postgres.ts';
import { waitFor } from './helpers/wait.ts';

const DAY = 86_400_000;
const NOW = new Date('2026-06-01T00:00:00Z');
const ago = (days: number) => new Date(NOW.getTime() - days * DAY);

async function ids(store: Store, table: 'log_entries' | 'status_history'): Promise<number[]> {
  return (await store.db.selectFrom(table).select('id').orderBy('id').execute()).map((r) => r.id);
}

for (const backend of storeBackends)
  describe(`pruneStore (${backend.name})`, { skip: backend.skip }, () => {
    let store: Store;
    let drop: () => Promise<void>;
    before(async () => {
      ({ store, drop } = await backend.open());
      await store.db.insertInto('clouds').values({ name: 'local', type: 'local', endpoint: null }).execute();
      await store.db
        .insertInto('models')
        .values([
          { uuid: 'm1', name: 'one', cloud: 'local', config: '{}' },
          { uuid: 'm2', name: 'two', cloud: 'local', config: '{}' },
        ])
        .execute();
    });
    after(async () => {
      await store?.close();
      await drop?.();
    });

    test('removes exactly the old, the capped and the finished rows, in batches', async () => {
      const log = (model_uuid: string, at: Date) => ({ model_uuid, entity: 'a/0', level: 'INFO', message: 'x', at });
      const logIds = (
        await store.db
          .insertInto('log_entries')
          .values([
            log('m1', ago(40)),
            log('m2', ago(40)),
            log('m1', ago(35)),
            log('m2', ago(31)),
            log('m1', ago(31)),
            log('m1', ago(3)),
            log('m1', ago(2)),
            log('m2', ago(2)),
            log('m1', ago(1)),
            log('m1', ago(0)),
          ])
          .returning('id')
          .execute()
      ).map((r) => r.id);

      const st = (entity: string, kind: 'workload' | 'agent', at: Date) => ({
        model_uuid: 'm1',
        entity,
        kind,
        status: 'active',
        at,
      });
      const statusIds = (
        await store.db
          .insertInto('status_history')
          .values([
            st('a/0', 'workload', ago(50)), // old, superseded: goes
            st('a/0', 'workload', ago(45)), // old, superseded: goes
            st('a/0', 'agent', ago(45)), // old, but a/0's latest agent status: stays
            st('a/0', 'workload', ago(2)), // recent, beyond the cap of 3 and superseded: goes
            st('a/0', 'workload', ago(1)),
            st('a/1', 'workload', ago(40)), // old, but a/1's latest: stays
            st('a/0', 'workload', ago(0)),
          ])
          .returning('id')
          .execute()
      ).map((r) => r.id);

      const run = (context_id: string, started: Date, finished: Date | null) => ({
        context_id,
        model_uuid: 'm1',
        unit: 'a/0',
        hook: 'install',
        started_at: started,
        finished_at: finished,
        exit_code: finished ? 0 : null,
      });
      await store.db
        .insertInto('hook_runs')
        .values([
          run('old-done', ago(10), ago(10)),
          run('old-running', ago(10), null),
          run('long-run', ago(10), ago(2)),
          run('recent-done', ago(1), ago(1)),
        ])
        .execute();

      const op = (target: string, state: string, updated: Date, finished: Date | null) => ({
        kind: 'deploy',
        model_name: 'one',
        target,
        state: state as 'succeeded',
        created_at: updated,
        updated_at: updated,
        finished_at: finished,
      });
      await store.db
        .insertInto('operations')
        .values([
          op('old-succeeded', 'succeeded', ago(100), ago(100)),
          op('old-failed', 'failed', ago(95), ago(95)),
          op('old-cancelled', 'cancelled', ago(100), null),
          op('old-running', 'running', ago(100), null),
          op('old-pending', 'pending', ago(100), null),
          op('recent-succeeded', 'succeeded', ago(10), ago(10)),
        ])
        .execute();

      // data bags: a unit's that departed two days ago goes; one departed an hour ago
      // (remote units may still run relation-departed) and a live one stay
      await store.db
        .insertInto('clouds')
        .values({ name: 'rc', type: 'local' })
        .onConflict((oc) => oc.doNothing())
        .execute();
      await store.db.insertInto('models').values({ uuid: 'rm', name: 'rm', cloud: 'rc' }).execute();
      await store.db
        .insertInto('integrations')
        .values({ id: 900, model_uuid: 'rm', key: 'k900', interface: 'x' })
        .execute();
      const bag = (owner: string, departed: Date | null) => ({
        integration_id: 900,
        model_uuid: 'rm',
        owner,
        settings: '{}',
        departed_at: departed,
      });
      await store.db
        .insertInto('relation_data')
        .values([
          bag('a/0', new Date(NOW.getTime() - 2 * 86_400_000)),
          bag('a/1', new Date(NOW.getTime() - 3_600_000)),
          bag('a/2', null),
        ])
        .execute();

      const batches: PruneCounts[] = [];
      const counts = await pruneStore(
        store.db,
        {
          ...DEFAULT_RETENTION,
          logDays: 30,
          logMaxRowsPerModel: 3,
          statusDays: 30,
          statusMaxRowsPerModel: 3,
          hookRunDays: 7,
          operationDays: 90,
          batchSize: 2,
        },
        { now: NOW, onBatch: (c) => batches.push(c) },
      );

      // logs: the five older than 30 days, then m1's oldest beyond its newest three
      assert.deepEqual(await ids(store, 'log_entries'), [logIds[6], logIds[7], logIds[8], logIds[9]]);
      assert.deepEqual(await ids(store, 'status_history'), [statusIds[2], statusIds[4], statusIds[5], statusIds[6]]);
      const runs = await store.db.selectFrom('hook_runs').select('context_id').orderBy('context_id').execute();
      assert.deepEqual(
        runs.map((r) => r.context_id),
        ['long-run', 'old-running', 'recent-done'],
      );
      const ops = await store.db.selectFrom('operations').select('target').orderBy('id').execute();
      assert.deepEqual(
        ops.map((o) => o.target),
        ['old-running', 'old-pending', 'recent-succeeded'],
      );
      assert.deepEqual(counts, { logEntries: 6, statusHistory: 3, hookRuns: 1, operations: 3, departedBags: 1 });
      const bags = await store.db.selectFrom('relation_data').select('owner').orderBy('owner').execute();
      assert.deepEqual(
        bags.map((b) => b.owner),
        ['a/1', 'a/2'],
      );
      // batches of two: the five old log lines alone took three statements
      assert.ok(batches.length >= 8, `${batches.length} batches`);

      // a second run finds nothing more to do
      const again = await pruneStore(
        store.db,
        { ...DEFAULT_RETENTION, logMaxRowsPerModel: 3, statusMaxRowsPerModel: 3 },
        { now: NOW },
      );
      assert.deepEqual(again, { logEntries: 0, statusHistory: 0, hookRuns: 0, operations: 0, departedBags: 0 });
    });
  });

describe('pruneStore on PGlite', () => {
  test('the space of pruned rows is used again (PGlite runs no autovacuum)', async () => {
    const store = await openStore({});
    try {
      await store.db.insertInto('clouds').values({ name: 'local', type: 'local', endpoint: null }).execute();
      await store.db.insertInto('models').values({ uuid: 'm1', name: 'one', cloud: 'local', config: '{}' }).execute();
      const lines = (at: Date) =>
        Array.from({ length: 500 }, () => ({
          model_uuid: 'm1',
          entity: 'a/0',
          level: 'INFO',
          message: 'x'.repeat(400),
          at,
        }));
      const size = async () =>
        Number((await sql<{ s: string }>`select pg_relation_size('log_entries') as s`.execute(store.db)).rows[0].s);
      for (let i = 0; i < 6; i++)
        await store.db
          .insertInto('log_entries')
          .values(lines(ago(40)))
          .execute();
      const full = await size();
      const counts = await pruneStore(store.db, DEFAULT_RETENTION, { now: NOW });
      assert.equal(counts.logEntries, 3000);
      for (let i = 0; i < 6; i++)
        await store.db
          .insertInto('log_entries')
          .values(lines(ago(1)))
          .execute();
      // without a vacuum the new lines would take new pages: about twice the size
      assert.ok((await size()) <= full * 1.1, `${await size()} bytes after, ${full} before`);
    } finally {
      await store.close();
    }
  });
});

describe('the retention schedule', () => {
  let c: TestController;
  const saved = { ...process.env };
  before(async () => {
    process.env.CHARMFLOW_RETENTION_INTERVAL = '45m';
    process.env.CHARMFLOW_RETENTION_HOOK_RUN_DAYS = '3';
    c = await startTestController();
  });
  after(async () => {
    process.env = saved;
    await c?.stop();
  });

  test('exists after start with the configured interval and policy', async () => {
    const desc = await c.client.schedule.getHandle(retentionScheduleId(c.config.taskQueue)).describe();
    assert.equal(desc.spec.intervals?.[0]?.every, 45 * 60_000);
    assert.equal(desc.action.type, 'startWorkflow');
    assert.equal(desc.action.type === 'startWorkflow' && desc.action.workflowType, 'retentionWorkflow');
    const policy = desc.action.type === 'startWorkflow' ? (desc.action.args?.[0] as Record<string, number>) : {};
    assert.equal(policy.hookRunDays, 3);
    assert.equal(policy.operationDays, DEFAULT_RETENTION.operationDays);
  });

  test('a run prunes the store through the worker', async () => {
    const model = await c.store.db.selectFrom('models').select('uuid').executeTakeFirstOrThrow();
    const now = Date.now();
    const run = (context_id: string, startedDaysAgo: number, finishedDaysAgo: number | null) => ({
      context_id,
      model_uuid: model.uuid,
      unit: 'a/0',
      hook: 'install',
      started_at: new Date(now - startedDaysAgo * DAY),
      finished_at: finishedDaysAgo === null ? null : new Date(now - finishedDaysAgo * DAY),
    });
    await c.store.db
      .insertInto('hook_runs')
      .values([run('sched-old', 5, 5), run('sched-running', 5, null), run('sched-recent', 2, 2)])
      .execute();
    const handle = c.client.schedule.getHandle(retentionScheduleId(c.config.taskQueue));
    await handle.trigger();
    await waitFor(
      'the scheduled run to prune the old hook run',
      async () =>
        !(await c.store.db
          .selectFrom('hook_runs')
          .select('context_id')
          .where('context_id', '=', 'sched-old')
          .executeTakeFirst()),
      60_000,
    );
    const left = await c.store.db
      .selectFrom('hook_runs')
      .select('context_id')
      .where('context_id', 'like', 'sched-%')
      .orderBy('context_id')
      .execute();
    assert.deepEqual(
      left.map((r) => r.context_id),
      ['sched-recent', 'sched-running'],
    );
    const desc = await handle.describe();
    assert.ok(desc.info.recentActions.length >= 1);
  });

  test('a later start with other settings updates the schedule in place', async () => {
    await ensureRetentionSchedule(c.client, c.config.taskQueue, {
      intervalMs: 2 * 3_600_000,
      policy: { ...DEFAULT_RETENTION, logDays: 10 },
    });
    const desc = await c.client.schedule.getHandle(retentionScheduleId(c.config.taskQueue)).describe();
    assert.equal(desc.spec.intervals?.[0]?.every, 2 * 3_600_000);
    const policy = desc.action.type === 'startWorkflow' ? (desc.action.args?.[0] as Record<string, number>) : {};
    assert.equal(policy.logDays, 10);
  });
});
