// Migration 016: Juju 3 secrets that charms own and share (secret-add, secret-grant,
// secret-get). Content is sealed at rest (store/secret-box.ts), one row per revision.
import { type Kysely, type Migration, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations run before the typed schema exists
type AnyDb = Kysely<any>;

const ddl: string[] = [
  `CREATE TABLE charm_secrets (
    id text PRIMARY KEY,
    model_uuid text NOT NULL REFERENCES models(uuid) ON DELETE CASCADE,
    owner_kind text NOT NULL CHECK (owner_kind IN ('application', 'unit')),
    -- the application's name, or the unit's
    owner text NOT NULL,
    label text NOT NULL DEFAULT '',
    description text NOT NULL DEFAULT '',
    expire_at text,
    rotate_policy text,
    latest_revision integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
  )`,
  `CREATE INDEX charm_secrets_owner ON charm_secrets (model_uuid, owner)`,
  `CREATE TABLE charm_secret_revisions (
    secret_id text NOT NULL REFERENCES charm_secrets(id) ON DELETE CASCADE,
    revision integer NOT NULL,
    -- the content as a JSON map, sealed
    content text NOT NULL,
    -- the owner was told (secret-remove) that no consumer tracks it any more
    obsolete_told boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (secret_id, revision)
  )`,
  // access goes with the relation it was granted on
  `CREATE TABLE charm_secret_grants (
    secret_id text NOT NULL REFERENCES charm_secrets(id) ON DELETE CASCADE,
    integration_id integer NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
    model_uuid text NOT NULL,
    application text NOT NULL,
    -- '' for every unit of the application
    unit text NOT NULL DEFAULT '',
    PRIMARY KEY (secret_id, model_uuid, application, unit)
  )`,
  `CREATE INDEX charm_secret_grants_app ON charm_secret_grants (model_uuid, application)`,
  // what each consumer unit tracks (secret-get, --refresh) and the label it gave
  `CREATE TABLE charm_secret_consumers (
    secret_id text NOT NULL REFERENCES charm_secrets(id) ON DELETE CASCADE,
    model_uuid text NOT NULL,
    unit text NOT NULL,
    revision integer,
    label text NOT NULL DEFAULT '',
    PRIMARY KEY (secret_id, model_uuid, unit),
    FOREIGN KEY (model_uuid, unit) REFERENCES units(model_uuid, name) ON DELETE CASCADE
  )`,
];

export const m016: Migration = {
  async up(db: AnyDb) {
    for (const stmt of ddl) await sql.raw(stmt).execute(db);
  },
};
