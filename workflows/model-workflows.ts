// Model lifecycle operations.
import { proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { MachineActivities } from '../activities/machine-activities.ts';
import type { ModelActivities } from '../activities/model-activities.ts';
import type { UnitActivities } from '../activities/unit-activities.ts';
import { BOOKKEEPING_ACTIVITY } from './activity-options.ts';
import { agentIds, signalAgent, UnitTracker } from './application-workflows.ts';
import { type OperationInput, runOperation } from './operation.ts';

// a model's records are written (or removed) whatever it takes: never half done
const acts = proxyActivities<ModelActivities>(BOOKKEEPING_ACTIVITY);

export async function createModelWorkflow(input: OperationInput): Promise<void> {
  await runOperation(input, async (ctx) => {
    await ctx.step(`preparing model ${input.model}`);
    await acts.prepareModel(input.model);
  });
}

export interface DestroyModelInput extends OperationInput {
  /** Absent in operations started before destroy-model tore down units (looked up then). */
  modelUuid?: string;
  /** How long the units' stop and remove hooks may take before their processes are killed. */
  timeoutSeconds?: number;
}

const DESTROY_HOOK_TIMEOUT_SECONDS = 60;

const units = proxyActivities<UnitActivities>({ ...BOOKKEEPING_ACTIVITY, heartbeatTimeout: '1 minute' });
const machines = proxyActivities<MachineActivities>({
  ...BOOKKEEPING_ACTIVITY,
  startToCloseTimeout: '15 minutes',
  heartbeatTimeout: '1 minute',
});

/**
 * Everything the model runs ends with it: each unit's stop and remove hooks run
 * (through its agent, within a timeout), then every agent is ended, what the units
 * left running is killed, the machines are cleaned, and only then the records go.
 */
export async function destroyModelWorkflow(input: DestroyModelInput): Promise<void> {
  await runOperation(input, async (ctx) => {
    const modelUuid = input.modelUuid ?? (await acts.modelUuidOf(input.model));
    if (modelUuid !== null) {
      const where = { model: input.model, modelUuid };
      const names = await units.modelUnits(modelUuid);
      if (names.length > 0) {
        await ctx.step(`running stop and remove hooks on ${names.length} unit(s)`);
        const tracker = new UnitTracker(input, names, 'remove', 'queued stop');
        const self = workflowInfo().workflowId;
        await Promise.all(
          names.map(async (u) => {
            try {
              await signalAgent(where, u, [
                { hook: 'stop', notify: self, quiet: true },
                { hook: 'remove', notify: self },
              ]);
            } catch {
              tracker.set(u, 'no agent');
              tracker.finished.add(u);
            }
          }),
        );
        // a failed hook is not waited for: its unit goes with the rest below
        await tracker.wait('removing units', (input.timeoutSeconds ?? DESTROY_HOOK_TIMEOUT_SECONDS) * 1000);
        await ctx.step('ending unit agents');
        await units.endUnitAgents(
          names.flatMap((u) => agentIds(where, u)),
          `model ${input.model} is destroyed`,
        );
      }
      await ctx.step(`stopping what the units left running and cleaning the machines of ${input.model}`);
      await machines.cleanModelMachines(modelUuid);
    }
    await ctx.step(`removing the records of model ${input.model}`);
    await acts.destroyModel(input.model);
  });
}
