// migrate-model MODEL --to URL --token T: moving a whole model to another controller
// (workflows/model-migration-workflows.ts says how).
//
// On the source: POST /models/:model/migrate checks the model can move (dryRun: only
// that, and what would move) and starts the migrate-model operation; the target's
// token is kept sealed in `model_migrations` until the migration ends. Only a model
// on an SSH (manual) cloud can move: a local machine is a directory on this host and a
// pod belongs to this controller's cluster. A model with cross-model integrations
// cannot move either (the other end stays here), nor one with schedules (they are
// this controller's Temporal Schedules) or with an operation running.
//
// On the target (the source's migration calls these with the target's admin token):
// GET /migrations (what the source checks), POST /migrations/import (the model's
// export: its rows go in, marked `importing`, and its machines are provisioned;
// nothing runs), POST /migrations/:uuid/activate (the agents start from the states
// handed over; the model is live), DELETE /migrations/:uuid (an import that is not
// live is forgotten: rows only, nothing on the machines).
//
// While a model moves, every change to it is refused (409), on both controllers.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { controllerVersion } from '../../activities/controller-backup-activities.ts';
import { onUnitAgent } from '../../activities/unit-agents.ts';
import { applyRestore, BackupError, planRestore, type RestorePlan, removeModelRows } from '../../store/backup.ts';
import { type Db, isUniqueViolation } from '../../store/store.ts';
import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts';
import { startOperation, toOperation } from '../operation-starter.ts';
import { ErrorBody, ModelParam, Operation, Text } from '../schemas.ts';
import {
  acceptBackupBodies,
  apiErrorOf,
  maxBackupBytes,
  readBackupBody,
  startControllerOperation,
} from './controller-backup-routes.ts';

export const MigrateModelBody = z.strictObject({
  /** The target controller's API, e.g. http://10.0.0.2:17070. */
  to: z
    .string()
    .url()
    .refine((u) => /^https?:\/\//.test(u), 'must be an http:// or https:// URL'),
  /** An admin token of the target controller. Never echoed, logged or kept in clear. */
  token: Text.min(1),
  /** Only check, and say what would move. */
  dryRun: z.boolean().optional(),
});

export const MigrationPlan = z.object({
  model: z.string(),
  uuid: z.string(),
  cloud: z.string(),
  /** The target, as given (no token). */
  to: z.string(),
  applications: z.array(z.object({ name: z.string(), charm: z.string(), units: z.array(z.string()) })),
  machines: z.array(z.object({ id: z.string(), address: z.string().nullable() })),
  /** Charm revisions the applications and units use (`name:revision`). */
  charms: z.array(z.string()),
  /** Relation ids of the model's integrations (all inside the model). */
  integrations: z.array(z.number().int()),
});
export type MigrationPlan = z.infer<typeof MigrationPlan>;

/**
 * The checks before a model moves, and what would move. 404: no such model; 409: it
 * is being destroyed; 400: its cloud is not an SSH (manual) cloud, it has machines of
 * another kind, or it has cross-model integrations (named).
 */
export async function planModelMigration(db: Db, modelName: string, to: string): Promise<MigrationPlan> {
  const model = await db.selectFrom('models').selectAll().where('name', '=', modelName).executeTakeFirst();
  if (!model) throw new NotFoundError('model', modelName);
  if (model.life !== 'alive') throw new ConflictError(`model "${modelName}" is being destroyed; it cannot move`);
  const cloud = await db.selectFrom('clouds').selectAll().where('name', '=', model.cloud).executeTakeFirst();
  if (cloud?.type !== 'manual') {
    throw new BadRequestError(
      `model "${modelName}" is on cloud "${model.cloud}" (${cloud?.type ?? 'unknown'}): only models on SSH (manual) clouds can move to another controller`,
      [{ field: 'params.model', message: `cloud "${model.cloud}" is not an SSH (manual) cloud` }],
    );
  }
  const machines = await db
    .selectFrom('machines')
    .select(['id', 'kind', 'address'])
    .where('model_uuid', '=', model.uuid)
    .orderBy('id')
    .execute();
  const notSsh = machines.filter((m) => m.kind !== 'ssh');
  if (notSsh.length > 0) {
    throw new BadRequestError(
      `model "${modelName}" has machine(s) that are not SSH hosts (${notSsh.map((m) => `${m.id}: ${m.kind}`).join(', ')}); they cannot move`,
    );
  }
  // integrations with an end in this model and an end (or their home) in another
  const ends = await db
    .selectFrom('integration_endpoints as mine')
    .innerJoin('integration_endpoints as e', 'e.integration_id', 'mine.integration_id')
    .innerJoin('integrations as i', 'i.id', 'mine.integration_id')
    .select(['i.id', 'i.key', 'i.model_uuid as home', 'e.model_uuid'])
    .where('mine.model_uuid', '=', model.uuid)
    .execute();
  const homed = await db
    .selectFrom('integrations')
    .select(['id', 'key'])
    .where('model_uuid', '=', model.uuid)
    .execute();
  const homedEnds = homed.length
    ? await db
        .selectFrom('integration_endpoints')
        .select(['integration_id', 'model_uuid'])
        .where(
          'integration_id',
          'in',
          homed.map((h) => h.id),
        )
        .execute()
    : [];
  const cross = new Map<number, string>();
  for (const e of ends) if (e.home !== model.uuid || e.model_uuid !== model.uuid) cross.set(e.id, e.key);
  for (const e of homedEnds) {
    if (e.model_uuid !== model.uuid) cross.set(e.integration_id, homed.find((h) => h.id === e.integration_id)!.key);
  }
  if (cross.size > 0) {
    const list = [...cross].map(([id, key]) => `${key} (relation ${id})`).join(', ');
    throw new BadRequestError(
      `model "${modelName}" has cross-model integration(s): ${list}; remove them first (the other end stays on this controller)`,
    );
  }
  const apps = await db
    .selectFrom('applications')
    .select(['name', 'charm_name', 'charm_revision'])
    .where('model_uuid', '=', model.uuid)
    .orderBy('name')
    .execute();
  const units = await db
    .selectFrom('units')
    .select(['name', 'application', 'charm_revision'])
    .where('model_uuid', '=', model.uuid)
    .orderBy('name')
    .execute();
  const charms = new Set<string>();
  for (const a of apps) charms.add(`${a.charm_name}:${a.charm_revision}`);
  for (const u of units) {
    const a = apps.find((x) => x.name === u.application);
    if (a && u.charm_revision !== null && u.charm_revision !== undefined)
      charms.add(`${a.charm_name}:${u.charm_revision}`);
  }
  return {
    model: model.name,
    uuid: model.uuid,
    cloud: model.cloud,
    to,
    applications: apps.map((a) => ({
      name: a.name,
      charm: `${a.charm_name}:${a.charm_revision}`,
      units: units.filter((u) => u.application === a.name).map((u) => u.name),
    })),
    machines: machines.map((m) => ({ id: m.id, address: m.address })),
    charms: [...charms].sort(),
    integrations: homed.map((h) => h.id).sort((a, b) => a - b),
  };
}

/**
 * What stops a model that could move from moving now: schedules (400: they are this
 * controller's), an operation on it still running (409), a migration of it under way.
 */
async function readyToMove(db: Db, plan: MigrationPlan): Promise<void> {
  const schedules = await db
    .selectFrom('app_schedules')
    .select(['id', 'application', 'kind'])
    .where('model_uuid', '=', plan.uuid)
    .execute();
  if (schedules.length > 0) {
    const list = schedules.map((s) => `${s.id} (${s.kind} ${s.application})`).join(', ');
    throw new BadRequestError(
      `model "${plan.model}" has schedule(s) ${list}: they are this controller's and would not follow; delete them first (charmflow schedule delete ID) and add them again on the target`,
      [{ field: 'params.model', message: 'the model has schedules' }],
    );
  }
  const running = await db
    .selectFrom('operations')
    .select(['id', 'kind', 'summary', 'state'])
    .where('model_name', '=', plan.model)
    .where('state', 'in', ['pending', 'running'])
    .orderBy('id')
    .executeTakeFirst();
  if (running) {
    throw new ConflictError(
      `operation ${running.id} (${running.summary}) on model "${plan.model}" is ${running.state}: wait for it (charmflow wait-operation ${running.id}) before moving the model`,
    );
  }
}

/** What the target answers the source's check. */
export const MigrationsView = z.object({
  /** charmflow's version here. */
  version: z.string(),
  /** This controller's models of the name asked for (none: the name is free here). */
  models: z.array(z.object({ name: z.string(), uuid: z.string(), status: z.string() })),
  /** Models this controller moved, or is moving, to others (newest first). */
  outgoing: z.array(
    z.object({
      operationId: z.number().int(),
      model: z.string(),
      to: z.string(),
      state: z.enum(['running', 'done', 'failed']),
      error: z.string().nullable(),
      createdAt: z.string(),
      finishedAt: z.string().nullable(),
    }),
  ),
});

/** A unit agent's state handed over by the source (workflows/unit-agent.ts UnitAgentState). */
const HandedAgentBody = z.object({
  application: Text.min(1),
  state: z
    .object({
      ref: z.object({ model: Text, modelUuid: Text, unit: Text }),
      queue: z.array(z.object({ hook: Text }).passthrough()),
      seq: z.number().int().min(0),
      prepared: z.boolean(),
    })
    .passthrough(),
});

const UuidParam = z.strictObject({ uuid: z.string().regex(/^[0-9a-zA-Z-]{1,64}$/, 'a model uuid') });

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

/** Refuses (409) a change to a model while it moves between controllers: register before the routes. */
export function migrationGuard(db: Db) {
  return async (req: { method: string; params?: unknown; url: string }) => {
    if (req.method === 'GET' || req.method === 'HEAD') return;
    const name = (req.params as { model?: unknown } | undefined)?.model;
    if (typeof name !== 'string') return;
    const model = await db
      .selectFrom('models')
      .select(['name', 'status', 'message'])
      .where('name', '=', name)
      .executeTakeFirst();
    if (model?.status === 'migrating' || model?.status === 'importing') {
      throw new ConflictError(
        `model "${model.name}" is moving between controllers (${model.status}${model.message ? `: ${model.message}` : ''}); nothing about it can change until the move ends`,
      );
    }
  };
}

export const modelMigrationRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store, temporal } = app.deps;
  const db = store.db;
  const maxBytes = maxBackupBytes();

  // encapsulated in this plugin: only the import route takes raw bytes
  acceptBackupBodies(app);

  app.post(
    '/models/:model/migrate',
    {
      schema: {
        summary:
          'Move a model (SSH clouds only) to another controller: its rows, charms, relation and leader data, secrets and machine credentials; the unit agents are handed over, and the model goes from here once the target confirms. dryRun: true only checks and says what would move',
        tags: ['models'],
        params: ModelParam,
        body: MigrateModelBody,
        response: {
          200: z.object({ migration: MigrationPlan }),
          202: z.object({ operation: Operation, migration: MigrationPlan }),
          ...errors,
        },
      },
    },
    async (req, reply) => {
      const target = new URL(req.body.to);
      const to = `${target.protocol}//${target.host}${target.pathname.replace(/\/+$/, '')}`;
      const plan = await planModelMigration(db, req.params.model, to);
      await readyToMove(db, plan);
      if (req.body.dryRun) return reply.status(200).send({ migration: plan });
      const sealed = store.secrets.seal(req.body.token);
      const createdBy = req.principal?.user ?? '';
      try {
        const op = await startOperation(db, temporal, {
          kind: 'migrate-model',
          model: plan.model,
          target: plan.model,
          createdBy,
          params: { to },
          workflow: 'migrateModelWorkflow',
          summary: `move model ${plan.model} to ${to}`,
          args: (operationId) => [{ operationId, model: plan.model, kind: 'migrate-model', uuid: plan.uuid, to }],
          intent: async (tx, operationId) => {
            await tx
              .insertInto('model_migrations')
              .values({
                operation_id: operationId,
                model_uuid: plan.uuid,
                model: plan.model,
                target_url: to,
                token: sealed,
                created_by: createdBy,
              })
              .execute();
            const moved = await tx
              .updateTable('models')
              .set({ status: 'migrating', message: `moving to ${to} (operation ${operationId})` })
              .where('uuid', '=', plan.uuid)
              .where('life', '=', 'alive')
              .where('status', 'not in', ['migrating', 'importing'])
              .executeTakeFirst();
            if (Number(moved.numUpdatedRows) !== 1) {
              throw new ConflictError(`model "${plan.model}" is moving already, or being destroyed`);
            }
            // an operation that started since the checks above: the model waits for it
            const started = await tx
              .selectFrom('operations')
              .select(['id', 'summary'])
              .where('model_name', '=', plan.model)
              .where('state', 'in', ['pending', 'running'])
              .where('id', '!=', operationId)
              .executeTakeFirst();
            if (started) {
              throw new ConflictError(
                `operation ${started.id} (${started.summary}) on model "${plan.model}" started meanwhile: wait for it before moving the model`,
              );
            }
          },
          undo: async (d) => {
            await d
              .updateTable('model_migrations')
              .set({ state: 'failed', token: '', error: 'its workflow could not start', finished_at: new Date() })
              .where('model_uuid', '=', plan.uuid)
              .where('state', '=', 'running')
              .execute();
            await d
              .updateTable('models')
              .set({ status: 'available', message: '' })
              .where('uuid', '=', plan.uuid)
              .where('status', '=', 'migrating')
              .execute();
          },
        });
        return reply.status(202).send({ operation: toOperation(op), migration: plan });
      } catch (err) {
        if (isUniqueViolation(err)) throw new ConflictError(`model "${plan.model}" is moving already`);
        throw err;
      }
    },
  );

  app.get(
    '/migrations',
    {
      schema: {
        summary:
          'Migrations: this controller version, its models of a name (?model=, what a source checks before moving one here), and the models it moved to others',
        tags: ['models'],
        querystring: z.strictObject({ model: z.string().max(63).optional() }),
        response: { 200: z.object({ migrations: MigrationsView }), ...errors },
      },
    },
    async (req) => {
      const models = req.query.model
        ? await db.selectFrom('models').select(['name', 'uuid', 'status']).where('name', '=', req.query.model).execute()
        : [];
      const outgoing = await db
        .selectFrom('model_migrations')
        .select(['operation_id', 'model', 'target_url', 'state', 'error', 'created_at', 'finished_at'])
        .orderBy('operation_id', 'desc')
        .limit(100)
        .execute();
      return {
        migrations: {
          version: controllerVersion(),
          models,
          outgoing: outgoing.map((m) => ({
            operationId: m.operation_id,
            model: m.model,
            to: m.target_url,
            state: m.state,
            error: m.error,
            createdAt: new Date(m.created_at).toISOString(),
            finishedAt: m.finished_at ? new Date(m.finished_at).toISOString() : null,
          })),
        },
      };
    },
  );

  app.post(
    '/migrations/import',
    {
      bodyLimit: maxBytes,
      schema: {
        summary:
          "A model moving in (its export from the source controller, application/octet-stream): checked whole first, its rows go in marked `importing`, and an operation provisions its machines with this controller's key; nothing runs until /migrations/:uuid/activate",
        tags: ['models'],
        consumes: ['application/octet-stream'],
        response: { 202: z.object({ operation: Operation }), ...errors, 413: ErrorBody, 415: ErrorBody },
      },
    },
    async (req, reply) => {
      const backup = readBackupBody(req.body, "the model's export");
      const { manifest } = backup;
      if (manifest.scope !== 'model' || manifest.models.length !== 1) {
        throw new BadRequestError("not a model's export: a controller backup goes to restore-backup", [
          { field: 'manifest.scope', message: 'expected one model' },
        ]);
      }
      const { name, uuid } = manifest.models[0];
      const here = await db.selectFrom('models').select(['uuid', 'status']).where('name', '=', name).executeTakeFirst();
      if (here?.uuid === uuid && here.status === 'importing') {
        throw new ConflictError(
          `model "${name}" is being imported here already (an earlier attempt): abort it first (DELETE /v1/migrations/${uuid})`,
        );
      }
      let plan: RestorePlan | undefined;
      try {
        const op = await startControllerOperation(db, temporal, {
          kind: 'import-model',
          target: name,
          createdBy: req.principal?.user ?? '',
          workflow: 'importModelWorkflow',
          summary: () => `import model ${name} moving in (export ${manifest.id})`,
          params: () => ({ model: name, uuid, export: manifest.id, charms: plan?.charms.length ?? 0 }),
          args: (operationId) => [{ operationId, model: name, kind: 'import-model', uuid, from: manifest.id }],
          intent: async (tx) => {
            plan = await planRestore(tx, backup, store.secrets, { models: [name] });
            if (plan.models.length !== 1 || plan.models[0].replaces !== undefined) {
              throw new ConflictError(`model "${name}" exists here; it cannot move in`);
            }
            await applyRestore(tx, backup, plan, store.secrets);
            await tx
              .updateTable('models')
              .set({ status: 'importing', message: `moving in (export ${manifest.id})` })
              .where('uuid', '=', uuid)
              .execute();
          },
          undo: async (d) => {
            await d.transaction().execute((tx) => removeModelRows(tx, uuid));
          },
        });
        return reply.status(202).send({ operation: toOperation(op) });
      } catch (err) {
        if (err instanceof BackupError) throw apiErrorOf(err);
        if (isUniqueViolation(err)) {
          throw new ConflictError(
            `the import collided with something made here meanwhile (${(err as { constraint?: string }).constraint ?? 'a unique key'}); nothing was imported`,
          );
        }
        throw err;
      }
    },
  );

  async function importing(uuid: string) {
    const model = await db.selectFrom('models').selectAll().where('uuid', '=', uuid).executeTakeFirst();
    if (!model) throw new NotFoundError('model', uuid);
    return model;
  }

  app.post(
    '/migrations/:uuid/activate',
    {
      schema: {
        summary:
          'A model moved in goes live: its unit agents start from the states the source handed over (an operation); the source removes the model once it succeeds',
        tags: ['models'],
        params: UuidParam,
        body: z.strictObject({ agents: z.array(HandedAgentBody).max(100_000) }),
        response: { 202: z.object({ operation: Operation }), ...errors },
      },
    },
    async (req, reply) => {
      const model = await importing(req.params.uuid);
      if (model.status !== 'importing') {
        throw new ConflictError(`model "${model.name}" is not moving in here (status ${model.status})`);
      }
      const units = await db
        .selectFrom('units')
        .select(['name', 'application'])
        .where('model_uuid', '=', model.uuid)
        .execute();
      const given = new Map(req.body.agents.map((a, i) => [a.state.ref.unit, { a, i }]));
      for (const [unit, { a, i }] of given) {
        const u = units.find((x) => x.name === unit);
        const field = `body.agents.${i}`;
        if (!u || u.application !== a.application) {
          throw new BadRequestError(`unit ${unit} of application ${a.application} is not in model "${model.name}"`, [
            { field, message: 'unknown unit' },
          ]);
        }
        if (a.state.ref.modelUuid !== model.uuid || a.state.ref.model !== model.name) {
          throw new BadRequestError(`the agent state of ${unit} names another model`, [
            { field: `${field}.state.ref`, message: 'another model' },
          ]);
        }
      }
      const missing = units.filter((u) => !given.has(u.name)).map((u) => u.name);
      if (missing.length > 0) {
        throw new BadRequestError(`no agent state for unit(s) ${missing.join(', ')}`, [
          { field: 'body.agents', message: 'a state for every unit' },
        ]);
      }
      const running = await db
        .selectFrom('operations')
        .select(['id', 'state'])
        .where('kind', '=', 'activate-model')
        .where('target', '=', model.name)
        .where('state', 'in', ['pending', 'running'])
        .executeTakeFirst();
      if (running) {
        // a retry of the source's call (its answer was lost): the same activation
        const op = await db.selectFrom('operations').selectAll().where('id', '=', running.id).executeTakeFirstOrThrow();
        return reply.status(202).send({ operation: toOperation(op) });
      }
      const op = await startControllerOperation(db, temporal, {
        kind: 'activate-model',
        target: model.name,
        createdBy: req.principal?.user ?? '',
        workflow: 'activateModelWorkflow',
        summary: () => `start the ${given.size} unit agent(s) of model ${model.name}, moved in`,
        params: () => ({ model: model.name, uuid: model.uuid, agents: given.size }),
        args: (operationId) => [
          { operationId, model: model.name, kind: 'activate-model', uuid: model.uuid, agents: req.body.agents },
        ],
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );

  app.delete(
    '/migrations/:uuid',
    {
      schema: {
        summary:
          'Forget a model that is moving in and not live (a migration that failed): its rows go; nothing runs on its machines. 409 once it is live',
        tags: ['models'],
        params: UuidParam,
        response: { 200: z.object({ aborted: z.string() }), ...errors },
      },
    },
    async (req) => {
      const model = await importing(req.params.uuid);
      if (model.status !== 'importing') {
        throw new ConflictError(`model "${model.name}" is live here (status ${model.status}); it is not forgotten`);
      }
      // agents an activation started before it failed end without hooks
      const units = await db.selectFrom('units').select('name').where('model_uuid', '=', model.uuid).execute();
      for (const u of units) {
        await onUnitAgent(temporal.client, { model: model.name, modelUuid: model.uuid, unit: u.name }, (h) =>
          h.terminate('the model did not move in: its migration was aborted').catch(() => undefined),
        );
      }
      await db.transaction().execute((tx) => removeModelRows(tx, model.uuid));
      return { aborted: model.name };
    },
  );
};
