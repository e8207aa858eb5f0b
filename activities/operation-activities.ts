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

/** One step an operation went through, numbered from 1; the CLI prints each once. */
export interface OperationStep {
  n: number;
  step: string;
  at: string;
}

/** How many of the latest steps an operation's progress keeps. */
export const KEPT_STEPS = 50;

/**
 * The progress to store: the new one, with the step log carried over from the old and the
 * new step appended when it differs from the last (so a retried update adds nothing).
 */
export function withStepLog(
  old: Record<string, unknown>,
  progress: Record<string, unknown>,
  now: Date,
): Record<string, unknown> {
  const steps = Array.isArray(old.steps) ? (old.steps as OperationStep[]) : [];
  const step = progress.step;
  const last = steps.at(-1);
  const next =
    typeof step === 'string' && step !== last?.step
      ? [...steps, { n: (last?.n ?? 0) + 1, step, at: now.toISOString() }].slice(-KEPT_STEPS)
      : steps;
  return { ...progress, steps: next };
}

export function createOperationActivities({ store }: ActivityDeps) {
  return {
    async updateOperation(id: number, update: OperationUpdate): Promise<void> {
      const finished = update.state === 'succeeded' || update.state === 'failed' || update.state === 'cancelled';
      await store.db.transaction().execute(async (tx) => {
        let progress: Record<string, unknown> | undefined;
        if (update.progress !== undefined) {
          // only the step log: the rest of the progress (a big deploy's units) is replaced
          const row = await tx
            .selectFrom('operations')
            .select(sql<OperationStep[] | null>`progress->'steps'`.as('steps'))
            .where('id', '=', id)
            .forUpdate()
            .executeTakeFirst();
          progress = withStepLog({ steps: row?.steps ?? [] }, update.progress, new Date());
        }
        await tx
          .updateTable('operations')
          .set({
            state: update.state,
            updated_at: sql`now()`,
            ...(update.summary !== undefined ? { summary: update.summary } : {}),
            ...(update.error !== undefined ? { error: update.error } : {}),
            ...(progress !== undefined ? { progress: JSON.stringify(progress) } : {}),
            ...(finished ? { finished_at: sql`now()` } : {}),
          })
          .where('id', '=', id)
          .execute();
      });
    },
  };
}

export type OperationActivities = ReturnType<typeof createOperationActivities>;
