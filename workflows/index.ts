// Every workflow the worker runs. The worker bundles this file.
export { createModelWorkflow, destroyModelWorkflow } from './model-workflows.ts';
