// A test harness in the spirit of ops.testing: run one event of a charm against
// an in-memory state (config, relations, leadership, stored state, secrets,
// action params) and get the output state back (data written, statuses, ports,
// action results, logs). No controller, no machine, no hook tools: milliseconds.
//
//   const ctx = new Harness(KvWebCharm, { charmDir });
//   const out = await ctx.run('kv-relation-changed', { leader: true, relations: [kv] }, { relation: kv });
//   assert.equal(out.unitStatus.status, 'active');
import {
  type ConfigValue,
  HookToolError,
  type LogLevel,
  type ModelBackend,
  RelationNotFoundError,
  type SecretAddOptions,
  type SecretInfo,
  SecretNotFoundError,
  type SecretRef,
  type SettableStatus,
  type StatusInfo,
} from './backend.ts';
import { type Charm, type CharmClass, type DispatchInfo, Framework } from './charm.ts';
import { type CharmMeta, configDefaults, loadCharmMeta } from './charm-meta.ts';
import type { CharmTypes, DeferredEvent, JsonObject } from './events.ts';
import { formatPort, type Port } from './model.ts';

type Bag = Record<string, string>;

/** A relation in the input state. Give `id` to name it; the harness numbers the others. */
export interface RelationState {
  endpoint: string;
  id?: number;
  /** The remote application (for a peer relation, this application). */
  remoteApp: string;
  /** Remote units and their bags. */
  remoteUnitsData?: Record<string, Bag>;
  remoteAppData?: Bag;
  localUnitData?: Bag;
  localAppData?: Bag;
}

/** A secret this unit owns or was granted. */
export interface SecretState {
  id: string;
  label?: string;
  description?: string;
  owner?: 'application' | 'unit';
  /** The revision's content this unit sees; `latest` is the newest (used with refresh/peek). */
  content: Bag;
  latest?: Bag;
  revision?: number;
}

/** The world one event runs against. Everything is optional. */
export interface State {
  /** Config set by the operator; config.yaml's defaults fill in the rest. */
  config?: Record<string, ConfigValue>;
  leader?: boolean;
  relations?: RelationState[];
  leaderData?: Bag;
  /** Stored state by name (the default store is `stored`). */
  stored?: Record<string, JsonObject>;
  /** Events deferred by an earlier dispatch (an output's `deferred`). */
  deferred?: DeferredEvent[];
  secrets?: SecretState[];
  /** Opened ports as `80/tcp` or Port objects. */
  ports?: (string | Port)[];
  unitStatus?: StatusInfo;
  appStatus?: StatusInfo;
  workloadVersion?: string;
  address?: string;
  /** Charm state keys set outside the SDK's stores (rarely needed). */
  charmState?: Bag;
}

/** The world after the event: the input with what the hook committed applied. */
export interface Output {
  config: Record<string, ConfigValue>;
  leader: boolean;
  relations: (RelationState & { id: number })[];
  leaderData: Bag;
  stored: Record<string, JsonObject>;
  deferred: DeferredEvent[];
  secrets: SecretState[];
  ports: string[];
  unitStatus: StatusInfo;
  appStatus: StatusInfo;
  workloadVersion: string;
  /** Every status-set, in order (they take effect at once, even if the hook fails). */
  statusHistory: { scope: 'unit' | 'application'; status: string; message: string }[];
  logs: { level: LogLevel; message: string }[];
  actionResults: Record<string, string>;
  actionFailed: string | null;
  actionLogs: string[];
  /** The uncaught error's message, when the hook failed (then nothing but status was committed). */
  error: string | null;
  /** The error itself, for a test that wants its stack. */
  thrown: unknown;
}

/** What the event is about, beyond its name. */
export interface EventOptions {
  /** For a relation event: the relation (from the state) it is about. */
  relation?: RelationState;
  remoteUnit?: string;
  departingUnit?: string;
  /** For a secret event. */
  secret?: SecretState;
  secretRevision?: number;
  /** For an action: its params (actions.yaml defaults fill in the rest). */
  params?: Record<string, unknown>;
}

export interface HarnessOptions {
  /** The charm's directory (its YAML is read from there). */
  charmDir?: string;
  /** Or the metadata itself. */
  meta?: CharmMeta;
  /** This unit (default `<charm name>/0`). */
  unit?: string;
  model?: string;
}

const clone = <T>(v: T): T => structuredClone(v);

/**
 * Runs events of one charm class against in-memory states. Each run is
 * independent: it takes a state and returns a new one (the input is not changed).
 */
export class Harness<C extends Charm<CharmTypes>> {
  readonly meta: CharmMeta;
  readonly unitName: string;

  constructor(
    private readonly charmClass: CharmClass<C>,
    private readonly opts: HarnessOptions,
  ) {
    if (!opts.meta && !opts.charmDir) throw new TypeError('Harness needs charmDir or meta');
    this.meta = opts.meta ?? loadCharmMeta(opts.charmDir!);
    this.unitName = opts.unit ?? `${this.meta.name}/0`;
  }

  /** Runs a hook (`install`, `config-changed`, `kv-relation-changed`, ...). */
  async run(hook: string, state: State = {}, event: EventOptions = {}): Promise<Output> {
    return this.dispatch('hook', hook, state, event);
  }

  /** Runs an action with params (validated against actions.yaml, defaults filled). */
  async runAction(action: string, state: State = {}, params: Record<string, unknown> = {}): Promise<Output> {
    return this.dispatch('action', action, state, { params });
  }

  private async dispatch(kind: 'hook' | 'action', name: string, state: State, ev: EventOptions): Promise<Output> {
    const sim = new SimulatedUnit(this.meta, this.unitName, state);
    const info: DispatchInfo = {
      kind,
      name,
      unit: this.unitName,
      model: this.opts.model ?? 'test',
      charmDir: this.opts.charmDir ?? '.',
    };
    if (kind === 'action') {
      sim.setAction(name, ev.params ?? {});
      info.actionId = '1';
    }
    const relationHook = /^(.+)-relation-(created|joined|changed|departed|broken)$/.exec(name);
    if (relationHook) {
      const rel = ev.relation ? sim.relationFor(ev.relation) : undefined;
      if (!rel) throw new TypeError(`${name} needs { relation } (one of the state's relations)`);
      if (rel.endpoint !== relationHook[1]) throw new TypeError(`${name} is not about ${rel.endpoint}:${rel.id}`);
      info.relationId = `${rel.endpoint}:${rel.id}`;
      info.remoteApp = rel.remoteApp;
      if (ev.remoteUnit) info.remoteUnit = ev.remoteUnit;
      if (ev.departingUnit) info.departingUnit = ev.departingUnit;
    }
    if (ev.secret) {
      info.secretId = ev.secret.id;
      if (ev.secret.label) info.secretLabel = ev.secret.label;
      if (ev.secretRevision !== undefined) info.secretRevision = ev.secretRevision;
    }
    const framework = new Framework(sim, info);
    let thrown: unknown = null;
    try {
      await framework.dispatch(new this.charmClass(framework));
    } catch (err) {
      thrown = err;
    }
    return sim.output(thrown, kind === 'action' ? name : null);
  }
}

/** The in-memory backend: the state in, changes held until the hook succeeds. */
class SimulatedUnit implements ModelBackend {
  private readonly state: State;
  private readonly relations: (RelationState & { id: number })[];
  private readonly appName: string;
  private readonly config: Record<string, ConfigValue>;
  // pending changes: committed into the output only if the hook succeeds
  private relationChanges = new Map<number, { unit: Bag; app: Bag }>();
  private leaderChanges: Bag = {};
  private stateChanges: Bag = {};
  private ports: Set<string>;
  private secrets: SecretState[];
  private workloadVersion: string;
  private unitStatus: StatusInfo;
  private appStatus: StatusInfo;
  private statusHistory: Output['statusHistory'] = [];
  private logs: Output['logs'] = [];
  private action: { name: string; params: Record<string, unknown> } | null = null;
  private actionResults: Record<string, string> = {};
  private actionFailed: string | null = null;
  private actionLogs: string[] = [];
  private secretSeq = 0;

  constructor(
    private readonly meta: CharmMeta,
    private readonly unit: string,
    input: State,
  ) {
    this.state = clone(input);
    this.appName = unit.slice(0, unit.lastIndexOf('/'));
    for (const k of Object.keys(this.state.config ?? {})) {
      if (!(k in meta.config)) throw new TypeError(`config option "${k}" is not in ${meta.name}'s config.yaml`);
      const want = meta.config[k].type;
      const v = this.state.config![k];
      const ok =
        want === 'int'
          ? Number.isInteger(v)
          : want === 'float'
            ? typeof v === 'number'
            : want === 'boolean'
              ? typeof v === 'boolean'
              : typeof v === 'string';
      if (!ok) throw new TypeError(`config option "${k}" is ${want}, not ${JSON.stringify(v)}`);
    }
    this.config = { ...configDefaults(meta), ...this.state.config };
    let next = Math.max(0, ...(this.state.relations ?? []).map((r) => r.id ?? 0)) + 1;
    this.relations = (this.state.relations ?? []).map((r) => {
      if (!meta.endpoints.some((e) => e.name === r.endpoint)) {
        throw new TypeError(`relation endpoint "${r.endpoint}" is not in ${meta.name}'s metadata`);
      }
      return { ...r, id: r.id ?? next++ };
    });
    // the same objects as the caller's, numbered: relationFor finds them by identity or id
    (input.relations ?? []).forEach((r, i) => {
      this.inputIds.set(r, this.relations[i].id);
    });
    this.ports = new Set((this.state.ports ?? []).map((p) => (typeof p === 'string' ? p : formatPort(p))));
    this.secrets = clone(this.state.secrets ?? []);
    this.workloadVersion = this.state.workloadVersion ?? '';
    this.unitStatus = this.state.unitStatus ?? { status: 'unknown', message: '' };
    this.appStatus = this.state.appStatus ?? { status: 'unknown', message: '' };
  }

  private inputIds = new Map<RelationState, number>();

  relationFor(r: RelationState): (RelationState & { id: number }) | undefined {
    const id = this.inputIds.get(r) ?? r.id;
    return this.relations.find((x) => x.id === id);
  }

  setAction(name: string, params: Record<string, unknown>): void {
    const spec = this.meta.actions[name];
    if (!spec) throw new TypeError(`action "${name}" is not in ${this.meta.name}'s actions.yaml`);
    const filled: Record<string, unknown> = {};
    for (const [k, s] of Object.entries(spec.params)) if (s.default !== undefined) filled[k] = s.default;
    Object.assign(filled, params);
    for (const k of spec.required) if (!(k in filled)) throw new TypeError(`action "${name}" needs param "${k}"`);
    if (!spec.additionalProperties) {
      for (const k of Object.keys(params)) {
        if (!(k in spec.params)) throw new TypeError(`action "${name}" has no param "${k}"`);
      }
    }
    this.action = { name, params: filled };
  }

  private isLeaderNow(): boolean {
    return this.state.leader === true;
  }

  private rel(rid: string, tool: string): RelationState & { id: number } {
    const id = Number(rid.slice(rid.lastIndexOf(':') + 1));
    const r = this.relations.find((x) => x.id === id);
    if (!r) throw new RelationNotFoundError(tool, 1, `relation not found: ${rid}`);
    return r;
  }

  private pending(id: number) {
    let p = this.relationChanges.get(id);
    if (!p) {
      p = { unit: {}, app: {} };
      this.relationChanges.set(id, p);
    }
    return p;
  }

  // ---- ModelBackend --------------------------------------------------------

  configGet() {
    return { ...this.config };
  }

  isLeader() {
    return this.isLeaderNow();
  }

  relationIds(endpoint: string) {
    return this.relations.filter((r) => r.endpoint === endpoint).map((r) => `${r.endpoint}:${r.id}`);
  }

  relationList(rid: string) {
    return Object.keys(this.rel(rid, 'relation-list').remoteUnitsData ?? {});
  }

  relationRemoteApp(rid: string) {
    return this.rel(rid, 'relation-list').remoteApp || null;
  }

  relationGet(rid: string, owner: string, app: boolean): Bag {
    const r = this.rel(rid, 'relation-get');
    if (app) {
      if (owner === this.appName) return applyBag(r.localAppData, this.relationChanges.get(r.id)?.app);
      if (owner === r.remoteApp) return { ...r.remoteAppData };
    } else {
      if (owner === this.unit) return applyBag(r.localUnitData, this.relationChanges.get(r.id)?.unit);
      if (r.remoteUnitsData && owner in r.remoteUnitsData) return { ...r.remoteUnitsData[owner] };
    }
    throw new HookToolError('relation-get', 1, `cannot read settings for ${owner} in relation ${rid}`);
  }

  relationSet(rid: string, data: Bag, app: boolean) {
    const r = this.rel(rid, 'relation-set');
    if (app && !this.isLeaderNow()) {
      throw new HookToolError('relation-set', 1, 'cannot write relation settings: this unit is not the leader');
    }
    Object.assign(app ? this.pending(r.id).app : this.pending(r.id).unit, data);
  }

  statusGet(app: boolean) {
    if (app && !this.isLeaderNow()) {
      throw new HookToolError('status-get', 1, 'finding application status: this unit is not the leader');
    }
    return { ...(app ? this.appStatus : this.unitStatus) };
  }

  statusSet(status: SettableStatus, message: string, app: boolean) {
    if (app && !this.isLeaderNow()) {
      throw new HookToolError('status-set', 1, 'setting application status: this unit is not the leader');
    }
    if (app) this.appStatus = { status, message };
    else this.unitStatus = { status, message };
    this.statusHistory.push({ scope: app ? 'application' : 'unit', status, message });
  }

  applicationVersionSet(version: string) {
    this.workloadVersion = version;
  }

  leaderGet() {
    return applyBag(this.state.leaderData, this.leaderChanges);
  }

  leaderSet(data: Bag) {
    if (!this.isLeaderNow())
      throw new HookToolError('leader-set', 1, 'cannot write leadership settings: not the leader');
    Object.assign(this.leaderChanges, data);
  }

  actionGet() {
    if (!this.action) throw new HookToolError('action-get', 1, 'not running an action');
    return clone(this.action.params);
  }

  actionSet(results: Bag) {
    if (!this.action) throw new HookToolError('action-set', 1, 'not running an action');
    Object.assign(this.actionResults, results);
  }

  actionFail(message: string) {
    if (!this.action) throw new HookToolError('action-fail', 1, 'not running an action');
    this.actionFailed = message;
  }

  actionLog(message: string) {
    if (!this.action) throw new HookToolError('action-log', 1, 'not running an action');
    this.actionLogs.push(message);
  }

  openPort(spec: string) {
    this.ports.add(spec);
  }

  closePort(spec: string) {
    this.ports.delete(spec);
  }

  openedPorts() {
    return [...this.ports].sort();
  }

  unitAddress() {
    return this.state.address ?? '10.0.0.10';
  }

  stateGet() {
    const base: Bag = { ...this.state.charmState };
    for (const [k, v] of Object.entries(this.state.stored ?? {})) base[`charmflow.stored.${k}`] = JSON.stringify(v);
    if (this.state.deferred?.length) base['charmflow.deferred'] = JSON.stringify(this.state.deferred);
    return applyBag(base, this.stateChanges);
  }

  stateSet(data: Bag) {
    Object.assign(this.stateChanges, data);
  }

  log(level: LogLevel, message: string) {
    this.logs.push({ level, message });
  }

  private findSecret(ref: SecretRef, tool: string): SecretState {
    const s = this.secrets.find((x) => (ref.id && x.id === ref.id) || (!ref.id && ref.label && x.label === ref.label));
    if (!s) throw new SecretNotFoundError(tool, 1, `secret ${ref.id ?? ref.label} not found`);
    return s;
  }

  secretGet(ref: SecretRef, opts: { refresh?: boolean; peek?: boolean }) {
    const s = this.findSecret(ref, 'secret-get');
    if (ref.id && ref.label) s.label = ref.label;
    if ((opts.refresh || opts.peek) && s.latest) {
      const latest = { ...s.latest };
      if (opts.refresh) s.content = latest;
      return latest;
    }
    return { ...s.content };
  }

  secretInfoGet(ref: SecretRef): SecretInfo {
    const s = this.findSecret(ref, 'secret-info-get');
    return {
      id: s.id,
      ...(s.label ? { label: s.label } : {}),
      ...(s.description ? { description: s.description } : {}),
      owner: s.owner ?? 'application',
      revision: s.revision ?? 1,
    };
  }

  secretAdd(content: Bag, opts: SecretAddOptions) {
    if ((opts.owner ?? 'application') === 'application' && !this.isLeaderNow()) {
      throw new HookToolError('secret-add', 1, 'only the leader may add an application-owned secret');
    }
    const id = `secret:harness-${++this.secretSeq}`;
    this.secrets.push({
      id,
      content: { ...content },
      owner: opts.owner ?? 'application',
      revision: 1,
      ...(opts.label ? { label: opts.label } : {}),
      ...(opts.description ? { description: opts.description } : {}),
    });
    return id;
  }

  secretSet(id: string, content: Bag, opts: { label?: string; description?: string }) {
    const s = this.findSecret({ id }, 'secret-set');
    s.latest = { ...content };
    s.revision = (s.revision ?? 1) + 1;
    if (opts.label) s.label = opts.label;
    if (opts.description) s.description = opts.description;
  }

  secretGrant(id: string, rid: string) {
    this.findSecret({ id }, 'secret-grant');
    this.rel(rid, 'secret-grant');
  }

  secretRevoke(id: string, rid: string) {
    this.findSecret({ id }, 'secret-revoke');
    this.rel(rid, 'secret-revoke');
  }

  secretRemove(id: string) {
    this.findSecret({ id }, 'secret-remove');
    this.secrets = this.secrets.filter((s) => s.id !== id);
  }

  secretIds() {
    return this.secrets.filter((s) => s.owner !== undefined).map((s) => s.id);
  }

  // ---- the output ----------------------------------------------------------

  output(thrown: unknown, action: string | null): Output {
    const failed = thrown !== null;
    const message = failed ? (thrown instanceof Error ? thrown.message : String(thrown)) : null;
    const input = this.state;
    const relations = this.relations.map((r) => {
      const ch = failed ? undefined : this.relationChanges.get(r.id);
      return {
        ...r,
        localUnitData: applyBag(r.localUnitData, ch?.unit),
        localAppData: applyBag(r.localAppData, ch?.app),
      };
    });
    const charmState = failed ? this.stateGetInput() : this.stateGet();
    const stored: Record<string, JsonObject> = {};
    for (const [k, v] of Object.entries(charmState)) {
      if (k.startsWith('charmflow.stored.')) stored[k.slice('charmflow.stored.'.length)] = JSON.parse(v) as JsonObject;
    }
    const deferred = charmState['charmflow.deferred']
      ? (JSON.parse(charmState['charmflow.deferred']) as DeferredEvent[])
      : [];
    return {
      config: { ...this.config },
      leader: input.leader === true,
      relations,
      leaderData: failed ? { ...input.leaderData } : this.leaderGet(),
      stored,
      deferred,
      secrets: failed ? clone(input.secrets ?? []) : this.secrets,
      ports: failed
        ? (input.ports ?? []).map((p) => (typeof p === 'string' ? p : formatPort(p))).sort()
        : this.openedPorts(),
      // A failed hook puts the unit in error, with the message; an action failing never does.
      unitStatus: failed && action === null ? { status: 'error', message: message! } : this.unitStatus,
      appStatus: this.appStatus,
      workloadVersion: this.workloadVersion,
      statusHistory: this.statusHistory,
      logs: this.logs,
      actionResults: this.actionResults,
      actionFailed: failed && action !== null ? (this.actionFailed ?? message) : this.actionFailed,
      actionLogs: this.actionLogs,
      error: message,
      thrown: failed ? thrown : undefined,
    };
  }

  private stateGetInput(): Bag {
    const saved = this.stateChanges;
    this.stateChanges = {};
    try {
      return this.stateGet();
    } finally {
      this.stateChanges = saved;
    }
  }
}

function applyBag(base: Bag | undefined, changes: Bag | undefined): Bag {
  const out: Bag = { ...base };
  for (const [k, v] of Object.entries(changes ?? {})) {
    if (v === '') delete out[k];
    else out[k] = v;
  }
  return out;
}

export { type CharmMeta, loadCharmMeta } from './charm-meta.ts';
