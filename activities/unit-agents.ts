// Reaching a unit's agent workflow from outside a workflow (activities, the API):
// under today's id, or the one agents started before it named the model's uuid.
import { type Client, type WorkflowHandle, WorkflowNotFoundError } from '@temporalio/client';
import { legacyUnitAgentWorkflowId, unitAgentWorkflowId } from '../workflows/messages.ts';

export interface AgentOf {
  model: string;
  modelUuid: string;
  unit: string;
}

/**
 * Runs `act` on the unit's agent under each id it may have; `undefined` when it
 * has none (never started, or ended). Any other failure is thrown.
 */
export async function onUnitAgent<T>(
  client: Client,
  agent: AgentOf,
  act: (handle: WorkflowHandle) => Promise<T>,
): Promise<{ value: T } | undefined> {
  for (const id of [
    unitAgentWorkflowId(agent.model, agent.modelUuid, agent.unit),
    legacyUnitAgentWorkflowId(agent.model, agent.unit),
  ]) {
    try {
      return { value: await act(client.workflow.getHandle(id)) };
    } catch (err) {
      if (!(err instanceof WorkflowNotFoundError)) throw err;
    }
  }
  return undefined;
}
