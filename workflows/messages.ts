// Signals, queries and shapes shared by the unit agent, the operations that drive
// it, and the clients that watch it.
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';

/** Which unit, in which model. */
export interface UnitRef {
  model: string;
  modelUuid: string;
  unit: string;
}

/** One event for a unit's hook queue. */
export interface UnitEvent {
  hook: string;
  /** Workflow id of the operation to tell when this event is done (or failed). */
  notify?: string;
  /**
   * Tell `notify` only if the hook fails or the unit goes, not when it succeeds:
   * an operation's intermediate hooks cost no signal (the API shows them live from
   * the unit's hook runs), only its last one and failures do.
   */
  quiet?: boolean;
  relationId?: number;
  remoteUnit?: string;
  remoteApp?: string;
  departingUnit?: string;
  /**
   * Relation hooks: the remote units the unit knows in the relation once this hook
   * has run (what relation-list answers): a joining unit is in it, a departing one not.
   */
  members?: string[];
  /**
   * Ship the unit's charm (its current revision in the store) to the machine before
   * this hook: refresh's upgrade-charm. A batch starts at such an event.
   */
  ship?: boolean;
  /**
   * Drop what is still queued for this operation (workflow id) before queuing these,
   * and skip its hook that failed, if that is what the unit is stuck on: a rollback.
   */
  supersedes?: string;
  /** An action run by an operation: its params and outcome live in the operation's row, not here. */
  action?: { operationId: number };
  /**
   * Secret hooks (secret-changed, secret-remove): the secret's bare id and, for
   * secret-remove, the revision concerned. Never its content.
   */
  secret?: { id: string; revision?: number };
}

export interface ResolveRequest {
  /** true: run the failed hook again now; false: skip it. */
  retry: boolean;
}

/** What a resolve did. */
export interface ResolveResult {
  /**
   * retried: the failed hook runs again now; skipped: it was skipped and the unit
   * went on; retrying: an automatic retry of it was running already; succeeded: a
   * skip asked for during an automatic retry found it succeeding; gone: the unit went.
   */
  outcome: 'retried' | 'skipped' | 'retrying' | 'succeeded' | 'gone';
  message: string;
}

export interface UnitProgress {
  unit: string;
  hook: string;
  outcome: 'ok' | 'skipped' | 'error' | 'removed';
  message?: string;
}

export interface UnitAgentView {
  unit: string;
  current: string | null;
  queue: string[];
  failure: { hook: string; attempts: number; message: string } | null;
  dying: boolean;
  /** A relation change came and is still to be looked at (its hooks are not queued yet). */
  relationsPending?: boolean;
}

export const enqueueSignal = defineSignal<[UnitEvent[]]>('enqueue');

/**
 * A relation the unit is in changed in the model store (an integration made or
 * removed, a remote unit came or went, remote data committed): the agent compares
 * the store with what it was told and queues the relation hooks that follow.
 */
export interface RelationsWake {
  /**
   * Workflow id to tell once the hooks this brings for `relationId` (every
   * relation, when absent) have run; told at once when it brings none.
   */
  notify?: string;
  relationId?: number;
}
export const relationsChangedSignal = defineSignal<[RelationsWake]>('relationsChanged');
/** Kept for resolve operations started before resolveUpdate; new ones use the update. */
export const resolveSignal = defineSignal<[ResolveRequest]>('resolve');
/**
 * Resolve a unit in error: refused (by its validator) when the unit is not in
 * error; answers once the agent acted on it, so no resolve is ever lost.
 */
export const resolveUpdate = defineUpdate<ResolveResult, [ResolveRequest]>('resolveUnit');
/** Sent by unit agents to the operation that asked for an event. */
export const unitProgressSignal = defineSignal<[UnitProgress]>('unitProgress');
export const unitAgentQuery = defineQuery<UnitAgentView>('unitAgent');
/**
 * Drop a queued action (by its operation id) before it runs: `cancelled`; one
 * handed to the machine already: `running` (it runs to its end); `absent`: not queued.
 */
export const cancelActionUpdate = defineUpdate<'cancelled' | 'running' | 'absent', [number]>('cancelAction');

/**
 * `unit:<model>:<first 8 of the model uuid>:<app>/<n>`: the name for people, the
 * uuid so that a model destroyed and made again under the same name starts its
 * agents at once, beside any of the old model's still closing.
 */
export function unitAgentWorkflowId(model: string, modelUuid: string, unit: string): string {
  return `unit:${model}:${modelUuid.slice(0, 8)}:${unit}`;
}

/** The id agents had before it named the model's uuid; they may still run after an upgrade. */
export function legacyUnitAgentWorkflowId(model: string, unit: string): string {
  return `unit:${model}:${unit}`;
}

/** A refresh paused after its first batch goes on. */
export const refreshResumeSignal = defineSignal('resumeRefresh');
/** A refresh paused (or running) stops and rolls back every unit it refreshed. */
export const refreshAbortSignal = defineSignal('abortRefresh');

/** The model's settings a unit agent follows (model-config). */
export interface AgentSettings {
  /** Between update-status hooks. */
  updateStatusMs: number;
}
export const agentSettingsSignal = defineSignal<[AgentSettings]>('agentSettings');

/**
 * migrate-model's hand-over: `hold: true` stops the agent before its next hook (the
 * one running finishes first) and answers, once it is parked, with its state (queue,
 * relations as told, failure), for the target controller's agent to start from;
 * `hold: false` lets it go on (a migration that failed). Answers null then.
 */
export interface HoldRequest {
  hold: boolean;
  /** For people: shown as the agent's current details while it is held. */
  reason?: string;
}
export const holdUpdate = defineUpdate<unknown, [HoldRequest]>('holdAgent');
