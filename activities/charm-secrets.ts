// Juju 3 secrets of charms: what a hook is told of the secrets its unit owns or has
// been granted, applying what the hook did to them (only after exit 0, in the
// hook's commit), and the hooks that follow (secret-changed for consumers of a new
// revision, secret-remove for the owner of a revision nobody tracks any more).
//
// Content is sealed at rest (store/secret-box.ts) and opened only here, into the
// hook's own context. What the hook writes travels back sealed under a key made
// for that hook alone (hookSecretKey), which leaves the machine with the context.
import { createHmac, timingSafeEqual } from 'node:crypto';
import { Context, log } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import { type RawBuilder, sql } from 'kysely';
import type { HookContext, SecretOp } from '../charm/hook-protocol.ts';
import type { SecretBox } from '../store/secret-box.ts';
import type { Db, Tx } from '../store/store.ts';
import { enqueueSignal, type UnitEvent } from '../workflows/messages.ts';
import { onUnitAgent } from './unit-agents.ts';

/** Who the hook runs for. */
export interface SecretsSubject {
  modelUuid: string;
  application: string;
  unit: string;
  leader: boolean;
}

const HOOK_SEALED = 'cfhk1:';

/** The key a hook's tools seal secret content with: the same for every retry of the execution. */
export function hookSecretKey(box: SecretBox, contextId: string): Buffer {
  return box.derive(`hook secrets ${contextId}`);
}

function hookKeys(key: Buffer) {
  return {
    enc: createHmac('sha256', key).update('charmflow hook secrets enc').digest(),
    mac: createHmac('sha256', key).update('charmflow hook secrets mac').digest(),
  };
}

/** HMAC-SHA256 in counter mode: the keystream the hook tools (stdlib Python) can make too. */
function keystreamXor(key: Buffer, nonce: Buffer, data: Buffer): Buffer {
  const out = Buffer.alloc(data.length);
  for (let off = 0, counter = 0n; off < data.length; counter++) {
    const ctr = Buffer.alloc(8);
    ctr.writeBigUInt64BE(counter);
    const block = createHmac('sha256', key)
      .update(Buffer.concat([nonce, ctr]))
      .digest();
    for (let i = 0; i < block.length && off < data.length; i++, off++) out[off] = data[off] ^ block[i];
  }
  return out;
}

/** Opens content a hook tool sealed (cf_hook_tool.seal_content). */
export function openHookContent(key: Buffer, sealed: string): Record<string, string> {
  if (!sealed.startsWith(HOOK_SEALED)) throw new Error('secret content from the hook is not sealed');
  const raw = Buffer.from(sealed.slice(HOOK_SEALED.length), 'base64');
  if (raw.length < 32) throw new Error('sealed secret content from the hook is truncated');
  const { enc, mac } = hookKeys(key);
  const nonce = raw.subarray(0, 16);
  const ct = raw.subarray(16, raw.length - 16);
  const tag = raw.subarray(raw.length - 16);
  const want = createHmac('sha256', mac)
    .update(Buffer.concat([nonce, ct]))
    .digest()
    .subarray(0, 16);
  if (!timingSafeEqual(want, tag)) throw new Error('sealed secret content from the hook does not verify');
  const parsed: unknown = JSON.parse(keystreamXor(enc, nonce, ct).toString('utf8'));
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('secret content is not a map');
  return Object.fromEntries(Object.entries(parsed).map(([k, v]) => [k, String(v)]));
}

interface SecretRow {
  id: string;
  owner_kind: 'application' | 'unit';
  label: string;
  description: string;
  expire_at: string | null;
  rotate_policy: string | null;
  latest_revision: number;
  owned: boolean;
  tracked: number | null;
  consumer_label: string | null;
  revisions: number[] | null;
  latest_content: string | null;
  tracked_content: string | null;
  access: { target: string; relation: number }[] | null;
}

const open = (box: SecretBox, sealed: string | null): Record<string, string> | null =>
  sealed === null ? null : (JSON.parse(box.open(sealed)) as Record<string, string>);

/**
 * Whether the secret `s` (charm_secrets s) is one a unit's hooks are told of: owned by
 * its application or by the unit itself, or granted to them. The unit is named by
 * values or by column references (`sql.ref`): the one test of both the secrets a hook
 * reads and of whether it has any to read.
 */
export function secretSeenBy(model: unknown, application: unknown, unit: unknown): RawBuilder<boolean> {
  return sql<boolean>`((s.model_uuid = ${model} AND s.owner IN (${application}, ${unit}))
      OR EXISTS (SELECT 1 FROM charm_secret_grants g WHERE g.secret_id = s.id
        AND g.model_uuid = ${model} AND g.application = ${application} AND g.unit IN ('', ${unit})))`;
}

/**
 * What a hook is told of secrets: the ones its unit (or application) owns, with
 * their latest content, and the ones granted to it, with the revision it tracks
 * and the latest; the per-hook sealing key; and the secret a secret hook is about.
 */
export async function secretsContext(
  db: Db,
  box: SecretBox,
  who: SecretsSubject,
  contextId: string,
  event?: UnitEvent['secret'],
  /** False when the unit is known to own and be granted no secret: nothing to read. */
  any = true,
): Promise<Pick<HookContext, 'secrets' | 'secretKey' | 'secretEvent'>> {
  const { modelUuid: m, application: app, unit } = who;
  const { rows } =
    !any && !event
      ? { rows: [] as SecretRow[] }
      : await sql<SecretRow>`
    SELECT s.id, s.owner_kind, s.label, s.description, s.expire_at, s.rotate_policy, s.latest_revision,
      (s.model_uuid = ${m} AND ((s.owner_kind = 'application' AND s.owner = ${app})
        OR (s.owner_kind = 'unit' AND s.owner = ${unit}))) AS owned,
      c.revision AS tracked, c.label AS consumer_label,
      (SELECT jsonb_agg(r.revision ORDER BY r.revision) FROM charm_secret_revisions r WHERE r.secret_id = s.id) AS revisions,
      (SELECT r.content FROM charm_secret_revisions r WHERE r.secret_id = s.id AND r.revision = s.latest_revision) AS latest_content,
      (SELECT r.content FROM charm_secret_revisions r WHERE r.secret_id = s.id AND r.revision = c.revision) AS tracked_content,
      (SELECT jsonb_agg(jsonb_build_object('target', CASE WHEN g.unit = '' THEN g.application ELSE g.unit END,
          'relation', g.integration_id) ORDER BY g.integration_id, g.application, g.unit)
        FROM charm_secret_grants g WHERE g.secret_id = s.id) AS access
    FROM charm_secrets s
    LEFT JOIN charm_secret_consumers c ON c.secret_id = s.id AND c.model_uuid = ${m} AND c.unit = ${unit}
    WHERE ${secretSeenBy(m, app, unit)}
    ORDER BY s.id`.execute(db);
  const owned: HookContext['secrets']['owned'] = [];
  const granted: HookContext['secrets']['granted'] = [];
  for (const r of rows) {
    const latest = open(box, r.latest_content) ?? {};
    if (r.owned) {
      owned.push({
        id: r.id,
        owner: r.owner_kind,
        label: r.label,
        description: r.description,
        expiry: r.expire_at,
        rotation: r.rotate_policy,
        revision: r.latest_revision,
        revisions: r.revisions ?? [],
        content: latest,
        access: r.access ?? [],
      });
    } else {
      // a tracked revision the owner has since removed reads as the latest
      const tracked = r.tracked === null ? null : open(box, r.tracked_content);
      granted.push({
        id: r.id,
        label: r.consumer_label ?? '',
        revision: tracked === null ? null : r.tracked,
        content: tracked,
        latestRevision: r.latest_revision,
        latestContent: latest,
      });
    }
  }
  let secretEvent: HookContext['secretEvent'];
  if (event) {
    const row = rows.find((r) => r.id === event.id);
    const label = row ? (row.owned ? row.label : (row.consumer_label ?? '')) : '';
    secretEvent = {
      id: `secret:${event.id}`,
      ...(label ? { label } : {}),
      ...(event.revision !== undefined ? { revision: event.revision } : {}),
    };
  }
  return {
    secrets: { owned, granted },
    secretKey: hookSecretKey(box, contextId).toString('base64'),
    ...(secretEvent ? { secretEvent } : {}),
  };
}

async function sameContent(
  tx: Tx,
  box: SecretBox,
  id: string,
  revision: number,
  content: Record<string, string>,
): Promise<boolean> {
  const row = await tx
    .selectFrom('charm_secret_revisions')
    .select('content')
    .where('secret_id', '=', id)
    .where('revision', '=', revision)
    .executeTakeFirst();
  if (!row) return false;
  const now = JSON.parse(box.open(row.content)) as Record<string, string>;
  const keys = Object.keys(now);
  return keys.length === Object.keys(content).length && keys.every((k) => content[k] === now[k]);
}

/** What a commit did that other units hear of. */
export interface SecretCommit {
  /** Secrets that got a new revision. */
  revised: string[];
  /** Secrets whose revisions' tracking may have changed (new revision, refresh, revoke, removal). */
  touched: string[];
}

function refused(message: string): never {
  throw ApplicationFailure.nonRetryable(message, 'SecretRefused');
}

/**
 * Applies a hook's secret operations, in order, inside its commit transaction.
 * The tools checked them on the machine; they are checked again here, against the
 * store (the machine is not trusted to grant itself access). Several content
 * changes of one secret in one hook make one revision, as Juju 3.6 does.
 */
export async function applySecretOps(
  tx: Tx,
  box: SecretBox,
  who: SecretsSubject,
  contextId: string,
  ops: SecretOp[],
): Promise<SecretCommit> {
  const key = hookSecretKey(box, contextId);
  const revisedNow = new Set<string>();
  const touched = new Set<string>();
  const ownerOf = (kind: 'application' | 'unit') => (kind === 'application' ? who.application : who.unit);
  const mine = async (id: string) => {
    const s = await tx
      .selectFrom('charm_secrets')
      .selectAll()
      .where('id', '=', id)
      .where('model_uuid', '=', who.modelUuid)
      .forUpdate()
      .executeTakeFirst();
    if (!s || s.owner !== ownerOf(s.owner_kind)) return undefined;
    if (s.owner_kind === 'application' && !who.leader) {
      refused(`${who.unit} is not the leader: it cannot change application-owned secret ${id}`);
    }
    return s;
  };
  for (const op of ops) {
    switch (op.op) {
      case 'add': {
        if (op.owner === 'application' && !who.leader) {
          refused(`${who.unit} is not the leader: it cannot add an application-owned secret`);
        }
        const content = box.seal(JSON.stringify(openHookContent(key, op.content)));
        const inserted = await tx
          .insertInto('charm_secrets')
          .values({
            id: op.id,
            model_uuid: who.modelUuid,
            owner_kind: op.owner,
            owner: ownerOf(op.owner),
            label: op.label ?? '',
            description: op.description ?? '',
            expire_at: op.expire ?? null,
            rotate_policy: op.rotate ?? null,
          })
          .onConflict((oc) => oc.column('id').doNothing())
          .returning('id')
          .executeTakeFirst();
        if (!inserted) refused(`secret id ${op.id} is taken`);
        await tx.insertInto('charm_secret_revisions').values({ secret_id: op.id, revision: 1, content }).execute();
        revisedNow.add(op.id);
        break;
      }
      case 'set': {
        const s = await mine(op.id);
        if (!s) break; // removed meanwhile (or never ours): nothing to change
        const meta: Record<string, string | null> = {};
        if (op.label !== undefined) meta.label = op.label;
        if (op.description !== undefined) meta.description = op.description;
        if (op.expire !== undefined) meta.expire_at = op.expire;
        if (op.rotate !== undefined) meta.rotate_policy = op.rotate;
        if (op.content !== undefined) {
          const plain = openHookContent(key, op.content);
          const content = box.seal(JSON.stringify(plain));
          if (!revisedNow.has(op.id) && (await sameContent(tx, box, op.id, s.latest_revision, plain))) {
            // the same content again makes no new revision (Juju compares checksums)
          } else if (revisedNow.has(op.id)) {
            await tx
              .updateTable('charm_secret_revisions')
              .set({ content })
              .where('secret_id', '=', op.id)
              .where('revision', '=', s.latest_revision)
              .execute();
          } else {
            const revision = s.latest_revision + 1;
            await tx.insertInto('charm_secret_revisions').values({ secret_id: op.id, revision, content }).execute();
            await tx.updateTable('charm_secrets').set({ latest_revision: revision }).where('id', '=', op.id).execute();
            revisedNow.add(op.id);
            touched.add(op.id);
          }
        }
        if (Object.keys(meta).length > 0) {
          await tx
            .updateTable('charm_secrets')
            .set({ ...meta, updated_at: sql`now()` })
            .where('id', '=', op.id)
            .execute();
        }
        break;
      }
      case 'remove': {
        const s = await mine(op.id);
        if (!s) break;
        if (op.revision === undefined) {
          await tx.deleteFrom('charm_secrets').where('id', '=', op.id).execute();
          touched.delete(op.id);
          revisedNow.delete(op.id);
        } else if (op.revision !== s.latest_revision) {
          // the latest revision stays: it is what the secret is now
          await tx
            .deleteFrom('charm_secret_revisions')
            .where('secret_id', '=', op.id)
            .where('revision', '=', op.revision)
            .execute();
        }
        break;
      }
      case 'grant': {
        const s = await mine(op.id);
        if (!s) break;
        // the application must be at the other end of that relation of ours
        const { rows } = await sql<{ model_uuid: string }>`
          SELECT o.model_uuid FROM integration_endpoints me
          JOIN integration_endpoints o ON o.integration_id = me.integration_id AND o.application = ${op.app}
          WHERE me.integration_id = ${op.relationId} AND me.model_uuid = ${who.modelUuid}
            AND me.application = ${who.application}`.execute(tx);
        const remote = rows[0];
        if (!remote) refused(`relation ${op.relationId} does not join ${who.application} with ${op.app}`);
        await tx
          .insertInto('charm_secret_grants')
          .values({
            secret_id: op.id,
            integration_id: op.relationId,
            model_uuid: remote.model_uuid,
            application: op.app,
            unit: op.unit ?? '',
          })
          .onConflict((oc) => oc.columns(['secret_id', 'model_uuid', 'application', 'unit']).doNothing())
          .execute();
        break;
      }
      case 'revoke': {
        const s = await mine(op.id);
        if (!s) break;
        const app = op.app ?? op.unit?.split('/')[0];
        if (!app) break;
        let grants = tx.deleteFrom('charm_secret_grants').where('secret_id', '=', op.id).where('application', '=', app);
        if (op.unit) grants = grants.where('unit', '=', op.unit);
        if (op.relationId !== undefined) grants = grants.where('integration_id', '=', op.relationId);
        await grants.execute();
        // what they tracked goes with their access (it no longer holds revisions back)
        await sql`
          DELETE FROM charm_secret_consumers c WHERE c.secret_id = ${op.id}
            AND ${op.unit ? sql`c.unit = ${op.unit}` : sql`c.unit LIKE ${`${app}/%`}`}
            AND NOT EXISTS (SELECT 1 FROM charm_secret_grants g WHERE g.secret_id = c.secret_id
              AND g.model_uuid = c.model_uuid AND g.application = ${app} AND g.unit IN ('', c.unit))`.execute(tx);
        touched.add(op.id);
        break;
      }
      case 'track': {
        // only a unit the secret is granted to tracks it
        const { rows } = await sql<{ latest_revision: number }>`
          SELECT s.latest_revision FROM charm_secrets s WHERE s.id = ${op.id} AND EXISTS (
            SELECT 1 FROM charm_secret_grants g WHERE g.secret_id = s.id AND g.model_uuid = ${who.modelUuid}
              AND g.application = ${who.application} AND g.unit IN ('', ${who.unit}))`.execute(tx);
        if (!rows[0]) break; // revoked meanwhile
        const revision = op.revision === undefined ? null : Math.min(op.revision, rows[0].latest_revision);
        await sql`
          INSERT INTO charm_secret_consumers (secret_id, model_uuid, unit, revision, label)
          VALUES (${op.id}, ${who.modelUuid}, ${who.unit}, ${revision}, ${op.label ?? ''})
          ON CONFLICT (secret_id, model_uuid, unit) DO UPDATE SET
            revision = coalesce(${revision}::integer, charm_secret_consumers.revision),
            label = CASE WHEN ${op.label ?? null}::text IS NULL THEN charm_secret_consumers.label
              ELSE ${op.label ?? ''} END`.execute(tx);
        touched.add(op.id);
        break;
      }
    }
  }
  return { revised: [...revisedNow], touched: [...touched] };
}

interface Told {
  model: string;
  model_uuid: string;
  unit: string;
  secret_id: string;
  revision: number;
}

/**
 * After a commit: every consumer tracking an older revision of a secret that got a
 * new one runs secret-changed; the owner (the leader, for an application's secret)
 * runs secret-remove for each revision below the latest that no consumer tracks
 * any more, once. Best effort, like the relation wakes: an enqueue lost to a dying
 * worker is not made up.
 */
export async function followSecretCommit(db: Db, commit: SecretCommit): Promise<void> {
  const byUnit = new Map<string, { model: string; modelUuid: string; unit: string; events: UnitEvent[] }>();
  const add = (t: Told, hook: string, revision?: number) => {
    const k = `${t.model_uuid}/${t.unit}`;
    let e = byUnit.get(k);
    if (!e) {
      e = { model: t.model, modelUuid: t.model_uuid, unit: t.unit, events: [] };
      byUnit.set(k, e);
    }
    e.events.push({ hook, secret: { id: t.secret_id, ...(revision !== undefined ? { revision } : {}) } });
  };
  if (commit.revised.length > 0) {
    const { rows } = await sql<Told>`
      SELECT m.name AS model, c.model_uuid, c.unit, c.secret_id, s.latest_revision AS revision
      FROM charm_secret_consumers c
      JOIN charm_secrets s ON s.id = c.secret_id
      JOIN units u ON u.model_uuid = c.model_uuid AND u.name = c.unit AND u.life = 'alive'
      JOIN models m ON m.uuid = c.model_uuid
      WHERE c.secret_id IN (${sql.join(commit.revised)}) AND c.revision IS NOT NULL AND c.revision < s.latest_revision
      ORDER BY c.model_uuid, c.unit`.execute(db);
    for (const r of rows) add(r, 'secret-changed');
  }
  if (commit.touched.length > 0) {
    const { rows } = await sql<Told>`
      WITH obsolete AS (
        UPDATE charm_secret_revisions r SET obsolete_told = true
        FROM charm_secrets s
        WHERE s.id = r.secret_id AND r.secret_id IN (${sql.join(commit.touched)})
          AND r.revision < s.latest_revision AND NOT r.obsolete_told
          AND NOT EXISTS (SELECT 1 FROM charm_secret_consumers c
            WHERE c.secret_id = r.secret_id AND c.revision = r.revision)
        RETURNING r.secret_id, r.revision, s.model_uuid, s.owner_kind, s.owner)
      SELECT m.name AS model, o.model_uuid, u.name AS unit, o.secret_id, o.revision
      FROM obsolete o
      JOIN models m ON m.uuid = o.model_uuid
      JOIN units u ON u.model_uuid = o.model_uuid AND u.life = 'alive' AND (
        (o.owner_kind = 'unit' AND u.name = o.owner) OR (o.owner_kind = 'application' AND u.application = o.owner AND u.leader))
      ORDER BY o.secret_id, o.revision`.execute(db);
    for (const r of rows) add(r, 'secret-remove', r.revision);
  }
  if (byUnit.size === 0) return;
  const client = Context.current().client;
  for (const t of byUnit.values()) {
    try {
      await onUnitAgent(client, t, (h) => h.signal(enqueueSignal, t.events));
    } catch (err) {
      log.warn(`could not queue secret hooks on ${t.unit}: ${err instanceof Error ? err.message : err}`);
    }
  }
}
