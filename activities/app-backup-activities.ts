// Activities of application backups and schedules (issue 11): fetch the artifact a
// charm's `backup` action left on a unit into the controller's backup store (streamed
// to disk, bounded, sha256 computed on the way and checked against the unit's),
// copy one back to a unit for its `restore` action, and the bookkeeping of schedule
// runs (each run records an operation, as the API would, so it shows in `operations`).
import { createHash } from 'node:crypto';
import {
  closeSync,
  createReadStream,
  existsSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { join, posix } from 'node:path';
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { sql } from 'kysely';
import { workflowIdFor } from '../api/operation-starter.ts';
import { ActionParamsError, checkActionParams } from '../charm/action-params.ts';
import { getCharmInfo } from '../charm/charm-store.ts';
import type { MachineRow, OperationStart } from '../store/schema.ts';
import type {
  AppBackupRow,
  AppScheduleRow,
  AppScheduleRunState,
  BackupScheduleParams,
  RefreshScheduleParams,
} from '../store/schema-app-backups.ts';
import type { Db, Tx } from '../store/store.ts';
import type { ActivityDeps } from './deps.ts';
import { machineTarget, unitPaths } from './machine-target.ts';
import {
  HostKeyMismatchError,
  type MachineTarget,
  MachineUnreachableError,
  shellQuote,
  substrateFor,
} from './substrates/index.ts';

/** The action result keys that name the artifact, in the order they are looked at. */
export const ARTIFACT_RESULT_KEYS = ['path', 'artifact'] as const;

/** The largest artifact fetched (CHARMFLOW_APP_BACKUP_MAX_BYTES, default 1 GiB). */
export function maxArtifactBytes(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.CHARMFLOW_APP_BACKUP_MAX_BYTES;
  const n = raw ? Number(raw) : 1024 ** 3;
  return Number.isSafeInteger(n) && n > 0 ? n : 1024 ** 3;
}

/** Bytes sent to a unit per exec when an artifact is copied back (CHARMFLOW_APP_BACKUP_CHUNK_BYTES, default 8 MiB). */
function chunkBytes(env: NodeJS.ProcessEnv = process.env): number {
  const n = Number(env.CHARMFLOW_APP_BACKUP_CHUNK_BYTES ?? 8 * 1024 * 1024);
  return Number.isSafeInteger(n) && n >= 1 ? n : 8 * 1024 * 1024;
}

/** Where the controller keeps a model's application backups. */
export function appBackupDir(dataDir: string, modelUuid: string): string {
  return join(dataDir, 'backups', 'apps', modelUuid);
}

export function appBackupFile(dataDir: string, modelUuid: string, id: number): string {
  return join(appBackupDir(dataDir, modelUuid), String(id));
}

/** Where a backup is copied on a unit for its restore action: `<unit dir>/restore/<backup id>/<name>`. */
export function restoreArtifactPath(rootDir: string, unit: string, backupId: number, originalPath: string): string {
  return `${restoreArtifactDir(rootDir, unit, backupId)}/${artifactName(originalPath)}`;
}

function restoreArtifactDir(rootDir: string, unit: string, backupId: number): string {
  return `${unitPaths(rootDir, unit).unitDir}/restore/${backupId}`;
}

/** The artifact's file name, kept when it is copied back (charms may look at its extension); safe characters only. */
function artifactName(originalPath: string): string {
  const base = posix.basename(originalPath).replace(/[^A-Za-z0-9._-]/g, '_');
  return base === '' || base.startsWith('.') ? `artifact${base}` : base;
}

export interface BackupSummary {
  id: number;
  unit: string;
  path: string;
  size: number;
  sha256: string;
}

/** What a schedule run does: nothing (with why), or the operation it recorded and how to start its workflow. */
export type ScheduleRunStart =
  | { skipped: string; state: AppScheduleRunState }
  | { operationId: number; workflowId: string; workflow: string; args: unknown[]; summary: string };

export function toBackupSummary(row: AppBackupRow): BackupSummary {
  return { id: row.id, unit: row.unit, path: row.path, size: Number(row.size), sha256: row.sha256 };
}

function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

/** A machine that cannot be reached is retried; one whose host key changed never is. */
function machineFailure(err: unknown): unknown {
  if (err instanceof HostKeyMismatchError) return ApplicationFailure.nonRetryable(err.message, 'HostKeyMismatch');
  if (err instanceof MachineUnreachableError) return ApplicationFailure.retryable(err.message, 'MachineUnreachable');
  return err;
}

export function createAppBackupActivities(deps: ActivityDeps) {
  const { store } = deps;
  const db = store.db;

  async function unitMachine(modelUuid: string, unit: string): Promise<{ machine: MachineRow; target: MachineTarget }> {
    const row = await db
      .selectFrom('units')
      .select(['machine_id'])
      .where('model_uuid', '=', modelUuid)
      .where('name', '=', unit)
      .executeTakeFirst();
    if (!row) throw ApplicationFailure.nonRetryable(`unit ${unit} is gone`, 'UnitGone');
    if (!row.machine_id) throw ApplicationFailure.nonRetryable(`unit ${unit} has no machine`, 'NoMachine');
    const machine = await db
      .selectFrom('machines')
      .selectAll()
      .where('model_uuid', '=', modelUuid)
      .where('id', '=', row.machine_id)
      .executeTakeFirst();
    if (!machine) throw ApplicationFailure.nonRetryable(`machine ${row.machine_id} of ${unit} is gone`, 'NoMachine');
    return { machine, target: machineTarget(machine, deps.controllerKey, store.secrets) };
  }

  async function exec(target: MachineTarget, req: Parameters<ReturnType<typeof substrateFor>['exec']>[1]) {
    try {
      return await substrateFor(deps.substrates, target).exec(target, req);
    } catch (err) {
      throw machineFailure(err);
    }
  }

  /** sha256 of a file on a machine (coreutils' sha256sum). */
  async function remoteSha256(target: MachineTarget, path: string): Promise<string> {
    const res = await exec(target, { command: `sha256sum -- ${shellQuote(path)}`, timeoutMs: 30 * 60_000 });
    const sum = /^([0-9a-f]{64})\b/.exec(res.stdout.trim())?.[1];
    if (res.code !== 0 || !sum) throw new Error(`cannot checksum ${path} on the unit: ${res.stderr.trim()}`);
    return sum;
  }

  function localSha256(file: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const hash = createHash('sha256');
      createReadStream(file)
        .on('data', (chunk) => {
          hash.update(chunk);
          activityContext()?.heartbeat();
        })
        .on('error', reject)
        .on('end', () => resolve(hash.digest('hex')));
    });
  }

  return {
    /**
     * The backup action of `operationId` ended: fetch the artifact it named (result
     * `path`, else `artifact`; relative to the charm dir) from the unit into
     * `<data dir>/backups/apps/<model uuid>/<id>` (0600), streamed to disk with a
     * bound, its sha256 computed on the way and checked against the unit's (and the
     * charm's, when it returned `sha256`). Idempotent: one backup per operation.
     */
    async fetchBackupArtifact(input: {
      operationId: number;
      modelUuid: string;
      application: string;
      unit: string;
      scheduleId?: number;
    }): Promise<BackupSummary> {
      const op = await db
        .selectFrom('operations')
        .select(['results', 'model_name'])
        .where('id', '=', input.operationId)
        .executeTakeFirst();
      const results = op?.results?.results ?? {};
      const named = ARTIFACT_RESULT_KEYS.map((k) => results[k]).find((v) => typeof v === 'string' && v !== '');
      if (typeof named !== 'string') {
        throw ApplicationFailure.nonRetryable(
          `the backup action on ${input.unit} returned no artifact: it must action-set path=<file> (or artifact=<file>)`,
          'NoArtifact',
        );
      }
      if (named.includes('\0') || named.includes('\n')) {
        throw ApplicationFailure.nonRetryable('the artifact path holds a NUL or newline', 'BadArtifactPath');
      }
      const existing = await db
        .selectFrom('app_backups')
        .selectAll()
        .where('operation_id', '=', input.operationId)
        .executeTakeFirst();
      if (existing) {
        const file = appBackupFile(deps.dataDir, input.modelUuid, existing.id);
        if (existsSync(file) && statSync(file).size === Number(existing.size)) return toBackupSummary(existing);
      }
      const { machine, target } = await unitMachine(input.modelUuid, input.unit);
      const paths = unitPaths(machine.root_dir, input.unit);
      const path = posix.isAbsolute(named) ? posix.normalize(named) : posix.join(paths.charmDir, named);
      const app = await db
        .selectFrom('applications')
        .select(['charm_name', 'charm_revision'])
        .where('model_uuid', '=', input.modelUuid)
        .where('name', '=', input.application)
        .executeTakeFirst();
      const unitRev = await db
        .selectFrom('units')
        .select('charm_revision')
        .where('model_uuid', '=', input.modelUuid)
        .where('name', '=', input.unit)
        .executeTakeFirst();

      const dir = appBackupDir(deps.dataDir, input.modelUuid);
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      const partial = join(dir, `.partial-op${input.operationId}`);
      const limit = maxArtifactBytes();
      const hash = createHash('sha256');
      let size = 0;
      const fd = openSync(partial, 'w', 0o600);
      const ctx = activityContext();
      let res: Awaited<ReturnType<typeof exec>>;
      try {
        res = await exec(target, {
          command: `p=${shellQuote(path)}; if [ ! -f "$p" ] || [ ! -r "$p" ]; then echo "no readable file at $p" >&2; exit 3; fi; exec cat -- "$p"`,
          onStdout: (chunk) => {
            size += chunk.length;
            if (size > limit) {
              throw ApplicationFailure.nonRetryable(
                `the artifact ${path} on ${input.unit} is larger than ${limit} bytes (CHARMFLOW_APP_BACKUP_MAX_BYTES)`,
                'ArtifactTooLarge',
              );
            }
            hash.update(chunk);
            writeSync(fd, chunk);
            ctx?.heartbeat(size);
          },
          signal: ctx?.cancellationSignal,
          timeoutMs: 60 * 60_000,
        });
        fsyncSync(fd);
      } catch (err) {
        rmSync(partial, { force: true });
        throw err;
      } finally {
        closeSync(fd);
      }
      if (res.code !== 0) {
        rmSync(partial, { force: true });
        const why = res.stderr.trim() || (res.code === null ? 'killed' : `exit ${res.code}`);
        if (res.code === 3) throw ApplicationFailure.nonRetryable(`${input.unit}: ${why}`, 'ArtifactMissing');
        throw new Error(`cannot read the artifact ${path} on ${input.unit}: ${why}`);
      }
      const sha256 = hash.digest('hex');
      const onUnit = await remoteSha256(target, path);
      if (onUnit !== sha256) {
        rmSync(partial, { force: true });
        // the file changed while it was read: the retry reads it again
        throw new Error(`the artifact ${path} changed while it was fetched (sha256 ${sha256} read, ${onUnit} now)`);
      }
      const claimed = results.sha256;
      if (typeof claimed === 'string' && claimed !== '' && claimed.toLowerCase() !== sha256) {
        rmSync(partial, { force: true });
        throw ApplicationFailure.nonRetryable(
          `the artifact fetched from ${input.unit} has sha256 ${sha256}, the backup action said ${claimed}`,
          'ChecksumMismatch',
        );
      }
      const row = await db.transaction().execute(async (tx) => {
        const values = {
          model_uuid: input.modelUuid,
          model_name: op?.model_name ?? '',
          application: input.application,
          unit: input.unit,
          charm_name: app?.charm_name ?? '',
          charm_revision: unitRev?.charm_revision ?? app?.charm_revision ?? 0,
          operation_id: input.operationId,
          path,
          size,
          sha256,
          schedule_id: input.scheduleId ?? null,
        };
        const saved = existing
          ? await tx
              .updateTable('app_backups')
              .set({ path, size, sha256 })
              .where('id', '=', existing.id)
              .returningAll()
              .executeTakeFirstOrThrow()
          : await tx.insertInto('app_backups').values(values).returningAll().executeTakeFirstOrThrow();
        // in the transaction: once the row is seen, its file is there
        renameSync(partial, appBackupFile(deps.dataDir, input.modelUuid, saved.id));
        return saved;
      });
      return toBackupSummary(row);
    },

    /**
     * Copies backup `backupId` to the unit (`<unit dir>/restore/<id>/<name>`, 0600), in
     * chunks, checks its sha256 there, and makes that path the restore action's `path`
     * param (in the operation's row, like every action param). Returns the path.
     */
    async pushBackupArtifact(input: {
      operationId: number;
      backupId: number;
      modelUuid: string;
      unit: string;
    }): Promise<string> {
      const backup = await db.selectFrom('app_backups').selectAll().where('id', '=', input.backupId).executeTakeFirst();
      if (!backup) throw ApplicationFailure.nonRetryable(`backup ${input.backupId} is gone`, 'BackupGone');
      const file = appBackupFile(deps.dataDir, backup.model_uuid, backup.id);
      if (!existsSync(file)) {
        throw ApplicationFailure.nonRetryable(
          `the artifact of backup ${backup.id} is missing from the controller's backup store (${file})`,
          'ArtifactMissing',
        );
      }
      const local = await localSha256(file);
      if (local !== backup.sha256) {
        throw ApplicationFailure.nonRetryable(
          `the artifact of backup ${backup.id} is damaged: sha256 ${local}, recorded ${backup.sha256}`,
          'ArtifactCorrupt',
        );
      }
      const { machine, target } = await unitMachine(input.modelUuid, input.unit);
      const dir = restoreArtifactDir(machine.root_dir, input.unit, backup.id);
      const dest = restoreArtifactPath(machine.root_dir, input.unit, backup.id, backup.path);
      const part = `${dest}.part`;
      const ctx = activityContext();
      const total = Number(backup.size);
      const step = chunkBytes();
      const fd = openSync(file, 'r');
      try {
        let offset = 0;
        do {
          const buf = Buffer.alloc(Math.min(step, total - offset));
          const n = buf.length > 0 ? readSync(fd, buf, 0, buf.length, offset) : 0;
          const first = offset === 0;
          const command = first
            ? `umask 077 && mkdir -p ${shellQuote(dir)} && chmod 0700 ${shellQuote(dir)} && cat > ${shellQuote(part)}`
            : `cat >> ${shellQuote(part)}`;
          const res = await exec(target, {
            command,
            stdin: buf.subarray(0, n),
            signal: ctx?.cancellationSignal,
            timeoutMs: 10 * 60_000,
          });
          if (res.code !== 0) {
            throw new Error(
              `cannot copy backup ${backup.id} to ${input.unit}: ${res.stderr.trim() || `exit ${res.code}`}`,
            );
          }
          offset += n;
          ctx?.heartbeat(offset);
        } while (offset < total);
      } finally {
        closeSync(fd);
      }
      const onUnit = await remoteSha256(target, part);
      if (onUnit !== backup.sha256) {
        throw new Error(`backup ${backup.id} arrived on ${input.unit} with sha256 ${onUnit}, not ${backup.sha256}`);
      }
      const moved = await exec(target, {
        command: `chmod 0600 ${shellQuote(part)} && mv -f ${shellQuote(part)} ${shellQuote(dest)}`,
        timeoutMs: 60_000,
      });
      if (moved.code !== 0)
        throw new Error(`cannot place backup ${backup.id} on ${input.unit}: ${moved.stderr.trim()}`);
      await db
        .updateTable('operations')
        .set({
          params: sql`jsonb_set(params, '{params,path}', to_jsonb(${dest}::text), true)`,
          updated_at: sql`now()`,
        })
        .where('id', '=', input.operationId)
        .execute();
      return dest;
    },

    /** Backup `backupId` goes: its artifact from the backup store, then its record. Idempotent. */
    async removeBackupArtifact(backupId: number): Promise<boolean> {
      const row = await db
        .selectFrom('app_backups')
        .select(['model_uuid'])
        .where('id', '=', backupId)
        .executeTakeFirst();
      if (!row) return false;
      rmSync(appBackupFile(deps.dataDir, row.model_uuid, backupId), { force: true });
      await db.deleteFrom('app_backups').where('id', '=', backupId).execute();
      return true;
    },

    /**
     * Schedule `scheduleId` keeps its newest `keep` backups: older ones it made go
     * (artifact, then record), except one a restore in progress uses. Returns their ids.
     */
    async pruneScheduledBackups(scheduleId: number, keep: number): Promise<number[]> {
      const rows = await db
        .selectFrom('app_backups')
        .select(['id', 'model_uuid'])
        .where('schedule_id', '=', scheduleId)
        .orderBy('id', 'desc')
        .offset(keep)
        .limit(1000)
        .execute();
      const busy = new Set(
        (
          await db
            .selectFrom('operations')
            .select(sql<number>`(params->>'backup')::int`.as('backup'))
            .where('kind', '=', 'restore-application')
            .where('state', 'in', ['pending', 'running'])
            .execute()
        ).map((r) => Number(r.backup)),
      );
      const removed: number[] = [];
      for (const r of rows) {
        if (busy.has(r.id)) continue;
        rmSync(appBackupFile(deps.dataDir, r.model_uuid, r.id), { force: true });
        await db.deleteFrom('app_backups').where('id', '=', r.id).execute();
        removed.push(r.id);
      }
      return removed;
    },

    /** The copy of backup `backupId` on the unit goes once the restore action ended; an unreachable machine keeps it. */
    async removeRestoredArtifact(input: { modelUuid: string; unit: string; backupId: number }): Promise<void> {
      let where: Awaited<ReturnType<typeof unitMachine>>;
      try {
        where = await unitMachine(input.modelUuid, input.unit);
      } catch {
        return;
      }
      try {
        await exec(where.target, {
          command: `rm -rf -- ${shellQuote(restoreArtifactDir(where.machine.root_dir, input.unit, input.backupId))}`,
          timeoutMs: 60_000,
        });
      } catch {
        // best effort: the copy is the unit's own data, readable by the unit only
      }
    },

    /**
     * A run of schedule `scheduleId` begins (`workflowId`: the run's workflow). It
     * records the operation the run makes, with how to start its workflow, as the API
     * does (so it shows in `operations` and the reconciler can start it), and the run;
     * or records why the run does nothing. Idempotent per run.
     */
    async startScheduleRun(input: { scheduleId: number; workflowId: string }): Promise<ScheduleRunStart> {
      const schedule = await db
        .selectFrom('app_schedules')
        .selectAll()
        .where('id', '=', input.scheduleId)
        .executeTakeFirst();
      if (!schedule) return { skipped: `schedule ${input.scheduleId} was deleted`, state: 'skipped' };
      const known = await runStart(db, input.workflowId);
      if (known) return known;
      const plan = await planScheduledRun(db, schedule);
      if ('skipped' in plan) {
        await db
          .insertInto('app_schedule_runs')
          .values({
            schedule_id: schedule.id,
            workflow_id: input.workflowId,
            state: plan.state,
            message: plan.skipped,
            finished_at: sql`now()`,
          })
          .onConflict((oc) => oc.column('workflow_id').doNothing())
          .execute();
        if (plan.pause) await pauseSchedule(db, schedule, plan.skipped);
        return { skipped: plan.skipped, state: plan.state };
      }
      try {
        await db.transaction().execute(async (tx) => {
          // first: a second attempt of this run conflicts here and records nothing
          const run = await tx
            .insertInto('app_schedule_runs')
            .values({ schedule_id: schedule.id, workflow_id: input.workflowId })
            .returning('id')
            .executeTakeFirstOrThrow();
          const op = await tx
            .insertInto('operations')
            .values({
              model_name: schedule.model_name,
              kind: plan.kind,
              target: plan.target,
              summary: plan.summary,
              created_by: `schedule ${schedule.id}`,
              params: JSON.stringify(plan.params),
              progress: '{}',
              ...(plan.kind === 'backup-application'
                ? { results: JSON.stringify({ status: 'running', results: {}, log: [], message: '' }) }
                : {}),
            })
            .returning('id')
            .executeTakeFirstOrThrow();
          const start: OperationStart = { workflow: plan.workflow, args: [plan.args(op.id)] };
          await tx
            .updateTable('operations')
            .set({ workflow_id: workflowIdFor(schedule.model_name, plan.kind, op.id), start: JSON.stringify(start) })
            .where('id', '=', op.id)
            .execute();
          await tx.updateTable('app_schedule_runs').set({ operation_id: op.id }).where('id', '=', run.id).execute();
        });
      } catch (err) {
        const again = await runStart(db, input.workflowId);
        if (again) return again;
        throw err;
      }
      return (await runStart(db, input.workflowId)) as ScheduleRunStart;
    },

    /** How a schedule run ended. Keeps the last 100 runs of each schedule. */
    async finishScheduleRun(input: { workflowId: string; state: AppScheduleRunState; message: string }): Promise<void> {
      const run = await db
        .updateTable('app_schedule_runs')
        .set({ state: input.state, message: input.message.slice(0, 4000), finished_at: sql`now()` })
        .where('workflow_id', '=', input.workflowId)
        .returning('schedule_id')
        .executeTakeFirst();
      if (!run) return;
      await db
        .deleteFrom('app_schedule_runs')
        .where('schedule_id', '=', run.schedule_id)
        .where(
          'id',
          'not in',
          db
            .selectFrom('app_schedule_runs')
            .select('id')
            .where('schedule_id', '=', run.schedule_id)
            .orderBy('id', 'desc')
            .limit(100),
        )
        .execute();
    },

    /** Until operation `operationId` ends (its workflow was started by someone else: the reconciler). */
    async awaitOperationEnd(operationId: number): Promise<{ state: string; error: string | null }> {
      const ctx = activityContext();
      while (true) {
        const op = await db
          .selectFrom('operations')
          .select(['state', 'error'])
          .where('id', '=', operationId)
          .executeTakeFirst();
        if (!op) return { state: 'failed', error: `operation ${operationId} is gone` };
        if (op.state === 'succeeded' || op.state === 'failed' || op.state === 'cancelled') return op;
        ctx?.heartbeat();
        await new Promise((r) => setTimeout(r, 2_000));
        if (ctx?.cancellationSignal.aborted) throw ctx.cancellationSignal.reason;
      }
    },
  };
}

/** A run already recorded under this workflow id: what it started, or why it did nothing. */
async function runStart(db: Db, workflowId: string): Promise<ScheduleRunStart | undefined> {
  const run = await db
    .selectFrom('app_schedule_runs')
    .leftJoin('operations', 'operations.id', 'app_schedule_runs.operation_id')
    .select([
      'app_schedule_runs.state',
      'app_schedule_runs.message',
      'app_schedule_runs.operation_id',
      'operations.workflow_id',
      'operations.start',
      'operations.summary',
    ])
    .where('app_schedule_runs.workflow_id', '=', workflowId)
    .executeTakeFirst();
  if (!run) return undefined;
  if (run.operation_id === null || !run.start || !run.workflow_id) {
    return { skipped: run.message || 'nothing to do', state: run.state === 'running' ? 'skipped' : run.state };
  }
  return {
    operationId: run.operation_id,
    workflowId: run.workflow_id,
    workflow: run.start.workflow,
    args: run.start.args,
    summary: run.summary ?? '',
  };
}

type RunPlan =
  | { skipped: string; state: AppScheduleRunState; pause?: boolean }
  | {
      kind: string;
      target: string;
      summary: string;
      workflow: string;
      params: Record<string, unknown>;
      args: (operationId: number) => Record<string, unknown>;
    };

/** What a run of `schedule` does now, decided from the model store as the API would decide it. */
async function planScheduledRun(db: Db, schedule: AppScheduleRow): Promise<RunPlan> {
  const model = await db.selectFrom('models').selectAll().where('uuid', '=', schedule.model_uuid).executeTakeFirst();
  if (model?.life !== 'alive') {
    return { skipped: `model ${schedule.model_name} is gone: schedule paused`, state: 'skipped', pause: true };
  }
  const app = await db
    .selectFrom('applications')
    .selectAll()
    .where('model_uuid', '=', model.uuid)
    .where('name', '=', schedule.application)
    .executeTakeFirst();
  if (app?.life !== 'alive') {
    return {
      skipped: `application ${schedule.application} is gone: schedule paused`,
      state: 'skipped',
      pause: true,
    };
  }
  const base = {
    operationId: 0,
    model: model.name,
    modelUuid: model.uuid,
    application: app.name,
  };
  if (schedule.kind === 'backup') {
    const p = schedule.params as BackupScheduleParams;
    const unit = await db
      .selectFrom('units')
      .select(['name', 'life'])
      .where('model_uuid', '=', model.uuid)
      .where('application', '=', app.name)
      .where('life', '=', 'alive')
      .$if(p.unit === 'leader', (q) => q.where('leader', '=', true))
      .$if(p.unit !== 'leader', (q) => q.where('number', '=', p.unit as number))
      .executeTakeFirst();
    if (!unit) {
      const which = p.unit === 'leader' ? 'no leader now' : `no unit ${app.name}/${p.unit}`;
      return { skipped: `application ${app.name} has ${which}`, state: 'skipped' };
    }
    const charm = await getCharmInfo(db, app.charm_name, app.charm_revision);
    const spec = charm?.meta.actions.backup;
    if (!spec) {
      return {
        skipped: `${app.charm_name} revision ${app.charm_revision} has no backup action`,
        state: 'failed',
      };
    }
    let params: Record<string, unknown>;
    try {
      params = checkActionParams(`${app.charm_name}:${app.charm_revision}`, 'backup', spec, p.params);
    } catch (err) {
      if (!(err instanceof ActionParamsError)) throw err;
      return { skipped: `the backup action refuses the schedule's params: ${err.message}`, state: 'failed' };
    }
    return {
      kind: 'backup-application',
      target: unit.name,
      summary: `back up ${unit.name} (schedule ${schedule.id})`,
      workflow: 'appBackupWorkflow',
      params: { action: 'backup', params, schedule: schedule.id },
      args: (operationId) => ({
        ...base,
        operationId,
        kind: 'backup-application',
        unit: unit.name,
        scheduleId: schedule.id,
        ...(p.keep !== undefined ? { keep: p.keep } : {}),
      }),
    };
  }
  // refresh: the same decisions as the refresh route
  const p = schedule.params as RefreshScheduleParams;
  const target = await getCharmInfo(db, app.charm_name, p.revision);
  if (!target) {
    return {
      skipped: `${app.charm_name}${p.revision !== undefined ? ` revision ${p.revision}` : ''} is not in the charm store`,
      state: 'failed',
    };
  }
  if (target.revision === app.charm_revision) {
    return { skipped: `${app.name} already runs ${app.charm_name} revision ${target.revision}`, state: 'skipped' };
  }
  const running = await db
    .selectFrom('operations')
    .select(['id', 'state'])
    .where('model_name', '=', model.name)
    .where('kind', '=', 'refresh')
    .where('target', '=', app.name)
    .where('state', 'in', ['pending', 'running'])
    .executeTakeFirst();
  if (running) return { skipped: `refresh operation ${running.id} is ${running.state}`, state: 'skipped' };
  const from = await getCharmInfo(db, app.charm_name, app.charm_revision);
  const inUse = await db
    .selectFrom('integration_endpoints')
    .select(['endpoint', 'role'])
    .distinct()
    .where('model_uuid', '=', model.uuid)
    .where('application', '=', app.name)
    .execute();
  for (const e of inUse) {
    const now = from?.meta.endpoints.find((x) => x.name === e.endpoint);
    const next = target.meta.endpoints.find((x) => x.name === e.endpoint);
    if (!next || next.role !== now?.role || next.interface !== now?.interface) {
      return {
        skipped: `revision ${target.revision} of ${target.name} drops or changes endpoint "${e.endpoint}", which is in use`,
        state: 'failed',
      };
    }
  }
  if (p.probe && !target.meta.actions[p.probe]) {
    return {
      skipped: `revision ${target.revision} of ${target.name} has no action "${p.probe}" to probe with`,
      state: 'failed',
    };
  }
  const members = await db
    .selectFrom('units')
    .select(['name', 'leader'])
    .where('model_uuid', '=', model.uuid)
    .where('application', '=', app.name)
    .where('life', '=', 'alive')
    .orderBy('number')
    .execute();
  const leader = members.find((u) => u.leader)?.name;
  const rest = members.filter((u) => !u.leader).map((u) => u.name);
  const batches: string[][] = [];
  for (let i = 0; i < rest.length; i += p.maxUnavailable) batches.push(rest.slice(i, i + p.maxUnavailable));
  if (leader) batches.push([leader]);
  return {
    kind: 'refresh',
    target: app.name,
    summary: `refresh ${app.name} from revision ${app.charm_revision} to ${target.revision} (schedule ${schedule.id}, ${batches.length} batch(es), max-unavailable ${p.maxUnavailable})`,
    workflow: 'refreshWorkflow',
    params: { from: app.charm_revision, to: target.revision, batches, params: {}, schedule: schedule.id },
    args: (operationId) => ({
      ...base,
      operationId,
      kind: 'refresh',
      fromRevision: app.charm_revision,
      toRevision: target.revision,
      batches,
      gateTimeoutSeconds: p.gateTimeoutSeconds,
      pauseAfterFirst: false,
      ...(p.probe ? { probe: p.probe } : {}),
    }),
  };
}

/** A schedule whose application or model is gone stops: its Temporal Schedule is paused, saying why. */
async function pauseSchedule(db: Db | Tx, schedule: AppScheduleRow, why: string): Promise<void> {
  await db.updateTable('app_schedules').set({ paused: true, note: why }).where('id', '=', schedule.id).execute();
  const ctx = activityContext();
  if (!ctx) return;
  try {
    await ctx.client.schedule.getHandle(schedule.schedule_id).pause(why);
  } catch {
    // deleted meanwhile, or Temporal busy: the next run pauses it again
  }
}

export type AppBackupActivities = ReturnType<typeof createAppBackupActivities>;
