// All activities, built from their dependencies.
import { createAppBackupActivities } from './app-backup-activities.ts';
import { createControllerBackupActivities } from './controller-backup-activities.ts';
import { createDeployActivities } from './deploy-activities.ts';
import type { ActivityDeps } from './deps.ts';
import { createHookActivities } from './hook-activities.ts';
import { createMachineActivities } from './machine-activities.ts';
import { createModelActivities } from './model-activities.ts';
import { createModelMigrationActivities } from './model-migration-activities.ts';
import { createOperationActivities } from './operation-activities.ts';
import { createRefreshActivities } from './refresh-activities.ts';
import { createRelationActivities } from './relation-activities.ts';
import { createRetentionActivities } from './retention-activities.ts';
import { createUnitActivities } from './unit-activities.ts';

export function createActivities(deps: ActivityDeps) {
  return {
    ...createOperationActivities(deps),
    ...createModelActivities(deps),
    ...createMachineActivities(deps),
    ...createHookActivities(deps),
    ...createUnitActivities(deps),
    ...createDeployActivities(deps),
    ...createRetentionActivities(deps),
    ...createRelationActivities(deps),
    ...createRefreshActivities(deps),
    ...createAppBackupActivities(deps),
    ...createControllerBackupActivities(deps),
    ...createModelMigrationActivities(deps),
  };
}

export type Activities = ReturnType<typeof createActivities>;
