// Clouds: list them, register a Kubernetes cluster (add-k8s), remove one.
// A kubeconfig is checked before anything is stored: it parses, has the context
// asked for, and its cluster answers with its credentials. Only that context, its
// cluster and user are kept, sealed in `credentials`; listings never show them.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  ClusterUnreachableError,
  checkCluster,
  KubeconfigError,
  loadKubeconfig,
  parseKubeconfig,
  storeKubernetesCloud,
} from '../../activities/kubernetes-cluster.ts';
import { isUniqueViolation } from '../../store/store.ts';
import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts';
import { Cloud, ErrorBody, ModelName, NameParam, Text } from '../schemas.ts';

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

export const AddKubernetesBody = z.strictObject({
  name: ModelName,
  /** The kubeconfig file's text (the CLI reads the file). */
  kubeconfig: Text.min(1).max(1024 * 1024),
  context: Text.min(1).optional(),
});

const CloudListing = Cloud.extend({ models: z.array(z.string()) });

export const cloudRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store } = app.deps;
  const db = store.db;

  app.get(
    '/clouds',
    {
      schema: {
        summary: 'List clouds (never their credentials)',
        tags: ['clouds'],
        response: { 200: z.object({ clouds: z.array(CloudListing) }), ...errors },
      },
    },
    async () => {
      const clouds = await db.selectFrom('clouds').select(['name', 'type', 'endpoint']).orderBy('name').execute();
      const models = await db.selectFrom('models').select(['name', 'cloud']).orderBy('name').execute();
      return {
        clouds: clouds.map((c) => ({ ...c, models: models.filter((m) => m.cloud === c.name).map((m) => m.name) })),
      };
    },
  );

  app.post(
    '/clouds/kubernetes',
    {
      schema: {
        summary: 'Register a Kubernetes cluster as a cloud (add-k8s): its kubeconfig is checked, then kept sealed',
        tags: ['clouds'],
        body: AddKubernetesBody,
        response: { 201: Cloud, ...errors },
      },
    },
    async (req, reply) => {
      const { name, kubeconfig, context } = req.body;
      if (await db.selectFrom('clouds').select('name').where('name', '=', name).executeTakeFirst()) {
        throw new ConflictError(`cloud "${name}" already exists`);
      }
      let parsed: ReturnType<typeof parseKubeconfig>;
      try {
        parsed = parseKubeconfig(kubeconfig, context);
        await checkCluster(loadKubeconfig(parsed.kubeconfig));
      } catch (err) {
        if (err instanceof KubeconfigError) {
          throw new BadRequestError(err.message, [
            { field: /context/.test(err.message) ? 'body.context' : 'body.kubeconfig', message: err.message },
          ]);
        }
        if (err instanceof ClusterUnreachableError) {
          throw new BadRequestError(err.message, [
            { field: 'body.kubeconfig', message: 'the cluster does not answer' },
          ]);
        }
        throw err;
      }
      try {
        await storeKubernetesCloud(db, (v) => store.secrets.seal(v), name, parsed);
      } catch (err) {
        if (isUniqueViolation(err)) throw new ConflictError(`cloud "${name}" already exists`);
        throw err;
      }
      return reply.status(201).send({ name, type: 'kubernetes', endpoint: parsed.server });
    },
  );

  app.delete(
    '/clouds/:name',
    {
      schema: {
        summary: 'Remove a cloud no model uses (remove-k8s); its credentials go with it',
        tags: ['clouds'],
        params: NameParam,
        response: { 200: Cloud, ...errors },
      },
    },
    async (req) => {
      const row = await db.selectFrom('clouds').selectAll().where('name', '=', req.params.name).executeTakeFirst();
      if (!row) throw new NotFoundError('cloud', req.params.name);
      if (row.type !== 'kubernetes') {
        throw new BadRequestError(`cloud "${row.name}" is the controller's own ${row.type} cloud: it stays`);
      }
      const used = await db.selectFrom('models').select('name').where('cloud', '=', row.name).execute();
      if (used.length > 0) {
        throw new ConflictError(
          `cloud "${row.name}" still has model(s) ${used.map((m) => m.name).join(', ')}: destroy them first`,
        );
      }
      await db.deleteFrom('clouds').where('name', '=', row.name).execute();
      return { name: row.name, type: row.type, endpoint: row.endpoint };
    },
  );
};
