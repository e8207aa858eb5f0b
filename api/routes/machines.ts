// Machines of a model: add SSH hosts, list, remove. The user's private key only
// ever reaches the machine's row (deleted once the controller's key is installed):
// never a workflow argument, the operation's params, a log line or an answer.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import ssh2 from 'ssh2';
import { z } from 'zod';
import type { MachineRow, ModelRow } from '../../store/schema.ts';
import { nextModelSequence } from '../../store/sequences.ts';
import { isUniqueViolation } from '../../store/store.ts';
import { BadRequestError, ConflictError, NotFoundError } from '../errors.ts';
import { findModel } from '../model-lookup.ts';
import { startOperation, toOperation } from '../operation-starter.ts';
import { Accepted, bodyInt, ErrorBody, ModelParam, Text } from '../schemas.ts';

// RFC 1123 host names: dot-separated labels of letters, digits and inner hyphens.
const HOSTNAME_RE =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$/;

export const SshHost = z.union([z.ipv4(), z.ipv6(), z.string().regex(HOSTNAME_RE)], {
  error: 'must be a host name or an IP address',
});

export const AddMachineBody = z.strictObject({
  ssh: z.strictObject({
    host: SshHost,
    port: bodyInt(1, 65535).default(22),
    user: z
      .string()
      .regex(/^[a-z_][a-z0-9_.-]{0,31}\$?$/i, 'must be a user name')
      .default('root'),
  }),
  /** OpenSSH/PEM private key text that logs in to the host now; used once, then deleted. */
  privateKey: Text.min(1)
    .max(64 * 1024)
    .optional(),
});

export const Machine = z.object({
  id: z.string(),
  kind: z.string(),
  address: z.string(),
  hostname: z.string(),
  state: z.string(),
  message: z.string(),
  life: z.string(),
  hostKeyFingerprint: z.string().nullable(),
  ssh: z.object({ host: z.string(), port: z.number().int(), user: z.string() }).nullable(),
  rootDir: z.string(),
  units: z.array(z.string()),
});
export type Machine = z.infer<typeof Machine>;

export const AddMachineAccepted = Accepted.extend({ machineId: z.string() });

const MachineParam = z.strictObject({ model: Text.min(1), id: z.string().regex(/^\d+$/, 'a machine number') });
const RemoveQuery = z.strictObject({ force: z.enum(['true', 'false']).default('false') });

const errors = { 400: ErrorBody, 401: ErrorBody, 403: ErrorBody, 404: ErrorBody, 409: ErrorBody };

function numericAware(a: string, b: string): number {
  return a.localeCompare(b, undefined, { numeric: true });
}

export function toMachine(row: MachineRow, units: string[]): Machine {
  return {
    id: row.id,
    kind: row.kind,
    address: row.address,
    hostname: row.hostname,
    state: row.state,
    message: row.message,
    life: row.life,
    hostKeyFingerprint: row.host_key_fingerprint,
    ssh:
      row.kind === 'ssh' ? { host: row.host ?? row.address, port: row.port ?? 22, user: row.ssh_user ?? 'root' } : null,
    rootDir: row.root_dir,
    units: [...units].sort(numericAware),
  };
}

/** Why a key cannot log in, without ever quoting it. */
function privateKeyProblem(key: string): string | undefined {
  const parsed = ssh2.utils.parseKey(key);
  if (parsed instanceof Error) {
    return /passphrase/i.test(parsed.message)
      ? 'the key is protected by a passphrase; use an unencrypted key (it is deleted once the controller key is installed)'
      : 'not a private key SSH can use';
  }
  const k = Array.isArray(parsed) ? parsed[0] : parsed;
  if (!k?.isPrivateKey()) return 'a public key; the private key is needed';
  return undefined;
}

export const machineRoutes: FastifyPluginAsyncZod = async (app) => {
  const { store, temporal } = app.deps;
  const db = store.db;

  const modelNamed = (name: string): Promise<ModelRow> => findModel(db, name);

  app.get(
    '/models/:model/machines',
    {
      schema: {
        summary: "A model's machines and the units on them",
        tags: ['machines'],
        params: ModelParam,
        response: { 200: z.object({ machines: z.array(Machine) }), ...errors },
      },
    },
    async (req) => {
      const model = await modelNamed(req.params.model);
      const [rows, units] = await Promise.all([
        db.selectFrom('machines').selectAll().where('model_uuid', '=', model.uuid).execute(),
        db
          .selectFrom('units')
          .select(['name', 'machine_id'])
          .where('model_uuid', '=', model.uuid)
          .where('machine_id', 'is not', null)
          .execute(),
      ]);
      return {
        machines: rows
          .sort((a, b) => numericAware(a.id, b.id))
          .map((m) =>
            toMachine(
              m,
              units.filter((u) => u.machine_id === m.id).map((u) => u.name),
            ),
          ),
      };
    },
  );

  app.post(
    '/models/:model/machines',
    {
      schema: {
        summary: 'Add an SSH host as a machine (asynchronous: answers with the operation and the machine id)',
        tags: ['machines'],
        params: ModelParam,
        body: AddMachineBody,
        response: { 202: AddMachineAccepted, ...errors },
      },
    },
    async (req, reply) => {
      const model = await modelNamed(req.params.model);
      if (model.life !== 'alive') throw new ConflictError(`model "${model.name}" is being destroyed`);
      const { ssh, privateKey } = req.body;
      if (privateKey !== undefined) {
        const problem = privateKeyProblem(privateKey);
        if (problem)
          throw new BadRequestError(`invalid request: body.privateKey: ${problem}`, [
            { field: 'body.privateKey', message: problem },
          ]);
      }
      const endpoint = `${ssh.user}@${ssh.host}:${ssh.port}`;
      const taken = () => new ConflictError(`${ssh.host}:${ssh.port} is already a machine of model "${model.name}"`);
      let machineId = '';
      try {
        const op = await startOperation(db, temporal, {
          kind: 'add-machine',
          model: model.name,
          target: 'machine',
          createdBy: req.principal?.user ?? '',
          workflow: 'addMachineWorkflow',
          summary: `add machine ssh:${endpoint}`,
          params: { host: ssh.host, port: ssh.port, user: ssh.user },
          args: (operationId) => [{ operationId, model: model.name, kind: 'add-machine', machineId }],
          intent: async (tx, operationId) => {
            const existing = await tx
              .selectFrom('machines')
              .select(['id', 'state', 'life'])
              .where('model_uuid', '=', model.uuid)
              .where('host', '=', ssh.host)
              .where('port', '=', ssh.port)
              .forUpdate()
              .executeTakeFirst();
            if (existing) {
              // a failed add-machine of this host, never used: the retry replaces it
              const used = await tx
                .selectFrom('units')
                .select('name')
                .where('model_uuid', '=', model.uuid)
                .where('machine_id', '=', existing.id)
                .executeTakeFirst();
              if (existing.state !== 'error' || existing.life !== 'alive' || used) throw taken();
              await tx
                .deleteFrom('machines')
                .where('model_uuid', '=', model.uuid)
                .where('id', '=', existing.id)
                .execute();
            }
            machineId = String(await nextModelSequence(tx, model.uuid, 'machine'));
            await tx
              .insertInto('machines')
              .values({
                model_uuid: model.uuid,
                id: machineId,
                kind: 'ssh',
                address: ssh.host,
                host: ssh.host,
                port: ssh.port,
                ssh_user: ssh.user,
                host_key_fingerprint: null,
                // sealed at rest; opened only for the login that installs the controller's key
                bootstrap_key: privateKey !== undefined ? store.secrets.seal(privateKey) : null,
                state: 'pending',
              })
              .execute();
            await tx
              .updateTable('operations')
              .set({ target: `machine/${machineId}`, summary: `add machine ${machineId} (ssh:${endpoint})` })
              .where('id', '=', operationId)
              .execute();
          },
          undo: async (d) => {
            await d.deleteFrom('machines').where('model_uuid', '=', model.uuid).where('id', '=', machineId).execute();
          },
        });
        return reply.status(202).send({ operation: toOperation(op), machineId });
      } catch (err) {
        if (isUniqueViolation(err)) throw taken();
        throw err;
      }
    },
  );

  app.delete(
    '/models/:model/machines/:id',
    {
      schema: {
        summary: 'Remove a machine (asynchronous); ?force=true even with units on it or the host unreachable',
        tags: ['machines'],
        params: MachineParam,
        querystring: RemoveQuery,
        response: { 202: Accepted, ...errors },
      },
    },
    async (req, reply) => {
      const model = await modelNamed(req.params.model);
      const { id } = req.params;
      const force = req.query.force === 'true';
      const row = await db
        .selectFrom('machines')
        .selectAll()
        .where('model_uuid', '=', model.uuid)
        .where('id', '=', id)
        .executeTakeFirst();
      if (!row) throw new NotFoundError('machine', id);
      if (!force) {
        const units = await db
          .selectFrom('units')
          .select('name')
          .where('model_uuid', '=', model.uuid)
          .where('machine_id', '=', id)
          .execute();
        if (units.length > 0) {
          const names = units.map((u) => u.name).sort(numericAware);
          throw new ConflictError(`machine ${id} still hosts ${names.join(', ')}; remove them first, or use force`);
        }
      }
      const op = await startOperation(db, temporal, {
        kind: 'remove-machine',
        model: model.name,
        target: `machine/${id}`,
        createdBy: req.principal?.user ?? '',
        workflow: 'removeMachineWorkflow',
        summary: `remove machine ${id}${force ? ' (forced)' : ''}`,
        params: { force },
        args: (operationId) => [{ operationId, model: model.name, kind: 'remove-machine', machineId: id, force }],
        intent: async (tx) => {
          await tx
            .updateTable('machines')
            .set({ life: 'dying' })
            .where('model_uuid', '=', model.uuid)
            .where('id', '=', id)
            .execute();
        },
        undo: async (d) => {
          await d
            .updateTable('machines')
            .set({ life: row.life })
            .where('model_uuid', '=', model.uuid)
            .where('id', '=', id)
            .execute();
        },
      });
      return reply.status(202).send({ operation: toOperation(op) });
    },
  );
};
