// The charm's view of the model: its unit and application, relations and their
// data bags, leader data, ports and secrets. Reads are cached for the hook;
// writes go to the backend at once (the runtime commits them only if the hook
// succeeds).
import type { ModelBackend, SecretAddOptions, SecretInfo, SecretRef, StatusInfo } from './backend.ts';
import type { Status } from './status.ts';

/** Writing to a data bag this unit may not write (a remote bag, or the app bag on a non-leader). */
export class DataAccessError extends Error {
  override name = 'DataAccessError';
}

/** A relation data bag: string keys to string values. */
export class DataBag {
  #data: Record<string, string> | undefined;

  /** @internal */
  constructor(
    /** The unit or application name this bag belongs to. */
    readonly owner: string,
    private readonly load: () => Record<string, string>,
    private readonly write: ((changes: Record<string, string>) => void) | string,
  ) {}

  private get data(): Record<string, string> {
    this.#data ??= { ...this.load() };
    return this.#data;
  }

  /** The value of a key, or undefined. */
  get(key: string): string | undefined {
    return Object.hasOwn(this.data, key) ? this.data[key] : undefined;
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  /** A copy of the whole bag. */
  toObject(): Record<string, string> {
    return { ...this.data };
  }

  /** True when this unit may write this bag now. */
  get writable(): boolean {
    return typeof this.write === 'function';
  }

  /**
   * Sets keys (`undefined` or `''` deletes one). Only keys whose value changes are
   * written: an unchanged bag does not wake the other side.
   */
  update(values: Record<string, string | undefined>): void {
    if (typeof this.write !== 'function') throw new DataAccessError(this.write);
    const changes: Record<string, string> = {};
    for (const [k, v] of Object.entries(values)) {
      const next = v ?? '';
      if ((this.get(k) ?? '') !== next) changes[k] = next;
    }
    if (Object.keys(changes).length === 0) return;
    this.write(changes);
    for (const [k, v] of Object.entries(changes)) {
      if (v === '') delete this.data[k];
      else this.data[k] = v;
    }
  }

  set(key: string, value: string): void {
    this.update({ [key]: value });
  }

  delete(key: string): void {
    this.update({ [key]: undefined });
  }
}

/** One integration as this unit sees it. */
export class Relation {
  /** The remote units currently in the relation (the other units, for a peer relation). */
  readonly units: readonly string[];
  /** The remote application, or null when it is not known yet. */
  readonly app: string | null;
  #bags = new Map<string, DataBag>();

  /** @internal */
  constructor(
    private readonly backend: ModelBackend,
    /** `endpoint:N`, as JUJU_RELATION_ID and relation-ids write it. */
    readonly relationId: string,
    private readonly local: { unit: string; app: string; isLeader: () => boolean },
    exclude?: string,
  ) {
    this.units = backend
      .relationList(relationId)
      .filter((u) => u !== exclude)
      .sort(byUnitNumber);
    this.app = backend.relationRemoteApp(relationId);
  }

  /** The endpoint (relation name in metadata.yaml). */
  get endpoint(): string {
    return this.relationId.slice(0, this.relationId.lastIndexOf(':'));
  }

  /** The numeric relation id. */
  get id(): number {
    return Number(this.relationId.slice(this.relationId.lastIndexOf(':') + 1));
  }

  /** This unit's bag (always writable). */
  get localUnitData(): DataBag {
    return this.bag(this.local.unit, false);
  }

  /** This application's bag: readable by every unit, writable by the leader only. */
  get localAppData(): DataBag {
    return this.bag(this.local.app, true);
  }

  /** The remote application's bag (read-only), or null when the remote app is not known yet. */
  get remoteAppData(): DataBag | null {
    return this.app === null ? null : this.bag(this.app, true);
  }

  /** A remote unit's bag (read-only). */
  unitData(unit: string): DataBag {
    return this.bag(unit, false);
  }

  private bag(owner: string, app: boolean): DataBag {
    const key = `${app ? 'app' : 'unit'}:${owner}`;
    let bag = this.#bags.get(key);
    if (!bag) {
      const mine = app ? owner === this.local.app : owner === this.local.unit;
      const write: DataBag['write'] = !mine
        ? `${owner}'s data bag in ${this.relationId} belongs to the other side: it is read-only here`
        : app && !this.local.isLeader()
          ? `only the leader may write ${owner}'s application data in ${this.relationId}`
          : (changes) => this.backend.relationSet(this.relationId, changes, app);
      bag = new DataBag(owner, () => this.backend.relationGet(this.relationId, owner, app), write);
      this.#bags.set(key, bag);
    }
    return bag;
  }
}

const byUnitNumber = (a: string, b: string) => {
  const [an, bn] = [a, b].map((u) => Number(u.slice(u.lastIndexOf('/') + 1)));
  return a.slice(0, a.lastIndexOf('/')).localeCompare(b.slice(0, b.lastIndexOf('/'))) || an - bn;
};

/** An opened port: `{ protocol: 'tcp', port: 80 }`, a range with `toPort`, or `{ protocol: 'icmp' }`. */
export interface Port {
  protocol: 'tcp' | 'udp' | 'icmp';
  port?: number;
  toPort?: number;
}

/** `80/tcp`, `1000-2000/udp`, `icmp`. */
export function formatPort(p: Port | number): string {
  const port: Port = typeof p === 'number' ? { protocol: 'tcp', port: p } : p;
  if (port.protocol === 'icmp') return 'icmp';
  if (port.port === undefined) throw new TypeError(`a ${port.protocol} port needs a number`);
  return `${port.toPort !== undefined ? `${port.port}-${port.toPort}` : port.port}/${port.protocol}`;
}

export function parsePort(spec: string): Port {
  if (spec === 'icmp') return { protocol: 'icmp' };
  const m = /^(\d+)(?:-(\d+))?\/(tcp|udp)$/.exec(spec);
  if (!m) throw new TypeError(`not a port: ${spec}`);
  return { protocol: m[3] as 'tcp' | 'udp', port: Number(m[1]), ...(m[2] ? { toPort: Number(m[2]) } : {}) };
}

/** This unit. */
export class Unit {
  /** @internal */
  constructor(
    private readonly backend: ModelBackend,
    /** `app/N` */
    readonly name: string,
    private readonly leader: () => boolean,
  ) {}

  isLeader(): boolean {
    return this.leader();
  }

  /** The unit's status as the controller has it now. */
  get status(): StatusInfo {
    return this.backend.statusGet(false);
  }

  /** Sets the unit's status; it takes effect at once, even if the hook fails later. */
  setStatus(status: Status): void {
    this.backend.statusSet(status.name, status.message, false);
  }

  /** The workload's version, shown by `status`. */
  setWorkloadVersion(version: string): void {
    this.backend.applicationVersionSet(version);
  }

  /** The unit's private address (`unit-get private-address`). */
  get address(): string {
    return this.backend.unitAddress('private');
  }

  /** Opens a port (a number is a TCP port). */
  openPort(port: Port | number): void {
    this.backend.openPort(formatPort(port));
  }

  closePort(port: Port | number): void {
    this.backend.closePort(formatPort(port));
  }

  openedPorts(): Port[] {
    return this.backend.openedPorts().map(parsePort);
  }

  /** Makes the opened ports exactly these: opens the missing, closes the others. */
  setPorts(ports: readonly (Port | number)[]): void {
    const want = new Set(ports.map(formatPort));
    const have = new Set(this.backend.openedPorts());
    for (const p of have) if (!want.has(p)) this.backend.closePort(p);
    for (const p of want) if (!have.has(p)) this.backend.openPort(p);
  }
}

/** This unit's application. */
export class Application {
  /** @internal */
  constructor(
    private readonly backend: ModelBackend,
    readonly name: string,
    private readonly leader: () => boolean,
  ) {}

  /** The application's status (leader only). */
  get status(): StatusInfo {
    return this.backend.statusGet(true);
  }

  /** Sets the application's status (leader only). */
  setStatus(status: Status): void {
    if (!this.leader()) throw new DataAccessError('only the leader may set the application status');
    this.backend.statusSet(status.name, status.message, true);
  }
}

/** Leader settings: every unit reads them, the leader alone writes (leader-get / leader-set). */
export class LeaderData {
  #data: Record<string, string> | undefined;

  /** @internal */
  constructor(
    private readonly backend: ModelBackend,
    private readonly leader: () => boolean,
  ) {}

  private get data(): Record<string, string> {
    this.#data ??= { ...this.backend.leaderGet() };
    return this.#data;
  }

  get(key: string): string | undefined {
    return Object.hasOwn(this.data, key) ? this.data[key] : undefined;
  }

  toObject(): Record<string, string> {
    return { ...this.data };
  }

  /** Sets keys (`undefined` or `''` deletes one); only changed keys are written. Leader only. */
  update(values: Record<string, string | undefined>): void {
    if (!this.leader()) throw new DataAccessError('only the leader may write leader data');
    const changes: Record<string, string> = {};
    for (const [k, v] of Object.entries(values)) if ((this.get(k) ?? '') !== (v ?? '')) changes[k] = v ?? '';
    if (Object.keys(changes).length === 0) return;
    this.backend.leaderSet(changes);
    for (const [k, v] of Object.entries(changes)) {
      if (v === '') delete this.data[k];
      else this.data[k] = v;
    }
  }

  set(key: string, value: string): void {
    this.update({ [key]: value });
  }
}

/** A Juju secret: content and metadata, and who may see it. */
export class Secret {
  /** @internal */
  constructor(
    private readonly backend: ModelBackend,
    private ref: SecretRef,
  ) {}

  /** The secret's URI (`secret:...`), when known. */
  get id(): string | undefined {
    return this.ref.id;
  }

  get label(): string | undefined {
    return this.ref.label;
  }

  /** The content at the revision this unit tracks; `refresh` moves to the latest, `peek` looks without moving. */
  content(opts: { refresh?: boolean; peek?: boolean } = {}): Record<string, string> {
    return this.backend.secretGet(this.ref, opts);
  }

  info(): SecretInfo {
    const info = this.backend.secretInfoGet(this.ref);
    this.ref = { ...this.ref, id: info.id };
    return info;
  }

  /** A new revision with this content (owner only). */
  setContent(content: Record<string, string>): void {
    this.backend.secretSet(this.requireId(), content, {});
  }

  /** Lets the other side of a relation (or one unit of it) read the secret. */
  grant(relation: Relation, unit?: string): void {
    this.backend.secretGrant(this.requireId(), relation.relationId, unit);
  }

  revoke(relation: Relation, unit?: string): void {
    this.backend.secretRevoke(this.requireId(), relation.relationId, unit);
  }

  /** Removes one revision, or the whole secret. */
  remove(revision?: number): void {
    this.backend.secretRemove(this.requireId(), revision);
  }

  private requireId(): string {
    if (this.ref.id) return this.ref.id;
    return this.info().id;
  }
}

/** Secrets this unit owns or has been granted. */
export class Secrets {
  /** @internal */
  constructor(private readonly backend: ModelBackend) {}

  /** A secret by id or label (its content is read on demand). */
  get(ref: SecretRef): Secret {
    if (!ref.id && !ref.label) throw new TypeError('a secret needs an id or a label');
    return new Secret(this.backend, ref);
  }

  /** Creates a secret owned by the application (leader only) or by this unit. */
  add(content: Record<string, string>, opts: SecretAddOptions = {}): Secret {
    const id = this.backend.secretAdd(content, opts);
    return new Secret(this.backend, { id, ...(opts.label ? { label: opts.label } : {}) });
  }

  /** The ids of the secrets this unit owns. */
  ids(): string[] {
    return this.backend.secretIds();
  }
}

/** juju-log at a level: it reaches the controller's log at once. */
export class Logger {
  /** @internal */
  constructor(private readonly backend: ModelBackend) {}

  debug(message: string): void {
    this.backend.log('DEBUG', message);
  }

  info(message: string): void {
    this.backend.log('INFO', message);
  }

  warning(message: string): void {
    this.backend.log('WARNING', message);
  }

  error(message: string): void {
    this.backend.log('ERROR', message);
  }
}
