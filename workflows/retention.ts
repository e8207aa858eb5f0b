// Retention: one run of the retention schedule prunes the store's old history.
import { proxyActivities } from '@temporalio/workflow';
import type { RetentionActivities } from '../activities/retention-activities.ts';
import type { PruneCounts, RetentionPolicy } from '../store/retention.ts';

const acts = proxyActivities<RetentionActivities>({
  startToCloseTimeout: '1 hour',
  // a batch is one short statement: silence this long means the worker is gone
  heartbeatTimeout: '5 minutes',
  retry: { initialInterval: '10 seconds', maximumInterval: '5 minutes', maximumAttempts: 5 },
});

export async function retentionWorkflow(policy: RetentionPolicy): Promise<PruneCounts> {
  return acts.pruneStore(policy);
}
