// The events a charm handles, and how their names map to their types.
import type { Relation, Secret } from './model.ts';
import type { Status } from './status.ts';

/** Hooks every charm may get, in Juju's names. */
export type LifecycleEventName =
  | 'install'
  | 'start'
  | 'stop'
  | 'remove'
  | 'config-changed'
  | 'upgrade-charm'
  | 'update-status'
  | 'leader-elected'
  | 'leader-settings-changed';

export type RelationEventKind = 'created' | 'joined' | 'changed' | 'departed' | 'broken';
export type SecretEventName = 'secret-changed' | 'secret-expired' | 'secret-remove' | 'secret-rotate';
/** Run at the end of every dispatch to gather the unit's (and, on the leader, the app's) status. */
export type CollectStatusEventName = 'collect-unit-status' | 'collect-app-status';

/** A JSON-shaped value, as stored state and action results hold. */
export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };
export type JsonObject = { [key: string]: JsonValue };

/** Action results: nested maps of scalars (keys lower-case; `a: { b: 1 }` is Juju's `a.b=1`). */
export type ActionResults = { [key: string]: string | number | boolean | ActionResults };

/**
 * What a charm is made of, as types: its config options, its actions' params and
 * its relation endpoints. `charmflow init` and `charmflow pack` generate one from
 * config.yaml, actions.yaml and metadata.yaml (`src/charm-types.ts`), so that reading a
 * config key the charm does not have is a compile-time error.
 */
export interface CharmTypes {
  config: object;
  actions: { [action: string]: object };
  endpoints: string;
}

/** The types of a charm that declares none: any config key, any action, any endpoint. */
export interface AnyCharmTypes extends CharmTypes {
  config: { readonly [key: string]: string | number | boolean | undefined };
  actions: { [action: string]: { [param: string]: unknown } };
  endpoints: string;
}

/** Every event name a charm of these types can handle. */
export type EventName<M extends CharmTypes> =
  | LifecycleEventName
  | `${M['endpoints']}-relation-${RelationEventKind}`
  | `${keyof M['actions'] & string}-action`
  | SecretEventName
  | CollectStatusEventName;

/** The event object a handler of `K` receives. */
export type EventOf<M extends CharmTypes, K extends string> = K extends `${string}-relation-${RelationEventKind}`
  ? RelationEvent
  : K extends `${infer A}-action`
    ? A extends keyof M['actions']
      ? ActionEvent<M['actions'][A]>
      : never
    : K extends SecretEventName
      ? SecretEvent
      : K extends CollectStatusEventName
        ? CollectStatusEvent
        : HookEvent;

/** A handler of `K`: an action handler may return the action's results. */
export type Handler<M extends CharmTypes, K extends string> = [K] extends [`${string}-action`]
  ? (event: EventOf<M, K>) => ActionResults | undefined | Promise<ActionResults | undefined> | void | Promise<void>
  : (event: EventOf<M, K>) => void | Promise<void>;

/** A deferred event as kept in charm state until it runs without deferring. */
export interface DeferredEvent {
  name: string;
  relationId?: string;
  remoteUnit?: string;
  remoteApp?: string;
  departingUnit?: string;
  secretId?: string;
  secretLabel?: string;
  secretRevision?: number;
}

/** A hook event. */
export class HookEvent {
  #deferred = false;

  /** @internal */
  constructor(
    /** The hook name, `config-changed`, `kv-relation-joined`. */
    readonly name: string,
  ) {}

  /**
   * Runs this event again before the next event this unit gets (as ops does),
   * until a handler lets it finish without deferring.
   */
  defer(): void {
    this.#deferred = true;
  }

  /** True once a handler has deferred it. */
  get deferred(): boolean {
    return this.#deferred;
  }
}

/** A relation hook: created, joined, changed, departed, broken. */
export class RelationEvent extends HookEvent {
  /** @internal */
  constructor(
    name: string,
    /** The relation the hook is about. During `-departed` its units no longer list the departing unit. */
    readonly relation: Relation,
    /** The remote unit that joined, changed or departed (absent for created, broken and app-level changes). */
    readonly remoteUnit: string | undefined,
    /** The remote application. */
    readonly remoteApp: string | undefined,
    /** The unit leaving (relation-departed): this unit itself when it is the one going. */
    readonly departingUnit: string | undefined,
  ) {
    super(name);
  }

  /** The endpoint: `kv` for `kv-relation-changed`. */
  get endpoint(): string {
    return this.relation.endpoint;
  }
}

/** A secret hook: changed, expired, remove, rotate. */
export class SecretEvent extends HookEvent {
  /** @internal */
  constructor(
    name: string,
    readonly secret: Secret,
    /** The revision concerned (secret-remove, secret-expired). */
    readonly revision: number | undefined,
  ) {
    super(name);
  }
}

/** An action: typed params in, results out (return them from the handler, or `fail`). */
export class ActionEvent<P = Record<string, unknown>> {
  #failed: string | undefined;

  /** @internal */
  constructor(
    /** The action's name (`visits`). */
    readonly name: string,
    /** The action id the operator sees. */
    readonly id: string,
    /** Params as validated against actions.yaml, defaults filled. */
    readonly params: Readonly<P>,
    private readonly sink: { log(message: string): void; fail(message: string): void },
  ) {}

  /** A progress line the operator sees while the action runs. */
  log(message: string): void {
    this.sink.log(message);
  }

  /** Marks the action failed with a message; results set so far are kept. */
  fail(message: string): void {
    this.#failed = message;
    this.sink.fail(message);
  }

  /** The failure message, if `fail` was called. */
  get failed(): string | undefined {
    return this.#failed;
  }
}

/** Offers statuses at the end of a dispatch; the most pressing one is set. */
export class CollectStatusEvent {
  readonly statuses: Status[] = [];

  /** @internal */
  constructor(readonly name: CollectStatusEventName) {}

  add(status: Status): void {
    this.statuses.push(status);
  }
}
