// Workflows of application backups and schedules (issue 11): every export here is
// registered (workflows/index.ts).
//
// - appBackupWorkflow: the charm's `backup` action on one unit (its params and
//   results stay in the operation's row, as for any action), then the artifact it
//   named is fetched into the controller's backup store and listed with its size
//   and sha256.
// - appRestoreWorkflow: a backup is copied back to a unit (checked by sha256 there),
//   then the charm's `restore` action runs with its path as the `path` param; the
//   copy goes afterwards.
// - appScheduleRunWorkflow: what a schedule's Temporal Schedule starts. It records
//   the operation of the run (backup-application or refresh) and runs that
//   operation's workflow as its child, with the operation's workflow id, then keeps
//   the run's outcome.
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import {
  ApplicationFailure,
  CancellationScope,
  isCancellation,
  ParentClosePolicy,
  proxyActivities,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { AppBackupActivities, BackupSummary } from '../activities/app-backup-activities.ts';
import type { UnitActivities } from '../activities/unit-activities.ts';
import type { AppScheduleRunState } from '../store/schema-app-backups.ts';
import { BOOKKEEPING_ACTIVITY, BOOKKEEPING_RETRY } from './activity-options.ts';
import {
  type ApplicationOperationInput,
  deliverWhenAgentRuns,
  explainWaits,
  tagApplication,
  UnitTracker,
} from './application-workflows.ts';
import { failureMessage, type OperationContext, runOperation } from './operation.ts';
import { ApplicationKey, ModelKey, OperationKindKey } from './search-attributes.ts';

const units = proxyActivities<UnitActivities>(BOOKKEEPING_ACTIVITY);
const records = proxyActivities<AppBackupActivities>(BOOKKEEPING_ACTIVITY);
/** Moving artifacts: long, heartbeating, a few attempts (a file that changed while read is read again). */
const transfer = proxyActivities<AppBackupActivities>({
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '5 seconds', backoffCoefficient: 2, maximumInterval: '1 minute', maximumAttempts: 5 },
});
/** Following an operation whose workflow someone else started: as long as it takes. */
const follow = proxyActivities<AppBackupActivities>({
  startToCloseTimeout: '30 days',
  heartbeatTimeout: '1 minute',
  retry: BOOKKEEPING_RETRY,
});

export interface AppBackupInput extends ApplicationOperationInput {
  unit: string;
  /** The schedule whose run this is, if one. */
  scheduleId?: number;
  /** The schedule keeps only its newest this many backups. */
  keep?: number;
}

export interface AppRestoreInput extends ApplicationOperationInput {
  unit: string;
  backupId: number;
}

/** Runs an action of the charm on one unit through its agent; throws when it did not complete. */
async function runUnitAction(
  ctx: OperationContext,
  input: ApplicationOperationInput & { unit: string },
  action: string,
): Promise<void> {
  const tracker = new UnitTracker(input, [input.unit], () => true, `queued ${action}`);
  await ctx.step(`running action ${action} on ${input.unit}`);
  const event = { hook: action, notify: workflowInfo().workflowId, action: { operationId: input.operationId } };
  void deliverWhenAgentRuns(input, tracker, input.unit, [event]);
  let settled = false;
  void explainWaits(input, tracker, () => settled);
  await tracker.wait(`running action ${action}`);
  settled = true;
  const outcome = await units.actionOutcome(input.operationId);
  if (!outcome) throw ApplicationFailure.nonRetryable(`${input.unit} went before the action ran`, 'UnitGone');
  if (outcome.status !== 'completed') {
    throw ApplicationFailure.nonRetryable(
      `action ${action} on ${input.unit} failed: ${outcome.message}`,
      'ActionFailed',
    );
  }
}

export async function appBackupWorkflow(input: AppBackupInput): Promise<BackupSummary> {
  tagApplication(input);
  return await runOperation(input, async (ctx) => {
    await runUnitAction(ctx, input, 'backup');
    await ctx.step(`fetching the artifact from ${input.unit}`);
    const backup = await transfer.fetchBackupArtifact({
      operationId: input.operationId,
      modelUuid: input.modelUuid,
      application: input.application,
      unit: input.unit,
      ...(input.scheduleId !== undefined ? { scheduleId: input.scheduleId } : {}),
    });
    let pruned: number[] = [];
    if (input.scheduleId !== undefined && input.keep !== undefined) {
      pruned = await records.pruneScheduledBackups(input.scheduleId, input.keep);
    }
    await ctx.step(
      `backup ${backup.id} of ${input.unit} stored (${backup.size} bytes, sha256 ${backup.sha256})${pruned.length > 0 ? `; older backups of schedule ${input.scheduleId} removed: ${pruned.join(', ')}` : ''}`,
      { backup, ...(pruned.length > 0 ? { pruned } : {}) },
    );
    return backup;
  });
}

export async function appRestoreWorkflow(input: AppRestoreInput): Promise<void> {
  tagApplication(input);
  await runOperation(input, async (ctx) => {
    await ctx.step(`copying backup ${input.backupId} to ${input.unit}`);
    const path = await transfer.pushBackupArtifact({
      operationId: input.operationId,
      backupId: input.backupId,
      modelUuid: input.modelUuid,
      unit: input.unit,
    });
    try {
      await runUnitAction(ctx, input, 'restore');
    } finally {
      await CancellationScope.nonCancellable(() =>
        records.removeRestoredArtifact({ modelUuid: input.modelUuid, unit: input.unit, backupId: input.backupId }),
      );
    }
    await ctx.step(`backup ${input.backupId} restored on ${input.unit} (from ${path})`, { backup: input.backupId });
  });
}

export interface AppBackupRemoveInput extends ApplicationOperationInput {
  backupId: number;
}

export async function appBackupRemoveWorkflow(input: AppBackupRemoveInput): Promise<void> {
  tagApplication(input);
  await runOperation(input, async (ctx) => {
    await ctx.step(`removing backup ${input.backupId}`);
    const removed = await records.removeBackupArtifact(input.backupId);
    await ctx.step(removed ? `backup ${input.backupId} removed` : `backup ${input.backupId} was already gone`);
  });
}

export interface ScheduleRunInput {
  scheduleId: number;
  model: string;
  application: string;
  /** backup or refresh */
  kind: string;
}

/**
 * One run of a schedule. Its outcome is the operation's: the run fails when the
 * operation failed (so the Temporal UI shows it), and is kept in the store.
 */
export async function appScheduleRunWorkflow(input: ScheduleRunInput): Promise<string> {
  const self = workflowInfo().workflowId;
  upsertSearchAttributes([
    { key: ModelKey, value: input.model },
    { key: ApplicationKey, value: input.application },
    { key: OperationKindKey, value: `scheduled-${input.kind}` },
  ]);
  const run = await records.startScheduleRun({ scheduleId: input.scheduleId, workflowId: self });
  if ('skipped' in run) {
    if (run.state === 'failed') throw ApplicationFailure.nonRetryable(run.skipped, 'ScheduledRunRefused');
    return `skipped: ${run.skipped}`;
  }
  let outcome: { state: AppScheduleRunState; message: string };
  try {
    const child = await startChild(run.workflow, {
      workflowId: run.workflowId,
      args: run.args,
      staticSummary: run.summary,
      // a run ended by the schedule (terminate-other) cancels its operation, which records it
      parentClosePolicy: ParentClosePolicy.REQUEST_CANCEL,
    });
    await child.result();
    outcome = { state: 'succeeded', message: `operation ${run.operationId} succeeded` };
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) {
      // the reconciler started the operation's workflow first: follow it from the store
      const ended = await follow.awaitOperationEnd(run.operationId);
      outcome = {
        state: ended.state === 'succeeded' ? 'succeeded' : ended.state === 'cancelled' ? 'cancelled' : 'failed',
        message: `operation ${run.operationId} ${ended.state}${ended.error ? `: ${ended.error}` : ''}`,
      };
    } else if (isCancellation(err)) {
      await CancellationScope.nonCancellable(() =>
        records.finishScheduleRun({
          workflowId: self,
          state: 'cancelled',
          message: `operation ${run.operationId} cancelled`,
        }),
      );
      throw err;
    } else {
      outcome = { state: 'failed', message: `operation ${run.operationId} failed: ${failureMessage(err)}` };
    }
  }
  await records.finishScheduleRun({ workflowId: self, ...outcome });
  if (outcome.state !== 'succeeded') throw ApplicationFailure.nonRetryable(outcome.message, 'ScheduledRunFailed');
  return outcome.message;
}
