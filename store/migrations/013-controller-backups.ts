// Migration 013: controller backups (create-backup, restore-backup).
import { type Kysely, type Migration, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations run before the typed schema exists
type AnyDb = Kysely<any>;

const ddl: string[] = [];

export const m013: Migration = {
  async up(db: AnyDb) {
    for (const stmt of ddl) await sql.raw(stmt).execute(db);
  },
};
