// Routes of controller backups (issue 11): create-backup (an operation that writes
// the model store and the charm store to a file in the data dir), list them,
// download one, and restore one (uploaded raw, checked whole before anything changes).

import { constants as bufferConstants } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { Selectable } from 'kysely';
import { z } from 'zod';
import {
  applyRestore,
  BackupError,
  type BackupManifest,
  type ParsedBackup,
  planRestore,
  type RestorePlan,
  readBackup,
} from '../../store/backup.ts';
import type { OperationRow, OperationStart } from '../../store/schema.ts';
import type { ControllerBackupsTable } from '../../store/schema-controller-backups.ts';
import { type Db, isUniqueViolation, type Tx } from '../../store/store.ts';
import { ApiError, BadRequestError, ConflictError, ForbiddenError } from '../errors.ts';
import {
  definitelyNotStarted,
  iso,
  startError,
  startOperationWorkflow,
  type TemporalDeps,
  toOperation,
} from '../operation-starter.ts';
import { ErrorBody, Operation, Text } from '../schemas.ts';

const MIB = 1024 * 1024;

function envBytes(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a number of bytes, got "${raw}"`);
  return n;
}

/** Largest backup file a restore takes (the upload is held in memory). */
export function maxBackupBytes(): number {
  return envBytes('CHARMFLOW_BACKUP_MAX_BYTES', 512 * MIB);
}

/** Most bytes a backup may unpack to. */
export function maxBackupUnpackedBytes(): number {
  return Math.min(envBytes('CHARMFLOW_BACKUP_MAX_UNPACKED_BYTES', 2048 * MIB), bufferConstants.MAX_LENGTH);
}

export const BackupId = z
  .string()
  .regex(/^\d{8}-\d{6}-[0-9a-f]{4}$/, 'a backup id: YYYYMMDD-HHMMSS-xxxx (see `charmflow backups`)');

export const ControllerBackup = z.object({
  id: z.string(),
  state: z.enum(['pending', 'ready', 'failed']),
  /** Bytes of the file. */
  size: z.number().int(),
  /** sha256 of the file, hex. */
  sha256: z.string(),
  createdAt: z.string(),
  finishedAt: z.string().nullable(),
  operationId: z.number().int().nullable(),
  error: z.string().nullable(),
  controllerVersion: z.string().optional(),
  formatVersion: z.number().int().optional(),
  models: z
    .array(
      z.object({
        name: z.string(),
        cloud: z.string(),
        applications: z.number().int(),
        units: z.number().int(),
        machines: z.number().int(),
      }),
    )
    .optional(),
  tables: z.array(z.object({ name: z.string(), rows: z.number().int() })).optional(),
});
export type ControllerBackup = z.infer<typeof ControllerBackup>;

export const RestoreSummary = z.object({
  backup: z.object({ id: z.string(), createdAt: z.string(), controllerVersion: z.string() }),
  /** Models restored (or, with dryRun, that would be). */
  models: z.array(z.object({ name: z.string(), cloud: z.string(), replaces: z.boolean() })),
  /** Models of the backup left as they are here, and why. */
  kept: z.array(z.object({ model: z.string(), reason: z.string() })),
  charms: z.array(z.string()),
  charmsKept: z.array(z.object({ charm: z.string(), reason: z.string() })),
  integrations: z.array(z.number().int()),
  integrationsKept: z.array(z.object({ id: z.number().int(), reason: z.string() })),
  notRestored: z.array(z.object({ table: z.string(), rows: z.number().int() })),
  /** The backup's secrets were sealed again with this controller's key. */
  resealed: z.boolean(),
});
export type RestoreSummary = z.infer<typeof RestoreSummary>;

const RestoreQuery = z.strictObject({
  /** Comma-separated model names: restore only these. */
  models: Text.optional(),
  /** Check the file and say what would be restored; change nothing. */
  dryRun: z.enum(['true', 'false']).optional(),
});

type BackupRow = Selectable<ControllerBackupsTable>;

function toBackup(row: BackupRow): ControllerBackup {
  const m = (row.manifest ?? {}) as Partial<BackupManifest>;
  return {
    id: row.id,
    state: row.state,
    size: Number(row.size),
    sha256: row.sha256,
    createdAt: iso(row.created_at)!,
    finishedAt: iso(row.finished_at),
    operationId: row.operation_id,
    error: row.error,
    ...(m.controllerVersion ? { controllerVersion: m.controllerVersion } : {}),
    ...(m.formatVersion ? { formatVersion: m.formatVersion } : {}),
    ...(m.models
      ? {
          models: m.models.map((x) => ({
            name: x.name,
            cloud: x.cloud,
            applications: x.applications,
            units: x.units,
            machines: x.machines,
          })),
        }
      : {}),
    ...(m.tables ? { tables: m.tables } : {}),
  };
}

function toSummary(backup: ParsedBackup, plan: RestorePlan): RestoreSummary {
  return {
    backup: {
      id: backup.manifest.id,
      createdAt: backup.manifest.createdAt,
      controllerVersion: backup.manifest.controllerVersion,
    },
    models: plan.models.map((m) => ({ name: m.name, cloud: m.cloud, replaces: m.replaces !== undefined })),
    kept: plan.kept,
    charms: plan.charms.map((c) => `${c.name}:${c.revision}`),
    charmsKept: plan.charmsKept,
    integrations: plan.integrations,
    integrationsKept: plan.integrationsKept,
    notRestored: plan.notRestored,
    resealed: plan.resealed,
  };
}

/** A new backup id: the time (UTC) and four random hex digits. */
function newBackupId(now = new Date()): string {
  const t = now.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15);
  return `${t}-${randomBytes(2).toString('hex')}`;
}

export interface ControllerOperationRequest {
  kind: string;
  target: string;
  createdBy: string;
  workflow: string;
  /** Read after the intent: it may say what the intent did. */
  summary: () => string;
  params: () => Record<string, unknown>;
  args: (operationId: number) => unknown[];
  intent?: (tx: Tx, operationId: number) => Promise<void>;
  undo?: (db: Db) => Promise<void>;
}

/**
 * startOperation for an operation of the controller itself (no model): recorded with
 * its intent and how to start it in one transaction, then started; workflow id
 * `op:controller:<kind>:<id>`. A start Temporal refused undoes the intent (503); one
 * whose fate is unknown is left to the operation reconciler.
 */
export async function startControllerOperation(db: Db, temporal: TemporalDeps, req: ControllerOperationRequest) {
  const row: OperationRow = await db.transaction().execute(async (tx) => {
    const op = await tx
      .insertInto('operations')
      .values({
        model_name: null,
        kind: req.kind,
        target: req.target,
        summary: req.kind,
        created_by: req.createdBy,
        params: '{}',
        progress: '{}',
      })
      .returningAll()
      .executeTakeFirstOrThrow();
    await req.intent?.(tx, op.id);
    const start: OperationStart = { workflow: req.workflow, args: req.args(op.id) };
    return tx
      .updateTable('operations')
      .set({
        workflow_id: `op:controller:${req.kind}:${op.id}`,
        start: JSON.stringify(start),
        summary: req.summary(),
        params: JSON.stringify(req.params()),
      })
      .where('id', '=', op.id)
      .returningAll()
      .executeTakeFirstOrThrow();
  });
  try {
    await startOperationWorkflow(temporal, row);
  } catch (err) {
    if (!definitelyNotStarted(err)) {
      console.error(
        `charmflow: operation ${row.id} (${req.kind}) recorded; its workflow may not have started (${startError(err)}): the reconciler will start it`,
      );
      return row;
    }
    await req.undo?.(db);
    await db
      .updateTable('operations')
      .set({ state: 'failed', error: `could not start workflow: ${startError(err)}`, finished_at: new Date() })
      .where('id', '=', row.id)
      .where('state', '=', 'pending')
      .execute();
    throw new ApiError(503, `could not start the ${req.kind} operation: Temporal refused it`);
  }
  return row;
}

/**
 * A backup file sent as the request body (application/octet-stream), read and
 * checked whole; 415 when the body is not raw bytes (`what` names the file for
 * people), the BackupError's own 4xx when the file does not read.
 */
export function readBackupBody(body: unknown, what: string): ParsedBackup {
  if (!Buffer.isBuffer(body)) {
    throw new ApiError(415, `send ${what} as the body, with content-type application/octet-stream`);
  }
  try {
    return readBackup(body, { maxUnpackedBytes: maxBackupUnpackedBytes() });
  } catch (err) {
    if (err instanceof BackupError) throw apiErrorOf(err);
    throw err;
  }
}

/** The plugin's routes may take raw bytes (a backup file) as their body, up to the backup limit. */
export function acceptBackupBodies(app: Parameters<FastifyPluginAsyncZod>[0]): void {
  app.addContentTypeParser(
    ['application/octet-stream', 'application/gzip'],
    { parseAs: 'buffer', bodyLimit: maxBackupBytes() },
    (_req, body, done) => done(null, body),
  );
}

export function apiErrorOf(err: BackupError): ApiError {
  return new ApiError(err.statusCode, err.message, [{ field: err.field, message: err.message }]);
}

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

export const controllerBackupRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store, temporal } = app.deps;
  const db = store.db;
  const maxBytes = maxBackupBytes();

  // encapsulated in this plugin: only the restore route takes raw bytes
  acceptBackupBodies(app);

  async function findBackup(id: string): Promise<BackupRow> {
    const row = await db.selectFrom('controller_backups').selectAll().where('id', '=', id).executeTakeFirst();
    if (!row) throw new ApiError(404, `backup "${id}" not found (see charmflow backups)`);
    return row;
  }

  app.post(
    '/controller/backups',
    {
      schema: {
        summary: 'Back up the controller: its model store and charm store, to a file in the data dir (asynchronous)',
        tags: ['backups'],
        body: z.strictObject({}).optional(),
        response: { 202: z.object({ operation: Operation, backup: ControllerBackup }), ...errors },
      },
    },
    async (req, reply) => {
      const id = newBackupId();
      const op = await startControllerOperation(db, temporal, {
        kind: 'create-backup',
        target: id,
        createdBy: req.principal?.user ?? '',
        workflow: 'createControllerBackupWorkflow',
        summary: () => `back up the controller as ${id}`,
        params: () => ({ backup: id }),
        args: (operationId) => [{ operationId, model: '', kind: 'create-backup', backupId: id }],
        intent: async (tx, operationId) => {
          await tx
            .insertInto('controller_backups')
            .values({ id, operation_id: operationId, created_by: req.principal?.user ?? '' })
            .execute();
        },
        undo: async (d) => {
          await d.deleteFrom('controller_backups').where('id', '=', id).execute();
        },
      });
      return reply.status(202).send({ operation: toOperation(op), backup: toBackup(await findBackup(id)) });
    },
  );

  app.get(
    '/controller/backups',
    {
      schema: {
        summary: "List the controller's backups, newest first",
        tags: ['backups'],
        response: { 200: z.object({ backups: z.array(ControllerBackup) }), ...errors },
      },
    },
    async () => {
      const rows = await db.selectFrom('controller_backups').selectAll().orderBy('created_at', 'desc').execute();
      return { backups: rows.map(toBackup) };
    },
  );

  app.get(
    '/controller/backups/:id',
    {
      schema: {
        summary: 'Show a backup: its size, sha256, models and tables',
        tags: ['backups'],
        params: z.strictObject({ id: BackupId }),
        response: { 200: ControllerBackup, ...errors },
      },
    },
    async (req) => toBackup(await findBackup(req.params.id)),
  );

  app.get(
    '/controller/backups/:id/download',
    {
      schema: {
        summary:
          "Download a backup file (application/octet-stream; admin tokens only: it holds the controller's secret key)",
        tags: ['backups'],
        params: z.strictObject({ id: BackupId }),
        produces: ['application/octet-stream'],
        response: { 200: z.any().describe('the backup file'), ...errors },
      },
    },
    async (req, reply) => {
      if (req.principal?.role !== 'admin') {
        throw new ForbiddenError(
          `token "${req.principal?.tokenId ?? ''}" is read-only; a backup holds the controller's secret key, so downloading one needs an admin token`,
        );
      }
      const row = await findBackup(req.params.id);
      if (row.state !== 'ready') {
        throw new ConflictError(
          row.state === 'failed'
            ? `backup "${row.id}" failed: ${row.error ?? 'no reason given'}`
            : `backup "${row.id}" is still being written (operation ${row.operation_id})`,
        );
      }
      const info = await stat(row.path).catch(() => null);
      if (!info) throw new ApiError(404, `the file of backup "${row.id}" is gone from ${row.path}`);
      return reply
        .header('content-type', 'application/octet-stream')
        .header('content-length', String(info.size))
        .header('content-disposition', `attachment; filename="charmflow-backup-${row.id}.cfbackup"`)
        .header('x-charmflow-sha256', row.sha256)
        .send(createReadStream(row.path));
    },
  );

  app.post(
    '/controller/restore',
    {
      bodyLimit: maxBytes,
      schema: {
        summary:
          'Restore a backup (the file as application/octet-stream): checked whole first (400 names what is wrong), then the models this controller lacks are restored and their unit agents started (asynchronous); ?dryRun=true only says what would be restored',
        tags: ['backups'],
        consumes: ['application/octet-stream'],
        querystring: RestoreQuery,
        response: {
          200: z.object({ restore: RestoreSummary }),
          202: z.object({ operation: Operation, restore: RestoreSummary }),
          ...errors,
          413: ErrorBody,
          415: ErrorBody,
        },
      },
    },
    async (req, reply) => {
      const names = req.query.models
        ?.split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0);
      if (names !== undefined && names.length === 0) {
        throw new BadRequestError('?models= names no model', [
          { field: 'querystring.models', message: 'no model name' },
        ]);
      }
      const opts = names ? { models: names } : {};
      const backup = readBackupBody(req.body, 'the backup file');
      const id = backup.manifest.id;
      try {
        if (req.query.dryRun === 'true') {
          const plan = await planRestore(db, backup, store.secrets, opts);
          return reply.status(200).send({ restore: toSummary(backup, plan) });
        }
        let plan: RestorePlan | undefined;
        const op = await startControllerOperation(db, temporal, {
          kind: 'restore-backup',
          target: id,
          createdBy: req.principal?.user ?? '',
          workflow: 'restoreControllerBackupWorkflow',
          summary: () =>
            `restore backup ${id}: model(s) ${plan!.models.map((m) => m.name).join(', ') || 'none'}` +
            (plan!.charms.length > 0 ? `, ${plan!.charms.length} charm revision(s)` : ''),
          params: () => ({ backup: id, models: plan!.models.map((m) => m.name), charms: plan!.charms.length }),
          args: (operationId) => [
            {
              operationId,
              model: '',
              kind: 'restore-backup',
              backupId: id,
              models: plan!.models.map((m) => ({ name: m.name, uuid: m.uuid })),
            },
          ],
          intent: async (tx) => {
            plan = await planRestore(tx, backup, store.secrets, opts);
            if (plan.models.length === 0 && plan.charms.length === 0) {
              const why = plan.kept.map((k) => `${k.model}: ${k.reason}`).join('; ');
              throw new ConflictError(`nothing to restore: this controller has every model of the backup (${why})`);
            }
            await applyRestore(tx, backup, plan, store.secrets);
          },
          undo: async (d) => {
            // the workflow could not start: the restored records go again
            const uuids = plan?.models.map((m) => m.uuid) ?? [];
            if (uuids.length > 0) {
              for (const t of ['status_history', 'log_entries', 'hook_runs'] as const) {
                await d.deleteFrom(t).where('model_uuid', 'in', uuids).execute();
              }
              if (plan!.integrations.length > 0) {
                await d.deleteFrom('integrations').where('id', 'in', plan!.integrations).execute();
              }
              await d.deleteFrom('models').where('uuid', 'in', uuids).execute();
            }
          },
        });
        return reply.status(202).send({ operation: toOperation(op), restore: toSummary(backup, plan!) });
      } catch (err) {
        if (err instanceof BackupError) throw apiErrorOf(err);
        // another request made one of the same names or ids meanwhile: nothing was written
        if (isUniqueViolation(err)) {
          throw new ConflictError(
            `the restore collided with something made here meanwhile (${(err as { constraint?: string }).constraint ?? 'a unique key'}); nothing was restored`,
          );
        }
        throw err;
      }
    },
  );
};
