// Running one hook on a unit's machine: build the context snapshot from the model
// store, exec the machine-side runner, stream status and logs into the store while
// the hook runs, and commit what the hook wrote, atomically and only on success.
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { sql } from 'kysely';
import { charmTarball } from '../charm/charm-archive.ts';
import { getCharm, getCharmInfo } from '../charm/charm-store.ts';
import { effectiveConfig } from '../charm/config-values.ts';
import {
  type HookChanges,
  HookContext,
  HookEvent,
  type HookResult,
  type RelationSnapshot,
} from '../charm/hook-protocol.ts';
import type { CharmMeta } from '../charm/metadata.ts';
import type { ApplicationRow, MachineRow, ModelRow, UnitRow } from '../store/schema.ts';
import type { Db, Tx } from '../store/store.ts';
import type { UnitEvent, UnitRef } from '../workflows/messages.ts';
import type { ActivityDeps } from './deps.ts';
import { machineTarget, unitPaths } from './machine-target.ts';
import { substrateFor } from './substrates/index.ts';
import { shellQuote } from './substrates/machine-shell.ts';
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
}

interface UnitWorld {
  model: ModelRow;
  app: ApplicationRow;
  unit: UnitRow;
  machine: MachineRow;
  meta: CharmMeta;
}

// Charm revisions never change, so their metadata is read once per process.
const metaCache = new Map<string, CharmMeta>();

/** The unit with its application, model and machine, in one query. */
async function loadWorld(db: Db, ref: UnitRef): Promise<UnitWorld | null> {
  const row = await db
    .selectFrom('units as u')
    .innerJoin('applications as a', (j) =>
      j.onRef('a.model_uuid', '=', 'u.model_uuid').onRef('a.name', '=', 'u.application'),
    )
    .innerJoin('models as m', 'm.uuid', 'u.model_uuid')
    .innerJoin('machines as mc', (j) =>
      j.onRef('mc.model_uuid', '=', 'u.model_uuid').onRef('mc.id', '=', 'u.machine_id'),
    )
    .select(() => [
      sql<UnitRow>`to_jsonb(u)`.as('unit'),
      sql<ApplicationRow>`to_jsonb(a)`.as('app'),
      sql<ModelRow>`to_jsonb(m)`.as('model'),
      sql<MachineRow>`to_jsonb(mc)`.as('machine'),
    ])
    .where('u.model_uuid', '=', ref.modelUuid)
    .where('u.name', '=', ref.unit)
    .executeTakeFirst();
  if (!row) return null;
  const app = row.app;
  const key = `${app.charm_name}:${app.charm_revision}`;
  let meta = metaCache.get(key);
  if (!meta) {
    const charm = await getCharmInfo(db, app.charm_name, app.charm_revision);
    if (!charm) throw new Error(`charm ${app.charm_name} revision ${app.charm_revision} is gone`);
    meta = charm.meta;
    metaCache.set(key, meta);
  }
  return { model: row.model, app, unit: row.unit, machine: row.machine, meta };
}

/** Every relation the unit's application is in, with members and data bags. */
async function loadRelations(db: Db, world: UnitWorld): Promise<RelationSnapshot[]> {
  const mine = await db
    .selectFrom('integration_endpoints')
    .selectAll()
    .where('model_uuid', '=', world.model.uuid)
    .where('application', '=', world.app.name)
    .execute();
  const out: RelationSnapshot[] = [];
  for (const ep of mine) {
    const all = await db
      .selectFrom('integration_endpoints')
      .selectAll()
      .where('model_uuid', '=', world.model.uuid)
      .where('integration_id', '=', ep.integration_id)
      .execute();
    const remote = all.find((e) => e.application !== world.app.name) ?? ep;
    const spec = world.meta.endpoints.find((e) => e.name === ep.endpoint);
    const peer = remote === ep;
    const remoteUnits = await db
      .selectFrom('units')
      .select('name')
      .where('model_uuid', '=', world.model.uuid)
      .where('application', '=', remote.application)
      .where('life', '=', 'alive')
      .where('installed', '=', true)
      .execute();
    const bags = await db
      .selectFrom('relation_data')
      .select(['owner', 'settings'])
      .where('model_uuid', '=', world.model.uuid)
      .where('integration_id', '=', ep.integration_id)
      .execute();
    const data: Record<string, Record<string, string>> = {};
    for (const b of bags) data[b.owner] = b.settings;
    out.push({
      id: ep.integration_id,
      endpoint: ep.endpoint,
      interface: spec?.interface ?? '',
      role: spec?.role ?? (peer ? 'peer' : 'requires'),
      remoteApplication: remote.application,
      data,
      units: remoteUnits.map((u) => u.name).filter((n) => n !== world.unit.name),
    });
  }
  return out;
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

async function buildContext(db: Db, world: UnitWorld, ev: UnitEvent, contextId: string): Promise<HookContext> {
  const paths = unitPaths(world.machine.root_dir, world.unit.name);
  const siblings = await db
    .selectFrom('units')
    .select(['name', 'workload_status', 'workload_message'])
    .where('model_uuid', '=', world.model.uuid)
    .where('application', '=', world.app.name)
    .execute();
  return HookContext.parse({
    contextId,
    kind: 'hook',
    name: ev.hook,
    unit: world.unit.name,
    application: world.app.name,
    model: { name: world.model.name, uuid: world.model.uuid },
    machineId: world.machine.id,
    availabilityZone: '',
    charmDir: paths.charmDir,
    unitDir: paths.unitDir,
    toolsDir: paths.toolsDir,
    config: effectiveConfig(world.meta.config.options, world.app.config),
    isLeader: world.unit.leader,
    leaderSettings: world.app.leader_settings,
    relations: await loadRelations(db, world),
    relation: hookEnvRelation(ev),
    privateAddress: world.machine.address,
    publicAddress: world.machine.address,
    ports: world.unit.ports,
    unitStatus: { status: world.unit.workload_status, message: world.unit.workload_message },
    applicationStatus: { status: world.app.status, message: world.app.message },
    unitStatuses: Object.fromEntries(
      siblings.map((s) => [s.name, { status: s.workload_status, message: s.workload_message }]),
    ),
    charmState: world.unit.charm_state,
  });
}

function mergeSettings(
  current: Record<string, string>,
  changes: Record<string, string | null>,
): Record<string, string> {
  const next = { ...current };
  for (const [k, v] of Object.entries(changes)) {
    if (v === null || v === '') delete next[k];
    else next[k] = v;
  }
  return next;
}

/** The commit: everything the hook wrote, in one transaction, only after exit 0. */
async function commitChanges(tx: Tx, world: UnitWorld, ev: UnitEvent, changes: HookChanges): Promise<void> {
  const uuid = world.model.uuid;
  const unit = world.unit;
  const nextState = mergeSettings(unit.charm_state, changes.charmState);
  // the unit's committed state and its agent going idle, in one statement
  await sql`
    WITH changed AS (
      UPDATE units SET ports = ${JSON.stringify(changes.ports)}::jsonb,
        charm_state = ${JSON.stringify(nextState)}::jsonb,
        last_hook = ${ev.hook},
        installed = installed OR ${ev.hook === 'install'},
        agent_status = 'idle', agent_message = ''
      WHERE model_uuid = ${uuid} AND name = ${unit.name}
      RETURNING 1)
    INSERT INTO status_history (model_uuid, entity, kind, status, message)
    SELECT ${uuid}, ${unit.name}, 'agent', 'idle', '' FROM changed`.execute(tx);
  if (unit.leader && Object.keys(changes.leaderSettings).length > 0) {
    const app = await tx
      .selectFrom('applications')
      .select('leader_settings')
      .where('model_uuid', '=', uuid)
      .where('name', '=', world.app.name)
      .forUpdate()
      .executeTakeFirstOrThrow();
    await tx
      .updateTable('applications')
      .set({ leader_settings: JSON.stringify(mergeSettings(app.leader_settings, changes.leaderSettings)) })
      .where('model_uuid', '=', uuid)
      .where('name', '=', world.app.name)
      .execute();
  }
  for (const [rid, bag] of Object.entries(changes.relationSettings)) {
    const integrationId = Number(rid);
    const writes: [string, Record<string, string | null> | undefined][] = [
      [unit.name, bag.unit],
      [world.app.name, unit.leader ? bag.app : undefined],
    ];
    for (const [owner, settings] of writes) {
      if (!settings || Object.keys(settings).length === 0) continue;
      const row = await tx
        .selectFrom('relation_data')
        .select('settings')
        .where('model_uuid', '=', uuid)
        .where('integration_id', '=', integrationId)
        .where('owner', '=', owner)
        .forUpdate()
        .executeTakeFirst();
      const merged = JSON.stringify(mergeSettings(row?.settings ?? {}, settings));
      await tx
        .insertInto('relation_data')
        .values({ model_uuid: uuid, integration_id: integrationId, owner, settings: merged })
        .onConflict((oc) => oc.columns(['model_uuid', 'integration_id', 'owner']).doUpdateSet({ settings: merged }))
        .execute();
    }
  }
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

const LEVELS = new Set(['TRACE', 'DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL']);

export function createHookActivities(deps: ActivityDeps) {
  const { store } = deps;
  const db = store.db;

  async function targetFor(machine: MachineRow): Promise<MachineTarget> {
    return machineTarget(machine, deps.controllerKey);
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

  /** Executes the runner and streams its events into the store while the hook runs. */
  async function execRunner(world: UnitWorld, ctx: HookContext): Promise<HookResult> {
    const target = await targetFor(world.machine);
    const substrate = substrateFor(deps.substrates, target);
    const paths = unitPaths(world.machine.root_dir, world.unit.name);
    const activity = Context.current();
    let result: HookResult | null = null;
    let pending: Promise<void> = Promise.resolve();
    const logBuffer: LogLine[] = [];
    const flushLogs = () => {
      const lines = logBuffer.splice(0);
      pending = pending.then(() => appendLogs(db, world.model.uuid, world.unit.name, lines));
    };
    const handle = (line: string) => {
      let parsed: HookEvent;
      try {
        parsed = HookEvent.parse(JSON.parse(line));
      } catch {
        logBuffer.push({ level: 'WARNING', message: `${ctx.name}: (runner) ${line}` });
        return;
      }
      switch (parsed.type) {
        case 'log':
          logBuffer.push({
            level: LEVELS.has(parsed.level) ? parsed.level : 'INFO',
            message: parsed.message,
            at: new Date(parsed.ts),
          });
          break;
        case 'action-log':
          logBuffer.push({ level: 'INFO', message: parsed.message, at: new Date(parsed.ts) });
          break;
        case 'output':
          logBuffer.push({
            level: parsed.stream === 'stderr' ? 'WARNING' : 'DEBUG',
            message: `${ctx.name}: ${parsed.line}`,
            at: new Date(parsed.ts),
          });
          break;
        case 'status': {
          // status-set takes effect at once, while the hook still runs
          flushLogs();
          const { scope, status, message } = parsed;
          pending = pending.then(() =>
            scope === 'application'
              ? setApplicationStatus(db, world.model.uuid, world.app.name, status, message)
              : setWorkloadStatus(db, world.model.uuid, world.unit.name, status, message),
          );
          break;
        }
        case 'app-version': {
          const version = parsed.version;
          pending = pending.then(async () => {
            await db
              .updateTable('applications')
              .set({ workload_version: version })
              .where('model_uuid', '=', world.model.uuid)
              .where('name', '=', world.app.name)
              .execute();
          });
          break;
        }
        case 'result':
          result = parsed;
          break;
      }
      activity.heartbeat();
    };
    const splitter = new LineSplitter();
    const timer = setInterval(() => {
      flushLogs();
      activity.heartbeat();
    }, 1000);
    let stderr = '';
    let exec: Awaited<ReturnType<typeof substrate.exec>>;
    try {
      exec = await guardMachine(world.machine, () =>
        substrate.exec(target, {
          command: `python3 -S ${shellQuote(paths.runner)}`,
          stdin: JSON.stringify(ctx),
          onStdout: (chunk) => splitter.push(chunk, handle),
          onStderr: (chunk) => {
            stderr += chunk.toString('utf8');
          },
          signal: activity.cancellationSignal,
        }),
      );
    } finally {
      clearInterval(timer);
      flushLogs();
      await pending;
    }
    if (!result) {
      // The channel died or the runner broke. The hook itself goes on under its
      // supervisor on the machine; a retry of this activity attaches to it.
      const why = exec.code === null ? 'the connection to the machine was lost' : `runner exited ${exec.code}`;
      throw ApplicationFailure.retryable(
        `${why} during ${ctx.name} on ${world.unit.name}: ${stderr.trim().slice(-500)}`,
        'RunnerLost',
      );
    }
    return result;
  }

  return {
    /** Ships the charm to the unit's machine and creates the unit's directories. */
    async prepareUnit(ref: UnitRef): Promise<void> {
      const world = await loadWorld(db, ref);
      if (!world) return;
      const charm = await getCharm(db, world.app.charm_name, world.app.charm_revision);
      if (!charm) throw new Error(`charm ${world.app.charm_name} revision ${world.app.charm_revision} is gone`);
      const files = charm.files;
      const target = await targetFor(world.machine);
      const paths = unitPaths(world.machine.root_dir, ref.unit);
      const res = await guardMachine(world.machine, () =>
        substrateFor(deps.substrates, target).exec(target, {
          command: `mkdir -p ${shellQuote(paths.charmDir)} && chmod 0755 ${shellQuote(paths.unitDir)} && tar -x -p -f - -C ${shellQuote(paths.charmDir)}`,
          stdin: charmTarball(files),
          timeoutMs: 120_000,
        }),
      );
      if (res.code !== 0)
        throw new Error(`cannot unpack the charm on machine ${world.machine.id}: ${res.stderr.trim()}`);
      await setAgentStatus(db, ref.modelUuid, ref.unit, 'idle', '');
      if (world.unit.workload_status === 'waiting') {
        await setWorkloadStatus(db, ref.modelUuid, ref.unit, 'maintenance', 'installing charm software');
      }
    },

    async runHook(ref: UnitRef, ev: UnitEvent, contextId: string): Promise<HookOutcome> {
      const world = await loadWorld(db, ref);
      if (!world) return { ok: true, skipped: true, gone: true, message: 'unit removed' };
      const fresh = await db
        .insertInto('hook_runs')
        .values({ context_id: contextId, model_uuid: ref.modelUuid, unit: ref.unit, hook: ev.hook })
        .onConflict((oc) => oc.column('context_id').doNothing())
        .returning('context_id')
        .executeTakeFirst();
      if (!fresh) {
        const done = await db
          .selectFrom('hook_runs')
          .selectAll()
          .where('context_id', '=', contextId)
          .executeTakeFirst();
        if (done?.finished_at) {
          // this execution already finished and was recorded: never run a hook twice
          const ok = done.exit_code === 0;
          return { ok, skipped: false, gone: false, message: ok ? '' : `hook failed: "${ev.hook}"` };
        }
      }
      await setAgentStatus(db, ref.modelUuid, ref.unit, 'executing', `running ${ev.hook} hook`);
      const ctx = await buildContext(db, world, ev, contextId);
      const result = await execRunner(world, ctx);
      const ok = result.exitCode === 0 && !result.timedOut;
      if (ok) {
        await db.transaction().execute(async (tx) => {
          const run = await tx
            .updateTable('hook_runs')
            .set({ exit_code: 0, committed: true, finished_at: sql`now()`, ...timings(result) })
            .where('context_id', '=', contextId)
            .where('committed', '=', false)
            .executeTakeFirst();
          // a retried activity whose first attempt already committed commits nothing again
          if (Number(run.numUpdatedRows) === 1) await commitChanges(tx, world, ev, result.changes);
          else await setAgentStatus(tx, ref.modelUuid, ref.unit, 'idle', '');
        });
        return { ok: true, skipped: result.skipped, gone: false, message: '' };
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

    /** `resolve --no-retry`: the failed hook is skipped; the unit leaves error. */
    async markHookSkipped(ref: UnitRef, hook: string): Promise<void> {
      await db.transaction().execute(async (tx) => {
        await setWorkloadStatus(tx, ref.modelUuid, ref.unit, 'maintenance', `${hook} hook skipped by resolve`);
        await setAgentStatus(tx, ref.modelUuid, ref.unit, 'idle', '');
      });
    },

    /** After the remove hook: clean the unit's files off its machine and forget the unit. */
    async finishUnitRemoval(ref: UnitRef): Promise<void> {
      const world = await loadWorld(db, ref);
      if (world) {
        const target = await targetFor(world.machine);
        const paths = unitPaths(world.machine.root_dir, ref.unit);
        await substrateFor(deps.substrates, target).exec(target, {
          command: `rm -rf ${shellQuote(paths.unitDir)}`,
          timeoutMs: 60_000,
        });
      }
      await deleteUnit(db, ref);
    },
  };
}

/** Removes a unit's rows; the last unit of a dying application takes the application with it. */
export async function deleteUnit(db: Db, ref: UnitRef): Promise<void> {
  await db.transaction().execute(async (tx) => {
    const unit = await tx
      .selectFrom('units')
      .select(['application'])
      .where('model_uuid', '=', ref.modelUuid)
      .where('name', '=', ref.unit)
      .executeTakeFirst();
    if (!unit) return;
    await tx.deleteFrom('units').where('model_uuid', '=', ref.modelUuid).where('name', '=', ref.unit).execute();
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
      await tx
        .deleteFrom('applications')
        .where('model_uuid', '=', ref.modelUuid)
        .where('name', '=', unit.application)
        .execute();
    }
  });
}

export type HookActivities = ReturnType<typeof createHookActivities>;
