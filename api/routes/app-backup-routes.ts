// Routes of app backups (issue 11).
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';

export const appBackupRoutes: FastifyPluginAsyncZod = async () => {};
