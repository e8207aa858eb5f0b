// Machine lifecycle operations: add (provision) and remove.
import { proxyActivities } from '@temporalio/workflow';
import type { MachineActivities } from '../activities/machine-activities.ts';
import { BOOKKEEPING_ACTIVITY } from './activity-options.ts';
import { failureMessage, type OperationInput, runOperation } from './operation.ts';

// Provisioning talks to a host over SSH: a few quick retries for the odd lost
// channel; an unreachable host or a changed host key fails at once (non-retryable).
const provisioning = proxyActivities<MachineActivities>({
  startToCloseTimeout: '2 minutes',
  // provisionMachine heartbeats every 5 s: a crashed worker costs 30 s, not the whole timeout
  heartbeatTimeout: '30 seconds',
  retry: { initialInterval: '2 seconds', backoffCoefficient: 2, maximumInterval: '20 seconds', maximumAttempts: 4 },
});

const bookkeeping = proxyActivities<MachineActivities>({ ...BOOKKEEPING_ACTIVITY, startToCloseTimeout: '30 seconds' });

export interface MachineOperationInput extends OperationInput {
  machineId: string;
}

export interface RemoveMachineInput extends MachineOperationInput {
  force: boolean;
}

export async function addMachineWorkflow(input: MachineOperationInput): Promise<void> {
  const { model, machineId } = input;
  await runOperation(input, async (ctx) => {
    await ctx.step(`provisioning machine ${machineId}`, { machine: machineId });
    try {
      await provisioning.provisionMachine(model, machineId);
    } catch (err) {
      // provisionMachine records permanent failures itself; this covers exhausted retries.
      await bookkeeping.markMachineError(model, machineId, failureMessage(err));
      throw err;
    }
    await ctx.step(`machine ${machineId} started`, { machine: machineId });
  });
}

export async function removeMachineWorkflow(input: RemoveMachineInput): Promise<void> {
  const { model, machineId, force } = input;
  await runOperation(input, async (ctx) => {
    await ctx.step(`removing machine ${machineId}${force ? ' (forced)' : ''}`, { machine: machineId });
    await provisioning.removeMachine(model, machineId, force);
  });
}
