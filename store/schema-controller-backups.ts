// Tables of controller backups (migration 013), part of the store's Database type.
import type { ColumnType, JSONColumnType } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Def<T> = ColumnType<T, T | undefined, T>;

/** A controller backup file and what create-backup recorded of it. */
export interface ControllerBackupsTable {
  /** `YYYYMMDD-HHMMSS-xxxx` (UTC, 4 random hex digits). */
  id: string;
  state: Def<'pending' | 'ready' | 'failed'>;
  /** The create-backup operation that writes it. */
  operation_id: ColumnType<number | null, number | null | undefined, number | null>;
  /** Where the file is, in the data dir of the worker that wrote it (`<dataDir>/backups/controller/<id>.cfbackup`). */
  path: Def<string>;
  /** Bytes of the file (bigint: the driver may answer a string; read it with Number()). */
  size: ColumnType<number | string | bigint, number | undefined, number>;
  /** sha256 of the whole file, hex. */
  sha256: Def<string>;
  /** The file's manifest (store/backup.ts BackupManifest): versions, tables and row counts; no secret. */
  manifest: JSONColumnType<Record<string, unknown>, string | undefined, string>;
  error: ColumnType<string | null, string | null | undefined, string | null>;
  created_by: Def<string>;
  created_at: Timestamp;
  finished_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface ControllerBackupsTables {
  controller_backups: ControllerBackupsTable;
}
