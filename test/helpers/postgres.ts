// A fresh database on the Postgres that CI starts (CHARMFLOW_TEST_DATABASE_URL points
// at its maintenance database). Tests that need real Postgres skip without it.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { openStore, type Store } from '../../store/store.ts';

export const postgresUrl = process.env.CHARMFLOW_TEST_DATABASE_URL;

export async function createTestDatabase(): Promise<{ url: string; drop(): Promise<void> }> {
  if (!postgresUrl) throw new Error('CHARMFLOW_TEST_DATABASE_URL is not set');
  const name = `cf_test_${process.pid}_${Date.now()}`;
  const admin = new pg.Client({ connectionString: postgresUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(postgresUrl);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async drop() {
      const c = new pg.Client({ connectionString: postgresUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

export interface StoreBackend {
  name: 'pglite' | 'postgres';
  /** Why the backend is skipped here, if it is. */
  skip: string | undefined;
  /** A fresh store on the backend, and what removes it. */
  open(): Promise<{ store: Store; drop(): Promise<void> }>;
}

/** An in-memory PGlite store, and one on a fresh Postgres database (with its own key file). */
export const storeBackends: StoreBackend[] = [
  { name: 'pglite', skip: undefined, open: async () => ({ store: await openStore({}), drop: async () => {} }) },
  {
    name: 'postgres',
    skip: postgresUrl ? undefined : 'CHARMFLOW_TEST_DATABASE_URL not set (CI sets it)',
    open: async () => {
      const dbx = await createTestDatabase();
      const keyDir = mkdtempSync(join(tmpdir(), 'cf-store-key-'));
      const store = await openStore({ databaseUrl: dbx.url, secretKeyFile: join(keyDir, 'secret-key') });
      return {
        store,
        drop: async () => {
          await dbx.drop();
          rmSync(keyDir, { recursive: true, force: true });
        },
      };
    },
  },
];
