// Integrations: integrate and remove-integration. The API records the integration
// (or marks it dying) with the operation; these wake the units at both ends, whose
// agents work out their relation hooks from the model store, and follow them.
import { ApplicationFailure, proxyActivities, workflowInfo } from '@temporalio/workflow';
import type { RelationActivities } from '../activities/relation-activities.ts';
import { BOOKKEEPING_ACTIVITY } from './activity-options.ts';
import { UnitTracker } from './application-workflows.ts';
import { type OperationInput, runOperation } from './operation.ts';

const relations = proxyActivities<RelationActivities>(BOOKKEEPING_ACTIVITY);

export interface IntegrationInput extends OperationInput {
  integrationId: number;
  /** The applications at its ends (one, for a peer relation), each in its own model. */
  apps: { modelUuid: string; application: string }[];
  /**
   * integrate: stop following the units' hooks after this many seconds (default 300);
   * remove-integration: fail when they have not run relation-broken by then (default 600).
   */
  timeoutSeconds?: number;
}

/**
 * Wakes every unit at both ends and waits until each has run the relation hooks
 * the integration brought it (created, then joined and changed per remote unit;
 * a unit still deploying joins once it has started).
 */
export async function integrateWorkflow(input: IntegrationInput): Promise<void> {
  await runOperation(input, async (ctx) => {
    const units = await relations.applicationUnits(input.apps);
    const tracker = new UnitTracker(input, units, () => true, 'waking');
    await ctx.step('running relation-created, relation-joined and relation-changed');
    const woken = await relations.wakeApplicationUnits(input.apps, {
      notify: workflowInfo().workflowId,
      relationId: input.integrationId,
    });
    for (const u of units) {
      if (woken.includes(u)) tracker.set(u, 'running relation hooks');
      else {
        tracker.set(u, 'no agent yet: joins once it has started');
        tracker.finished.add(u);
      }
    }
    // the integration is made whatever the units do: the operation follows their
    // first hooks for a while, then leaves the rest to the agents (status shows them)
    const outcome = await tracker.wait('running relation hooks', (input.timeoutSeconds ?? 300) * 1000);
    if (outcome === 'error') {
      throw ApplicationFailure.nonRetryable(
        `${tracker.errorSummary()}; the integration stays (see \`charmflow status\`, \`charmflow resolve\`)`,
        'HookFailed',
      );
    }
    if (outcome === 'timeout') {
      const busy = tracker.open().map((u) => `${u}: ${tracker.state[u]}`);
      await ctx.step(`integrated; relation hooks still to run on ${busy.join('; ')} (see \`charmflow status\`)`);
    }
  });
}

/**
 * Wakes every unit at both ends of a dying integration: each runs relation-departed
 * for every remote unit, then relation-broken; then the integration and its data
 * bags go.
 */
export async function removeIntegrationWorkflow(input: IntegrationInput): Promise<void> {
  await runOperation(input, async (ctx) => {
    const units = await relations.applicationUnits(input.apps);
    const tracker = new UnitTracker(
      input,
      units,
      (hook) => hook === 'relations' || hook.endsWith('-relation-broken'),
      'waking',
    );
    await ctx.step('running relation-departed and relation-broken');
    const woken = await relations.wakeApplicationUnits(input.apps, {
      notify: workflowInfo().workflowId,
      relationId: input.integrationId,
    });
    for (const u of units) {
      if (woken.includes(u)) tracker.set(u, 'running relation-departed and relation-broken');
      else {
        tracker.set(u, 'no agent: nothing to run');
        tracker.finished.add(u);
      }
    }
    const timeoutSeconds = input.timeoutSeconds ?? 600;
    const outcome = await tracker.wait('running relation-departed and relation-broken', timeoutSeconds * 1000);
    if (outcome !== 'done') {
      const why = outcome === 'error' ? tracker.errorSummary() : `not done within ${timeoutSeconds}s`;
      const stuck = tracker.open();
      throw ApplicationFailure.nonRetryable(
        `${why}${stuck.length > 0 ? ` (waiting on ${stuck.join(', ')})` : ''}; the integration stays dying: run remove-integration again once the units are resolved`,
        'RemoveFailed',
      );
    }
    await ctx.step('removing the integration and its data');
    await relations.deleteIntegration(input.integrationId);
  });
}
