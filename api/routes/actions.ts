// Actions: list an application's actions, run one on a unit (APP/N or APP/leader)
// with params checked against its schema, and cancel one still queued.
import { WorkflowNotFoundError } from '@temporalio/client';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { onUnitAgent } from '../../activities/unit-agents.ts';
import { ActionParamsError, actionSchema, checkActionParams } from '../../charm/action-params.ts';
import { getCharmInfo } from '../../charm/charm-store.ts';
import type { CharmMeta } from '../../charm/metadata.ts';
import type { Db, Tx } from '../../store/store.ts';
import { cancelActionUpdate } from '../../workflows/messages.ts';
import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts';
import { findModel } from '../model-lookup.ts';
import { startOperation, toOperation } from '../operation-starter.ts';
import { Accepted, AppParams, ErrorBody, IdParam, ModelParam, Operation, Text } from '../schemas.ts';

export const RunActionBody = z.strictObject({
  /** `app/N`, or `app/leader` for the application's leader. */
  unit: Text.regex(/^[a-z][a-z0-9-]*\/(\d+|leader)$/, 'must be APP/N or APP/leader'),
  action: Text.min(1).max(100),
  params: z.record(Text, z.unknown()).default({}),
});

export const ActionInfo = z.object({
  description: z.string(),
  /** The params object's JSON Schema (properties, required, additionalProperties). */
  schema: z.record(z.string(), z.unknown()),
});

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

/** An operation that runs an action starts with its outcome "running" (the hook activity writes the rest). */
export async function markActionRunning(tx: Tx, operationId: number): Promise<void> {
  await tx
    .updateTable('operations')
    .set({ results: JSON.stringify({ status: 'running', results: {}, log: [], message: '' }) })
    .where('id', '=', operationId)
    .execute();
}

async function charmMetaOf(db: Db, name: string, revision: number): Promise<CharmMeta> {
  const charm = await getCharmInfo(db, name, revision);
  if (!charm) throw new NotFoundError('charm', `${name}:${revision}`);
  return charm.meta;
}

export const actionRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store, temporal } = app.deps;
  const db = store.db;

  app.get(
    '/models/:model/applications/:app/actions',
    {
      schema: {
        summary: "An application's actions, with each one's params schema",
        tags: ['actions'],
        params: AppParams,
        response: { 200: z.object({ actions: z.record(z.string(), ActionInfo) }), ...errors },
      },
    },
    async (req) => {
      const model = await findModel(db, req.params.model);
      const row = await db
        .selectFrom('applications')
        .select(['charm_name', 'charm_revision'])
        .where('model_uuid', '=', model.uuid)
        .where('name', '=', req.params.app)
        .executeTakeFirst();
      if (!row) throw new NotFoundError('application', req.params.app);
      const meta = await charmMetaOf(db, row.charm_name, row.charm_revision);
      const actions: Record<string, z.infer<typeof ActionInfo>> = {};
      for (const [name, spec] of Object.entries(meta.actions).sort(([a], [b]) => a.localeCompare(b))) {
        actions[name] = { description: spec.description, schema: actionSchema(spec) };
      }
      return { actions };
    },
  );

  app.post(
    '/models/:model/actions',
    {
      schema: {
        summary: 'Run an action on a unit (asynchronous); its results are on the operation',
        tags: ['actions'],
        params: ModelParam,
        body: RunActionBody,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const model = await findModel(db, req.params.model);
      if (model.life !== 'alive') throw new ConflictError(`model "${model.name}" is being destroyed`);
      const [appName, which] = req.body.unit.split('/');
      const app = await db
        .selectFrom('applications')
        .select(['name', 'charm_name', 'charm_revision'])
        .where('model_uuid', '=', model.uuid)
        .where('name', '=', appName)
        .executeTakeFirst();
      if (!app) throw new NotFoundError('application', appName);
      const unit = await db
        .selectFrom('units')
        .select(['name', 'life'])
        .where('model_uuid', '=', model.uuid)
        .where('application', '=', appName)
        .$if(which === 'leader', (q) => q.where('leader', '=', true))
        .$if(which !== 'leader', (q) => q.where('name', '=', req.body.unit))
        .executeTakeFirst();
      if (!unit) {
        if (which === 'leader') throw new ConflictError(`application "${appName}" has no leader now`);
        throw new NotFoundError('unit', req.body.unit);
      }
      if (unit.life !== 'alive') throw new ConflictError(`unit "${unit.name}" is being removed`);
      const meta = await charmMetaOf(db, app.charm_name, app.charm_revision);
      const spec = meta.actions[req.body.action];
      if (!spec) {
        const known = Object.keys(meta.actions).sort();
        throw new BadRequestError(
          `application "${appName}" has no action "${req.body.action}"${known.length > 0 ? ` (its actions: ${known.join(', ')})` : ' (it has no actions)'}`,
          [{ field: 'body.action', message: 'unknown action' }],
        );
      }
      let params: Record<string, unknown>;
      try {
        params = checkActionParams(`${app.charm_name}:${app.charm_revision}`, req.body.action, spec, req.body.params);
      } catch (err) {
        if (err instanceof ActionParamsError) {
          throw new BadRequestError(`action "${req.body.action}": ${err.message}`, [
            { field: err.param ? `body.params.${err.param}` : 'body.params', message: err.message },
          ]);
        }
        throw err;
      }
      const op = await startOperation(db, temporal, {
        kind: 'run-action',
        model: model.name,
        target: unit.name,
        createdBy: req.principal?.user ?? '',
        workflow: 'runActionWorkflow',
        summary: `run ${req.body.action} on ${unit.name}`,
        // the hook activity reads the params from here: they stay out of the workflow's history
        params: { action: req.body.action, params },
        intent: markActionRunning,
        args: (operationId) => [
          {
            operationId,
            model: model.name,
            modelUuid: model.uuid,
            kind: 'run-action',
            application: appName,
            unit: unit.name,
            action: req.body.action,
          },
        ],
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );

  app.post(
    '/operations/:id/cancel',
    {
      schema: {
        summary: 'Cancel a queued action (one already running runs to its end: 409)',
        tags: ['operations'],
        params: IdParam,
        response: { 200: z.object({ operation: Operation }), ...errors },
      },
    },
    async (req) => {
      const op = await db.selectFrom('operations').selectAll().where('id', '=', req.params.id).executeTakeFirst();
      if (!op) throw new NotFoundError('operation', String(req.params.id));
      if (op.kind !== 'run-action') {
        throw new ConflictError(`operation ${op.id} is a ${op.kind}: only queued actions can be cancelled`);
      }
      if (op.state !== 'pending' && op.state !== 'running') {
        throw new ConflictError(`operation ${op.id} already ended (${op.state})`);
      }
      const model = op.model_name ? await findModel(db, op.model_name) : null;
      const agent = model
        ? await onUnitAgent(temporal.client, { model: model.name, modelUuid: model.uuid, unit: op.target }, (h) =>
            h.executeUpdate(cancelActionUpdate, { args: [op.id] }),
          )
        : undefined;
      const answer = agent?.value ?? 'absent';
      if (answer === 'running') {
        throw new ConflictError(
          `the action of operation ${op.id} is already running on ${op.target}: it runs to its end`,
        );
      }
      const results = op.results ?? { status: 'running', results: {}, log: [], message: '' };
      if (answer === 'absent' && results.status !== 'running') {
        throw new ConflictError(`the action of operation ${op.id} already ended (${results.status})`);
      }
      await db
        .updateTable('operations')
        .set({ results: JSON.stringify({ ...results, status: 'cancelled', message: 'cancelled by request' }) })
        .where('id', '=', op.id)
        .execute();
      if (op.workflow_id) {
        try {
          await temporal.client.workflow.getHandle(op.workflow_id).cancel();
        } catch (err) {
          if (!(err instanceof WorkflowNotFoundError)) throw err;
        }
      }
      // the workflow records the cancellation; until it has, say so here
      await db
        .updateTable('operations')
        .set({ state: 'cancelled', error: 'cancelled by request' })
        .where('id', '=', op.id)
        .where('state', 'in', ['pending', 'running'])
        .execute();
      const row = await db.selectFrom('operations').selectAll().where('id', '=', op.id).executeTakeFirstOrThrow();
      return { operation: toOperation(row) };
    },
  );
};
