// Tables of charm secrets (migration 016), part of the store's Database type.
import type { ColumnType } from 'kysely';

type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type Def<T> = ColumnType<T, T | undefined, T>;
type Nullable<T> = ColumnType<T | null, T | null | undefined, T | null>;

/** A secret a charm added (secret-add): its owner and metadata. */
export interface CharmSecretsTable {
  /** The bare id (20 characters of base32hex); charms see `secret:<id>`. */
  id: string;
  model_uuid: string;
  owner_kind: 'application' | 'unit';
  /** The owning application's name, or the owning unit's. */
  owner: string;
  /** The owner's label ('' for none). */
  label: Def<string>;
  description: Def<string>;
  /** RFC 3339, UTC. */
  expire_at: Nullable<string>;
  rotate_policy: Nullable<string>;
  latest_revision: Def<number>;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface CharmSecretRevisionsTable {
  secret_id: string;
  revision: number;
  /** The content (a JSON map), sealed (store/secret-box.ts). Never listed. */
  content: string;
  /** The owner has been sent secret-remove for it (no consumer tracks it any more). */
  obsolete_told: Def<boolean>;
  created_at: Timestamp;
}

/** Access to a secret, granted on a relation to an application or one of its units. */
export interface CharmSecretGrantsTable {
  secret_id: string;
  integration_id: number;
  model_uuid: string;
  application: string;
  /** '' for every unit of the application. */
  unit: Def<string>;
}

/** What a consumer unit tracks of a secret, and the label it gave it. */
export interface CharmSecretConsumersTable {
  secret_id: string;
  model_uuid: string;
  unit: string;
  revision: Nullable<number>;
  label: Def<string>;
}

export interface CharmSecretsTables {
  charm_secrets: CharmSecretsTable;
  charm_secret_revisions: CharmSecretRevisionsTable;
  charm_secret_grants: CharmSecretGrantsTable;
  charm_secret_consumers: CharmSecretConsumersTable;
}
