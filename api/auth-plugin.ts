// Bearer-token auth for every route but the public ones (health, docs).
// Read-only tokens may only read.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ForbiddenError, UnauthorizedError } from './errors.ts';
import { type Principal, verifyToken } from './tokens.ts';

declare module 'fastify' {
  interface FastifyRequest {
    principal: Principal | null;
  }
}

const PUBLIC = [/^\/healthz$/, /^\/docs(\/|$)/, /^\/openapi\.json$/];
const READ_METHODS = new Set(['GET', 'HEAD', 'OPTIONS']);

async function plugin(app: FastifyInstance) {
  app.decorateRequest('principal', null);
  app.addHook('onRequest', async (req: FastifyRequest) => {
    const path = req.url.split('?')[0];
    if (PUBLIC.some((re) => re.test(path))) return;
    const header = req.headers.authorization;
    const match = header?.match(/^Bearer\s+(\S+)$/i);
    if (!match) throw new UnauthorizedError('missing bearer token (Authorization: Bearer <token>)');
    const principal = await verifyToken(app.deps.store.db, match[1]);
    if (!principal) throw new UnauthorizedError('invalid or revoked token');
    if (!READ_METHODS.has(req.method) && principal.role !== 'admin') {
      throw new ForbiddenError(`token "${principal.tokenId}" is read-only; ${req.method} needs an admin token`);
    }
    req.principal = principal;
  });
}

export const authPlugin = fp(plugin, { name: 'charmflow-auth' });
