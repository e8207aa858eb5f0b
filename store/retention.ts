// Retention: the store's history tables grow with every hook (log lines, status
// changes, hook runs) and every operation. Pruning removes what is old or beyond a
// per-model cap, in small batches, each its own statement, so no run holds a lock
// for long and the controller keeps answering meanwhile. What is still needed stays:
// each entity's latest status of each kind, a hook run still running (its unit
// agent re-attaches to it by context id), and operations not yet finished.
import { type ExpressionBuilder, sql } from 'kysely';
import type { Database, StatusHistoryTable } from './schema.ts';
import type { Db } from './store.ts';

export interface RetentionPolicy {
  /** Log lines older than this many days go. */
  logDays: number;
  /** A model keeps at most this many log lines (the newest). */
  logMaxRowsPerModel: number;
  /** Status history entries older than this many days go (not an entity's latest). */
  statusDays: number;
  /** A model keeps at most this many status history entries (and every entity's latest). */
  statusMaxRowsPerModel: number;
  /** Hook runs that finished more than this many days ago go. */
  hookRunDays: number;
  /** Operations that finished more than this many days ago go. */
  operationDays: number;
  /** Rows deleted per statement. */
  batchSize: number;
}

export const DEFAULT_RETENTION: RetentionPolicy = {
  logDays: 30,
  logMaxRowsPerModel: 100_000,
  statusDays: 30,
  statusMaxRowsPerModel: 100_000,
  hookRunDays: 7,
  operationDays: 90,
  batchSize: 5_000,
};

export interface PruneCounts {
  logEntries: number;
  statusHistory: number;
  hookRuns: number;
  operations: number;
  /** Data bags of units that left a relation (kept a day for the remote units' relation-departed). */
  departedBags: number;
}

export interface PruneOptions {
  /** The time ages are measured from (tests pass their own). */
  now?: Date;
  /** Called after each batch with the counts so far (an activity heartbeats). */
  onBatch?: (counts: PruneCounts) => void;
}

const DAY_MS = 86_400_000;

/** Repeat a batched DELETE until it removes fewer rows than a batch. */
async function inBatches(batchSize: number, run: () => Promise<number>, onBatch: () => void): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await run();
    total += n;
    onBatch();
    if (n < batchSize) return total;
  }
}

const deleted = (res: { numDeletedRows: bigint }) => Number(res.numDeletedRows);

export async function pruneStore(db: Db, policy: RetentionPolicy, opts: PruneOptions = {}): Promise<PruneCounts> {
  const now = (opts.now ?? new Date()).getTime();
  const before = (days: number) => new Date(now - days * DAY_MS);
  const batch = Math.max(1, Math.floor(policy.batchSize));
  const counts: PruneCounts = { logEntries: 0, statusHistory: 0, hookRuns: 0, operations: 0, departedBags: 0 };
  const tick = () => opts.onBatch?.({ ...counts });
  /** Runs one batched DELETE until it removes less than a batch; how many rows went. */
  const drain = (statement: () => Promise<{ numDeletedRows: bigint }>) =>
    inBatches(batch, async () => deleted(await statement()), tick);
  const models = (await db.selectFrom('models').select('uuid').execute()).map((m) => m.uuid);

  /** The id at and below which a model's rows of `table` are beyond its cap of `keep`. */
  async function capEdge(table: 'log_entries' | 'status_history', uuid: string, keep: number) {
    const row = await db
      .selectFrom(table)
      .select('id')
      .where('model_uuid', '=', uuid)
      .orderBy('id', 'desc')
      .offset(keep)
      .limit(1)
      .executeTakeFirst();
    return row?.id;
  }

  // log lines: by age, then each model's beyond its cap (ids grow with time)
  const logCutoff = before(policy.logDays);
  // the oldest line is recent (the usual case between runs): nothing is old
  const oldest = await db.selectFrom('log_entries').select('at').orderBy('id').limit(1).executeTakeFirst();
  if (oldest && new Date(oldest.at).getTime() < logCutoff.getTime()) {
    counts.logEntries += await drain(() =>
      db
        .deleteFrom('log_entries')
        .where('id', 'in', (eb) =>
          eb.selectFrom('log_entries').select('id').where('at', '<', logCutoff).orderBy('id').limit(batch),
        )
        .executeTakeFirstOrThrow(),
    );
  }
  for (const uuid of models) {
    const edge = await capEdge('log_entries', uuid, policy.logMaxRowsPerModel);
    if (edge === undefined) continue;
    counts.logEntries += await drain(() =>
      db
        .deleteFrom('log_entries')
        .where('id', 'in', (eb) =>
          eb
            .selectFrom('log_entries')
            .select('id')
            .where('model_uuid', '=', uuid)
            .where('id', '<=', edge)
            .orderBy('id')
            .limit(batch),
        )
        .executeTakeFirstOrThrow(),
    );
  }

  // status history: the same, sparing each entity's latest entry of each kind
  const superseded = (eb: ExpressionBuilder<Database & { s: StatusHistoryTable }, 'status_history' | 's'>) =>
    eb.exists(
      eb
        .selectFrom('status_history as n')
        .select('n.id')
        .whereRef('n.model_uuid', '=', 's.model_uuid')
        .whereRef('n.entity', '=', 's.entity')
        .whereRef('n.kind', '=', 's.kind')
        .whereRef('n.id', '>', 's.id'),
    );
  const statusCutoff = before(policy.statusDays);
  counts.statusHistory += await drain(() =>
    db
      .deleteFrom('status_history')
      .where('id', 'in', (eb) =>
        eb
          .selectFrom('status_history as s')
          .select('s.id')
          .where('s.at', '<', statusCutoff)
          .where((e) => superseded(e))
          .orderBy('s.id')
          .limit(batch),
      )
      .executeTakeFirstOrThrow(),
  );
  for (const uuid of models) {
    const edge = await capEdge('status_history', uuid, policy.statusMaxRowsPerModel);
    if (edge === undefined) continue;
    counts.statusHistory += await drain(() =>
      db
        .deleteFrom('status_history')
        .where('id', 'in', (eb) =>
          eb
            .selectFrom('status_history as s')
            .select('s.id')
            .where('s.model_uuid', '=', uuid)
            .where('s.id', '<=', edge)
            .where((e) => superseded(e))
            .orderBy('s.id')
            .limit(batch),
        )
        .executeTakeFirstOrThrow(),
    );
  }

  // hook runs: finished ones only; a running one is re-attached to by its context id
  const hookCutoff = before(policy.hookRunDays);
  counts.hookRuns += await drain(() =>
    db
      .deleteFrom('hook_runs')
      .where('context_id', 'in', (eb) =>
        eb
          .selectFrom('hook_runs')
          .select('context_id')
          .where('finished_at', 'is not', null)
          .where('finished_at', '<', hookCutoff)
          .limit(batch),
      )
      .executeTakeFirstOrThrow(),
  );

  // operations: finished ones only, never pending or running
  const opCutoff = before(policy.operationDays);
  counts.operations += await drain(() =>
    db
      .deleteFrom('operations')
      .where('id', 'in', (eb) =>
        eb
          .selectFrom('operations')
          .select('id')
          .where('state', 'in', ['succeeded', 'failed', 'cancelled'])
          .where(sql<Date>`coalesce(finished_at, updated_at)`, '<', opCutoff)
          .orderBy('id')
          .limit(batch),
      )
      .executeTakeFirstOrThrow(),
  );

  // the data bag of a unit that left a relation: kept for the remote units'
  // relation-departed hooks (which read it), a day at most
  counts.departedBags += await drain(() =>
    db
      .deleteFrom('relation_data')
      .where('departed_at', 'is not', null)
      .where('departed_at', '<', new Date(now - DAY_MS))
      .executeTakeFirstOrThrow(),
  );

  // PGlite runs no autovacuum: without this, the space of deleted rows is never used
  // again and the files keep growing. On Postgres it only comes sooner than autovacuum.
  const vacuum: [keyof PruneCounts, string][] = [
    ['logEntries', 'log_entries'],
    ['statusHistory', 'status_history'],
    ['hookRuns', 'hook_runs'],
    ['operations', 'operations'],
  ];
  for (const [key, table] of vacuum) {
    if (counts[key] > 0) await sql`vacuum ${sql.table(table)}`.execute(db);
  }
  return counts;
}
