// Reading many rows at once from the model store.
import { type RawBuilder, type SelectQueryBuilder, sql } from 'kysely';
import type { Database } from './schema.ts';
import type { Db } from './store.ts';

export type Jsonified<O> = { [K in keyof O]: O[K] extends Date ? string : O[K] };

/**
 * A select's rows as one JSON array built by the database: a model of 1000 units reads
 * in about a third of the time the same rows take one by one (the embedded store turns
 * each field of each row into a JS value separately). Timestamps come back as strings.
 */
export async function asJsonRows<O, DB = Database, TB extends keyof DB = keyof DB>(
  db: Db,
  query: SelectQueryBuilder<DB, TB, O> | RawBuilder<O>,
): Promise<Jsonified<O>[]> {
  const { rows } = await sql<{ rows: Jsonified<O>[] }>`
    SELECT coalesce(json_agg(t), '[]'::json) AS rows FROM (${query}) t`.execute(db);
  return rows[0]?.rows ?? [];
}
