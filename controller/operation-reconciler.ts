// The operation reconciler: the API records an operation, then starts its workflow.
// A crash between the two (or a start whose fate was unknown: a timeout, Temporal
// unavailable) leaves the operation pending with no workflow. At start-up and then
// every interval, each such operation has its workflow started from what its row
// recorded (operations.start). Starting is idempotent: the workflow id is the
// operation's, an existing run is used, a closed one is never run again.
import { WorkflowNotFoundError } from '@temporalio/client';
import { sql } from 'kysely';
import {
  definitelyNotStarted,
  startError,
  startOperationWorkflow,
  type TemporalDeps,
} from '../api/operation-starter.ts';
import type { Db } from '../store/store.ts';

export interface ReconcileResult {
  /** Operations whose workflow this pass started. */
  started: number[];
  /** Operations failed by this pass: Temporal refused their start, or their workflow closed without an outcome. */
  failed: number[];
}

export interface ReconcileOptions {
  /** Leave alone operations younger than this: the API that recorded them is starting them. */
  graceMs: number;
  log: (msg: string) => void;
}

/** One pass over the pending operations. */
export async function reconcilePendingOperations(
  db: Db,
  temporal: TemporalDeps,
  opts: ReconcileOptions,
): Promise<ReconcileResult> {
  const result: ReconcileResult = { started: [], failed: [] };
  const pending = await db
    .selectFrom('operations')
    .selectAll()
    .where('state', '=', 'pending')
    .where('start', 'is not', null)
    .where('workflow_id', 'is not', null)
    .where('created_at', '<', sql<Date>`now() - make_interval(secs => ${opts.graceMs / 1000})`)
    .orderBy('id')
    .execute();
  const fail = async (id: number, error: string) => {
    // only if still pending: its workflow may have recorded an outcome meanwhile
    const res = await db
      .updateTable('operations')
      .set({ state: 'failed', error, finished_at: sql`now()` })
      .where('id', '=', id)
      .where('state', '=', 'pending')
      .executeTakeFirst();
    if (Number(res.numUpdatedRows) === 1) result.failed.push(id);
  };
  for (const row of pending) {
    const workflowId = row.workflow_id!;
    let status: string | null;
    try {
      status = (await temporal.client.workflow.getHandle(workflowId).describe()).status.name;
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
      status = null;
    }
    if (status === 'RUNNING') continue;
    if (status !== null) {
      opts.log(
        `operation ${row.id}: its workflow ${workflowId} is ${status} but never recorded an outcome; failing it`,
      );
      await fail(row.id, `its workflow ended (${status.toLowerCase()}) without recording an outcome`);
      continue;
    }
    try {
      await startOperationWorkflow(temporal, row);
      result.started.push(row.id);
      opts.log(`operation ${row.id} (${row.kind} ${row.target}) was pending with no workflow; started ${workflowId}`);
    } catch (err) {
      if (!definitelyNotStarted(err)) throw err;
      opts.log(`operation ${row.id}: Temporal refused to start ${workflowId}: ${startError(err)}`);
      await fail(row.id, `could not start workflow: ${startError(err)}`);
    }
  }
  return result;
}

export interface OperationReconciler {
  /** The first pass, run at start. */
  first: Promise<ReconcileResult | null>;
  stop(): Promise<void>;
}

/**
 * Runs a pass now and then every intervalMs until stopped. A pass that fails (Temporal
 * or the store unreachable) is logged and tried again at the next interval.
 */
export function startOperationReconciler(
  db: Db,
  temporal: TemporalDeps,
  opts: ReconcileOptions & { intervalMs: number },
): OperationReconciler {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let current: Promise<ReconcileResult | null> = Promise.resolve(null);
  const pass = async (): Promise<ReconcileResult | null> => {
    try {
      return await reconcilePendingOperations(db, temporal, opts);
    } catch (err) {
      if (!stopped) opts.log(`operation reconciler: pass failed, trying again in ${opts.intervalMs / 1000}s: ${err}`);
      return null;
    }
  };
  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      current = pass().finally(schedule);
    }, opts.intervalMs);
    timer.unref();
  };
  current = pass().finally(schedule);
  return {
    first: current,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await current.catch(() => {});
    },
  };
}
