// Rolling refresh: which revision each unit runs, how the units are doing (the
// health gate), and the application moved to the new revision at the end.
import { sql } from 'kysely';
import { getCharmInfo } from '../charm/charm-store.ts';
import type { ActivityDeps } from './deps.ts';
import { recordActionOutcome } from './hook-activities.ts';
import { createKubernetesProvider, kubernetesModel } from './kubernetes-provider.ts';

export interface UnitHealth {
  status: string;
  message: string;
  agent: string;
  /** The machine is in error (unreachable, host key changed): its message. */
  machineDown: string | null;
  machine: string | null;
}

export function createRefreshActivities(deps: ActivityDeps) {
  const db = deps.store.db;
  const kubernetes = createKubernetesProvider(deps);
  return {
    /** The units run `revision` from now on (null: their application's again). */
    async setUnitsRevision(modelUuid: string, units: string[], revision: number | null): Promise<void> {
      if (units.length === 0) return;
      await db
        .updateTable('units')
        .set({ charm_revision: revision })
        .where('model_uuid', '=', modelUuid)
        .where('name', 'in', units)
        .execute();
      // on kubernetes the pod template follows; each unit's pod is made again from it by
      // the unit's agent, right before the refresh's upgrade-charm (hook-activities.ts)
      const k8s = await kubernetesModel(db, modelUuid);
      if (k8s) await kubernetes.refreshTemplate(k8s, units);
    },

    /** Workload and agent status of each unit, and whether its machine is down. */
    async unitsHealth(modelUuid: string, units: string[]): Promise<Record<string, UnitHealth>> {
      if (units.length === 0) return {};
      const rows = await db
        .selectFrom('units as u')
        .leftJoin('machines as m', (j) =>
          j.onRef('m.model_uuid', '=', 'u.model_uuid').onRef('m.id', '=', 'u.machine_id'),
        )
        .select([
          'u.name',
          'u.workload_status',
          'u.workload_message',
          'u.agent_status',
          'u.machine_id',
          'm.state as machine_state',
          'm.message as machine_message',
        ])
        .where('u.model_uuid', '=', modelUuid)
        .where('u.name', 'in', units)
        .execute();
      const out: Record<string, UnitHealth> = {};
      for (const r of rows) {
        out[r.name] = {
          status: r.workload_status,
          message: r.workload_message,
          agent: r.agent_status,
          machine: r.machine_id,
          machineDown: r.machine_state === 'error' ? (r.machine_message ?? 'in error') : null,
        };
      }
      return out;
    },

    /**
     * Units that, since `since`, committed an upgrade-charm and then a config-changed
     * after it: the rollback's own hooks ran (not one of the refresh's still in flight).
     */
    async unitsConfiguredSince(modelUuid: string, units: string[], since: string): Promise<string[]> {
      if (units.length === 0) return [];
      const { rows } = await sql<{ unit: string }>`
        SELECT u.unit FROM (
          SELECT unit, max(started_at) AS upgraded FROM hook_runs
          WHERE model_uuid = ${modelUuid} AND unit IN (${sql.join(units)}) AND hook = 'upgrade-charm'
            AND committed AND started_at >= ${new Date(since)}
          GROUP BY unit) u
        WHERE EXISTS (SELECT 1 FROM hook_runs c WHERE c.model_uuid = ${modelUuid} AND c.unit = u.unit
          AND c.hook = 'config-changed' AND c.committed AND c.started_at > u.upgraded)`.execute(db);
      return rows.map((r) => r.unit);
    },

    /** Before a probe action runs: its outcome is not known yet. */
    async startProbe(operationId: number): Promise<void> {
      await recordActionOutcome(db, operationId, { status: 'running', results: {}, message: '' });
    },

    /**
     * The refresh is done: the application is on `revision` (its units follow it
     * again), with the new revision's endpoints.
     */
    async finishRefresh(modelUuid: string, application: string, revision: number): Promise<void> {
      const app = await db
        .selectFrom('applications')
        .select('charm_name')
        .where('model_uuid', '=', modelUuid)
        .where('name', '=', application)
        .executeTakeFirst();
      if (!app) return;
      const charm = await getCharmInfo(db, app.charm_name, revision);
      await db.transaction().execute(async (tx) => {
        await tx
          .updateTable('applications')
          .set({ charm_revision: revision })
          .where('model_uuid', '=', modelUuid)
          .where('name', '=', application)
          .execute();
        await tx
          .updateTable('units')
          .set({ charm_revision: null })
          .where('model_uuid', '=', modelUuid)
          .where('application', '=', application)
          .execute();
        if (charm) {
          await tx
            .deleteFrom('endpoints')
            .where('model_uuid', '=', modelUuid)
            .where('application', '=', application)
            .execute();
          const endpoints = charm.meta.endpoints.filter((e) => !e.implicit);
          if (endpoints.length > 0) {
            await tx
              .insertInto('endpoints')
              .values(
                endpoints.map((e) => ({
                  model_uuid: modelUuid,
                  application,
                  name: e.name,
                  role: e.role,
                  interface: e.interface,
                })),
              )
              .execute();
          }
        }
      });
    },
  };
}

export type RefreshActivities = ReturnType<typeof createRefreshActivities>;
