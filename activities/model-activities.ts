// Model provisioning on the model's cloud, and teardown.
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ApplicationFailure } from '@temporalio/activity';
import { sql } from 'kysely';
import type { ActivityDeps } from './deps.ts';
import { modelNamespace } from './kubernetes-cluster.ts';
import { createKubernetesProvider } from './kubernetes-provider.ts';
import { dropApplicationIntegrations, wakeUnits } from './relation-activities.ts';
import { localMachinesDir } from './substrates/local-isolation.ts';

export function createModelActivities(deps: ActivityDeps) {
  const { store, dataDir } = deps;
  const kubernetes = createKubernetesProvider(deps);
  async function modelByName(name: string) {
    const model = await store.db.selectFrom('models').selectAll().where('name', '=', name).executeTakeFirst();
    if (!model) throw ApplicationFailure.nonRetryable(`model "${name}" not found`, 'NotFound');
    return model;
  }

  return {
    async prepareModel(name: string): Promise<void> {
      const model = await modelByName(name);
      const cloud = await store.db
        .selectFrom('clouds')
        .selectAll()
        .where('name', '=', model.cloud)
        .executeTakeFirstOrThrow();
      if (cloud.type === 'local') await mkdir(join(localMachinesDir(dataDir), model.uuid), { recursive: true });
      if (cloud.type === 'kubernetes') {
        await kubernetes.prepareModel({
          uuid: model.uuid,
          name: model.name,
          cloud: cloud.name,
          namespace: modelNamespace(model.name),
        });
      }
      await store.db.transaction().execute(async (tx) => {
        await tx
          .updateTable('models')
          .set({ status: 'available', message: '' })
          .where('uuid', '=', model.uuid)
          .execute();
        await tx
          .insertInto('status_history')
          .values({
            model_uuid: model.uuid,
            entity: `model/${name}`,
            kind: 'model',
            status: 'available',
            message: '',
            data: null,
          })
          .execute();
      });
    },

    /** The model's uuid, or null when it is gone. */
    async modelUuidOf(name: string): Promise<string | null> {
      const model = await store.db.selectFrom('models').select('uuid').where('name', '=', name).executeTakeFirst();
      return model?.uuid ?? null;
    },

    /** The model's records, once its units and machines are torn down. */
    async destroyModel(name: string): Promise<void> {
      const model = await store.db.selectFrom('models').selectAll().where('name', '=', name).executeTakeFirst();
      if (!model) return; // already gone: destroying twice is fine
      await rm(join(localMachinesDir(dataDir), model.uuid), { recursive: true, force: true });
      // applications of other models integrated with this one's: told once the integrations are gone
      const { rows: others } = await sql<{ modelUuid: string; application: string }>`
        SELECT DISTINCT o.model_uuid AS "modelUuid", o.application FROM integration_endpoints e
        JOIN integration_endpoints o ON o.integration_id = e.integration_id AND o.model_uuid <> e.model_uuid
        WHERE e.model_uuid = ${model.uuid}`.execute(store.db);
      await store.db.transaction().execute(async (tx) => {
        await tx.deleteFrom('status_history').where('model_uuid', '=', model.uuid).execute();
        await tx.deleteFrom('log_entries').where('model_uuid', '=', model.uuid).execute();
        await tx.deleteFrom('hook_runs').where('model_uuid', '=', model.uuid).execute();
        // integrations with other models' applications go too (theirs see them broken)
        await dropApplicationIntegrations(tx, model.uuid);
        await tx.deleteFrom('models').where('uuid', '=', model.uuid).execute();
      });
      if (others.length > 0) await wakeUnits(store.db, others, {});
    },
  };
}

export type ModelActivities = ReturnType<typeof createModelActivities>;
