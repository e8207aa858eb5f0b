// Relations in the model store: what a unit's relations are now (for its agent to
// compare with what it was told), the snapshot a hook gets of them, and waking
// the agents of the units a change concerns.
import { Context } from '@temporalio/activity';
import type { Client, WorkflowHandle } from '@temporalio/client';
import { sql } from 'kysely';
import { updateStatusMs } from '../api/model-config.ts';
import type { RelationSnapshot } from '../charm/hook-protocol.ts';
import type { Db, Tx } from '../store/store.ts';
import {
  type AgentSettings,
  enqueueSignal,
  type RelationsWake,
  relationsChangedSignal,
  type UnitEvent,
  type UnitRef,
  unitAgentQuery,
} from '../workflows/messages.ts';
import type { RelationView } from '../workflows/relations.ts';
import type { ActivityDeps } from './deps.ts';
import { onUnitAgent } from './unit-agents.ts';

/** One relation of an application: its endpoint and the other end. */
interface RelationRow {
  id: number;
  endpoint: string;
  role: 'provides' | 'requires' | 'peer';
  interface: string;
  life: string;
  remote_model: string;
  remote_app: string;
  remote_life: string | null;
}

/** The relations an application is in, with the application at the other end (itself, for peers). */
export async function relationsOf(db: Db | Tx, modelUuid: string, application: string): Promise<RelationRow[]> {
  const { rows } = await sql<RelationRow>`
    SELECT ie.integration_id AS id, ie.endpoint, ie.role, i.interface, i.life,
      coalesce(o.model_uuid, ie.model_uuid) AS remote_model,
      coalesce(o.application, ie.application) AS remote_app,
      ra.life AS remote_life
    FROM integration_endpoints ie
    JOIN integrations i ON i.id = ie.integration_id
    LEFT JOIN integration_endpoints o ON o.integration_id = ie.integration_id
      AND (o.model_uuid, o.application) <> (ie.model_uuid, ie.application)
    LEFT JOIN applications ra ON ra.model_uuid = coalesce(o.model_uuid, ie.model_uuid)
      AND ra.name = coalesce(o.application, ie.application)
    WHERE ie.model_uuid = ${modelUuid} AND ie.application = ${application}
    ORDER BY ie.integration_id`.execute(db);
  return rows;
}

interface MemberRow {
  name: string;
  version: number | null;
}

/** Units of an application in its relations: alive and installed (a unit joins once it has run install). */
async function members(db: Db | Tx, integrationId: number, modelUuid: string, application: string) {
  const { rows } = await sql<MemberRow>`
    SELECT u.name, d.version FROM units u
    LEFT JOIN relation_data d ON d.integration_id = ${integrationId} AND d.model_uuid = u.model_uuid AND d.owner = u.name
    WHERE u.model_uuid = ${modelUuid} AND u.application = ${application} AND u.life = 'alive' AND u.installed
    ORDER BY u.number`.execute(db);
  return rows;
}

async function bagVersion(db: Db | Tx, integrationId: number, modelUuid: string, owner: string): Promise<number> {
  const row = await db
    .selectFrom('relation_data')
    .select('version')
    .where('integration_id', '=', integrationId)
    .where('model_uuid', '=', modelUuid)
    .where('owner', '=', owner)
    .executeTakeFirst();
  return row?.version ?? 0;
}

/** A unit's relations as its agent compares them with what it was told. */
export async function relationViews(db: Db, ref: UnitRef): Promise<RelationView[]> {
  const unit = await db
    .selectFrom('units')
    .select(['application', 'leader', 'life'])
    .where('model_uuid', '=', ref.modelUuid)
    .where('name', '=', ref.unit)
    .executeTakeFirst();
  if (!unit) return [];
  const out: RelationView[] = [];
  for (const r of await relationsOf(db, ref.modelUuid, unit.application)) {
    const peer = r.role === 'peer';
    const dying = r.life !== 'alive' || (!peer && r.remote_life !== 'alive');
    const units: Record<string, number> = {};
    if (!dying) {
      for (const m of await members(db, r.id, r.remote_model, r.remote_app)) {
        if (peer && m.name === ref.unit) continue;
        units[m.name] = m.version ?? 0;
      }
    }
    // a leader is not told of its own writes to its peers' application data
    const appVersion = peer && unit.leader ? 0 : await bagVersion(db, r.id, r.remote_model, r.remote_app);
    out.push({ id: r.id, endpoint: r.endpoint, remoteApp: r.remote_app, dying, units, appVersion });
  }
  return out;
}

interface AddressRow {
  name: string;
  address: string | null;
}

/** Juju fills these in for every unit in a relation; a unit's own writes win. */
function addressDefaults(address: string | null | undefined): Record<string, string> {
  if (!address) return {};
  return { 'egress-subnets': `${address}/32`, 'ingress-address': address, 'private-address': address };
}

/**
 * What a hook is told of each relation its unit is in: the remote units in it
 * (peers: the other units) and the data bags, the units' with their addresses
 * filled in. A departed unit's bag stays in it, for relation-departed.
 */
export async function relationSnapshots(
  db: Db,
  modelUuid: string,
  application: string,
  self: string,
  /** Filled with the version of each data bag read, by relation id and owner. */
  versions?: Map<number, Record<string, number>>,
): Promise<RelationSnapshot[]> {
  const out: RelationSnapshot[] = [];
  for (const r of await relationsOf(db, modelUuid, application)) {
    const peer = r.role === 'peer';
    const dying = r.life !== 'alive' || (!peer && r.remote_life !== 'alive');
    const remote = dying ? [] : await members(db, r.id, r.remote_model, r.remote_app);
    const bags = await db
      .selectFrom('relation_data')
      .select(['model_uuid', 'owner', 'settings', 'version'])
      .where('integration_id', '=', r.id)
      .execute();
    const { rows: addresses } = await sql<AddressRow>`
      SELECT u.name, m.address FROM units u
      LEFT JOIN machines m ON m.model_uuid = u.model_uuid AND m.id = u.machine_id
      WHERE (u.model_uuid = ${modelUuid} AND u.application = ${application})
         OR (u.model_uuid = ${r.remote_model} AND u.application = ${r.remote_app})`.execute(db);
    const data: Record<string, Record<string, string>> = {};
    for (const a of addresses) data[a.name] = addressDefaults(a.address);
    for (const b of bags) data[b.owner] = { ...(data[b.owner] ?? {}), ...b.settings };
    versions?.set(r.id, Object.fromEntries(bags.map((b) => [b.owner, b.version])));
    out.push({
      id: r.id,
      endpoint: r.endpoint,
      interface: r.interface,
      role: r.role,
      remoteApplication: r.remote_app,
      data,
      units: remote.map((u) => u.name).filter((n) => n !== self),
    });
  }
  return out;
}

/**
 * An application that goes takes its integrations with it (the remote units were
 * told it is dying, and ran departed and broken, or do when they next look).
 */
export async function dropApplicationIntegrations(db: Db | Tx, modelUuid: string, application?: string) {
  await sql`
    DELETE FROM integrations WHERE id IN (
      SELECT integration_id FROM integration_endpoints
      WHERE model_uuid = ${modelUuid} ${application === undefined ? sql`` : sql`AND application = ${application}`})`.execute(
    db,
  );
}

/** A unit that goes leaves its data bags for the remote units' relation-departed; retention prunes them. */
export async function markBagsDeparted(db: Db | Tx, modelUuid: string, unit: string) {
  await db
    .updateTable('relation_data')
    .set({ departed_at: sql`now()` })
    .where('model_uuid', '=', modelUuid)
    .where('owner', '=', unit)
    .execute();
}

/** The model's settings unit agents follow (model-config): what a new agent starts with. */
export async function agentSettingsOf(db: Db, modelUuid: string): Promise<AgentSettings> {
  const model = await db.selectFrom('models').select('config').where('uuid', '=', modelUuid).executeTakeFirst();
  return { updateStatusMs: updateStatusMs(model?.config) };
}

interface AgentRow {
  model: string;
  model_uuid: string;
  name: string;
}

/** Signals the unit's agent (under either id); false when it has none. */
async function signalAgent(
  client: Client,
  r: AgentRow,
  send: (handle: WorkflowHandle) => Promise<void>,
): Promise<boolean> {
  return (await onUnitAgent(client, { model: r.model, modelUuid: r.model_uuid, unit: r.name }, send)) !== undefined;
}

/** The units of these applications (only the alive ones with `alive`), with their model's name, in order. */
async function agentRows(
  db: Db,
  apps: { modelUuid: string; application: string }[],
  alive = false,
): Promise<AgentRow[]> {
  if (apps.length === 0) return [];
  const { rows } = await sql<AgentRow>`
    SELECT m.name AS model, u.model_uuid, u.name FROM units u JOIN models m ON m.uuid = u.model_uuid
    WHERE (u.model_uuid, u.application) IN (${sql.join(apps.map((a) => sql`(${a.modelUuid}, ${a.application})`))})
      ${alive ? sql`AND u.life = 'alive'` : sql``}
    ORDER BY u.model_uuid, u.application, u.number`.execute(db);
  return rows;
}

/**
 * Wakes the agents of every unit of the given applications (but `except`), so
 * they look at their relations. An agent not running yet looks when it starts.
 */
export async function wakeUnits(
  db: Db,
  apps: { modelUuid: string; application: string }[],
  wake: RelationsWake,
  except?: string,
): Promise<string[]> {
  const rows = await agentRows(db, apps);
  const client = Context.current().client;
  const targets = rows.filter((r) => r.name !== except);
  const woken: string[] = [];
  const signal = async (r: AgentRow) => {
    if (await signalAgent(client, r, (h) => h.signal(relationsChangedSignal, wake))) woken.push(r.name);
  };
  for (let i = 0; i < targets.length; i += 16) await Promise.all(targets.slice(i, i + 16).map(signal));
  return woken;
}

/** Queues events on the agents of an application's units (but `except`). */
export async function enqueueOnUnits(
  db: Db,
  modelUuid: string,
  application: string,
  events: UnitEvent[],
  except?: string,
): Promise<void> {
  const rows = await agentRows(db, [{ modelUuid, application }], true);
  const client = Context.current().client;
  await Promise.all(
    rows.filter((r) => r.name !== except).map((r) => signalAgent(client, r, (h) => h.signal(enqueueSignal, events))),
  );
}

/**
 * An application whose leader went gets a new one: its lowest-numbered unit still
 * alive, which runs leader-elected; the others run leader-settings-changed.
 */
export async function electLeader(db: Db, modelUuid: string, application: string): Promise<string | null> {
  const elected = await db.transaction().execute(async (tx) => {
    const app = await tx
      .selectFrom('applications')
      .select('life')
      .where('model_uuid', '=', modelUuid)
      .where('name', '=', application)
      .forUpdate()
      .executeTakeFirst();
    if (app?.life !== 'alive') return null;
    const units = await tx
      .selectFrom('units')
      .select(['name', 'leader', 'life'])
      .where('model_uuid', '=', modelUuid)
      .where('application', '=', application)
      .orderBy('number')
      .execute();
    if (units.some((u) => u.leader && u.life === 'alive')) return null;
    const next = units.find((u) => u.life === 'alive');
    if (!next) return null;
    await tx
      .updateTable('units')
      .set({ leader: sql`name = ${next.name}` })
      .where('model_uuid', '=', modelUuid)
      .where('application', '=', application)
      .execute();
    return next.name;
  });
  if (!elected) return null;
  const rows = await agentRows(db, [{ modelUuid, application }], true);
  const client = Context.current().client;
  await Promise.all(
    rows.map((r) =>
      signalAgent(client, r, (h) =>
        h.signal(enqueueSignal, [{ hook: r.name === elected ? 'leader-elected' : 'leader-settings-changed' }]),
      ),
    ),
  );
  return elected;
}

/** The applications at the other end of an application's relations, and itself if it has peers. */
export async function relatedApps(db: Db, modelUuid: string, application: string, relationIds?: number[]) {
  const rels = (await relationsOf(db, modelUuid, application)).filter(
    (r) => !relationIds || relationIds.includes(r.id),
  );
  const apps = new Map<string, { modelUuid: string; application: string }>();
  for (const r of rels)
    apps.set(`${r.remote_model}/${r.remote_app}`, { modelUuid: r.remote_model, application: r.remote_app });
  return [...apps.values()];
}

export function createRelationActivities(deps: ActivityDeps) {
  const db = deps.store.db;
  return {
    /** A unit's relations now, for its agent (a local activity: one read). */
    async relationViews(ref: UnitRef): Promise<RelationView[]> {
      return relationViews(db, ref);
    },

    /** Wakes every unit of the applications related to `application` (and its peers). */
    async wakeRelatedUnits(modelUuid: string, application: string, wake: RelationsWake = {}): Promise<string[]> {
      return wakeUnits(db, await relatedApps(db, modelUuid, application), wake);
    },

    /** The model's settings unit agents follow (model-config). */
    async agentSettings(modelUuid: string): Promise<AgentSettings> {
      return agentSettingsOf(db, modelUuid);
    },

    /**
     * Units leaving (a migration's old ones): they leave their relations now, while
     * still running, so the remote units run relation-departed and stop using them
     * before they stop.
     */
    async drainUnits(modelUuid: string, application: string, names: string[]): Promise<void> {
      if (names.length === 0) return;
      await db
        .updateTable('units')
        .set({ life: 'dying' })
        .where('model_uuid', '=', modelUuid)
        .where('name', 'in', names)
        .execute();
      await wakeUnits(db, await relatedApps(db, modelUuid, application), {});
    },

    /**
     * The units of these applications (and of the applications related to them)
     * whose agents are running a hook, have hooks queued or a relation change to
     * look at: empty once they have all settled.
     */
    async busyUnits(apps: { modelUuid: string; application: string }[]): Promise<string[]> {
      const all = new Map<string, { modelUuid: string; application: string }>();
      for (const a of apps) {
        all.set(`${a.modelUuid}/${a.application}`, a);
        for (const r of await relatedApps(db, a.modelUuid, a.application))
          all.set(`${r.modelUuid}/${r.application}`, r);
      }
      const rows = await agentRows(db, [...all.values()]);
      const client = Context.current().client;
      const busy: string[] = [];
      await Promise.all(
        rows.map(async (r) => {
          const view = await onUnitAgent(client, { model: r.model, modelUuid: r.model_uuid, unit: r.name }, (h) =>
            h.query(unitAgentQuery),
          );
          if (view && (view.value.current !== null || view.value.queue.length > 0 || view.value.relationsPending)) {
            busy.push(r.name);
          }
        }),
      );
      return busy.sort();
    },

    /** The units of these applications (an integration's ends). */
    async applicationUnits(apps: { modelUuid: string; application: string }[]): Promise<string[]> {
      return (await agentRows(db, apps)).map((r) => r.name);
    },

    /** An integration whose units all ran relation-broken goes, with its data bags. */
    async deleteIntegration(id: number): Promise<void> {
      await db.deleteFrom('integrations').where('id', '=', id).execute();
    },

    /** Wakes every unit of these applications. */
    async wakeApplicationUnits(
      apps: { modelUuid: string; application: string }[],
      wake: RelationsWake = {},
    ): Promise<string[]> {
      return wakeUnits(db, apps, wake);
    },
  };
}

export type RelationActivities = ReturnType<typeof createRelationActivities>;
