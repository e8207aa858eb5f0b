// Per-model counters (machine ids, ...), allocated atomically inside the caller's transaction.
import { sql } from 'kysely';
import type { Db, Tx } from './store.ts';

/** The next value of a model's sequence: 0 the first time, then one more each call. */
export async function nextModelSequence(db: Db | Tx, modelUuid: string, name: string): Promise<number> {
  return reserveModelSequence(db, modelUuid, name, 1);
}

/**
 * The first of `count` consecutive values of a model's sequence, taken in one
 * statement: the same values `count` calls of nextModelSequence would have given.
 */
export async function reserveModelSequence(
  db: Db | Tx,
  modelUuid: string,
  name: string,
  count: number,
): Promise<number> {
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`cannot reserve ${count} values of a sequence`);
  const row = await db
    .insertInto('model_sequences')
    .values({ model_uuid: modelUuid, name, value: count - 1 })
    .onConflict((oc) =>
      oc.columns(['model_uuid', 'name']).doUpdateSet({ value: sql<number>`model_sequences.value + ${count}` }),
    )
    .returning('value')
    .executeTakeFirstOrThrow();
  return row.value - count + 1;
}
