// Controller backups: the whole model store (models, machines, applications, units,
// relations, the charm store with its archives, credentials, tokens, history) in one
// file, and its restore into this or a fresh controller.
//
// The file is a gzip stream of JSON lines. The first line is the manifest:
//
//   {"format":"charmflow-controller-backup","formatVersion":1,"id":…,"controllerVersion":…,
//    "createdAt":…,"store":"pglite","migrations":[…],"models":[…],
//    "tables":[{"name":"units","rows":3},…],"payload":{"bytes":N,"sha256":"…"}}
//
// and every line after it is the payload, whose byte count and sha256 the manifest
// gives: first the keys (`{"secretKey":{"version":1,"key":"<base64>"}}`, and
// `{"sshKey":{"privateKey":…,"publicKey":…}}`), then one line per row,
// `{"t":"<table>","r":<the row as Postgres' row_to_json writes it>}` (bytea as
// `\x<hex>`, timestamps in ISO 8601 with microseconds, jsonb as JSON), so every value
// comes back exactly as it was. Secrets stay sealed as the store keeps them; the key
// that opens them travels in the file, so a backup is as sensitive as the data dir.
//
// A restore reads and checks the whole file before it changes anything (gzip,
// manifest, format version, payload size and checksum, every line, row counts, that
// every sealed value opens with the backup's key), then adds what this controller
// lacks, in one transaction: the models it does not have (with their machines,
// applications, units, relations, status history, log and hook runs), the charm
// revisions, clouds, credentials, users, tokens and controller facts it does not
// have. Sealed values are opened with the backup's key and sealed again with this
// controller's, whose key file never changes.
import { createDecipheriv, createHash, createHmac } from 'node:crypto';
import { once } from 'node:events';
import { createReadStream, createWriteStream } from 'node:fs';
import { rename, rm, stat } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip, gunzipSync } from 'node:zlib';
import { type RawBuilder, sql } from 'kysely';
import { migrations as knownMigrations } from './migrations.ts';
import type { SecretBox } from './secret-box.ts';
import type { Db, Tx } from './store.ts';

export const BACKUP_FORMAT = 'charmflow-controller-backup';
export const BACKUP_FORMAT_VERSION = 1;
/** What `create-backup` names its files: `<id>.cfbackup`. */
export const BACKUP_SUFFIX = '.cfbackup';

/** Tables never written: the backups' own records, and the migrator's bookkeeping (its list is in the manifest). */
const NOT_DUMPED = new Set(['controller_backups', 'kysely_migration', 'kysely_migration_lock']);

/**
 * The tables a restore brings back, in the order their rows go in (foreign keys).
 * Others in the file are read and checked, but not restored: `operations` (the old
 * controller's history, whose workflows live in its Temporal), `secret_keys` (this
 * controller keeps its key) and the tables of features that restore does not know.
 */
export const RESTORED_TABLES = [
  'clouds',
  'credentials',
  'charms',
  'users',
  'tokens',
  'controller_facts',
  'models',
  'model_sequences',
  'machines',
  'applications',
  'kubernetes_applications',
  'units',
  'endpoints',
  'integrations',
  'integration_endpoints',
  'relation_data',
  'charm_secrets',
  'charm_secret_revisions',
  'charm_secret_grants',
  'charm_secret_consumers',
  'status_history',
  'log_entries',
  'hook_runs',
] as const;

export interface BackupManifest {
  format: string;
  /** `model`: one model's export for migrate-model (no users, tokens or controller facts); absent: the whole store. */
  scope?: 'controller' | 'model';
  formatVersion: number;
  id: string;
  controllerVersion: string;
  createdAt: string;
  store: string;
  /** The store's migrations when the backup was made. */
  migrations: string[];
  /** The models in it, for people (the rows are in the payload). */
  models: { name: string; uuid: string; cloud: string; applications: number; units: number; machines: number }[];
  tables: { name: string; rows: number }[];
  payload: { bytes: number; sha256: string };
}

/** The keys a backup carries. */
export interface BackupKeys {
  /** The key that sealed the store's secrets (store/secret-box.ts), and its version. */
  secretKey: { version: number; key: Buffer };
  /** The controller's SSH identity, which SSH machines let in. */
  sshKey?: { privateKey: string; publicKey: string };
}

/** A backup that cannot be read (400), is too large (413), or does not fit this controller (409). */
export class BackupError extends Error {
  override readonly name = 'BackupError';
  constructor(
    readonly statusCode: 400 | 409 | 413,
    message: string,
    readonly field = 'backup',
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------- sealed values

const SEALED_RE = /^cfsec:v(\d+):([A-Za-z0-9+/]+={0,2})$/;
const KEY_CHECK_TEXT = 'charmflow secret key check';

/**
 * The backup's secret key: opens what it sealed (the `cfsec:v1:` format of
 * store/secret-box.ts, AES-256-GCM), and names itself as the store's secret_keys
 * table does, so a restore can tell it is the key that sealed the backup's store.
 */
export class BackupKey {
  constructor(
    private readonly key: Buffer,
    readonly version: number,
  ) {
    if (key.length !== 32) throw new BackupError(400, `the backup's secret key is ${key.length} bytes, not 32`);
  }

  keyCheck(): string {
    return createHmac('sha256', this.key).update(KEY_CHECK_TEXT).digest('base64');
  }

  /** The plaintext of a sealed value; throws when it does not open. */
  open(value: string): string {
    const m = SEALED_RE.exec(value);
    if (!m) return value;
    if (Number(m[1]) !== this.version) {
      throw new Error(`sealed with key version ${m[1]}, the backup has version ${this.version}`);
    }
    const raw = Buffer.from(m[2], 'base64');
    if (raw.length < 28) throw new Error('a sealed value is truncated');
    const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, 12));
    decipher.setAuthTag(raw.subarray(12, 28));
    try {
      return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
    } catch {
      throw new Error("a sealed value does not open with the backup's key (altered)");
    }
  }
}

function isSealed(v: unknown): v is string {
  return typeof v === 'string' && v.startsWith('cfsec:') && SEALED_RE.test(v);
}

/** Every sealed string in a value (a row, a JSON column), replaced by `f` of it. */
function mapSealed(value: unknown, f: (sealed: string) => string): unknown {
  if (isSealed(value)) return f(value);
  if (Array.isArray(value)) return value.map((v) => mapSealed(v, f));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = mapSealed(v, f);
    return out;
  }
  return value;
}

// ---------------------------------------------------------------- writing

type Conn = Db | Tx;

async function tableColumns(db: Conn): Promise<Map<string, Set<string>>> {
  const { rows } = await sql<{ table_name: string; column_name: string }>`
    SELECT c.table_name, c.column_name FROM information_schema.columns c
    JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name
    WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'
    ORDER BY c.table_name, c.ordinal_position`.execute(db);
  const out = new Map<string, Set<string>>();
  for (const r of rows) {
    const cols = out.get(r.table_name) ?? new Set<string>();
    out.set(r.table_name, cols);
    cols.add(r.column_name);
  }
  return out;
}

export interface WriteBackupOptions {
  /** The file to write (mode 0600); written aside and renamed into place. */
  file: string;
  id: string;
  controllerVersion: string;
  storeKind: string;
  keys: BackupKeys;
  /** Called as each table is read (an activity heartbeats). */
  onTable?: (table: string) => void;
  /**
   * Only this model (migrate-model): its rows, the charm revisions its applications
   * and units use, its cloud and that cloud's credentials, and the secret key's
   * check; no users, tokens, controller facts or other models.
   */
  model?: string;
}

/** The tables a model's export holds: what a restore brings back, but the controller's own. */
const MODEL_EXPORT_TABLES = new Set<string>([
  ...RESTORED_TABLES.filter((t) => t !== 'users' && t !== 'tokens' && t !== 'controller_facts'),
  'secret_keys',
]);

/** Which rows of `table` a model's export holds (null: none of the table). */
function modelRows(table: string, cols: Set<string>, uuid: string): RawBuilder<unknown> | null {
  if (!MODEL_EXPORT_TABLES.has(table)) return null;
  switch (table) {
    case 'models':
      return sql`WHERE t.uuid = ${uuid}`;
    case 'clouds':
      return sql`WHERE t.name = (SELECT cloud FROM models WHERE uuid = ${uuid})`;
    case 'credentials':
      return sql`WHERE t.cloud = (SELECT cloud FROM models WHERE uuid = ${uuid})`;
    case 'charms':
      return sql`WHERE (t.name, t.revision) IN (
        SELECT charm_name, charm_revision FROM applications WHERE model_uuid = ${uuid}
        UNION SELECT a.charm_name, u.charm_revision FROM units u
          JOIN applications a ON a.model_uuid = u.model_uuid AND a.name = u.application
          WHERE u.model_uuid = ${uuid} AND u.charm_revision IS NOT NULL)`;
    case 'secret_keys':
      return sql``;
    case 'charm_secret_revisions':
      return sql`WHERE t.secret_id IN (SELECT id FROM charm_secrets WHERE model_uuid = ${uuid})`;
    default:
      return cols.has('model_uuid') ? sql`WHERE t.model_uuid = ${uuid}` : null;
  }
}

export interface WrittenBackup {
  manifest: BackupManifest;
  /** Bytes of the file. */
  size: number;
  /** sha256 of the file, hex. */
  sha256: string;
}

/**
 * Writes the store to `file`: the rows are read in one transaction (a consistent
 * snapshot; on the embedded store other statements wait meanwhile) into a payload
 * file beside it, hashed as they go; then the manifest and the payload are gzipped
 * into the file.
 */
export async function writeBackup(db: Db, opts: WriteBackupOptions): Promise<WrittenBackup> {
  const createdAt = new Date().toISOString();
  const payloadFile = `${opts.file}.payload.tmp`;
  const gzFile = `${opts.file}.tmp`;
  const out = createWriteStream(payloadFile, { mode: 0o600 });
  const hash = createHash('sha256');
  let bytes = 0;
  const write = async (line: string) => {
    const buf = Buffer.from(`${line}\n`, 'utf8');
    hash.update(buf);
    bytes += buf.length;
    if (!out.write(buf)) await once(out, 'drain');
  };
  try {
    const { secretKey, sshKey } = opts.keys;
    await write(JSON.stringify({ secretKey: { version: secretKey.version, key: secretKey.key.toString('base64') } }));
    if (sshKey) await write(JSON.stringify({ sshKey }));
    const counts: BackupManifest['tables'] = [];
    let migrationNames: string[] = [];
    let models: BackupManifest['models'] = [];
    await db.transaction().execute(async (tx) => {
      await sql`SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY`.execute(tx);
      migrationNames = (
        await sql<{ name: string }>`SELECT name FROM kysely_migration ORDER BY name`.execute(tx)
      ).rows.map((r) => r.name);
      const only = opts.model === undefined ? sql`` : sql`WHERE m.uuid = ${opts.model}`;
      const { rows: modelList } = await sql<BackupManifest['models'][number]>`
        SELECT m.name, m.uuid, m.cloud,
          (SELECT count(*)::int FROM applications a WHERE a.model_uuid = m.uuid) AS applications,
          (SELECT count(*)::int FROM units u WHERE u.model_uuid = m.uuid) AS units,
          (SELECT count(*)::int FROM machines x WHERE x.model_uuid = m.uuid) AS machines
        FROM models m ${only} ORDER BY m.name`.execute(tx);
      models = modelList;
      if (opts.model !== undefined && models.length === 0) throw new Error(`model ${opts.model} is not in the store`);
      const columns = await tableColumns(tx);
      for (const [table, cols] of columns) {
        if (NOT_DUMPED.has(table)) continue;
        const where = opts.model === undefined ? sql`` : modelRows(table, cols, opts.model);
        if (where === null) continue;
        opts.onTable?.(table);
        const order = cols.has('id') ? sql`ORDER BY t.id` : sql``;
        const { rows } = await sql<{ j: string }>`
          SELECT row_to_json(t)::text AS j FROM ${sql.table(table)} t ${where} ${order}`.execute(tx);
        const prefix = `{"t":${JSON.stringify(table)},"r":`;
        for (const r of rows) await write(`${prefix}${r.j}}`);
        counts.push({ name: table, rows: rows.length });
      }
    });
    out.end();
    await once(out, 'finish');
    const manifest: BackupManifest = {
      format: BACKUP_FORMAT,
      ...(opts.model === undefined ? {} : { scope: 'model' as const }),
      formatVersion: BACKUP_FORMAT_VERSION,
      id: opts.id,
      controllerVersion: opts.controllerVersion,
      createdAt,
      store: opts.storeKind,
      migrations: migrationNames,
      models,
      tables: counts,
      payload: { bytes, sha256: hash.digest('hex') },
    };
    const manifestLine = Buffer.from(`${JSON.stringify(manifest)}\n`, 'utf8');
    async function* content() {
      yield manifestLine;
      for await (const chunk of createReadStream(payloadFile)) yield chunk as Buffer;
    }
    await pipeline(Readable.from(content()), createGzip(), createWriteStream(gzFile, { mode: 0o600 }));
    const size = (await stat(gzFile)).size;
    const sha256 = await fileSha256(gzFile);
    await rename(gzFile, opts.file);
    return { manifest, size, sha256 };
  } finally {
    out.destroy();
    await rm(payloadFile, { force: true });
    await rm(gzFile, { force: true });
  }
}

// ---------------------------------------------------------------- reading

export interface ReadLimits {
  /** The most bytes the file may unpack to. */
  maxUnpackedBytes: number;
}

export type BackupRow = Record<string, unknown>;

export interface ParsedBackup {
  manifest: BackupManifest;
  /** Rows by table, in the file's order. */
  rows: Map<string, BackupRow[]>;
  key: BackupKey;
  sshKey?: { privateKey: string; publicKey: string };
}

function str(v: unknown): v is string {
  return typeof v === 'string';
}

/** The manifest's shape, checked field by field (a 400 names the field). */
function checkManifest(m: unknown): BackupManifest {
  const bad = (field: string, why: string): never => {
    throw new BackupError(400, `the backup's manifest is invalid: ${field} ${why}`, `manifest.${field}`);
  };
  if (m === null || typeof m !== 'object' || Array.isArray(m)) return bad('', 'is not an object');
  const o = m as Record<string, unknown>;
  if (o.format !== BACKUP_FORMAT) {
    throw new BackupError(
      400,
      `not a charmflow controller backup: its manifest names format ${JSON.stringify(o.format)}, not "${BACKUP_FORMAT}"`,
      'manifest.format',
    );
  }
  if (typeof o.formatVersion !== 'number' || !Number.isInteger(o.formatVersion))
    bad('formatVersion', 'is not a whole number');
  if ((o.formatVersion as number) > BACKUP_FORMAT_VERSION || (o.formatVersion as number) < 1) {
    throw new BackupError(
      400,
      `the backup has format version ${o.formatVersion}; this controller reads version ${BACKUP_FORMAT_VERSION} (a newer charmflow made it?)`,
      'manifest.formatVersion',
    );
  }
  for (const f of ['id', 'controllerVersion', 'createdAt', 'store'] as const) if (!str(o[f])) bad(f, 'is not a string');
  if (!Array.isArray(o.migrations) || !o.migrations.every(str)) bad('migrations', 'is not a list of names');
  if (!Array.isArray(o.models)) bad('models', 'is not a list');
  if (
    !Array.isArray(o.tables) ||
    !o.tables.every(
      (t) =>
        t &&
        typeof t === 'object' &&
        str((t as { name: unknown }).name) &&
        Number.isInteger((t as { rows: unknown }).rows),
    )
  ) {
    bad('tables', 'is not a list of {name, rows}');
  }
  const p = o.payload as { bytes?: unknown; sha256?: unknown } | undefined;
  if (!p || !Number.isInteger(p.bytes) || !str(p.sha256) || !/^[0-9a-f]{64}$/.test(p.sha256)) {
    bad('payload', 'does not give the payload bytes and sha256');
  }
  return o as unknown as BackupManifest;
}

/**
 * Reads and checks a whole backup file; nothing is changed anywhere. A 400 names
 * what is wrong: not gzip, truncated, corrupt, a manifest or format this controller
 * does not read, a checksum or row count that does not match, a line that is not
 * JSON, a sealed value the backup's key does not open.
 */
export function readBackup(file: Buffer, limits: ReadLimits): ParsedBackup {
  if (file.length === 0) throw new BackupError(400, 'the backup is empty (0 bytes)');
  if (file.length < 2 || file[0] !== 0x1f || file[1] !== 0x8b) {
    throw new BackupError(400, 'not a charmflow controller backup: the file is not gzip data');
  }
  let data: Buffer;
  try {
    data = gunzipSync(file, { maxOutputLength: limits.maxUnpackedBytes });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ERR_BUFFER_TOO_LARGE' || err instanceof RangeError) {
      throw new BackupError(413, `the backup unpacks to more than ${limits.maxUnpackedBytes} bytes (the limit)`);
    }
    if (e.code === 'Z_BUF_ERROR') {
      throw new BackupError(
        400,
        `the backup is truncated: its gzip stream ends early, after ${file.length} bytes (was the file cut short in a copy or download?)`,
      );
    }
    throw new BackupError(400, `the backup is corrupt: its gzip data does not unpack (${e.message})`);
  }
  const nl = data.indexOf(0x0a);
  if (nl < 0) throw new BackupError(400, 'the backup is truncated: it has no manifest line');
  let manifestJson: unknown;
  try {
    manifestJson = JSON.parse(data.toString('utf8', 0, nl));
  } catch {
    throw new BackupError(400, 'not a charmflow controller backup: its first line is not a JSON manifest');
  }
  const manifest = checkManifest(manifestJson);
  const payload = data.subarray(nl + 1);
  if (payload.length !== manifest.payload.bytes) {
    throw new BackupError(
      400,
      `the backup is truncated or corrupt: its payload is ${payload.length} bytes, the manifest says ${manifest.payload.bytes}`,
      'payload',
    );
  }
  const sha = createHash('sha256').update(payload).digest('hex');
  if (sha !== manifest.payload.sha256) {
    throw new BackupError(
      400,
      `the backup is corrupt: its payload's sha256 is ${sha}, the manifest says ${manifest.payload.sha256}`,
      'payload',
    );
  }
  const known = new Set(Object.keys(knownMigrations));
  const unknown = manifest.migrations.filter((m) => !known.has(m));
  if (unknown.length > 0) {
    throw new BackupError(
      400,
      `the backup was made by a newer charmflow: its store has migration(s) ${unknown.join(', ')}, unknown to this controller`,
      'manifest.migrations',
    );
  }

  const rows = new Map<string, BackupRow[]>();
  let secretKey: { version: number; key: string } | undefined;
  let sshKey: ParsedBackup['sshKey'];
  let line = 0;
  for (let at = 0; at < payload.length; ) {
    line++;
    const end = payload.indexOf(0x0a, at);
    if (end < 0) throw new BackupError(400, `the backup is corrupt: payload line ${line} does not end`, 'payload');
    let rec: Record<string, unknown>;
    try {
      rec = JSON.parse(payload.toString('utf8', at, end));
    } catch {
      throw new BackupError(400, `the backup is corrupt: payload line ${line} is not JSON`, 'payload');
    }
    at = end + 1;
    if (rec && typeof rec === 'object' && str(rec.t) && rec.r && typeof rec.r === 'object') {
      const list = rows.get(rec.t) ?? [];
      rows.set(rec.t, list);
      list.push(rec.r as BackupRow);
    } else if (rec && typeof rec === 'object' && rec.secretKey && typeof rec.secretKey === 'object') {
      const k = rec.secretKey as { version?: unknown; key?: unknown };
      if (!Number.isInteger(k.version) || !str(k.key)) {
        throw new BackupError(400, "the backup's secret key line is invalid", 'payload.secretKey');
      }
      secretKey = { version: k.version as number, key: k.key };
    } else if (rec && typeof rec === 'object' && rec.sshKey && typeof rec.sshKey === 'object') {
      const k = rec.sshKey as { privateKey?: unknown; publicKey?: unknown };
      if (!str(k.privateKey) || !str(k.publicKey)) {
        throw new BackupError(400, "the backup's SSH key line is invalid", 'payload.sshKey');
      }
      sshKey = { privateKey: k.privateKey, publicKey: k.publicKey };
    } else {
      throw new BackupError(400, `the backup is corrupt: payload line ${line} is neither a row nor a key`, 'payload');
    }
  }
  for (const t of manifest.tables) {
    const n = rows.get(t.name)?.length ?? 0;
    if (n !== t.rows) {
      throw new BackupError(
        400,
        `the backup has ${n} row(s) of table ${t.name}, its manifest says ${t.rows}`,
        'payload',
      );
    }
  }
  for (const t of rows.keys()) {
    if (!manifest.tables.some((m) => m.name === t)) {
      throw new BackupError(400, `the backup has rows of table ${t}, which its manifest does not list`, 'payload');
    }
  }
  if (!secretKey)
    throw new BackupError(400, 'the backup has no secret key: its secrets could not be opened', 'payload');
  const key = new BackupKey(Buffer.from(secretKey.key, 'base64'), secretKey.version);
  const check = (rows.get('secret_keys') ?? []).find((r) => r.version === key.version);
  if (check && check.key_check !== key.keyCheck()) {
    throw new BackupError(400, "the backup's secret key is not the one that sealed its store's secrets", 'payload');
  }
  // every sealed value opens with the backup's key: a restore could re-seal them all
  for (const [table, list] of rows) {
    for (const r of list) {
      try {
        mapSealed(r, (v) => {
          key.open(v);
          return v;
        });
      } catch (err) {
        throw new BackupError(400, `a secret in table ${table} does not open: ${(err as Error).message}`, 'payload');
      }
    }
  }
  return { manifest, rows, key, sshKey };
}

// ---------------------------------------------------------------- restoring

export interface RestoreOptions {
  /** Restore only these models (by name); each must be restorable. Default: every model this controller lacks. */
  models?: string[];
}

export interface RestorePlan {
  /** Models to restore; `replaces`: the uuid of an empty model of the same name here, which goes. */
  models: { name: string; uuid: string; cloud: string; replaces?: string }[];
  /** Models of the backup left out, and why. */
  kept: { model: string; reason: string }[];
  /** Charm revisions to add. */
  charms: { name: string; revision: number }[];
  /** Charm revisions of the backup not added (another content holds the revision here), not used by what is restored. */
  charmsKept: { charm: string; reason: string }[];
  /** Relation ids restored. */
  integrations: number[];
  /** Integrations left out: they join a restored model to one that is not restored. */
  integrationsKept: { id: number; reason: string }[];
  /** Tables in the file that a restore does not bring back, with their row counts. */
  notRestored: { table: string; rows: number }[];
  /** The backup's key differs from this controller's: its secrets are sealed again with this one's. */
  resealed: boolean;
}

const S = (v: unknown) => String(v);

/**
 * What a restore would do here, or a 409 naming what stands in the way: a model
 * named explicitly that exists here, a model of the backup's name here that is
 * another model and not empty, a charm revision restored applications need that
 * holds other content here, a relation id in use here. Changes nothing.
 */
export async function planRestore(
  db: Conn,
  backup: ParsedBackup,
  secrets: SecretBox,
  opts: RestoreOptions = {},
): Promise<RestorePlan> {
  const rowsOf = (t: string) => backup.rows.get(t) ?? [];
  // every column of a table restored must exist here (a backup from a newer charmflow
  // with the same migrations cannot have others, but a hand-edited file might)
  const columns = await tableColumns(db);
  for (const t of RESTORED_TABLES) {
    const list = rowsOf(t);
    if (list.length === 0) continue;
    const cols = columns.get(t);
    if (!cols) throw new BackupError(400, `table ${t} of the backup does not exist in this controller's store`);
    for (const k of Object.keys(list[0])) {
      if (!cols.has(k)) throw new BackupError(400, `column ${t}.${k} of the backup is unknown to this controller`);
    }
  }
  const backupModels = rowsOf('models');
  if (opts.models) {
    for (const name of opts.models) {
      if (!backupModels.some((m) => m.name === name)) {
        throw new BackupError(400, `model "${name}" is not in the backup`, 'querystring.models');
      }
    }
  }
  const here = await db.selectFrom('models').select(['uuid', 'name', 'life']).execute();
  const plan: RestorePlan = {
    models: [],
    kept: [],
    charms: [],
    charmsKept: [],
    integrations: [],
    integrationsKept: [],
    notRestored: [],
    resealed: backup.key.keyCheck() !== secrets.keyCheck(),
  };
  for (const m of backupModels) {
    const name = S(m.name);
    const uuid = S(m.uuid);
    const named = opts.models?.includes(name) ?? false;
    if (opts.models && !named) {
      plan.kept.push({ model: name, reason: 'not asked for' });
      continue;
    }
    if (m.life !== 'alive') {
      if (named) throw new BackupError(409, `model "${name}" was being destroyed when the backup was made`);
      plan.kept.push({ model: name, reason: 'it was being destroyed when the backup was made' });
      continue;
    }
    const same = here.find((h) => h.uuid === uuid);
    if (same) {
      if (named) {
        throw new BackupError(409, `model "${name}" exists here; destroy it first (charmflow destroy-model ${name})`);
      }
      plan.kept.push({ model: name, reason: 'it is still here' });
      continue;
    }
    const other = here.find((h) => h.name === name);
    if (other) {
      if (other.life !== 'alive' || !(await isEmptyModel(db, other.uuid))) {
        throw new BackupError(
          409,
          `model "${name}" exists here and is another model than the backup's, with applications or machines; destroy it first (charmflow destroy-model ${name}), or leave it out (--model)`,
        );
      }
      plan.models.push({ name, uuid, cloud: S(m.cloud), replaces: other.uuid });
      continue;
    }
    plan.models.push({ name, uuid, cloud: S(m.cloud) });
  }
  const restored = new Set(plan.models.map((m) => m.uuid));

  // charm revisions: those this controller lacks are added; one whose revision or content
  // is taken here by other content is a conflict only if a restored application needs it
  const needed = new Set<string>();
  for (const a of rowsOf('applications')) {
    if (restored.has(S(a.model_uuid))) needed.add(`${a.charm_name}:${a.charm_revision}`);
  }
  for (const u of rowsOf('units')) {
    if (restored.has(S(u.model_uuid)) && u.charm_revision !== null && u.charm_revision !== undefined) {
      const app = rowsOf('applications').find((a) => a.model_uuid === u.model_uuid && a.name === u.application);
      if (app) needed.add(`${app.charm_name}:${u.charm_revision}`);
    }
  }
  const charmsHere = await db.selectFrom('charms').select(['name', 'revision', 'sha256']).execute();
  for (const c of rowsOf('charms')) {
    const ref = `${c.name}:${c.revision}`;
    const byRev = charmsHere.find((h) => h.name === c.name && h.revision === c.revision);
    const bySha = charmsHere.find((h) => h.name === c.name && h.sha256 === c.sha256);
    if (byRev && byRev.sha256 === c.sha256) continue;
    const clash = byRev
      ? `charm ${c.name} revision ${c.revision} is other content here`
      : bySha
        ? `charm ${c.name} revision ${c.revision} of the backup is revision ${bySha.revision} here`
        : null;
    if (clash === null) {
      plan.charms.push({ name: S(c.name), revision: Number(c.revision) });
    } else if (needed.has(ref)) {
      throw new BackupError(409, `${clash}, and restored applications need it`);
    } else {
      plan.charmsKept.push({ charm: ref, reason: clash });
    }
  }

  // integrations: those whose every end is in a restored model keep their relation ids
  const ends = new Map<number, BackupRow[]>();
  for (const e of rowsOf('integration_endpoints')) {
    const id = Number(e.integration_id);
    ends.set(id, [...(ends.get(id) ?? []), e]);
  }
  const idsHere = new Set((await db.selectFrom('integrations').select('id').execute()).map((r) => r.id));
  for (const i of rowsOf('integrations')) {
    const id = Number(i.id);
    const models = (ends.get(id) ?? []).map((e) => S(e.model_uuid));
    const touches = restored.has(S(i.model_uuid)) || models.some((m) => restored.has(m));
    if (!touches) continue;
    const outside = models.filter((m) => !restored.has(m));
    if (!restored.has(S(i.model_uuid)) || outside.length > 0) {
      const names = [...new Set(outside)].map((u) => backupModels.find((m) => m.uuid === u)?.name ?? u);
      plan.integrationsKept.push({
        id,
        reason: `it joins a restored model to model ${names.join(', ') || S(i.model_uuid)}, which is not restored; integrate them again`,
      });
      continue;
    }
    if (idsHere.has(id)) throw new BackupError(409, `relation id ${id} (${S(i.key)}) of the backup is in use here`);
    plan.integrations.push(id);
  }

  const restoredTables = new Set<string>(RESTORED_TABLES);
  for (const t of backup.manifest.tables) {
    if (!restoredTables.has(t.name) && t.rows > 0) plan.notRestored.push({ table: t.name, rows: t.rows });
  }
  return plan;
}

async function isEmptyModel(db: Conn, uuid: string): Promise<boolean> {
  const { rows } = await sql<{ n: number }>`
    SELECT (SELECT count(*) FROM applications WHERE model_uuid = ${uuid})
      + (SELECT count(*) FROM machines WHERE model_uuid = ${uuid})
      + (SELECT count(*) FROM integration_endpoints WHERE model_uuid = ${uuid}) AS n`.execute(db);
  return Number(rows[0]?.n ?? 0) === 0;
}

/** Rows go in in batches of about this much JSON (each its own statement). */
const BATCH_BYTES = 4 * 1024 * 1024;
const BATCH_ROWS = 1000;

/**
 * Inserts rows as they are in the file: Postgres reads each value back from its JSON
 * form by the column's own type (json_populate_recordset), so bytea, timestamps and
 * jsonb come back exactly. `omit`: columns left to their defaults (serial ids).
 */
async function insertRows(
  tx: Tx,
  table: string,
  rows: BackupRow[],
  opts: { omit?: string[]; ignoreConflicts?: boolean } = {},
): Promise<void> {
  if (rows.length === 0) return;
  const cols = Object.keys(rows[0]).filter((c) => !opts.omit?.includes(c));
  const list = sql.join(cols.map((c) => sql.ref(c)));
  const run = async (batch: string[]) => {
    const json = `[${batch.join(',')}]`;
    const conflict: RawBuilder<unknown> = opts.ignoreConflicts ? sql`ON CONFLICT DO NOTHING` : sql``;
    await sql`
      INSERT INTO ${sql.table(table)} (${list})
      SELECT ${list} FROM json_populate_recordset(NULL::${sql.table(table)}, ${json}::json)
      ${conflict}`.execute(tx);
  };
  let batch: string[] = [];
  let size = 0;
  for (const r of rows) {
    const j = JSON.stringify(r);
    if (batch.length > 0 && (size + j.length > BATCH_BYTES || batch.length >= BATCH_ROWS)) {
      await run(batch);
      batch = [];
      size = 0;
    }
    batch.push(j);
    size += j.length;
  }
  if (batch.length > 0) await run(batch);
}

/** `127.<net>.<hi>.<lo>` → the local_machine_seq value it was made from. */
function localSeqOf(address: unknown): number {
  const m = /^127\.\d{1,3}\.(\d{1,3})\.(\d{1,3})$/.exec(S(address));
  return m ? Number(m[1]) * 256 + Number(m[2]) : 0;
}

/**
 * Writes the plan: in the caller's transaction, so a failure changes nothing. An
 * empty model the plan replaces goes first; SSH machines get the backup's SSH key
 * as their bootstrap key (sealed), so their next provisioning installs this
 * controller's key with it (a fresh controller has another key).
 */
export async function applyRestore(tx: Tx, backup: ParsedBackup, plan: RestorePlan, secrets: SecretBox): Promise<void> {
  const reseal = (row: BackupRow): BackupRow =>
    plan.resealed ? (mapSealed(row, (v) => secrets.seal(backup.key.open(v))) as BackupRow) : row;
  const all = (t: string) => (backup.rows.get(t) ?? []).map(reseal);
  const models = new Set(plan.models.map((m) => m.uuid));
  const inModels = (t: string, column = 'model_uuid') => all(t).filter((r) => models.has(S(r[column])));

  for (const m of plan.models) {
    if (!m.replaces) continue;
    for (const t of ['status_history', 'log_entries', 'hook_runs'] as const) {
      await tx.deleteFrom(t).where('model_uuid', '=', m.replaces).execute();
    }
    await tx.deleteFrom('models').where('uuid', '=', m.replaces).execute();
  }
  await insertRows(tx, 'clouds', all('clouds'), { ignoreConflicts: true });
  await insertRows(tx, 'credentials', all('credentials'), { ignoreConflicts: true });
  const charms = new Set(plan.charms.map((c) => `${c.name}:${c.revision}`));
  const charmRows = all('charms').filter((c) => charms.has(`${c.name}:${c.revision}`));
  // one statement per archive: they can be large
  for (const c of charmRows) await insertRows(tx, 'charms', [c]);
  await insertRows(tx, 'users', all('users'), { ignoreConflicts: true });
  await insertRows(tx, 'tokens', all('tokens'), { ignoreConflicts: true });
  await insertRows(tx, 'controller_facts', all('controller_facts'), { ignoreConflicts: true });
  await insertRows(
    tx,
    'models',
    all('models').filter((m) => models.has(S(m.uuid))),
  );
  await insertRows(tx, 'model_sequences', inModels('model_sequences'));
  const sshKey = backup.sshKey ? secrets.seal(backup.sshKey.privateKey) : null;
  const machines = inModels('machines').map((m) =>
    m.kind === 'ssh' && (m.bootstrap_key === null || m.bootstrap_key === undefined) && sshKey
      ? { ...m, bootstrap_key: sshKey }
      : m,
  );
  await insertRows(tx, 'machines', machines);
  await insertRows(tx, 'applications', inModels('applications'));
  await insertRows(tx, 'kubernetes_applications', inModels('kubernetes_applications'));
  await insertRows(tx, 'units', inModels('units'));
  await insertRows(tx, 'endpoints', inModels('endpoints'));
  const ids = new Set(plan.integrations);
  await insertRows(
    tx,
    'integrations',
    all('integrations').filter((i) => ids.has(Number(i.id))),
  );
  const ofIntegrations = (t: string) => all(t).filter((r) => ids.has(Number(r.integration_id)));
  await insertRows(tx, 'integration_endpoints', ofIntegrations('integration_endpoints'));
  await insertRows(tx, 'relation_data', ofIntegrations('relation_data'));
  // charms' own secrets (secret-add): their revisions, sealed as all secrets are;
  // grants go with the relations restored
  const charmSecrets = inModels('charm_secrets');
  const secretIds = new Set(charmSecrets.map((r) => S(r.id)));
  await insertRows(tx, 'charm_secrets', charmSecrets);
  await insertRows(
    tx,
    'charm_secret_revisions',
    all('charm_secret_revisions').filter((r) => secretIds.has(S(r.secret_id))),
  );
  await insertRows(
    tx,
    'charm_secret_grants',
    ofIntegrations('charm_secret_grants').filter((r) => secretIds.has(S(r.secret_id))),
  );
  await insertRows(
    tx,
    'charm_secret_consumers',
    inModels('charm_secret_consumers').filter((r) => secretIds.has(S(r.secret_id))),
  );
  // history keeps its order, under ids of this store
  await insertRows(tx, 'status_history', inModels('status_history'), { omit: ['id'] });
  await insertRows(tx, 'log_entries', inModels('log_entries'), { omit: ['id'] });
  await insertRows(tx, 'hook_runs', inModels('hook_runs'), { ignoreConflicts: true });

  // sequences: what this store hands out next is past everything restored
  const maxId = Math.max(-1, ...plan.integrations);
  if (maxId >= 0) {
    await sql`SELECT setval('integration_ids', GREATEST((SELECT last_value FROM integration_ids), ${maxId}::bigint))`.execute(
      tx,
    );
  }
  const maxLocal = Math.max(0, ...machines.filter((m) => m.kind === 'local').map((m) => localSeqOf(m.address)));
  if (maxLocal > 0) {
    await sql`SELECT setval('local_machine_seq', GREATEST((SELECT last_value FROM local_machine_seq), ${maxLocal}::bigint))`.execute(
      tx,
    );
  }
}

/** sha256 of a file, hex (download-backup's check, tests). */
export async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

/**
 * Removes a model's rows and nothing else (no hook runs, no machine is touched): an
 * import aborted on a migration's target, or a model that moved to another controller.
 */
export async function removeModelRows(tx: Tx, uuid: string): Promise<void> {
  for (const t of ['status_history', 'log_entries', 'hook_runs'] as const) {
    await tx.deleteFrom(t).where('model_uuid', '=', uuid).execute();
  }
  await tx.deleteFrom('integrations').where('model_uuid', '=', uuid).execute();
  await tx.deleteFrom('models').where('uuid', '=', uuid).execute();
}
