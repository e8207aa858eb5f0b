// What a kubernetes cloud does at each moment of a model's life, called by the
// activities that do the same on the other clouds: a model is a namespace, an
// application a StatefulSet with its Services, a unit `app/N` the pod `app-N`
// (its machine, of kind 'pod'). The store says what should be; these bring the
// cluster in line with it, and can be repeated at any point.
import { ApplicationFailure } from '@temporalio/activity';
import { getCharmInfo } from '../charm/charm-store.ts';
import { nextModelSequence } from '../store/sequences.ts';
import type { Db, Tx } from '../store/store.ts';
import type { ActivityDeps } from './deps.ts';
import {
  Cluster,
  DEFAULT_CHARM_IMAGE,
  KubeconfigError,
  modelNamespace,
  POD_ROOT_DIR,
  unitPod,
  workloadContainers,
} from './kubernetes-cluster.ts';

export interface KubernetesModel {
  uuid: string;
  name: string;
  cloud: string;
  namespace: string;
}

/** The model, when it is on a kubernetes cloud. */
export async function kubernetesModel(db: Db | Tx, modelUuid: string): Promise<KubernetesModel | undefined> {
  const row = await db
    .selectFrom('models as m')
    .innerJoin('clouds as c', 'c.name', 'm.cloud')
    .select(['m.uuid', 'm.name', 'm.cloud', 'c.type'])
    .where('m.uuid', '=', modelUuid)
    .executeTakeFirst();
  if (row?.type !== 'kubernetes') return undefined;
  return { uuid: row.uuid, name: row.name, cloud: row.cloud, namespace: modelNamespace(row.name) };
}

export function createKubernetesProvider(deps: ActivityDeps) {
  const db = deps.store.db;

  async function cluster(cloud: string): Promise<Cluster> {
    return new Cluster(await deps.substrates.pod.kubeconfig(cloud));
  }

  /** The application's pods as its units want them: a StatefulSet of max(unit number) + 1 replicas. */
  async function reconcileApplication(model: KubernetesModel, application: string): Promise<void> {
    const app = await db
      .selectFrom('applications')
      .select(['charm_name', 'charm_revision', 'life'])
      .where('model_uuid', '=', model.uuid)
      .where('name', '=', application)
      .executeTakeFirst();
    const units = await db
      .selectFrom('units')
      .select(['number', 'charm_revision'])
      .where('model_uuid', '=', model.uuid)
      .where('application', '=', application)
      .execute();
    const c = await cluster(model.cloud);
    if (!app || units.length === 0) {
      // no unit left: a removed application's objects go, an alive one keeps them at 0 pods
      if (app?.life !== 'alive') await c.deleteApplication(model.namespace, application);
      else await c.setReplicas(model.namespace, application, 0);
      return;
    }
    const replicas = Math.max(...units.map((u) => u.number)) + 1;
    // during a rolling refresh the template follows the newest revision a unit was moved to
    const revision = Math.max(app.charm_revision, ...units.map((u) => u.charm_revision ?? app.charm_revision));
    const charm = await getCharmInfo(db, app.charm_name, revision);
    if (!charm) throw ApplicationFailure.nonRetryable(`charm ${app.charm_name}:${revision} not found`, 'NotFound');
    const { containers, problems } = workloadContainers(charm.meta);
    if (problems.length > 0) {
      throw ApplicationFailure.nonRetryable(
        `charm ${app.charm_name} (rev ${revision}) has no usable image: ${problems.join('; ')}`,
        'NoUsableImage',
      );
    }
    const image = await db
      .selectFrom('kubernetes_applications')
      .select('charm_image')
      .where('model_uuid', '=', model.uuid)
      .where('application', '=', application)
      .executeTakeFirst();
    const { address } = await c.ensureApplication(
      {
        namespace: model.namespace,
        modelUuid: model.uuid,
        application,
        charmImage: image?.charm_image ?? DEFAULT_CHARM_IMAGE,
        workloads: containers,
        charmRevision: revision,
      },
      replicas,
    );
    await db
      .updateTable('kubernetes_applications')
      .set({ address })
      .where('model_uuid', '=', model.uuid)
      .where('application', '=', application)
      .where((eb) => eb.or([eb('address', 'is', null), eb('address', '!=', address)]))
      .execute();
  }

  return {
    /** add-model: the model's namespace (made, or an existing one used as it is). */
    async prepareModel(model: KubernetesModel): Promise<void> {
      try {
        await (await cluster(model.cloud)).ensureNamespace(model.namespace, model.uuid);
      } catch (err) {
        if (err instanceof KubeconfigError) throw ApplicationFailure.nonRetryable(err.message, err.type);
        throw err;
      }
    },

    /**
     * A pod machine for each unit (the unit placed on it in the same transaction; a
     * unit that has one keeps it), then the StatefulSet grown to hold them.
     */
    async allocatePods(model: KubernetesModel, units: string[]): Promise<Record<string, string>> {
      const placed = await db.transaction().execute(async (tx) => {
        const out: Record<string, string> = {};
        for (const name of units) {
          const unit = await tx
            .selectFrom('units')
            .select(['machine_id'])
            .where('model_uuid', '=', model.uuid)
            .where('name', '=', name)
            .forUpdate()
            .executeTakeFirst();
          if (!unit) throw ApplicationFailure.nonRetryable(`unit ${name} not found`, 'NotFound');
          if (unit.machine_id !== null) {
            out[name] = unit.machine_id;
            continue;
          }
          const id = String(await nextModelSequence(tx, model.uuid, 'machine'));
          await tx
            .insertInto('machines')
            .values({
              model_uuid: model.uuid,
              id,
              kind: 'pod',
              host: unitPod(name),
              hostname: unitPod(name),
              port: null,
              ssh_user: null,
              host_key_fingerprint: null,
              root_dir: POD_ROOT_DIR,
              cloud: model.cloud,
              namespace: model.namespace,
              state: 'pending',
            })
            .execute();
          await tx
            .updateTable('units')
            .set({ machine_id: id, agent_status: 'allocating', agent_message: '' })
            .where('model_uuid', '=', model.uuid)
            .where('name', '=', name)
            .execute();
          out[name] = id;
        }
        return out;
      });
      const apps = [...new Set(units.map((u) => u.split('/')[0]))];
      for (const app of apps) await reconcileApplication(model, app);
      return placed;
    },

    /** After a unit's records went: its pod goes (the StatefulSet shrinks) and so does its machine. */
    async releaseUnitPod(model: KubernetesModel, unit: string, machineId: string): Promise<void> {
      await reconcileApplication(model, unit.split('/')[0]);
      await db.deleteFrom('machines').where('model_uuid', '=', model.uuid).where('id', '=', machineId).execute();
    },

    /** The application went (or has no unit): its objects follow. */
    reconcileApplication,

    /** The application's Service carries the ports its units opened. */
    async syncServicePorts(model: KubernetesModel, application: string): Promise<void> {
      const rows = await db
        .selectFrom('units')
        .select('ports')
        .where('model_uuid', '=', model.uuid)
        .where('application', '=', application)
        .execute();
      const opened = [...new Set(rows.flatMap((r) => r.ports ?? []))];
      await (await cluster(model.cloud)).setServicePorts(model.namespace, application, opened);
    },

    /**
     * A refresh batch: the pod template follows the units' new revision, and each
     * unit's pod whose template is older is replaced (the StatefulSet makes it again
     * from the new template); its unit's next hooks find the new pod and deliver the
     * runtime and charm to it first.
     */
    async refreshTemplate(model: KubernetesModel, units: string[]): Promise<void> {
      const apps = [...new Set(units.map((u) => u.split('/')[0]))];
      for (const app of apps) await reconcileApplication(model, app);
    },

    /**
     * The unit's pod is made again from its StatefulSet's template when it runs
     * another charm revision than the template says (a refresh, or its rollback).
     * Called by the unit's own agent right before the refresh's upgrade-charm, so
     * no other hook of the unit runs between the pod going and that hook.
     */
    async renewPod(model: KubernetesModel, unit: string): Promise<boolean> {
      const c = await cluster(model.cloud);
      const app = unit.split('/')[0];
      const sts = await c.readStatefulSet(model.namespace, app);
      const pod = await c.readPod(model.namespace, unitPod(unit));
      const want = sts?.spec?.template.metadata?.annotations?.['charmflow.io/charm-revision'];
      const have = pod?.metadata?.annotations?.['charmflow.io/charm-revision'];
      if (!pod || want === undefined || want === have) return false;
      await c.replacePod(model.namespace, unitPod(unit));
      return true;
    },

    /** destroy-model: what charmflow made in the namespace goes, and the namespace if charmflow made it. */
    async cleanModel(model: KubernetesModel): Promise<string[]> {
      return (await (await cluster(model.cloud)).deleteModelObjects(model.namespace, model.uuid)).deleted;
    },
  };
}

export type KubernetesProvider = ReturnType<typeof createKubernetesProvider>;
