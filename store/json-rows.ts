// Reading many rows at once from the model store.
import { type RawBuilder, type SelectQueryBuilder, sql } from 'kysely';
import type { Database } from './schema.ts';
import type { Db } from './store.ts';

export type Jsonified<O> = { [K in keyof O]: O[K] extends Date ? string : O[K] };

/**
 * A select's rows as one JSON array built by the database: a model of 1000 units reads
 * in about a third of the time the same rows take one by one (the embedded store turns
 * each field of each row into a JS value separately). Timestamps come back as strings.
 *
 * Given the select's `columns`, each row travels as a JSON array of them, not an
 * object repeating every column's name: 1000 rows of a dozen columns read in ~60%
 * of the time. The rows come back as objects all the same.
 */
export async function asJsonRows<O, DB = Database, TB extends keyof DB = keyof DB>(
  db: Db,
  query: SelectQueryBuilder<DB, TB, O> | RawBuilder<O>,
  columns?: readonly (keyof O & string)[],
): Promise<Jsonified<O>[]> {
  if (!columns) {
    const { rows } = await sql<{ rows: Jsonified<O>[] }>`
      SELECT coalesce(json_agg(t), '[]'::json) AS rows FROM (${query}) t`.execute(db);
    return rows[0]?.rows ?? [];
  }
  const { rows } = await sql<{ rows: unknown[][] }>`
    SELECT coalesce(json_agg(json_build_array(${sql.join(columns.map((c) => sql.ref(`t.${c}`)))})), '[]'::json) AS rows
    FROM (${query}) t`.execute(db);
  return (rows[0]?.rows ?? []).map((values) => {
    const row: Record<string, unknown> = {};
    for (let i = 0; i < columns.length; i++) row[columns[i]] = values[i];
    return row as Jsonified<O>;
  });
}
