// Migration 014: Kubernetes clouds. A pod machine names its cloud and namespace
// (its pod is `host`); an application on a kubernetes model keeps the image of its
// charm container.
import { type Kysely, type Migration, sql } from 'kysely';

// biome-ignore lint/suspicious/noExplicitAny: migrations run before the typed schema exists
type AnyDb = Kysely<any>;

const ddl: string[] = [
  'ALTER TABLE machines ADD COLUMN cloud text',
  'ALTER TABLE machines ADD COLUMN namespace text',
  `CREATE TABLE kubernetes_applications (
    model_uuid text NOT NULL,
    application text NOT NULL,
    charm_image text NOT NULL,
    -- the application's address: its Service's cluster IP, once the Service exists
    address text,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_uuid, application),
    FOREIGN KEY (model_uuid, application) REFERENCES applications(model_uuid, name) ON DELETE CASCADE
  )`,
];

export const m014: Migration = {
  async up(db: AnyDb) {
    for (const stmt of ddl) await sql.raw(stmt).execute(db);
  },
};
