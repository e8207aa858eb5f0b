// Routes of controller backups (issue 11).
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';

export const controllerBackupRoutes: FastifyPluginAsyncZod = async () => {};
