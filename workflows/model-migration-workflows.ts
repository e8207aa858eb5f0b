// Workflows of migrate-model (issue 11): every export here is registered (workflows/index.ts).
//
// On the source controller, migrateModelWorkflow moves a model to a target controller:
//
//   1. check the target (token, a model of the same name there);
//   2. hold the model's unit agents (each finishes its hook, then runs none) and take
//      their states: from here on nothing runs on the machines, the workloads serve on;
//   3. write the model's export (rows, charms, secrets sealed with this controller's
//      key, which travels in it, and this controller's SSH key);
//   4. the target imports it (nothing runs there yet) and provisions the machines with
//      the SSH key: its own key goes onto every host;
//   5. the target starts the agents from the states handed over, and confirms;
//   6. only then does the model go from here: its agents end, its rows go.
//
// A failure before the target confirms rolls back: the target forgets what it
// imported, the agents here are let go, and the model works here as before; the
// migration can be run again. If the target turns out to run the model already
// (its confirmation was lost), the migration finishes instead.
//
// On the target, importModelWorkflow provisions the imported machines and
// activateModelWorkflow starts the agents from the states handed over.
import { ApplicationFailure, CancellationScope, isCancellation, proxyActivities } from '@temporalio/workflow';
import type { ControllerBackupActivities } from '../activities/controller-backup-activities.ts';
import type { HandedAgent, ModelMigrationActivities } from '../activities/model-migration-activities.ts';
import { BOOKKEEPING_ACTIVITY } from './activity-options.ts';
import { provisionAdopted, startUnitAgents } from './agent-start.ts';
import { failureMessage, type OperationInput, runOperation } from './operation.ts';

// calls to the target (one request each, bounded by its own timeout): a network that
// is down for a while is waited out
const remote = proxyActivities<ModelMigrationActivities>({
  startToCloseTimeout: '5 minutes',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 10 },
});
// waiting for the target's operations (provisioning every host takes a while); the
// heartbeat lets a new worker take over within seconds of a lost one
const watching = proxyActivities<ModelMigrationActivities>({
  startToCloseTimeout: '2 hours',
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 10 },
});
// holding agents waits for the hooks they run (each bounded by its own timeout)
const handing = proxyActivities<ModelMigrationActivities>({
  startToCloseTimeout: '70 minutes',
  heartbeatTimeout: '20 seconds',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 5 },
});
// this controller's own records and agents: never given up on
const records = proxyActivities<ModelMigrationActivities>({ ...BOOKKEEPING_ACTIVITY, heartbeatTimeout: '1 minute' });
const exporting = proxyActivities<ModelMigrationActivities>({
  startToCloseTimeout: '1 hour',
  heartbeatTimeout: '2 minutes',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 3 },
});
const restoring = proxyActivities<ControllerBackupActivities>({
  ...BOOKKEEPING_ACTIVITY,
  heartbeatTimeout: '1 minute',
});

export interface MigrateModelInput extends OperationInput {
  uuid: string;
  /** The target's API (no token: that stays sealed in the store). */
  to: string;
}

export async function migrateModelWorkflow(input: MigrateModelInput): Promise<void> {
  const { operationId: op, uuid, to, model } = input;
  await runOperation(input, async (ctx) => {
    let held = false;
    let sent = false;
    let agents: HandedAgent[] = [];
    try {
      await ctx.step(`checking the target controller ${to}`);
      const target = await remote.checkMigrationTarget(op);
      await ctx.step(`holding the unit agents of model ${model} (each finishes the hook it runs)`, {
        targetVersion: target.version,
      });
      held = true;
      const hand = await handing.holdUnitAgents(op, uuid);
      agents = hand.agents;
      await ctx.step(`exporting model ${model}: ${agents.length} unit agent(s) held`, {
        agents: agents.length,
        ...(hand.dropped.length > 0 ? { dropped: hand.dropped } : {}),
      });
      const file = await exporting.exportModel(op, uuid);
      await ctx.step(`sending the export (${file.size} bytes, sha256 ${file.sha256}) to ${to}`, {
        exportBytes: file.size,
        exportSha256: file.sha256,
      });
      sent = true;
      const importOp = await remote.sendModelToTarget(op, uuid, file.path);
      await ctx.step(`the target imports the model and provisions its machines (its operation ${importOp})`, {
        targetImport: importOp,
      });
      await watching.awaitTargetOperation(op, importOp);
      await ctx.step(`handing ${agents.length} unit agent(s) over to the target`);
      const activateOp = await remote.activateOnTarget(op, uuid, agents);
      await watching.awaitTargetOperation(op, activateOp);
    } catch (err) {
      const message = failureMessage(err);
      // a cancelled migration (from the Temporal UI) rolls back too: nothing here may be cut short
      const live = await CancellationScope.nonCancellable(async () => {
        if (sent) {
          await ctx.step(`rolling back: the target forgets the model (${message})`);
          try {
            if ((await remote.abortOnTarget(op, uuid)) === 'active') {
              await ctx.step('the target runs the model already (its confirmation was lost): finishing');
              return true;
            }
          } catch (abortErr) {
            // the target keeps an import it never ran (its agents are not started):
            // the next attempt replaces it; the model works here meanwhile
            await ctx.step(`the target could not be told to forget the import: ${failureMessage(abortErr)}`);
          }
        }
        if (held) {
          await ctx.step(`rolling back: the unit agents here go on (${message})`);
          await records.releaseUnitAgents(uuid);
        }
        await records.endModelMigrating(uuid, `migration to ${to} failed: ${message}`);
        await records.finishModelMigration(op, 'failed', message);
        return false;
      });
      if (!live) {
        if (isCancellation(err)) throw err;
        throw ApplicationFailure.nonRetryable(
          `model ${model} stays on this controller, working as before: ${message}`,
          'MigrationFailed',
        );
      }
    }
    // the target runs the model now: this controller lets go of it even if cancelled
    await CancellationScope.nonCancellable(async () => {
      await ctx.step(`the target runs model ${model}; removing it from this controller`);
      const forgot = await records.forgetMigratedModel(op, uuid);
      await records.finishModelMigration(op, 'done');
      await ctx.step(`model ${model} moved to ${to}: ${forgot.agents} unit agent(s) handed over`, {
        agents: agents.length,
        to,
      });
    });
  });
}

export interface ImportModelInput extends OperationInput {
  uuid: string;
  /** The source controller's migration, for people. */
  from: string;
}

/** The target's first half: the imported machines provisioned (this controller's key on every host). */
export async function importModelWorkflow(input: ImportModelInput): Promise<void> {
  await runOperation(input, async (ctx) => {
    await ctx.step(`adopting the machines of model ${input.model}`);
    const placed = await restoring.adoptRestoredMachines([{ name: input.model, uuid: input.uuid }]);
    const failures = await provisionAdopted(placed, (total) => ctx.step(`provisioning ${total} machine(s)`));
    if (failures.length > 0) {
      throw ApplicationFailure.nonRetryable(
        `the machines of model ${input.model} could not be provisioned here: ${failures.join('; ')}`,
        'ProvisionFailed',
      );
    }
    await ctx.step(`model ${input.model} imported; its agents start when ${input.from} hands them over`);
  });
}

export interface ActivateModelInput extends OperationInput {
  uuid: string;
  agents: HandedAgent[];
}

/** The target's second half: the agents run here, and the model is live. */
export async function activateModelWorkflow(input: ActivateModelInput): Promise<void> {
  await runOperation(input, async (ctx) => {
    await ctx.step(`starting ${input.agents.length} unit agent(s) handed over`);
    await startUnitAgents(input.agents, 'moved in');
    await records.markModelImported(input.uuid, '');
    await ctx.step(`model ${input.model} is live here: ${input.agents.length} unit agent(s) running`, {
      agents: input.agents.length,
    });
  });
}
