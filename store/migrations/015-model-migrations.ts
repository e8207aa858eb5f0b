// Migration 015: migrate-model, on both ends.
import { type Kysely, type Migration, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations run before the typed schema exists
type AnyDb = Kysely<any>;

const ddl: string[] = [
  // the source's side: one row per migrate-model operation; the target's admin token
  // is kept sealed (store/secret-box.ts) and wiped when the migration ends
  `CREATE TABLE model_migrations (
    operation_id integer PRIMARY KEY,
    model_uuid text NOT NULL,
    model text NOT NULL,
    target_url text NOT NULL,
    token text NOT NULL DEFAULT '',
    state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'done', 'failed')),
    error text,
    created_by text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
  )`,
  `CREATE UNIQUE INDEX model_migrations_running ON model_migrations (model_uuid) WHERE state = 'running'`,
];

export const m015: Migration = {
  async up(db: AnyDb) {
    for (const stmt of ddl) await sql.raw(stmt).execute(db);
  },
};
