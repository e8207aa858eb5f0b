import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { sql } from 'kysely';
import { z } from 'zod';
import type { TemporalDeps } from '../operation-starter.ts';

export interface PartHealth {
  ok: boolean;
  /** Why it is down (or what it is, when up). */
  detail?: string;
}

/** Checks one part of the controller; answers within about two seconds. */
export type HealthProbe = () => Promise<PartHealth>;

const PROBE_TIMEOUT_MS = 2000;

/** Temporal answers a cheap call within the probe's time. */
export async function temporalReachable(temporal: TemporalDeps): Promise<PartHealth> {
  const { connection } = temporal.client;
  await connection.withDeadline(Date.now() + PROBE_TIMEOUT_MS - 200, () =>
    connection.workflowService.getSystemInfo({}),
  );
  return { ok: true };
}

async function withTimeout(name: string, probe: HealthProbe): Promise<PartHealth> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<PartHealth>((r) => {
    timer = setTimeout(
      () => r({ ok: false, detail: `no answer within ${PROBE_TIMEOUT_MS / 1000}s` }),
      PROBE_TIMEOUT_MS,
    );
  });
  try {
    return await Promise.race([
      probe().catch((err: unknown) => ({
        ok: false,
        detail: `${name} check failed: ${err instanceof Error ? err.message : String(err)}`,
      })),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

const Part = z.object({ ok: z.boolean(), detail: z.string().optional() });
const Health = z.object({
  status: z.enum(['ok', 'degraded']),
  store: z.string(),
  parts: z.record(z.string(), Part),
  message: z.string().optional(),
});

export const healthRoutes: FastifyPluginAsyncZod = async (app) => {
  app.get(
    '/healthz',
    {
      schema: {
        summary: 'Health of each part (store, Temporal, worker): 200 when all are up, 503 naming those down; no token',
        security: [],
        response: { 200: Health, 503: Health },
      },
    },
    async (_req, reply) => {
      const { store, temporal } = app.deps;
      const probes: Record<string, HealthProbe> = {
        store: async () => {
          await sql`select 1`.execute(store.db);
          return { ok: true };
        },
        temporal: () => temporalReachable(temporal),
        ...app.deps.health,
      };
      const names = Object.keys(probes);
      const results = await Promise.all(names.map((n) => withTimeout(n, probes[n])));
      const parts = Object.fromEntries(names.map((n, i) => [n, results[i]]));
      const down = names.filter((_, i) => !results[i].ok);
      if (down.length === 0) return { status: 'ok' as const, store: store.kind, parts };
      return reply.status(503).send({
        status: 'degraded' as const,
        store: store.kind,
        parts,
        message: down.map((n) => `${n} down${parts[n].detail ? `: ${parts[n].detail}` : ''}`).join('; '),
      });
    },
  );
};
