import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { sql } from 'kysely';
import { z } from 'zod';
import type { TokenRow } from '../../store/schema.ts';
import { ForbiddenError, NotFoundError } from '../errors.ts';
import { iso } from '../operation-starter.ts';
import { CreatedToken, CreateTokenBody, ErrorBody, Text, Token } from '../schemas.ts';
import { issueToken } from '../tokens.ts';

function toToken(row: TokenRow): z.infer<typeof Token> {
  return {
    id: row.id,
    name: row.name,
    user: row.user_name,
    role: row.role,
    createdAt: iso(row.created_at)!,
    revokedAt: iso(row.revoked_at),
  };
}

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };

export const tokenRoutes: FastifyPluginAsyncZod = async (app) => {
  const db = app.deps.store.db;

  app.get(
    '/tokens',
    {
      schema: {
        summary: 'List tokens (never their secret)',
        tags: ['tokens'],
        response: { 200: z.object({ tokens: z.array(Token) }), ...errors },
      },
    },
    async () => ({ tokens: (await db.selectFrom('tokens').selectAll().orderBy('created_at').execute()).map(toToken) }),
  );

  app.post(
    '/tokens',
    {
      schema: {
        summary: 'Create a token; its secret is shown only in this answer',
        tags: ['tokens'],
        body: CreateTokenBody,
        response: { 201: CreatedToken, ...errors },
      },
    },
    async (req, reply) => {
      const user = req.principal?.user ?? 'admin';
      const { id, token } = await issueToken(db, { user, name: req.body.name, role: req.body.role });
      const row = await db.selectFrom('tokens').selectAll().where('id', '=', id).executeTakeFirstOrThrow();
      return reply.status(201).send({ ...toToken(row), token });
    },
  );

  app.delete(
    '/tokens/:id',
    {
      schema: {
        summary: 'Revoke a token',
        tags: ['tokens'],
        params: z.strictObject({ id: Text.min(1) }),
        response: { 200: Token, ...errors },
      },
    },
    async (req) => {
      if (req.principal?.tokenId === req.params.id) throw new ForbiddenError('a token cannot revoke itself');
      const row = await db
        .updateTable('tokens')
        .set({ revoked_at: sql`now()` })
        .where('id', '=', req.params.id)
        .returningAll()
        .executeTakeFirst();
      if (!row) throw new NotFoundError('token', req.params.id);
      return toToken(row);
    },
  );
};
