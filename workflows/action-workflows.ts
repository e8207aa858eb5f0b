// run-action: queue an action on one unit's agent and follow it. Its params and
// results stay in the operation's row (the hook activity reads and writes them),
// never in a workflow history; a failed action fails the operation, not the unit.
import { ApplicationFailure, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { UnitActivities } from '../activities/unit-activities.ts';
import { BOOKKEEPING_ACTIVITY } from './activity-options.ts';
import {
  type ApplicationOperationInput,
  deliverWhenAgentRuns,
  explainWaits,
  tagApplication,
  UnitTracker,
} from './application-workflows.ts';
import { runOperation } from './operation.ts';

const units = proxyActivities<UnitActivities>(BOOKKEEPING_ACTIVITY);

export interface RunActionInput extends ApplicationOperationInput {
  unit: string;
  action: string;
}

export async function runActionWorkflow(input: RunActionInput): Promise<void> {
  tagApplication(input);
  await runOperation(input, async (ctx) => {
    const tracker = new UnitTracker(input, [input.unit], () => true, `queued ${input.action}`);
    await ctx.step(`running action ${input.action} on ${input.unit}`);
    const event = { hook: input.action, notify: workflowInfo().workflowId, action: { operationId: input.operationId } };
    void deliverWhenAgentRuns(input, tracker, input.unit, [event]);
    let settled = false;
    void explainWaits(input, tracker, () => settled);
    await tracker.wait(`running action ${input.action}`);
    settled = true;
    const outcome = await units.actionOutcome(input.operationId);
    if (!outcome) {
      throw ApplicationFailure.nonRetryable(`${input.unit} went before the action ran`, 'UnitGone');
    }
    if (outcome.status !== 'completed') {
      throw ApplicationFailure.nonRetryable(
        `action ${input.action} on ${input.unit} failed: ${outcome.message}`,
        'ActionFailed',
      );
    }
    await ctx.step(`action ${input.action} completed on ${input.unit}`);
  });
}
