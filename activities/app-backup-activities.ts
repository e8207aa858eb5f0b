// Activities of app backups (issue 11).
import type { ActivityDeps } from './deps.ts';

export function createAppBackupActivities(_deps: ActivityDeps) {
  return {};
}

export type AppBackupActivities = ReturnType<typeof createAppBackupActivities>;
