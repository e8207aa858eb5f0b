// Application backups and schedules (issue 11).
//
// Backups: the charm's `backup` action runs on a unit and names an artifact (action
// result `path`, or `artifact`); the operation fetches it into the controller's backup
// store and lists it with its size and sha256. A restore copies a backup back to a
// unit and runs the charm's `restore` action with the copy's path as `path`.
//
// Schedules: recurring backups and refreshes of an application as Temporal Schedules
// (cron or interval, time zone, overlap policy), paused, resumed, triggered and
// deleted by id; each run records an operation and its outcome.
import {
  isGrpcServiceError,
  ScheduleAlreadyRunning,
  ScheduleNotFoundError,
  type ScheduleOptions,
  ScheduleOverlapPolicy,
  ServiceError,
} from '@temporalio/client';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { sql } from 'kysely';
import { z } from 'zod';
import { ActionParamsError, checkActionParams } from '../../charm/action-params.ts';
import { getCharmInfo } from '../../charm/charm-store.ts';
import type { ActionSpec, CharmMeta } from '../../charm/metadata.ts';
import type { ApplicationRow, ModelRow } from '../../store/schema.ts';
import type {
  AppBackupRow,
  AppScheduleOverlap,
  AppScheduleRow,
  BackupScheduleParams,
  RefreshScheduleParams,
} from '../../store/schema-app-backups.ts';
import type { Db } from '../../store/store.ts';
import { ApplicationKey, ModelKey, OperationKindKey } from '../../workflows/search-attributes.ts';
import { ApiError, BadRequestError, ConflictError, NotFoundError } from '../errors.ts';
import { findModel } from '../model-lookup.ts';
import { iso, startOperation, type TemporalDeps, toOperation } from '../operation-starter.ts';
import { Accepted, AppParams, bodyInt, ErrorBody, ModelParam, queryInt, Text } from '../schemas.ts';
import { markActionRunning } from './actions.ts';

// ---------------------------------------------------------------------------
// Cron expressions, intervals and time zones: checked here, before anything is made,
// so a bad one is a 400 naming the field (Temporal refuses them too; that is mapped
// to the same 400).

const CRON_MACROS = new Set(['@yearly', '@annually', '@monthly', '@weekly', '@daily', '@midnight', '@hourly']);
const MONTHS = ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'];
const DAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'];

interface CronField {
  name: string;
  min: number;
  max: number;
  names?: string[];
  /** The first name's value (months: 1, days: 0). */
  namesFrom?: number;
  /** Day of week: `d#n`, the n-th such day of the month. */
  nth?: boolean;
}

const SECOND: CronField = { name: 'second', min: 0, max: 59 };
const MINUTE: CronField = { name: 'minute', min: 0, max: 59 };
const HOUR: CronField = { name: 'hour', min: 0, max: 23 };
const DOM: CronField = { name: 'day of month', min: 1, max: 31 };
const MONTH: CronField = { name: 'month', min: 1, max: 12, names: MONTHS, namesFrom: 1 };
const DOW: CronField = { name: 'day of week', min: 0, max: 7, names: DAYS, namesFrom: 0, nth: true };
const YEAR: CronField = { name: 'year', min: 1970, max: 9999 };

function cronValue(field: CronField, raw: string): number | string {
  if (/^\d+$/.test(raw)) {
    const n = Number(raw);
    if (n < field.min || n > field.max) return `${field.name} ${raw} is out of range ${field.min}-${field.max}`;
    return n;
  }
  const named = field.names?.indexOf(raw.toLowerCase()) ?? -1;
  if (named >= 0) return named + (field.namesFrom ?? 0);
  return `${field.name} "${raw}" is not a number${field.names ? ` or a name (${field.names.join(', ')})` : ''}`;
}

function cronItem(field: CronField, item: string): string | null {
  if (item === '') return `empty ${field.name} in a list`;
  const [base, step, ...more] = item.split('/');
  if (more.length > 0) return `${field.name} "${item}" has more than one step`;
  if (step !== undefined && (!/^\d+$/.test(step) || Number(step) < 1)) {
    return `${field.name} step "${step}" must be a whole number of at least 1`;
  }
  if (base === '*') return null;
  if (field.nth && base.includes('#')) {
    const [day, nth] = base.split('#');
    const v = cronValue(field, day);
    if (typeof v === 'string') return v;
    if (!/^[1-5]$/.test(nth ?? '')) return `${field.name} "${item}": the week after # must be 1-5`;
    return step === undefined ? null : `${field.name} "${item}": # takes no step`;
  }
  const [from, to, ...rest] = base.split('-');
  if (rest.length > 0) return `${field.name} range "${base}" is not FROM-TO`;
  const a = cronValue(field, from);
  if (typeof a === 'string') return a;
  if (to === undefined) return null;
  const b = cronValue(field, to);
  if (typeof b === 'string') return b;
  if (b < a) return `${field.name} range "${base}" ends before it starts`;
  return null;
}

/**
 * Why a cron expression cannot be used, or null when it can: 5 fields (minute hour
 * day-of-month month day-of-week), 6 (and a year) or 7 (a second first, a year
 * last); `*`, lists, ranges, steps, month and day names, `day#n`; or @hourly, @daily,
 * @weekly, @monthly, @yearly. The time zone is its own field (`timezone`).
 */
export function cronProblem(expr: string): string | null {
  const text = expr.trim();
  if (text === '') return 'the cron expression is empty';
  if (/^(CRON_)?TZ=/i.test(text)) return 'give the time zone as timezone (--timezone), not in the expression';
  if (text.startsWith('@')) {
    if (text.toLowerCase().startsWith('@every')) return 'for a fixed interval use interval (--interval), not @every';
    return CRON_MACROS.has(text.toLowerCase()) ? null : `unknown macro "${text}" (${[...CRON_MACROS].join(', ')})`;
  }
  const parts = text.split(/\s+/);
  const layouts: Record<number, CronField[]> = {
    5: [MINUTE, HOUR, DOM, MONTH, DOW],
    6: [MINUTE, HOUR, DOM, MONTH, DOW, YEAR],
    7: [SECOND, MINUTE, HOUR, DOM, MONTH, DOW, YEAR],
  };
  const fields = layouts[parts.length];
  if (!fields) {
    return `expected 5 fields (minute hour day-of-month month day-of-week), got ${parts.length}: "${text}"`;
  }
  for (const [i, part] of parts.entries()) {
    for (const item of part.split(',')) {
      const why = cronItem(fields[i], item);
      if (why) return why;
    }
  }
  return null;
}

const DURATION_UNITS: Record<string, number> = { d: 86_400, h: 3_600, m: 60, s: 1 };

/** `90`, `10s`, `5m`, `1h30m`, `1d`: whole seconds, or null when it is not a duration. */
export function parseIntervalSeconds(raw: string): number | null {
  const text = raw.trim();
  if (/^\d+$/.test(text)) return Number(text);
  if (!/^(\d+[dhms])+$/.test(text)) return null;
  let total = 0;
  for (const [, n, unit] of text.matchAll(/(\d+)([dhms])/g)) total += Number(n) * DURATION_UNITS[unit];
  return total;
}

export function formatInterval(seconds: number): string {
  let left = seconds;
  let out = '';
  for (const [unit, size] of Object.entries(DURATION_UNITS)) {
    if (left >= size) {
      out += `${Math.floor(left / size)}${unit}`;
      left %= size;
    }
  }
  return out || '0s';
}

/** The IANA name of a time zone as spelled canonically (`europe/paris` → `Europe/Paris`), or null when unknown. */
export function canonicalTimezone(tz: string): string | null {
  try {
    return new Intl.DateTimeFormat('en-US', { timeZone: tz }).resolvedOptions().timeZone;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------
// Wire shapes

/** `APP/N`, `APP/leader`, `N` or `leader`. */
const UnitChoice = Text.regex(/^([a-z][a-z0-9-]*\/)?(\d+|leader)$/, 'must be APP/N, APP/leader, N or leader');

export const BackupApplicationBody = z.strictObject({
  /** The unit the backup action runs on (default: the leader). */
  unit: UnitChoice.default('leader'),
  /** Params of the backup action, checked against its schema. */
  params: z.record(Text, z.unknown()).default({}),
});

export const RestoreApplicationBody = z.strictObject({
  backup: bodyInt(1),
  /** The unit the restore action runs on (default: the leader). */
  unit: UnitChoice.default('leader'),
  /** More params of the restore action (`path` is the artifact's, set by the controller). */
  params: z.record(Text, z.unknown()).default({}),
});

export const AppBackup = z.object({
  id: z.number().int(),
  model: z.string(),
  modelUuid: z.string(),
  application: z.string(),
  unit: z.string(),
  charm: z.string(),
  charmRevision: z.number().int(),
  operationId: z.number().int(),
  /** Where the backup action left the artifact on the unit's machine. */
  path: z.string(),
  size: z.number().int(),
  sha256: z.string(),
  scheduleId: z.number().int().nullable(),
  createdAt: z.string(),
});

const OVERLAPS = ['skip', 'buffer-one', 'buffer-all', 'allow-all', 'cancel-other', 'terminate-other'] as const;

const OVERLAP_POLICY: Record<AppScheduleOverlap, ScheduleOverlapPolicy> = {
  skip: ScheduleOverlapPolicy.SKIP,
  'buffer-one': ScheduleOverlapPolicy.BUFFER_ONE,
  'buffer-all': ScheduleOverlapPolicy.BUFFER_ALL,
  'allow-all': ScheduleOverlapPolicy.ALLOW_ALL,
  'cancel-other': ScheduleOverlapPolicy.CANCEL_OTHER,
  'terminate-other': ScheduleOverlapPolicy.TERMINATE_OTHER,
};

export const CreateScheduleBody = z.strictObject({
  kind: z.enum(['backup', 'refresh']),
  application: Text.min(1),
  /** A cron expression (5 fields, or @daily …); or give interval. */
  cron: Text.max(200).optional(),
  /** Every this long: `30s`, `10m`, `1h30m`, `1d` (or seconds); or give cron. */
  interval: Text.max(40).optional(),
  /** IANA time zone of the cron expression (default UTC). */
  timezone: Text.max(100).optional(),
  /** When a run is due while the last still runs (default skip). */
  overlap: z.enum(OVERLAPS).default('skip'),
  /** Make it paused. */
  paused: z.boolean().default(false),
  note: Text.max(500).optional(),
  /** backup: the unit (default leader) and the backup action's params. */
  unit: UnitChoice.optional(),
  params: z.record(Text, z.unknown()).optional(),
  /** backup: keep only the newest this many backups the schedule made (default: all). */
  keep: bodyInt(1, 10_000).optional(),
  /** refresh: a revision of the application's charm (default: the newest when the run starts). */
  revision: bodyInt(1).optional(),
  /** refresh: the charm the revision is of, to check it is the application's (the CLI's upload names it). */
  charm: Text.min(1).optional(),
  maxUnavailable: bodyInt(1, 1000).optional(),
  gateTimeoutSeconds: bodyInt(1, 86_400).optional(),
  probe: Text.min(1).max(100).optional(),
});

export const ScheduleRun = z.object({
  id: z.number().int(),
  workflowId: z.string(),
  operationId: z.number().int().nullable(),
  /** running, succeeded, failed, cancelled, skipped (an operation's end is read from it). */
  state: z.string(),
  message: z.string(),
  startedAt: z.string(),
  finishedAt: z.string().nullable(),
  operation: z.object({ state: z.string(), summary: z.string(), error: z.string().nullable() }).nullable(),
});

export const Schedule = z.object({
  id: z.number().int(),
  /** The Temporal Schedule's id. */
  scheduleId: z.string(),
  model: z.string(),
  application: z.string(),
  kind: z.string(),
  cron: z.string().nullable(),
  interval: z.string().nullable(),
  timezone: z.string().nullable(),
  overlap: z.string(),
  params: z.record(z.string(), z.unknown()),
  paused: z.boolean(),
  note: z.string(),
  createdBy: z.string(),
  createdAt: z.string(),
  /** What Temporal says of it (null when Temporal could not be asked). */
  temporal: z
    .object({
      paused: z.boolean(),
      note: z.string(),
      nextRuns: z.array(z.string()),
      recentRuns: z.array(z.object({ scheduledAt: z.string(), takenAt: z.string(), workflowId: z.string() })),
      running: z.array(z.string()),
      actionsTaken: z.number().int(),
      skippedOverlap: z.number().int(),
      missedCatchupWindow: z.number().int(),
    })
    .nullable(),
  /** The latest run, if any. */
  lastRun: ScheduleRun.nullable(),
});

const ScheduleIdParam = z.strictObject({ id: queryInt(1) });
const BackupIdParams = z.strictObject({ model: Text.min(1), id: queryInt(1) });

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 503: ErrorBody };

// ---------------------------------------------------------------------------
// Helpers

function toBackup(row: AppBackupRow) {
  return {
    id: row.id,
    model: row.model_name,
    modelUuid: row.model_uuid,
    application: row.application,
    unit: row.unit,
    charm: row.charm_name,
    charmRevision: row.charm_revision,
    operationId: row.operation_id,
    path: row.path,
    size: Number(row.size),
    sha256: row.sha256,
    scheduleId: row.schedule_id,
    createdAt: iso(row.created_at)!,
  };
}

async function findApplication(db: Db, model: ModelRow, name: string): Promise<ApplicationRow> {
  const app = await db
    .selectFrom('applications')
    .selectAll()
    .where('model_uuid', '=', model.uuid)
    .where('name', '=', name)
    .executeTakeFirst();
  if (!app) throw new NotFoundError('application', name);
  if (app.life !== 'alive') throw new ConflictError(`application "${name}" is being removed`);
  return app;
}

async function charmMeta(db: Db, app: ApplicationRow): Promise<CharmMeta> {
  const charm = await getCharmInfo(db, app.charm_name, app.charm_revision);
  if (!charm) throw new NotFoundError('charm', `${app.charm_name}:${app.charm_revision}`);
  return charm.meta;
}

/** The charm's action `name`, or a 400 saying the charm has none (field: `field`). */
function requireAction(app: ApplicationRow, meta: CharmMeta, name: string, field: string): ActionSpec {
  const spec = meta.actions[name];
  if (spec) return spec;
  const known = Object.keys(meta.actions).sort();
  throw new BadRequestError(
    `application "${app.name}" (${app.charm_name} revision ${app.charm_revision}) has no "${name}" action${known.length > 0 ? ` (its actions: ${known.join(', ')})` : ' (it has no actions)'}`,
    [{ field, message: `the charm has no ${name} action` }],
  );
}

function checkParams(
  app: ApplicationRow,
  action: string,
  spec: ActionSpec,
  given: Record<string, unknown>,
  field: string,
): Record<string, unknown> {
  try {
    return checkActionParams(`${app.charm_name}:${app.charm_revision}`, action, spec, given);
  } catch (err) {
    if (err instanceof ActionParamsError) {
      throw new BadRequestError(`action "${action}": ${err.message}`, [
        { field: err.param ? `${field}.${err.param}` : field, message: err.message },
      ]);
    }
    throw err;
  }
}

/** `APP/N`, `APP/leader`, `N` or `leader` of application `app`: the alive unit, or 404/409. */
async function findUnit(db: Db, model: ModelRow, app: ApplicationRow, choice: string, field: string) {
  const [prefix, which] = choice.includes('/') ? choice.split('/') : [app.name, choice];
  if (prefix !== app.name) {
    throw new BadRequestError(`unit "${choice}" is not of application "${app.name}"`, [
      { field, message: 'another application' },
    ]);
  }
  const unit = await db
    .selectFrom('units')
    .select(['name', 'life', 'machine_id', 'number'])
    .where('model_uuid', '=', model.uuid)
    .where('application', '=', app.name)
    .$if(which === 'leader', (q) => q.where('leader', '=', true))
    .$if(which !== 'leader', (q) => q.where('number', '=', Number(which)))
    .executeTakeFirst();
  if (!unit) {
    if (which === 'leader') throw new ConflictError(`application "${app.name}" has no leader now`);
    throw new NotFoundError('unit', `${app.name}/${which}`);
  }
  if (unit.life !== 'alive') throw new ConflictError(`unit "${unit.name}" is being removed`);
  return unit;
}

function scheduleIdFor(model: string, app: string, kind: string, id: number): string {
  return `schedule:${model}:${app}:${kind}:${id}`;
}

/** A gRPC INVALID_ARGUMENT (or the client's TypeError for one): Temporal refused the request's content. */
function refusedAsInvalid(err: unknown): boolean {
  if (err instanceof TypeError) return true;
  const grpc = isGrpcServiceError(err) ? err : err instanceof ServiceError ? err.cause : undefined;
  return isGrpcServiceError(grpc) && grpc.code === 3;
}

function temporalMessage(err: unknown): string {
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : '';
  return [err instanceof Error ? err.message : String(err), cause].filter(Boolean).join(': ');
}

async function describeSchedule(temporal: TemporalDeps, row: AppScheduleRow) {
  try {
    const d = await temporal.client.schedule.getHandle(row.schedule_id).describe();
    return {
      paused: d.state.paused,
      note: d.state.note ?? '',
      nextRuns: d.info.nextActionTimes.slice(0, 5).map((t) => t.toISOString()),
      recentRuns: d.info.recentActions.map((a) => ({
        scheduledAt: a.scheduledAt.toISOString(),
        takenAt: a.takenAt.toISOString(),
        workflowId: a.action.workflow.workflowId,
      })),
      running: d.info.runningActions.map((a) => a.workflow.workflowId),
      actionsTaken: d.info.numActionsTaken,
      skippedOverlap: d.info.numActionsSkippedOverlap,
      missedCatchupWindow: d.info.numActionsMissedCatchupWindow,
    };
  } catch {
    return null;
  }
}

type RunRow = {
  id: number;
  workflow_id: string;
  operation_id: number | null;
  state: string;
  message: string;
  started_at: Date;
  finished_at: Date | null;
  op_state: string | null;
  op_summary: string | null;
  op_error: string | null;
};

function runsQuery(db: Db) {
  return db
    .selectFrom('app_schedule_runs as r')
    .leftJoin('operations as o', 'o.id', 'r.operation_id')
    .select([
      'r.id',
      'r.schedule_id',
      'r.workflow_id',
      'r.operation_id',
      'r.state',
      'r.message',
      'r.started_at',
      'r.finished_at',
      'o.state as op_state',
      'o.summary as op_summary',
      'o.error as op_error',
    ]);
}

function toRun(r: RunRow): z.infer<typeof ScheduleRun> {
  // a run whose workflow ended without saying (terminated) takes its operation's end
  const opEnded = r.op_state === 'succeeded' || r.op_state === 'failed' || r.op_state === 'cancelled';
  const state = r.state === 'running' && opEnded ? (r.op_state as string) : r.state;
  return {
    id: r.id,
    workflowId: r.workflow_id,
    operationId: r.operation_id,
    state,
    message: r.message || (r.op_error ?? ''),
    startedAt: iso(r.started_at)!,
    finishedAt: iso(r.finished_at),
    operation:
      r.op_state !== null ? { state: r.op_state, summary: r.op_summary ?? '', error: r.op_error ?? null } : null,
  };
}

async function toSchedule(db: Db, temporal: TemporalDeps, row: AppScheduleRow) {
  const last = await runsQuery(db)
    .where('r.schedule_id', '=', row.id)
    .orderBy('r.id', 'desc')
    .limit(1)
    .executeTakeFirst();
  const t = await describeSchedule(temporal, row);
  return {
    id: row.id,
    scheduleId: row.schedule_id,
    model: row.model_name,
    application: row.application,
    kind: row.kind,
    cron: row.cron,
    interval: row.interval_seconds === null ? null : formatInterval(row.interval_seconds),
    timezone: row.timezone,
    overlap: row.overlap,
    params: row.params as unknown as Record<string, unknown>,
    paused: t ? t.paused : row.paused,
    note: t ? t.note : row.note,
    createdBy: row.created_by,
    createdAt: iso(row.created_at)!,
    temporal: t,
    lastRun: last ? toRun(last) : null,
  };
}

async function findSchedule(db: Db, id: number): Promise<AppScheduleRow> {
  const row = await db.selectFrom('app_schedules').selectAll().where('id', '=', id).executeTakeFirst();
  if (!row) throw new NotFoundError('schedule', String(id));
  return row;
}

/** Runs a call on the schedule's Temporal Schedule; one Temporal no longer has is a 404 naming it. */
async function onSchedule<T>(
  temporal: TemporalDeps,
  row: AppScheduleRow,
  fn: (h: ReturnType<TemporalDeps['client']['schedule']['getHandle']>) => Promise<T>,
): Promise<T> {
  try {
    return await fn(temporal.client.schedule.getHandle(row.schedule_id));
  } catch (err) {
    if (err instanceof ScheduleNotFoundError) {
      throw new ApiError(404, `schedule ${row.id}: Temporal has no schedule "${row.schedule_id}"`);
    }
    throw new ApiError(503, `schedule ${row.id}: Temporal refused the request: ${temporalMessage(err)}`);
  }
}

// ---------------------------------------------------------------------------
// Routes

export const appBackupRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store, temporal } = app.deps;
  const db = store.db;

  // ----- backups

  app.post(
    '/models/:model/applications/:app/backups',
    {
      schema: {
        summary:
          "Back up an application: its charm's backup action on a unit (the leader by default), then the artifact it names (result `path`) is fetched into the controller's backup store (asynchronous)",
        tags: ['backups'],
        params: AppParams,
        body: BackupApplicationBody,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const model = await findModel(db, req.params.model);
      if (model.life !== 'alive') throw new ConflictError(`model "${model.name}" is being destroyed`);
      const application = await findApplication(db, model, req.params.app);
      const spec = requireAction(application, await charmMeta(db, application), 'backup', 'action');
      const params = checkParams(application, 'backup', spec, req.body.params, 'body.params');
      const unit = await findUnit(db, model, application, req.body.unit, 'body.unit');
      const op = await startOperation(db, temporal, {
        kind: 'backup-application',
        model: model.name,
        target: unit.name,
        createdBy: req.principal?.user ?? '',
        workflow: 'appBackupWorkflow',
        summary: `back up ${unit.name}`,
        // the hook activity reads the params from here: they stay out of the workflow's history
        params: { action: 'backup', params },
        intent: markActionRunning,
        args: (operationId) => [
          {
            operationId,
            model: model.name,
            modelUuid: model.uuid,
            kind: 'backup-application',
            application: application.name,
            unit: unit.name,
          },
        ],
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );

  app.get(
    '/models/:model/backups',
    {
      schema: {
        summary: "The model's application backups, newest first (application: one application's)",
        tags: ['backups'],
        params: ModelParam,
        querystring: z.strictObject({ application: Text.min(1).optional(), limit: queryInt(1, 1000).default(100) }),
        response: { 200: z.object({ backups: z.array(AppBackup) }), ...errors },
      },
    },
    async (req) => {
      const model = await findModel(db, req.params.model);
      const rows = await db
        .selectFrom('app_backups')
        .selectAll()
        .where('model_uuid', '=', model.uuid)
        .$if(req.query.application !== undefined, (q) => q.where('application', '=', req.query.application as string))
        .orderBy('id', 'desc')
        .limit(req.query.limit)
        .execute();
      return { backups: rows.map(toBackup) };
    },
  );

  app.get(
    '/models/:model/backups/:id',
    {
      schema: {
        summary: 'One application backup',
        tags: ['backups'],
        params: BackupIdParams,
        response: { 200: z.object({ backup: AppBackup }), ...errors },
      },
    },
    async (req) => {
      const model = await findModel(db, req.params.model);
      const row = await db
        .selectFrom('app_backups')
        .selectAll()
        .where('id', '=', req.params.id)
        .where('model_uuid', '=', model.uuid)
        .executeTakeFirst();
      if (!row) throw new NotFoundError('backup', String(req.params.id));
      return { backup: toBackup(row) };
    },
  );

  app.delete(
    '/models/:model/backups/:id',
    {
      schema: {
        summary: "Remove an application backup: its artifact from the controller's backup store, and its record",
        tags: ['backups'],
        params: BackupIdParams,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const model = await findModel(db, req.params.model);
      const row = await db
        .selectFrom('app_backups')
        .selectAll()
        .where('id', '=', req.params.id)
        .where('model_uuid', '=', model.uuid)
        .executeTakeFirst();
      if (!row) throw new NotFoundError('backup', String(req.params.id));
      const restoring = await db
        .selectFrom('operations')
        .select('id')
        .where('kind', '=', 'restore-application')
        .where('state', 'in', ['pending', 'running'])
        .where(sql<boolean>`(params->>'backup')::int = ${row.id}`)
        .executeTakeFirst();
      if (restoring) throw new ConflictError(`backup ${row.id} is being restored by operation ${restoring.id}`);
      const op = await startOperation(db, temporal, {
        kind: 'remove-application-backup',
        model: model.name,
        target: row.application,
        createdBy: req.principal?.user ?? '',
        workflow: 'appBackupRemoveWorkflow',
        summary: `remove backup ${row.id} of ${row.unit}`,
        params: { backup: row.id },
        args: (operationId) => [
          {
            operationId,
            model: model.name,
            modelUuid: model.uuid,
            kind: 'remove-application-backup',
            application: row.application,
            backupId: row.id,
          },
        ],
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );

  app.post(
    '/models/:model/applications/:app/restore',
    {
      schema: {
        summary:
          "Restore a backup on a unit of an application (the leader by default): the artifact is copied to the unit, then the charm's restore action runs with its path as `path` (asynchronous)",
        tags: ['backups'],
        params: AppParams,
        body: RestoreApplicationBody,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const model = await findModel(db, req.params.model);
      if (model.life !== 'alive') throw new ConflictError(`model "${model.name}" is being destroyed`);
      const application = await findApplication(db, model, req.params.app);
      const backup = await db
        .selectFrom('app_backups')
        .selectAll()
        .where('id', '=', req.body.backup)
        .executeTakeFirst();
      if (!backup) throw new NotFoundError('backup', String(req.body.backup));
      if (backup.charm_name !== application.charm_name) {
        throw new BadRequestError(
          `backup ${backup.id} is of charm ${backup.charm_name}; application "${application.name}" runs ${application.charm_name}`,
          [{ field: 'body.backup', message: 'another charm' }],
        );
      }
      const spec = requireAction(application, await charmMeta(db, application), 'restore', 'action');
      if ('path' in req.body.params) {
        throw new BadRequestError('the restore action\'s "path" is the artifact\'s, set by the controller', [
          { field: 'body.params.path', message: 'reserved' },
        ]);
      }
      // checked with a stand-in path: the copy's path is known once it is on the unit
      const params = checkParams(
        application,
        'restore',
        spec,
        { ...req.body.params, path: '/artifact' },
        'body.params',
      );
      const unit = await findUnit(db, model, application, req.body.unit, 'body.unit');
      if (!unit.machine_id) throw new ConflictError(`unit "${unit.name}" has no machine yet`);
      const op = await startOperation(db, temporal, {
        kind: 'restore-application',
        model: model.name,
        target: unit.name,
        createdBy: req.principal?.user ?? '',
        workflow: 'appRestoreWorkflow',
        summary: `restore backup ${backup.id} (${backup.unit}, ${backup.sha256.slice(0, 12)}) on ${unit.name}`,
        params: { action: 'restore', params: { ...params, path: '' }, backup: backup.id },
        intent: markActionRunning,
        args: (operationId) => [
          {
            operationId,
            model: model.name,
            modelUuid: model.uuid,
            kind: 'restore-application',
            application: application.name,
            unit: unit.name,
            backupId: backup.id,
          },
        ],
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );

  // ----- schedules

  app.post(
    '/models/:model/schedules',
    {
      schema: {
        summary:
          'Schedule recurring backups or refreshes of an application: a Temporal Schedule (cron or interval) whose runs record operations',
        tags: ['schedules'],
        params: ModelParam,
        body: CreateScheduleBody,
        response: { 201: z.object({ schedule: Schedule }), ...errors },
      },
    },
    async (req, reply) => {
      const body = req.body;
      // the request's own content first: nothing is looked up for a malformed one
      if ((body.cron === undefined) === (body.interval === undefined)) {
        throw new BadRequestError('give either cron or interval', [
          { field: body.cron === undefined ? 'body.cron' : 'body.interval', message: 'cron or interval, one of them' },
        ]);
      }
      let intervalSeconds: number | null = null;
      let timezone: string | null = null;
      if (body.cron !== undefined) {
        const why = cronProblem(body.cron);
        if (why) throw new BadRequestError(`invalid cron expression: ${why}`, [{ field: 'body.cron', message: why }]);
      } else {
        intervalSeconds = parseIntervalSeconds(body.interval as string);
        if (intervalSeconds === null || intervalSeconds < 1 || intervalSeconds > 366 * 86_400) {
          const why = 'a duration from 1s to 366d: 30s, 10m, 1h30m, 1d (or seconds)';
          throw new BadRequestError(`invalid interval "${body.interval}": ${why}`, [
            { field: 'body.interval', message: why },
          ]);
        }
      }
      if (body.timezone !== undefined) {
        if (body.interval !== undefined) {
          throw new BadRequestError('timezone goes with cron, not with interval', [
            { field: 'body.timezone', message: 'only with cron' },
          ]);
        }
        const canonical = canonicalTimezone(body.timezone);
        if (!canonical) {
          throw new BadRequestError(`unknown time zone "${body.timezone}" (an IANA name: Europe/Paris, UTC, …)`, [
            { field: 'body.timezone', message: 'unknown time zone' },
          ]);
        }
        timezone = canonical;
      }
      const backupOnly = (['unit', 'params', 'keep'] as const).filter((k) => body[k] !== undefined);
      const refreshOnly = (['revision', 'charm', 'maxUnavailable', 'gateTimeoutSeconds', 'probe'] as const).filter(
        (k) => body[k] !== undefined,
      );
      const misplaced = body.kind === 'backup' ? refreshOnly : backupOnly;
      if (misplaced.length > 0) {
        throw new BadRequestError(
          `${misplaced.join(', ')} ${misplaced.length > 1 ? 'do' : 'does'} not apply to a ${body.kind} schedule`,
          misplaced.map((k) => ({ field: `body.${k}`, message: `not for ${body.kind}` })),
        );
      }

      const model = await findModel(db, req.params.model);
      if (model.life !== 'alive') throw new ConflictError(`model "${model.name}" is being destroyed`);
      const application = await findApplication(db, model, body.application);
      const meta = await charmMeta(db, application);
      let params: BackupScheduleParams | RefreshScheduleParams;
      if (body.kind === 'backup') {
        const spec = requireAction(application, meta, 'backup', 'body.kind');
        const given = body.params ?? {};
        checkParams(application, 'backup', spec, given, 'body.params');
        const choice = body.unit ?? 'leader';
        const [prefix, which] = choice.includes('/') ? choice.split('/') : [application.name, choice];
        if (prefix !== application.name) {
          throw new BadRequestError(`unit "${choice}" is not of application "${application.name}"`, [
            { field: 'body.unit', message: 'another application' },
          ]);
        }
        if (which !== 'leader') await findUnit(db, model, application, which, 'body.unit');
        params = {
          unit: which === 'leader' ? 'leader' : Number(which),
          params: given,
          ...(body.keep !== undefined ? { keep: body.keep } : {}),
        };
      } else {
        if (body.charm !== undefined && body.charm !== application.charm_name) {
          throw new BadRequestError(
            `refresh keeps the charm: "${application.name}" runs ${application.charm_name}, not ${body.charm}`,
            [{ field: 'body.charm', message: 'another charm' }],
          );
        }
        if (body.revision !== undefined) {
          const target = await getCharmInfo(db, application.charm_name, body.revision);
          if (!target) throw new NotFoundError('charm revision', `${application.charm_name}:${body.revision}`);
          if (body.probe && !target.meta.actions[body.probe]) {
            throw new BadRequestError(`revision ${body.revision} of ${target.name} has no action "${body.probe}"`, [
              { field: 'body.probe', message: 'unknown action' },
            ]);
          }
        }
        params = {
          ...(body.revision !== undefined ? { revision: body.revision } : {}),
          maxUnavailable: body.maxUnavailable ?? 1,
          gateTimeoutSeconds: body.gateTimeoutSeconds ?? 300,
          ...(body.probe ? { probe: body.probe } : {}),
        };
      }

      const { id } = (await sql<{ id: number }>`SELECT nextval('app_schedules_id_seq')::int AS id`.execute(db)).rows[0];
      const scheduleId = scheduleIdFor(model.name, application.name, body.kind, id);
      const what =
        body.kind === 'backup'
          ? `back up ${application.name} (${(params as BackupScheduleParams).unit === 'leader' ? 'the leader' : `unit ${(params as BackupScheduleParams).unit}`})`
          : `refresh ${application.name} to ${(params as RefreshScheduleParams).revision !== undefined ? `revision ${(params as RefreshScheduleParams).revision}` : 'the newest revision'}`;
      const when =
        body.cron !== undefined
          ? `cron "${body.cron}"${timezone ? ` ${timezone}` : ''}`
          : `every ${formatInterval(intervalSeconds as number)}`;
      const note = body.note ?? `${what}, ${when}`;
      const options: ScheduleOptions = {
        scheduleId,
        spec:
          body.cron !== undefined
            ? { cronExpressions: [body.cron.trim()], ...(timezone ? { timezone } : {}) }
            : { intervals: [{ every: `${intervalSeconds}s` }] },
        action: {
          type: 'startWorkflow',
          workflowType: 'appScheduleRunWorkflow',
          workflowId: `scheduled:${model.name}:${application.name}:${body.kind}:${id}`,
          taskQueue: temporal.taskQueue,
          args: [{ scheduleId: id, model: model.name, application: application.name, kind: body.kind }],
          staticSummary: `${what} (schedule ${id})`,
          typedSearchAttributes: [
            { key: ModelKey, value: model.name },
            { key: ApplicationKey, value: application.name },
            { key: OperationKindKey, value: `scheduled-${body.kind}` },
          ],
        },
        policies: { overlap: OVERLAP_POLICY[body.overlap], catchupWindow: '1 minute' },
        state: { paused: body.paused, note },
        memo: { charmflowSchedule: id, model: model.name, application: application.name, kind: body.kind, what, when },
        typedSearchAttributes: [
          { key: ModelKey, value: model.name },
          { key: ApplicationKey, value: application.name },
          { key: OperationKindKey, value: `schedule-${body.kind}` },
        ],
      };
      try {
        await temporal.client.schedule.create(options);
      } catch (err) {
        if (err instanceof ScheduleAlreadyRunning) throw new ConflictError(`schedule "${scheduleId}" already exists`);
        const message = temporalMessage(err);
        if (refusedAsInvalid(err)) {
          const field = /time ?zone|location/i.test(message)
            ? 'body.timezone'
            : body.cron !== undefined
              ? 'body.cron'
              : 'body.interval';
          throw new BadRequestError(`Temporal refused the schedule: ${message}`, [{ field, message }]);
        }
        // its fate unknown: make sure no schedule is left behind without its record
        await temporal.client.schedule
          .getHandle(scheduleId)
          .delete()
          .catch(() => {});
        throw new ApiError(503, `could not make the schedule: Temporal refused it (${message})`);
      }
      try {
        const row = await db
          .insertInto('app_schedules')
          .values({
            id,
            schedule_id: scheduleId,
            model_uuid: model.uuid,
            model_name: model.name,
            application: application.name,
            kind: body.kind,
            cron: body.cron?.trim() ?? null,
            interval_seconds: intervalSeconds,
            timezone,
            overlap: body.overlap,
            params: JSON.stringify(params),
            paused: body.paused,
            note,
            created_by: req.principal?.user ?? '',
          })
          .returningAll()
          .executeTakeFirstOrThrow();
        return reply.status(201).send({ schedule: await toSchedule(db, temporal, row) });
      } catch (err) {
        await temporal.client.schedule
          .getHandle(scheduleId)
          .delete()
          .catch(() => {});
        throw err;
      }
    },
  );

  app.get(
    '/models/:model/schedules',
    {
      schema: {
        summary: "The model's schedules (application: one application's), with what Temporal says of each",
        tags: ['schedules'],
        params: ModelParam,
        querystring: z.strictObject({ application: Text.min(1).optional() }),
        response: { 200: z.object({ schedules: z.array(Schedule) }), ...errors },
      },
    },
    async (req) => {
      const model = await findModel(db, req.params.model);
      const rows = await db
        .selectFrom('app_schedules')
        .selectAll()
        .where('model_uuid', '=', model.uuid)
        .$if(req.query.application !== undefined, (q) => q.where('application', '=', req.query.application as string))
        .orderBy('id')
        .execute();
      return { schedules: await Promise.all(rows.map((r) => toSchedule(db, temporal, r))) };
    },
  );

  app.get(
    '/schedules/:id',
    {
      schema: {
        summary: 'A schedule and its runs (newest first), each with its operation and outcome',
        tags: ['schedules'],
        params: ScheduleIdParam,
        querystring: z.strictObject({ limit: queryInt(1, 100).default(20) }),
        response: { 200: z.object({ schedule: Schedule, runs: z.array(ScheduleRun) }), ...errors },
      },
    },
    async (req) => {
      const row = await findSchedule(db, req.params.id);
      const runs = await runsQuery(db)
        .where('r.schedule_id', '=', row.id)
        .orderBy('r.id', 'desc')
        .limit(req.query.limit)
        .execute();
      return { schedule: await toSchedule(db, temporal, row), runs: runs.map(toRun) };
    },
  );

  for (const [verb, summary] of [
    ['pause', 'Pause a schedule: no run starts until it is resumed'],
    ['resume', 'Resume a paused schedule'],
    ['trigger', 'Run a schedule now (its overlap policy applies)'],
  ] as const) {
    app.post(
      `/schedules/:id/${verb}`,
      {
        schema: {
          summary,
          tags: ['schedules'],
          params: ScheduleIdParam,
          body: z.strictObject({ note: Text.max(500).optional() }).nullish(),
          response: { 200: z.object({ schedule: Schedule }), ...errors },
        },
      },
      async (req) => {
        const row = await findSchedule(db, req.params.id);
        const who = req.principal?.user ? ` by ${req.principal.user}` : '';
        if (verb === 'pause') {
          const note = req.body?.note ?? `paused${who}`;
          await onSchedule(temporal, row, (h) => h.pause(note));
          await db.updateTable('app_schedules').set({ paused: true, note }).where('id', '=', row.id).execute();
        } else if (verb === 'resume') {
          const note = req.body?.note ?? `resumed${who}`;
          await onSchedule(temporal, row, (h) => h.unpause(note));
          await db.updateTable('app_schedules').set({ paused: false, note }).where('id', '=', row.id).execute();
        } else {
          await onSchedule(temporal, row, (h) => h.trigger());
        }
        return { schedule: await toSchedule(db, temporal, await findSchedule(db, row.id)) };
      },
    );
  }

  app.delete(
    '/schedules/:id',
    {
      schema: {
        summary: 'Delete a schedule (a run in progress goes on; the operations its runs made stay)',
        tags: ['schedules'],
        params: ScheduleIdParam,
        response: { 200: z.object({ schedule: Schedule }), ...errors },
      },
    },
    async (req) => {
      const row = await findSchedule(db, req.params.id);
      const shown = await toSchedule(db, temporal, row);
      try {
        await temporal.client.schedule.getHandle(row.schedule_id).delete();
      } catch (err) {
        if (!(err instanceof ScheduleNotFoundError)) {
          throw new ApiError(503, `schedule ${row.id}: Temporal refused the request: ${temporalMessage(err)}`);
        }
      }
      await db.deleteFrom('app_schedules').where('id', '=', row.id).execute();
      return { schedule: { ...shown, temporal: null } };
    },
  );
};
