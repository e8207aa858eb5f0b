// refresh: move an application's units to another charm revision in rolling
// batches (at most max-unavailable units at a time, the leader last). Each unit
// gets the new charm shipped and runs upgrade-charm then config-changed; after
// each batch a health gate wants every unit of it active (and a probe action, if
// asked, completed) within a timeout. A failed gate rolls every unit refreshed so
// far back to the old revision by itself; a machine that cannot be reached stops
// the refresh there, changing nothing more. A worker lost in the middle resumes
// from its history: every step is idempotent.
import { ApplicationFailure, condition, proxyActivities, setHandler, sleep, workflowInfo } from '@temporalio/workflow';
import type { RefreshActivities, UnitHealth } from '../activities/refresh-activities.ts';
import type { UnitActivities } from '../activities/unit-activities.ts';
import { BOOKKEEPING_ACTIVITY } from './activity-options.ts';
import {
  type ApplicationOperationInput,
  deliverWhenAgentRuns,
  tagApplication,
  UnitTracker,
} from './application-workflows.ts';
import { refreshAbortSignal, refreshResumeSignal, type UnitEvent } from './messages.ts';
import { type OperationContext, runOperation } from './operation.ts';

const refresh = proxyActivities<RefreshActivities>(BOOKKEEPING_ACTIVITY);
const units = proxyActivities<UnitActivities>(BOOKKEEPING_ACTIVITY);

export interface RefreshInput extends ApplicationOperationInput {
  fromRevision: number;
  toRevision: number;
  /** The units in the order they go, in batches of at most max-unavailable; the leader last. */
  batches: string[][];
  /** How long a batch has to be active (and pass the probe) after its hooks. */
  gateTimeoutSeconds: number;
  pauseAfterFirst: boolean;
  /** An action each refreshed unit must complete for the gate. */
  probe?: string;
  /**
   * Where a rollback puts the units: their own revision, when this refresh brings
   * back units a stopped one left on another (default: the application's).
   */
  rollbackRevision?: number;
}

/** How often the gate and the watch on machines look again. */
const POLL_MS = 2_000;

export async function refreshWorkflow(input: RefreshInput): Promise<void> {
  tagApplication(input);
  await runOperation(input, async (ctx) => {
    const self = workflowInfo().workflowId;
    let aborted = false;
    let resumed = false;
    setHandler(refreshAbortSignal, () => {
      aborted = true;
    });
    setHandler(refreshResumeSignal, () => {
      resumed = true;
    });
    const refreshed: string[] = [];
    const total = input.batches.length;
    const plan = { from: input.fromRevision, to: input.toRevision, batches: input.batches };

    for (const [i, batch] of input.batches.entries()) {
      const label = `batch ${i + 1}/${total} (${batch.join(', ')})`;
      if (aborted) await rollBack(ctx, input, refreshed, 'aborted by request', plan);
      await ctx.step(`${label}: upgrade-charm, config-changed on revision ${input.toRevision}`, {
        ...plan,
        refreshed,
        batch: i + 1,
      });
      await refresh.setUnitsRevision(input.modelUuid, batch, input.toRevision);
      refreshed.push(...batch);
      const tracker = new UnitTracker(input, batch, 'config-changed', 'queued upgrade-charm');
      const events: UnitEvent[] = [
        { hook: 'upgrade-charm', ship: true, notify: self, quiet: true },
        { hook: 'config-changed', notify: self },
      ];
      for (const u of batch) void deliverWhenAgentRuns(input, tracker, u, events);

      // the hooks; a machine that goes away meanwhile stops the refresh where it is
      const hooks = await watchMachines(input, batch, () =>
        tracker.wait(`${label}: running upgrade-charm, config-changed`, POLL_MS),
      );
      if (hooks.down) {
        throw ApplicationFailure.nonRetryable(
          `refresh stopped at ${label}: ${hooks.down}; units already refreshed: ${refreshed.join(', ')}; nothing else was changed (fix the machine, then run refresh again or roll back with a refresh to revision ${input.fromRevision})`,
          'MachineDown',
        );
      }
      let why = hooks.error ? tracker.errorSummary() : null;
      if (!why) {
        await ctx.step(`${label}: health gate (active within ${input.gateTimeoutSeconds}s)`, {
          ...plan,
          refreshed,
          batch: i + 1,
        });
        why = await healthGate(input, batch);
        if (why?.startsWith('machine')) {
          throw ApplicationFailure.nonRetryable(
            `refresh stopped at ${label}: ${why}; nothing else was changed`,
            'MachineDown',
          );
        }
      }
      if (!why && input.probe) why = await probe(input, batch);
      if (why) await rollBack(ctx, input, refreshed, `health gate failed at ${label}: ${why}`, plan);

      if (i === 0 && input.pauseAfterFirst && total > 1) {
        await ctx.step(
          `paused after the first batch (${batch.join(', ')} on revision ${input.toRevision}): resume-operation or abort-operation`,
          { ...plan, refreshed, batch: i + 1, paused: true },
        );
        await condition(() => resumed || aborted);
        if (aborted) await rollBack(ctx, input, refreshed, 'aborted by request while paused', plan);
      }
    }
    await refresh.finishRefresh(input.modelUuid, input.application, input.toRevision);
    await ctx.step(`every unit is on revision ${input.toRevision}`, { ...plan, refreshed });
  });
}

/** Runs `wait` (which returns after at most POLL_MS) until it is done, watching the units' machines meanwhile. */
async function watchMachines(
  input: RefreshInput,
  batch: string[],
  wait: () => Promise<'done' | 'error' | 'timeout'>,
): Promise<{ error?: boolean; down?: string }> {
  let since = 0;
  while (true) {
    const outcome = await wait();
    if (outcome === 'done') return {};
    if (outcome === 'error') {
      // a unit whose machine went away fails its hook "cannot run": that is a stop, not a gate failure
      const down = await machineDown(input, batch);
      return down ? { down } : { error: true };
    }
    since += POLL_MS;
    if (since >= 5_000) {
      since = 0;
      const down = await machineDown(input, batch);
      if (down) return { down };
    }
  }
}

async function machineDown(input: RefreshInput, batch: string[]): Promise<string | null> {
  const health = await refresh.unitsHealth(input.modelUuid, batch);
  for (const u of batch) {
    const h = health[u];
    if (h?.machineDown) return `machine ${h.machine} of unit ${u} is down: ${h.machineDown}`;
  }
  return null;
}

function describe(u: string, h: UnitHealth | undefined): string {
  return h ? `${u} is ${h.status}${h.message ? ` (${h.message})` : ''}` : `${u} is gone`;
}

/** null when every unit is active within the timeout; else why not (a machine down says so first). */
async function healthGate(input: RefreshInput, batch: string[]): Promise<string | null> {
  const deadline = Date.now() + input.gateTimeoutSeconds * 1000;
  while (true) {
    const health = await refresh.unitsHealth(input.modelUuid, batch);
    for (const u of batch) {
      const h = health[u];
      if (h?.machineDown) return `machine ${h.machine} of unit ${u} is down: ${h.machineDown}`;
      if (h?.status === 'error') return describe(u, h);
    }
    const waiting = batch.filter((u) => health[u]?.status !== 'active');
    if (waiting.length === 0) return null;
    if (Date.now() >= deadline) {
      return `not active within ${input.gateTimeoutSeconds}s: ${waiting.map((u) => describe(u, health[u])).join('; ')}`;
    }
    await sleep(POLL_MS);
  }
}

/** Runs the probe action on each unit in turn (its outcome goes to this operation's row); null when all completed. */
async function probe(input: RefreshInput, batch: string[]): Promise<string | null> {
  const self = workflowInfo().workflowId;
  const probeName = input.probe as string;
  for (const u of batch) {
    await refresh.startProbe(input.operationId);
    const tracker = new UnitTracker(input, [u], () => true, `queued probe ${probeName}`);
    void deliverWhenAgentRuns(input, tracker, u, [
      { hook: probeName, notify: self, action: { operationId: input.operationId } },
    ]);
    const outcome = await tracker.wait(`probe ${probeName} on ${u}`, input.gateTimeoutSeconds * 1000);
    if (outcome === 'timeout') return `probe ${probeName} on ${u} did not finish within ${input.gateTimeoutSeconds}s`;
    const result = await units.actionOutcome(input.operationId);
    if (result?.status !== 'completed') return `probe ${probeName} on ${u} failed: ${result?.message ?? 'no outcome'}`;
  }
  return null;
}

/**
 * Every unit refreshed so far goes back to the old revision: what the refresh
 * still had queued on it is dropped and a hook of it the unit failed on skipped,
 * then the old charm is shipped and upgrade-charm, config-changed run. The
 * operation fails with why, and how the rollback went.
 */
async function rollBack(
  ctx: OperationContext,
  input: RefreshInput,
  refreshed: string[],
  why: string,
  plan: Record<string, unknown>,
): Promise<never> {
  const self = workflowInfo().workflowId;
  const since = new Date(Date.now()).toISOString();
  await ctx.step(`rolling back ${refreshed.join(', ')} to revision ${input.fromRevision}: ${why}`, {
    ...plan,
    refreshed,
    rollingBack: true,
  });
  await refresh.setUnitsRevision(input.modelUuid, refreshed, input.rollbackRevision ?? null);
  const events: UnitEvent[] = [
    { hook: 'upgrade-charm', ship: true, notify: self, quiet: true, supersedes: self },
    { hook: 'config-changed', notify: self, quiet: true },
  ];
  const tracker = new UnitTracker(input, refreshed, () => false, 'queued rollback');
  for (const u of refreshed) void deliverWhenAgentRuns(input, tracker, u, events);
  // done when each unit committed a config-changed after the rollback began and is active
  const deadline = Date.now() + Math.max(input.gateTimeoutSeconds, 60) * 1000;
  let outcome = 'timed out';
  while (Date.now() < deadline) {
    const configured = await refresh.unitsConfiguredSince(input.modelUuid, refreshed, since);
    const health = await refresh.unitsHealth(input.modelUuid, refreshed);
    const down = refreshed.find((u) => health[u]?.machineDown);
    if (down) {
      outcome = `stopped: machine of ${down} is down (${health[down]?.machineDown})`;
      break;
    }
    if (refreshed.every((u) => configured.includes(u) && health[u]?.status === 'active')) {
      outcome = `every unit is back on revision ${input.fromRevision} and active`;
      break;
    }
    await sleep(POLL_MS);
  }
  throw ApplicationFailure.nonRetryable(`${why}; rolled back ${refreshed.join(', ')}: ${outcome}`, 'RolledBack');
}
