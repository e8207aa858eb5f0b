// A fresh database on the Postgres that CI starts (CHARMFLOW_TEST_DATABASE_URL points
// at its maintenance database). Tests that need real Postgres skip without it.
import pg from 'pg';

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
