// Retention: prune the store's history tables (store/retention.ts), run by the
// retention schedule.
import { Context } from '@temporalio/activity';
import { type PruneCounts, pruneStore, type RetentionPolicy } from '../store/retention.ts';
import type { ActivityDeps } from './deps.ts';

export function createRetentionActivities({ store }: ActivityDeps) {
  return {
    /** Batched deletes; heartbeats with the counts so far after each batch. */
    async pruneStore(policy: RetentionPolicy): Promise<PruneCounts> {
      const ctx = Context.current();
      return pruneStore(store.db, policy, { onBatch: (counts) => ctx.heartbeat(counts) });
    },
  };
}

export type RetentionActivities = ReturnType<typeof createRetentionActivities>;
