// migrate / evacuate-machine: move units to other machines with no downtime.
// 1. new units on the targets (install, start, and every relation joined);
// 2. wait until they, and the units related to them, have settled;
// 3. drain the old units: they leave their relations while still running, so the
//    remote units run relation-departed and stop using them;
// 4. stop and remove the old units.
// A failure in 1–2 rolls back: the new units go, the old ones were never touched.
import { ApplicationFailure, proxyActivities, sleep } from '@temporalio/workflow';
import type { RelationActivities } from '../activities/relation-activities.ts';
import { BOOKKEEPING_ACTIVITY } from './activity-options.ts';
import { type DeployInput, deployUnits, removeUnits, tagApplication } from './application-workflows.ts';
import { failureMessage, type OperationContext, runOperation } from './operation.ts';

// short reads and wakes, asked for every second while waiting: a worker lost in the
// middle of one is noticed in 30 s, not the bookkeeping default's 2 minutes
const relations = proxyActivities<RelationActivities>({ ...BOOKKEEPING_ACTIVITY, startToCloseTimeout: '30 seconds' });

/** One application's move: its new units (placed on the targets) and the units they replace. */
export interface MigrationStep extends Omit<DeployInput, 'operationId' | 'model' | 'kind' | 'modelUuid'> {
  old: string[];
}

export interface MigrateInput {
  operationId: number;
  model: string;
  modelUuid: string;
  kind: string;
  application?: string;
  steps: MigrationStep[];
  /** How long the new units (and their related units) have to settle. */
  settleTimeoutSeconds: number;
}

const POLL_MS = 1_000;

/** Waits until no unit of the applications (or related to them) has anything to run; false on timeout. */
async function settled(ctx: OperationContext, input: MigrateInput, apps: string[], what: string): Promise<boolean> {
  const deadline = Date.now() + input.settleTimeoutSeconds * 1000;
  let quiet = 0;
  let shown = '';
  while (Date.now() < deadline) {
    const busy = await relations.busyUnits(apps.map((application) => ({ modelUuid: input.modelUuid, application })));
    quiet = busy.length === 0 ? quiet + 1 : 0;
    // two quiet looks a moment apart: a commit's wake may be on its way between them
    if (quiet >= 2) return true;
    const now = busy.length > 0 ? `${what}: waiting on ${busy.join(', ')}` : what;
    if (now !== shown) {
      shown = now;
      await ctx.step(now);
    }
    await sleep(POLL_MS);
  }
  return false;
}

export async function migrateWorkflow(input: MigrateInput): Promise<void> {
  if (input.application) tagApplication({ ...input, application: input.application });
  await runOperation(input, async (ctx) => {
    for (const step of input.steps) {
      const deploy: DeployInput = {
        ...step,
        operationId: input.operationId,
        model: input.model,
        modelUuid: input.modelUuid,
        kind: input.kind,
      };
      const fresh = step.units.map((u) => u.unit);
      try {
        await deployUnits(ctx, deploy);
        const ok = await settled(ctx, input, [step.application], `${fresh.join(', ')} joining their relations`);
        if (!ok) throw new Error(`the new units did not settle within ${input.settleTimeoutSeconds}s`);
      } catch (err) {
        const why = failureMessage(err);
        await ctx.step(`rolling back: removing ${fresh.join(', ')} (${why})`);
        await relations.drainUnits(input.modelUuid, step.application, fresh);
        await removeUnits(ctx, {
          ...deploy,
          units: fresh,
          force: true,
          timeoutSeconds: 60,
          removeApplication: false,
        });
        throw ApplicationFailure.nonRetryable(
          `migration of ${step.application} failed: ${why}; rolled back: ${fresh.join(', ')} removed, ${step.old.join(', ')} untouched`,
          'MigrationFailed',
        );
      }
      await ctx.step(`draining ${step.old.join(', ')}: the related units depart from them`);
      await relations.drainUnits(input.modelUuid, step.application, step.old);
      await settled(ctx, input, [step.application], `the related units departing from ${step.old.join(', ')}`);
      await ctx.step(`removing ${step.old.join(', ')}`);
      await removeUnits(ctx, {
        ...deploy,
        units: step.old,
        force: false,
        timeoutSeconds: 300,
        removeApplication: false,
      });
      await ctx.step(`${step.application}: ${step.old.join(', ')} moved to ${fresh.join(', ')}`);
    }
  });
}
