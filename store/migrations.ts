// Versioned schema migrations. Append new entries; never edit a released one.
// One SQL dialect: every statement runs unchanged on PGlite and on Postgres.
import { type Kysely, type Migration, type MigrationProvider, sql } from 'kysely';
import { m012 } from './migrations/012-app-backups.ts';
import { m013 } from './migrations/013-controller-backups.ts';
import { m014 } from './migrations/014-kubernetes.ts';
import { m015 } from './migrations/015-model-migrations.ts';
import { m016 } from './migrations/016-charm-secrets.ts';
import { m017 } from './migrations/017-unit-sets.ts';
import { SecretBox } from './secret-box.ts';

const m001 = `
CREATE TABLE clouds (
  name text PRIMARY KEY,
  type text NOT NULL CHECK (type IN ('local', 'manual', 'kubernetes')),
  endpoint text,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE credentials (
  cloud text NOT NULL REFERENCES clouds(name) ON DELETE CASCADE,
  name text NOT NULL,
  auth_type text NOT NULL,
  -- secret material, encrypted at rest by the controller's key; never listed by the API
  attributes jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (cloud, name)
);
CREATE TABLE models (
  uuid text PRIMARY KEY,
  name text NOT NULL UNIQUE,
  cloud text NOT NULL REFERENCES clouds(name),
  life text NOT NULL DEFAULT 'alive' CHECK (life IN ('alive', 'dying', 'dead')),
  status text NOT NULL DEFAULT 'pending',
  message text NOT NULL DEFAULT '',
  config jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE machines (
  model_uuid text NOT NULL REFERENCES models(uuid) ON DELETE CASCADE,
  id text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('local', 'ssh', 'pod')),
  address text NOT NULL DEFAULT '',
  host text,
  port integer,
  ssh_user text,
  root_dir text NOT NULL DEFAULT '',
  host_key_fingerprint text,
  hostname text NOT NULL DEFAULT '',
  life text NOT NULL DEFAULT 'alive',
  state text NOT NULL DEFAULT 'pending',
  message text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model_uuid, id)
);
CREATE TABLE charms (
  name text NOT NULL,
  revision integer NOT NULL,
  sha256 text NOT NULL,
  metadata jsonb NOT NULL,
  archive bytea NOT NULL,
  size integer NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, revision),
  UNIQUE (name, sha256)
);
CREATE TABLE applications (
  model_uuid text NOT NULL REFERENCES models(uuid) ON DELETE CASCADE,
  name text NOT NULL,
  charm_name text NOT NULL,
  charm_revision integer NOT NULL,
  config jsonb NOT NULL DEFAULT '{}',
  life text NOT NULL DEFAULT 'alive',
  status text NOT NULL DEFAULT 'unknown',
  message text NOT NULL DEFAULT '',
  workload_version text NOT NULL DEFAULT '',
  leader_settings jsonb NOT NULL DEFAULT '{}',
  next_unit integer NOT NULL DEFAULT 0,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model_uuid, name),
  FOREIGN KEY (charm_name, charm_revision) REFERENCES charms(name, revision)
);
CREATE TABLE units (
  model_uuid text NOT NULL,
  name text NOT NULL,
  application text NOT NULL,
  number integer NOT NULL,
  machine_id text,
  life text NOT NULL DEFAULT 'alive',
  leader boolean NOT NULL DEFAULT false,
  workload_status text NOT NULL DEFAULT 'waiting',
  workload_message text NOT NULL DEFAULT 'waiting for machine',
  agent_status text NOT NULL DEFAULT 'allocating',
  agent_message text NOT NULL DEFAULT '',
  ports jsonb NOT NULL DEFAULT '[]',
  charm_state jsonb NOT NULL DEFAULT '{}',
  installed boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model_uuid, name),
  FOREIGN KEY (model_uuid, application) REFERENCES applications(model_uuid, name) ON DELETE CASCADE
);
CREATE TABLE endpoints (
  model_uuid text NOT NULL,
  application text NOT NULL,
  name text NOT NULL,
  role text NOT NULL CHECK (role IN ('provides', 'requires', 'peer')),
  interface text NOT NULL,
  PRIMARY KEY (model_uuid, application, name),
  FOREIGN KEY (model_uuid, application) REFERENCES applications(model_uuid, name) ON DELETE CASCADE
);
CREATE TABLE integrations (
  model_uuid text NOT NULL REFERENCES models(uuid) ON DELETE CASCADE,
  id integer NOT NULL,
  key text NOT NULL,
  life text NOT NULL DEFAULT 'alive',
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model_uuid, id),
  UNIQUE (model_uuid, key)
);
CREATE TABLE integration_endpoints (
  model_uuid text NOT NULL,
  integration_id integer NOT NULL,
  application text NOT NULL,
  endpoint text NOT NULL,
  PRIMARY KEY (model_uuid, integration_id, application),
  FOREIGN KEY (model_uuid, integration_id) REFERENCES integrations(model_uuid, id) ON DELETE CASCADE
);
CREATE TABLE relation_data (
  model_uuid text NOT NULL,
  integration_id integer NOT NULL,
  -- a unit name (app/0) or an application name
  owner text NOT NULL,
  settings jsonb NOT NULL DEFAULT '{}',
  PRIMARY KEY (model_uuid, integration_id, owner),
  FOREIGN KEY (model_uuid, integration_id) REFERENCES integrations(model_uuid, id) ON DELETE CASCADE
);
CREATE TABLE status_history (
  id serial PRIMARY KEY,
  model_uuid text NOT NULL,
  entity text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('workload', 'agent', 'application', 'machine', 'model')),
  status text NOT NULL,
  message text NOT NULL DEFAULT '',
  data jsonb,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX status_history_entity ON status_history (model_uuid, entity, id);
CREATE TABLE log_entries (
  id serial PRIMARY KEY,
  model_uuid text NOT NULL,
  entity text NOT NULL,
  level text NOT NULL,
  message text NOT NULL,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX log_entries_model ON log_entries (model_uuid, id);
CREATE TABLE operations (
  id serial PRIMARY KEY,
  model_name text,
  kind text NOT NULL,
  target text NOT NULL DEFAULT '',
  state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
  summary text NOT NULL DEFAULT '',
  error text,
  workflow_id text,
  progress jsonb NOT NULL DEFAULT '{}',
  params jsonb NOT NULL DEFAULT '{}',
  created_by text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);
CREATE INDEX operations_model ON operations (model_name, id);
CREATE TABLE users (
  name text PRIMARY KEY,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE tokens (
  id text PRIMARY KEY,
  user_name text NOT NULL REFERENCES users(name),
  name text NOT NULL,
  role text NOT NULL CHECK (role IN ('admin', 'read-only')),
  -- sha256 of the token; the token itself is shown once and never stored
  hash text NOT NULL UNIQUE,
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz
);
CREATE TABLE hook_runs (
  context_id text PRIMARY KEY,
  model_uuid text NOT NULL,
  unit text NOT NULL,
  hook text NOT NULL,
  exit_code integer,
  committed boolean NOT NULL DEFAULT false,
  started_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);
CREATE INDEX hook_runs_unit ON hook_runs (model_uuid, unit);
`;

const m002 = `
-- loopback addresses of local machines are unique per controller host
CREATE SEQUENCE local_machine_seq START 10;
-- the user's key, kept only until the controller's own key is installed on the host
ALTER TABLE machines ADD COLUMN bootstrap_key text;
ALTER TABLE machines ADD COLUMN runtime_hash text;
ALTER TABLE units ADD COLUMN last_hook text NOT NULL DEFAULT '';
CREATE TABLE model_sequences (
  model_uuid text NOT NULL REFERENCES models(uuid) ON DELETE CASCADE,
  name text NOT NULL,
  value integer NOT NULL,
  PRIMARY KEY (model_uuid, name)
);
`;

const m003 = `
-- one machine per SSH endpoint and model (local machines have no host)
CREATE UNIQUE INDEX machines_ssh_endpoint ON machines (model_uuid, host, port);
`;

const m004 = `
-- what the machine reported: the hook's own run time, and its wait for the machine lock
ALTER TABLE hook_runs ADD COLUMN duration_ms integer;
ALTER TABLE hook_runs ADD COLUMN lock_wait_ms integer;
`;

const m005 = `
-- which key seals this store's secrets (an HMAC of a fixed text, not the key):
-- a controller started with another key is refused before it writes anything
CREATE TABLE secret_keys (
  version integer PRIMARY KEY,
  key_check text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
`;

/**
 * Seal the secrets stored in the clear before 005: users' private keys of machines
 * not yet provisioned, credentials' attributes, and the values of applications'
 * `secret` config options (their charm's metadata says which).
 */
async function sealStoredSecrets(db: AnyDb, box: SecretBox): Promise<void> {
  const machines = await db
    .selectFrom('machines')
    .select(['model_uuid', 'id', 'bootstrap_key'])
    .where('bootstrap_key', 'is not', null)
    .execute();
  for (const m of machines) {
    await db
      .updateTable('machines')
      .set({ bootstrap_key: box.sealOnce(m.bootstrap_key) })
      .where('model_uuid', '=', m.model_uuid)
      .where('id', '=', m.id)
      .execute();
  }
  const credentials = await db.selectFrom('credentials').select(['cloud', 'name', 'attributes']).execute();
  for (const c of credentials) {
    await db
      .updateTable('credentials')
      .set({ attributes: JSON.stringify(box.sealAttributes(c.attributes ?? {})) })
      .where('cloud', '=', c.cloud)
      .where('name', '=', c.name)
      .execute();
  }
  const apps = await db
    .selectFrom('applications as a')
    .innerJoin('charms as c', (j) =>
      j.onRef('c.name', '=', 'a.charm_name').onRef('c.revision', '=', 'a.charm_revision'),
    )
    .select(['a.model_uuid', 'a.name', 'a.config', 'c.metadata'])
    .execute();
  for (const a of apps) {
    const options: Record<string, { type?: string }> = a.metadata?.config?.options ?? {};
    const config: Record<string, unknown> = a.config ?? {};
    let changed = false;
    for (const [k, v] of Object.entries(config)) {
      if (options[k]?.type === 'secret' && typeof v === 'string' && !SecretBox.isSealed(v)) {
        config[k] = box.seal(v);
        changed = true;
      }
    }
    if (!changed) continue;
    await db
      .updateTable('applications')
      .set({ config: JSON.stringify(config) })
      .where('model_uuid', '=', a.model_uuid)
      .where('name', '=', a.name)
      .execute();
  }
}

const m006 = `
-- how to start an operation's workflow (its function name and arguments), kept so a
-- controller that died between recording the operation and starting the workflow
-- starts it at its next start. The arguments hold no secret: they are also the
-- workflow's input, in its history.
ALTER TABLE operations ADD COLUMN start jsonb;
CREATE INDEX operations_pending ON operations (id) WHERE state = 'pending';
`;

const m007 = `
-- facts about the controller itself, e.g. that the default model was created once
-- (a start after a failed first start creates it; a start after it was destroyed does not)
CREATE TABLE controller_facts (
  name text PRIMARY KEY,
  value jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now()
);
`;

const m008 = `
-- integrations, made for real (001's tables were never written): relation ids are
-- controller-wide, so an integration across two models has one id both sides use;
-- each endpoint row names its application's own model; each data bag names its
-- owner's model, and carries a version bumped on every commit (what wakes the
-- remote units' relation-changed). A departed unit's bag stays readable for the
-- remote units' relation-departed hooks, and goes with the integration (or the
-- retention schedule, a day after).
DROP TABLE relation_data;
DROP TABLE integration_endpoints;
DROP TABLE integrations;
CREATE SEQUENCE integration_ids START 0 MINVALUE 0;
CREATE TABLE integrations (
  id integer PRIMARY KEY,
  -- the model it was made in (a cross-model integration lives in the consumer's)
  model_uuid text NOT NULL REFERENCES models(uuid) ON DELETE CASCADE,
  -- its endpoints in a canonical order: one integration per pair
  key text NOT NULL UNIQUE,
  interface text NOT NULL,
  -- alive, or dying: its units run departed and broken, then it goes
  life text NOT NULL DEFAULT 'alive',
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE integration_endpoints (
  integration_id integer NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
  model_uuid text NOT NULL,
  application text NOT NULL,
  endpoint text NOT NULL,
  role text NOT NULL CHECK (role IN ('provides', 'requires', 'peer')),
  PRIMARY KEY (integration_id, model_uuid, application)
);
CREATE INDEX integration_endpoints_app ON integration_endpoints (model_uuid, application);
CREATE TABLE relation_data (
  integration_id integer NOT NULL REFERENCES integrations(id) ON DELETE CASCADE,
  model_uuid text NOT NULL,
  -- a unit name (app/0) or an application name
  owner text NOT NULL,
  settings jsonb NOT NULL DEFAULT '{}',
  version integer NOT NULL DEFAULT 1,
  departed_at timestamptz,
  PRIMARY KEY (integration_id, model_uuid, owner)
);
`;

const m009 = `
-- what an action returned (action-set), logged (action-log) and why it failed
-- (action-fail, exit code): written by the hook activity, never in a workflow history
ALTER TABLE operations ADD COLUMN results jsonb;
`;

const m010 = `
-- the charm revision a unit runs, while a rolling refresh has it on another one
-- than its application's (NULL: the application's)
ALTER TABLE units ADD COLUMN charm_revision integer;
`;

// biome-ignore lint/suspicious/noExplicitAny: migrations run before the typed schema exists
type AnyDb = Kysely<any>;

/** What a migration may need besides the database. */
export interface MigrationContext {
  /** Seals secrets at rest (store/secret-box.ts). */
  secrets: SecretBox;
}

/** A migration, or one built from the context (a migration that seals secrets needs the key). */
type MigrationEntry = Migration | ((ctx: MigrationContext) => Migration);

// PGlite's extended protocol takes one statement at a time.
function statements(ddl: string): string[] {
  return ddl
    .split(/;\s*\n/)
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/** A migration that runs DDL, statement by statement. */
function ddlMigration(ddl: string): Migration {
  return {
    async up(db: AnyDb) {
      for (const stmt of statements(ddl)) await sql.raw(stmt).execute(db);
    },
  };
}

export const migrations: Record<string, MigrationEntry> = {
  '001_initial': ddlMigration(m001),
  '002_machines_and_sequences': ddlMigration(m002),
  '003_machine_ssh_endpoint': ddlMigration(m003),
  '004_hook_run_timings': ddlMigration(m004),
  '005_secrets_at_rest': (ctx) => ({
    async up(db: AnyDb) {
      for (const stmt of statements(m005)) await sql.raw(stmt).execute(db);
      await sealStoredSecrets(db, ctx.secrets);
    },
  }),
  '006_operation_start': ddlMigration(m006),
  '007_controller_facts': ddlMigration(m007),
  '008_integrations': ddlMigration(m008),
  '009_action_results': ddlMigration(m009),
  '010_unit_charm_revision': ddlMigration(m010),
  '012_app_backups': m012,
  '013_controller_backups': m013,
  '014_kubernetes': m014,
  '015_model_migrations': m015,
  '016_charm_secrets': m016,
  '017_unit_sets': m017,
};

export class StaticMigrationProvider implements MigrationProvider {
  constructor(private readonly ctx: MigrationContext) {}

  async getMigrations(): Promise<Record<string, Migration>> {
    return Object.fromEntries(
      Object.entries(migrations).map(([name, m]) => [name, typeof m === 'function' ? m(this.ctx) : m]),
    );
  }
}
