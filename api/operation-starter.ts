// Every mutation: record the operation and its intent in one transaction, start
// its workflow, answer with the operation at once.
import {
  type Client,
  isGrpcServiceError,
  ServiceError,
  WorkflowExecutionAlreadyStartedError,
  WorkflowIdConflictPolicy,
  WorkflowIdReusePolicy,
} from '@temporalio/client';
import { sql } from 'kysely';
import type { OperationRow, OperationStart } from '../store/schema.ts';
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

/**
 * Records the operation and its intent in one transaction, with how its workflow is
 * started (so a crash before the start loses nothing: the reconciler starts it),
 * then starts the workflow. A start the server definitely refused undoes the intent
 * and fails the operation (503); a start that may have happened (timeout, server
 * unavailable) leaves the operation pending for the reconciler, and answers it.
 */
export async function startOperation<A>(
  db: Db,
  temporal: TemporalDeps,
  req: OperationRequest<A>,
): Promise<OperationRow> {
  const row = await recordOperation(db, req);
  try {
    await startOperationWorkflow(temporal, row);
  } catch (err) {
    if (!definitelyNotStarted(err)) {
      console.error(
        `charmflow: operation ${row.id} (${req.kind}) recorded; its workflow may not have started (${startError(err)}): the reconciler will start it`,
      );
      return row;
    }
    await req.undo?.(db);
    await db
      .updateTable('operations')
      .set({ state: 'failed', error: `could not start workflow: ${startError(err)}`, finished_at: sql`now()` })
      .where('id', '=', row.id)
      .where('state', '=', 'pending')
      .execute();
    throw new ApiError(503, `could not start the ${req.kind} operation: Temporal refused it`);
  }
  return row;
}

/** The operation, its intent and how to start its workflow, in one transaction; nothing started yet. */
export function recordOperation<A>(db: Db, req: OperationRequest<A>): Promise<OperationRow> {
  return db.transaction().execute(async (tx) => {
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
    // after the intent: it may name what the arguments carry (a new machine's id).
    // The arguments are the workflow's input, in its history: they never hold a secret.
    const start: OperationStart = { workflow: req.workflow, args: req.args(op.id) };
    return tx
      .updateTable('operations')
      .set({ workflow_id: workflowId, start: JSON.stringify(start) })
      .where('id', '=', op.id)
      .returningAll()
      .executeTakeFirstOrThrow();
  });
}

/**
 * Starts a recorded operation's workflow; idempotent (an existing workflow of the
 * same id is used, a closed one is not run again: WorkflowExecutionAlreadyStartedError).
 */
export async function startOperationWorkflow(temporal: TemporalDeps, row: OperationRow): Promise<void> {
  if (!row.start || !row.workflow_id) throw new Error(`operation ${row.id} does not say how to start its workflow`);
  await temporal.client.workflow.start(row.start.workflow, {
    taskQueue: temporal.taskQueue,
    workflowId: row.workflow_id,
    args: row.start.args,
    workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
    workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
    staticSummary: row.summary,
    typedSearchAttributes: [
      { key: ModelKey, value: row.model_name ?? '' },
      { key: OperationKindKey, value: row.kind },
    ],
  });
}

// gRPC status codes by which the server says it refused the request, so nothing was
// started: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS, PERMISSION_DENIED,
// RESOURCE_EXHAUSTED, FAILED_PRECONDITION, OUT_OF_RANGE, UNIMPLEMENTED, UNAUTHENTICATED.
// Not CANCELLED, UNKNOWN, DEADLINE_EXCEEDED, ABORTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
const REFUSED = new Set([3, 5, 6, 7, 8, 9, 11, 12, 16]);

/** A failed start in one line: the client's error and the server's reason under it. */
export function startError(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : '';
  return `${String(err)}${cause}`;
}

/**
 * True when a failed start certainly started nothing: the server refused it, or it
 * failed in this process before a request was sent. A timeout, an unavailable
 * server or a broken connection may have started it after all.
 */
export function definitelyNotStarted(err: unknown): boolean {
  if (err instanceof WorkflowExecutionAlreadyStartedError) return false;
  const grpc = isGrpcServiceError(err) ? err : err instanceof ServiceError ? err.cause : undefined;
  if (isGrpcServiceError(grpc)) return REFUSED.has(grpc.code);
  // a ServiceError without a gRPC status: the call's fate is unknown
  return !(err instanceof ServiceError);
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
    ...(row.results ? { action: row.results } : {}),
    createdBy: row.created_by,
    createdAt: iso(row.created_at)!,
    updatedAt: iso(row.updated_at)!,
    finishedAt: iso(row.finished_at),
  };
}

export { iso };
