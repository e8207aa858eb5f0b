import { randomUUID } from 'node:crypto';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { onUnitAgent } from '../../activities/unit-agents.ts';
import type { ModelRow } from '../../store/schema.ts';
import { isUniqueViolation } from '../../store/store.ts';
import { agentSettingsSignal } from '../../workflows/messages.ts';
import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts';
import { checkModelConfig, formatDuration, MODEL_CONFIG_KEYS, updateStatusMs } from '../model-config.ts';
import { findModel } from '../model-lookup.ts';
import { iso, startOperation, toOperation } from '../operation-starter.ts';
import { Accepted, CreateModelBody, ErrorBody, Model, NameParam, Text } from '../schemas.ts';

export function toModel(row: ModelRow): Model {
  return {
    name: row.name,
    uuid: row.uuid,
    cloud: row.cloud,
    life: row.life,
    status: row.status,
    message: row.message,
    createdAt: iso(row.created_at)!,
  };
}

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

export const modelRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store, temporal } = app.deps;
  const db = store.db;

  app.get(
    '/models',
    {
      schema: {
        summary: 'List models',
        tags: ['models'],
        response: { 200: z.object({ models: z.array(Model) }), ...errors },
      },
    },
    async () => {
      const rows = await db.selectFrom('models').selectAll().orderBy('name').execute();
      return { models: rows.map(toModel) };
    },
  );

  app.get(
    '/models/:name',
    { schema: { summary: 'Show a model', tags: ['models'], params: NameParam, response: { 200: Model, ...errors } } },
    async (req) => {
      return toModel(await findModel(db, req.params.name));
    },
  );

  const ModelConfig = z.record(
    z.string(),
    z.object({ value: z.string(), default: z.string(), description: z.string(), source: z.enum(['default', 'model']) }),
  );
  const showConfig = (config: Record<string, unknown>) => {
    const out: z.infer<typeof ModelConfig> = {};
    for (const [key, spec] of Object.entries(MODEL_CONFIG_KEYS)) {
      const v = config[key];
      out[key] = {
        value: typeof v === 'number' ? formatDuration(v) : spec.default,
        default: spec.default,
        description: spec.description,
        source: v === undefined ? 'default' : 'model',
      };
    }
    return out;
  };

  app.get(
    '/models/:name/config',
    {
      schema: {
        summary: "A model's settings (model-config), with defaults",
        tags: ['models'],
        params: NameParam,
        response: { 200: z.object({ config: ModelConfig }), ...errors },
      },
    },
    async (req) => {
      const model = await findModel(db, req.params.name);
      return { config: showConfig(model.config ?? {}) };
    },
  );

  app.put(
    '/models/:name/config',
    {
      schema: {
        summary: "Change a model's settings; every unit agent of the model follows at once",
        tags: ['models'],
        params: NameParam,
        body: z.strictObject({
          set: z.record(Text, Text).default({}),
          reset: z.array(Text).default([]),
        }),
        response: { 200: z.object({ config: ModelConfig }), ...errors },
      },
    },
    async (req) => {
      const model = await findModel(db, req.params.name);
      const config: Record<string, unknown> = { ...(model.config ?? {}) };
      for (const [k, v] of Object.entries(req.body.set)) config[k] = checkModelConfig(k, v);
      for (const k of req.body.reset) {
        if (!(k in MODEL_CONFIG_KEYS)) {
          throw new BadRequestError(`unknown model setting "${k}"`, [
            { field: 'body.reset', message: 'unknown setting' },
          ]);
        }
        delete config[k];
      }
      await db
        .updateTable('models')
        .set({ config: JSON.stringify(config) })
        .where('uuid', '=', model.uuid)
        .execute();
      // running agents follow at once; agents started later read it when their deploy starts them
      const units = await db.selectFrom('units').select('name').where('model_uuid', '=', model.uuid).execute();
      const settings = { updateStatusMs: updateStatusMs(config) };
      for (let i = 0; i < units.length; i += 16) {
        await Promise.all(
          units
            .slice(i, i + 16)
            .map((u) =>
              onUnitAgent(temporal.client, { model: model.name, modelUuid: model.uuid, unit: u.name }, (h) =>
                h.signal(agentSettingsSignal, settings),
              ),
            ),
        );
      }
      return { config: showConfig(config as Record<string, unknown>) };
    },
  );

  app.post(
    '/models',
    {
      schema: {
        summary: 'Create a model (asynchronous: answers with the operation)',
        tags: ['models'],
        body: CreateModelBody,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const { name, cloud } = req.body;
      const cloudRow = await db.selectFrom('clouds').select('name').where('name', '=', cloud).executeTakeFirst();
      if (!cloudRow) throw new NotFoundError('cloud', cloud);
      const uuid = randomUUID();
      try {
        const op = await startOperation(db, temporal, {
          kind: 'create-model',
          model: name,
          target: name,
          createdBy: req.principal?.user ?? '',
          workflow: 'createModelWorkflow',
          summary: `create model ${name} on cloud ${cloud}`,
          params: { cloud },
          args: (operationId) => [{ operationId, model: name, kind: 'create-model' }],
          intent: async (tx) => {
            await tx.insertInto('models').values({ uuid, name, cloud, status: 'pending', config: '{}' }).execute();
          },
          undo: async (d) => {
            await d.deleteFrom('models').where('uuid', '=', uuid).execute();
          },
        });
        return reply.status(202).send({ operation: toOperation(op) });
      } catch (err) {
        if (isUniqueViolation(err)) throw new ConflictError(`model "${name}" already exists`);
        throw err;
      }
    },
  );

  app.delete(
    '/models/:name',
    {
      schema: {
        summary: 'Destroy a model and everything in it (asynchronous)',
        tags: ['models'],
        params: NameParam,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const name = req.params.name;
      const row = await findModel(db, name);
      if (row.life !== 'alive') throw new ConflictError(`model "${name}" is already being destroyed`);
      const op = await startOperation(db, temporal, {
        kind: 'destroy-model',
        model: name,
        target: name,
        createdBy: req.principal?.user ?? '',
        workflow: 'destroyModelWorkflow',
        summary: `destroy model ${name}`,
        args: (operationId) => [{ operationId, model: name, modelUuid: row.uuid, kind: 'destroy-model' }],
        intent: async (tx) => {
          const res = await tx
            .updateTable('models')
            .set({ life: 'dying' })
            .where('uuid', '=', row.uuid)
            .where('life', '=', 'alive')
            .executeTakeFirst();
          if (Number(res.numUpdatedRows) !== 1) throw new ConflictError(`model "${name}" is already being destroyed`);
        },
        undo: async (d) => {
          await d.updateTable('models').set({ life: 'alive' }).where('uuid', '=', row.uuid).execute();
        },
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );
};
