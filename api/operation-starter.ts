// Every mutation: record the operation and its intent in one transaction, start
// its workflow, answer with the operation at once.
import type { Client } from '@temporalio/client';
import { WorkflowIdConflictPolicy } from '@temporalio/client';
import { sql } from 'kysely';
import type { OperationRow } from '../store/schema.ts';
import type { Db, Tx } from '../store/store.ts';
import { ModelKey, OperationKindKey } from '../workflows/search-attributes.ts';
import { ApiError } from './errors.ts';
import type { Operation } from './schemas.ts';

export interface TemporalDeps {
  client: Client;
  taskQueue: string;
}

export interface OperationRequest<A> {
  kind: string;
  model: string;
  target: string;
  createdBy: string;
  params?: Record<string, unknown>;
  /** Workflow function name in workflows/index.ts. */
  workflow: string;
  args: (operationId: number) => A[];
  summary: string;
  /** Writes the intent (desired state) inside the operation's transaction. */
  intent?: (tx: Tx, operationId: number) => Promise<void>;
  /** Undoes the intent when the workflow could not be started. */
  undo?: (db: Db) => Promise<void>;
}

export function workflowIdFor(model: string, kind: string, id: number): string {
  return `op:${model}:${kind}:${id}`;
}

export async function startOperation<A>(
  db: Db,
  temporal: TemporalDeps,
  req: OperationRequest<A>,
): Promise<OperationRow> {
  const row = await db.transaction().execute(async (tx) => {
    const op = await tx
      .insertInto('operations')
      .values({
        model_name: req.model,
        kind: req.kind,
        target: req.target,
        summary: req.summary,
        created_by: req.createdBy,
        params: JSON.stringify(req.params ?? {}),
        progress: '{}',
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    const workflowId = workflowIdFor(req.model, req.kind, op.id);
    await req.intent?.(tx, op.id);
    return tx
      .updateTable('operations')
      .set({ workflow_id: workflowId })
      .where('id', '=', op.id)
      .returningAll()
      .executeTakeFirstOrThrow();
  });
  try {
    await temporal.client.workflow.start(req.workflow, {
      taskQueue: temporal.taskQueue,
      workflowId: row.workflow_id!,
      args: req.args(row.id),
      workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
      staticSummary: req.summary,
      typedSearchAttributes: [
        { key: ModelKey, value: req.model },
        { key: OperationKindKey, value: req.kind },
      ],
    });
  } catch (err) {
    await req.undo?.(db);
    await db
      .updateTable('operations')
      .set({ state: 'failed', error: `could not start workflow: ${String(err)}`, finished_at: sql`now()` })
      .where('id', '=', row.id)
      .execute();
    throw new ApiError(503, `could not start the ${req.kind} operation: Temporal is unavailable`);
  }
  return row;
}

function iso(d: Date | string | null): string | null {
  if (d === null) return null;
  return (d instanceof Date ? d : new Date(d)).toISOString();
}

export function toOperation(row: OperationRow): Operation {
  return {
    id: row.id,
    kind: row.kind,
    model: row.model_name,
    target: row.target,
    state: row.state,
    summary: row.summary,
    error: row.error,
    workflowId: row.workflow_id,
    progress: row.progress ?? {},
    createdBy: row.created_by,
    createdAt: iso(row.created_at)!,
    updatedAt: iso(row.updated_at)!,
    finishedAt: iso(row.finished_at),
  };
}

export { iso };
