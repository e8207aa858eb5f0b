// Running one hook on a unit's machine: build the context snapshot from the model
// store, exec the machine-side runner, stream status and logs into the store while
// the hook runs, and commit what the hook wrote, atomically and only on success.
import { Context, log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { sql } from 'kysely';
import { charmTarball } from '../charm/charm-archive.ts';
import { getCharm, getCharmInfo } from '../charm/charm-store.ts';
import { effectiveConfig } from '../charm/config-values.ts';
import { HookContext, HookEvent, type HookResult, type RelationSnapshot } from '../charm/hook-protocol.ts';
import type { CharmMeta } from '../charm/metadata.ts';
import type { ActionOutcome, ApplicationRow, MachineRow, ModelRow, UnitRow } from '../store/schema.ts';
import type { SecretBox } from '../store/secret-box.ts';
import type { Db, Tx } from '../store/store.ts';
import type { UnitEvent, UnitRef } from '../workflows/messages.ts';
import {
  applySecretOps,
  followSecretCommit,
  type SecretCommit,
  secretSeenBy,
  secretsContext,
} from './charm-secrets.ts';
import type { ActivityDeps } from './deps.ts';
import { createKubernetesProvider, kubernetesModel } from './kubernetes-provider.ts';
import { createMachineActivities } from './machine-activities.ts';
import { machineTarget, unitPaths } from './machine-target.ts';
import {
  dropApplicationIntegrations,
  electLeader,
  enqueueOnUnits,
  markBagsDeparted,
  relatedApps,
  relationSnapshots,
  wakeUnits,
} from './relation-activities.ts';
import { substrateFor } from './substrates/index.ts';
import { shellQuote } from './substrates/machine-shell.ts';
import { KEPT_OUTPUT_BYTES, OutputTail } from './substrates/output-tail.ts';
import { HostKeyMismatchError, type MachineTarget, MachineUnreachableError } from './substrates/substrate.ts';
import {
  appendLogs,
  type LogLine,
  setAgentStatus,
  setApplicationStatus,
  setMachineStatus,
  setWorkloadStatus,
} from './unit-status.ts';

export interface HookOutcome {
  ok: boolean;
  skipped: boolean;
  /** The unit no longer exists (removed by force): the agent should stop. */
  gone: boolean;
  message: string;
  /**
   * A relation hook: the version of each data bag of its relation the hook read
   * (owner → version). The agent counts them as told, so a commit the hook already
   * saw brings no second relation-changed.
   */
  read?: Record<string, number>;
}

/** One hook for a unit, with the id its execution keeps across retries. */
export interface HookRun {
  event: UnitEvent;
  contextId: string;
}

export interface UnitWorld {
  model: ModelRow;
  app: ApplicationRow;
  unit: UnitRow;
  machine: MachineRow;
  meta: CharmMeta;
  /** Workload status of every unit of the application (status-get --application): the leader's only. */
  siblings: Record<string, { status: string; message: string }>;
  /** The application's unit names (for a unit that is not the leader). */
  siblingNames: string[];
  /** Whether the unit owns or is granted any charm secret (its hooks read them only then). */
  secretive: boolean;
  /** Whether the application is in any relation (peers included). */
  related: boolean;
}

// Charm revisions never change, so their metadata is read once per process (and store).
const metaCache = new Map<string, CharmMeta>();

// ...and the tarball shipped to each unit is built once for all units deploying it
// at the same time: the few most recent revisions, at most 64 MB in all.
const TARBALL_CACHE_BYTES = 64 * 1024 * 1024;
const tarballCache = new Map<string, Promise<Buffer>>();
const tarballSizes = new Map<string, number>();

/**
 * Names a store: a charm revision is the same everywhere in one store, but two
 * stores (two controllers in one process, as tests run them) may hold different
 * charms under one name and revision.
 */
const storeIds = new WeakMap<Db, number>();
let storesSeen = 0;
function storeId(db: Db): number {
  let id = storeIds.get(db);
  if (id === undefined) {
    id = ++storesSeen;
    storeIds.set(db, id);
  }
  return id;
}

function charmTarballFor(db: Db, name: string, revision: number): Promise<Buffer> {
  const key = `${storeId(db)}:${name}:${revision}`;
  const hit = tarballCache.get(key);
  if (hit) {
    tarballCache.delete(key); // most recently used goes last
    tarballCache.set(key, hit);
    return hit;
  }
  const load = (async () => {
    const charm = await getCharm(db, name, revision);
    if (!charm) throw new Error(`charm ${name} revision ${revision} is gone`);
    return charmTarball(charm.files);
  })();
  tarballCache.set(key, load);
  load.then(
    (tar) => {
      tarballSizes.set(key, tar.length);
      let total = [...tarballSizes.values()].reduce((a, b) => a + b, 0);
      for (const old of tarballCache.keys()) {
        if (total <= TARBALL_CACHE_BYTES || old === key) break;
        total -= tarballSizes.get(old) ?? 0;
        tarballCache.delete(old);
        tarballSizes.delete(old);
      }
    },
    () => tarballCache.delete(key),
  );
  return load;
}

interface WorldRow {
  unit: UnitRow;
  app: ApplicationRow;
  model: ModelRow;
  machine: MachineRow;
  siblings: UnitWorld['siblings'] | null;
  secretive: boolean;
  related: boolean;
}

/**
 * The application's unit names, by which set they are: the store gives an
 * application's `unit_set` a fresh serial in the statement that adds or removes any
 * of its units, and when the application's row is inserted (migration 017). A hook
 * of a unit that is not the leader reads that number with its application's row,
 * and the names only when the set changed.
 */
const siblingNamesCache = new Map<string, string[]>();
const SIBLING_SETS_KEPT = 256;

function siblingsKey(db: Db, app: ApplicationRow, unitSet: number): string {
  return `${storeId(db)}:${app.model_uuid}:${app.name}:${unitSet}`;
}

async function siblingNames(db: Db, app: ApplicationRow): Promise<string[]> {
  const known = siblingNamesCache.get(siblingsKey(db, app, app.unit_set));
  if (known) return known;
  // the serial and the names in one read: what is kept is what that set holds, even if it changed since the hook's
  const { rows } = await sql<{ unit_set: number; names: string[] | null }>`
    SELECT a.unit_set, (SELECT json_agg(u.name ORDER BY u.number) FROM units u
      WHERE u.model_uuid = a.model_uuid AND u.application = a.name) AS names
    FROM applications a WHERE a.model_uuid = ${app.model_uuid} AND a.name = ${app.name}`.execute(db);
  const row = rows[0];
  if (!row) return []; // the application is gone
  const names = row.names ?? [];
  if (siblingNamesCache.size >= SIBLING_SETS_KEPT) {
    siblingNamesCache.delete(siblingNamesCache.keys().next().value as string);
  }
  siblingNamesCache.set(siblingsKey(db, app, row.unit_set), names);
  return names;
}

/**
 * The unit with its application, model and machine, whether it has relations, and its
 * siblings: their statuses for the leader (status-get --application); the others
 * get the names (goal-state) from siblingNames, read once per set of units, so a hook
 * of a big application neither carries every unit's status nor reads every unit
 * (each hook would grow with the application: O(n²) in all).
 */
function worldQuery(ref: UnitRef) {
  return sql<WorldRow>`
    SELECT to_jsonb(u) AS unit, to_jsonb(a) AS app, to_jsonb(m) AS model, to_jsonb(mc) AS machine,
      CASE WHEN u.leader THEN
        (SELECT jsonb_object_agg(s.name, jsonb_build_object('status', s.workload_status, 'message', s.workload_message))
          FROM units s WHERE s.model_uuid = u.model_uuid AND s.application = u.application)
      END AS siblings,
      EXISTS (SELECT 1 FROM integration_endpoints ie
        WHERE ie.model_uuid = u.model_uuid AND ie.application = u.application) AS related,
      EXISTS (SELECT 1 FROM charm_secrets s
        WHERE ${secretSeenBy(sql.ref('u.model_uuid'), sql.ref('u.application'), sql.ref('u.name'))}) AS secretive
    FROM units u
    JOIN applications a ON a.model_uuid = u.model_uuid AND a.name = u.application
    JOIN models m ON m.uuid = u.model_uuid
    JOIN machines mc ON mc.model_uuid = u.model_uuid AND mc.id = u.machine_id
    WHERE u.model_uuid = ${ref.modelUuid} AND u.name = ${ref.unit}`;
}

async function toWorld(db: Db, row: WorldRow): Promise<UnitWorld> {
  // a unit a rolling refresh moved runs its own revision of the charm
  const app = row.unit.charm_revision != null ? { ...row.app, charm_revision: row.unit.charm_revision } : row.app;
  const key = `${storeId(db)}:${app.charm_name}:${app.charm_revision}`;
  let meta = metaCache.get(key);
  if (!meta) {
    const charm = await getCharmInfo(db, app.charm_name, app.charm_revision);
    if (!charm) throw new Error(`charm ${app.charm_name} revision ${app.charm_revision} is gone`);
    meta = charm.meta;
    metaCache.set(key, meta);
  }
  return {
    model: row.model,
    app,
    unit: row.unit,
    machine: row.machine,
    meta,
    siblings: row.siblings ?? {},
    siblingNames: row.unit.leader ? [] : await siblingNames(db, row.app),
    secretive: row.secretive,
    related: row.related,
  };
}

async function loadWorld(db: Db, ref: UnitRef): Promise<UnitWorld | null> {
  const { rows } = await worldQuery(ref).execute(db);
  return rows[0] ? toWorld(db, rows[0]) : null;
}

/** The hook's own relation lists the remote units as the unit knows them at this hook (Juju's relation-list). */
function asKnown(relations: RelationSnapshot[], ev: UnitEvent): RelationSnapshot[] {
  if (ev.relationId === undefined || ev.members === undefined) return relations;
  const members = ev.members;
  return relations.map((r) => (r.id === ev.relationId ? { ...r, units: members } : r));
}

function hookEnvRelation(ev: UnitEvent): HookContext['relation'] {
  if (ev.relationId === undefined) return undefined;
  return {
    id: ev.relationId,
    ...(ev.remoteUnit ? { remoteUnit: ev.remoteUnit } : {}),
    ...(ev.remoteApp ? { remoteApp: ev.remoteApp } : {}),
    ...(ev.departingUnit ? { departingUnit: ev.departingUnit } : {}),
  };
}

async function buildContext(
  db: Db,
  world: UnitWorld,
  ev: UnitEvent,
  contextId: string,
  secrets: SecretBox,
  /** Filled with the data bag versions the snapshot holds, by relation id. */
  versions?: Map<number, Record<string, number>>,
): Promise<HookContext> {
  const paths = unitPaths(world.machine.root_dir, world.unit.name);
  const action = ev.action ? await actionOf(db, ev.action.operationId) : undefined;
  return HookContext.parse({
    contextId,
    kind: action ? 'action' : 'hook',
    name: ev.hook,
    ...(action ? { action } : {}),
    unit: world.unit.name,
    application: world.app.name,
    model: { name: world.model.name, uuid: world.model.uuid },
    machineId: world.machine.id,
    availabilityZone: '',
    charmDir: paths.charmDir,
    unitDir: paths.unitDir,
    toolsDir: paths.toolsDir,
    // the one place a secret config value is opened: the hook's own context
    config: effectiveConfig(world.meta.config.options, secrets.openConfig(world.app.config, world.meta.config.options)),
    isLeader: world.unit.leader,
    leaderSettings: world.app.leader_settings,
    relations: world.related
      ? asKnown(await relationSnapshots(db, world.model.uuid, world.app.name, world.unit.name, versions), ev)
      : [],
    relation: hookEnvRelation(ev),
    privateAddress: world.machine.address,
    publicAddress: world.machine.address,
    ports: world.unit.ports,
    unitStatus: { status: world.unit.workload_status, message: world.unit.workload_message },
    applicationStatus: { status: world.app.status, message: world.app.message },
    unitStatuses: world.siblings,
    applicationUnits: world.siblingNames,
    charmState: world.unit.charm_state,
    ...(await secretsContext(db, secrets, subjectOf(world), contextId, ev.secret, world.secretive)),
  });
}

function subjectOf(world: UnitWorld) {
  return { modelUuid: world.model.uuid, application: world.app.name, unit: world.unit.name, leader: world.unit.leader };
}

/** The params an action runs with, from its operation (they never travel through a workflow history). */
async function actionOf(db: Db, operationId: number): Promise<{ id: string; params: Record<string, unknown> }> {
  const op = await db.selectFrom('operations').select(['params']).where('id', '=', operationId).executeTakeFirst();
  const params = (op?.params as { params?: Record<string, unknown> } | undefined)?.params ?? {};
  return { id: String(operationId), params };
}

/** Records how an action run ended, in its operation's row. */
export async function recordActionOutcome(
  db: Db | Tx,
  operationId: number,
  outcome: Omit<ActionOutcome, 'log'> & { log?: ActionOutcome['log'] },
): Promise<void> {
  await db
    .updateTable('operations')
    .set({ results: JSON.stringify({ log: [], ...outcome }), updated_at: sql`now()` })
    .where('id', '=', operationId)
    .execute();
}

/** A hook's settings writes as a JSON patch: keys to set, keys to delete (empty or null). */
function settingsPatch(changes: Record<string, string | null>): { set: string; del: string } {
  const set: Record<string, string> = {};
  const del: string[] = [];
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === '') del.push(k);
    else set[k] = v;
  }
  return { set: JSON.stringify(set), del: JSON.stringify(del) };
}

/** `settings` with a patch applied, in SQL: merged in place, no read first. */
function patched(column: ReturnType<typeof sql.ref>, changes: Record<string, string | null>) {
  const { set, del } = settingsPatch(changes);
  return sql<string>`(coalesce(${column}, '{}'::jsonb) || ${set}::jsonb) - ARRAY(SELECT jsonb_array_elements_text(${del}::jsonb))`;
}

/**
 * The commit: everything the hook wrote, atomically, only after exit 0. The run is
 * marked committed, the unit's state and ports are written and its agent goes idle
 * in one statement; a retried activity whose first attempt already committed only
 * sets the agent idle. Leader and relation data, when the hook wrote any, go in the
 * same transaction.
 */
export async function commitRun(
  db: Db,
  world: UnitWorld,
  ev: UnitEvent,
  contextId: string,
  result: HookResult,
  /** Opens what the hook did to secrets (needed only when it did any). */
  secrets?: SecretBox,
): Promise<SecretCommit | undefined> {
  const uuid = world.model.uuid;
  const unit = world.unit;
  const changes = result.changes;
  const { duration_ms, lock_wait_ms } = timings(result);
  const commitUnit = (conn: Db | Tx) =>
    sql<{ committed: boolean }>`
      WITH run AS (
        UPDATE hook_runs SET exit_code = 0, committed = true, finished_at = now(),
          duration_ms = ${duration_ms}, lock_wait_ms = ${lock_wait_ms}
        WHERE context_id = ${contextId} AND committed = false
        RETURNING 1),
      changed AS (
        UPDATE units SET
          ports = CASE WHEN EXISTS (SELECT 1 FROM run) THEN ${JSON.stringify(changes.ports)}::jsonb ELSE ports END,
          charm_state = CASE WHEN EXISTS (SELECT 1 FROM run)
            THEN ${patched(sql.ref('charm_state'), changes.charmState)} ELSE charm_state END,
          last_hook = ${ev.hook},
          installed = installed OR ${ev.hook === 'install'},
          agent_status = 'idle', agent_message = ''
        WHERE model_uuid = ${uuid} AND name = ${unit.name}
        RETURNING 1),
      history AS (
        INSERT INTO status_history (model_uuid, entity, kind, status, message)
        SELECT ${uuid}, ${unit.name}, 'agent', 'idle', '' FROM changed
        RETURNING 1)
      SELECT EXISTS (SELECT 1 FROM run) AS committed`.execute(conn);
  const leaderWrites = unit.leader && Object.keys(changes.leaderSettings).length > 0;
  const relationWrites = Object.keys(changes.relationSettings).length > 0;
  // (a result from before secrets has none)
  const secretOps = changes.secretOps ?? [];
  const secretWrites = secretOps.length > 0;
  if (!leaderWrites && !relationWrites && !secretWrites) {
    await commitUnit(db);
    return;
  }
  return await db.transaction().execute(async (tx) => {
    const { rows } = await commitUnit(tx);
    if (!rows[0]?.committed) return;
    let secretCommit: SecretCommit | undefined;
    if (secretWrites) {
      if (!secrets) throw new Error('a hook changed secrets, but no secret box was given to commit them');
      secretCommit = await applySecretOps(tx, secrets, subjectOf(world), contextId, secretOps);
    }
    if (leaderWrites) {
      await tx
        .updateTable('applications')
        .set({ leader_settings: patched(sql.ref('leader_settings'), changes.leaderSettings) })
        .where('model_uuid', '=', uuid)
        .where('name', '=', world.app.name)
        .execute();
    }
    for (const [rid, bag] of Object.entries(changes.relationSettings)) {
      const writes: [string, Record<string, string | null> | undefined][] = [
        [unit.name, bag.unit],
        [world.app.name, unit.leader ? bag.app : undefined],
      ];
      for (const [owner, settings] of writes) {
        if (!settings || Object.keys(settings).length === 0) continue;
        // a relation removed meanwhile takes nothing; a write that changes the bag
        // bumps its version, which is what brings the remote units' relation-changed
        // (rewriting the same values, as charms do in every hook, brings none)
        await sql`
          INSERT INTO relation_data (integration_id, model_uuid, owner, settings)
          SELECT ${Number(rid)}, ${uuid}, ${owner}, ${patched(sql`'{}'::jsonb`, settings)}
          WHERE EXISTS (SELECT 1 FROM integrations WHERE id = ${Number(rid)})
          ON CONFLICT (integration_id, model_uuid, owner) DO UPDATE SET
            settings = ${patched(sql.ref('relation_data.settings'), settings)},
            version = relation_data.version +
              CASE WHEN ${patched(sql.ref('relation_data.settings'), settings)} = relation_data.settings THEN 0 ELSE 1 END`.execute(
          tx,
        );
      }
    }
    return secretCommit;
  });
}

/** Splits a byte stream into lines. */
class LineSplitter {
  private rest = '';
  push(chunk: Buffer, onLine: (line: string) => void): void {
    const text = this.rest + chunk.toString('utf8');
    const lines = text.split('\n');
    this.rest = lines.pop() ?? '';
    for (const l of lines) if (l.length > 0) onLine(l);
  }
}

/** What the machine measured, kept with the run (a replayed result carries the stored figures). */
function timings(result: HookResult) {
  return { duration_ms: Math.round(result.durationMs), lock_wait_ms: Math.round(result.lockWaitMs ?? 0) };
}

const noop = () => {};

/** What a unit runs when its machine was made again (a pod its StatefulSet made anew). */
const RESTART_HOOKS = ['upgrade-charm', 'config-changed', 'start'];

interface Replaced {
  machineId: string;
  /** The new machine's incarnation (the substrate's, `pod:<uid>`). */
  incarnation: string;
}

const LEVELS = new Set(['TRACE', 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL']);

const NO_NODE_EXIT = 73;

/**
 * A TypeScript charm (its dispatch, written by `charmflow pack`, says so) runs
 * with Node.js: before its first hook the machine gets the distro's nodejs if
 * node is missing, or the unit goes into error saying why it could not.
 */
function ensureNodeForTsCharm(charmDir: string): string {
  const why =
    'this charm is written in TypeScript and needs Node.js, but node is not on the machine and the distro package nodejs could not be installed';
  return `if grep -qs '^# charmflow-runtime: node$' ${shellQuote(`${charmDir}/dispatch`)}; then
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  if ! command -v node >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then why='not root'
    elif ! command -v apt-get >/dev/null 2>&1; then why='no apt-get'
    elif out="$(export DEBIAN_FRONTEND=noninteractive; { apt-get install -y -q nodejs || { apt-get update -q && apt-get install -y -q nodejs; }; } 2>&1)"; then why=''
    else why="apt-get: $(printf '%s' "$out" | tail -n 2 | tr '\\n' ' ')"; fi
    command -v node >/dev/null 2>&1 || { echo "${why} ($why)" >&2; exit ${NO_NODE_EXIT}; }
  fi
fi`;
}

export function createHookActivities(deps: ActivityDeps) {
  const { store } = deps;
  const db = store.db;
  const kubernetes = createKubernetesProvider(deps);
  const machines = createMachineActivities(deps);

  async function targetFor(machine: MachineRow): Promise<MachineTarget> {
    return machineTarget(machine, deps.controllerKey, store.secrets);
  }

  // Where each unit's runner was last started (see runOne).
  interface RunnerPlace {
    target: MachineTarget;
    runner: string;
    identity: string;
  }
  const runners = new Map<string, RunnerPlace>();
  const runnerKey = (modelUuid: string, unit: string) => `${modelUuid}/${unit}`;
  function rememberRunner(world: UnitWorld) {
    const target = machineTarget(world.machine, deps.controllerKey, store.secrets);
    const runner = unitPaths(world.machine.root_dir, world.unit.name).runner;
    const where = { target, runner, identity: JSON.stringify([target, runner]) };
    runners.set(runnerKey(world.model.uuid, world.unit.name), where);
    return where;
  }

  /**
   * A machine whose host key changed is refused: it goes into error and nothing
   * retries it. An unreachable one is marked too, but retried: it may come back.
   */
  async function guardMachine<T>(machine: MachineRow, fn: () => Promise<T>): Promise<T> {
    try {
      const out = await fn();
      if (machine.state === 'error' && machine.message.startsWith('cannot reach')) {
        await setMachineStatus(db, machine, 'started', '');
      }
      return out;
    } catch (err) {
      if (err instanceof HostKeyMismatchError) {
        await setMachineStatus(db, machine, 'error', err.message);
        throw ApplicationFailure.nonRetryable(err.message, 'HostKeyMismatch');
      }
      if (err instanceof MachineUnreachableError) {
        await setMachineStatus(db, machine, 'error', err.message);
        throw ApplicationFailure.retryable(err.message, 'MachineUnreachable');
      }
      throw err;
    }
  }

  /**
   * One runner on a unit's machine that runs the unit's hooks one after another, each
   * given its context on stdin (one line) once the controller has built it; an empty
   * line ends it. Each hook still has its own supervisor and execution dir there, so
   * each is exactly-once on its own, as with a runner per hook; what is saved is the
   * interpreter's start-up and a channel per hook. The runner starts before the first
   * context is known, so the channel and the interpreter start while the store is read.
   * Its events go into the store as they come, as the running hook's: the earliest one
   * given whose result has not come yet.
   */
  class RunnerSession {
    readonly identity: string;
    /** Resolves once the exec request is out (or the runner ended). */
    readonly started: Promise<void>;
    /** False once the runner ended or was closed: no more hooks go to it. */
    alive = true;
    private readonly reserved: RunnerSlot[] = [];
    private readonly sent: RunnerSlot[] = [];
    private closing = false;
    private wake = noop;
    private logBuffer: LogLine[] = [];
    private pending: Promise<void> = Promise.resolve();
    private readonly timer: NodeJS.Timeout;
    private readonly stderr = new OutputTail(KEPT_OUTPUT_BYTES);
    private readonly activity = Context.current();

    constructor(
      place: RunnerPlace,
      private readonly ref: UnitRef,
    ) {
      this.identity = place.identity;
      const activity = this.activity;
      let markOut = noop;
      const out = new Promise<void>((r) => {
        markOut = r;
      });
      const splitter = new LineSplitter();
      const exec = substrateFor(deps.substrates, place.target).exec(place.target, {
        command: `python3 -S ${shellQuote(place.runner)}`,
        stdin: this.feed(),
        onStarted: markOut,
        onStdout: (chunk) => splitter.push(chunk, (line) => this.handle(line)),
        onStderr: (chunk) => this.stderr.push(chunk),
        signal: activity.cancellationSignal,
      });
      // heartbeats (and log flushes) while a hook runs
      this.timer = setInterval(() => {
        if (this.sent.some((s) => !s.settled)) {
          this.flushLogs();
          activity.heartbeat();
        }
      }, 1000);
      // the exec's own failure (host key changed, machine unreachable) is the hooks' failure
      const ended = exec.then(
        (r) => this.ended(r.code),
        (err: unknown) => this.ended(null, err instanceof Error ? err : undefined),
      );
      this.started = Promise.race([out, ended]);
    }

    /** A place in line for the unit's next hook. */
    reserve(hook: string): RunnerSlot {
      const slot = new RunnerSlot(this, hook);
      if (!this.alive) slot.fail(this.lost(hook, null));
      else this.reserved.push(slot);
      this.wake();
      return slot;
    }

    /** No more hooks: the runner ends after those whose context went. */
    close(): void {
      this.closing = true;
      this.alive = false;
      for (const slot of this.reserved) if (!slot.settled && !slot.given) slot.skip();
      if (this.sent.every((s) => s.settled)) clearInterval(this.timer);
      this.wake();
    }

    /** Wakes the feed: a slot was decided, or the session closes. */
    poke(): void {
      this.wake();
    }

    private async *feed(): AsyncGenerator<string> {
      let next = 0;
      while (true) {
        while (next >= this.reserved.length && !this.closing) {
          await new Promise<void>((r) => {
            this.wake = r;
          });
        }
        if (next >= this.reserved.length) break;
        const slot = this.reserved[next];
        const context = await slot.decided;
        next++;
        if (context === undefined) continue; // not run after all (finished before, unit gone)
        this.sent.push(slot);
        yield `${context}\n`;
      }
      yield '\n';
    }

    private handle(line: string): void {
      const slot = this.sent.find((s) => !s.settled);
      const hook = slot?.hook ?? 'hook';
      let parsed: HookEvent;
      try {
        parsed = HookEvent.parse(JSON.parse(line));
      } catch {
        this.logBuffer.push({ level: 'WARNING', message: `${hook}: (runner) ${line}` });
        return;
      }
      const { ref } = this;
      const app = ref.unit.split('/')[0];
      switch (parsed.type) {
        case 'log':
          this.logBuffer.push({
            level: LEVELS.has(parsed.level) ? parsed.level : 'INFO',
            message: parsed.message,
            at: new Date(parsed.ts),
          });
          break;
        case 'action-log':
          this.logBuffer.push({ level: 'INFO', message: parsed.message, at: new Date(parsed.ts) });
          slot?.actionLog.push({ at: new Date(parsed.ts).toISOString(), message: parsed.message });
          break;
        case 'output':
          this.logBuffer.push({
            level: parsed.stream === 'stderr' ? 'WARNING' : 'DEBUG',
            message: `${hook}: ${parsed.line}`,
            at: new Date(parsed.ts),
          });
          break;
        case 'status': {
          // status-set takes effect at once, while the hook still runs
          this.flushLogs();
          const { scope, status, message } = parsed;
          this.pending = this.pending.then(() =>
            scope === 'application'
              ? setApplicationStatus(db, ref.modelUuid, app, status, message)
              : setWorkloadStatus(db, ref.modelUuid, ref.unit, status, message),
          );
          break;
        }
        case 'app-version': {
          const version = parsed.version;
          this.pending = this.pending.then(async () => {
            await db
              .updateTable('applications')
              .set({ workload_version: version })
              .where('model_uuid', '=', ref.modelUuid)
              .where('name', '=', app)
              .execute();
          });
          break;
        }
        case 'result': {
          if (!slot) break;
          // the hook's logs and statuses are in the store before its result is answered
          this.flushLogs();
          const written = this.pending;
          this.pending = written.catch(noop);
          slot.settle(written.then(() => Object.assign(parsed, { actionLog: slot.actionLog })));
          if (this.closing && this.sent.every((s) => s.settled)) clearInterval(this.timer);
          break;
        }
      }
      // No heartbeat per line: the timer above beats once a second while a hook runs.
      // The SDK sends an activity's first heartbeat at once, so a beat here cost every
      // unit's quick hooks a round trip through the dev server's store (1 per unit).
    }

    private flushLogs(): void {
      if (this.logBuffer.length === 0) return;
      const lines = this.logBuffer.splice(0);
      const { ref } = this;
      this.pending = this.pending.then(() => appendLogs(db, ref.modelUuid, ref.unit, lines));
    }

    /** The channel died or the runner exited: the hooks still waiting cannot get a result from it. */
    private ended(code: number | null, err?: Error): void {
      this.alive = false;
      this.closing = true;
      clearInterval(this.timer);
      this.flushLogs();
      for (const slot of [...this.sent, ...this.reserved]) {
        if (!slot.settled) slot.fail(err ?? this.lost(slot.hook, code));
      }
      this.wake();
    }

    private lost(hook: string, code: number | null): Error {
      // The hook itself goes on under its supervisor on the machine; a retry of the
      // activity attaches to it.
      const why = code == null ? 'the connection to the machine was lost' : `runner exited ${code}`;
      return ApplicationFailure.retryable(
        `${why} during ${hook} on ${this.ref.unit}: ${this.stderr.text().trim().slice(-500)}`,
        'RunnerLost',
      );
    }
  }

  /** A hook's place in a runner session: given its context, or skipped. */
  class RunnerSlot {
    readonly actionLog: ActionOutcome['log'] = [];
    readonly result: Promise<HookResult>;
    /** Its context was handed over. */
    given = false;
    settled = false;
    private decide: (context: string | undefined) => void = noop;
    readonly decided = new Promise<string | undefined>((r) => {
      this.decide = r;
    });
    private answer: (r: Promise<HookResult>) => void = noop;

    constructor(
      readonly session: RunnerSession,
      readonly hook: string,
    ) {
      this.result = new Promise<HookResult>((resolve) => {
        this.answer = resolve;
      });
      this.result.catch(noop); // a slot given up on is not waited for
    }

    give(context: string): void {
      this.given = true;
      this.decide(context);
      this.session.poke();
    }

    /** Not run after all: the runner goes on to the next hook. */
    skip(): void {
      this.settled = true;
      this.decide(undefined);
      this.session.poke();
    }

    settle(result: Promise<HookResult>): void {
      this.settled = true;
      this.answer(result);
    }

    fail(err: Error): void {
      this.settled = true;
      this.decide(undefined);
      this.answer(Promise.reject(err));
    }
  }

  /**
   * The runner sessions of one call: one at a time, started where the unit's runner
   * last ran before any hook's context is known, and started again where the unit's
   * machine now is when that changed or the last one ended.
   */
  class UnitRunners {
    private session: RunnerSession | undefined;
    constructor(private readonly ref: UnitRef) {}

    /** Starts a runner where the unit's last hook ran, if known, for the hooks to come. */
    warm(): void {
      if (this.session?.alive) return;
      const known = runners.get(runnerKey(this.ref.modelUuid, this.ref.unit));
      if (known) this.session = new RunnerSession(known, this.ref);
    }

    /** A place for the next hook on the running session (if any). */
    reserve(hook: string): RunnerSlot | undefined {
      return this.session?.alive ? this.session.reserve(hook) : undefined;
    }

    /** The hook's context, on `slot` when it runs where the hook must, else on a new runner there. */
    run(slot: RunnerSlot | undefined, place: RunnerPlace, hook: string, context: string): Promise<HookResult> {
      if (slot && slot.session === this.session && this.session.alive && this.session.identity === place.identity) {
        slot.give(context);
        return slot.result;
      }
      // the machine's record changed under us (new key, address), or the runner ended: start afresh
      slot?.skip();
      this.session?.close();
      this.session = new RunnerSession(place, this.ref);
      const fresh = this.session.reserve(hook);
      fresh.give(context);
      return fresh.result;
    }

    close(): void {
      this.session?.close();
      this.session = undefined;
    }
  }

  /** Runs one hook: context in, the runner on the machine, commit on success. */
  async function runOne(
    ref: UnitRef,
    ev: UnitEvent,
    contextId: string,
    unitRunners: UnitRunners,
  ): Promise<HookOutcome> {
    const startedAt = new Date();
    const slot = unitRunners.reserve(ev.hook);
    // The store's statements hold the event loop while they run: let the runner's
    // exec request go out first, so it starts while they do.
    if (slot) await slot.session.started;
    const withdraw = () => slot?.skip();

    // One statement reads the unit's world, records the run and marks the agent
    // executing. A run an earlier attempt recorded as finished is reported as it
    // ended, never run again; a unit that is gone records nothing.
    const executing = `running ${ev.hook} hook`;
    const versions = new Map<number, Record<string, number>>();
    let world: UnitWorld;
    let ctx: HookContext;
    try {
      const { rows } = await sql<WorldRow & { finished: boolean; exit_code: number | null }>`
        WITH world AS (${worldQuery(ref)}),
        run AS (
          INSERT INTO hook_runs (context_id, model_uuid, unit, hook, started_at)
          SELECT ${contextId}, ${ref.modelUuid}, ${ref.unit}, ${ev.hook}, ${startedAt.toISOString()}::timestamptz
          WHERE EXISTS (SELECT 1 FROM world)
          ON CONFLICT (context_id) DO NOTHING
          RETURNING 1),
        prior AS (
          SELECT finished_at, exit_code FROM hook_runs WHERE context_id = ${contextId}),
        changed AS (
          UPDATE units SET agent_status = 'executing', agent_message = ${executing}
          WHERE model_uuid = ${ref.modelUuid} AND name = ${ref.unit}
            AND NOT EXISTS (SELECT 1 FROM prior WHERE finished_at IS NOT NULL)
          RETURNING 1),
        history AS (
          INSERT INTO status_history (model_uuid, entity, kind, status, message)
          SELECT ${ref.modelUuid}, ${ref.unit}, 'agent', 'executing', ${executing} FROM changed
          RETURNING 1)
        SELECT world.*, EXISTS (SELECT 1 FROM prior WHERE finished_at IS NOT NULL) AS finished,
          (SELECT exit_code FROM prior) AS exit_code
        FROM world`.execute(db);
      const row = rows[0];
      if (!row) {
        withdraw();
        runners.delete(runnerKey(ref.modelUuid, ref.unit));
        return { ok: true, skipped: true, gone: true, message: 'unit removed' };
      }
      if (row.finished) {
        withdraw();
        // an action's outcome is in its operation already; it never fails the agent
        if (ev.action) return { ok: true, skipped: false, gone: false, message: '' };
        const ok = row.exit_code === 0;
        return { ok, skipped: false, gone: false, message: ok ? '' : `hook failed: "${ev.hook}"` };
      }
      world = await toWorld(db, row);
      ctx = await buildContext(db, world, ev, contextId, store.secrets, versions);
    } catch (err) {
      withdraw();
      throw err;
    }
    const where = rememberRunner(world);
    const running = unitRunners.run(slot, where, ev.hook, JSON.stringify(ctx));
    const result = await guardMachine(world.machine, () => running);
    const ok = result.exitCode === 0 && !result.timedOut;
    if (ev.action)
      return finishAction(world, ev, contextId, result as HookResult & { actionLog?: ActionOutcome['log'] });
    if (ok) {
      const secretCommit = await commitRun(db, world, ev, contextId, result, store.secrets);
      await wakeAfterCommit(world, ev, result, secretCommit);
      await followPorts(world, result);
      const read = ev.relationId !== undefined ? versions.get(ev.relationId) : undefined;
      return { ok: true, skipped: result.skipped, gone: false, message: '', ...(read ? { read } : {}) };
    }
    const reason = result.timedOut ? 'timed out' : `exit code ${result.exitCode}`;
    const message = `hook failed: "${ev.hook}"`;
    await db.transaction().execute(async (tx) => {
      await tx
        .updateTable('hook_runs')
        .set({ exit_code: result.exitCode ?? -1, finished_at: sql`now()`, ...timings(result) })
        .where('context_id', '=', contextId)
        .execute();
      await tx
        .updateTable('units')
        .set({ last_hook: ev.hook })
        .where('model_uuid', '=', ref.modelUuid)
        .where('name', '=', ref.unit)
        .execute();
      await setWorkloadStatus(tx, ref.modelUuid, ref.unit, 'error', message, {
        hook: ev.hook,
        reason,
        tail: result.tail,
      });
      await setAgentStatus(tx, ref.modelUuid, ref.unit, 'idle', '');
      await appendLogs(tx, ref.modelUuid, ref.unit, [
        { level: 'ERROR', message: `${ev.hook} hook failed (${reason}); last output:\n${result.tail.join('\n')}` },
      ]);
    });
    return { ok: false, skipped: false, gone: false, message: `${message} (${reason})` };
  }

  /**
   * Tells the units a commit concerns: the remote units of each relation whose
   * data the hook changed, every related unit when the unit has just installed
   * (it joins its relations), and the application's other units when the leader
   * changed leader data (leader-settings-changed). Best effort: a wake lost to a
   * dying worker is made up by the agents' periodic look at their relations.
   */
  async function followPorts(world: UnitWorld, result: HookResult): Promise<void> {
    if (world.machine.kind !== 'pod') return;
    if (JSON.stringify(result.changes.ports ?? []) === JSON.stringify(world.unit.ports ?? [])) return;
    // on kubernetes the application's Service carries what its units opened
    const k8s = await kubernetesModel(db, world.model.uuid);
    try {
      if (k8s) await kubernetes.syncServicePorts(k8s, world.app.name);
    } catch (err) {
      log.warn(`could not set the ports of service ${world.app.name}: ${err instanceof Error ? err.message : err}`);
    }
  }

  /**
   * A machine its cloud made again under the same name (a pod deleted from under us,
   * made again by its StatefulSet) has nothing of ours: it is provisioned again (the
   * hook runtime) and the charm goes to it before the unit's next hooks.
   */
  async function machineReplaced(ref: UnitRef): Promise<Replaced | undefined> {
    const machine = await db
      .selectFrom('units as u')
      .innerJoin('machines as m', (j) =>
        j.onRef('m.model_uuid', '=', 'u.model_uuid').onRef('m.id', '=', 'u.machine_id'),
      )
      .selectAll('m')
      .where('u.model_uuid', '=', ref.modelUuid)
      .where('u.name', '=', ref.unit)
      .executeTakeFirst();
    if (!machine?.host_key_fingerprint) return undefined;
    const target = machineTarget(machine, deps.controllerKey, store.secrets);
    const substrate = substrateFor(deps.substrates, target);
    if (!substrate.incarnation) return undefined;
    const now = await guardMachine(machine, () => substrate.incarnation!(target));
    if (now === machine.host_key_fingerprint) return undefined;
    log.info(`machine ${machine.id} of ${ref.unit} was made again (${now}); delivering the runtime and charm to it`);
    await machines.provisionMachine(ref.model, machine.id);
    return { machineId: machine.id, incarnation: now };
  }

  /**
   * A unit whose machine was made again starts over there as Juju's k8s units do
   * after a pod churn: upgrade-charm, config-changed, start (a refresh, which brings
   * its own upgrade-charm and config-changed, gets only start after them). Their
   * context ids come from the new machine, so a retried call replays them.
   */
  async function restartOn(ref: UnitRef, replaced: Replaced, hooks: string[], unitRunners: UnitRunners): Promise<void> {
    for (const hook of hooks) {
      const incarnation = replaced.incarnation.replace(/[^A-Za-z0-9._-]/g, '-');
      const contextId = `${ref.modelUuid.slice(0, 8)}-${ref.unit.replace('/', '-')}-${incarnation}-${hook}`;
      const outcome = await runOne(ref, { hook }, contextId, unitRunners);
      if (!outcome.ok || outcome.gone) break;
    }
  }

  /** The unit has been brought up on its new machine: it is the machine from now on. */
  async function adoptIncarnation(ref: UnitRef, replaced: Replaced): Promise<void> {
    await db
      .updateTable('machines')
      .set({ host_key_fingerprint: replaced.incarnation })
      .where('model_uuid', '=', ref.modelUuid)
      .where('id', '=', replaced.machineId)
      .execute();
  }

  async function wakeAfterCommit(
    world: UnitWorld,
    ev: UnitEvent,
    result: HookResult,
    secretCommit?: SecretCommit,
  ): Promise<void> {
    const changes = result.changes;
    const wrote = Object.keys(changes.relationSettings)
      .filter((rid) => {
        const bag = changes.relationSettings[rid];
        return Object.keys(bag.unit ?? {}).length > 0 || (world.unit.leader && Object.keys(bag.app ?? {}).length > 0);
      })
      .map(Number);
    const joined = ev.hook === 'install' && world.related;
    try {
      if (joined || wrote.length > 0) {
        const apps = await relatedApps(db, world.model.uuid, world.app.name, joined ? undefined : wrote);
        await wakeUnits(db, apps, {}, world.unit.name);
      }
      if (world.unit.leader && Object.keys(changes.leaderSettings).length > 0) {
        await enqueueOnUnits(
          db,
          world.model.uuid,
          world.app.name,
          [{ hook: 'leader-settings-changed' }],
          world.unit.name,
        );
      }
      if (secretCommit) await followSecretCommit(db, secretCommit);
    } catch (err) {
      log.warn(`could not wake the units related to ${world.unit.name}: ${err instanceof Error ? err.message : err}`);
    }
  }

  /**
   * An action ended: its results, log and status go to its operation; what else it
   * wrote commits as a hook's would, only on exit 0. A failed action (action-fail,
   * non-zero exit, timeout) never puts the unit in error: the agent goes on.
   */
  async function finishAction(
    world: UnitWorld,
    ev: UnitEvent,
    contextId: string,
    result: HookResult & { actionLog?: ActionOutcome['log'] },
  ): Promise<HookOutcome> {
    const operationId = ev.action?.operationId as number;
    const exitedOk = result.exitCode === 0 && !result.timedOut;
    const failed =
      result.changes.actionFailed ??
      (result.skipped
        ? `the charm has no actions/${ev.hook} and no dispatch`
        : exitedOk
          ? null
          : result.timedOut
            ? 'the action timed out'
            : `the action exited with code ${result.exitCode}${result.tail.length > 0 ? `: ${result.tail.slice(-3).join(' | ')}` : ''}`);
    if (exitedOk) {
      const secretCommit = await commitRun(db, world, ev, contextId, result, store.secrets);
      await wakeAfterCommit(world, ev, result, secretCommit);
    } else {
      await db.transaction().execute(async (tx) => {
        await tx
          .updateTable('hook_runs')
          .set({ exit_code: result.exitCode ?? -1, finished_at: sql`now()`, ...timings(result) })
          .where('context_id', '=', contextId)
          .execute();
        await setAgentStatus(tx, world.model.uuid, world.unit.name, 'idle', '');
      });
    }
    await recordActionOutcome(db, operationId, {
      status: failed === null ? 'completed' : 'failed',
      results: result.changes.actionResults,
      log: result.actionLog ?? [],
      message: failed ?? '',
    });
    return { ok: true, skipped: false, gone: false, message: failed ?? '' };
  }

  /** Ships the charm to the unit's machine and creates the unit's directories. */
  async function shipCharm(ref: UnitRef, world: UnitWorld): Promise<void> {
    const tarball = await charmTarballFor(db, world.app.charm_name, world.app.charm_revision);
    const target = await targetFor(world.machine);
    const paths = unitPaths(world.machine.root_dir, ref.unit);
    const res = await guardMachine(world.machine, () =>
      substrateFor(deps.substrates, target).exec(target, {
        command: `mkdir -p ${shellQuote(paths.charmDir)} && chmod 0755 ${shellQuote(paths.unitDir)} && tar -x -p -f - -C ${shellQuote(paths.charmDir)} && ${ensureNodeForTsCharm(paths.charmDir)}`,
        stdin: tarball,
        // room for apt-get to install nodejs
        timeoutMs: 300_000,
      }),
    );
    // the unit goes into error at once, saying why; the agent's own backoff (or a resolve)
    // tries again, apt-get included, without the activity's quick retries first
    if (res.code === NO_NODE_EXIT) throw ApplicationFailure.nonRetryable(res.stderr.trim(), 'NodeMissing');
    if (res.code !== 0) throw new Error(`cannot unpack the charm on machine ${world.machine.id}: ${res.stderr.trim()}`);
    await setAgentStatus(db, ref.modelUuid, ref.unit, 'idle', '');
    if (world.unit.workload_status === 'waiting') {
      await setWorkloadStatus(db, ref.modelUuid, ref.unit, 'maintenance', 'installing charm software');
    }
  }

  return {
    /**
     * Runs hooks queued for one unit back to back, each built, run and committed
     * on its own, as the unit agent would one by one, without a round trip to it
     * in between. Stops after a hook that fails or finds the unit gone. A hook
     * that cannot be run at all (machine unreachable, runner lost) fails the
     * call only when it comes first; otherwise the hooks before it are reported
     * and it is taken up again, under the same context id, by the next call.
     *
     * `prepare` ships the charm to the machine first (a unit's first hooks); a
     * failure there fails the call like a hook that cannot run.
     */
    async runHooks(ref: UnitRef, runs: HookRun[], opts: { prepare?: boolean } = {}): Promise<HookOutcome[]> {
      const outcomes: HookOutcome[] = [];
      let replaced: Replaced | undefined;
      // one runner on the machine runs the hooks in turn, started before the first is due
      const unitRunners = new UnitRunners(ref);
      const refreshing = runs[0]?.event.hook === 'upgrade-charm';
      try {
        // a pod going and its successor starting take a while: the activity says it is alive
        const alive = Context.current();
        const beat = setInterval(() => alive.heartbeat(), 1000);
        try {
          if (refreshing && runs[0].event.ship) {
            // a refresh on kubernetes: the pod is made again from the new template now,
            // so the refresh's upgrade-charm is the first hook the new pod runs
            const k8s = await kubernetesModel(db, ref.modelUuid);
            if (k8s) await kubernetes.renewPod(k8s, ref.unit);
          }
          replaced = await machineReplaced(ref);
        } finally {
          clearInterval(beat);
        }
        if (opts.prepare || replaced) {
          const world = await loadWorld(db, ref);
          if (world) {
            rememberRunner(world);
            // the runner starts up while the charm is unpacked
            unitRunners.warm();
            const activity = Context.current();
            const beat = setInterval(() => activity.heartbeat(), 1000);
            try {
              await shipCharm(ref, world);
            } finally {
              clearInterval(beat);
            }
          }
        } else {
          unitRunners.warm();
        }
        if (replaced && !refreshing) await restartOn(ref, replaced, RESTART_HOOKS, unitRunners);
        let whole = true;
        for (const [i, run] of runs.entries()) {
          let outcome: HookOutcome;
          try {
            outcome = await runOne(ref, run.event, run.contextId, unitRunners);
          } catch (err) {
            if (i === 0) throw err;
            whole = false;
            break;
          }
          outcomes.push(outcome);
          if (!outcome.ok || outcome.gone) {
            whole = false;
            break;
          }
        }
        if (replaced && whole) {
          if (refreshing) await restartOn(ref, replaced, ['start'], unitRunners);
          await adoptIncarnation(ref, replaced);
        } else if (replaced && !refreshing) {
          await adoptIncarnation(ref, replaced);
        }
      } finally {
        // the runner ends after the hooks it was given
        unitRunners.close();
      }
      return outcomes;
    },

    /** The hook could not even start (machine unreachable, host key changed). */
    async markHookFailed(ref: UnitRef, hook: string, message: string): Promise<void> {
      const exists = await db
        .selectFrom('units')
        .select('name')
        .where('model_uuid', '=', ref.modelUuid)
        .where('name', '=', ref.unit)
        .executeTakeFirst();
      if (!exists) return;
      await db.transaction().execute(async (tx) => {
        await setWorkloadStatus(tx, ref.modelUuid, ref.unit, 'error', `hook failed: "${hook}"`, {
          hook,
          reason: message,
          tail: [],
        });
        await setAgentStatus(tx, ref.modelUuid, ref.unit, 'failed', message);
        await appendLogs(tx, ref.modelUuid, ref.unit, [{ level: 'ERROR', message }]);
      });
    },

    /** An action that could not even start (machine unreachable): it failed; the unit is left as it was. */
    async failAction(operationId: number, message: string): Promise<void> {
      await recordActionOutcome(db, operationId, { status: 'failed', results: {}, message });
    },

    /** `resolve --no-retry`: the failed hook is skipped; the unit leaves error. */
    async markHookSkipped(ref: UnitRef, hook: string): Promise<void> {
      await db.transaction().execute(async (tx) => {
        await setWorkloadStatus(tx, ref.modelUuid, ref.unit, 'maintenance', `${hook} hook skipped by resolve`);
        await setAgentStatus(tx, ref.modelUuid, ref.unit, 'idle', '');
      });
    },

    /** After the remove hook: clean the unit's files off its machine and forget the unit. */
    async finishUnitRemoval(ref: UnitRef): Promise<void> {
      runners.delete(runnerKey(ref.modelUuid, ref.unit));
      const world = await loadWorld(db, ref);
      if (world) {
        const target = await targetFor(world.machine);
        const paths = unitPaths(world.machine.root_dir, ref.unit);
        await substrateFor(deps.substrates, target).exec(target, {
          command: `rm -rf ${shellQuote(paths.unitDir)}`,
          timeoutMs: 60_000,
        });
      }
      const app = await deleteUnit(db, ref);
      if (app?.leader) await electLeader(db, ref.modelUuid, app.application);
      // a unit's pod goes with it
      if (world?.machine.kind === 'pod') {
        const k8s = await kubernetesModel(db, ref.modelUuid);
        if (k8s) await kubernetes.releaseUnitPod(k8s, ref.unit, world.machine.id);
      }
    },
  };
}

/** Removes a unit's rows; the last unit of a dying application takes the application with it. */
export async function deleteUnit(db: Db, ref: UnitRef): Promise<{ application: string; leader: boolean } | null> {
  return await db.transaction().execute(async (tx) => {
    const unit = await tx
      .selectFrom('units')
      .select(['application', 'leader'])
      .where('model_uuid', '=', ref.modelUuid)
      .where('name', '=', ref.unit)
      .executeTakeFirst();
    if (!unit) return null;
    await tx.deleteFrom('units').where('model_uuid', '=', ref.modelUuid).where('name', '=', ref.unit).execute();
    // a later unit of the same name starts its runs afresh
    await tx.deleteFrom('hook_runs').where('model_uuid', '=', ref.modelUuid).where('unit', '=', ref.unit).execute();
    await markBagsDeparted(tx, ref.modelUuid, ref.unit);
    await tx
      .insertInto('status_history')
      .values({
        model_uuid: ref.modelUuid,
        entity: ref.unit,
        kind: 'agent',
        status: 'removed',
        message: '',
        data: null,
      })
      .execute();
    const app = await tx
      .selectFrom('applications')
      .select('life')
      .where('model_uuid', '=', ref.modelUuid)
      .where('name', '=', unit.application)
      .executeTakeFirst();
    const left = await tx
      .selectFrom('units')
      .select('name')
      .where('model_uuid', '=', ref.modelUuid)
      .where('application', '=', unit.application)
      .execute();
    if (app && app.life !== 'alive' && left.length === 0) {
      await dropApplicationIntegrations(tx, ref.modelUuid, unit.application);
      await tx
        .deleteFrom('applications')
        .where('model_uuid', '=', ref.modelUuid)
        .where('name', '=', unit.application)
        .execute();
    }
    return unit;
  });
}

export type HookActivities = ReturnType<typeof createHookActivities>;
