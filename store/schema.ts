// Row types of the model store, as Kysely sees them. Mirrors migrations.ts.
import type { ColumnType, Generated, JSONColumnType, Selectable } from 'kysely';
import type { AppBackupsTables } from './schema-app-backups.ts';
import type { CharmSecretsTables } from './schema-charm-secrets.ts';
import type { ControllerBackupsTables } from './schema-controller-backups.ts';
import type { KubernetesTables } from './schema-kubernetes.ts';
import type { ModelMigrationsTables } from './schema-model-migrations.ts';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Json<T extends object | null> = JSONColumnType<T, string, string>;
/** A JSON column with a database default: optional on insert. */
type JsonDef<T extends object | null> = JSONColumnType<T, string | undefined, string>;
/** A column with a database default: optional on insert. */
type Def<T> = ColumnType<T, T | undefined, T>;

export type ConfigValue = string | number | boolean;

export interface CloudsTable {
  name: string;
  type: 'local' | 'manual' | 'kubernetes';
  endpoint: string | null;
  created_at: Timestamp;
}

export interface CredentialsTable {
  cloud: string;
  name: string;
  auth_type: string;
  /** Each value sealed (store/secret-box.ts). */
  attributes: JsonDef<Record<string, string>>;
  created_at: Timestamp;
}

export interface ModelsTable {
  uuid: string;
  name: string;
  cloud: string;
  life: Def<'alive' | 'dying' | 'dead'>;
  status: Def<string>;
  message: Def<string>;
  config: JsonDef<Record<string, ConfigValue>>;
  created_at: Timestamp;
}

export interface MachinesTable {
  model_uuid: string;
  id: string;
  kind: 'local' | 'ssh' | 'pod';
  address: Def<string>;
  host: string | null;
  port: number | null;
  ssh_user: string | null;
  root_dir: Def<string>;
  host_key_fingerprint: string | null;
  hostname: Def<string>;
  life: Def<string>;
  state: Def<string>;
  message: Def<string>;
  /** The user's private key, sealed (store/secret-box.ts); deleted once the controller's own key is installed. Never listed. */
  bootstrap_key: Def<string | null>;
  /** Hash of the hook runtime installed on the machine, to re-install on change. */
  runtime_hash: Def<string | null>;
  /** kind 'pod': the kubernetes cloud and namespace of its pod (the pod is `host`). Migration 014. */
  cloud: Def<string | null>;
  namespace: Def<string | null>;
  created_at: Timestamp;
}

export interface CharmsTable {
  name: string;
  revision: number;
  sha256: string;
  metadata: Json<Record<string, unknown>>;
  archive: Buffer;
  size: number;
  created_at: Timestamp;
}

export interface ApplicationsTable {
  model_uuid: string;
  name: string;
  charm_name: string;
  charm_revision: number;
  config: JsonDef<Record<string, ConfigValue>>;
  life: Def<string>;
  status: Def<string>;
  message: Def<string>;
  workload_version: Def<string>;
  leader_settings: JsonDef<Record<string, string>>;
  next_unit: Def<number>;
  /** Which set of units the application has: a fresh serial from the store whenever it changes (migration 017). */
  unit_set: Def<number>;
  created_at: Timestamp;
}

export interface UnitsTable {
  model_uuid: string;
  name: string;
  application: string;
  number: number;
  machine_id: Def<string | null>;
  life: Def<string>;
  leader: Def<boolean>;
  workload_status: Def<string>;
  workload_message: Def<string>;
  agent_status: Def<string>;
  agent_message: Def<string>;
  ports: JsonDef<string[]>;
  charm_state: JsonDef<Record<string, string>>;
  installed: Def<boolean>;
  /** The charm revision the unit runs during a rolling refresh (null: its application's). */
  charm_revision: ColumnType<number | null, number | null | undefined, number | null>;
  /** The last hook that ran to completion (or failed). */
  last_hook: Def<string>;
  created_at: Timestamp;
}

export interface EndpointsTable {
  model_uuid: string;
  application: string;
  name: string;
  role: 'provides' | 'requires' | 'peer';
  interface: string;
}

export interface IntegrationsTable {
  /** Controller-wide (migration 008): a cross-model integration has one id on both sides. */
  id: number;
  /** The model it was made in. */
  model_uuid: string;
  key: string;
  interface: string;
  life: Def<'alive' | 'dying'>;
  created_at: Timestamp;
}

export interface IntegrationEndpointsTable {
  integration_id: number;
  /** The application's own model (another than the integration's, across models). */
  model_uuid: string;
  application: string;
  endpoint: string;
  role: 'provides' | 'requires' | 'peer';
}

export interface RelationDataTable {
  integration_id: number;
  /** The owner's model. */
  model_uuid: string;
  /** A unit name (`app/0`) or an application name. */
  owner: string;
  settings: JsonDef<Record<string, string>>;
  /** Bumped on every commit that changes the bag. */
  version: Def<number>;
  /** When its unit went: kept for the remote units' relation-departed, then pruned. */
  departed_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface StatusHistoryTable {
  id: Generated<number>;
  model_uuid: string;
  entity: string;
  kind: 'workload' | 'agent' | 'application' | 'machine' | 'model';
  status: string;
  message: Def<string>;
  data: JSONColumnType<Record<string, unknown> | null, string | null | undefined, string | null>;
  at: Timestamp;
}

export interface LogEntriesTable {
  id: Generated<number>;
  model_uuid: string;
  entity: string;
  level: string;
  message: string;
  at: Timestamp;
}

/** What an action run left: Juju's `juju show-operation` fields. */
export interface ActionOutcome {
  status: 'running' | 'completed' | 'failed' | 'cancelled';
  results: Record<string, unknown>;
  log: { at: string; message: string }[];
  message: string;
}

export type OperationState = 'pending' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** How an operation's workflow is started: never a secret (the arguments are the workflow's input). */
export interface OperationStart {
  workflow: string;
  args: unknown[];
}

export interface OperationsTable {
  id: Generated<number>;
  model_name: string | null;
  kind: string;
  target: Def<string>;
  state: Def<OperationState>;
  summary: Def<string>;
  error: Def<string | null>;
  workflow_id: Def<string | null>;
  progress: JsonDef<Record<string, unknown>>;
  params: JsonDef<Record<string, unknown>>;
  /** An action's outcome (migration 009): results, log lines, status, failure message. */
  results: ColumnType<ActionOutcome | null, string | null | undefined, string | null>;
  /** The workflow and its arguments, to start it again after a crash (migration 006). */
  start: ColumnType<OperationStart | null, string | null | undefined, string | null>;
  created_by: Def<string>;
  created_at: Timestamp;
  updated_at: Timestamp;
  finished_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface ControllerFactsTable {
  name: string;
  value: JsonDef<Record<string, unknown>>;
  created_at: Timestamp;
}

export interface UsersTable {
  name: string;
  created_at: Timestamp;
}

export interface TokensTable {
  id: string;
  user_name: string;
  name: string;
  role: 'admin' | 'read-only';
  hash: string;
  created_at: Timestamp;
  revoked_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
}

export interface HookRunsTable {
  context_id: string;
  model_uuid: string;
  unit: string;
  hook: string;
  exit_code: Def<number | null>;
  committed: Def<boolean>;
  started_at: Timestamp;
  finished_at: ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
  /** The hook's own run time on the machine. */
  duration_ms: Def<number | null>;
  /** How long it queued for the machine lock first. */
  lock_wait_ms: Def<number | null>;
}

export interface SecretKeysTable {
  version: number;
  /** HMAC of a fixed text under the key: tells a different key apart without revealing it. */
  key_check: string;
  created_at: Timestamp;
}

export interface ModelSequencesTable {
  model_uuid: string;
  name: string;
  value: number;
}

export interface Database
  extends AppBackupsTables,
    CharmSecretsTables,
    ControllerBackupsTables,
    ModelMigrationsTables,
    KubernetesTables {
  model_sequences: ModelSequencesTable;
  clouds: CloudsTable;
  credentials: CredentialsTable;
  models: ModelsTable;
  machines: MachinesTable;
  charms: CharmsTable;
  applications: ApplicationsTable;
  units: UnitsTable;
  endpoints: EndpointsTable;
  integrations: IntegrationsTable;
  integration_endpoints: IntegrationEndpointsTable;
  relation_data: RelationDataTable;
  status_history: StatusHistoryTable;
  log_entries: LogEntriesTable;
  operations: OperationsTable;
  controller_facts: ControllerFactsTable;
  users: UsersTable;
  tokens: TokensTable;
  hook_runs: HookRunsTable;
  secret_keys: SecretKeysTable;
}

export type ModelRow = Selectable<ModelsTable>;
export type OperationRow = Selectable<OperationsTable>;
export type MachineRow = Selectable<MachinesTable>;
export type ApplicationRow = Selectable<ApplicationsTable>;
export type UnitRow = Selectable<UnitsTable>;
export type TokenRow = Selectable<TokensTable>;
