// Migration 013: controller backups (create-backup, restore-backup).
import { type Kysely, type Migration, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations run before the typed schema exists
type AnyDb = Kysely<any>;

const ddl: string[] = [
  // one row per create-backup: the file it wrote (store/backup.ts) in the data dir of
  // the worker that wrote it, its size and sha256, and its manifest (never a secret)
  `CREATE TABLE controller_backups (
    id text PRIMARY KEY,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'ready', 'failed')),
    operation_id integer,
    path text NOT NULL DEFAULT '',
    size bigint NOT NULL DEFAULT 0,
    sha256 text NOT NULL DEFAULT '',
    manifest jsonb NOT NULL DEFAULT '{}',
    error text,
    created_by text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
  )`,
  'CREATE INDEX controller_backups_created ON controller_backups (created_at)',
];

export const m013: Migration = {
  async up(db: AnyDb) {
    for (const stmt of ddl) await sql.raw(stmt).execute(db);
  },
};
