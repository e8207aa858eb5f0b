import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { sql } from 'kysely';
import { z } from 'zod';

export const healthRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/healthz',
    {
      schema: {
        summary: 'Liveness and readiness; needs no token',
        security: [],
        response: { 200: z.object({ status: z.literal('ok'), store: z.string() }) },
      },
    },
    async () => {
      await sql`select 1`.execute(app.deps.store.db);
      return { status: 'ok' as const, store: app.deps.store.kind };
    },
  );
};
