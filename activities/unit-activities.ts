// Unit bookkeeping around the hooks: forced removal, application removal.
import { ApplicationFailure, Context } from '@temporalio/activity';
import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import { type ResolveRequest, type ResolveResult, resolveUpdate, type UnitRef } from '../workflows/messages.ts';
import type { ActivityDeps } from './deps.ts';
import { deleteUnit } from './hook-activities.ts';
import { createKubernetesProvider, kubernetesModel } from './kubernetes-provider.ts';
import { machineTarget, unitPaths } from './machine-target.ts';
import { dropApplicationIntegrations, electLeader } from './relation-activities.ts';
import { substrateFor } from './substrates/index.ts';
import { shellQuote } from './substrates/machine-shell.ts';

export function createUnitActivities(deps: ActivityDeps) {
  const db = deps.store.db;
  const kubernetes = createKubernetesProvider(deps);

  /** A unit's pod goes with the unit (other machines stay for the next unit). */
  async function releaseUnitMachine(ref: UnitRef, machineId: string | null): Promise<void> {
    if (machineId === null) return;
    const k8s = await kubernetesModel(db, ref.modelUuid);
    if (k8s) await kubernetes.releaseUnitPod(k8s, ref.unit, machineId);
  }

  return {
    /**
     * `--force`: the unit goes whatever state it or its machine is in. Its files
     * are removed when the machine answers; the records are removed regardless.
     */
    async forceRemoveUnit(ref: UnitRef): Promise<void> {
      const unit = await db
        .selectFrom('units')
        .select(['machine_id'])
        .where('model_uuid', '=', ref.modelUuid)
        .where('name', '=', ref.unit)
        .executeTakeFirst();
      if (unit?.machine_id) {
        const machine = await db
          .selectFrom('machines')
          .selectAll()
          .where('model_uuid', '=', ref.modelUuid)
          .where('id', '=', unit.machine_id)
          .executeTakeFirst();
        if (machine) {
          const target = machineTarget(machine, deps.controllerKey, deps.store.secrets);
          const paths = unitPaths(machine.root_dir, ref.unit);
          try {
            // stop whatever the unit left running in its directory, then remove it
            await substrateFor(deps.substrates, target).exec(target, {
              command: `rm -rf ${shellQuote(paths.unitDir)}`,
              timeoutMs: 15_000,
            });
          } catch {
            // unreachable: --force never waits on the machine
          }
        }
      }
      const gone = await deleteUnit(db, ref);
      if (gone?.leader) await electLeader(db, ref.modelUuid, gone.application);
      await releaseUnitMachine(ref, unit?.machine_id ?? null);
    },

    /**
     * Hands a resolve to the unit's agent and waits for what it did. The update id
     * is the operation's, so a retried activity joins the same update instead of
     * resolving twice. An agent that refuses (the unit is not in error) fails this
     * for good, with its reason.
     */
    async resolveUnitAgent(agentIds: string[], request: ResolveRequest, updateId: string): Promise<ResolveResult> {
      const ctx = Context.current();
      // a skip asked for during an automatic retry waits for that attempt to end
      const beat = setInterval(() => ctx.heartbeat(), 5_000);
      try {
        for (const id of agentIds) {
          try {
            return await ctx.client.workflow.getHandle(id).executeUpdate(resolveUpdate, { args: [request], updateId });
          } catch (err) {
            if (err instanceof WorkflowUpdateFailedError) {
              throw ApplicationFailure.nonRetryable(err.cause?.message ?? err.message, 'ResolveRefused');
            }
            // no agent under this id: try the next one
            if (!(err instanceof WorkflowNotFoundError)) throw err;
          }
        }
        throw ApplicationFailure.nonRetryable('the unit has no running agent: nothing to resolve', 'NoAgent');
      } finally {
        clearInterval(beat);
      }
    },

    /** Ends the agents still running under these ids (destroy-model); one already gone is fine. */
    async endUnitAgents(agentIds: string[], reason: string): Promise<number> {
      const ctx = Context.current();
      let ended = 0;
      for (const id of agentIds) {
        try {
          await ctx.client.workflow.getHandle(id).terminate(reason);
          ended++;
        } catch (err) {
          if (!(err instanceof WorkflowNotFoundError)) throw err;
        }
        ctx.heartbeat(ended);
      }
      return ended;
    },

    /**
     * Why each of these units may not be getting on with its hooks, from the store:
     * its machine in error or still provisioning, the unit in error (its agent
     * retrying an earlier hook). `null`: nothing in the way; `gone`: no such unit.
     */
    async unitWaitReasons(modelUuid: string, names: string[]): Promise<Record<string, string | null>> {
      if (names.length === 0) return {};
      const rows = await db
        .selectFrom('units as u')
        .leftJoin('machines as m', (j) =>
          j.onRef('m.model_uuid', '=', 'u.model_uuid').onRef('m.id', '=', 'u.machine_id'),
        )
        .select([
          'u.name',
          'u.machine_id',
          'u.workload_status',
          'u.workload_message',
          'u.agent_status',
          'u.agent_message',
          'm.state as machine_state',
          'm.message as machine_message',
        ])
        .where('u.model_uuid', '=', modelUuid)
        .where('u.name', 'in', names)
        .execute();
      const out: Record<string, string | null> = {};
      for (const name of names) {
        const r = rows.find((x) => x.name === name);
        if (!r) out[name] = 'gone';
        else if (r.machine_id === null) out[name] = 'no machine yet';
        else if (r.machine_state === 'error') out[name] = `machine ${r.machine_id} is in error: ${r.machine_message}`;
        else if (r.machine_state === 'pending' || r.machine_state === null)
          out[name] = `machine ${r.machine_id} is being provisioned`;
        else if (r.workload_status === 'error')
          out[name] = `the unit is in error (${r.workload_message}); its agent retries that hook first`;
        else if (r.agent_status === 'failed') out[name] = r.agent_message;
        else out[name] = null;
      }
      return out;
    },

    /** How an action run ended, without its results (they stay in the store, out of workflow histories). */
    async actionOutcome(operationId: number): Promise<{ status: string; message: string } | null> {
      const op = await db.selectFrom('operations').select('results').where('id', '=', operationId).executeTakeFirst();
      return op?.results ? { status: op.results.status, message: op.results.message } : null;
    },

    /** The model's units: what destroy-model tears down. */
    async modelUnits(modelUuid: string): Promise<string[]> {
      const rows = await db
        .selectFrom('units')
        .select('name')
        .where('model_uuid', '=', modelUuid)
        .orderBy('application')
        .orderBy('number')
        .execute();
      return rows.map((r) => r.name);
    },

    async removeApplicationRecord(modelUuid: string, application: string): Promise<void> {
      await db.transaction().execute(async (tx) => {
        const left = await tx
          .selectFrom('units')
          .select('name')
          .where('model_uuid', '=', modelUuid)
          .where('application', '=', application)
          .execute();
        if (left.length > 0) return;
        await dropApplicationIntegrations(tx, modelUuid, application);
        await tx
          .deleteFrom('applications')
          .where('model_uuid', '=', modelUuid)
          .where('name', '=', application)
          .execute();
        await tx
          .insertInto('status_history')
          .values({
            model_uuid: modelUuid,
            entity: `application/${application}`,
            kind: 'application',
            status: 'removed',
            message: '',
            data: null,
          })
          .execute();
      });
      // a kubernetes application's StatefulSet and Services go with it
      const k8s = await kubernetesModel(db, modelUuid);
      if (k8s) await kubernetes.reconcileApplication(k8s, application);
    },
  };
}

export type UnitActivities = ReturnType<typeof createUnitActivities>;
