import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { asJsonRows } from '../../store/json-rows.ts';
import type { OperationRow } from '../../store/schema.ts';
import type { Db } from '../../store/store.ts';
import { NotFoundError } from '../errors.ts';
import { toOperation } from '../operation-starter.ts';
import { ErrorBody, IdParam, Operation, OperationsQuery } from '../schemas.ts';

/** A unit's state in an operation that needs nothing more from it. */
const settled = (state: string) =>
  state === 'done' ||
  state === 'no agent' ||
  state.startsWith('error') ||
  state.startsWith('removed') ||
  // what the unit waits on (its machine in error, ...) says more than its last hook run
  state.startsWith('waiting: ');

/**
 * A running operation's per-unit progress, live. The workflow records milestones
 * (a unit's last hook done, a failure, a removal); the hooks in between are read
 * from the units' hook runs since the operation began, so following them costs no
 * workflow signal per hook.
 */
async function withLiveUnits(db: Db, row: OperationRow, op: Operation): Promise<Operation> {
  const { units, live: already } = op.progress as { units?: Record<string, string>; live?: boolean };
  // a deploy's progress is kept live by the deploy itself (it follows its units in the store)
  if (row.state !== 'running' || !row.model_name || !units || already === true) return op;
  const open = Object.keys(units).filter((u) => !settled(units[u]));
  if (open.length === 0) return op;
  const runs = await asJsonRows(
    db,
    db
      .selectFrom('hook_runs as r')
      .innerJoin('models as m', 'm.uuid', 'r.model_uuid')
      .distinctOn('r.unit')
      .select(['r.unit', 'r.hook', 'r.finished_at', 'r.exit_code'])
      .where('m.name', '=', row.model_name)
      .where('r.unit', 'in', open)
      .where('r.started_at', '>=', row.created_at)
      .orderBy('r.unit')
      .orderBy('r.started_at', 'desc'),
  );
  const live = { ...units };
  for (const r of runs) {
    live[r.unit] =
      r.finished_at === null ? `running ${r.hook} hook` : r.exit_code === 0 ? `${r.hook} done` : `${r.hook} failed`;
  }
  return { ...op, progress: { ...op.progress, units: live } };
}

export const operationRoutes: FastifyPluginAsyncZod = async (app) => {
  const db = app.deps.store.db;

  app.get(
    '/operations',
    {
      schema: {
        summary: 'List operations, newest first',
        tags: ['operations'],
        querystring: OperationsQuery,
        response: { 200: z.object({ operations: z.array(Operation) }), 400: ErrorBody, 401: ErrorBody },
      },
    },
    async (req) => {
      let q = db.selectFrom('operations').selectAll().orderBy('id', 'desc').limit(req.query.limit);
      if (req.query.model) q = q.where('model_name', '=', req.query.model);
      if (req.query.state) q = q.where('state', '=', req.query.state);
      return { operations: (await q.execute()).map(toOperation) };
    },
  );

  app.get(
    '/operations/:id',
    {
      schema: {
        summary: 'Show one operation',
        tags: ['operations'],
        params: IdParam,
        response: { 200: Operation, 400: ErrorBody, 401: ErrorBody, 404: ErrorBody },
      },
    },
    async (req) => {
      const row = await db.selectFrom('operations').selectAll().where('id', '=', req.params.id).executeTakeFirst();
      if (!row) throw new NotFoundError('operation', String(req.params.id));
      return withLiveUnits(db, row, toOperation(row));
    },
  );
};
