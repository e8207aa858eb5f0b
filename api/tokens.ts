// Bearer tokens. Only a token's sha256 is stored; the token is shown once.
import { createHash, randomBytes } from 'node:crypto';
import type { Db } from '../store/store.ts';

export type Role = 'admin' | 'read-only';

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

export async function issueToken(
  db: Db,
  opts: { user: string; name: string; role: Role },
): Promise<{ id: string; token: string }> {
  const token = `cf_${randomBytes(32).toString('base64url')}`;
  const id = randomBytes(6).toString('hex');
  await db
    .insertInto('users')
    .values({ name: opts.user })
    .onConflict((oc) => oc.column('name').doNothing())
    .execute();
  await db
    .insertInto('tokens')
    .values({ id, user_name: opts.user, name: opts.name, role: opts.role, hash: hashToken(token) })
    .execute();
  return { id, token };
}

export interface Principal {
  user: string;
  tokenId: string;
  role: Role;
}

export async function verifyToken(db: Db, token: string): Promise<Principal | null> {
  const row = await db
    .selectFrom('tokens')
    .select(['id', 'user_name', 'role'])
    .where('hash', '=', hashToken(token))
    .where('revoked_at', 'is', null)
    .executeTakeFirst();
  return row ? { user: row.user_name, tokenId: row.id, role: row.role } : null;
}
