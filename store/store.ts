// The model store: the single source of truth for desired and observed state.
// Embedded PGlite by default; real Postgres when a DATABASE_URL is given.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Kysely, Migrator, PostgresDialect, type Transaction } from 'kysely';
import pg from 'pg';
import { StaticMigrationProvider } from './migrations.ts';
import { PGliteDialect } from './pglite-dialect.ts';
import type { Database } from './schema.ts';
import { SecretBox, SecretKeyError } from './secret-box.ts';
import { RedactingDialect } from './store-error.ts';
import { startUpkeep } from './upkeep.ts';

export type Db = Kysely<Database>;
export type Tx = Transaction<Database>;

export interface StoreOptions {
  /** Postgres connection string; when absent the embedded PGlite store is used. */
  databaseUrl?: string;
  /** Directory of the embedded store (ignored with databaseUrl). Undefined = in memory. */
  dataDir?: string;
  /**
   * The key that seals secrets at rest (made on first start, mode 0600). Default:
   * CHARMFLOW_SECRET_KEY_FILE, else `secret-key` in dataDir; a store in memory
   * without either gets a key of its own for the life of the process.
   */
  secretKeyFile?: string;
}

export interface Store {
  readonly db: Db;
  readonly kind: 'pglite' | 'postgres';
  /** Seals and opens the secrets the store keeps (store/secret-box.ts). */
  readonly secrets: SecretBox;
  close(): Promise<void>;
}

// int8 (count(*), sums) as number rather than string; our values stay far below 2^53.
pg.types.setTypeParser(20, (v) => Number.parseInt(v, 10));

function secretBoxFor(opts: StoreOptions): SecretBox {
  const file =
    opts.secretKeyFile || process.env.CHARMFLOW_SECRET_KEY_FILE || (opts.dataDir && join(opts.dataDir, 'secret-key'));
  if (file) return SecretBox.fromKeyFile(file);
  if (opts.databaseUrl) {
    throw new SecretKeyError(
      'a Postgres model store needs a secret key file shared by every controller process: set CHARMFLOW_SECRET_KEY_FILE or a data dir',
    );
  }
  return SecretBox.ephemeral();
}

export async function openStore(opts: StoreOptions): Promise<Store> {
  let db: Db;
  let kind: Store['kind'];
  if (opts.databaseUrl) {
    const pool = new pg.Pool({ connectionString: opts.databaseUrl, max: 10 });
    // An idle connection the server ends (a restart, a terminated backend, a database
    // dropped as the store closes) is dropped by the pool and made again at the next
    // query; without a listener its error would end the process.
    pool.on('error', (err) => console.error(`charmflow: an idle store connection ended: ${err.message}`));
    db = new Kysely<Database>({ dialect: new RedactingDialect(new PostgresDialect({ pool })) });
    kind = 'postgres';
  } else {
    const { PGlite } = await import('@electric-sql/pglite');
    if (opts.dataDir) {
      mkdirSync(opts.dataDir, { recursive: true });
      if (!existsSync(join(opts.dataDir, 'PG_VERSION'))) await initdbInChild(opts.dataDir);
    }
    // Postgres' defaults (128 MB of shared buffers) are sized for a server, not an
    // embedded store; these keep the controller's memory small.
    const pglite = new PGlite(opts.dataDir, {
      startParams: [
        ...PGlite.defaultStartParams,
        ...['-c', 'shared_buffers=16MB', '-c', 'work_mem=2MB', '-c', 'temp_buffers=2MB', '-c', 'wal_buffers=1MB'],
      ],
    });
    await pglite.waitReady;
    db = new Kysely<Database>({ dialect: new RedactingDialect(new PGliteDialect(pglite)) });
    kind = 'pglite';
  }
  let secrets: SecretBox;
  try {
    secrets = secretBoxFor(opts);
    await migrate(db, secrets);
    await checkSecretKey(db, secrets);
  } catch (err) {
    await db.destroy();
    throw err;
  }
  // a Postgres server analyzes and vacuums by itself; the embedded store needs telling
  const stopUpkeep = kind === 'pglite' ? startUpkeep(db) : async () => {};
  return {
    db,
    kind,
    secrets,
    close: async () => {
      await stopUpkeep();
      await db.destroy();
    },
  };
}

/**
 * PGlite's initdb runs a second Postgres instance whose memory the process keeps
 * after it is closed (about 500 MB). Creating a new store in a short-lived child
 * keeps the controller's own footprint that of an existing store.
 */
async function initdbInChild(dataDir: string): Promise<void> {
  const script = `
    const { PGlite } = await import('@electric-sql/pglite');
    const pg = new PGlite(process.argv[1]);
    await pg.waitReady;
    await pg.close();`;
  await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script, dataDir], {
    cwd: join(import.meta.dirname ?? '.', '..'),
  });
}

export async function migrate(db: Db, secrets: SecretBox): Promise<void> {
  const migrator = new Migrator({ db, provider: new StaticMigrationProvider({ secrets }) });
  const { error, results } = await migrator.migrateToLatest();
  const failed = results?.find((r) => r.status === 'Error');
  if (error || failed) {
    const reason = error instanceof Error ? error.message : String(error ?? failed?.migrationName);
    throw new Error(`model store migration failed: ${reason}`);
  }
}

/**
 * The store remembers which key sealed its secrets; a controller process with another
 * key file (a worker on a host without the shared key) is refused at start, before it
 * seals anything no other process could open.
 */
async function checkSecretKey(db: Db, secrets: SecretBox): Promise<void> {
  const check = secrets.keyCheck();
  await db
    .insertInto('secret_keys')
    .values({ version: secrets.version, key_check: check })
    .onConflict((oc) => oc.column('version').doNothing())
    .execute();
  const row = await db
    .selectFrom('secret_keys')
    .select('key_check')
    .where('version', '=', secrets.version)
    .executeTakeFirstOrThrow();
  if (row.key_check !== check) {
    throw new SecretKeyError(
      "this controller's secret key is not the one that sealed the model store's secrets: give every controller process the same key file (CHARMFLOW_SECRET_KEY_FILE)",
    );
  }
}

/** True when a driver error is a unique-constraint violation (Postgres SQLSTATE 23505). */
export function isUniqueViolation(err: unknown): boolean {
  return typeof err === 'object' && err !== null && (err as { code?: string }).code === '23505';
}
