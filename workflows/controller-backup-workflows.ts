// Workflows of controller backups (issue 11): every export here is registered (workflows/index.ts).
//
// create-backup writes the model store to a file (one activity); restore-backup's
// rows are written by the API, in the transaction that records the operation, and
// this workflow then brings the restored models to life: their machines provisioned
// on this controller, and a unit agent started for every restored unit.
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { ApplicationFailure, ParentClosePolicy, proxyActivities, startChild } from '@temporalio/workflow';
import type { ControllerBackupActivities, RestoredModel } from '../activities/controller-backup-activities.ts';
import type { MachineActivities } from '../activities/machine-activities.ts';
import { BOOKKEEPING_ACTIVITY } from './activity-options.ts';
import { unitAgentWorkflowId } from './messages.ts';
import { failureMessage, type OperationInput, runOperation } from './operation.ts';
import { ApplicationKey, ModelKey } from './search-attributes.ts';
import { unitAgentWorkflow } from './unit-agent.ts';

const writing = proxyActivities<ControllerBackupActivities>({
  // a large store with many charm archives takes a while; the heartbeat notices a lost worker
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 3 },
});
const records = proxyActivities<ControllerBackupActivities>({ ...BOOKKEEPING_ACTIVITY, heartbeatTimeout: '1 minute' });
const placement = proxyActivities<MachineActivities>({
  startToCloseTimeout: '15 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 5 },
});

export interface CreateControllerBackupInput extends OperationInput {
  backupId: string;
}

export async function createControllerBackupWorkflow(input: CreateControllerBackupInput): Promise<void> {
  await runOperation(input, async (ctx) => {
    await ctx.step(`writing backup ${input.backupId}`, { backup: input.backupId });
    try {
      const written = await writing.writeControllerBackup(input.backupId);
      await ctx.step(`backup ${input.backupId} written: ${written.size} bytes, sha256 ${written.sha256}`, {
        backup: input.backupId,
        size: written.size,
        sha256: written.sha256,
      });
    } catch (err) {
      await records.markControllerBackupFailed(input.backupId, failureMessage(err));
      throw err;
    }
  });
}

export interface RestoreControllerBackupInput extends OperationInput {
  /** The backup's id (from its manifest), for people. */
  backupId: string;
  /** The models the API restored. */
  models: RestoredModel[];
}

/** Machines one provisionMachines activity prepares. */
const PROVISION_BATCH = 50;

export async function restoreControllerBackupWorkflow(input: RestoreControllerBackupInput): Promise<void> {
  await runOperation(input, async (ctx) => {
    if (input.models.length === 0) {
      await ctx.step('no model to bring up');
      return;
    }
    await ctx.step('adopting the restored machines');
    const placed = await records.adoptRestoredMachines(input.models);
    const failures: string[] = [];
    const total = placed.reduce((n, p) => n + p.machines.length, 0);
    if (total > 0) {
      await ctx.step(`provisioning ${total} restored machine(s)`);
      await Promise.all(
        placed.flatMap((p) => {
          const batches: string[][] = [];
          for (let i = 0; i < p.machines.length; i += PROVISION_BATCH) {
            batches.push(p.machines.slice(i, i + PROVISION_BATCH));
          }
          return batches.map(async (ids) => {
            try {
              await placement.provisionMachines(p.model, ids);
            } catch (err) {
              // the machine shows it is in error; its units' hooks fail until it is fixed
              failures.push(`model ${p.model}: ${failureMessage(err)}`);
            }
          });
        }),
      );
    }
    const agents = await records.restoredUnitAgents(input.models);
    await ctx.step(`starting ${agents.length} unit agent(s)`);
    await Promise.all(
      agents.map(async ({ application, state }) => {
        try {
          await startChild(unitAgentWorkflow, {
            workflowId: unitAgentWorkflowId(state.ref.model, state.ref.modelUuid, state.ref.unit),
            args: [state],
            parentClosePolicy: ParentClosePolicy.ABANDON,
            staticSummary: `unit agent of ${state.ref.unit} in model ${state.ref.model} (restored)`,
            typedSearchAttributes: [
              { key: ModelKey, value: state.ref.model },
              { key: ApplicationKey, value: application },
            ],
          });
        } catch (err) {
          // started by an earlier attempt of this step: it is running
          if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
        }
      }),
    );
    const names = input.models.map((m) => m.name).join(', ');
    if (failures.length > 0) {
      throw ApplicationFailure.nonRetryable(
        `restored model(s) ${names}, but machines could not be provisioned: ${failures.join('; ')}`,
        'ProvisionFailed',
      );
    }
    await ctx.step(`restored model(s) ${names}: ${agents.length} unit agent(s) running`, {
      models: input.models.map((m) => m.name),
      agents: agents.length,
    });
  });
}
