// The commit of a hook's changes, against a real (PGlite) store: unit state, ports,
// leader and relation data are merged in place; a run commits at most once.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { commitRun, type UnitWorld } from '../activities/hook-activities.ts';
import type { HookResult } from '../charm/hook-protocol.ts';
import { openStore, type Store } from '../store/store.ts';

const UUID = 'c0ffee00-0000-4000-8000-000000000001';

function result(changes: Partial<HookResult['changes']>): HookResult {
  return {
    type: 'result',
    ts: Date.now(),
    exitCode: 0,
    skipped: false,
    replayed: false,
    timedOut: false,
    durationMs: 12,
    lockWaitMs: 3,
    tail: [],
    changes: {
      relationSettings: {},
      leaderSettings: {},
      charmState: {},
      ports: [],
      actionResults: {},
      actionFailed: null,
      ...changes,
    },
  } as HookResult;
}

describe('hook commit', () => {
  let store: Store;
  let run = 0;
  const world = (leader: boolean) =>
    ({
      model: { uuid: UUID },
      app: { name: 'db' },
      unit: { name: 'db/0', leader, charm_state: {} },
    }) as unknown as UnitWorld;
  const begin = async (hook: string) => {
    const id = `ctx-${++run}`;
    await store.db.insertInto('hook_runs').values({ context_id: id, model_uuid: UUID, unit: 'db/0', hook }).execute();
    return id;
  };
  const unit = () => store.db.selectFrom('units').selectAll().where('name', '=', 'db/0').executeTakeFirstOrThrow();
  const bag = async (owner: string) =>
    (
      await store.db
        .selectFrom('relation_data')
        .select('settings')
        .where('owner', '=', owner)
        .where('integration_id', '=', 1)
        .executeTakeFirst()
    )?.settings;

  before(async () => {
    store = await openStore({});
    const db = store.db;
    await db.insertInto('clouds').values({ name: 'local', type: 'local' }).execute();
    await db.insertInto('models').values({ uuid: UUID, name: 'm', cloud: 'local' }).execute();
    await db
      .insertInto('charms')
      .values({
        name: 'db',
        revision: 1,
        sha256: '0'.repeat(64),
        metadata: JSON.stringify({ name: 'db' }),
        archive: Buffer.from(''),
        size: 0,
      })
      .execute();
    await db
      .insertInto('applications')
      .values({ model_uuid: UUID, name: 'db', charm_name: 'db', charm_revision: 1 })
      .execute();
    await db.insertInto('units').values({ model_uuid: UUID, name: 'db/0', application: 'db', number: 0 }).execute();
    await db
      .insertInto('integrations')
      .values({ model_uuid: UUID, id: 1, key: 'db:peers', interface: 'db-peers' })
      .execute();
  });
  after(async () => {
    await store?.close();
  });

  test('state, ports and the agent going idle; a second commit of the same run changes nothing', async () => {
    const id = await begin('install');
    await commitRun(
      store.db,
      world(false),
      { hook: 'install' },
      id,
      result({ charmState: { a: '1', b: '2' }, ports: [{ protocol: 'tcp', port: 80 }] as never }),
    );
    let u = await unit();
    assert.deepEqual(u.charm_state, { a: '1', b: '2' });
    assert.deepEqual(u.ports, [{ protocol: 'tcp', port: 80 }]);
    assert.equal(u.installed, true);
    assert.equal(u.agent_status, 'idle');
    const runRow = await store.db.selectFrom('hook_runs').selectAll().where('context_id', '=', id).executeTakeFirst();
    assert.equal(runRow?.committed, true);
    assert.equal(runRow?.duration_ms, 12);
    assert.equal(runRow?.lock_wait_ms, 3);
    // a retried activity commits the same run again: nothing moves
    await commitRun(store.db, world(false), { hook: 'install' }, id, result({ charmState: { a: 'other' } }));
    u = await unit();
    assert.deepEqual(u.charm_state, { a: '1', b: '2' });
  });

  test('charm state merges; an empty value deletes a key', async () => {
    const id = await begin('config-changed');
    await commitRun(store.db, world(false), { hook: 'config-changed' }, id, result({ charmState: { a: '', c: '3' } }));
    assert.deepEqual((await unit()).charm_state, { b: '2', c: '3' });
  });

  test('leader and relation data merge in place; the app bag only from the leader', async () => {
    await store.db
      .updateTable('applications')
      .set({ leader_settings: JSON.stringify({ keep: 'x', drop: 'y' }) })
      .execute();
    const id = await begin('db-relation-changed');
    await commitRun(
      store.db,
      world(true),
      { hook: 'db-relation-changed' },
      id,
      result({
        leaderSettings: { drop: null, added: 'z' },
        relationSettings: { '1': { unit: { host: 'h', port: '5432' }, app: { secret: 's' } } },
      }),
    );
    const app = await store.db.selectFrom('applications').select('leader_settings').executeTakeFirstOrThrow();
    assert.deepEqual(app.leader_settings, { keep: 'x', added: 'z' });
    assert.deepEqual(await bag('db/0'), { host: 'h', port: '5432' });
    assert.deepEqual(await bag('db'), { secret: 's' });

    const id2 = await begin('db-relation-changed');
    await commitRun(
      store.db,
      world(false),
      { hook: 'db-relation-changed' },
      id2,
      result({
        leaderSettings: { keep: 'changed by a non-leader' },
        relationSettings: { '1': { unit: { port: '' }, app: { secret: 'from a non-leader' } } },
      }),
    );
    assert.deepEqual(await bag('db/0'), { host: 'h' });
    assert.deepEqual(await bag('db'), { secret: 's' });
    const app2 = await store.db.selectFrom('applications').select('leader_settings').executeTakeFirstOrThrow();
    assert.deepEqual(app2.leader_settings, { keep: 'x', added: 'z' });
  });

  test('a write that changes a bag bumps its version; the same values again do not; a gone relation takes nothing', async () => {
    const version = async (owner: string) =>
      (
        await store.db
          .selectFrom('relation_data')
          .select('version')
          .where('owner', '=', owner)
          .executeTakeFirstOrThrow()
      ).version;
    const before = await version('db/0');
    const write = async (settings: Record<string, string>, rid = '1') => {
      const id = await begin('db-relation-changed');
      await commitRun(
        store.db,
        world(false),
        { hook: 'db-relation-changed' },
        id,
        result({ relationSettings: { [rid]: { unit: settings } } }),
      );
    };
    await write({ host: 'h' });
    assert.equal(await version('db/0'), before, 'rewriting the same value is no change');
    await write({ host: 'h2' });
    assert.equal(await version('db/0'), before + 1);
    await write({ host: 'h3' }, '99');
    const stray = await store.db.selectFrom('relation_data').selectAll().where('integration_id', '=', 99).execute();
    assert.deepEqual(stray, [], 'no bag for a relation that does not exist');
  });
});
