// Machines: allocate local sandboxes, provision SSH hosts (pin the host key, install
// the controller's key and the hook runtime), remove them. Every activity can run
// twice: each step looks at what is already there before doing it.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { chmod, chown, lchown, mkdir, readFile, readlink, rename, rm, symlink, writeFile } from 'node:fs/promises';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { sql } from 'kysely';
import type { MachineRow } from '../store/schema.ts';
import { nextModelSequence, reserveModelSequence } from '../store/sequences.ts';
import type { Tx } from '../store/store.ts';
import type { ActivityDeps } from './deps.ts';
import { createKubernetesProvider, kubernetesModel } from './kubernetes-provider.ts';
import { machineTarget } from './machine-target.ts';
import { isolateDataDir, localMachinesDir } from './substrates/local-isolation.ts';
import { RUNTIME_COMMANDS, shellQuote } from './substrates/machine-shell.ts';
import {
  HostKeyMismatchError,
  MachineFailedError,
  type MachineTarget,
  MachineUnreachableError,
  type Substrate,
} from './substrates/substrate.ts';
import { setMachineStatus } from './unit-status.ts';

/** Where charmflow keeps its files on an SSH host, by login user. */
export const ROOT_USER_DIR = '/var/lib/charmflow';
const NON_ROOT_DIR = '.local/share/charmflow';

const RUNTIME_SOURCE = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'charm', 'runtime');
/**
 * The modules first, then the thin launchers that import them (runner.py,
 * hook_tool.py: a script is compiled on every run, a module comes from the
 * bytecode `install-tools` caches), so a launcher never meets older modules.
 */
const RUNTIME_FILES = ['cf_runner.py', 'cf_hook_tool.py', 'runner.py', 'hook_tool.py'] as const;

interface RuntimeBundle {
  files: { name: string; data: Buffer }[];
  /** sha256 over the files: what `machines.runtime_hash` records. */
  hash: string;
}

let runtimeBundle: RuntimeBundle | undefined;
/** The machine-side hook runtime as shipped with this controller. */
export function hookRuntime(): RuntimeBundle {
  if (!runtimeBundle) {
    const h = createHash('sha256');
    const files = RUNTIME_FILES.map((name) => {
      const data = readFileSync(join(RUNTIME_SOURCE, name));
      h.update(`${name}\0${data.length}\0`).update(data);
      return { name, data };
    });
    runtimeBundle = { files, hash: h.digest('hex') };
  }
  return runtimeBundle;
}

/** The machine's row as a target for its substrate; throws when the machine is unknown. */
export async function loadMachineTarget(deps: ActivityDeps, modelUuid: string, id: string): Promise<MachineTarget> {
  const row = await deps.store.db
    .selectFrom('machines')
    .selectAll()
    .where('model_uuid', '=', modelUuid)
    .where('id', '=', id)
    .executeTakeFirst();
  if (!row) throw ApplicationFailure.nonRetryable(`machine ${id} not found`, 'NotFound');
  return machineTarget(row, deps.controllerKey, deps.store.secrets);
}

/** `127.<net>.<hi>.<lo>` for the n-th local machine; undefined for the network and broadcast ends. */
export function localAddress(localNet: number, n: number): string | undefined {
  const lo = n % 256;
  const hi = Math.floor(n / 256) % 256;
  if (lo === 0 || lo === 255) return undefined;
  return `127.${localNet}.${hi}.${lo}`;
}

/** The key's type and blob (`ssh-ed25519 AAAA...`), which identify it whatever its comment. */
function keyIdentity(publicKey: string): string {
  return publicKey.trim().split(/\s+/).slice(0, 2).join(' ');
}

/** Appends the key to the login user's authorized_keys unless it is there already. */
export function authorizeKeyCommand(publicKey: string): string {
  const file = '"$HOME/.ssh/authorized_keys"';
  return [
    'set -e',
    'umask 077',
    'mkdir -p "$HOME/.ssh"',
    `touch ${file}`,
    `if grep -qF ${shellQuote(keyIdentity(publicKey))} ${file}; then exit 0; fi`,
    // A last line without its newline would swallow ours.
    `if [ -s ${file} ] && [ -n "$(tail -c 1 ${file})" ]; then echo >> ${file}; fi`,
    `printf '%s\\n' ${shellQuote(publicKey.trim())} >> ${file}`,
  ].join('\n');
}

type FailureType = 'HostKeyMismatch' | 'MachineUnreachable' | 'MachineFailed';

function substrateError(err: unknown): { message: string; type: FailureType } | undefined {
  if (
    err instanceof HostKeyMismatchError ||
    err instanceof MachineUnreachableError ||
    err instanceof MachineFailedError
  ) {
    return { message: err.message, type: err.type };
  }
  return undefined;
}

/**
 * Kills, with SIGKILL, every process a model's hooks left on a host: those whose
 * environment names the model (hooks run with JUJU_MODEL_UUID, and what they start
 * inherits it) and those working under one of its machines' directories. The shell
 * itself works from / so it never matches.
 */
export function killModelProcessesCommand(modelUuid: string, root: string): string {
  return [
    'cd /',
    `uuid=${shellQuote(modelUuid)}`,
    `root=${shellQuote(root.replace(/\/+$/, ''))}`,
    'for d in /proc/[0-9]*; do',
    '  p=${d#/proc/}',
    '  [ "$p" = "$$" ] && continue',
    '  if tr \'\\0\' \'\\n\' < "$d/environ" 2>/dev/null | grep -qx "JUJU_MODEL_UUID=$uuid"; then',
    '    kill -9 "$p" 2>/dev/null; continue',
    '  fi',
    '  c=$(readlink "$d/cwd" 2>/dev/null) || continue',
    '  case "$c/" in "$root"/*) kill -9 "$p" 2>/dev/null ;; esac',
    'done',
    'true',
  ].join('\n');
}

/** Heartbeats when called in an activity; a direct call (a test, a script) has no one to tell. */
function heartbeat(details?: unknown): void {
  let ctx: Context;
  try {
    ctx = Context.current();
  } catch {
    return;
  }
  ctx.heartbeat(details);
}

/** Machines a provisionMachines activity prepares at once. */
const PROVISION_CONCURRENCY = 8;
/** Rows one statement reads or writes when many units get machines at once. */
const ROWS_PER_STATEMENT = 500;

export function createMachineActivities(deps: ActivityDeps) {
  const { store, substrates, controllerKey, dataDir, localNet } = deps;
  const db = store.db;
  const kubernetes = createKubernetesProvider(deps);

  async function modelByName(name: string) {
    const model = await db.selectFrom('models').selectAll().where('name', '=', name).executeTakeFirst();
    if (!model) throw ApplicationFailure.nonRetryable(`model "${name}" not found`, 'NotFound');
    return model;
  }

  async function machineRow(modelUuid: string, id: string): Promise<MachineRow | undefined> {
    return db
      .selectFrom('machines')
      .selectAll()
      .where('model_uuid', '=', modelUuid)
      .where('id', '=', id)
      .executeTakeFirst();
  }

  function substrateOf(target: MachineTarget): Substrate {
    return substrates[target.kind];
  }

  async function fail(row: MachineRow, message: string, type: string): Promise<never> {
    await setMachineStatus(db, row, 'error', message, { bootstrap_key: null });
    throw ApplicationFailure.nonRetryable(message, type);
  }

  async function run(target: MachineTarget, command: string, what: string): Promise<string> {
    const res = await substrateOf(target).exec(target, { command, timeoutMs: 60_000 });
    if (res.code !== 0) {
      const why = res.code === null ? 'killed' : `exit ${res.code}`;
      throw new Error(`${what} failed on machine ${target.key} (${why}): ${res.stderr.trim()}`);
    }
    return res.stdout;
  }

  /** SSH only: make the controller's key open the door, then forget the user's. */
  async function installControllerKey(row: MachineRow): Promise<MachineRow> {
    const withUserKey = machineTarget(row, controllerKey, store.secrets);
    const res = await substrates.ssh.exec(withUserKey, {
      command: authorizeKeyCommand(controllerKey.publicKey),
      timeoutMs: 60_000,
    });
    if (res.code !== 0) {
      return fail(
        row,
        `cannot install the controller's key in ~/.ssh/authorized_keys of ${row.ssh_user}@${row.host}: ${res.stderr.trim() || `exit ${res.code}`}`,
        'KeyInstallFailed',
      );
    }
    // Only once the controller's own key is known to work may the user's go.
    const withControllerKey = machineTarget({ ...row, bootstrap_key: null }, controllerKey, store.secrets);
    try {
      await run(withControllerKey, 'true', 'logging in with the controller key');
    } catch (err) {
      if (err instanceof MachineUnreachableError && /authentication failed/.test(err.message)) {
        return fail(
          row,
          `${row.ssh_user}@${row.host} does not accept the controller's key after it was added to ~/.ssh/authorized_keys (does sshd read that file?)`,
          'KeyInstallFailed',
        );
      }
      throw err;
    }
    await db
      .updateTable('machines')
      .set({ bootstrap_key: null })
      .where('model_uuid', '=', row.model_uuid)
      .where('id', '=', row.id)
      .execute();
    return { ...row, bootstrap_key: null };
  }

  async function chooseRootDir(row: MachineRow): Promise<MachineRow> {
    if (row.root_dir) return row;
    let rootDir = ROOT_USER_DIR;
    if ((row.ssh_user ?? 'root') !== 'root') {
      const home = (
        await run(machineTarget(row, controllerKey, store.secrets), 'printf %s "$HOME"', 'reading $HOME')
      ).trim();
      if (!home.startsWith('/'))
        return fail(row, `the login user's $HOME is not an absolute path ("${home}")`, 'BadHome');
      rootDir = `${home.replace(/\/+$/, '')}/${NON_ROOT_DIR}`;
    }
    await db
      .updateTable('machines')
      .set({ root_dir: rootDir })
      .where('model_uuid', '=', row.model_uuid)
      .where('id', '=', row.id)
      .execute();
    return { ...row, root_dir: rootDir };
  }

  /**
   * The local cloud's machines are directories on this host: they share one copy of
   * each runtime (read-only to units), installed once, and each machine's runtime/
   * is a link to it. Provisioning a local machine then starts no process at all.
   */
  const sharedRuntimes = new Map<string, Promise<string>>();
  function sharedLocalRuntime(): Promise<string> {
    const runtime = hookRuntime();
    let installing = sharedRuntimes.get(runtime.hash);
    if (!installing) {
      installing = (async () => {
        // beside the machines, where isolated ones can read it (not under a 0700 data dir)
        const dir = join(localMachinesDir(dataDir), '.runtime', runtime.hash.slice(0, 16));
        const marker = join(dir, '.runtime-hash');
        if ((await readFile(marker, 'utf8').catch(() => '')).trim() === runtime.hash) return dir;
        await mkdir(dir, { recursive: true, mode: 0o755 });
        await chmod(localMachinesDir(dataDir), 0o711);
        await chmod(dirname(dir), 0o755);
        for (const f of runtime.files) await writeFile(join(dir, f.name), f.data, { mode: 0o755 });
        const local: MachineTarget = { key: 'runtime', kind: 'local', address: '127.0.0.1', rootDir: dir };
        await run(
          local,
          `python3 -S ${shellQuote(`${dir}/runner.py`)} install-tools ${shellQuote(`${dir}/bin`)}`,
          'installing the hook tools',
        );
        await writeFile(marker, `${runtime.hash}\n`, { mode: 0o644 });
        return dir;
      })();
      sharedRuntimes.set(runtime.hash, installing);
      installing.catch(() => sharedRuntimes.delete(runtime.hash));
    }
    return installing;
  }

  async function installLocalRuntime(row: MachineRow): Promise<void> {
    const shared = await sharedLocalRuntime();
    const uid = machineTarget(row, controllerKey, store.secrets).uid;
    if (uid !== undefined) {
      // its own directory, which only it (and root) may enter; the way to it is
      // passable, the controller's files beside it are not
      const base = localMachinesDir(dataDir);
      if (base.startsWith(dataDir + sep)) await isolateDataDir(dataDir);
      await mkdir(row.root_dir, { recursive: true, mode: 0o711 });
      for (const dir of [localMachinesDir(dataDir), dirname(row.root_dir)]) await chmod(dir, 0o711);
      await chown(row.root_dir, uid, uid);
      await chmod(row.root_dir, 0o700);
      await mkdir(join(row.root_dir, 'units'), { recursive: true });
      await chown(join(row.root_dir, 'units'), uid, uid);
    }
    await mkdir(join(row.root_dir, 'units'), { recursive: true });
    const link = join(row.root_dir, 'runtime');
    if ((await readlink(link).catch(() => undefined)) !== shared) {
      const tmp = `${link}.cf-tmp-${process.pid}`;
      await rm(tmp, { force: true });
      await symlink(shared, tmp);
      // a runtime/ directory of an older controller goes
      await rm(link, { recursive: true, force: true });
      await rename(tmp, link);
      if (uid !== undefined) await lchown(link, uid, uid);
    }
    if (row.runtime_hash !== hookRuntime().hash) {
      await db
        .updateTable('machines')
        .set({ runtime_hash: hookRuntime().hash })
        .where('model_uuid', '=', row.model_uuid)
        .where('id', '=', row.id)
        .execute();
    }
  }

  /** units/ and runtime/ under the root; the runtime uploaded unless the machine has this very one. */
  async function installRuntime(row: MachineRow): Promise<void> {
    if (row.kind === 'local') return installLocalRuntime(row);
    const target = machineTarget(row, controllerKey, store.secrets);
    const runtime = hookRuntime();
    const root = shellQuote(row.root_dir);
    const marker = `${row.root_dir}/runtime/.runtime-hash`;
    const installed = await run(
      target,
      `mkdir -p ${root}/units ${root}/runtime && cat ${shellQuote(marker)} 2>/dev/null || true`,
      'creating the machine directories',
    );
    if (installed.trim() !== runtime.hash || row.runtime_hash !== runtime.hash) {
      const substrate = substrateOf(target);
      for (const f of runtime.files)
        await substrate.putFile(target, `${row.root_dir}/runtime/${f.name}`, f.data, 0o755);
      await run(
        target,
        `python3 -S ${root}/runtime/runner.py install-tools ${root}/runtime/bin`,
        'installing the hook tools',
      );
      await substrate.putFile(target, marker, `${runtime.hash}\n`, 0o644);
      await db
        .updateTable('machines')
        .set({ runtime_hash: runtime.hash })
        .where('model_uuid', '=', row.model_uuid)
        .where('id', '=', row.id)
        .execute();
    }
  }

  /**
   * Make the machine ready for units: reachable with a pinned host key and the
   * controller's key (SSH), its directories and the hook runtime in place.
   */
  async function provision(modelName: string, id: string): Promise<void> {
    const model = await modelByName(modelName);
    let row = await machineRow(model.uuid, id);
    if (!row) throw ApplicationFailure.nonRetryable(`machine ${id} not found in model "${modelName}"`, 'NotFound');
    if (row.life !== 'alive') {
      throw ApplicationFailure.nonRetryable(`machine ${id} is being removed`, 'MachineDying');
    }
    try {
      // The probe checks a pinned key, or learns it on first contact (with the user's key).
      const target = machineTarget(row, controllerKey, store.secrets);
      const probe = await substrateOf(target).probe(target);
      if (probe.missing.length > 0) {
        return fail(
          row,
          `host lacks ${probe.missing.join(', ')}: hook execution needs ${RUNTIME_COMMANDS.join(', ')}`,
          'UnsupportedHost',
        );
      }
      const pin = row.kind === 'ssh' && !row.host_key_fingerprint ? probe.hostKeyFingerprint : undefined;
      if (pin !== undefined || row.hostname !== probe.hostname) {
        await db
          .updateTable('machines')
          .set({ hostname: probe.hostname, ...(pin !== undefined ? { host_key_fingerprint: pin } : {}) })
          .where('model_uuid', '=', row.model_uuid)
          .where('id', '=', row.id)
          .execute();
        row = { ...row, hostname: probe.hostname, host_key_fingerprint: pin ?? row.host_key_fingerprint };
      }
      if (row.kind === 'pod' && (!row.host_key_fingerprint || row.address !== probe.address)) {
        // a pod has its uid pinned at first contact; one made again under the same name has
        // another uid and address, and nothing of ours yet (its unit adopts the new uid once
        // it has started over there: hook-activities)
        const uid = row.host_key_fingerprint ?? probe.hostKeyFingerprint;
        await db
          .updateTable('machines')
          .set({ host_key_fingerprint: uid, address: probe.address })
          .where('model_uuid', '=', row.model_uuid)
          .where('id', '=', row.id)
          .execute();
        row = { ...row, host_key_fingerprint: uid, address: probe.address };
      }
      if (row.kind === 'ssh' && row.bootstrap_key) row = await installControllerKey(row);
      row = await chooseRootDir(row);
      await installRuntime(row);
      await setMachineStatus(db, row, 'started', '');
    } catch (err) {
      const known = substrateError(err);
      if (known) return fail(row, known.message, known.type);
      throw err;
    }
  }

  /** The row of a new local machine: pending, its directory under the data dir's machines/. */
  function newLocalMachine(modelUuid: string, id: string, address: string) {
    return {
      model_uuid: modelUuid,
      id,
      kind: 'local',
      address,
      host: null,
      port: null,
      ssh_user: null,
      host_key_fingerprint: null,
      root_dir: join(localMachinesDir(dataDir), modelUuid, id),
      state: 'pending',
    } as const;
  }

  /** A new local machine (pending), with the unit placed on it when one is named. */
  async function allocateIn(tx: Tx, modelUuid: string, forUnit?: string): Promise<string> {
    if (forUnit !== undefined) {
      const unit = await tx
        .selectFrom('units')
        .select('machine_id')
        .where('model_uuid', '=', modelUuid)
        .where('name', '=', forUnit)
        .forUpdate()
        .executeTakeFirst();
      if (!unit) throw ApplicationFailure.nonRetryable(`unit ${forUnit} not found`, 'NotFound');
      if (unit.machine_id !== null) return unit.machine_id;
    }
    const id = String(await nextModelSequence(tx, modelUuid, 'machine'));
    let address: string | undefined;
    while (address === undefined) {
      const { n } = await sql<{ n: string | number }>`SELECT nextval('local_machine_seq') AS n`
        .execute(tx)
        .then((r) => r.rows[0]!);
      address = localAddress(localNet, Number(n));
    }
    await tx
      .insertInto('machines')
      .values(newLocalMachine(modelUuid, id, address))
      .execute();
    if (forUnit !== undefined) {
      await tx
        .updateTable('units')
        .set({ machine_id: id, agent_status: 'allocating', agent_message: '' })
        .where('model_uuid', '=', modelUuid)
        .where('name', '=', forUnit)
        .execute();
    }
    return id;
  }

  /**
   * allocateIn for many units, in a few statements however many there are (a deploy
   * of 1000 units took 5 statements a unit, ~4 s with nothing else able to use the
   * store): the same ids, addresses and rows, in the order of `units`.
   */
  async function allocateManyIn(tx: Tx, modelUuid: string, units: string[]): Promise<Record<string, string>> {
    const placed: Record<string, string> = {};
    const wanted = [...new Set(units)];
    const current = new Map<string, string | null>();
    for (let i = 0; i < wanted.length; i += ROWS_PER_STATEMENT) {
      const rows = await tx
        .selectFrom('units')
        .select(['name', 'machine_id'])
        .where('model_uuid', '=', modelUuid)
        .where('name', 'in', wanted.slice(i, i + ROWS_PER_STATEMENT))
        .forUpdate()
        .execute();
      for (const r of rows) current.set(r.name, r.machine_id);
    }
    const fresh: string[] = [];
    for (const unit of wanted) {
      if (!current.has(unit)) throw ApplicationFailure.nonRetryable(`unit ${unit} not found`, 'NotFound');
      const machine = current.get(unit);
      if (machine) placed[unit] = machine;
      else fresh.push(unit);
    }
    if (fresh.length === 0) return placed;
    const first = await reserveModelSequence(tx, modelUuid, 'machine', fresh.length);
    const addresses: string[] = [];
    while (addresses.length < fresh.length) {
      const { rows } = await sql<{ n: string | number }>`
        SELECT nextval('local_machine_seq') AS n FROM generate_series(1, ${fresh.length - addresses.length}::int)`.execute(
        tx,
      );
      for (const { n } of rows) {
        const address = localAddress(localNet, Number(n));
        if (address !== undefined) addresses.push(address);
      }
    }
    const ids = fresh.map((_, i) => String(first + i));
    for (let i = 0; i < fresh.length; i += ROWS_PER_STATEMENT) {
      const chunk = fresh.slice(i, i + ROWS_PER_STATEMENT).map((unit, j) => ({ unit, id: ids[i + j] }));
      await tx
        .insertInto('machines')
        .values(chunk.map(({ id }, j) => newLocalMachine(modelUuid, id, addresses[i + j])))
        .execute();
      const pairs = sql.join(chunk.map(({ unit, id }) => sql`(${unit}::text, ${id}::text)`));
      await sql`
        UPDATE units AS u SET machine_id = v.id, agent_status = 'allocating', agent_message = ''
        FROM (VALUES ${pairs}) AS v(name, id)
        WHERE u.model_uuid = ${modelUuid} AND u.name = v.name`.execute(tx);
    }
    for (let i = 0; i < fresh.length; i++) placed[fresh[i]] = ids[i];
    return placed;
  }

  return {
    /** A new local sandbox machine (pending); returns its id. */
    /**
     * A new machine on the local cloud. With `forUnit` the unit is placed on it in the
     * same transaction, and a retry (the first attempt committed, its answer was
     * lost) returns the machine the unit already has instead of making another.
     */
    async allocateLocalMachine(modelName: string, forUnit?: string): Promise<string> {
      const model = await modelByName(modelName);
      return db.transaction().execute((tx) => allocateIn(tx, model.uuid, forUnit));
    },

    /**
     * A new local machine for each of these units, all in one transaction (a deploy
     * of a thousand units is one activity, not a thousand). A retry returns the
     * machines the units already have.
     */
    async allocateLocalMachines(modelName: string, units: string[]): Promise<Record<string, string>> {
      const model = await modelByName(modelName);
      // a kubernetes model's new machines are its units' pods
      const k8s = await kubernetesModel(db, model.uuid);
      if (k8s) return kubernetes.allocatePods(k8s, units);
      return db.transaction().execute((tx) => allocateManyIn(tx, model.uuid, units));
    },

    /**
     * provisionMachine for many machines, a few at a time, heartbeating as each is
     * ready. Every machine is tried; the first failure is raised after the rest.
     */
    async provisionMachines(modelName: string, ids: string[]): Promise<void> {
      let next = 0;
      let ready = 0;
      let firstFailure: unknown;
      const worker = async () => {
        while (next < ids.length) {
          const id = ids[next++];
          try {
            await provision(modelName, id);
          } catch (err) {
            firstFailure ??= err;
          }
          ready++;
          heartbeat({ ready, of: ids.length });
        }
      };
      // alive while a slow host takes its time
      const beat = setInterval(() => heartbeat({ ready, of: ids.length }), 10_000);
      try {
        await Promise.all(Array.from({ length: Math.min(PROVISION_CONCURRENCY, ids.length) }, worker));
      } finally {
        clearInterval(beat);
      }
      if (firstFailure !== undefined) throw firstFailure;
    },

    /**
     * Make the machine ready for units: reachable with a pinned host key and the
     * controller's key (SSH), its directories and the hook runtime in place.
     */
    async provisionMachine(modelName: string, id: string): Promise<void> {
      // a worker lost mid-way is noticed within the heartbeat timeout, and the retry
      // goes on from what is already there (each step checks before it acts)
      heartbeat({ machine: id });
      const beat = setInterval(() => heartbeat({ machine: id }), 5_000);
      try {
        return await provision(modelName, id);
      } finally {
        clearInterval(beat);
      }
    },
    /** Provisioning failed for good (retries exhausted): the machine shows why. */
    async markMachineError(modelName: string, id: string, message: string): Promise<void> {
      const model = await db.selectFrom('models').select('uuid').where('name', '=', modelName).executeTakeFirst();
      if (!model) return;
      const row = await machineRow(model.uuid, id);
      if (!row) return;
      await setMachineStatus(db, row, 'error', message, { bootstrap_key: null });
    },

    /**
     * destroy-model, after the units' hooks had their chance: kill whatever the
     * model's units left running on each of its machines, take charmflow's files
     * off them, and forget them. An unreachable host is skipped (there is nothing
     * to wait for); the local cloud's machines are one host, cleaned in one go.
     */
    async cleanModelMachines(modelUuid: string): Promise<{ cleaned: number; unreachable: string[] }> {
      const rows = await db.selectFrom('machines').selectAll().where('model_uuid', '=', modelUuid).execute();
      const unreachable: string[] = [];
      const beat = setInterval(() => heartbeat(), 5_000);
      try {
        const local = rows.filter((r) => r.kind === 'local');
        if (local.length > 0) {
          const modelDir = join(localMachinesDir(dataDir), modelUuid);
          const here: MachineTarget = { key: 'local', kind: 'local', address: '127.0.0.1', rootDir: '/' };
          await run(here, killModelProcessesCommand(modelUuid, modelDir), "stopping the units' processes");
          await rm(modelDir, { recursive: true, force: true });
        }
        // a kubernetes model's pods go with the objects charmflow made for it
        const k8s = await kubernetesModel(db, modelUuid);
        if (k8s) await kubernetes.cleanModel(k8s);
        for (const row of rows.filter((r) => r.kind === 'ssh')) {
          const target = machineTarget(row, controllerKey, store.secrets);
          try {
            if (row.host_key_fingerprint && row.root_dir) {
              const root = shellQuote(row.root_dir);
              await run(
                target,
                `${killModelProcessesCommand(modelUuid, row.root_dir)}\nrm -rf ${root}/units ${root}/runtime; rmdir ${root} 2>/dev/null; true`,
                "stopping the units' processes and removing charmflow files",
              );
            }
          } catch (err) {
            if (!substrateError(err)) throw err;
            unreachable.push(`${row.id}: ${err instanceof Error ? err.message : String(err)}`);
          }
          await substrateOf(target).release(target);
          heartbeat();
        }
        await db.deleteFrom('machines').where('model_uuid', '=', modelUuid).execute();
        return { cleaned: rows.length - unreachable.length, unreachable };
      } finally {
        clearInterval(beat);
      }
    },

    /**
     * Take charmflow's files off the machine and forget it. Refuses while units
     * are on it, unless forced; forced, it finishes even when the host is gone.
     */
    async removeMachine(modelName: string, id: string, force: boolean): Promise<void> {
      const model = await db.selectFrom('models').select('uuid').where('name', '=', modelName).executeTakeFirst();
      if (!model) return; // the model went, and its machines with it
      const row = await machineRow(model.uuid, id);
      if (!row) return; // removed already
      const units = await db
        .selectFrom('units')
        .select('name')
        .where('model_uuid', '=', model.uuid)
        .where('machine_id', '=', id)
        .orderBy('name')
        .execute();
      if (units.length > 0 && !force) {
        throw ApplicationFailure.nonRetryable(
          `machine ${id} still hosts ${units.map((u) => u.name).join(', ')}; remove them first, or use --force`,
          'MachineHasUnits',
        );
      }
      const target = machineTarget(row, controllerKey, store.secrets);
      if (row.kind === 'local') {
        // Only ever a sandbox this controller made.
        const machinesDir = localMachinesDir(dataDir) + sep;
        if (row.root_dir.startsWith(machinesDir)) await rm(row.root_dir, { recursive: true, force: true });
      } else if (row.host_key_fingerprint && row.root_dir) {
        // Never contacted (no pinned key): nothing of ours is there.
        const root = shellQuote(row.root_dir);
        try {
          await run(
            target,
            `rm -rf ${root}/units ${root}/runtime; rmdir ${root} 2>/dev/null; true`,
            'removing charmflow files',
          );
        } catch (err) {
          if (!force) {
            const known = substrateError(err);
            if (known) {
              throw ApplicationFailure.nonRetryable(
                `${known.message}; use --force to forget the machine anyway`,
                known.type,
              );
            }
            throw err;
          }
        }
      }
      await substrateOf(target).release(target);
      await db.transaction().execute(async (tx) => {
        if (units.length > 0) {
          await tx
            .updateTable('units')
            .set({ machine_id: null, agent_status: 'lost', agent_message: `machine ${id} was removed` })
            .where('model_uuid', '=', model.uuid)
            .where('machine_id', '=', id)
            .execute();
        }
        await tx.deleteFrom('machines').where('model_uuid', '=', model.uuid).where('id', '=', id).execute();
      });
    },
  };
}

export type MachineActivities = ReturnType<typeof createMachineActivities>;
