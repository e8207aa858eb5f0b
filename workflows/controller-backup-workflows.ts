// Workflows of controller backups (issue 11): every export here is registered (workflows/index.ts).
//
// create-backup writes the model store to a file (one activity); restore-backup's
// rows are written by the API, in the transaction that records the operation, and
// this workflow then brings the restored models to life: their machines provisioned
// on this controller, and a unit agent started for every restored unit.
import { ApplicationFailure, proxyActivities } from '@temporalio/workflow';
import type { ControllerBackupActivities, RestoredModel } from '../activities/controller-backup-activities.ts';
import { BOOKKEEPING_ACTIVITY } from './activity-options.ts';
import { provisionAdopted, startUnitAgents } from './agent-start.ts';
import { failureMessage, type OperationInput, runOperation } from './operation.ts';

const writing = proxyActivities<ControllerBackupActivities>({
  // a large store with many charm archives takes a while; the heartbeat notices a lost worker
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 3 },
});
const records = proxyActivities<ControllerBackupActivities>({ ...BOOKKEEPING_ACTIVITY, heartbeatTimeout: '1 minute' });

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

export async function restoreControllerBackupWorkflow(input: RestoreControllerBackupInput): Promise<void> {
  await runOperation(input, async (ctx) => {
    if (input.models.length === 0) {
      await ctx.step('no model to bring up');
      return;
    }
    await ctx.step('adopting the restored machines');
    const placed = await records.adoptRestoredMachines(input.models);
    const failures = await provisionAdopted(placed, (total) => ctx.step(`provisioning ${total} restored machine(s)`));
    const agents = await records.restoredUnitAgents(input.models);
    await ctx.step(`starting ${agents.length} unit agent(s)`);
    await startUnitAgents(agents, 'restored');
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
