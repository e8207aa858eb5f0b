// Bringing a model that came from elsewhere (a restore, a model moved in from another
// controller) to life: its machines provisioned by this controller, and its unit
// agents started from given states. Helpers of workflows, not workflows.
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/common';
import { ParentClosePolicy, proxyActivities, startChild } from '@temporalio/workflow';
import type { MachineActivities } from '../activities/machine-activities.ts';
import { unitAgentWorkflowId } from './messages.ts';
import { failureMessage } from './operation.ts';
import { ApplicationKey, ModelKey } from './search-attributes.ts';
import { type UnitAgentState, unitAgentWorkflow } from './unit-agent.ts';

export interface AgentToStart {
  application: string;
  state: UnitAgentState;
}

/** `why` names how the agents came, in each one's summary (`restored`, `moved in`). */
export async function startUnitAgents(agents: AgentToStart[], why: string): Promise<void> {
  await Promise.all(
    agents.map(async ({ application, state }) => {
      try {
        await startChild(unitAgentWorkflow, {
          workflowId: unitAgentWorkflowId(state.ref.model, state.ref.modelUuid, state.ref.unit),
          args: [state],
          parentClosePolicy: ParentClosePolicy.ABANDON,
          staticSummary: `unit agent of ${state.ref.unit} in model ${state.ref.model} (${why})`,
          typedSearchAttributes: [
            { key: ModelKey, value: state.ref.model },
            { key: ApplicationKey, value: application },
          ],
        });
      } catch (err) {
        // started by an earlier attempt of this step: it is running
        if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
      }
    }),
  );
}

const placement = proxyActivities<MachineActivities>({
  startToCloseTimeout: '15 minutes',
  heartbeatTimeout: '1 minute',
  retry: { initialInterval: '2 seconds', maximumInterval: '30 seconds', maximumAttempts: 5 },
});

/** Machines one provisionMachines activity prepares. */
const PROVISION_BATCH = 50;

/**
 * Provisions adopted machines (in batches, side by side) on this controller; returns
 * what failed, by model (the machine shows it is in error; its units' hooks fail
 * until it is fixed). `announce` is told how many there are, when there are any.
 */
export async function provisionAdopted(
  placed: { model: string; machines: string[] }[],
  announce: (total: number) => Promise<void>,
): Promise<string[]> {
  const failures: string[] = [];
  const total = placed.reduce((n, p) => n + p.machines.length, 0);
  if (total === 0) return failures;
  await announce(total);
  await Promise.all(
    placed.flatMap((p) => {
      const batches: string[][] = [];
      for (let i = 0; i < p.machines.length; i += PROVISION_BATCH) {
        batches.push(p.machines.slice(i, i + PROVISION_BATCH));
      }
      return batches.map(async (ids) => {
        try {
          await placement.provisionMachines(p.model, ids);
        } catch (err) {
          failures.push(`model ${p.model}: ${failureMessage(err)}`);
        }
      });
    }),
  );
  return failures;
}
