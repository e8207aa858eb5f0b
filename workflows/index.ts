// Every workflow the worker runs. The worker bundles this file.

export { runActionWorkflow } from './action-workflows.ts';
export * from './app-backup-workflows.ts';
export { configWorkflow, deployWorkflow, removeWorkflow, resolveWorkflow } from './application-workflows.ts';
export * from './controller-backup-workflows.ts';
export { integrateWorkflow, removeIntegrationWorkflow } from './integration-workflows.ts';
export { addMachineWorkflow, removeMachineWorkflow } from './machine-workflows.ts';
export { migrateWorkflow } from './migrate-workflows.ts';
export * from './model-migration-workflows.ts';
export { createModelWorkflow, destroyModelWorkflow } from './model-workflows.ts';
export { refreshWorkflow } from './refresh-workflows.ts';
export { retentionWorkflow } from './retention.ts';
export { unitAgentWorkflow } from './unit-agent.ts';
