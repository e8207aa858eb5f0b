// The embedded store's autovacuum. PGlite runs Postgres in one process, with no
// autovacuum worker: a table is never analyzed, so the planner guesses its size,
// and after a deploy fills `units` and `machines` a join of the two runs as a
// nested loop over every pair (1000 units: a look at the deploy's units took
// ~110 ms instead of ~20). Postgres' own rule is applied here: a table is
// analyzed once 50 rows plus a tenth of it changed since it last was, and
// vacuumed once 50 rows plus a fifth of it are dead. A real Postgres server
// does this itself.
import { sql } from 'kysely';
import type { Db } from './store.ts';

/** How often the tables' counters are looked at. */
export const UPKEEP_EVERY_MS = 5_000;

interface TableCounts {
  relname: string;
  reltuples: number;
  n_dead_tup: number;
  n_mod_since_analyze: number;
}

/** The tables due for ANALYZE and for VACUUM, by Postgres' autovacuum thresholds (its defaults). */
export function dueTables(tables: TableCounts[]): { analyze: string[]; vacuum: string[] } {
  const analyze: string[] = [];
  const vacuum: string[] = [];
  for (const t of tables) {
    const rows = Math.max(t.reltuples, 0); // -1: never analyzed
    if (t.n_dead_tup > 50 + 0.2 * rows) vacuum.push(t.relname);
    else if (t.n_mod_since_analyze > 50 + 0.1 * rows) analyze.push(t.relname);
  }
  return { analyze, vacuum };
}

/** One round: analyzes (and vacuums) the tables that changed enough. Returns what it did. */
export async function upkeepOnce(db: Db): Promise<{ analyzed: string[]; vacuumed: string[] }> {
  const { rows } = await sql<TableCounts>`
    SELECT s.relname, c.reltuples::float8 AS reltuples, s.n_dead_tup, s.n_mod_since_analyze
    FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid
    WHERE s.schemaname = 'public'`.execute(db);
  const { analyze, vacuum } = dueTables(rows);
  for (const t of vacuum) await sql`VACUUM (ANALYZE) ${sql.table(t)}`.execute(db);
  if (analyze.length > 0) await sql`ANALYZE ${sql.join(analyze.map((t) => sql.table(t)))}`.execute(db);
  return { analyzed: analyze, vacuumed: vacuum };
}

/**
 * Runs upkeepOnce every `everyMs` until the returned stop is called (stop waits for
 * a round under way). A tick that comes while a round is still going is skipped; a
 * round that fails (the store closing) is tried again at the next tick.
 */
export function startUpkeep(db: Db, everyMs = UPKEEP_EVERY_MS): () => Promise<void> {
  let round: Promise<unknown> | undefined;
  let stopped = false;
  const timer = setInterval(() => {
    if (stopped || round) return;
    round = upkeepOnce(db)
      .catch(() => undefined)
      .finally(() => {
        round = undefined;
      });
  }, everyMs);
  timer.unref();
  return async () => {
    stopped = true;
    clearInterval(timer);
    await round;
  };
}
