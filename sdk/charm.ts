// The charm base class and the framework that dispatches one event to it:
// deferred events first, then the event, then collect-status, then stored
// state and the deferred list go to charm state (state-set), committed by the
// runtime with everything else the hook wrote, and only if the hook succeeds.
import type { ModelBackend } from './backend.ts';
import {
  ActionEvent,
  type ActionResults,
  type AnyCharmTypes,
  type CharmTypes,
  CollectStatusEvent,
  type DeferredEvent,
  type EventName,
  type Handler,
  HookEvent,
  type JsonObject,
  RelationEvent,
  SecretEvent,
} from './events.ts';
import { Application, LeaderData, Logger, Relation, Secrets, Unit } from './model.ts';
import { highestPriority } from './status.ts';

/** What one dispatch is about, from the hook environment (JUJU_*). */
export interface DispatchInfo {
  kind: 'hook' | 'action';
  /** Hook name (`kv-relation-changed`) or action name (`visits`). */
  name: string;
  unit: string;
  model: string;
  charmDir: string;
  relationId?: string;
  remoteUnit?: string;
  remoteApp?: string;
  departingUnit?: string;
  actionId?: string;
  secretId?: string;
  secretLabel?: string;
  secretRevision?: number;
}

const STATE_PREFIX = 'charmflow.stored.';
const DEFERRED_KEY = 'charmflow.deferred';

/** Stored state's type from its defaults: `false` is a boolean, `''` a string, `0` a number. */
export type Widen<T> = {
  -readonly [K in keyof T]: T[K] extends boolean
    ? boolean
    : T[K] extends string
      ? string
      : T[K] extends number
        ? number
        : T[K];
};

/** The charm's constructor, as `run()` and the test harness take it. */
export type CharmClass<C extends Charm<CharmTypes> = Charm<CharmTypes>> = new (framework: Framework) => C;

/** A handler registry entry (any event). */
type AnyHandler = (event: never) => unknown;

/**
 * Runs one event through a charm. Built by `run()` for a real hook and by the
 * test harness for a simulated one; charms only pass it to `super()`.
 */
export class Framework {
  /** @internal */ readonly handlers = new Map<string, AnyHandler[]>();
  /** @internal */ readonly stores = new Map<string, { value: JsonObject; loaded: string | undefined }>();
  #state: Record<string, string> | undefined;
  #leader: boolean | undefined;

  constructor(
    readonly backend: ModelBackend,
    readonly info: DispatchInfo,
  ) {}

  /** Charm state as it was when the hook started (state-get), read once. */
  /** @internal */ charmState(): Record<string, string> {
    this.#state ??= this.backend.stateGet();
    return this.#state;
  }

  /** @internal */ isLeader(): boolean {
    this.#leader ??= this.backend.isLeader();
    return this.#leader;
  }

  /** Dispatches the event to `charm` and commits stored state. Throws what a handler threw (nothing is committed). */
  async dispatch(charm: Charm<CharmTypes>): Promise<void> {
    const info = this.info;
    const before = this.charmState()[DEFERRED_KEY];
    const deferred: DeferredEvent[] = before ? (JSON.parse(before) as DeferredEvent[]) : [];
    const stillDeferred: DeferredEvent[] = [];
    if (info.kind === 'hook') {
      // Deferred events run first, oldest first, as ops re-emits them.
      for (const d of deferred) {
        const event = this.eventFor(charm, d);
        if (event === null) {
          charm.log.debug(`dropping deferred ${d.name}: relation ${d.relationId} is gone`);
          continue;
        }
        await this.emit(d.name, event);
        if (event.deferred) stillDeferred.push(d);
      }
      const current = this.currentRecord();
      const event = this.eventFor(charm, current);
      if (event !== null) {
        await this.emit(info.name, event);
        if (event.deferred && !stillDeferred.some((d) => JSON.stringify(d) === JSON.stringify(current))) {
          stillDeferred.push(current);
        }
      }
    } else {
      stillDeferred.push(...deferred);
      await this.runAction(charm);
    }
    await this.collectStatus(charm);
    this.commitState(stillDeferred, before);
  }

  private currentRecord(): DeferredEvent {
    const i = this.info;
    const rec: DeferredEvent = { name: i.name };
    for (const k of ['relationId', 'remoteUnit', 'remoteApp', 'departingUnit', 'secretId', 'secretLabel'] as const) {
      if (i[k] !== undefined) rec[k] = i[k];
    }
    if (i.secretRevision !== undefined) rec.secretRevision = i.secretRevision;
    return rec;
  }

  private eventFor(charm: Charm<CharmTypes>, d: DeferredEvent): HookEvent | null {
    if (/-relation-(created|joined|changed|departed|broken)$/.test(d.name) && d.relationId) {
      const endpoint = d.relationId.slice(0, d.relationId.lastIndexOf(':'));
      const isCurrent = d.relationId === this.info.relationId;
      if (!isCurrent && !this.backend.relationIds(endpoint).includes(d.relationId)) return null;
      const relation = new Relation(this.backend, d.relationId, charm.local(), d.departingUnit);
      return new RelationEvent(
        d.name,
        relation,
        d.remoteUnit,
        d.remoteApp ?? relation.app ?? undefined,
        d.departingUnit,
      );
    }
    if (d.name.startsWith('secret-') && (d.secretId || d.secretLabel)) {
      const secret = charm.secrets.get({
        ...(d.secretId ? { id: d.secretId } : {}),
        ...(d.secretLabel ? { label: d.secretLabel } : {}),
      });
      return new SecretEvent(d.name, secret, d.secretRevision);
    }
    return new HookEvent(d.name);
  }

  private async emit(name: string, event: unknown): Promise<unknown[]> {
    const results: unknown[] = [];
    for (const h of this.handlers.get(name) ?? []) results.push(await (h as (e: unknown) => unknown)(event));
    return results;
  }

  private async runAction(charm: Charm<CharmTypes>): Promise<void> {
    const name = this.info.name;
    const handlers = this.handlers.get(`${name}-action`) ?? [];
    if (handlers.length === 0) {
      this.backend.actionFail(`the charm has no handler for action "${name}"`);
      return;
    }
    const event = new ActionEvent(name, this.info.actionId ?? '', this.backend.actionGet(), {
      log: (m) => this.backend.actionLog(m),
      fail: (m) => this.backend.actionFail(m),
    });
    for (const result of await this.emit(`${name}-action`, event)) {
      if (result !== undefined && result !== null) this.backend.actionSet(flattenResults(result as ActionResults));
    }
    void charm;
  }

  private async collectStatus(charm: Charm<CharmTypes>): Promise<void> {
    const unitEvent = new CollectStatusEvent('collect-unit-status');
    await this.emit('collect-unit-status', unitEvent);
    const unitStatus = highestPriority(unitEvent.statuses);
    if (unitStatus) charm.unit.setStatus(unitStatus);
    if (!this.handlers.has('collect-app-status') || !this.isLeader()) return;
    const appEvent = new CollectStatusEvent('collect-app-status');
    await this.emit('collect-app-status', appEvent);
    const appStatus = highestPriority(appEvent.statuses);
    if (appStatus) charm.app.setStatus(appStatus);
  }

  private commitState(deferred: DeferredEvent[], before: string | undefined): void {
    const changes: Record<string, string> = {};
    const after = deferred.length > 0 ? JSON.stringify(deferred) : undefined;
    if (after !== before) changes[DEFERRED_KEY] = after ?? '';
    for (const [name, { value, loaded }] of this.stores) {
      const now = JSON.stringify(value);
      if (now !== loaded) changes[STATE_PREFIX + name] = now;
    }
    if (Object.keys(changes).length > 0) this.backend.stateSet(changes);
  }
}

/** `{ a: { b: 1 } }` → `{ 'a.b': '1' }`, keys checked as Juju checks them. */
export function flattenResults(results: ActionResults, prefix = ''): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(results)) {
    if (!/^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/.test(k)) {
      throw new TypeError(`action result key "${k}" must be lower-case letters, digits and dashes`);
    }
    const key = prefix ? `${prefix}.${k}` : k;
    if (typeof v === 'object' && v !== null) Object.assign(out, flattenResults(v, key));
    else out[key] = String(v);
  }
  return out;
}

/**
 * The base class of a TypeScript charm. Subclass it, register handlers in the
 * constructor with {@link Charm.on}, and end `src/charm.ts` with `run(MyCharm)`.
 *
 * ```ts
 * import { Charm, type Framework, run, Status } from '@charmflow/ops';
 * import type { Types } from './charm-types.ts';
 *
 * export class HelloCharm extends Charm<Types> {
 *   constructor(framework: Framework) {
 *     super(framework);
 *     this.on('config-changed', () => this.unit.setStatus(Status.active(`port ${this.config.port}`)));
 *   }
 * }
 * run(HelloCharm);
 * ```
 *
 * @typeParam M - the charm's types (config, action params, endpoints), generated from its YAML.
 */
export abstract class Charm<M extends CharmTypes = AnyCharmTypes> {
  /** This unit: status, ports, address, workload version. */
  readonly unit: Unit;
  /** This application: its status (leader only). */
  readonly app: Application;
  /** Leader settings: read by all, written by the leader. */
  readonly leaderData: LeaderData;
  /** Juju secrets. */
  readonly secrets: Secrets;
  /** juju-log. */
  readonly log: Logger;
  /** Where the charm's files are (cwd of the hook). */
  readonly charmDir: string;
  /** The model's name. */
  readonly modelName: string;
  readonly #fw: Framework;
  #config: M['config'] | undefined;

  constructor(framework: Framework) {
    this.#fw = framework;
    const { backend, info } = framework;
    const leader = () => framework.isLeader();
    this.unit = new Unit(backend, info.unit, leader);
    this.app = new Application(backend, info.unit.slice(0, info.unit.lastIndexOf('/')), leader);
    this.leaderData = new LeaderData(backend, leader);
    this.secrets = new Secrets(backend);
    this.log = new Logger(backend);
    this.charmDir = info.charmDir;
    this.modelName = info.model;
  }

  /** The application's config (`config-get`), typed from config.yaml. Options with no value and no default are undefined. */
  get config(): Readonly<M['config']> {
    this.#config ??= this.#fw.backend.configGet() as M['config'];
    return this.#config;
  }

  /**
   * Handles an event. Lifecycle events get a {@link HookEvent}, `<endpoint>-relation-*` a
   * {@link RelationEvent}, `<action>-action` an {@link ActionEvent} with typed params (return
   * the results), `secret-*` a {@link SecretEvent}, `collect-unit-status` /
   * `collect-app-status` a {@link CollectStatusEvent}. Several handlers of one event run in
   * the order they were added. A handler that throws fails the hook: the unit goes into
   * error with the message, and nothing the hook wrote is committed.
   */
  on<K extends EventName<M>>(event: K, handler: Handler<M, K>): this {
    const list = this.#fw.handlers.get(event) ?? [];
    list.push(handler.bind(this) as AnyHandler);
    this.#fw.handlers.set(event, list);
    return this;
  }

  /** The relations of an endpoint (not the one being broken, during its relation-broken). */
  relations(endpoint: M['endpoints']): Relation[] {
    const info = this.#fw.info;
    const broken = info.name.endsWith('-relation-broken') ? info.relationId : undefined;
    return this.#fw.backend
      .relationIds(endpoint)
      .filter((rid) => rid !== broken)
      .map((rid) => new Relation(this.#fw.backend, rid, this.local(), this.departing(rid)));
  }

  /** The one relation of an endpoint, or null; throws if there are several. */
  relation(endpoint: M['endpoints']): Relation | null {
    const all = this.relations(endpoint);
    if (all.length > 1) throw new Error(`endpoint ${endpoint} has ${all.length} relations; use relations()`);
    return all[0] ?? null;
  }

  /**
   * State kept for this unit across hooks (charm state, `state-get`/`state-set`),
   * starting from `defaults`. Change the returned object in handlers; it is saved
   * at the end of the dispatch, and committed only if every handler succeeded.
   * Call it once per name (usually as a class field).
   */
  protected storedState<T extends JsonObject>(defaults: T, name = 'stored'): Widen<T> {
    const existing = this.#fw.stores.get(name);
    if (existing) return existing.value as Widen<T>;
    const loaded = this.#fw.charmState()[STATE_PREFIX + name];
    const value = { ...defaults, ...(loaded ? (JSON.parse(loaded) as JsonObject) : {}) } as Widen<T>;
    this.#fw.stores.set(name, { value, loaded: loaded ?? JSON.stringify(defaults) });
    return value;
  }

  /** @internal */
  local() {
    return { unit: this.unit.name, app: this.app.name, isLeader: () => this.#fw.isLeader() };
  }

  private departing(rid: string): string | undefined {
    const info = this.#fw.info;
    return info.relationId === rid && info.name.endsWith('-relation-departed') ? info.departingUnit : undefined;
  }
}
