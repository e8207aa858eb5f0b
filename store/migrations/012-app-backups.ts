// Migration 012: application backups (artifacts fetched from units) and schedules.
import { type Kysely, type Migration, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations run before the typed schema exists
type AnyDb = Kysely<any>;

const ddl: string[] = [
  // one artifact per backup-application operation; the file is <data dir>/backups/apps/<model uuid>/<id>
  `CREATE TABLE app_backups (
    id serial PRIMARY KEY,
    model_uuid text NOT NULL,
    model_name text NOT NULL,
    application text NOT NULL,
    unit text NOT NULL,
    charm_name text NOT NULL,
    charm_revision integer NOT NULL,
    operation_id integer NOT NULL UNIQUE,
    path text NOT NULL,
    size bigint NOT NULL CHECK (size >= 0),
    sha256 text NOT NULL,
    schedule_id integer,
    created_at timestamptz NOT NULL DEFAULT now()
  )`,
  'CREATE INDEX app_backups_application ON app_backups (model_uuid, application, id)',
  // the id is taken (nextval) before the Temporal Schedule is made, whose id names it
  `CREATE TABLE app_schedules (
    id integer PRIMARY KEY,
    schedule_id text NOT NULL UNIQUE,
    model_uuid text NOT NULL,
    model_name text NOT NULL,
    application text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('backup', 'refresh')),
    cron text,
    interval_seconds integer CHECK (interval_seconds > 0),
    timezone text,
    overlap text NOT NULL,
    params jsonb NOT NULL DEFAULT '{}',
    paused boolean NOT NULL DEFAULT false,
    note text NOT NULL DEFAULT '',
    created_by text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (interval_seconds IS NULL))
  )`,
  'CREATE SEQUENCE app_schedules_id_seq OWNED BY app_schedules.id',
  'CREATE INDEX app_schedules_application ON app_schedules (model_uuid, application)',
  `CREATE TABLE app_schedule_runs (
    id serial PRIMARY KEY,
    schedule_id integer NOT NULL REFERENCES app_schedules(id) ON DELETE CASCADE,
    workflow_id text NOT NULL UNIQUE,
    operation_id integer,
    state text NOT NULL DEFAULT 'running'
      CHECK (state IN ('running', 'succeeded', 'failed', 'cancelled', 'skipped')),
    message text NOT NULL DEFAULT '',
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
  )`,
  'CREATE INDEX app_schedule_runs_schedule ON app_schedule_runs (schedule_id, id)',
];

export const m012: Migration = {
  async up(db: AnyDb) {
    for (const stmt of ddl) await sql.raw(stmt).execute(db);
  },
};
