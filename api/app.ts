// buildApp(deps) returns the API without listening; server start is the caller's.
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyError, type FastifyInstance } from 'fastify';
import {
  hasZodFastifySchemaValidationErrors,
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Store } from '../store/store.ts';
import { authPlugin } from './auth-plugin.ts';
import { ApiError } from './errors.ts';
import type { TemporalDeps } from './operation-starter.ts';
import { actionRoutes } from './routes/actions.ts';
import { appBackupRoutes } from './routes/app-backup-routes.ts';
import { applicationRoutes } from './routes/applications.ts';
import { charmRoutes } from './routes/charms.ts';
import { cloudRoutes } from './routes/clouds.ts';
import { controllerBackupRoutes } from './routes/controller-backup-routes.ts';
import { type HealthProbe, healthRoutes } from './routes/health.ts';
import { integrationRoutes } from './routes/integrations.ts';
import { logRoutes } from './routes/logs.ts';
import { machineRoutes } from './routes/machines.ts';
import { migrateRoutes } from './routes/migrate.ts';
import { migrationGuard, modelMigrationRoutes } from './routes/model-migration.ts';
import { modelRoutes } from './routes/models.ts';
import { operationRoutes } from './routes/operations.ts';
import { refreshRoutes } from './routes/refresh.ts';
import { statusRoutes } from './routes/status.ts';
import { tokenRoutes } from './routes/tokens.ts';
import { waitRoutes } from './routes/wait.ts';

export interface ApiDeps {
  store: Store;
  temporal: TemporalDeps;
  version?: string;
  /** Parts /healthz reports beside the store and Temporal (the worker of this process). */
  health?: Record<string, HealthProbe>;
  /** Log requests and failures: to stdout (true), or to this stream (tests read what was logged). */
  logger?: boolean | { stream: { write(line: string): void } };
}

declare module 'fastify' {
  interface FastifyInstance {
    deps: ApiDeps;
  }
}

const STATUS_TEXT: Record<number, string> = {
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  409: 'Conflict',
  413: 'Payload Too Large',
  415: 'Unsupported Media Type',
  500: 'Internal Server Error',
  503: 'Service Unavailable',
};

export async function buildApp(deps: ApiDeps): Promise<FastifyInstance> {
  const app = Fastify({
    logger: deps.logger
      ? {
          level: 'info',
          // store errors come without their parameters (store/store-error.ts); these
          // paths are cut as well in case an error from elsewhere carries a statement
          redact: ['req.headers.authorization', 'err.params', 'err.parameters', 'err.query', 'err.where', 'err.detail'],
          ...(typeof deps.logger === 'object' ? { stream: deps.logger.stream } : {}),
        }
      : false,
    bodyLimit: 64 * 1024 * 1024,
  }).withTypeProvider<ZodTypeProvider>();
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.decorate('deps', deps);

  app.setErrorHandler((err: FastifyError, req, reply) => {
    if (hasZodFastifySchemaValidationErrors(err)) {
      const details = err.validation.map((v) => {
        const where = err.validationContext ?? 'body';
        const path = (v.instancePath || '').replace(/^\//, '').replace(/\//g, '.');
        const params = v.params as { keys?: string[]; issue?: { keys?: string[] } } | undefined;
        const unknownKeys = params?.issue?.keys ?? params?.keys;
        const field = [where, path, unknownKeys?.length ? unknownKeys.join(',') : ''].filter(Boolean).join('.');
        return { field, message: v.message ?? 'invalid' };
      });
      const summary = details.map((d) => `${d.field}: ${d.message}`).join('; ');
      return reply
        .status(400)
        .send({ statusCode: 400, error: 'Bad Request', message: `invalid request: ${summary}`, details });
    }
    if (err instanceof ApiError) {
      return reply.status(err.statusCode).send({
        statusCode: err.statusCode,
        error: STATUS_TEXT[err.statusCode] ?? 'Error',
        message: err.message,
        ...(err.details ? { details: err.details } : {}),
      });
    }
    const status = err.statusCode && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    if (status === 500) req.log.error({ err }, 'unhandled error');
    const message = status === 500 ? 'internal error; see the controller log' : err.message;
    return reply.status(status).send({ statusCode: status, error: STATUS_TEXT[status] ?? 'Error', message });
  });

  app.setNotFoundHandler((req, reply) => {
    reply
      .status(404)
      .send({ statusCode: 404, error: 'Not Found', message: `no route ${req.method} ${req.url.split('?')[0]}` });
  });

  await app.register(swagger, {
    openapi: {
      info: {
        title: 'charmflow API',
        version: deps.version ?? '0.1.0',
        description: 'Lifecycle orchestration of charms.',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
      security: [{ bearer: [] }],
    },
    transform: jsonSchemaTransform,
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  await app.register(authPlugin);
  // a model moving between controllers changes nowhere (api/routes/model-migration.ts)
  app.addHook('preHandler', migrationGuard(deps.store.db));
  await app.register(healthRoutes);
  await app.register(modelRoutes, { prefix: '/v1' });
  await app.register(cloudRoutes, { prefix: '/v1' });
  await app.register(operationRoutes, { prefix: '/v1' });
  await app.register(tokenRoutes, { prefix: '/v1' });
  await app.register(statusRoutes, { prefix: '/v1' });
  await app.register(charmRoutes, { prefix: '/v1' });
  await app.register(machineRoutes, { prefix: '/v1' });
  await app.register(applicationRoutes, { prefix: '/v1' });
  await app.register(integrationRoutes, { prefix: '/v1' });
  await app.register(actionRoutes, { prefix: '/v1' });
  await app.register(refreshRoutes, { prefix: '/v1' });
  await app.register(migrateRoutes, { prefix: '/v1' });
  await app.register(appBackupRoutes, { prefix: '/v1' });
  await app.register(controllerBackupRoutes, { prefix: '/v1' });
  await app.register(logRoutes, { prefix: '/v1' });
  await app.register(waitRoutes, { prefix: '/v1' });
  await app.register(modelMigrationRoutes, { prefix: '/v1' });
  return app;
}
