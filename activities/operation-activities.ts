// Recording operation progress in the model store.
import { sql } from 'kysely';
import type { OperationState } from '../store/schema.ts';
import type { ActivityDeps } from './deps.ts';

export interface OperationUpdate {
  state: OperationState;
  summary?: string;
  error?: string;
  progress?: Record<string, unknown>;
}

export function createOperationActivities({ store }: ActivityDeps) {
  return {
    async updateOperation(id: number, update: OperationUpdate): Promise<void> {
      const finished = update.state === 'succeeded' || update.state === 'failed' || update.state === 'cancelled';
      await store.db
        .updateTable('operations')
        .set({
          state: update.state,
          updated_at: sql`now()`,
          ...(update.summary !== undefined ? { summary: update.summary } : {}),
          ...(update.error !== undefined ? { error: update.error } : {}),
          ...(update.progress !== undefined ? { progress: JSON.stringify(update.progress) } : {}),
          ...(finished ? { finished_at: sql`now()` } : {}),
        })
        .where('id', '=', id)
        .execute();
    },
  };
}

export type OperationActivities = ReturnType<typeof createOperationActivities>;
