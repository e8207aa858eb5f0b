// The frame every operation workflow runs in: mark the operation running, do the
// work, record success or the reason for failure in the model store.
import {
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  proxyLocalActivities,
  setCurrentDetails,
  upsertSearchAttributes,
} from '@temporalio/workflow';
import type { OperationActivities } from '../activities/operation-activities.ts';
import { BOOKKEEPING_RETRY } from './activity-options.ts';
import { ApplicationKey, ModelKey, OperationKindKey } from './search-attributes.ts';

export interface OperationInput {
  operationId: number;
  model: string;
  kind: string;
  application?: string;
}

/**
 * Operation records are one short write to the model store: local activities,
 * run by the worker inside the workflow task, so reporting progress costs no
 * extra round trip through the Temporal server.
 */
export const operationRecords = proxyLocalActivities<OperationActivities>({
  startToCloseTimeout: '30 seconds',
  retry: BOOKKEEPING_RETRY,
});
const ops = operationRecords;

export interface OperationContext {
  /** Record the step the operation is on; shown by the CLI and in the Temporal UI. */
  step(step: string, progress?: Record<string, unknown>): Promise<void>;
}

export async function runOperation<T>(input: OperationInput, body: (ctx: OperationContext) => Promise<T>): Promise<T> {
  upsertSearchAttributes([
    { key: ModelKey, value: input.model },
    { key: OperationKindKey, value: input.kind },
    ...(input.application ? [{ key: ApplicationKey, value: input.application }] : []),
  ]);
  const ctx: OperationContext = {
    async step(step, progress) {
      setCurrentDetails(step);
      await ops.updateOperation(input.operationId, { state: 'running', progress: { ...progress, step } });
    },
  };
  await ops.updateOperation(input.operationId, { state: 'running' });
  try {
    const result = await body(ctx);
    await ops.updateOperation(input.operationId, { state: 'succeeded' });
    setCurrentDetails('done');
    return result;
  } catch (err) {
    if (isCancellation(err)) {
      // cancel-operation: recorded as cancelled (by a scope that outlives the cancellation)
      setCurrentDetails('cancelled');
      await CancellationScope.nonCancellable(() =>
        ops.updateOperation(input.operationId, { state: 'cancelled', error: 'cancelled by request' }),
      );
      throw err;
    }
    const message = failureMessage(err);
    setCurrentDetails(`failed: ${message}`);
    await ops.updateOperation(input.operationId, { state: 'failed', error: message });
    throw ApplicationFailure.nonRetryable(message, 'OperationFailed');
  }
}

/** The innermost cause's message: activity failures wrap the real reason. */
export function failureMessage(err: unknown): string {
  let e: unknown = err;
  while (typeof e === 'object' && e !== null && 'cause' in e && (e as { cause?: unknown }).cause) {
    e = (e as { cause: unknown }).cause;
  }
  return e instanceof Error ? e.message : String(e);
}
