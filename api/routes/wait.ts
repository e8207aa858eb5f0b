// `GET /v1/models/:model/wait`: a long-poll that answers once a model (or one
// application and its units) has settled: no operation pending or running, no unit
// executing or allocating, every unit agent idle with nothing queued. A unit in
// error answers at once (fail fast), and the timeout answers with what is busy.
import { WorkflowNotFoundError } from '@temporalio/client';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { ModelRow } from '../../store/schema.ts';
import type { Db } from '../../store/store.ts';
import {
  legacyUnitAgentWorkflowId,
  type UnitAgentView,
  unitAgentQuery,
  unitAgentWorkflowId,
} from '../../workflows/messages.ts';
import { NotFoundError } from '../errors.ts';
import { findModel } from '../model-lookup.ts';
import type { TemporalDeps } from '../operation-starter.ts';
import { ErrorBody, ModelParam, queryInt, Text } from '../schemas.ts';

/** The longest one request waits (seconds); clients ask again for longer. */
export const MAX_WAIT_SECONDS = 60;
const DEFAULT_WAIT_SECONDS = 30;
/** How often the model is looked at while a request waits. */
const LOOK_EVERY_MS = 250;
/** Unit agents asked at once. */
const AGENT_CONCURRENCY = 16;
/** How long one agent may take to answer its query before it counts as busy. */
const AGENT_ANSWER_MS = 5_000;

export const WaitQuery = z.strictObject({
  app: Text.min(1).optional(),
  timeout: queryInt(0, MAX_WAIT_SECONDS).default(DEFAULT_WAIT_SECONDS),
});

export const WaitError = z.object({ unit: z.string(), message: z.string() });
export const WaitBusy = z.object({ what: z.string(), why: z.string() });
export const WaitAnswer = z.object({
  /** Nothing pending, executing or retrying; no unit in error. */
  settled: z.boolean(),
  /** Units in error (the answer comes at once when there are any). */
  errors: z.array(WaitError),
  /** What was still busy when the answer was given (empty once settled). */
  busy: z.array(WaitBusy),
});
export type WaitAnswer = z.infer<typeof WaitAnswer>;

/** Operations that change the whole model: they concern every application in it. */
const MODEL_WIDE_KINDS = new Set(['create-model', 'destroy-model']);
/** Operations on machines: their target (`machine/N`) names no application. */
const MACHINE_KINDS = new Set(['add-machine', 'remove-machine']);

/** Operations whose target may name an application of another model (`model.app:endpoint`). */
const INTEGRATION_KINDS = ['integrate', 'remove-integration'];

/**
 * Whether an operation concerns model `model` (application `app` of it, when given).
 * An operation of the model concerns `app` when its target is the application
 * (deploy, add-unit, config, remove-application), one of its units (resolve;
 * remove-unit lists them comma-separated), or one end of an integration
 * (`app:endpoint`); model-wide ones concern every application. An integration
 * operation of another model concerns this one when one end is `model.app:endpoint`.
 */
export function operationConcerns(
  op: { kind: string; target: string; model_name?: string | null },
  model: string,
  app?: string,
): boolean {
  const parts = op.target.split(/[\s,]+/);
  if (op.model_name != null && op.model_name !== model) {
    if (!INTEGRATION_KINDS.includes(op.kind)) return false;
    return parts.some((p) => p.startsWith(app === undefined ? `${model}.` : `${model}.${app}:`));
  }
  if (app === undefined || MODEL_WIDE_KINDS.has(op.kind)) return true;
  if (MACHINE_KINDS.has(op.kind)) return false;
  return parts.some((p) => p === app || p.startsWith(`${app}/`) || p.startsWith(`${app}:`));
}

interface Look {
  errors: WaitAnswer['errors'];
  busy: WaitAnswer['busy'];
}

/** Runs `fn` on every item, at most `limit` at a time; results in the items' order. */
async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

type AgentAnswer = { view: UnitAgentView } | { none: true } | { noAnswer: string };

/** The unit agent's view, under today's workflow id or the legacy one; `none` when it has no running agent. */
async function askAgent(temporal: TemporalDeps, model: ModelRow, unit: string): Promise<AgentAnswer> {
  const client = temporal.client;
  for (const id of [unitAgentWorkflowId(model.name, model.uuid, unit), legacyUnitAgentWorkflowId(model.name, unit)]) {
    const handle = client.workflow.getHandle(id);
    try {
      const view = await client.withDeadline(Date.now() + AGENT_ANSWER_MS, () => handle.query(unitAgentQuery));
      return { view };
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) continue;
      // an agent that ended (the unit went, or it was terminated) has nothing to do
      try {
        const d = await client.withDeadline(Date.now() + AGENT_ANSWER_MS, () => handle.describe());
        if (d.status.name !== 'RUNNING') continue;
      } catch (e) {
        if (e instanceof WorkflowNotFoundError) continue;
      }
      return { noAnswer: err instanceof Error ? err.message : String(err) };
    }
  }
  return { none: true };
}

const numericAware = new Intl.Collator(undefined, { numeric: true }).compare;

function failureMessage(f: NonNullable<UnitAgentView['failure']>): string {
  return f.message || `hook failed: "${f.hook}"`;
}

/**
 * One look at the model: the store first (operations, units in error, executing or
 * allocating), and only when it says idle, every unit's agent.
 */
async function look(db: Db, temporal: TemporalDeps, model: ModelRow, only?: string): Promise<Look> {
  const [ops, units] = await Promise.all([
    db
      .selectFrom('operations')
      .select(['id', 'kind', 'target', 'state', 'summary', 'model_name'])
      .where('state', 'in', ['pending', 'running'])
      .where((eb) =>
        eb.or([
          eb('model_name', '=', model.name),
          // model names are [a-z0-9-]: nothing in them is a LIKE wildcard
          eb.and([eb('kind', 'in', INTEGRATION_KINDS), eb('target', 'like', `%${model.name}.%`)]),
        ]),
      )
      .orderBy('id')
      .execute(),
    (() => {
      let q = db
        .selectFrom('units')
        .select(['name', 'workload_status', 'workload_message', 'agent_status', 'agent_message', 'number'])
        .where('model_uuid', '=', model.uuid);
      if (only !== undefined) q = q.where('application', '=', only);
      return q.orderBy('application').orderBy('number').execute();
    })(),
  ]);
  const out: Look = { errors: [], busy: [] };
  for (const u of units) {
    if (u.workload_status === 'error') out.errors.push({ unit: u.name, message: u.workload_message || 'in error' });
  }
  if (out.errors.length > 0) {
    // a unit whose failed hook is being retried right now shows `executing` (and
    // whatever status the hook set so far) in the store: its agent knows it is in error
    const retrying = units.filter((u) => u.workload_status !== 'error' && u.agent_status === 'executing');
    const answers = await mapLimit(retrying, AGENT_CONCURRENCY, (u) => askAgent(temporal, model, u.name));
    retrying.forEach((u, i) => {
      const a = answers[i];
      if ('view' in a && a.view.failure) out.errors.push({ unit: u.name, message: failureMessage(a.view.failure) });
    });
    out.errors.sort((x, y) => numericAware(x.unit, y.unit));
    return out;
  }
  for (const op of ops) {
    if (!operationConcerns(op, model.name, only)) continue;
    const where = op.model_name !== model.name ? ` of model ${op.model_name}` : '';
    out.busy.push({
      what: `operation ${op.id} (${op.kind})${where}`,
      why: `${op.state}: ${op.summary || op.target}`,
    });
  }
  for (const u of units) {
    if (u.agent_status === 'executing' || u.agent_status === 'allocating') {
      out.busy.push({ what: u.name, why: u.agent_message || u.agent_status });
    }
  }
  if (out.busy.length > 0) return out;
  const answers = await mapLimit(units, AGENT_CONCURRENCY, (u) => askAgent(temporal, model, u.name));
  units.forEach((u, i) => {
    const a = answers[i];
    if ('none' in a) return; // no agent and no operation running: nothing will happen to it
    if ('noAnswer' in a) {
      out.busy.push({ what: u.name, why: `its agent did not answer: ${a.noAnswer}` });
      return;
    }
    const v = a.view;
    if (v.failure) {
      out.errors.push({ unit: u.name, message: failureMessage(v.failure) });
    } else if (v.current !== null) {
      const rest = v.queue.slice(1);
      out.busy.push({
        what: u.name,
        why: `running ${v.current} hook${rest.length ? `; queued: ${rest.join(', ')}` : ''}`,
      });
    } else if (v.queue.length > 0) {
      out.busy.push({ what: u.name, why: `queued: ${v.queue.join(', ')}` });
    } else if (v.relationsPending) {
      out.busy.push({ what: u.name, why: 'relation changes to look at' });
    }
  });
  if (out.errors.length > 0) out.busy = [];
  return out;
}

export const waitRoutes: FastifyPluginAsyncZod = async (app) => {
  const db = app.deps.store.db;
  // a closing server answers its waiting polls at once instead of holding its close
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });

  app.get(
    '/models/:model/wait',
    {
      schema: {
        summary:
          'Long-poll until the model (or one application) has settled: nothing pending, executing or retrying; answers at once when a unit is in error',
        tags: ['models'],
        params: ModelParam,
        querystring: WaitQuery,
        response: { 200: WaitAnswer, 400: ErrorBody, 401: ErrorBody, 404: ErrorBody },
      },
    },
    async (req, reply) => {
      const model = await findModel(db, req.params.model);
      const only = req.query.app;
      if (only !== undefined) {
        const found = await db
          .selectFrom('applications')
          .select('name')
          .where('model_uuid', '=', model.uuid)
          .where('name', '=', only)
          .executeTakeFirst();
        if (!found) throw new NotFoundError('application', only);
      }
      let gone = false;
      reply.raw.once('close', () => {
        if (!reply.raw.writableFinished) gone = true;
      });
      const deadline = Date.now() + req.query.timeout * 1000;
      // settled once two looks a little apart both find it idle: a wake sent after a
      // commit may be on its way between two looks
      let idleLooks = 0;
      let last: Look = { errors: [], busy: [] };
      while (true) {
        last = await look(db, app.deps.temporal, model, only);
        if (last.errors.length > 0) return { settled: false, errors: last.errors, busy: [] };
        idleLooks = last.busy.length === 0 ? idleLooks + 1 : 0;
        if (idleLooks >= 2) return { settled: true, errors: [], busy: [] };
        if (gone || closing) break;
        const left = deadline - Date.now();
        // a first idle look is confirmed even past the deadline
        if (idleLooks === 0 && left <= 0) break;
        const pause = idleLooks === 1 ? LOOK_EVERY_MS : Math.min(LOOK_EVERY_MS, left);
        await new Promise((r) => setTimeout(r, pause));
      }
      const busy = last.busy.length > 0 ? last.busy : [{ what: 'controller', why: 'closing; ask again' }];
      return { settled: false, errors: [], busy };
    },
  );
};
