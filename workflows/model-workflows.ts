// Model lifecycle operations.
import { proxyActivities } from '@temporalio/workflow';
import type { ModelActivities } from '../activities/model-activities.ts';
import { BOOKKEEPING_ACTIVITY } from './activity-options.ts';
import { type OperationInput, runOperation } from './operation.ts';

// a model's records are written (or removed) whatever it takes: never half done
const acts = proxyActivities<ModelActivities>(BOOKKEEPING_ACTIVITY);

export async function createModelWorkflow(input: OperationInput): Promise<void> {
  await runOperation(input, async (ctx) => {
    await ctx.step(`preparing model ${input.model}`);
    await acts.prepareModel(input.model);
  });
}

export async function destroyModelWorkflow(input: OperationInput): Promise<void> {
  await runOperation(input, async (ctx) => {
    await ctx.step(`destroying model ${input.model}`);
    await acts.destroyModel(input.model);
  });
}
