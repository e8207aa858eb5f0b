// Read routes behind `debug-log` and `show-status-log`: a model's log lines and a
// unit's status history.

import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { ExpressionBuilder } from 'kysely';
import { z } from 'zod';
import type { Database } from '../../store/schema.ts';
import { NotFoundError } from '../errors.ts';
import { findModel } from '../model-lookup.ts';
import { iso } from '../operation-starter.ts';
import { ErrorBody, ModelParam, queryInt, Text, UnitParams } from '../schemas.ts';

/** Juju's log levels, least severe first. */
export const LOG_LEVELS = ['TRACE', 'DEBUG', 'INFO', 'WARNING', 'ERROR'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

// Juju's loggo reads levels case-insensitively and takes WARN for WARNING.
const LogLevelParam = z.preprocess((v) => {
  if (typeof v !== 'string') return v;
  const up = v.toUpperCase();
  return up === 'WARN' ? 'WARNING' : up;
}, z.enum(LOG_LEVELS));

// An entity selector: a unit (`app/0`), an application name (`app`: all its units),
// or another entity (`machine/0`, `application/app`, `model/name`). Juju's tag
// spellings `unit-app-0` and `machine-0` are read too, since debug-log prints them.
const EntitySelector = z
  .string()
  .regex(/^[a-z0-9][a-z0-9-]*(\/[a-z0-9][a-z0-9./-]*)?$/, 'expected a unit (app/0), an application, or an entity');

function fromJujuTag(s: string): string {
  const unit = /^unit-([a-z][a-z0-9-]*)-(\d+)$/.exec(s);
  if (unit) return `${unit[1]}/${unit[2]}`;
  const machine = /^machine-(\d+)$/.exec(s);
  if (machine) return `machine/${machine[1]}`;
  return s;
}

// Repeatable (`?include=a&include=b`) or comma-separated (`?include=a,b`), or both.
const EntityList = z
  .union([Text, z.array(Text)])
  .optional()
  .transform((v) =>
    (v === undefined ? [] : [v].flat())
      .flatMap((s) => s.split(','))
      .map((s) => fromJujuTag(s.trim()))
      .filter((s) => s !== ''),
  )
  .pipe(z.array(EntitySelector));

export const LogsQuery = z.strictObject({
  after: queryInt(0).optional(),
  include: EntityList,
  exclude: EntityList,
  level: LogLevelParam.optional(),
  limit: queryInt(1, 1000).default(100),
  tail: queryInt(1, 1000).optional(),
});

export const LogEntry = z.object({
  id: z.number().int(),
  entity: z.string(),
  level: z.string(),
  message: z.string(),
  at: z.string(),
});
export type LogEntry = z.infer<typeof LogEntry>;

export const LogsPage = z.object({
  entries: z.array(LogEntry),
  /** The highest id returned, or the `after` given: the next request's `after`. */
  last: z.number().int(),
});
export type LogsPage = z.infer<typeof LogsPage>;

const StatusKind = z.enum(['workload', 'agent']);

export const StatusLogQuery = z.strictObject({
  limit: queryInt(1, 1000).default(20),
  kinds: Text.default('workload,agent')
    .transform((s) =>
      s
        .split(',')
        .map((k) => k.trim())
        .filter((k) => k !== ''),
    )
    .pipe(z.array(StatusKind).min(1)),
});

export const StatusLogEntry = z.object({
  at: z.string(),
  kind: StatusKind,
  status: z.string(),
  message: z.string(),
  data: z.record(z.string(), z.unknown()).optional(),
});
export type StatusLogEntry = z.infer<typeof StatusLogEntry>;

export const StatusLog = z.object({ unit: z.string(), entries: z.array(StatusLogEntry) });
export type StatusLog = z.infer<typeof StatusLog>;

function matchEntity(eb: ExpressionBuilder<Database, 'log_entries'>, selector: string) {
  // Selectors are validated to [a-z0-9./-], so none of LIKE's wildcards can occur.
  return selector.includes('/') ? eb('entity', '=', selector) : eb('entity', 'like', `${selector}/%`);
}

export const logRoutes: FastifyPluginAsyncZod = async (app) => {
  const db = app.deps.store.db;

  async function modelUuid(name: string): Promise<string> {
    return (await findModel(db, name)).uuid;
  }

  app.get(
    '/models/:model/logs',
    {
      schema: {
        summary: "A model's log lines (debug-log), oldest first; page with `after`, start with `tail`",
        tags: ['models'],
        params: ModelParam,
        querystring: LogsQuery,
        response: { 200: LogsPage, 400: ErrorBody, 401: ErrorBody, 404: ErrorBody },
      },
    },
    async (req) => {
      const { after, include, exclude, level, limit, tail } = req.query;
      const uuid = await modelUuid(req.params.model);
      let q = db
        .selectFrom('log_entries')
        .select(['id', 'entity', 'level', 'message', 'at'])
        .where('model_uuid', '=', uuid);
      if (after !== undefined) q = q.where('id', '>', after);
      if (include.length > 0) q = q.where((eb) => eb.or(include.map((s) => matchEntity(eb, s))));
      if (exclude.length > 0) q = q.where((eb) => eb.not(eb.or(exclude.map((s) => matchEntity(eb, s)))));
      if (level) q = q.where('level', 'in', LOG_LEVELS.slice(LOG_LEVELS.indexOf(level)));
      const rows =
        tail !== undefined
          ? (await q.orderBy('id', 'desc').limit(tail).execute()).reverse()
          : await q.orderBy('id', 'asc').limit(limit).execute();
      return {
        entries: rows.map((r) => ({ ...r, at: iso(r.at)! })),
        last: rows.length > 0 ? rows[rows.length - 1].id : (after ?? 0),
      };
    },
  );

  app.get(
    '/models/:model/units/:app/:n/status-log',
    {
      schema: {
        summary: "A unit's workload and agent status history (show-status-log), oldest first",
        tags: ['models'],
        params: UnitParams,
        querystring: StatusLogQuery,
        response: { 200: StatusLog, 400: ErrorBody, 401: ErrorBody, 404: ErrorBody },
      },
    },
    async (req) => {
      const unit = `${req.params.app}/${req.params.n}`;
      const uuid = await modelUuid(req.params.model);
      // The newest `limit` entries, shown oldest first as Juju does.
      const rows = (
        await db
          .selectFrom('status_history')
          .select(['at', 'kind', 'status', 'message', 'data'])
          .where('model_uuid', '=', uuid)
          .where('entity', '=', unit)
          .where('kind', 'in', req.query.kinds)
          .orderBy('id', 'desc')
          .limit(req.query.limit)
          .execute()
      ).reverse();
      if (rows.length === 0) {
        // A removed unit keeps its history; only a unit never heard of is unknown.
        const [row, any] = await Promise.all([
          db
            .selectFrom('units')
            .select('name')
            .where('model_uuid', '=', uuid)
            .where('name', '=', unit)
            .executeTakeFirst(),
          db
            .selectFrom('status_history')
            .select('id')
            .where('model_uuid', '=', uuid)
            .where('entity', '=', unit)
            .limit(1)
            .executeTakeFirst(),
        ]);
        if (!row && !any) throw new NotFoundError('unit', unit);
      }
      return {
        unit,
        entries: rows.map((r) => ({
          at: iso(r.at)!,
          kind: r.kind as StatusLogEntry['kind'],
          status: r.status,
          message: r.message,
          ...(r.data ? { data: r.data } : {}),
        })),
      };
    },
  );
};
