import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { asJsonRows } from '../../store/json-rows.ts';
import { findModel } from '../model-lookup.ts';
import { ErrorBody, NameParam } from '../schemas.ts';
import { Integration, listIntegrations } from './integrations.ts';

// Juju's `status --format json` structure, with its hyphenated keys.
const StatusInfo = z.object({ current: z.string(), message: z.string().optional(), since: z.string().optional() });
const UnitStatus = z.object({
  'workload-status': StatusInfo,
  'juju-status': StatusInfo,
  leader: z.boolean().optional(),
  machine: z.string().optional(),
  'public-address': z.string(),
  'open-ports': z.array(z.string()).optional(),
});
const ApplicationStatus = z.object({
  charm: z.string(),
  'charm-name': z.string(),
  'charm-rev': z.number().int(),
  'charm-version': z.string().optional(),
  version: z.string().optional(),
  scale: z.number().int(),
  exposed: z.boolean(),
  /** Kubernetes: the application's address (its Service's cluster IP). */
  address: z.string().optional(),
  life: z.string().optional(),
  'application-status': StatusInfo,
  /** Juju's shape: endpoint -> the applications it is integrated with. */
  relations: z
    .record(
      z.string(),
      z.array(z.object({ 'related-application': z.string(), interface: z.string(), scope: z.string() })),
    )
    .optional(),
  units: z.record(z.string(), UnitStatus),
});
const MachineStatus = z.object({
  'juju-status': StatusInfo,
  'dns-name': z.string(),
  'ip-addresses': z.array(z.string()),
  'instance-id': z.string(),
  hostname: z.string().optional(),
});
export const ModelStatus = z.object({
  model: z.object({
    name: z.string(),
    /** Juju's words: `caas` for a model on a kubernetes cloud, `iaas` otherwise. */
    type: z.enum(['iaas', 'caas']),
    cloud: z.string(),
    'model-status': StatusInfo,
    life: z.string(),
  }),
  machines: z.record(z.string(), MachineStatus),
  applications: z.record(z.string(), ApplicationStatus),
  /** The model's integrations (`status --relations`): provider, requirer, interface, type. */
  integrations: z.array(Integration).optional(),
});
export type ModelStatus = z.infer<typeof ModelStatus>;

// Juju's precedence when deriving an application's status from its units.
const SEVERITY = ['error', 'blocked', 'maintenance', 'waiting', 'active', 'unknown', 'terminated'];

export function deriveApplicationStatus(units: { status: string; message: string }[]): {
  current: string;
  message: string;
} {
  if (units.length === 0) return { current: 'unknown', message: '' };
  const sorted = [...units].sort((a, b) => rank(a.status) - rank(b.status));
  return { current: sorted[0].status, message: sorted[0].message };
}

function rank(s: string): number {
  const i = SEVERITY.indexOf(s);
  return i === -1 ? SEVERITY.length : i;
}

const UTC_TIMESTAMP = /^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,6}))?\+00:00$/;

/**
 * A timestamp as the store writes it in JSON (`2026-12-03T12:18:36.123456+00:00`)
 * in toISOString's form (`…36.123Z`), without a Date for each of a big model's machines.
 */
export function since(stored: string): string {
  const m = UTC_TIMESTAMP.exec(stored);
  if (!m) return new Date(stored).toISOString();
  return `${m[1]}.${`${m[2] ?? ''}000`.slice(0, 3)}Z`;
}

// one collator: localeCompare with options builds one per call (most of a large status's time)
const numericAware = new Intl.Collator(undefined, { numeric: true }).compare;

// only what status shows: never a machine's key, never a unit's charm state
const MACHINE_COLUMNS = [
  'id',
  'kind',
  'state',
  'message',
  'created_at',
  'address',
  'host',
  'hostname',
  'namespace',
] as const;
const UNIT_COLUMNS = [
  'name',
  'application',
  'number',
  'life',
  'leader',
  'machine_id',
  'ports',
  'workload_status',
  'workload_message',
  'agent_status',
  'agent_message',
] as const;

export const statusRoutes: FastifyPluginAsyncZod = async (app) => {
  const db = app.deps.store.db;
  app.get(
    '/models/:name/status',
    {
      schema: {
        summary: "A model's status, in Juju's `status --format json` structure",
        tags: ['models'],
        params: NameParam,
        response: { 200: ModelStatus, 401: ErrorBody, 404: ErrorBody },
      },
    },
    async (req, reply) => {
      const model = await findModel(db, req.params.name);
      const [machines, apps, units, integrations] = await Promise.all([
        asJsonRows(
          db,
          db.selectFrom('machines').select(MACHINE_COLUMNS).where('model_uuid', '=', model.uuid),
          MACHINE_COLUMNS,
        ),
        db
          .selectFrom('applications as a')
          .leftJoin('kubernetes_applications as k', (j) =>
            j.onRef('k.model_uuid', '=', 'a.model_uuid').onRef('k.application', '=', 'a.name'),
          )
          .selectAll('a')
          .select('k.address as service_address')
          .where('a.model_uuid', '=', model.uuid)
          .execute(),
        asJsonRows(db, db.selectFrom('units').select(UNIT_COLUMNS).where('model_uuid', '=', model.uuid), UNIT_COLUMNS),
        listIntegrations(db, model),
      ]);
      const relationsOf = new Map<string, NonNullable<z.infer<typeof ApplicationStatus>['relations']>>();
      const related = (end: Integration['provider'], other: Integration['provider'], iface: string) => {
        if (end.model !== model.name) return;
        const rels = relationsOf.get(end.application) ?? {};
        const name = other.model === model.name ? other.application : `${other.model}.${other.application}`;
        rels[end.endpoint] = [
          ...(rels[end.endpoint] ?? []),
          { 'related-application': name, interface: iface, scope: 'global' },
        ];
        relationsOf.set(end.application, rels);
      };
      for (const i of integrations) {
        related(i.provider, i.requirer, i.interface);
        if (i.type !== 'peer') related(i.requirer, i.provider, i.interface);
      }
      const cloud = await db.selectFrom('clouds').select('type').where('name', '=', model.cloud).executeTakeFirst();
      // Written as JSON text in ModelStatus' shape, not built as objects and then
      // serialized: a big model's status is mostly its units and machines (1000
      // units: 330 KB), and one JSON.stringify of them cost a sixth of the request.
      const q = JSON.stringify;
      const opt = (key: string, value: string | null | undefined) => (value ? `,"${key}":${q(value)}` : '');
      /** `fields` (an object with at least one field) with more fields, already JSON text, after its own. */
      const extended = (fields: object, more: string) => `${q(fields).slice(0, -1)},${more}}`;
      const machineText = machines
        .sort((a, b) => numericAware(a.id, b.id))
        .map((m) => {
          const instance =
            m.kind === 'ssh' ? `manual:${m.host}` : m.kind === 'pod' ? `pod:${m.namespace}/${m.host}` : `local:${m.id}`;
          return (
            `${q(m.id)}:{"juju-status":{"current":${q(m.state)}${opt('message', m.message)},"since":${q(since(m.created_at))}}` +
            `,"dns-name":${q(m.address)},"ip-addresses":${m.address ? `[${q(m.address)}]` : '[]'}` +
            `,"instance-id":${q(instance)}${opt('hostname', m.hostname)}}`
          );
        });
      const machineAddr = new Map(machines.map((m) => [m.id, m.address]));
      const byApp = new Map<string, typeof units>();
      for (const u of units) {
        const list = byApp.get(u.application);
        if (list) list.push(u);
        else byApp.set(u.application, [u]);
      }
      const appText = apps
        .sort((x, y) => x.name.localeCompare(y.name))
        .map((a) => {
          const mine = (byApp.get(a.name) ?? []).sort((x, y) => x.number - y.number);
          const unitText = mine.map((u) => {
            const ports = u.ports ?? [];
            const address = (u.machine_id !== null ? machineAddr.get(u.machine_id) : undefined) ?? '';
            return (
              `${q(u.name)}:{"workload-status":{"current":${q(u.workload_status)}${opt('message', u.workload_message)}}` +
              `,"juju-status":{"current":${q(u.agent_status)}${opt('message', u.agent_message)}}` +
              `${u.leader ? ',"leader":true' : ''}${u.machine_id !== null ? `,"machine":${q(u.machine_id)}` : ''}` +
              `,"public-address":${q(address)}${ports.length > 0 ? `,"open-ports":${q(ports)}` : ''}}`
            );
          });
          const explicit = a.status !== 'unknown' && a.status !== '' ? { current: a.status, message: a.message } : null;
          const derived = deriveApplicationStatus(
            mine.map((u) => ({ status: u.workload_status, message: u.workload_message })),
          );
          const appStatus = mine.some((u) => u.workload_status === 'error') ? derived : (explicit ?? derived);
          const appFields: Omit<z.infer<typeof ApplicationStatus>, 'units'> = {
            charm: a.charm_name,
            'charm-name': a.charm_name,
            'charm-rev': a.charm_revision,
            ...(a.workload_version ? { version: a.workload_version } : {}),
            scale: mine.filter((u) => u.life === 'alive').length,
            exposed: false,
            ...(a.service_address ? { address: a.service_address } : {}),
            ...(a.life !== 'alive' ? { life: a.life } : {}),
            'application-status': { current: appStatus.current, message: appStatus.message || undefined },
            ...(relationsOf.has(a.name) ? { relations: relationsOf.get(a.name) } : {}),
          };
          return `${q(a.name)}:${extended(appFields, `"units":{${unitText.join(',')}}`)}`;
        });
      const head: Pick<ModelStatus, 'model'> = {
        model: {
          name: model.name,
          type: cloud?.type === 'kubernetes' ? 'caas' : 'iaas',
          cloud: model.cloud,
          'model-status': { current: model.status, message: model.message || undefined },
          life: model.life,
        },
      };
      const text = extended(
        head,
        `"machines":{${machineText.join(',')}},"applications":{${appText.join(',')}},"integrations":${q(integrations)}`,
      );
      // a string with a JSON type goes out as it is
      return reply.type('application/json; charset=utf-8').send(text as unknown as ModelStatus);
    },
  );
};
