// migrate-model MODEL --to URL --token T: moving a whole model to another controller.
//
// What is here so far: the checks a migration makes before anything moves, and what it
// would carry (`dryRun`). Only a model on an SSH (manual) cloud can move: a local
// machine is a directory on this host and a pod belongs to this controller's cluster.
// A model with cross-model integrations cannot move either (the other end stays here).
// The move itself (export, key hand-over, import on the target, hand-over of the unit
// agents) is not built yet: without dryRun the route answers 501 after the checks.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import type { Db } from '../../store/store.ts';
import { ApiError, BadRequestError, ConflictError, NotFoundError } from '../errors.ts';
import { ErrorBody, ModelParam, Text } from '../schemas.ts';

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

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody, 501: ErrorBody };

export const modelMigrationRoutes: FastifyPluginAsyncZod = async (app) => {
  const db = app.deps.store.db;

  app.post(
    '/models/:model/migrate',
    {
      schema: {
        summary:
          'Move a model (SSH clouds only) to another controller; dryRun: true checks and says what would move (the move itself is not built yet: 501)',
        tags: ['models'],
        params: ModelParam,
        body: MigrateModelBody,
        response: { 200: z.object({ migration: MigrationPlan }), ...errors },
      },
    },
    async (req, reply) => {
      const target = new URL(req.body.to);
      const to = `${target.protocol}//${target.host}${target.pathname.replace(/\/+$/, '')}`;
      const plan = await planModelMigration(db, req.params.model, to);
      if (req.body.dryRun) return reply.status(200).send({ migration: plan });
      throw new ApiError(
        501,
        `moving model "${plan.model}" to another controller is not available yet; only the checks are (dryRun: true)`,
      );
    },
  );
};
