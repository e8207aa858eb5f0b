// Tables of migrate-model (migration 015), part of the store's Database type.
import type { ColumnType } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Def<T> = ColumnType<T, T | undefined, T>;

/** A model moving from this controller to another (the source's record). */
export interface ModelMigrationsTable {
  /** The migrate-model operation. */
  operation_id: number;
  model_uuid: string;
  model: string;
  /** The target controller's API, without credentials. */
  target_url: string;
  /** The target's admin token, sealed; '' once the migration ended. */
  token: Def<string>;
  state: Def<'running' | 'done' | 'failed'>;
  error: ColumnType<string | null, string | null | undefined, string | null>;
  created_by: Def<string>;
  created_at: Timestamp;
  finished_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface ModelMigrationsTables {
  model_migrations: ModelMigrationsTable;
}
