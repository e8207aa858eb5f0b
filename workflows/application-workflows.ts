// Operations on applications and units: deploy, config, remove, resolve. They
// provision, enqueue events on the unit agents, and wait for the outcomes,
// reporting per-unit progress as they go.
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  getExternalWorkflowHandle,
  ParentClosePolicy,
  patched,
  proxyActivities,
  setHandler,
  sleep,
  startChild,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { DeployActivities } from '../activities/deploy-activities.ts';
import type { MachineActivities } from '../activities/machine-activities.ts';
import type { RelationActivities } from '../activities/relation-activities.ts';
import type { UnitActivities } from '../activities/unit-activities.ts';
import { BOOKKEEPING_ACTIVITY, BOOKKEEPING_RETRY } from './activity-options.ts';
import {
  enqueueSignal,
  legacyUnitAgentWorkflowId,
  type UnitEvent,
  type UnitProgress,
  type UnitRef,
  unitAgentWorkflowId,
  unitProgressSignal,
} from './messages.ts';
import { newUnitAgentState, type UnitsLaunch } from './new-unit-agent.ts';
import { type OperationContext, type OperationInput, operationRecords as ops, runOperation } from './operation.ts';
import type { RelationIntro } from './relations.ts';
import { ApplicationKey, ModelKey } from './search-attributes.ts';
import { PATCH_AGENT_SETTINGS, PATCH_RELATIONS, unitAgentWorkflow } from './unit-agent.ts';

/** 2026-12: deploy starts its agents from activities and follows its units in the store. */
export const PATCH_DEPLOY_FOLLOWS_STORE = 'deploy-follows-store';

// forced removal and record clean-up: an operation never stops half way through them
const units = proxyActivities<UnitActivities>(BOOKKEEPING_ACTIVITY);
const relations = proxyActivities<RelationActivities>(BOOKKEEPING_ACTIVITY);
// starting agents: one call to the server per unit, retried until the batch is done
const launcher = proxyActivities<DeployActivities>({
  startToCloseTimeout: '10 minutes',
  heartbeatTimeout: '1 minute',
  retry: BOOKKEEPING_RETRY,
});
// one look at a deploy's units lasts up to FOLLOW_FOR_MS; a lost worker is noticed by the heartbeat
const following = proxyActivities<DeployActivities>({
  startToCloseTimeout: '15 minutes',
  heartbeatTimeout: '30 seconds',
  retry: BOOKKEEPING_RETRY,
});
const placement = proxyActivities<MachineActivities>({
  // a batch of machines; the heartbeat notices a lost worker at once
  startToCloseTimeout: '15 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 5 },
});

export interface ApplicationOperationInput extends OperationInput {
  modelUuid: string;
  application: string;
}

/**
 * Collects unit agents' progress signals and mirrors them into the operation's
 * progress, so `charmflow` and the API show live per-unit state.
 */
export class UnitTracker {
  readonly state: Record<string, string> = {};
  readonly errors: Record<string, string> = {};
  readonly finished = new Set<string>();
  private dirty = false;

  constructor(
    private readonly input: { operationId: number },
    unitNames: string[],
    /** The hook whose success finishes a unit (or a test of the hook's name). */
    private readonly finalHook: string | ((hook: string) => boolean),
    initial: string,
  ) {
    for (const u of unitNames) this.state[u] = initial;
    setHandler(unitProgressSignal, (p: UnitProgress) => this.record(p));
  }

  private record(p: UnitProgress): void {
    if (!(p.unit in this.state)) return;
    if (p.outcome === 'error') {
      this.state[p.unit] = `error: ${p.message ?? `${p.hook} hook failed`}`;
      this.errors[p.unit] = p.message ?? `${p.hook} hook failed`;
    } else if (p.outcome === 'removed') {
      this.state[p.unit] = 'removed';
      this.finished.add(p.unit);
    } else {
      const final = typeof this.finalHook === 'string' ? p.hook === this.finalHook : this.finalHook(p.hook);
      this.state[p.unit] = final ? 'done' : `${p.hook} ${p.outcome === 'skipped' ? 'skipped' : 'done'}`;
      if (final) this.finished.add(p.unit);
    }
    this.dirty = true;
  }

  set(unit: string, state: string): void {
    if (this.state[unit] === state) return;
    this.state[unit] = state;
    this.dirty = true;
  }

  /** Units neither finished nor failed. */
  open(): string[] {
    return Object.keys(this.state).filter((u) => !this.finished.has(u) && !(u in this.errors));
  }

  /** Waits until every unit finished or one failed, publishing progress meanwhile. */
  async wait(step: string, timeoutMs?: number): Promise<'done' | 'error' | 'timeout'> {
    const started = Date.now();
    const total = Object.keys(this.state).length;
    while (true) {
      if (this.dirty) {
        this.dirty = false;
        await ops.updateOperation(this.input.operationId, {
          state: 'running',
          progress: { step: `${step} (${this.finished.size}/${total} units)`, units: { ...this.state } },
        });
      }
      if (Object.keys(this.errors).length > 0) return 'error';
      if (this.finished.size >= total) return 'done';
      const left = timeoutMs === undefined ? undefined : timeoutMs - (Date.now() - started);
      if (left !== undefined && left <= 0) return 'timeout';
      if (left === undefined) await condition(() => this.dirty);
      else await condition(() => this.dirty, left);
    }
  }

  errorSummary(): string {
    return Object.entries(this.errors)
      .map(([u, m]) => `unit ${u}: ${m}`)
      .join('; ');
  }
}

function refOf(input: ApplicationOperationInput, unit: string): UnitRef {
  return { model: input.model, modelUuid: input.modelUuid, unit };
}

/** The unit's agent ids: today's, then the one agents started before it had. */
export function agentIds(where: { model: string; modelUuid: string }, unit: string): string[] {
  return [unitAgentWorkflowId(where.model, where.modelUuid, unit), legacyUnitAgentWorkflowId(where.model, unit)];
}

/** Runs `act` on the unit's agent under each id it may have; fails when there is none. */
async function onAgent(
  where: { model: string; modelUuid: string },
  unit: string,
  act: (id: string) => Promise<void>,
): Promise<void> {
  const [current, legacy] = agentIds(where, unit);
  try {
    await act(current);
  } catch (err) {
    try {
      await act(legacy);
    } catch {
      throw err;
    }
  }
}

export async function signalAgent(
  where: { model: string; modelUuid: string },
  unit: string,
  events: UnitEvent[],
): Promise<void> {
  await onAgent(where, unit, (id) => getExternalWorkflowHandle(id).signal(enqueueSignal, events));
}

export async function cancelAgent(where: { model: string; modelUuid: string }, unit: string): Promise<void> {
  await onAgent(where, unit, (id) => getExternalWorkflowHandle(id).cancel());
}

export function tagApplication(input: ApplicationOperationInput): void {
  upsertSearchAttributes([{ key: ApplicationKey, value: input.application }]);
}

export interface DeployInput extends ApplicationOperationInput {
  /** New units, with the machine each goes to (null: a new machine on the model's cloud). */
  units: { unit: string; machine: string | null; leader: boolean }[];
  /** The charm has endpoints: its units take part in relations. */
  relatable?: boolean;
  /** The application's relations when the units were added (peers, integrations): relation-created after install. */
  relations?: RelationIntro[];
}

/** Machines one provisionMachines activity prepares (it heartbeats as each is ready). */
const PROVISION_BATCH = 50;

async function placeUnits(ctx: OperationContext, input: DeployInput, tracker: UnitTracker): Promise<void> {
  await ctx.step('allocating machines');
  // one activity for all the new local machines, however many units
  const fresh = input.units.filter((u) => u.machine === null).map((u) => u.unit);
  const allocated = fresh.length > 0 ? await placement.allocateLocalMachines(input.model, fresh) : {};
  const placed: string[] = [];
  for (const u of input.units) {
    const machine = u.machine ?? allocated[u.unit];
    tracker.set(u.unit, `machine ${machine}`);
    placed.push(machine);
  }
  const distinct = [...new Set(placed)];
  await ctx.step(`provisioning ${distinct.length} machine(s)`);
  const batches: string[][] = [];
  for (let i = 0; i < distinct.length; i += PROVISION_BATCH) batches.push(distinct.slice(i, i + PROVISION_BATCH));
  await Promise.all(batches.map((ids) => placement.provisionMachines(input.model, ids)));
}

export async function deployWorkflow(input: DeployInput): Promise<void> {
  tagApplication(input);
  await runOperation(input, (ctx) => deployUnits(ctx, input));
}

/** Places the new units, starts their agents and waits for their start hooks (throws when one fails). */
export async function deployUnits(ctx: OperationContext, input: DeployInput): Promise<void> {
  // 2026-12: the deploy's history no longer grows with its units (README: Versioning workflows)
  if (patched(PATCH_DEPLOY_FOLLOWS_STORE)) {
    await deployFollowingStore(ctx, input);
    return;
  }
  {
    const tracker = new UnitTracker(
      input,
      input.units.map((u) => u.unit),
      'start',
      'waiting for machine',
    );
    await placeUnits(ctx, input, tracker);
    await ctx.step('starting unit agents');
    const self = workflowInfo().workflowId;
    // the model's settings the agents follow (model-config), read once for all of them
    const settings = patched(PATCH_AGENT_SETTINGS) ? await relations.agentSettings(input.modelUuid) : undefined;
    // every agent starts in the same workflow task: units do not queue behind each other
    await Promise.all(
      input.units.map(async (u) => {
        // told of every failure, and of success only at the end (start)
        await startChild(unitAgentWorkflow, {
          workflowId: unitAgentWorkflowId(input.model, input.modelUuid, u.unit),
          args: [newUnitAgentState(input, u, settings, self)],
          parentClosePolicy: ParentClosePolicy.ABANDON,
          staticSummary: `unit agent of ${u.unit} in model ${input.model}`,
          typedSearchAttributes: [
            { key: ModelKey, value: input.model },
            { key: ApplicationKey, value: input.application },
          ],
        });
        tracker.set(u.unit, 'queued install');
      }),
    );
    const outcome = await tracker.wait('running install, leader, config-changed and start hooks');
    if (outcome === 'error') throw hookFailed(tracker.errorSummary());
  }
}

function hookFailed(summary: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(
    `${summary}; the unit agent retries with backoff (see \`charmflow status\`, \`charmflow resolve\`)`,
    'HookFailed',
  );
}

/** How long one look at the deploy's units lasts before the workflow asks again. */
const FOLLOW_FOR_MS = 10 * 60_000;

/**
 * The deploy with a history of the same size for 1 unit or 1000: each batch of
 * machines is provisioned and its units' agents started by activities (the first
 * units run their hooks while later machines are still being prepared), and the
 * units are followed in the model store, where their hooks record what they did,
 * by one long activity that also keeps the operation's progress.
 */
async function deployFollowingStore(ctx: OperationContext, input: DeployInput): Promise<void> {
  await ctx.step('allocating machines');
  const fresh = input.units.filter((u) => u.machine === null).map((u) => u.unit);
  const allocated = fresh.length > 0 ? await placement.allocateLocalMachines(input.model, fresh) : {};
  const machineOf = (u: DeployInput['units'][number]) => u.machine ?? allocated[u.unit];
  const distinct = [...new Set(input.units.map(machineOf))];
  await ctx.step(`provisioning ${distinct.length} machine(s) and starting their units' agents`);
  const launch: UnitsLaunch = {
    model: input.model,
    modelUuid: input.modelUuid,
    application: input.application,
    relatable: input.relatable,
    relations: input.relations,
  };
  // the units are followed from now on: the progress shows machines being prepared
  const step = 'running install, leader, config-changed and start hooks';
  const follow = new CancellationScope();
  const followed = follow.run(async () => {
    while (true) {
      const r = await following.followDeployedUnits({
        operationId: input.operationId,
        modelUuid: input.modelUuid,
        units: input.units.map((u) => u.unit),
        step,
        forMs: FOLLOW_FOR_MS,
      });
      if (r.open === 0 || Object.keys(r.errors).length > 0) return r;
    }
  });
  // (a failure to place the units ends the deploy: the follow is cancelled, not awaited)
  followed.catch(() => undefined);
  try {
    const batches: string[][] = [];
    for (let i = 0; i < distinct.length; i += PROVISION_BATCH) batches.push(distinct.slice(i, i + PROVISION_BATCH));
    await Promise.all(
      batches.map(async (ids) => {
        await placement.provisionMachines(input.model, ids);
        const on = new Set(ids);
        const units = input.units.filter((u) => on.has(machineOf(u))).map((u) => ({ unit: u.unit, leader: u.leader }));
        await launcher.launchUnitAgents(launch, units);
      }),
    );
  } catch (err) {
    follow.cancel();
    throw err;
  }
  const result = await followed;
  const errors = Object.entries(result.errors);
  if (errors.length > 0) throw hookFailed(errors.map(([u, m]) => `unit ${u}: ${m}`).join('; '));
}

export interface UnitsInput extends ApplicationOperationInput {
  units: string[];
}

/** How often an operation waiting on a unit looks again for its agent. */
const AGENT_POLL_MS = 2_000;

/**
 * Hands the events to the unit's agent; one not started yet (its deploy is still
 * provisioning) is waited for, with the reason shown, so nothing sent meanwhile is
 * lost. A unit that goes meanwhile is finished.
 */
export async function deliverWhenAgentRuns(
  input: ApplicationOperationInput,
  tracker: UnitTracker,
  unit: string,
  events: UnitEvent[],
): Promise<void> {
  while (true) {
    try {
      await signalAgent(input, unit, events);
      return;
    } catch {
      // no agent under either id (yet)
    }
    const why = (await units.unitWaitReasons(input.modelUuid, [unit]))[unit];
    if (why === 'gone') {
      tracker.set(unit, 'removed');
      tracker.finished.add(unit);
      return;
    }
    tracker.set(unit, `waiting: no unit agent yet (${why ?? 'the deploy is starting it'})`);
    await sleep(AGENT_POLL_MS);
  }
}

/** How often an operation looks for what holds up its units. */
const WAIT_REASON_MS = 5_000;

/**
 * While units are not done, shows in the operation's progress what each waits on
 * (its machine in error or unreachable, the unit in error on an earlier hook), so
 * an operation held up says why instead of just running.
 */
export async function explainWaits(input: ApplicationOperationInput, tracker: UnitTracker, until: () => boolean) {
  while (!until()) {
    await sleep(WAIT_REASON_MS);
    const open = tracker.open().filter((u) => !tracker.state[u].startsWith('waiting: no unit agent'));
    if (until() || open.length === 0) continue;
    const reasons = await units.unitWaitReasons(input.modelUuid, open);
    for (const u of open) {
      if (tracker.finished.has(u) || u in tracker.errors) continue;
      const why = reasons[u];
      if (why && why !== 'gone') tracker.set(u, `waiting: ${why}`);
      else if (tracker.state[u].startsWith('waiting: ')) tracker.set(u, 'queued config-changed');
    }
  }
}

export interface ConfigInput extends UnitsInput {
  /** Fail the operation if the units are not done within this many seconds. */
  timeoutSeconds?: number;
}

export async function configWorkflow(input: ConfigInput): Promise<void> {
  tagApplication(input);
  await runOperation(input, async (ctx) => {
    const tracker = new UnitTracker(input, input.units, 'config-changed', 'queued config-changed');
    await ctx.step('running config-changed on every unit');
    const self = workflowInfo().workflowId;
    const events = [{ hook: 'config-changed', notify: self }];
    // agents not started yet are waited for while the others run the hook
    void Promise.all(input.units.map((u) => deliverWhenAgentRuns(input, tracker, u, events)));
    let settled = false;
    void explainWaits(input, tracker, () => settled);
    const timeoutMs = input.timeoutSeconds === undefined ? undefined : input.timeoutSeconds * 1000;
    const outcome = await tracker.wait('running config-changed', timeoutMs);
    settled = true;
    if (outcome === 'error') throw ApplicationFailure.nonRetryable(tracker.errorSummary(), 'HookFailed');
    if (outcome === 'timeout') {
      const stuck = tracker.open().map((u) => `${u}: ${tracker.state[u]}`);
      throw ApplicationFailure.nonRetryable(
        `config-changed not done within ${input.timeoutSeconds}s on ${stuck.join('; ')}`,
        'Timeout',
      );
    }
  });
}

const FORCE_GRACE_SECONDS = 10;

export interface RemoveInput extends UnitsInput {
  force: boolean;
  timeoutSeconds: number;
  /** Remove the application itself once its units are gone. */
  removeApplication: boolean;
}

export async function removeWorkflow(input: RemoveInput): Promise<void> {
  tagApplication(input);
  await runOperation(input, (ctx) => removeUnits(ctx, input));
}

/** stop and remove on each unit (forced after a grace with `force`), then the application if asked. */
export async function removeUnits(ctx: OperationContext, input: RemoveInput): Promise<void> {
  {
    const tracker = new UnitTracker(input, input.units, 'remove', 'queued stop');
    const self = workflowInfo().workflowId;
    if (input.units.length > 0) {
      // the units leave their relations now: the remote units run relation-departed
      // (and relation-broken, when the application goes), reading the leaving units' data
      if (patched(PATCH_RELATIONS)) await relations.wakeRelatedUnits(input.modelUuid, input.application);
      await ctx.step('running stop and remove hooks');
      await Promise.all(
        input.units.map(async (u) => {
          try {
            await signalAgent(input, u, [
              { hook: 'stop', notify: self, quiet: true },
              { hook: 'remove', notify: self },
            ]);
          } catch {
            // no agent (it never started, or it already ended): nothing to run
            tracker.set(u, 'no agent');
            await units.forceRemoveUnit(refOf(input, u));
            tracker.finished.add(u);
          }
        }),
      );
      // --force gives the hooks a short grace, then removes the units regardless
      const waitSeconds = input.force ? Math.min(input.timeoutSeconds, FORCE_GRACE_SECONDS) : input.timeoutSeconds;
      const outcome = await tracker.wait('removing units', waitSeconds * 1000);
      const stuck = input.units.filter((u) => !tracker.finished.has(u));
      if (stuck.length > 0) {
        if (!input.force) {
          const why = outcome === 'error' ? tracker.errorSummary() : `not removed within ${input.timeoutSeconds}s`;
          throw ApplicationFailure.nonRetryable(
            `${stuck.join(', ')}: ${why}; the units stay dying (run again with --force to remove them anyway)`,
            'RemoveFailed',
          );
        }
        await ctx.step(`forcing removal of ${stuck.join(', ')}`);
        for (const u of stuck) {
          try {
            await cancelAgent(input, u);
          } catch {
            // already ended
          }
          await units.forceRemoveUnit(refOf(input, u));
          tracker.set(u, 'removed (forced)');
        }
      }
    }
    if (input.removeApplication) {
      await ctx.step(`removing application ${input.application}`);
      await units.removeApplicationRecord(input.modelUuid, input.application);
    }
  }
}

export interface ResolveInput extends ApplicationOperationInput {
  unit: string;
  retry: boolean;
}

// a resolve may wait for an automatic retry of a long hook to end
const resolving = proxyActivities<UnitActivities>({
  startToCloseTimeout: '70 minutes',
  heartbeatTimeout: '30 seconds',
  retry: BOOKKEEPING_RETRY,
});

export async function resolveWorkflow(input: ResolveInput): Promise<void> {
  tagApplication(input);
  await runOperation(input, async (ctx) => {
    await ctx.step(`${input.retry ? 'retrying' : 'skipping'} the failed hook of ${input.unit}`);
    const result = await resolving.resolveUnitAgent(
      agentIds(input, input.unit),
      { retry: input.retry },
      workflowInfo().workflowId,
    );
    // the step is what the CLI shows as the answer
    await ctx.step(result.message, { outcome: result.outcome });
  });
}
