// Model lifecycle operations.
import { proxyActivities } from '@temporalio/workflow';
import type { ModelActivities } from '../activities/model-activities.ts';
import { type OperationInput, runOperation } from './operation.ts';

const acts = proxyActivities<ModelActivities>({
  startToCloseTimeout: '2 minutes',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds', maximumAttempts: 10 },
});

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
