// kv-web as a TypeScript charm on @charmflow/ops: a page that counts its visits
// in the related kv-store, and a `visits` action that reads the count.
//
// The kv interface, as this side (the requirer) sees it:
//   relation.localAppData   (leader writes)  database = config `database`
//   relation.localUnitData  (every unit)     client-address = our address
//   relation.remoteAppData  (we read)        username, password, database
//   relation.unitData(u)    (we read)        host, port of each kv-store unit
import { Charm, type Framework, type HookEvent, type Relation, run, Status } from '@charmflow/ops';
import type { Types } from './charm-types.ts';
import type { KvConnection } from './kv-client.ts';
import { NodeWorkload, type Workload } from './workload.ts';

const CREDENTIALS = ['username', 'password', 'database'] as const;

export class TsKvWebCharm extends Charm<Types> {
  /** Kept by the controller for this unit across hooks; saved only when a hook succeeds. */
  readonly stored = this.storedState({
    /** The start hook ran (and stop has not since). */
    started: false,
    /** The kv-store unit we talk to, kept while it stays. */
    kvUnit: '',
    /** Where the server was last started. */
    port: 0,
    address: '',
  });

  /** What collect-status sets at the end of the hook. */
  private verdict: Status | undefined;

  constructor(framework: Framework) {
    super(framework);
    this.on('install', () => this.onInstall());
    this.on('start', (e) => this.onStart(e));
    this.on('upgrade-charm', async (e) => {
      // New charm code may bring a new server: restart onto it.
      await this.workload.stop();
      await this.converge(e);
    });
    this.on('stop', () => this.onStop());
    this.on('remove', async () => {
      await this.workload.stop();
      this.workload.purge();
    });
    // Everything else converges on the relation data as it is now.
    for (const name of [
      'config-changed',
      'leader-elected',
      'update-status',
      'kv-relation-created',
      'kv-relation-joined',
      'kv-relation-changed',
      'kv-relation-departed',
      'kv-relation-broken',
    ] as const) {
      this.on(name, (e) => this.converge(e));
    }
    this.on('visits-action', async (e) => {
      const conn = this.workload.connection();
      if (!conn) {
        e.fail('not connected to a kv-store');
        return;
      }
      e.log(`asking kv-store at ${conn.host}:${conn.port}`);
      const value = await this.workload.readKey(conn, e.params.key);
      return { visits: Number(value ?? 0), database: conn.database, 'kv-store': `${conn.host}:${conn.port}` };
    });
    this.on('collect-unit-status', (e) => {
      if (this.verdict) e.add(this.verdict);
    });
  }

  /** The server process; the harness tests replace it with an in-memory one. */
  protected createWorkload(): Workload {
    return new NodeWorkload(this.charmDir, this.unit.name);
  }

  #workload: Workload | undefined;
  get workload(): Workload {
    this.#workload ??= this.createWorkload();
    return this.#workload;
  }

  private onInstall(): void {
    this.unit.setWorkloadVersion(process.versions.node);
    this.verdict = Status.maintenance('installed');
  }

  private async onStart(e: HookEvent): Promise<void> {
    this.stored.started = true;
    await this.converge(e);
  }

  private async onStop(): Promise<void> {
    await this.workload.stop();
    if (this.stored.port) this.unit.closePort(this.stored.port);
    Object.assign(this.stored, { started: false, port: 0, address: '' });
    this.verdict = Status.maintenance('stopped');
  }

  private async converge(_e: HookEvent): Promise<void> {
    // During relation-broken the relation is already left out, and during
    // relation-departed its units no longer list the departing one.
    const relation = this.relation('kv');
    let kvAt: string | null = null;
    if (relation) {
      // Only the leader may write the application bag.
      if (this.unit.isLeader()) relation.localAppData.update({ database: this.config.database });
      relation.localUnitData.update({ 'client-address': this.unit.address });
      kvAt = this.connect(relation);
    } else {
      this.forget();
    }

    const port = this.config.port;
    if (!(port > 0 && port < 65536)) {
      this.verdict = Status.blocked(`invalid port: ${port}`);
      return;
    }
    if (!this.stored.started) {
      this.verdict = Status.maintenance('waiting for start');
      return;
    }
    await this.ensureServing(port);
    this.verdict = !relation
      ? Status.blocked('needs a kv relation')
      : kvAt === null
        ? Status.waiting('waiting for kv-store credentials and address')
        : Status.active(`connected to kv-store at ${kvAt}`);
  }

  /** Writes the connection to use for the server; host:port, or null (and forgets) if there is none yet. */
  private connect(relation: Relation): string | null {
    const app = relation.remoteAppData;
    if (!app) {
      this.forget();
      return null;
    }
    const creds = Object.fromEntries(CREDENTIALS.map((k) => [k, app.get(k) ?? ''])) as Record<
      (typeof CREDENTIALS)[number],
      string
    >;
    const usable = relation.units.filter((u) => relation.unitData(u).get('host') && relation.unitData(u).get('port'));
    const chosen = usable.find((u) => u === this.stored.kvUnit) ?? usable[0];
    if (!chosen || !CREDENTIALS.every((k) => creds[k])) {
      this.forget();
      return null;
    }
    const bag = relation.unitData(chosen);
    const conn: KvConnection = { host: bag.get('host')!, port: bag.get('port')!, ...creds };
    this.workload.setConnection(conn);
    if (this.stored.kvUnit !== chosen) {
      this.stored.kvUnit = chosen;
      this.log.info(`using kv-store unit ${chosen} at ${conn.host}:${conn.port}`);
    }
    return `${conn.host}:${conn.port}`;
  }

  private forget(): void {
    this.workload.setConnection(null);
    this.stored.kvUnit = '';
  }

  /** Starts the server if it is down or its address or port changed; makes the opened port match. */
  private async ensureServing(port: number): Promise<void> {
    const address = this.unit.address;
    const { port: oldPort, address: oldAddress } = this.stored;
    if (!this.workload.running() || oldPort !== port || oldAddress !== address) {
      await this.workload.stop();
      this.unit.setStatus(Status.maintenance(`starting server on ${address}:${port}`));
      await this.workload.start(address, port);
      this.log.info(`server started on ${address}:${port}`);
    }
    this.unit.setPorts([port]);
    Object.assign(this.stored, { port, address });
  }
}

run(TsKvWebCharm);
