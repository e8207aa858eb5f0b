// The charm store: upload `.charm` archives, list charms and their revisions.
// An upload needs no workflow: it is recorded as an operation that has already
// succeeded, in the same transaction as the revision it stored.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { sql } from 'kysely';
import { z } from 'zod';
import { CharmTooLargeError } from '../../charm/charm-archive.ts';
import { addCharm, getCharmInfo, listCharms } from '../../charm/charm-store.ts';
import { CharmMeta, CharmValidationError } from '../../charm/metadata.ts';
import type { OperationRow } from '../../store/schema.ts';
import { ApiError, BadRequestError } from '../errors.ts';
import { iso, toOperation } from '../operation-starter.ts';
import { ErrorBody, NameParam, Operation, queryInt } from '../schemas.ts';

/** Largest `.charm` accepted. */
export const MAX_CHARM_BYTES = 64 * 1024 * 1024;

export const UploadedCharm = z.object({
  name: z.string(),
  revision: z.number().int(),
  /** Content hash: the same for the same files, whether uploaded as a directory's pack or a foreign zip. */
  sha256: z.string(),
  size: z.number().int(),
  /** False when this content was already stored (as `revision`). */
  created: z.boolean(),
});
export type UploadedCharm = z.infer<typeof UploadedCharm>;

export const CharmUploadAnswer = z.object({ charm: UploadedCharm, operation: Operation });
export type CharmUploadAnswer = z.infer<typeof CharmUploadAnswer>;

export const CharmListEntry = z.object({
  name: z.string(),
  revisions: z.array(z.number().int()),
  latest: z.number().int(),
  summary: z.string(),
});
export type CharmListEntry = z.infer<typeof CharmListEntry>;

export const CharmInfo = z.object({
  name: z.string(),
  revision: z.number().int(),
  sha256: z.string(),
  size: z.number().int(),
  createdAt: z.string(),
  meta: CharmMeta,
});
export type CharmInfo = z.infer<typeof CharmInfo>;

const CharmNameParam = NameParam;
const CharmQuery = z.strictObject({ revision: queryInt(1).optional() });

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody };

export const charmRoutes: FastifyPluginAsyncZod = async (app) => {
  const db = app.deps.store.db;

  // Encapsulated in this plugin: only the upload route takes raw bytes.
  app.addContentTypeParser(
    ['application/octet-stream', 'application/zip'],
    { parseAs: 'buffer', bodyLimit: MAX_CHARM_BYTES },
    (_req, body, done) => done(null, body),
  );

  app.post(
    '/charms',
    {
      bodyLimit: MAX_CHARM_BYTES,
      schema: {
        summary: 'Upload a charm (a `.charm` zip as application/octet-stream); answers with its revision',
        tags: ['charms'],
        consumes: ['application/octet-stream'],
        response: { 200: CharmUploadAnswer, 201: CharmUploadAnswer, ...errors, 413: ErrorBody, 415: ErrorBody },
      },
    },
    async (req, reply) => {
      if (!Buffer.isBuffer(req.body)) {
        throw new ApiError(415, 'send the .charm archive as the body, with content-type application/octet-stream');
      }
      if (req.body.length === 0) throw new BadRequestError('empty body: send the .charm archive');
      let op: OperationRow | undefined;
      let charm: UploadedCharm;
      try {
        charm = await addCharm(db, req.body, async (tx, added) => {
          op = await tx
            .insertInto('operations')
            .values({
              model_name: null,
              kind: 'upload-charm',
              target: `${added.name}:${added.revision}`,
              state: 'succeeded',
              summary: added.created
                ? `upload charm ${added.name} revision ${added.revision}`
                : `upload charm ${added.name}: same content as revision ${added.revision}`,
              created_by: req.principal?.user ?? '',
              params: JSON.stringify({ name: added.name, revision: added.revision, sha256: added.sha256 }),
              progress: '{}',
              finished_at: sql`now()`,
            })
            .returningAll()
            .executeTakeFirstOrThrow();
        });
      } catch (err) {
        if (err instanceof CharmTooLargeError) {
          // 413 names the limit (CHARMFLOW_CHARM_MAX_*) and the entry that broke it.
          throw new ApiError(413, `charm too large: ${err.message}`, [
            { field: err.file, message: `${err.problem} (limit ${err.limit}=${err.max})` },
          ]);
        }
        if (err instanceof CharmValidationError) {
          const field = err.field ? `${err.file}:${err.field}` : err.file;
          throw new BadRequestError(`invalid charm: ${err.message}`, [{ field, message: err.problem }]);
        }
        throw err;
      }
      return reply.status(charm.created ? 201 : 200).send({ charm, operation: toOperation(op!) });
    },
  );

  app.get(
    '/charms',
    {
      schema: {
        summary: 'List charms and their revisions',
        tags: ['charms'],
        response: { 200: z.object({ charms: z.array(CharmListEntry) }), ...errors },
      },
    },
    async () => ({ charms: await listCharms(db) }),
  );

  app.get(
    '/charms/:name',
    {
      schema: {
        summary: "A charm's metadata: the latest revision, or ?revision=N",
        tags: ['charms'],
        params: CharmNameParam,
        querystring: CharmQuery,
        response: { 200: CharmInfo, ...errors },
      },
    },
    async (req) => {
      const { name } = req.params;
      const { revision } = req.query;
      const info = await getCharmInfo(db, name, revision);
      if (!info) {
        throw new ApiError(
          404,
          revision === undefined ? `charm "${name}" not found` : `charm "${name}" revision ${revision} not found`,
        );
      }
      return { ...info, createdAt: iso(info.createdAt)! };
    },
  );
};
