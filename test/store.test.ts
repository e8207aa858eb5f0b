// The model store behaves the same on embedded PGlite and on real Postgres.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { sql } from 'kysely';
import { asJsonRows } from '../store/json-rows.ts';
import { isUniqueViolation, openStore, type Store } from '../store/store.ts';
import { dueTables } from '../store/upkeep.ts';
import { createTestDatabase, postgresUrl } from './helpers/postgres.ts';
import { waitFor } from './helpers/wait.ts';

interface Backend {
  name: string;
  skip?: string;
  open(): Promise<{ store: Store; reopen(): Promise<Store>; cleanup(): Promise<void> }>;
}

const backends: Backend[] = [
  {
    name: 'pglite',
    async open() {
      const dir = mkdtempSync(join(tmpdir(), 'cf-store-'));
      return {
        store: await openStore({ dataDir: dir }),
        reopen: () => openStore({ dataDir: dir }),
        async cleanup() {
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  },
  {
    name: 'postgres',
    skip: postgresUrl ? undefined : 'CHARMFLOW_TEST_DATABASE_URL not set (CI sets it)',
    async open() {
      const dbx = await createTestDatabase();
      // a Postgres store's secret key lives outside the database, shared by every process
      const keyDir = mkdtempSync(join(tmpdir(), 'cf-store-key-'));
      const secretKeyFile = join(keyDir, 'secret-key');
      return {
        store: await openStore({ databaseUrl: dbx.url, secretKeyFile }),
        reopen: () => openStore({ databaseUrl: dbx.url, secretKeyFile }),
        async cleanup() {
          await dbx.drop();
          rmSync(keyDir, { recursive: true, force: true });
        },
      };
    },
  },
];

for (const backend of backends) {
  describe(`model store on ${backend.name}`, { skip: backend.skip }, () => {
    let ctx: Awaited<ReturnType<Backend['open']>>;
    let store: Store;

    test('migrates a new store and every table exists', async () => {
      ctx = await backend.open();
      store = ctx.store;
      assert.equal(store.kind, backend.name);
      const tables = await sql<{ table_name: string }>`
        select table_name from information_schema.tables where table_schema = 'public'`.execute(store.db);
      const names = new Set(tables.rows.map((r) => r.table_name));
      for (const t of [
        'clouds',
        'credentials',
        'models',
        'machines',
        'charms',
        'applications',
        'units',
        'endpoints',
        'integrations',
        'integration_endpoints',
        'relation_data',
        'status_history',
        'log_entries',
        'operations',
        'users',
        'tokens',
        'hook_runs',
        'kysely_migration',
      ]) {
        assert.ok(names.has(t), `table ${t} missing`);
      }
    });

    test('round-trips JSON, timestamps and serial ids', async () => {
      await store.db.insertInto('clouds').values({ name: 'local', type: 'local', endpoint: null }).execute();
      await store.db
        .insertInto('models')
        .values({ uuid: 'u-1', name: 'alpha', cloud: 'local', config: JSON.stringify({ a: 1, b: 'x', c: true }) })
        .execute();
      const m = await store.db.selectFrom('models').selectAll().where('name', '=', 'alpha').executeTakeFirstOrThrow();
      assert.deepEqual(m.config, { a: 1, b: 'x', c: true });
      assert.ok(m.created_at instanceof Date);
      const a = await store.db.insertInto('operations').values({ kind: 'k' }).returning('id').executeTakeFirstOrThrow();
      const b = await store.db.insertInto('operations').values({ kind: 'k' }).returning('id').executeTakeFirstOrThrow();
      assert.equal(typeof a.id, 'number');
      assert.equal(b.id, a.id + 1);
    });

    test('unique violations are recognised and leave the row as it was', async () => {
      await assert.rejects(
        store.db.insertInto('models').values({ uuid: 'u-2', name: 'alpha', cloud: 'local' }).execute(),
        (err) => isUniqueViolation(err),
      );
      const rows = await store.db.selectFrom('models').selectAll().where('name', '=', 'alpha').execute();
      assert.equal(rows.length, 1);
      assert.equal(rows[0].uuid, 'u-1');
    });

    test('a failed transaction writes nothing', async () => {
      await assert.rejects(
        store.db.transaction().execute(async (tx) => {
          await tx.insertInto('models').values({ uuid: 'u-3', name: 'beta', cloud: 'local' }).execute();
          await tx.insertInto('models').values({ uuid: 'u-4', name: 'beta', cloud: 'local' }).execute();
        }),
      );
      const rows = await store.db.selectFrom('models').select('name').where('name', '=', 'beta').execute();
      assert.equal(rows.length, 0);
    });

    test('concurrent queries and transactions do not interleave', async () => {
      await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          store.db.transaction().execute(async (tx) => {
            await tx
              .insertInto('models')
              .values({ uuid: `c-${i}`, name: `c-${i}`, cloud: 'local' })
              .execute();
            await tx.updateTable('models').set({ status: 'available' }).where('uuid', '=', `c-${i}`).execute();
          }),
        ),
      );
      const { count } = await store.db
        .selectFrom('models')
        .select((eb) => eb.fn.countAll<number>().as('count'))
        .where('status', '=', 'available')
        .executeTakeFirstOrThrow();
      assert.equal(Number(count), 20);
    });

    test("an application's unit set serial is fresh after each statement that adds or removes its units, and only then", async () => {
      const db = store.db;
      await sql`INSERT INTO charms (name, revision, sha256, metadata, archive, size)
        VALUES ('c', 1, 'x', '{}'::jsonb, ''::bytea, 0)`.execute(db);
      for (const name of ['web', 'db']) {
        await db
          .insertInto('applications')
          .values({ model_uuid: 'u-1', name, charm_name: 'c', charm_revision: 1 })
          .execute();
      }
      const seen = new Set<number>();
      /** The application's serial, and whether it is one never seen before. */
      const serial = async (name: string) => {
        const { unit_set } = await db
          .selectFrom('applications')
          .select('unit_set')
          .where('model_uuid', '=', 'u-1')
          .where('name', '=', name)
          .executeTakeFirstOrThrow();
        const fresh = !seen.has(unit_set);
        seen.add(unit_set);
        return { value: unit_set, fresh };
      };
      const unit = (app: string, number: number) => ({
        model_uuid: 'u-1',
        name: `${app}/${number}`,
        application: app,
        number,
      });
      const web0 = await serial('web');
      assert.ok(web0.fresh);
      assert.ok((await serial('db')).fresh, 'two applications never share a serial');
      // three units in one statement: one new serial
      const before = await sql<{ n: number }>`SELECT last_value AS n FROM unit_set_serial`.execute(db);
      await db
        .insertInto('units')
        .values([unit('web', 0), unit('web', 1), unit('web', 2)])
        .execute();
      const web1 = await serial('web');
      assert.ok(web1.fresh);
      const after = await sql<{ n: number }>`SELECT last_value AS n FROM unit_set_serial`.execute(db);
      assert.equal(Number(after.rows[0].n) - Number(before.rows[0].n), 1);
      // another application's units leave it alone; so do updates of its own
      await db.insertInto('units').values(unit('db', 0)).execute();
      await db.updateTable('units').set({ workload_status: 'active' }).where('application', '=', 'web').execute();
      assert.equal((await serial('web')).value, web1.value);
      await db.deleteFrom('units').where('name', '=', 'web/1').execute();
      assert.ok((await serial('web')).fresh);
      // a removed unit and a new one make a set of the same size: still another serial
      await db.insertInto('units').values(unit('web', 3)).execute();
      assert.ok((await serial('web')).fresh);
      // an application row brought back (a restore, an import) takes a fresh serial, not the one it carries
      await db.deleteFrom('applications').where('model_uuid', '=', 'u-1').where('name', '=', 'db').execute();
      await db
        .insertInto('applications')
        .values({ model_uuid: 'u-1', name: 'db', charm_name: 'c', charm_revision: 1, unit_set: web0.value })
        .execute();
      assert.ok((await serial('db')).fresh);
      // removing the applications takes their units with them, and nothing fails on the way
      await db.deleteFrom('applications').where('model_uuid', '=', 'u-1').execute();
      const left = await db.selectFrom('units').select('name').where('model_uuid', '=', 'u-1').execute();
      assert.deepEqual(left, []);
    });

    test('an idle connection the server ends neither ends the process nor the store', {
      skip: backend.name !== 'postgres',
    }, async () => {
      await sql`SELECT 1`.execute(store.db); // a connection now idle in the pool
      const { rows } = await sql<{ n: number }>`
        SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()`.execute(store.db);
      assert.ok(rows[0].n >= 0);
      await new Promise((r) => setTimeout(r, 200));
      const again = await sql<{ one: number }>`SELECT 1 AS one`.execute(store.db);
      assert.equal(again.rows[0].one, 1);
    });

    test('a reopened store keeps its data and re-running migrations is a no-op', async () => {
      await store.close();
      store = await ctx.reopen();
      const m = await store.db.selectFrom('models').select('name').where('uuid', '=', 'u-1').executeTakeFirst();
      assert.equal(m?.name, 'alpha');
    });

    after(async () => {
      await store?.close();
      await ctx?.cleanup();
    });
  });
}

describe('PGlite statement cache', () => {
  let dir: string;
  let store: Store;
  const prepared = async () =>
    Number(
      (await sql<{ n: number }>`select count(*)::int as n from pg_prepared_statements`.execute(store.db)).rows[0].n,
    );

  test('a repeated statement is prepared once and answers exactly as an unprepared one', async () => {
    dir = mkdtempSync(join(tmpdir(), 'charmflow-stmt-'));
    store = await openStore({ dataDir: dir });
    await store.db.insertInto('clouds').values({ name: 'local', type: 'local', endpoint: null }).execute();
    const before = await prepared();
    const awkward = [
      "it's",
      "''",
      'back\\slash \\x27 \\n',
      "'); DROP TABLE models; --",
      '$1 $2 ?',
      'line\nbreak\ttab',
      'é ✓ 🚀',
      '',
    ];
    for (const [i, name] of awkward.entries()) {
      // the same insert and select text each time: prepared from the second call on
      const config = JSON.stringify({ name, n: i, ok: i % 2 === 0, none: null });
      await store.db
        .insertInto('models')
        .values({ uuid: `s-${i}`, name: `m ${name}`, cloud: 'local', config })
        .execute();
      const row = await store.db
        .selectFrom('models')
        .select(['name', 'config'])
        .where('uuid', '=', `s-${i}`)
        .executeTakeFirstOrThrow();
      assert.equal(row.name, `m ${name}`);
      assert.deepEqual(row.config, { name, n: i, ok: i % 2 === 0, none: null });
    }
    assert.ok((await prepared()) >= before + 2, 'the repeated insert and select were not prepared');
    // numbers, booleans and nulls as arguments
    for (let i = 0; i < 3; i++) {
      const r = await sql<{ a: number; b: boolean; c: string | null }>`
        select ${41 + i}::int + 1 as a, ${i === 1}::boolean as b, ${null}::text as c`.execute(store.db);
      assert.deepEqual(r.rows[0], { a: 42 + i, b: i === 1, c: null });
    }
  });

  test('a prepared statement survives its table changing shape', async () => {
    const all = () => store.db.selectFrom('models').selectAll().where('uuid', '=', 's-0').executeTakeFirstOrThrow();
    await all();
    await all();
    await sql`alter table models add column extra text not null default 'x'`.execute(store.db);
    const row = (await all()) as Record<string, unknown>;
    assert.equal(row.extra, 'x');
    await sql`alter table models drop column extra`.execute(store.db);
    assert.equal(((await all()) as Record<string, unknown>).extra, undefined);
  });

  test('nothing is prepared inside a transaction, and errors keep their codes', async () => {
    const before = await prepared();
    await store.db.transaction().execute(async (tx) => {
      for (let i = 0; i < 3; i++) {
        await tx.selectFrom('clouds').select('name').where('name', '=', `t-${i}`).execute();
      }
    });
    assert.equal(await prepared(), before);
    for (let i = 0; i < 3; i++) {
      await assert.rejects(
        store.db
          .insertInto('models')
          .values({ uuid: 's-0', name: `dup-${i}`, cloud: 'local' })
          .execute(),
        (err) => isUniqueViolation(err),
      );
    }
  });

  after(async () => {
    await store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });
});

describe('embedded store upkeep (its autovacuum)', () => {
  test('tables are due by Postgres autovacuum thresholds: analyze past 50 + 10%, vacuum past 50 + 20% dead', () => {
    const t = (relname: string, reltuples: number, dead: number, mod: number) => ({
      relname,
      reltuples,
      n_dead_tup: dead,
      n_mod_since_analyze: mod,
    });
    assert.deepEqual(
      dueTables([
        t('never_analyzed', -1, 0, 51),
        t('quiet', -1, 0, 50),
        t('big_few_changes', 10_000, 0, 1_000),
        t('big_many_changes', 10_000, 0, 1_051),
        t('dead', 1_000, 251, 0),
      ]),
      { analyze: ['never_analyzed', 'big_many_changes'], vacuum: ['dead'] },
    );
  });

  test('a store that filled up is analyzed by itself, and a join of units and machines stops being a nested loop', async () => {
    const store = await openStore({});
    try {
      const db = store.db;
      await db.insertInto('clouds').values({ name: 'local', type: 'local', endpoint: null }).execute();
      await db.insertInto('models').values({ uuid: 'm-1', name: 'big', cloud: 'local' }).execute();
      await db
        .insertInto('charms')
        .values({ name: 'c', revision: 1, sha256: 'x', metadata: '{}', archive: Buffer.from(''), size: 0 })
        .execute();
      await db
        .insertInto('applications')
        .values({ model_uuid: 'm-1', name: 'web', charm_name: 'c', charm_revision: 1 })
        .execute();
      const n = 1000;
      const ids = Array.from({ length: n }, (_, i) => i);
      await db
        .insertInto('machines')
        .values(ids.map((i) => ({ model_uuid: 'm-1', id: String(i), kind: 'local' as const })))
        .execute();
      await db
        .insertInto('units')
        .values(
          ids.map((i) => ({
            model_uuid: 'm-1',
            name: `web/${i}`,
            application: 'web',
            number: i,
            machine_id: String(i),
          })),
        )
        .execute();
      const plan = async () =>
        (
          await sql<{ 'QUERY PLAN': string }>`EXPLAIN SELECT u.name, m.state FROM units u
            JOIN machines m ON m.model_uuid = u.model_uuid AND m.id = u.machine_id
            WHERE u.model_uuid = 'm-1'`.execute(db)
        ).rows
          .map((r) => r['QUERY PLAN'])
          .join('\n');
      const reltuples = async (table: string) =>
        Number(
          (await sql<{ n: number }>`SELECT reltuples::float8 AS n FROM pg_class WHERE relname = ${table}`.execute(db))
            .rows[0].n,
        );
      assert.equal(await reltuples('units'), -1, 'never analyzed yet');
      assert.match(await plan(), /Nested Loop/, 'without statistics the planner pairs every unit with every machine');
      // the store's own upkeep round (every 5 s) analyzes both once their counters are in
      await waitFor('units and machines analyzed', async () =>
        (await reltuples('units')) === n && (await reltuples('machines')) === n ? true : undefined,
      );
      assert.doesNotMatch(await plan(), /Nested Loop/, await plan());
      // and a table with many dead rows is vacuumed
      await db.updateTable('units').set({ workload_message: 'x' }).where('model_uuid', '=', 'm-1').execute();
      await waitFor('units vacuumed', async () => {
        const { rows } = await sql<{ dead: number; vacuumed: Date | null }>`
          SELECT n_dead_tup::int AS dead, last_vacuum AS vacuumed FROM pg_stat_user_tables WHERE relname = 'units'`.execute(
          db,
        );
        return rows[0].vacuumed !== null && rows[0].dead < 50 ? true : undefined;
      });
    } finally {
      await store.close();
    }
  });
});

test('asJsonRows: rows read as arrays of the named columns come back as the same objects', async () => {
  const store = await openStore({});
  try {
    const db = store.db;
    await db.insertInto('clouds').values({ name: 'local', type: 'local', endpoint: null }).execute();
    await db.insertInto('models').values({ uuid: 'm-1', name: 'a', cloud: 'local' }).execute();
    await db.insertInto('models').values({ uuid: 'm-2', name: 'b "quoted"', cloud: 'local', message: 'é\n' }).execute();
    const query = db.selectFrom('models').select(['uuid', 'name', 'message', 'created_at']).orderBy('uuid');
    const asObjects = await asJsonRows(db, query);
    const asArrays = await asJsonRows(db, query, ['uuid', 'name', 'message', 'created_at']);
    assert.equal(asArrays.length, 2);
    assert.deepEqual(asArrays, asObjects);
    assert.deepEqual(await asJsonRows(db, query.where('uuid', '=', 'none'), ['uuid']), []);
  } finally {
    await store.close();
  }
});
