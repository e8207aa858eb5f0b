// Integrations: integrate two applications' endpoints (in one model or across
// two), list them, remove them. Endpoints are matched by interface and role; what
// cannot be integrated is refused with 400 and the reason, before anything changes.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { sql } from 'kysely';
import { z } from 'zod';
import { getCharmInfo } from '../../charm/charm-store.ts';
import type { ModelRow } from '../../store/schema.ts';
import type { Db, Tx } from '../../store/store.ts';
import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts';
import { findModel } from '../model-lookup.ts';
import { startOperation, toOperation } from '../operation-starter.ts';
import { Accepted, ErrorBody, ModelParam, queryInt, Text } from '../schemas.ts';

/** `[model.]application[:endpoint]`: a model other than the request's makes it a cross-model integration. */
const SPEC = /^(?:([a-z][a-z0-9-]*)\.)?([a-z][a-z0-9-]*)(?::([a-zA-Z0-9_-]+))?$/;

export const EndpointSpec = Text.min(1)
  .max(200)
  .regex(SPEC, 'must be [model.]application[:endpoint], e.g. wordpress, db:server or other-model.db');

export const IntegrateBody = z.strictObject({ a: EndpointSpec, b: EndpointSpec });

const RemoveQuery = z.strictObject({
  a: EndpointSpec,
  b: EndpointSpec,
  timeout: queryInt(1, 86_400).default(600),
});

const IntegrationEnd = z.object({
  model: z.string(),
  application: z.string(),
  endpoint: z.string(),
  role: z.enum(['provides', 'requires', 'peer']),
});
export const Integration = z.object({
  id: z.number().int(),
  interface: z.string(),
  /** regular (one model), peer, or cross-model. */
  type: z.enum(['regular', 'peer', 'cross-model']),
  life: z.string(),
  provider: IntegrationEnd,
  requirer: IntegrationEnd,
});
export type Integration = z.infer<typeof Integration>;

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

interface Endpoint {
  model: ModelRow;
  application: string;
  name: string;
  role: 'provides' | 'requires' | 'peer';
  interface: string;
  limit?: number;
}

interface Side {
  spec: string;
  model: ModelRow;
  application: string;
  endpoint?: string;
  endpoints: Endpoint[];
}

/** The application a spec names, with its endpoints (and their limits, from its charm). */
async function side(db: Db, home: ModelRow, spec: string, field: string): Promise<Side> {
  const m = SPEC.exec(spec);
  if (!m) throw new BadRequestError(`invalid endpoint "${spec}"`, [{ field, message: 'not [model.]app[:endpoint]' }]);
  const [, modelName, application, endpoint] = m;
  const model = modelName && modelName !== home.name ? await findModel(db, modelName) : home;
  const app = await db
    .selectFrom('applications')
    .select(['name', 'life', 'charm_name', 'charm_revision'])
    .where('model_uuid', '=', model.uuid)
    .where('name', '=', application)
    .executeTakeFirst();
  if (!app) {
    throw new NotFoundError('application', model === home ? application : `${model.name}.${application}`);
  }
  if (app.life !== 'alive') throw new ConflictError(`application "${application}" is being removed`);
  const charm = await getCharmInfo(db, app.charm_name, app.charm_revision);
  const endpoints = (charm?.meta.endpoints ?? [])
    .filter((e) => !e.implicit)
    .map((e) => ({
      model,
      application,
      name: e.name,
      role: e.role,
      interface: e.interface,
      ...(e.limit !== undefined ? { limit: e.limit } : {}),
    }));
  if (endpoint && !endpoints.some((e) => e.name === endpoint)) {
    throw new BadRequestError(`application "${application}" has no endpoint "${endpoint}"`, [
      { field, message: `endpoints: ${endpoints.map((e) => e.name).join(', ') || 'none'}` },
    ]);
  }
  return { spec, model, application, endpoint, endpoints };
}

const label = (e: Endpoint, home: ModelRow) =>
  `${e.model.uuid === home.uuid ? '' : `${e.model.name}.`}${e.application}:${e.name}`;

/** The one provider–requirer pair of endpoints two sides can be integrated through, or a 400 saying why not. */
export function matchEndpoints(a: Side, b: Side, home: ModelRow): [Endpoint, Endpoint] {
  if (a.model.uuid === b.model.uuid && a.application === b.application) {
    throw new BadRequestError(`cannot integrate "${a.application}" with itself: peer relations are made on deploy`, [
      { field: 'body.b', message: 'name another application' },
    ]);
  }
  const as = a.endpoints.filter((e) => !a.endpoint || e.name === a.endpoint);
  const bs = b.endpoints.filter((e) => !b.endpoint || e.name === b.endpoint);
  const pairs: [Endpoint, Endpoint][] = [];
  const reasons: string[] = [];
  for (const x of as) {
    for (const y of bs) {
      if (x.role === 'peer' || y.role === 'peer') {
        reasons.push(
          `${label(x.role === 'peer' ? x : y, home)} is a peer endpoint (peers relate only within their application)`,
        );
      } else if (x.role === y.role) {
        reasons.push(
          `${label(x, home)} and ${label(y, home)} are both "${x.role}" endpoints: an integration joins a provider to a requirer`,
        );
      } else if (x.interface !== y.interface) {
        reasons.push(
          `mismatched interfaces: ${label(x, home)} is "${x.interface}", ${label(y, home)} is "${y.interface}"`,
        );
      } else {
        pairs.push([x, y]);
      }
    }
  }
  if (pairs.length === 1) return pairs[0];
  if (pairs.length === 0) {
    const why =
      a.endpoint && b.endpoint
        ? reasons[0]
        : `no endpoints of ${a.spec} and ${b.spec} match (same interface, one provides and one requires)`;
    throw new BadRequestError(`cannot integrate ${a.spec} with ${b.spec}: ${why}`, [
      { field: 'body', message: why ?? 'no endpoints' },
    ]);
  }
  const options = pairs.map(([x, y]) => `${label(x, home)} ${label(y, home)}`);
  throw new BadRequestError(
    `ambiguous integration of ${a.spec} with ${b.spec}: it could be any of ${options.join('; ')}. Name the endpoints, e.g. \`charmflow integrate ${options[0]}\``,
    [{ field: 'body', message: 'ambiguous endpoints' }],
  );
}

/** Canonical: one integration per pair of endpoints, whichever way round they were named. */
export function integrationKey(ends: { modelUuid: string; application: string; endpoint: string }[]): string {
  return ends
    .map((e) => `${e.modelUuid}:${e.application}:${e.endpoint}`)
    .sort()
    .join(' ');
}

/** Records an integration and its ends; returns its id (controller-wide). */
export async function insertIntegration(
  tx: Tx,
  owner: string,
  iface: string,
  ends: { modelUuid: string; application: string; endpoint: string; role: 'provides' | 'requires' | 'peer' }[],
): Promise<number> {
  const { rows } = await sql<{ id: number }>`SELECT nextval('integration_ids')::integer AS id`.execute(tx);
  const id = rows[0].id;
  await tx
    .insertInto('integrations')
    .values({ id, model_uuid: owner, key: integrationKey(ends), interface: iface })
    .execute();
  await tx
    .insertInto('integration_endpoints')
    .values(
      ends.map((e) => ({
        integration_id: id,
        model_uuid: e.modelUuid,
        application: e.application,
        endpoint: e.endpoint,
        role: e.role,
      })),
    )
    .execute();
  return id;
}

interface ListRow {
  id: number;
  interface: string;
  life: string;
  model_uuid: string;
  application: string;
  endpoint: string;
  role: 'provides' | 'requires' | 'peer';
  model_name: string;
}

/** Every integration one of the model's applications is in (cross-model ones included). */
export async function listIntegrations(db: Db, model: ModelRow): Promise<Integration[]> {
  const { rows } = await sql<ListRow>`
    SELECT i.id, i.interface, i.life, e.model_uuid, e.application, e.endpoint, e.role, m.name AS model_name
    FROM integrations i
    JOIN integration_endpoints e ON e.integration_id = i.id
    JOIN models m ON m.uuid = e.model_uuid
    WHERE i.id IN (SELECT integration_id FROM integration_endpoints WHERE model_uuid = ${model.uuid})
    ORDER BY i.id, e.role`.execute(db);
  const byId = new Map<number, ListRow[]>();
  for (const r of rows) byId.set(r.id, [...(byId.get(r.id) ?? []), r]);
  const out: Integration[] = [];
  for (const [id, ends] of byId) {
    const end = (r: ListRow) => ({
      model: r.model_name,
      application: r.application,
      endpoint: r.endpoint,
      role: r.role,
    });
    const provider = ends.find((e) => e.role === 'provides') ?? ends[0];
    const requirer = ends.find((e) => e.role === 'requires') ?? ends[0];
    const type =
      ends[0].role === 'peer' ? 'peer' : ends.some((e) => e.model_uuid !== model.uuid) ? 'cross-model' : 'regular';
    out.push({
      id,
      interface: ends[0].interface,
      type,
      life: ends[0].life,
      provider: end(provider),
      requirer: end(requirer),
    });
  }
  return out;
}

export const integrationRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store, temporal } = app.deps;
  const db = store.db;

  app.get(
    '/models/:model/integrations',
    {
      schema: {
        summary: "The model's integrations: peers, within the model and across models",
        tags: ['integrations'],
        params: ModelParam,
        response: { 200: z.object({ integrations: z.array(Integration) }), ...errors },
      },
    },
    async (req) => {
      const model = await findModel(db, req.params.model);
      return { integrations: await listIntegrations(db, model) };
    },
  );

  app.post(
    '/models/:model/integrations',
    {
      schema: {
        summary: "Integrate two applications' endpoints (asynchronous); `model.app` names another model's application",
        tags: ['integrations'],
        params: ModelParam,
        body: IntegrateBody,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const home = await findModel(db, req.params.model);
      if (home.life !== 'alive') throw new ConflictError(`model "${home.name}" is being destroyed`);
      const a = await side(db, home, req.body.a, 'body.a');
      const b = await side(db, home, req.body.b, 'body.b');
      for (const s of [a, b]) {
        if (s.model.life !== 'alive') throw new ConflictError(`model "${s.model.name}" is being destroyed`);
      }
      if (a.model.uuid !== b.model.uuid && a.application === b.application) {
        throw new BadRequestError(
          `cannot integrate two applications both named "${a.application}" across models: deploy one under another name`,
          [{ field: 'body.b', message: 'same application name in both models' }],
        );
      }
      const [x, y] = matchEndpoints(a, b, home);
      const ends = [x, y].map((e) => ({
        modelUuid: e.model.uuid,
        application: e.application,
        endpoint: e.name,
        role: e.role,
      }));
      const existing = await db
        .selectFrom('integrations')
        .select(['id', 'life'])
        .where('key', '=', integrationKey(ends))
        .executeTakeFirst();
      if (existing) {
        throw new BadRequestError(
          `${label(x, home)} and ${label(y, home)} are already integrated (relation ${existing.id}${existing.life === 'alive' ? '' : `, ${existing.life}`})`,
          [{ field: 'body', message: 'integration exists' }],
        );
      }
      for (const e of [x, y]) {
        if (e.limit === undefined) continue;
        const { rows } = await sql<{ n: number }>`
          SELECT count(*)::integer AS n FROM integration_endpoints
          WHERE model_uuid = ${e.model.uuid} AND application = ${e.application} AND endpoint = ${e.name}`.execute(db);
        if (rows[0].n >= e.limit) {
          throw new BadRequestError(
            `${label(e, home)} allows at most ${e.limit} integration(s) (its limit) and has ${rows[0].n}`,
            [{ field: 'body', message: 'endpoint limit reached' }],
          );
        }
      }
      const provider = x.role === 'provides' ? x : y;
      const requirer = x.role === 'provides' ? y : x;
      let integrationId = -1;
      const apps = ends.map((e) => ({ modelUuid: e.modelUuid, application: e.application }));
      const op = await startOperation(db, temporal, {
        kind: 'integrate',
        model: home.name,
        target: `${label(provider, home)} ${label(requirer, home)}`,
        createdBy: req.principal?.user ?? '',
        workflow: 'integrateWorkflow',
        summary: `integrate ${label(provider, home)} with ${label(requirer, home)} (${x.interface})`,
        params: { provider: label(provider, home), requirer: label(requirer, home), interface: x.interface },
        intent: async (tx) => {
          integrationId = await insertIntegration(tx, home.uuid, x.interface, ends);
        },
        args: (operationId) => [{ operationId, model: home.name, kind: 'integrate', integrationId, apps }],
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );

  app.delete(
    '/models/:model/integrations',
    {
      schema: {
        summary:
          'Remove an integration (asynchronous): every unit runs relation-departed and relation-broken, then its data goes',
        tags: ['integrations'],
        params: ModelParam,
        querystring: RemoveQuery,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const home = await findModel(db, req.params.model);
      const a = await side(db, home, req.query.a, 'querystring.a');
      const b = await side(db, home, req.query.b, 'querystring.b');
      const all = await listIntegrations(db, home);
      const named = (s: Side, end: z.infer<typeof IntegrationEnd>) =>
        end.model === s.model.name && end.application === s.application && (!s.endpoint || s.endpoint === end.endpoint);
      const found = all.filter(
        (i) =>
          i.type !== 'peer' &&
          ((named(a, i.provider) && named(b, i.requirer)) || (named(b, i.provider) && named(a, i.requirer))),
      );
      if (found.length === 0) {
        throw new NotFoundError('integration', `${req.query.a} ${req.query.b}`);
      }
      if (found.length > 1) {
        throw new BadRequestError(
          `ambiguous: ${req.query.a} and ${req.query.b} have ${found.length} integrations; name the endpoints`,
          [{ field: 'querystring', message: 'ambiguous' }],
        );
      }
      const integration = found[0];
      const ends = [integration.provider, integration.requirer];
      const models = new Map([a.model, b.model].map((m) => [m.name, m.uuid]));
      const apps = ends.map((e) => ({ modelUuid: models.get(e.model) ?? home.uuid, application: e.application }));
      const name = `${integration.provider.application}:${integration.provider.endpoint} ${integration.requirer.application}:${integration.requirer.endpoint}`;
      const op = await startOperation(db, temporal, {
        kind: 'remove-integration',
        model: home.name,
        target: name,
        createdBy: req.principal?.user ?? '',
        workflow: 'removeIntegrationWorkflow',
        summary: `remove integration ${name} (relation ${integration.id})`,
        params: { id: integration.id },
        intent: async (tx) => {
          await tx.updateTable('integrations').set({ life: 'dying' }).where('id', '=', integration.id).execute();
        },
        args: (operationId) => [
          {
            operationId,
            model: home.name,
            kind: 'remove-integration',
            integrationId: integration.id,
            apps,
            timeoutSeconds: req.query.timeout,
          },
        ],
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );
};
