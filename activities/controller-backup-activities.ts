// Activities of controller backups (issue 11).
import type { ActivityDeps } from './deps.ts';

export function createControllerBackupActivities(_deps: ActivityDeps) {
  return {};
}

export type ControllerBackupActivities = ReturnType<typeof createControllerBackupActivities>;
