// Charms in the model store, with revisions. A revision is named by its content
// (contentHash): the same content uploaded again is the same revision, new
// content for a name gets the next one. The stored archive is the normalized,
// deterministic zip (packCharm), never the bytes as uploaded.
import { sql } from 'kysely';
import { type Db, isUniqueViolation, type Tx } from '../store/store.ts';
import { type CharmFile, loadCharm, packCharm, readCharmZip, UNBOUNDED_ZIP_LIMITS } from './charm-archive.ts';
import type { CharmMeta } from './metadata.ts';

export interface AddedCharm {
  name: string;
  revision: number;
  /** contentHash of the charm's files: equal for equal content, however it was packed. */
  sha256: string;
  /** Size of the stored (normalized) archive. */
  size: number;
  /** False when this content was already stored as `revision`. */
  created: boolean;
}

export interface StoredCharm {
  name: string;
  revision: number;
  sha256: string;
  size: number;
  createdAt: Date;
  meta: CharmMeta;
  files: CharmFile[];
}

export interface CharmSummary {
  name: string;
  /** Every stored revision, ascending. */
  revisions: number[];
  latest: number;
  /** The latest revision's summary. */
  summary: string;
}

/** Attempts before giving up on concurrent uploads racing for the same next revision. */
const MAX_ATTEMPTS = 5;

/**
 * Validate and store a `.charm` archive. Throws CharmValidationError (naming the
 * file and field at fault) for an invalid charm, storing nothing. `inTx` runs in
 * the same transaction as a new revision's insert (to record the operation with it).
 */
export async function addCharm(
  db: Db,
  archive: Buffer,
  inTx?: (tx: Tx, added: AddedCharm) => Promise<void>,
): Promise<AddedCharm> {
  const loaded = await loadCharm(archive);
  const packed = await packCharm(loaded.files);
  const name = loaded.meta.name;
  for (let attempt = 1; ; attempt++) {
    try {
      return await db.transaction().execute(async (tx) => {
        const existing = await tx
          .selectFrom('charms')
          .select(['revision', 'size'])
          .where('name', '=', name)
          .where('sha256', '=', loaded.hash)
          .executeTakeFirst();
        if (existing) {
          const added = { name, revision: existing.revision, sha256: loaded.hash, size: existing.size, created: false };
          await inTx?.(tx, added);
          return added;
        }
        const { max } = await tx
          .selectFrom('charms')
          .select((eb) => eb.fn.max<number | null>('revision').as('max'))
          .where('name', '=', name)
          .executeTakeFirstOrThrow();
        const revision = (max ?? 0) + 1;
        await tx
          .insertInto('charms')
          .values({
            name,
            revision,
            sha256: loaded.hash,
            metadata: JSON.stringify(loaded.meta),
            archive: packed,
            size: packed.length,
          })
          .execute();
        const added = { name, revision, sha256: loaded.hash, size: packed.length, created: true };
        await inTx?.(tx, added);
        return added;
      });
    } catch (err) {
      // Another upload took this revision (or stored this content) first: look again.
      if (isUniqueViolation(err) && attempt < MAX_ATTEMPTS) continue;
      throw err;
    }
  }
}

/** One revision (the latest when none is given), unpacked; undefined when unknown. */
export async function getCharm(db: Db, name: string, revision?: number): Promise<StoredCharm | undefined> {
  let q = db.selectFrom('charms').selectAll().where('name', '=', name);
  q = revision === undefined ? q.orderBy('revision', 'desc').limit(1) : q.where('revision', '=', revision);
  const row = await q.executeTakeFirst();
  if (!row) return undefined;
  // Checked against the limits when uploaded; lowering them later must not lock a stored revision out.
  return { ...charmInfo(row), files: await readCharmZip(row.archive, UNBOUNDED_ZIP_LIMITS) };
}

/** A revision's metadata without its archive; undefined when unknown. */
export async function getCharmInfo(
  db: Db,
  name: string,
  revision?: number,
): Promise<Omit<StoredCharm, 'files'> | undefined> {
  let q = db
    .selectFrom('charms')
    .select(['name', 'revision', 'sha256', 'size', 'created_at', 'metadata'])
    .where('name', '=', name);
  q = revision === undefined ? q.orderBy('revision', 'desc').limit(1) : q.where('revision', '=', revision);
  const row = await q.executeTakeFirst();
  return row ? charmInfo(row) : undefined;
}

function charmInfo(row: {
  name: string;
  revision: number;
  sha256: string;
  size: number;
  created_at: Date;
  metadata: Record<string, unknown>;
}): Omit<StoredCharm, 'files'> {
  return {
    name: row.name,
    revision: row.revision,
    sha256: row.sha256,
    size: row.size,
    createdAt: row.created_at,
    meta: row.metadata as unknown as CharmMeta,
  };
}

/** Every charm with its revisions, by name. Archives are never read. */
export async function listCharms(db: Db): Promise<CharmSummary[]> {
  const rows = await db
    .selectFrom('charms')
    .select(['name', 'revision'])
    .select(sql<string | null>`metadata->>'summary'`.as('summary'))
    .orderBy('name')
    .orderBy('revision')
    .execute();
  const byName = new Map<string, CharmSummary>();
  for (const r of rows) {
    let c = byName.get(r.name);
    if (!c) {
      c = { name: r.name, revisions: [], latest: r.revision, summary: '' };
      byName.set(r.name, c);
    }
    c.revisions.push(r.revision);
    c.latest = r.revision;
    c.summary = r.summary ?? '';
  }
  return [...byName.values()];
}
