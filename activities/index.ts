// All activities, built from their dependencies.
import type { ActivityDeps } from './deps.ts';
import { createModelActivities } from './model-activities.ts';
import { createOperationActivities } from './operation-activities.ts';

export function createActivities(deps: ActivityDeps) {
  return {
    ...createOperationActivities(deps),
    ...createModelActivities(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;
