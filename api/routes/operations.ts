import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { NotFoundError } from '../errors.ts';
import { toOperation } from '../operation-starter.ts';
import { ErrorBody, IdParam, Operation, OperationsQuery } from '../schemas.ts';

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
      return toOperation(row);
    },
  );
};
