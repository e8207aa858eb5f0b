// Tables of application backups and schedules (migration 012), part of the store's Database type.
import type { ColumnType, Generated, JSONColumnType, Selectable } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
/** A column with a database default: optional on insert. */
type Def<T> = ColumnType<T, T | undefined, T>;

/** One artifact fetched from a unit by its charm's `backup` action, kept in the controller's backup store. */
export interface AppBackupsTable {
  id: Generated<number>;
  model_uuid: string;
  model_name: string;
  application: string;
  /** The unit the backup action ran on (`app/N`). */
  unit: string;
  charm_name: string;
  charm_revision: number;
  /** The backup-application operation that made it (one backup per operation). */
  operation_id: number;
  /** Where the action left the artifact on the unit's machine. */
  path: string;
  /** Bytes (int8: read back with Number()). */
  size: ColumnType<number | string | bigint, number, number>;
  sha256: string;
  /** The schedule whose run made it, if one did. */
  schedule_id: number | null;
  created_at: Timestamp;
}

export type AppScheduleKind = 'backup' | 'refresh';
export type AppScheduleOverlap =
  | 'skip'
  | 'buffer-one'
  | 'buffer-all'
  | 'allow-all'
  | 'cancel-other'
  | 'terminate-other';

/** What a scheduled backup runs with. */
export interface BackupScheduleParams {
  /** `leader`, or a unit number. */
  unit: 'leader' | number;
  /** Params of the backup action (checked against its schema when the schedule was made). */
  params: Record<string, unknown>;
  /** Keep only the newest this many backups the schedule made (absent: all). */
  keep?: number;
}

/** What a scheduled refresh runs with. */
export interface RefreshScheduleParams {
  /** A fixed revision; absent: the charm's newest revision when the run starts. */
  revision?: number;
  maxUnavailable: number;
  gateTimeoutSeconds: number;
  probe?: string;
}

/**
 * A recurring operation on an application: the definition (the Temporal Schedule
 * `schedule_id` runs it; Temporal holds its state: paused, next times, recent actions).
 */
export interface AppSchedulesTable {
  id: number;
  /** The Temporal Schedule's id: `schedule:<model>:<app>:<kind>:<id>`. */
  schedule_id: string;
  model_uuid: string;
  model_name: string;
  application: string;
  kind: AppScheduleKind;
  /** A cron expression, or null when the schedule runs every `interval_seconds`. */
  cron: string | null;
  interval_seconds: number | null;
  /** IANA time zone of the cron expression (null: UTC). */
  timezone: string | null;
  overlap: AppScheduleOverlap;
  params: JSONColumnType<BackupScheduleParams | RefreshScheduleParams, string, string>;
  paused: Def<boolean>;
  note: Def<string>;
  created_by: Def<string>;
  created_at: Timestamp;
}

export type AppScheduleRunState = 'running' | 'succeeded' | 'failed' | 'cancelled' | 'skipped';

/** One run of a schedule: the workflow the Temporal Schedule started, the operation it made, how it ended. */
export interface AppScheduleRunsTable {
  id: Generated<number>;
  schedule_id: number;
  /** The scheduled workflow's id (Temporal appends the scheduled time to the schedule's workflow id). */
  workflow_id: string;
  /** The operation the run made (none when the run was skipped before making one). */
  operation_id: number | null;
  state: Def<AppScheduleRunState>;
  message: Def<string>;
  started_at: Timestamp;
  finished_at: NullableTimestamp;
}

export interface AppBackupsTables {
  app_backups: AppBackupsTable;
  app_schedules: AppSchedulesTable;
  app_schedule_runs: AppScheduleRunsTable;
}

export type AppBackupRow = Selectable<AppBackupsTable>;
export type AppScheduleRow = Selectable<AppSchedulesTable>;
export type AppScheduleRunRow = Selectable<AppScheduleRunsTable>;
