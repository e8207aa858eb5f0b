// The unit agent: one long-lived workflow per unit, the durable equivalent of
// Juju's uniter. It owns the unit's event queue and runs hooks strictly one at a
// time; a failed hook puts the unit in error and is retried with backoff (5 s
// doubling to 5 min) until it succeeds or is resolved.
import {
  ActivityFailure,
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setCurrentDetails,
  setHandler,
  upsertSearchAttributes,
  uuid4,
  workflowInfo,
} from '@temporalio/workflow';
import type { HookActivities, HookOutcome, HookRun } from '../activities/hook-activities.ts';
import type { RelationActivities } from '../activities/relation-activities.ts';
import { BOOKKEEPING_ACTIVITY, BOOKKEEPING_RETRY } from './activity-options.ts';
import {
  agentSettingsSignal,
  cancelActionUpdate,
  enqueueSignal,
  type HoldRequest,
  holdUpdate,
  type RelationsWake,
  type ResolveRequest,
  type ResolveResult,
  relationsChangedSignal,
  resolveSignal,
  resolveUpdate,
  type UnitAgentView,
  type UnitEvent,
  type UnitProgress,
  type UnitRef,
  unitAgentQuery,
  unitProgressSignal,
} from './messages.ts';
import { type RelationsSeen, relationDelta, teardown } from './relations.ts';
import { ApplicationKey, ModelKey } from './search-attributes.ts';

/** A queued event; once handed to the machine it keeps its context id until it ends. */
export type QueuedEvent = UnitEvent & { contextId?: string };

export interface UnitAgentState {
  ref: UnitRef;
  queue: QueuedEvent[];
  /** Count of hook executions, for context ids that stay stable across retries of one execution. */
  seq: number;
  /**
   * Names this agent among every agent the unit's name ever had (a redeployed
   * application numbers its units from 0 again, and seq restarts): drawn once,
   * kept across continue-as-new, part of every context id.
   */
  incarnation?: string;
  prepared: boolean;
  failure?: { event: UnitEvent; attempts: number; message: string };
  /** What the unit was told of each relation, by id (workflows/relations.ts). */
  relations?: RelationsSeen;
  /** The charm has endpoints: its relations are looked up once it has started. */
  relatable?: boolean;
  /** The start hook ran: relation-joined and the rest may run. */
  started?: boolean;
  /** A wake came: look at the unit's relations before the next hook. */
  syncWanted?: boolean;
  /** Between update-status hooks (model-config update-status-hook-interval); default 5 minutes. */
  updateStatusMs?: number;
  /** Wakes that asked to be told when the hooks they brought have run. */
  waiters?: { notify: string; relationId?: number }[];
}

const RETRY_BASE_MS = 5_000;
const RETRY_MAX_MS = 5 * 60_000;
const UPDATE_STATUS_MS = 5 * 60_000;

const HOOK_ACTIVITY = {
  // the hook has its own timeout on the machine; this bounds a lost exec
  startToCloseTimeout: '65 minutes',
  // a dead worker is noticed this fast; the retry re-attaches to the running hook
  heartbeatTimeout: '15 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds', maximumAttempts: 12 },
} as const;

const hooks = proxyActivities<HookActivities>(HOOK_ACTIVITY);

// markHookFailed, markHookSkipped, finishUnitRemoval: never given up on
const quick = proxyActivities<HookActivities>({ ...BOOKKEEPING_ACTIVITY, startToCloseTimeout: '5 minutes' });

// one read of the model store, run by the worker inside the workflow task
const relationStore = proxyLocalActivities<RelationActivities>({
  startToCloseTimeout: '30 seconds',
  retry: BOOKKEEPING_RETRY,
});

/**
 * Patch ids (`patched()`), one per change to code running agents execute; each is
 * retired as the README's "Versioning workflows" says.
 */
export const PATCH_RETRY_AFTER_RUNNING_RETRY = 'resolve-retry-while-retrying';
/** 2026-12: agents look up and run relation hooks (workflows/relations.ts). */
export const PATCH_RELATIONS = 'relation-hooks';
/** 2026-12: deploy reads the model's settings (update-status interval) for its agents. */
export const PATCH_AGENT_SETTINGS = 'agent-settings';

/** Hooks handed to the machine in one go, at most. */
export const MAX_BATCH = 8;

/**
 * Juju coalesces: one pending config-changed, one relation-changed per remote
 * unit, etc. An event already handed to the machine (it has a context id) may
 * have begun with the state of its time, so nothing coalesces into it.
 */
export function enqueueCoalescing(queue: QueuedEvent[], ev: UnitEvent): void {
  // every action asked for runs; a hook that ships a charm (refresh, rollback) is never merged into another
  if (ev.action || ev.ship) {
    queue.push(ev);
    return;
  }
  // (events of histories from before secrets carry no secret: unchanged for them)
  const same = (q: QueuedEvent) =>
    q.hook === ev.hook &&
    q.relationId === ev.relationId &&
    q.remoteUnit === ev.remoteUnit &&
    q.secret?.id === ev.secret?.id &&
    q.contextId === undefined;
  const coalescible =
    ['config-changed', 'update-status', 'leader-settings-changed', 'upgrade-charm', 'secret-changed'].includes(
      ev.hook,
    ) || ev.hook.endsWith('-relation-changed');
  if (coalescible) {
    let at = -1;
    for (let i = queue.length - 1; i >= 0 && at < 0; i--) if (same(queue[i])) at = i;
    const existing = at >= 0 ? queue[at] : undefined;
    // a remote unit that departed (or joined again) since: its changed comes after that
    const crossed =
      existing !== undefined &&
      ev.remoteUnit !== undefined &&
      queue
        .slice(at + 1)
        .some(
          (q) =>
            q.relationId === ev.relationId &&
            q.remoteUnit === ev.remoteUnit &&
            (q.hook.endsWith('-relation-joined') || q.hook.endsWith('-relation-departed')),
        );
    if (existing && !crossed) {
      // keep the earlier slot, but make sure the new requester is told too
      if (ev.notify && existing.notify !== ev.notify) queue.push(ev);
      return;
    }
  }
  if (ev.hook === 'update-status' && queue.length > 0) return;
  queue.push(ev);
}

export function retryDelayMs(attempts: number): number {
  return Math.min(RETRY_BASE_MS * 2 ** Math.max(0, attempts - 1), RETRY_MAX_MS);
}

/**
 * The events to hand to the machine now: the head of the queue, up to and
 * including a `remove` (the unit's files go after it), at most MAX_BATCH. Each
 * gets a context id the first time it is handed over, and keeps it until it ends,
 * so a retry attaches to the run that already began instead of starting another.
 */
export function nextBatch(state: UnitAgentState): HookRun[] {
  const [app, n] = state.ref.unit.split('/');
  const runs: HookRun[] = [];
  for (const ev of state.queue.slice(0, MAX_BATCH)) {
    // a hook that needs the charm shipped first starts a batch of its own
    if (ev.ship && runs.length > 0) break;
    const agent = state.incarnation ? `${state.incarnation}-` : '';
    ev.contextId ??= `${state.ref.modelUuid.slice(0, 8)}-${app}-${n}-${agent}${state.seq++}`;
    const { contextId, ...event } = ev;
    runs.push({ event, contextId });
    if (ev.hook === 'remove') break;
  }
  return runs;
}

// Progress signals in flight. The agent goes on to its next hook without waiting
// for the server to confirm each one, and waits for them all before it ends or
// continues as new.
const inFlight = new Set<Promise<void>>();

function notify(ev: UnitEvent, progress: UnitProgress): void {
  if (!ev.notify) return;
  const sent: Promise<void> = getExternalWorkflowHandle(ev.notify)
    .signal(unitProgressSignal, progress)
    .catch(() => {
      // the operation already ended; nobody is waiting
    })
    .finally(() => inFlight.delete(sent));
  inFlight.add(sent);
}

async function notified(): Promise<void> {
  await Promise.all([...inFlight]);
}

export async function unitAgentWorkflow(state: UnitAgentState): Promise<void> {
  const { ref } = state;
  const app = ref.unit.split('/')[0];
  // deterministic: the same on every replay of this run, then carried in the state
  state.incarnation ??= uuid4().slice(0, 8);
  // deploy starts agents with their search attributes; an agent started otherwise sets them
  if (workflowInfo().typedSearchAttributes.get(ModelKey) === undefined) {
    upsertSearchAttributes([
      { key: ModelKey, value: ref.model },
      { key: ApplicationKey, value: app },
    ]);
  }
  let busy = false;
  // A resolve waiting for the agent to act on it: taken when the failed hook's
  // backoff wait begins (at once if it came during an automatic retry that failed).
  let pending: { retry: boolean; result?: ResolveResult } | null = null;
  const answer = (result: ResolveResult) => {
    if (pending) pending.result = result;
    pending = null;
  };
  // a resolve (retry) that came while an automatic retry ran: a failure of that attempt is retried at once
  let retryAtOnce = false;
  const ask = (r: ResolveRequest) => {
    const p = pending ?? { retry: r.retry };
    p.retry = r.retry; // the latest request wins; earlier askers get its answer
    pending = p;
    return p;
  };

  setHandler(enqueueSignal, (events) => {
    const superseded = events.find((e) => e.supersedes)?.supersedes;
    if (superseded) {
      // a rollback: what the operation queued and is not on the machine yet goes;
      // a hook of it the unit failed on is skipped (the skip path takes it off the head)
      const stuck = state.failure?.event.notify === superseded ? state.queue[0] : undefined;
      state.queue = state.queue.filter((q) => q === stuck || q.notify !== superseded || q.contextId !== undefined);
      if (stuck) ask({ retry: false });
    }
    for (const { contextId: _ignored, ...ev } of events as QueuedEvent[]) enqueueCoalescing(state.queue, ev);
  });
  // a new update-status interval starts the idle wait afresh
  let settingsChanged = false;
  setHandler(agentSettingsSignal, (settings) => {
    if (settings.updateStatusMs > 0 && settings.updateStatusMs !== state.updateStatusMs) {
      state.updateStatusMs = settings.updateStatusMs;
      settingsChanged = true;
    }
  });
  setHandler(relationsChangedSignal, (wake: RelationsWake) => {
    state.syncWanted = true;
    if (wake.notify) state.waiters = [...(state.waiters ?? []), { notify: wake.notify, relationId: wake.relationId }];
  });
  setHandler(resolveSignal, (r) => {
    if (state.failure) ask(r);
  });
  setHandler(
    resolveUpdate,
    async (r): Promise<ResolveResult> => {
      const hook = state.failure?.event.hook ?? 'failed';
      if (busy && r.retry) {
        // patch 2026-12 (README: Versioning workflows): the retry asked for is kept,
        // so if the running attempt fails the hook runs again at once, not after backoff
        if (patched(PATCH_RETRY_AFTER_RUNNING_RETRY)) {
          retryAtOnce = true;
          return {
            outcome: 'retrying',
            message: `the ${hook} hook of ${ref.unit} is being retried now (and again at once if this attempt fails)`,
          };
        }
        return { outcome: 'retrying', message: `the ${hook} hook of ${ref.unit} is being retried now` };
      }
      const p = ask(r);
      await condition(() => p.result !== undefined);
      return p.result as ResolveResult;
    },
    {
      validator: (_request: ResolveRequest) => {
        if (!state.failure) throw new Error(`unit ${ref.unit} is not in error: there is no failed hook to resolve`);
      },
    },
  );
  // migrate-model's hand-over: held, the agent starts no hook until it is let go
  const hand: { held: HoldRequest | null; parked: boolean } = { held: null, parked: false };
  setHandler(holdUpdate, async (r: HoldRequest): Promise<unknown> => {
    if (!r.hold) {
      hand.held = null;
      return null;
    }
    hand.held = r;
    await condition(() => hand.parked);
    // a copy: what the agent was told and still has to do, as it stands while parked
    return JSON.parse(JSON.stringify(state));
  });
  setHandler(cancelActionUpdate, (operationId: number): 'cancelled' | 'running' | 'absent' => {
    const at = state.queue.findIndex((e) => e.action?.operationId === operationId);
    if (at < 0) return 'absent';
    if (state.queue[at].contextId !== undefined) return 'running';
    state.queue.splice(at, 1);
    return 'cancelled';
  });
  setHandler(
    unitAgentQuery,
    (): UnitAgentView => ({
      unit: ref.unit,
      current: busy ? state.queue[0].hook : null,
      queue: state.queue.map((e) => e.hook),
      failure: state.failure
        ? { hook: state.failure.event.hook, attempts: state.failure.attempts, message: state.failure.message }
        : null,
      dying: state.queue.some((e) => e.hook === 'remove'),
      relationsPending: state.syncWanted === true,
    }),
  );

  while (true) {
    if (hand.held) {
      setCurrentDetails(`${ref.unit}: held (${hand.held.reason ?? 'hand-over'}); runs no hook until let go`);
      hand.parked = true;
      await condition(() => hand.held === null);
      hand.parked = false;
    }
    if (state.queue.length === 0) {
      setCurrentDetails(`${ref.unit}: idle`);
      const woke = await condition(
        () => state.queue.length > 0 || state.syncWanted === true || settingsChanged || hand.held !== null,
        state.updateStatusMs ?? UPDATE_STATUS_MS,
      );
      if (hand.held) continue;
      if (settingsChanged) {
        settingsChanged = false;
        if (state.queue.length === 0 && !state.syncWanted) continue;
      }
      if (!woke) {
        state.queue.push({ hook: 'update-status' });
        // and a look at the relations, in case a wake was lost (a worker died after a commit)
        if (state.relations && Object.keys(state.relations).length > 0) state.syncWanted = true;
      }
    }
    const info = workflowInfo();
    if (info.continueAsNewSuggested || info.historyLength > 5_000) {
      await notified();
      await condition(allHandlersFinished);
      await continueAsNew<typeof unitAgentWorkflow>(state);
    }
    if ((state.syncWanted || state.relations) && patched(PATCH_RELATIONS)) {
      await relationHooks(state);
      if (state.queue.length === 0) continue;
    }

    const batch = nextBatch(state);
    busy = true;
    const names = batch.map((r) => r.event.hook).join(', ');
    setCurrentDetails(
      `${ref.unit}: running ${names}` + (state.failure ? ` (attempt ${state.failure.attempts + 1})` : ''),
    );
    let outcomes: HookOutcome[];
    try {
      // the charm goes to the machine before the first hook; a failure there is
      // handled like a failed hook (error, backoff, resolve)
      const prepare = !state.prepared || batch[0].event.ship === true;
      if (prepare) setCurrentDetails(`${ref.unit}: deploying the charm to its machine, then ${names}`);
      outcomes = await hooks.runHooks.executeWithOptions(
        {
          ...HOOK_ACTIVITY,
          // each hook has its own timeout on the machine; the charm's unpacking 2 minutes
          startToCloseTimeout: `${65 * batch.length + (prepare ? 2 : 0)} minutes`,
          summary: `${prepare ? 'deploy charm, ' : ''}${names} on ${ref.unit}`,
        },
        [ref, batch, { prepare }],
      );
      if (outcomes.length > 0) state.prepared = true;
    } catch (err) {
      // the machine could not run the hook at all (unreachable, host key changed):
      // the unit goes into error like a failed hook, and is retried the same way
      const hook = batch[0].event.hook;
      const message = err instanceof ActivityFailure && err.cause ? err.cause.message : String(err);
      const action = batch[0].event.action;
      if (action) {
        // an action that cannot run fails; the unit is not put in error for it
        outcomes = [{ ok: true, skipped: false, gone: false, message: `cannot run action ${hook}: ${message}` }];
        await quick.failAction(action.operationId, outcomes[0].message);
      } else {
        outcomes = [{ ok: false, skipped: false, gone: false, message: `cannot run ${hook} hook: ${message}` }];
        await quick.markHookFailed(ref, hook, outcomes[0].message);
      }
    }
    busy = false;

    // the hooks that ran, in order; the rest stay queued with their context ids
    let failed: { ev: QueuedEvent; outcome: HookOutcome } | undefined;
    for (const outcome of outcomes) {
      const ev = state.queue[0];
      if (outcome.gone) {
        // the unit was removed by force underneath us
        answer({ outcome: 'gone', message: `unit ${ref.unit} was removed` });
        notify(ev, { unit: ref.unit, hook: ev.hook, outcome: 'removed' });
        await notified();
        return;
      }
      if (!outcome.ok) {
        failed = { ev, outcome };
        break;
      }
      state.queue.shift();
      state.failure = undefined;
      if (outcome.read) heard(state, ev, outcome.read);
      if (ev.hook === 'start' && !state.started && state.relatable) {
        state.started = true;
        state.syncWanted = true; // relation-joined for the units already there
      }
      // the unit's files and records go before anyone is told the remove hook is done
      if (ev.hook === 'remove') await quick.finishUnitRemoval(ref);
      if (!ev.quiet) notify(ev, { unit: ref.unit, hook: ev.hook, outcome: outcome.skipped ? 'skipped' : 'ok' });
      if (ev.hook === 'remove') {
        // tell every other waiter (queued after remove) that the unit is gone
        for (const rest of state.queue) notify(rest, { unit: ref.unit, hook: rest.hook, outcome: 'removed' });
        answer({ outcome: 'succeeded', message: `the remove hook of ${ref.unit} succeeded; the unit is gone` });
        await notified();
        return;
      }
    }
    if (!failed) {
      retryAtOnce = false;
      // a skip asked for while the automatic retry ran: the retry succeeded
      answer({ outcome: 'succeeded', message: `the failed hook of ${ref.unit} succeeded on its automatic retry` });
      continue;
    }

    const { ev, outcome } = failed;
    // a retry is a new execution of the hook
    ev.contextId = undefined;
    const attempts = (state.failure?.attempts ?? 0) + 1;
    state.failure = { event: ev, attempts, message: outcome.message };
    if (attempts === 1) notify(ev, { unit: ref.unit, hook: ev.hook, outcome: 'error', message: outcome.message });
    const delay = retryDelayMs(attempts);
    setCurrentDetails(`${ref.unit}: ${ev.hook} hook failed; retrying in ${Math.round(delay / 1000)}s or on resolve`);
    // a resolve that came while the hook ran is still pending: acted on at once
    await condition(() => pending !== null || retryAtOnce || hand.held !== null, delay);
    retryAtOnce = false;
    const request = pending as { retry: boolean } | null;
    if (request?.retry) answer({ outcome: 'retried', message: `retrying the ${ev.hook} hook of ${ref.unit} now` });
    if (request !== null && !request.retry) {
      state.queue.shift();
      state.failure = undefined;
      await quick.markHookSkipped(ref, ev.hook);
      if (ev.hook === 'remove') await quick.finishUnitRemoval(ref);
      answer({ outcome: 'skipped', message: `the ${ev.hook} hook of ${ref.unit} was skipped` });
      notify(ev, { unit: ref.unit, hook: ev.hook, outcome: 'skipped' });
      if (ev.hook === 'remove') {
        await notified();
        return;
      }
    }
  }
}

/**
 * Before the next hook: a leaving unit (its remove hook queued) departs from and
 * breaks each relation it is in, between its stop and remove hooks; otherwise, if
 * a wake came, the unit's relations are read from the model store and the hooks
 * that bring the unit up to date are queued (relation-created first of all).
 */
async function relationHooks(state: UnitAgentState): Promise<void> {
  state.relations ??= {};
  const seen = state.relations;
  // agents from before relations existed had run their start hook if they shipped their charm
  state.started ??= state.prepared && state.relatable !== false;
  const removing = state.queue.findIndex((e) => e.hook === 'remove');
  if (removing >= 0) {
    const events = teardown(seen, state.ref.unit);
    state.queue.splice(removing, 0, ...events.map((e) => ({ ...e, quiet: true })));
    state.syncWanted = false;
    tellWaiters(state, []);
    return;
  }
  if (!state.syncWanted) return;
  state.syncWanted = false;
  const views = await relationStore.relationViews(state.ref);
  const events = relationDelta(seen, views, state.started === true);
  // relation-created goes before everything not yet handed to the machine but install
  const created = events.filter((e) => e.hook.endsWith('-relation-created'));
  const rest = events.filter((e) => !e.hook.endsWith('-relation-created'));
  if (created.length > 0) {
    let at = state.queue.findIndex((e) => e.contextId === undefined && e.hook !== 'install');
    if (at < 0) at = state.queue.length;
    state.queue.splice(at, 0, ...created);
  }
  for (const e of rest) enqueueCoalescing(state.queue, e);
  tellWaiters(state, events);
}

/** Each waiting wake is told with the last hook it brought, or at once if it brought none. */
function tellWaiters(state: UnitAgentState, events: UnitEvent[]): void {
  for (const w of state.waiters ?? []) {
    const mine = events.filter((e) => w.relationId === undefined || e.relationId === w.relationId);
    const last = mine.at(-1);
    const queued =
      last &&
      state.queue.find(
        (q) =>
          q.hook === last.hook &&
          q.relationId === last.relationId &&
          q.remoteUnit === last.remoteUnit &&
          q.contextId === undefined,
      );
    if (queued && !queued.notify) {
      queued.notify = w.notify;
      queued.quiet = false;
    } else {
      notify({ hook: 'relations', notify: w.notify }, { unit: state.ref.unit, hook: 'relations', outcome: 'ok' });
    }
  }
  state.waiters = [];
}

/**
 * A relation hook for one remote unit (or, with none, for the remote application)
 * read this version of that unit's (the application's) data bag: the unit has been
 * told of it, so a commit the hook already saw brings no further relation-changed
 * (a hook reads the bags as they are when it runs, which may be newer than what
 * woke it). Only the bag the hook is about: another unit's change still needs its
 * own relation-changed.
 */
export function heard(state: UnitAgentState, ev: UnitEvent, read: Record<string, number>): void {
  const s = ev.relationId === undefined ? undefined : state.relations?.[ev.relationId];
  if (!s || ev.hook.endsWith('-relation-departed') || ev.hook.endsWith('-relation-broken')) return;
  if (ev.remoteUnit !== undefined) {
    const version = read[ev.remoteUnit];
    if (ev.remoteUnit in s.units && version !== undefined && version > s.units[ev.remoteUnit]) {
      s.units[ev.remoteUnit] = version;
    }
  } else if (ev.hook.endsWith('-relation-changed')) {
    const version = read[s.remoteApp];
    if (version !== undefined && version > s.appVersion) s.appVersion = version;
  }
}
