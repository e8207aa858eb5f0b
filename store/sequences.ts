// Per-model counters (machine ids, ...), allocated atomically inside the caller's transaction.
import { sql } from 'kysely';
import type { Db, Tx } from './store.ts';

/** The next value of a model's sequence: 0 the first time, then one more each call. */
export async function nextModelSequence(db: Db | Tx, modelUuid: string, name: string): Promise<number> {
  const row = await db
    .insertInto('model_sequences')
    .values({ model_uuid: modelUuid, name, value: 0 })
    .onConflict((oc) =>
      oc.columns(['model_uuid', 'name']).doUpdateSet({ value: sql<number>`model_sequences.value + 1` }),
    )
    .returning('value')
    .executeTakeFirstOrThrow();
  return row.value;
}
