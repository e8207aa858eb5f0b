// Applications and units: deploy, add-unit, scale, config, remove, resolve.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { sql } from 'kysely';
import { z } from 'zod';
import { DEFAULT_CHARM_IMAGE, workloadContainers } from '../../activities/kubernetes-cluster.ts';
import { kubernetesModel } from '../../activities/kubernetes-provider.ts';
import { relationsOf } from '../../activities/relation-activities.ts';
import { getCharmInfo } from '../../charm/charm-store.ts';
import {
  ConfigValueError,
  coerceConfigValue,
  effectiveConfig,
  validateConfigObject,
} from '../../charm/config-values.ts';
import type { CharmMeta, ConfigOptions } from '../../charm/metadata.ts';
import type { ApplicationRow, ConfigValue, ModelRow, OperationRow } from '../../store/schema.ts';
import { type Db, isUniqueViolation, type Tx } from '../../store/store.ts';
import type { DeployInput } from '../../workflows/application-workflows.ts';
import type { RelationIntro } from '../../workflows/relations.ts';
import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts';
import { findModel } from '../model-lookup.ts';
import { startOperation, toOperation } from '../operation-starter.ts';
import { Accepted, AppParams, bodyInt, ErrorBody, ModelParam, queryInt, Text, UnitParams } from '../schemas.ts';
import { insertIntegration } from './integrations.ts';

// Juju's application name rule.
export const ApplicationName = z
  .string()
  .max(63)
  .regex(
    /^[a-z][a-z0-9]*(-[a-z0-9]*[a-z][a-z0-9]*)*$/,
    'must be lower-case letters, digits and hyphens, starting with a letter, no part of it all digits',
  );
const ConfigInput = z.record(Text, z.union([Text, z.number(), z.boolean()]));

export const DeployBody = z.strictObject({
  charm: Text.min(1),
  revision: bodyInt(1).optional(),
  application: ApplicationName.optional(),
  numUnits: bodyInt(0, 1000).default(1),
  to: z.array(z.string().regex(/^\d+$/, 'must be a machine number')).optional(),
  config: ConfigInput.default({}),
  /** kubernetes models: the image of the units' charm container (default: a python image). */
  charmImage: Text.min(1).max(500).optional(),
});

export const AddUnitBody = z.strictObject({
  numUnits: bodyInt(1, 1000).default(1),
  to: z.array(z.string().regex(/^\d+$/, 'must be a machine number')).optional(),
});

/** scale-application: the number of alive units wanted; `to` places the new ones (growing only). */
export const ScaleBody = z.strictObject({
  scale: bodyInt(0, 1000),
  to: z.array(z.string().regex(/^\d+$/, 'must be a machine number')).optional(),
});

/** A scale that changes something: the operation, and which units it adds or removes. */
export const ScaleAccepted = Accepted.extend({
  application: z.string(),
  /** Alive units before. */
  from: z.number().int(),
  scale: z.number().int(),
  added: z.array(z.string()),
  removed: z.array(z.string()),
});

/** A scale to the number of alive units there already are: nothing is started (200, no operation). */
export const ScaleUnchanged = z.object({
  operation: z.null(),
  application: z.string(),
  scale: z.number().int(),
  units: z.array(z.string()),
  message: z.string(),
});

export const ConfigBody = z.strictObject({
  set: ConfigInput.default({}),
  reset: z.array(Text.min(1)).default([]),
});

/** timeout: fail the config operation when its units are not done within this many seconds. */
const ConfigQuery = z.strictObject({ timeout: queryInt(1, 86_400).optional() });

const RemoveQuery = z.strictObject({
  force: z.enum(['true', 'false']).default('false'),
  timeout: queryInt(1, 86_400).default(300),
});

export const ConfigSetting = z.object({
  type: z.string(),
  description: z.string().optional(),
  default: z.union([z.string(), z.number(), z.boolean()]).optional(),
  value: z.union([z.string(), z.number(), z.boolean()]).optional(),
  source: z.enum(['default', 'user', 'unset']),
});
export const ApplicationConfig = z.object({
  application: z.string(),
  charm: z.string(),
  settings: z.record(z.string(), ConfigSetting),
});

/** How long a shrinking scale waits for a unit's stop and remove hooks (remove-unit's default). */
const SCALE_REMOVE_TIMEOUT_SECONDS = 300;

/**
 * The `count` units a shrinking scale removes: the highest-numbered non-leaders
 * first; the leader only when nothing else is left to remove (then the lowest unit
 * left is elected, as when remove-unit takes the leader).
 */
export function shrinkVictims(alive: { name: string; number: number; leader: boolean }[], count: number): string[] {
  const byNumberDesc = [...alive].sort((a, b) => b.number - a.number);
  const order = [...byNumberDesc.filter((u) => !u.leader), ...byNumberDesc.filter((u) => u.leader)];
  return order.slice(0, count).map((u) => u.name);
}

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

/** A charm for a kubernetes model must name an image for each workload container it declares. */
function checkKubernetesCharm(name: string, meta: CharmMeta): void {
  const { problems } = workloadContainers(meta);
  if (problems.length > 0) {
    throw new BadRequestError(`charm ${name} has no usable image for Kubernetes: ${problems.join('; ')}`, [
      { field: 'body.charm', message: problems.join('; ') },
    ]);
  }
}

async function aliveModel(db: Db, name: string): Promise<ModelRow> {
  const model = await findModel(db, name);
  if (model.life !== 'alive') throw new ConflictError(`model "${name}" is being destroyed`);
  return model;
}

async function charmMeta(db: Db, name: string, revision: number): Promise<CharmMeta> {
  const charm = await getCharmInfo(db, name, revision);
  if (!charm) throw new NotFoundError('charm', `${name}:${revision}`);
  return charm.meta;
}

/** Typed values for the charm's options; strings from the CLI are coerced. */
function checkConfig(
  input: Record<string, ConfigValue>,
  options: ConfigOptions,
  field: string,
): Record<string, ConfigValue> {
  try {
    const out: Record<string, ConfigValue> = {};
    for (const [k, v] of Object.entries(input)) {
      out[k] = typeof v === 'string' ? coerceConfigValue(k, v, options) : validateConfigObject({ [k]: v }, options)[k];
    }
    return out;
  } catch (err) {
    if (err instanceof ConfigValueError) {
      throw new BadRequestError(err.message, [{ field: `${field}.${err.key}`, message: err.message }]);
    }
    throw err;
  }
}

export const applicationRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store, temporal } = app.deps;
  const db = store.db;

  /** Where each new unit goes: --to machines first, then new machines (local cloud) or free machines (manual). */
  async function placeUnits(model: ModelRow, numUnits: number, to: string[] | undefined): Promise<(string | null)[]> {
    const body = { to };
    // placement: --to machines first, then new machines (local cloud) or free machines (manual)
    const machines = await db.selectFrom('machines').selectAll().where('model_uuid', '=', model.uuid).execute();
    for (const m of body.to ?? []) {
      const row = machines.find((x) => x.id === m);
      if (!row) throw new NotFoundError('machine', m);
      if (row.state === 'error') throw new ConflictError(`machine ${m} is in error: ${row.message}`);
    }
    const placements: (string | null)[] = [];
    const cloud = await db
      .selectFrom('clouds')
      .select('type')
      .where('name', '=', model.cloud)
      .executeTakeFirstOrThrow();
    if (cloud.type === 'kubernetes') {
      // a unit is a pod of its application's StatefulSet: there is no machine to name
      if (body.to && body.to.length > 0) {
        throw new BadRequestError(`model "${model.name}" is on Kubernetes cloud ${model.cloud}: units are pods`, [
          { field: 'body.to', message: 'there are no machines to place units on' },
        ]);
      }
      for (let i = 0; i < numUnits; i++) placements.push(null);
    } else if (cloud.type !== 'local') {
      const used = new Set(
        (await db.selectFrom('units').select('machine_id').where('model_uuid', '=', model.uuid).execute()).map(
          (u) => u.machine_id,
        ),
      );
      const free = machines.filter((m) => !used.has(m.id) && m.state === 'started' && !body.to?.includes(m.id));
      for (let i = 0; i < numUnits; i++) {
        const p = body.to?.[i] ?? free.shift()?.id;
        if (!p) {
          throw new BadRequestError(
            `model "${model.name}" on cloud ${model.cloud} has no free machine for unit ${i + 1}`,
            [{ field: 'body.to', message: 'add machines with `charmflow add-machine` or place units with --to' }],
          );
        }
        placements.push(p);
      }
    } else {
      for (let i = 0; i < numUnits; i++) placements.push(body.to?.[i] ?? null);
    }
    return placements;
  }

  app.post(
    '/models/:model/applications',
    {
      schema: {
        summary: 'Deploy a charm as an application (asynchronous)',
        tags: ['applications'],
        params: ModelParam,
        body: DeployBody,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const model = await aliveModel(db, req.params.model);
      const body = req.body;
      const charm = await db
        .selectFrom('charms')
        .select(['name', 'revision'])
        .where('name', '=', body.charm)
        .$if(body.revision !== undefined, (q) => q.where('revision', '=', body.revision!))
        .orderBy('revision', 'desc')
        .executeTakeFirst();
      if (!charm) {
        throw new NotFoundError('charm', body.revision !== undefined ? `${body.charm}:${body.revision}` : body.charm);
      }
      const meta = await charmMeta(db, charm.name, charm.revision);
      const appName = body.application ?? charm.name;
      if (!ApplicationName.safeParse(appName).success) {
        throw new BadRequestError(`invalid application name "${appName}"`, [
          { field: 'body.application', message: 'not a valid application name' },
        ]);
      }
      const config = checkConfig(body.config, meta.config.options, 'body.config');
      const k8s = await kubernetesModel(db, model.uuid);
      if (k8s) checkKubernetesCharm(charm.name, meta);
      else if (body.charmImage !== undefined) {
        throw new BadRequestError(`--charm-image is for models on a Kubernetes cloud; "${model.name}" is not`, [
          { field: 'body.charmImage', message: 'only on a kubernetes model' },
        ]);
      }
      const numUnits = Math.max(body.numUnits, body.to?.length ?? 0);
      const placements = await placeUnits(model, numUnits, body.to);
      const units = placements.map((machine, i) => ({ unit: `${appName}/${i}`, machine, leader: i === 0 }));
      const peers = meta.endpoints.filter((e) => e.role === 'peer');
      const relations: RelationIntro[] = [];
      const relatable = meta.endpoints.some((e) => !e.implicit);
      try {
        const op = await startOperation(db, temporal, {
          kind: 'deploy',
          model: model.name,
          target: appName,
          createdBy: req.principal?.user ?? '',
          workflow: 'deployWorkflow',
          summary: `deploy ${charm.name} (rev ${charm.revision}) as ${appName} with ${numUnits} unit(s)`,
          params: { charm: charm.name, revision: charm.revision, numUnits, to: body.to ?? [] },
          args: (operationId) => [
            {
              operationId,
              model: model.name,
              modelUuid: model.uuid,
              kind: 'deploy',
              application: appName,
              units,
              ...(relatable ? { relatable, relations } : {}),
            },
          ],
          intent: async (tx) => {
            await tx
              .insertInto('applications')
              .values({
                model_uuid: model.uuid,
                name: appName,
                charm_name: charm.name,
                charm_revision: charm.revision,
                config: JSON.stringify(store.secrets.sealConfig(config, meta.config.options)),
                next_unit: numUnits,
              })
              .execute();
            if (k8s) {
              await tx
                .insertInto('kubernetes_applications')
                .values({
                  model_uuid: model.uuid,
                  application: appName,
                  charm_image: body.charmImage ?? DEFAULT_CHARM_IMAGE,
                })
                .execute();
            }
            const endpoints = meta.endpoints.filter((e) => !e.implicit);
            if (endpoints.length > 0) {
              await tx
                .insertInto('endpoints')
                .values(
                  endpoints.map((e) => ({
                    model_uuid: model.uuid,
                    application: appName,
                    name: e.name,
                    role: e.role,
                    interface: e.interface,
                  })),
                )
                .execute();
            }
            // peer relations are made with the application
            for (const p of peers) {
              const id = await insertIntegration(tx, model.uuid, p.interface, [
                { modelUuid: model.uuid, application: appName, endpoint: p.name, role: 'peer' },
              ]);
              relations.push({ id, endpoint: p.name, remoteApp: appName });
            }
            if (units.length > 0) {
              await tx
                .insertInto('units')
                .values(
                  units.map((u, i) => ({
                    model_uuid: model.uuid,
                    name: u.unit,
                    application: appName,
                    number: i,
                    machine_id: u.machine,
                    leader: u.leader,
                  })),
                )
                .execute();
            }
          },
        });
        return reply.status(202).send({ operation: toOperation(op) });
      } catch (err) {
        if (isUniqueViolation(err))
          throw new ConflictError(`application "${appName}" already exists in model "${model.name}"`);
        throw err;
      }
    },
  );

  app.post(
    '/models/:model/applications/:app/units',
    {
      schema: {
        summary: 'Add units to an application (asynchronous); they join its relations once started',
        tags: ['units'],
        params: AppParams,
        body: AddUnitBody,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const model = await aliveModel(db, req.params.model);
      const { row } = await loadApp(req.params.model, req.params.app);
      if (row.life !== 'alive') throw new ConflictError(`application "${row.name}" is being removed`);
      const numUnits = Math.max(req.body.numUnits, req.body.to?.length ?? 0);
      const { op } = await startAddUnits(req.principal?.user ?? '', model, row, {
        kind: 'add-unit',
        numUnits,
        to: req.body.to,
        summary: `add ${numUnits} unit(s) to ${row.name}`,
        params: { numUnits, to: req.body.to ?? [] },
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );

  /**
   * add-unit and a growing scale-application: take the next unit numbers under the
   * application's row lock, insert the units, and start them (install, relation-created
   * for every alive relation, leadership, config-changed, start) with deployWorkflow.
   * `aliveBefore`: fail with 409 when the alive units changed since the caller counted them.
   */
  async function startAddUnits(
    user: string,
    model: ModelRow,
    row: ApplicationRow,
    r: {
      kind: 'add-unit' | 'scale';
      numUnits: number;
      to: string[] | undefined;
      summary: string;
      params: Record<string, unknown>;
      aliveBefore?: string[];
    },
  ): Promise<{ op: OperationRow; units: string[] }> {
    const meta = await charmMeta(db, row.charm_name, row.charm_revision);
    const { numUnits } = r;
    const placements = await placeUnits(model, numUnits, r.to);
    let units: DeployInput['units'] = [];
    let relations: RelationIntro[] = [];
    const relatable = meta.endpoints.some((e) => !e.implicit);
    const op = await startOperation(db, temporal, {
      kind: r.kind,
      model: model.name,
      target: row.name,
      createdBy: user,
      workflow: 'deployWorkflow',
      summary: r.summary,
      params: r.params,
      intent: async (tx) => {
        // numbers are never reused: the next ones, taken under the application's row lock
        const app = await tx
          .updateTable('applications')
          .set({ next_unit: sql`next_unit + ${numUnits}` })
          .where('model_uuid', '=', model.uuid)
          .where('name', '=', row.name)
          .where('life', '=', 'alive')
          .returning(['next_unit'])
          .executeTakeFirst();
        if (!app) throw new ConflictError(`application "${row.name}" is being removed`);
        if (r.aliveBefore) await sameAliveUnits(tx, model.uuid, row.name, r.aliveBefore);
        let first = app.next_unit - numUnits;
        if (await kubernetesModel(tx, model.uuid)) {
          // unit N is pod N of the StatefulSet: new units take the ordinals after the highest in use
          const top = await tx
            .selectFrom('units')
            .select((eb) => eb.fn.max('number').as('n'))
            .where('model_uuid', '=', model.uuid)
            .where('application', '=', row.name)
            .executeTakeFirst();
          first = top?.n === null || top?.n === undefined ? 0 : Number(top.n) + 1;
        }
        const leader = await tx
          .selectFrom('units')
          .select('name')
          .where('model_uuid', '=', model.uuid)
          .where('application', '=', row.name)
          .where('leader', '=', true)
          .where('life', '=', 'alive')
          .executeTakeFirst();
        units = placements.map((machine, i) => ({
          unit: `${row.name}/${first + i}`,
          machine,
          leader: !leader && i === 0,
        }));
        relations = (await relationsOf(tx, model.uuid, row.name))
          .filter((x) => x.life === 'alive')
          .map((x) => ({ id: x.id, endpoint: x.endpoint, remoteApp: x.remote_app }));
        await tx
          .insertInto('units')
          .values(
            units.map((u, i) => ({
              model_uuid: model.uuid,
              name: u.unit,
              application: row.name,
              number: first + i,
              machine_id: u.machine,
              leader: u.leader,
            })),
          )
          .execute();
      },
      args: (operationId) => [
        {
          operationId,
          model: model.name,
          modelUuid: model.uuid,
          kind: r.kind,
          application: row.name,
          units,
          ...(relatable ? { relatable, relations } : {}),
        },
      ],
    });
    return { op, units: units.map((u) => u.unit) };
  }

  /** An application's alive units, lowest number first, with their leadership. */
  async function aliveUnits(q: Db | Tx, modelUuid: string, application: string) {
    return q
      .selectFrom('units')
      .select(['name', 'number', 'leader'])
      .where('model_uuid', '=', modelUuid)
      .where('application', '=', application)
      .where('life', '=', 'alive')
      .orderBy('number')
      .execute();
  }

  /** 409 when another operation added or removed units since `expected` was read (call under the app's row lock). */
  async function sameAliveUnits(tx: Tx, modelUuid: string, application: string, expected: string[]) {
    const now = (await aliveUnits(tx, modelUuid, application)).map((u) => u.name);
    if (now.join(',') !== expected.join(',')) {
      throw new ConflictError(
        `the units of application "${application}" changed meanwhile (now ${now.length} alive: ${now.join(', ') || 'none'}); try again`,
      );
    }
  }

  app.put(
    '/models/:model/applications/:app/scale',
    {
      schema: {
        summary:
          'Scale an application to N alive units (asynchronous): new units join its relations; ' +
          'the highest-numbered non-leaders go first, the leader last. 200 without an operation when it has N already',
        tags: ['units'],
        params: AppParams,
        body: ScaleBody,
        response: { 200: ScaleUnchanged, 202: ScaleAccepted, ...errors },
      },
    },
    async (req, reply) => {
      const model = await aliveModel(db, req.params.model);
      const { row } = await loadApp(req.params.model, req.params.app);
      if (row.life !== 'alive') throw new ConflictError(`application "${row.name}" is being removed`);
      const want = req.body.scale;
      const alive = await aliveUnits(db, model.uuid, row.name);
      const names = alive.map((u) => u.name);
      const to = req.body.to;
      const user = req.principal?.user ?? '';
      if (want === alive.length) {
        if (to && to.length > 0) {
          throw new BadRequestError(`application "${row.name}" already has ${want} unit(s): no new unit to place`, [
            { field: 'body.to', message: 'only a scale that adds units takes machines' },
          ]);
        }
        return reply.status(200).send({
          operation: null,
          application: row.name,
          scale: want,
          units: names,
          message: `application "${row.name}" already has ${want} unit(s); nothing to do`,
        });
      }
      if (want > alive.length) {
        const numUnits = want - alive.length;
        if (to && to.length > numUnits) {
          throw new BadRequestError(
            `scaling ${row.name} from ${alive.length} to ${want} adds ${numUnits} unit(s), but --to names ${to.length} machine(s)`,
            [{ field: 'body.to', message: `at most ${numUnits} machine(s): one per new unit` }],
          );
        }
        const { op, units } = await startAddUnits(user, model, row, {
          kind: 'scale',
          numUnits,
          to,
          summary: `scale ${row.name} from ${alive.length} to ${want} unit(s): add ${numUnits}`,
          params: { scale: want, from: alive.length, add: numUnits, to: to ?? [] },
          aliveBefore: names,
        });
        return reply.status(202).send({
          operation: toOperation(op),
          application: row.name,
          from: alive.length,
          scale: want,
          added: units,
          removed: [],
        });
      }
      if (to && to.length > 0) {
        throw new BadRequestError(
          `scaling ${row.name} from ${alive.length} to ${want} removes units: there is no new unit to place`,
          [{ field: 'body.to', message: 'only a scale that adds units takes machines' }],
        );
      }
      const removed = shrinkVictims(alive, alive.length - want);
      const op = await startRemoval(user, model, {
        kind: 'scale',
        application: row.name,
        units: removed,
        force: false,
        timeoutSeconds: SCALE_REMOVE_TIMEOUT_SECONDS,
        summary: `scale ${row.name} from ${alive.length} to ${want} unit(s): remove ${removed.join(', ')}`,
        params: { scale: want, from: alive.length, remove: removed },
        check: async (tx) => {
          // under the application's row lock, as add-unit and other scales take it
          const app = await tx
            .selectFrom('applications')
            .select('life')
            .where('model_uuid', '=', model.uuid)
            .where('name', '=', row.name)
            .forUpdate()
            .executeTakeFirst();
          if (app?.life !== 'alive') throw new ConflictError(`application "${row.name}" is being removed`);
          await sameAliveUnits(tx, model.uuid, row.name, names);
        },
      });
      return reply.status(202).send({
        operation: toOperation(op),
        application: row.name,
        from: alive.length,
        scale: want,
        added: [],
        removed,
      });
    },
  );

  async function loadApp(modelName: string, appName: string) {
    const model = await findModel(db, modelName);
    const row = await db
      .selectFrom('applications')
      .selectAll()
      .where('model_uuid', '=', model.uuid)
      .where('name', '=', appName)
      .executeTakeFirst();
    if (!row) throw new NotFoundError('application', appName);
    return { model, row };
  }

  app.get(
    '/models/:model/applications/:app/config',
    {
      schema: {
        summary: "An application's config: every option with its type, default and value",
        tags: ['applications'],
        params: AppParams,
        response: { 200: ApplicationConfig, ...errors },
      },
    },
    async (req) => {
      const { row } = await loadApp(req.params.model, req.params.app);
      const meta = await charmMeta(db, row.charm_name, row.charm_revision);
      const effective = effectiveConfig(meta.config.options, row.config);
      const settings: z.infer<typeof ApplicationConfig>['settings'] = {};
      for (const [k, opt] of Object.entries(meta.config.options)) {
        const user = Object.hasOwn(row.config, k);
        const secret = opt.type === 'secret';
        settings[k] = {
          type: opt.type,
          ...(opt.description ? { description: opt.description } : {}),
          ...(opt.default !== undefined ? { default: opt.default } : {}),
          // secret values are never shown back
          ...(effective[k] !== undefined ? { value: secret ? '*****' : effective[k] } : {}),
          source: user ? 'user' : opt.default !== undefined ? 'default' : 'unset',
        };
      }
      return { application: row.name, charm: row.charm_name, settings };
    },
  );

  app.put(
    '/models/:model/applications/:app/config',
    {
      schema: {
        summary: 'Set or reset config values; runs config-changed on every unit (asynchronous)',
        tags: ['applications'],
        params: AppParams,
        body: ConfigBody,
        querystring: ConfigQuery,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const { model, row } = await loadApp(req.params.model, req.params.app);
      if (model.life !== 'alive' || row.life !== 'alive')
        throw new ConflictError(`application "${row.name}" is being removed`);
      const meta = await charmMeta(db, row.charm_name, row.charm_revision);
      const set = checkConfig(req.body.set, meta.config.options, 'body.set');
      for (const k of req.body.reset) {
        if (!Object.hasOwn(meta.config.options, k)) {
          throw new BadRequestError(`config option "${k}" is not defined by charm ${row.charm_name}`, [
            { field: `body.reset.${k}`, message: 'unknown option' },
          ]);
        }
      }
      const units = (
        await db
          .selectFrom('units')
          .select('name')
          .where('model_uuid', '=', model.uuid)
          .where('application', '=', row.name)
          .where('life', '=', 'alive')
          .orderBy('number')
          .execute()
      ).map((u) => u.name);
      const changed = [...Object.keys(set), ...req.body.reset.map((k) => `${k} (reset)`)];
      const op = await startOperation(db, temporal, {
        kind: 'config',
        model: model.name,
        target: row.name,
        createdBy: req.principal?.user ?? '',
        workflow: 'configWorkflow',
        summary: `configure ${row.name}: ${changed.join(', ') || 'no change'}`,
        // values may be secrets: only the keys go into the operation record
        params: { keys: changed },
        args: (operationId) => [
          {
            operationId,
            model: model.name,
            modelUuid: model.uuid,
            kind: 'config',
            application: row.name,
            units,
            ...(req.query.timeout !== undefined ? { timeoutSeconds: req.query.timeout } : {}),
          },
        ],
        intent: async (tx) => {
          const current = await tx
            .selectFrom('applications')
            .select('config')
            .where('model_uuid', '=', model.uuid)
            .where('name', '=', row.name)
            .forUpdate()
            .executeTakeFirstOrThrow();
          // secret values are sealed at rest; only a hook's context opens them
          const next: Record<string, ConfigValue> = {
            ...current.config,
            ...store.secrets.sealConfig(set, meta.config.options),
          };
          for (const k of req.body.reset) delete next[k];
          await tx
            .updateTable('applications')
            .set({ config: JSON.stringify(next) })
            .where('model_uuid', '=', model.uuid)
            .where('name', '=', row.name)
            .execute();
        },
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );

  /**
   * remove-unit and remove-application: mark what goes dying (the application too
   * when it goes), then run stop and remove on each unit.
   */
  function startRemoval(
    user: string,
    model: ModelRow,
    r: {
      kind: 'remove-unit' | 'remove-application' | 'scale';
      application: string;
      units: string[];
      force: boolean;
      timeoutSeconds: number;
      summary: string;
      /** More to record on the operation. */
      params?: Record<string, unknown>;
      /** Runs first in the intent's transaction; throws to refuse. */
      check?: (tx: Tx) => Promise<void>;
    },
  ) {
    const removeApplication = r.kind === 'remove-application';
    return startOperation(db, temporal, {
      kind: r.kind,
      model: model.name,
      target: r.kind === 'remove-unit' ? r.units.join(',') : r.application,
      createdBy: user,
      workflow: 'removeWorkflow',
      summary: r.summary,
      params: { ...r.params, force: r.force, timeout: r.timeoutSeconds },
      args: (operationId) => [
        {
          operationId,
          model: model.name,
          modelUuid: model.uuid,
          kind: r.kind,
          application: r.application,
          units: r.units,
          force: r.force,
          timeoutSeconds: r.timeoutSeconds,
          removeApplication,
        },
      ],
      intent: async (tx) => {
        await r.check?.(tx);
        if (removeApplication) {
          await tx
            .updateTable('applications')
            .set({ life: 'dying' })
            .where('model_uuid', '=', model.uuid)
            .where('name', '=', r.application)
            .execute();
        }
        if (r.units.length > 0) {
          await tx
            .updateTable('units')
            .set({ life: 'dying' })
            .where('model_uuid', '=', model.uuid)
            .where('name', 'in', r.units)
            .execute();
        }
      },
    });
  }

  app.delete(
    '/models/:model/applications/:app',
    {
      schema: {
        summary: 'Remove an application: stop and remove hooks on every unit (asynchronous)',
        tags: ['applications'],
        params: AppParams,
        querystring: RemoveQuery,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const { model, row } = await loadApp(req.params.model, req.params.app);
      const force = req.query.force === 'true';
      if (row.life !== 'alive' && !force) {
        throw new ConflictError(`application "${row.name}" is already being removed (use --force to force it)`);
      }
      const units = (
        await db
          .selectFrom('units')
          .select('name')
          .where('model_uuid', '=', model.uuid)
          .where('application', '=', row.name)
          .orderBy('number')
          .execute()
      ).map((u) => u.name);
      const op = await startRemoval(req.principal?.user ?? '', model, {
        kind: 'remove-application',
        application: row.name,
        units,
        force,
        timeoutSeconds: req.query.timeout,
        summary: `remove application ${row.name}${force ? ' (forced)' : ''}`,
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );

  async function loadUnit(params: z.infer<typeof UnitParams>) {
    const model = await findModel(db, params.model);
    const name = `${params.app}/${params.n}`;
    const unit = await db
      .selectFrom('units')
      .selectAll()
      .where('model_uuid', '=', model.uuid)
      .where('name', '=', name)
      .executeTakeFirst();
    if (!unit) throw new NotFoundError('unit', name);
    return { model, unit };
  }

  app.delete(
    '/models/:model/units/:app/:n',
    {
      schema: {
        summary: 'Remove a unit: stop then remove hooks, with a timeout; --force always finishes (asynchronous)',
        tags: ['units'],
        params: UnitParams,
        querystring: RemoveQuery,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const { model, unit } = await loadUnit(req.params);
      const force = req.query.force === 'true';
      if (unit.life !== 'alive' && !force) {
        throw new ConflictError(`unit "${unit.name}" is already being removed (use --force to force it)`);
      }
      if (await kubernetesModel(db, model.uuid)) {
        // a StatefulSet only ever drops its highest ordinals: so do its units
        const higher = await db
          .selectFrom('units')
          .select('name')
          .where('model_uuid', '=', model.uuid)
          .where('application', '=', unit.application)
          .where('life', '=', 'alive')
          .where('number', '>', unit.number)
          .orderBy('number')
          .execute();
        if (higher.length > 0) {
          throw new BadRequestError(
            `unit ${unit.name} is pod ${unit.application}-${unit.number} of a StatefulSet, which removes its highest-numbered pods first: remove ${higher.map((u) => u.name).join(', ')} first, or scale with \`charmflow scale-application ${unit.application} N\``,
          );
        }
      }
      const op = await startRemoval(req.principal?.user ?? '', model, {
        kind: 'remove-unit',
        application: unit.application,
        units: [unit.name],
        force,
        timeoutSeconds: req.query.timeout,
        summary: `remove unit ${unit.name}${force ? ' (forced)' : ''}`,
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );

  app.post(
    '/models/:model/units/:app/:n/resolve',
    {
      schema: {
        summary: "Retry a unit's failed hook now, or skip it with retry=false (asynchronous)",
        tags: ['units'],
        params: UnitParams,
        body: z.strictObject({ retry: z.boolean().default(true) }),
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const { model, unit } = await loadUnit(req.params);
      if (unit.workload_status !== 'error') throw new ConflictError(`unit "${unit.name}" is not in an error state`);
      const op = await startOperation(db, temporal, {
        kind: 'resolve',
        model: model.name,
        target: unit.name,
        createdBy: req.principal?.user ?? '',
        workflow: 'resolveWorkflow',
        summary: `resolve ${unit.name} (${req.body.retry ? 'retry' : 'skip'} the failed hook)`,
        params: { retry: req.body.retry },
        args: (operationId) => [
          {
            operationId,
            model: model.name,
            modelUuid: model.uuid,
            kind: 'resolve',
            application: unit.application,
            unit: unit.name,
            retry: req.body.retry,
          },
        ],
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );
};
