// refresh: move an application to another revision of its charm in rolling
// batches with a health gate and automatic rollback (workflows/refresh-workflows.ts);
// --dry-run answers the plan and changes nothing; resume/abort a paused one.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { getCharmInfo } from '../../charm/charm-store.ts';
import { refreshAbortSignal, refreshResumeSignal } from '../../workflows/messages.ts';
import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts';
import { findModel } from '../model-lookup.ts';
import { startOperation, toOperation } from '../operation-starter.ts';
import { AppParams, bodyInt, ErrorBody, IdParam, Operation, Text } from '../schemas.ts';

export const RefreshBody = z.strictObject({
  /** A revision of the application's charm (default: its newest). */
  revision: bodyInt(1).optional(),
  /** The charm to refresh to, when it was uploaded under another name (e.g. a renamed build). */
  charm: Text.min(1).optional(),
  maxUnavailable: bodyInt(1, 1000).default(1),
  pauseAfterFirst: z.boolean().default(false),
  dryRun: z.boolean().default(false),
  /** How long each batch has to be active after its hooks. */
  gateTimeoutSeconds: bodyInt(1, 86_400).default(300),
  /** An action every refreshed unit must complete, as part of the gate. */
  probe: Text.min(1).max(100).optional(),
});

export const RefreshPlan = z.object({
  application: z.string(),
  charm: z.string(),
  from: z.number().int(),
  to: z.number().int(),
  batches: z.array(z.array(z.string())),
  hooks: z.array(z.string()),
  gate: z.string(),
});

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

export const refreshRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store, temporal } = app.deps;
  const db = store.db;

  app.post(
    '/models/:model/applications/:app/refresh',
    {
      schema: {
        summary:
          'Refresh an application to another charm revision: rolling batches, health gate, automatic rollback (asynchronous; dryRun answers the plan)',
        tags: ['applications'],
        params: AppParams,
        body: RefreshBody,
        response: {
          200: z.object({ plan: RefreshPlan }),
          202: z.object({ operation: Operation, plan: RefreshPlan }),
          ...errors,
        },
      },
    },
    async (req, reply) => {
      const body = req.body;
      const model = await findModel(db, req.params.model);
      if (model.life !== 'alive') throw new ConflictError(`model "${model.name}" is being destroyed`);
      const row = await db
        .selectFrom('applications')
        .selectAll()
        .where('model_uuid', '=', model.uuid)
        .where('name', '=', req.params.app)
        .executeTakeFirst();
      if (!row) throw new NotFoundError('application', req.params.app);
      if (row.life !== 'alive') throw new ConflictError(`application "${row.name}" is being removed`);
      const charmName = body.charm ?? row.charm_name;
      const target = await db
        .selectFrom('charms')
        .select(['name', 'revision'])
        .where('name', '=', charmName)
        .$if(body.revision !== undefined, (q) => q.where('revision', '=', body.revision as number))
        .orderBy('revision', 'desc')
        .executeTakeFirst();
      if (!target) {
        throw new NotFoundError(
          'charm revision',
          body.revision !== undefined ? `${charmName}:${body.revision}` : charmName,
        );
      }
      const running = await db
        .selectFrom('operations')
        .select(['id', 'state', 'summary'])
        .where('model_name', '=', model.name)
        .where('kind', '=', 'refresh')
        .where('target', '=', row.name)
        .where('state', 'in', ['pending', 'running'])
        .executeTakeFirst();
      if (running) {
        throw new ConflictError(
          `operation ${running.id} (${running.summary}) is ${running.state}: one refresh at a time`,
        );
      }
      // units a stopped refresh left on another revision: a refresh to the application's
      // own revision brings just them back (and rolls them back to where they were on failure)
      const strays = await db
        .selectFrom('units')
        .select(['name', 'charm_revision'])
        .where('model_uuid', '=', model.uuid)
        .where('application', '=', row.name)
        .where('life', '=', 'alive')
        .where('charm_revision', 'is not', null)
        .where('charm_revision', '!=', row.charm_revision)
        .execute();
      const repair = target.name === row.charm_name && target.revision === row.charm_revision;
      if (repair && strays.length === 0) {
        throw new BadRequestError(
          `application "${row.name}" already runs ${row.charm_name} revision ${row.charm_revision}`,
          [{ field: 'body.revision', message: 'same revision' }],
        );
      }
      const strayRevisions = [...new Set(strays.map((u) => u.charm_revision as number))];
      if (repair && strayRevisions.length > 1) {
        throw new ConflictError(
          `units of "${row.name}" are on revisions ${strayRevisions.join(', ')}: bring them to one revision first`,
        );
      }
      if (!repair && strays.length > 0) {
        throw new ConflictError(
          `${strays.map((u) => `${u.name} is on revision ${u.charm_revision}`).join(', ')} (a refresh stopped part way): refresh to revision ${row.charm_revision} first to bring them back, or to ${strayRevisions[0]} to finish it`,
        );
      }
      const [from, to] = await Promise.all([
        getCharmInfo(db, row.charm_name, row.charm_revision),
        getCharmInfo(db, target.name, target.revision),
      ]);
      if (!to || !from) throw new NotFoundError('charm revision', `${target.name}:${target.revision}`);
      // an endpoint in use must stay, with its role and interface: refused before any unit changes
      const inUse = await db
        .selectFrom('integration_endpoints')
        .select(['endpoint', 'role'])
        .distinct()
        .where('model_uuid', '=', model.uuid)
        .where('application', '=', row.name)
        .execute();
      for (const e of inUse) {
        const now = from.meta.endpoints.find((x) => x.name === e.endpoint);
        const next = to.meta.endpoints.find((x) => x.name === e.endpoint);
        if (!next || next.role !== now?.role || next.interface !== now?.interface) {
          const what = next ? `changes the ${next.role !== now?.role ? 'role' : 'interface'} of` : 'drops';
          throw new BadRequestError(
            `revision ${target.revision} of ${target.name} ${what} endpoint "${e.endpoint}", which is in use: remove its integrations first`,
            [{ field: 'body.revision', message: `endpoint ${e.endpoint} in use` }],
          );
        }
      }
      if (body.probe && !to.meta.actions[body.probe]) {
        throw new BadRequestError(
          `revision ${target.revision} of ${target.name} has no action "${body.probe}" to probe with`,
          [{ field: 'body.probe', message: 'unknown action' }],
        );
      }
      const members = (
        await db
          .selectFrom('units')
          .select(['name', 'leader', 'number'])
          .where('model_uuid', '=', model.uuid)
          .where('application', '=', row.name)
          .where('life', '=', 'alive')
          .orderBy('number')
          .execute()
      ).filter((u) => !repair || strays.some((x) => x.name === u.name));
      const fromRevision = repair ? strayRevisions[0] : row.charm_revision;
      // the leader goes last, in a batch of its own
      const order = [...members.filter((u) => !u.leader), ...members.filter((u) => u.leader)].map((u) => u.name);
      const leader = members.find((u) => u.leader)?.name;
      const batches: string[][] = [];
      const rest = order.filter((u) => u !== leader);
      for (let i = 0; i < rest.length; i += body.maxUnavailable) batches.push(rest.slice(i, i + body.maxUnavailable));
      if (leader) batches.push([leader]);
      const plan = {
        application: row.name,
        charm: target.name,
        from: fromRevision,
        to: target.revision,
        batches,
        hooks: ['upgrade-charm', 'config-changed'],
        gate: `every unit of a batch active within ${body.gateTimeoutSeconds}s${body.probe ? ` and action ${body.probe} completed` : ''}; else every refreshed unit rolls back to revision ${fromRevision}`,
      };
      if (body.dryRun) return reply.status(200).send({ plan });
      if (target.name !== row.charm_name) {
        throw new BadRequestError(`refresh keeps the charm: "${row.name}" runs ${row.charm_name}, not ${target.name}`, [
          { field: 'body.charm', message: 'another charm' },
        ]);
      }
      const op = await startOperation(db, temporal, {
        kind: 'refresh',
        model: model.name,
        target: row.name,
        createdBy: req.principal?.user ?? '',
        workflow: 'refreshWorkflow',
        summary: `refresh ${row.name} from revision ${fromRevision} to ${target.revision} (${batches.length} batch(es), max-unavailable ${body.maxUnavailable})${repair ? ', bringing back what a stopped refresh left' : ''}`,
        // a probe action runs with no params (read from here, like any action's)
        params: { from: fromRevision, to: target.revision, batches, params: {} },
        args: (operationId) => [
          {
            operationId,
            model: model.name,
            modelUuid: model.uuid,
            kind: 'refresh',
            application: row.name,
            fromRevision,
            ...(repair ? { rollbackRevision: fromRevision } : {}),
            toRevision: target.revision,
            batches,
            gateTimeoutSeconds: body.gateTimeoutSeconds,
            pauseAfterFirst: body.pauseAfterFirst,
            ...(body.probe ? { probe: body.probe } : {}),
          },
        ],
      });
      return reply.status(202).send({ operation: toOperation(op), plan });
    },
  );

  for (const [verb, signal, summary] of [
    ['resume', refreshResumeSignal, 'Resume a refresh paused after its first batch'],
    ['abort', refreshAbortSignal, 'Abort a refresh: every unit it refreshed rolls back'],
  ] as const) {
    app.post(
      `/operations/:id/${verb}`,
      {
        schema: {
          summary,
          tags: ['operations'],
          params: IdParam,
          response: { 200: z.object({ operation: Operation }), ...errors },
        },
      },
      async (req) => {
        const op = await db.selectFrom('operations').selectAll().where('id', '=', req.params.id).executeTakeFirst();
        if (!op) throw new NotFoundError('operation', String(req.params.id));
        if (op.kind !== 'refresh')
          throw new ConflictError(`operation ${op.id} is a ${op.kind}: only a refresh can be ${verb}d`);
        if (op.state !== 'running' && op.state !== 'pending') {
          throw new ConflictError(`operation ${op.id} already ended (${op.state})`);
        }
        const paused = (op.progress as { paused?: boolean }).paused === true;
        if (verb === 'resume' && !paused) throw new ConflictError(`operation ${op.id} is not paused`);
        if (!op.workflow_id) throw new ConflictError(`operation ${op.id} has not started yet`);
        await temporal.client.workflow.getHandle(op.workflow_id).signal(signal);
        return { operation: toOperation(op) };
      },
    );
  }
};
