// The model store behaves the same on embedded PGlite and on real Postgres.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { sql } from 'kysely';
import { isUniqueViolation, openStore, type Store } from '../store/store.ts';
import { createTestDatabase, postgresUrl } from './helpers/postgres.ts';

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
      return {
        store: await openStore({ databaseUrl: dbx.url }),
        reopen: () => openStore({ databaseUrl: dbx.url }),
        cleanup: () => dbx.drop(),
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
