// migrate APP --to M,… | --to-cloud local, and evacuate-machine N: new units on the
// targets, wait until they are settled and integrated, drain and remove the old
// ones (workflows/migrate-workflows.ts). A failure rolls back to the original units.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { sql } from 'kysely';
import { z } from 'zod';
import { relationsOf } from '../../activities/relation-activities.ts';
import { getCharmInfo } from '../../charm/charm-store.ts';
import type { MachineRow, ModelRow } from '../../store/schema.ts';
import type { Tx } from '../../store/store.ts';
import type { MigrationStep } from '../../workflows/migrate-workflows.ts';
import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts';
import { findModel } from '../model-lookup.ts';
import { startOperation, toOperation } from '../operation-starter.ts';
import { Accepted, AppParams, bodyInt, ErrorBody, ModelParam, Text } from '../schemas.ts';

const MachineId = z.string().regex(/^\d+$/, 'must be a machine number');

export const MigrateBody = z
  .strictObject({
    /** Target machines, one per unit in order (fewer: units share them). */
    to: z.array(MachineId).min(1).optional(),
    /** `local`: new local machines (a model on the local cloud). */
    toCloud: Text.min(1).optional(),
    settleTimeoutSeconds: bodyInt(1, 86_400).default(600),
  })
  .refine((b) => (b.to === undefined) !== (b.toCloud === undefined), {
    message: 'give exactly one of to (machines) or toCloud',
    path: ['to'],
  });

export const EvacuateBody = z.strictObject({
  to: z.array(MachineId).min(1).optional(),
  settleTimeoutSeconds: bodyInt(1, 86_400).default(600),
});

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

export const migrateRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store, temporal } = app.deps;
  const db = store.db;

  /** The target machines, checked: known, started (not in error), not hosting the units that leave. */
  async function targets(
    model: ModelRow,
    ids: string[] | undefined,
    toCloud: string | undefined,
    leaving: MachineRow['id'][],
  ) {
    const cloud = await db
      .selectFrom('clouds')
      .select('type')
      .where('name', '=', model.cloud)
      .executeTakeFirstOrThrow();
    if (toCloud !== undefined) {
      if (toCloud !== 'local' || cloud.type !== 'local') {
        throw new BadRequestError(
          `cannot migrate to cloud "${toCloud}": model "${model.name}" is on ${model.cloud} (${cloud.type}); --to-cloud local works on the local cloud, use --to with machines otherwise`,
          [{ field: 'body.toCloud', message: 'unsupported cloud' }],
        );
      }
      return null;
    }
    const machines = await db.selectFrom('machines').selectAll().where('model_uuid', '=', model.uuid).execute();
    for (const id of ids ?? []) {
      const m = machines.find((x) => x.id === id);
      if (!m) throw new NotFoundError('machine', id);
      if (m.state === 'error') throw new ConflictError(`machine ${id} is in error: ${m.message}`);
      if (m.state !== 'started') throw new ConflictError(`machine ${id} is ${m.state}, not started`);
      if (leaving.includes(id)) {
        throw new BadRequestError(`machine ${id} holds a unit that is moving off it`, [
          { field: 'body.to', message: `machine ${id}` },
        ]);
      }
    }
    return ids ?? [];
  }

  /** New unit rows for `old` (intent), on the targets in order; returns the migration step. */
  async function plan(
    tx: Tx,
    model: ModelRow,
    application: string,
    old: string[],
    to: string[] | null,
  ): Promise<MigrationStep> {
    const appRow = await tx
      .updateTable('applications')
      .set({ next_unit: sql`next_unit + ${old.length}` })
      .where('model_uuid', '=', model.uuid)
      .where('name', '=', application)
      .where('life', '=', 'alive')
      .returning(['next_unit', 'charm_name', 'charm_revision'])
      .executeTakeFirst();
    if (!appRow) throw new ConflictError(`application "${application}" is being removed`);
    const first = appRow.next_unit - old.length;
    const units = old.map((_, i) => ({
      unit: `${application}/${first + i}`,
      machine: to === null ? null : to[i % to.length],
      leader: false,
    }));
    await tx
      .insertInto('units')
      .values(
        units.map((u, i) => ({
          model_uuid: model.uuid,
          name: u.unit,
          application,
          number: first + i,
          machine_id: u.machine,
          leader: false,
        })),
      )
      .execute();
    const charm = await getCharmInfo(tx, appRow.charm_name, appRow.charm_revision);
    const relatable = (charm?.meta.endpoints ?? []).some((e) => !e.implicit);
    const intros = (await relationsOf(tx, model.uuid, application))
      .filter((r) => r.life === 'alive')
      .map((r) => ({ id: r.id, endpoint: r.endpoint, remoteApp: r.remote_app }));
    return { application, units, old, ...(relatable ? { relatable, relations: intros } : {}) };
  }

  async function busyGuard(model: ModelRow, apps: string[]) {
    const busy = await db
      .selectFrom('operations')
      .select(['id', 'kind', 'target'])
      .where('model_name', '=', model.name)
      .where('kind', 'in', ['migrate', 'evacuate-machine', 'refresh'])
      .where('state', 'in', ['pending', 'running'])
      .execute();
    const hit = busy.find((o) => apps.includes(o.target) || o.kind === 'evacuate-machine');
    if (hit) throw new ConflictError(`operation ${hit.id} (${hit.kind} ${hit.target}) is running: wait for it first`);
  }

  app.post(
    '/models/:model/applications/:app/migrate',
    {
      schema: {
        summary: "Move an application's units to other machines with no downtime (asynchronous)",
        tags: ['applications'],
        params: AppParams,
        body: MigrateBody,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const model = await findModel(db, req.params.model);
      if (model.life !== 'alive') throw new ConflictError(`model "${model.name}" is being destroyed`);
      const appRow = await db
        .selectFrom('applications')
        .select(['name', 'life'])
        .where('model_uuid', '=', model.uuid)
        .where('name', '=', req.params.app)
        .executeTakeFirst();
      if (!appRow) throw new NotFoundError('application', req.params.app);
      if (appRow.life !== 'alive') throw new ConflictError(`application "${appRow.name}" is being removed`);
      const old = await db
        .selectFrom('units')
        .select(['name', 'machine_id'])
        .where('model_uuid', '=', model.uuid)
        .where('application', '=', appRow.name)
        .where('life', '=', 'alive')
        .orderBy('number')
        .execute();
      if (old.length === 0) throw new ConflictError(`application "${appRow.name}" has no units to move`);
      const to = await targets(
        model,
        req.body.to,
        req.body.toCloud,
        old.map((u) => u.machine_id ?? ''),
      );
      await busyGuard(model, [appRow.name]);
      let step: MigrationStep | undefined;
      const op = await startOperation(db, temporal, {
        kind: 'migrate',
        model: model.name,
        target: appRow.name,
        createdBy: req.principal?.user ?? '',
        workflow: 'migrateWorkflow',
        summary: `migrate ${appRow.name} (${old.map((u) => u.name).join(', ')}) to ${to === null ? 'new local machines' : `machine(s) ${to.join(', ')}`}`,
        params: { to: req.body.to ?? [], toCloud: req.body.toCloud ?? null },
        intent: async (tx) => {
          step = await plan(
            tx,
            model,
            appRow.name,
            old.map((u) => u.name),
            to,
          );
        },
        args: (operationId) => [
          {
            operationId,
            model: model.name,
            modelUuid: model.uuid,
            kind: 'migrate',
            application: appRow.name,
            steps: [step],
            settleTimeoutSeconds: req.body.settleTimeoutSeconds,
          },
        ],
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );

  app.post(
    '/models/:model/machines/:id/evacuate',
    {
      schema: {
        summary: 'Move every unit off a machine, application by application, with no downtime (asynchronous)',
        tags: ['machines'],
        params: ModelParam.extend({ id: MachineId }),
        body: EvacuateBody,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const model = await findModel(db, req.params.model);
      if (model.life !== 'alive') throw new ConflictError(`model "${model.name}" is being destroyed`);
      const machine = await db
        .selectFrom('machines')
        .select('id')
        .where('model_uuid', '=', model.uuid)
        .where('id', '=', req.params.id)
        .executeTakeFirst();
      if (!machine) throw new NotFoundError('machine', req.params.id);
      const here = await db
        .selectFrom('units')
        .select(['name', 'application'])
        .where('model_uuid', '=', model.uuid)
        .where('machine_id', '=', machine.id)
        .where('life', '=', 'alive')
        .orderBy('application')
        .orderBy('number')
        .execute();
      if (here.length === 0) throw new ConflictError(`machine ${machine.id} has no units to move`);
      const cloud = await db
        .selectFrom('clouds')
        .select('type')
        .where('name', '=', model.cloud)
        .executeTakeFirstOrThrow();
      if (!req.body.to && cloud.type !== 'local') {
        throw new BadRequestError(
          `name the machines to move to with --to (model "${model.name}" is on ${model.cloud})`,
          [{ field: 'body.to', message: 'required on this cloud' }],
        );
      }
      const to = await targets(model, req.body.to, req.body.to ? undefined : 'local', [machine.id]);
      const apps = [...new Set(here.map((u) => u.application))];
      await busyGuard(model, apps);
      const steps: MigrationStep[] = [];
      const op = await startOperation(db, temporal, {
        kind: 'evacuate-machine',
        model: model.name,
        target: machine.id,
        createdBy: req.principal?.user ?? '',
        workflow: 'migrateWorkflow',
        summary: `evacuate machine ${machine.id} (${here.map((u) => u.name).join(', ')})`,
        params: { to: req.body.to ?? [] },
        intent: async (tx) => {
          for (const a of apps) {
            const units = here.filter((u) => u.application === a).map((u) => u.name);
            steps.push(await plan(tx, model, a, units, to));
          }
        },
        args: (operationId) => [
          {
            operationId,
            model: model.name,
            modelUuid: model.uuid,
            kind: 'evacuate-machine',
            steps,
            settleTimeoutSeconds: req.body.settleTimeoutSeconds,
          },
        ],
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );
};
