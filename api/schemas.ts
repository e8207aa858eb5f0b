// Wire shapes of the API: the single definition, used by routes, the OpenAPI
// document, and the CLI.
import { z } from 'zod';

/** The largest value of the store's `integer` columns (ids, revisions, unit numbers). */
export const MAX_INT32 = 2_147_483_647;

/**
 * Every string the API takes: Postgres text cannot hold a NUL byte, so one is refused
 * here, naming the field, instead of failing in the store. Chain further checks on it.
 */
export const Text = z.string().regex(/^[^\0]*$/, 'must not contain a NUL byte');

/** A whole number in a path or query string, within `min`..`max` (at most the store's integer range). */
export function queryInt(min: number, max = MAX_INT32) {
  return z.coerce.number().int().min(min).max(Math.min(max, MAX_INT32));
}

/** A whole number in a JSON body, within `min`..`max` (at most the store's integer range). */
export function bodyInt(min: number, max = MAX_INT32) {
  return z.number().int().min(min).max(Math.min(max, MAX_INT32));
}

export const ErrorBody = z.object({
  statusCode: z.number().int(),
  error: z.string(),
  message: z.string(),
  details: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
});

export const ModelName = z
  .string()
  .min(1)
  .max(63)
  .regex(/^[a-z][a-z0-9-]*$/, 'must be lower-case letters, digits and hyphens, starting with a letter');

export const Model = z.object({
  name: z.string(),
  uuid: z.string(),
  cloud: z.string(),
  life: z.string(),
  status: z.string(),
  message: z.string(),
  createdAt: z.string(),
});
export type Model = z.infer<typeof Model>;

export const CreateModelBody = z.strictObject({
  name: ModelName,
  cloud: Text.min(1).default('local'),
});

export const OperationState = z.enum(['pending', 'running', 'succeeded', 'failed', 'cancelled']);

export const Operation = z.object({
  id: z.number().int(),
  kind: z.string(),
  model: z.string().nullable(),
  target: z.string(),
  state: OperationState,
  summary: z.string(),
  error: z.string().nullable(),
  workflowId: z.string().nullable(),
  progress: z.record(z.string(), z.unknown()),
  /** run-action: what the action returned (action-set), logged (action-log) and why it failed. */
  action: z
    .object({
      status: z.enum(['running', 'completed', 'failed', 'cancelled']),
      results: z.record(z.string(), z.unknown()),
      log: z.array(z.object({ at: z.string(), message: z.string() })),
      message: z.string(),
    })
    .optional(),
  createdBy: z.string(),
  createdAt: z.string(),
  updatedAt: z.string(),
  finishedAt: z.string().nullable(),
});
export type Operation = z.infer<typeof Operation>;

export const Accepted = z.object({ operation: Operation });

export const OperationsQuery = z.strictObject({
  model: Text.optional(),
  state: OperationState.optional(),
  limit: queryInt(1, 1000).default(100),
});

export const IdParam = z.strictObject({ id: queryInt(1) });
export const NameParam = z.strictObject({ name: Text.min(1) });
/** `/models/:model/...` */
export const ModelParam = z.strictObject({ model: Text.min(1) });
/** `/models/:model/applications/:app/...` */
export const AppParams = z.strictObject({ model: Text.min(1), app: Text.min(1) });
/** `/models/:model/units/:app/:n/...` */
export const UnitParams = z.strictObject({ model: Text.min(1), app: Text.min(1), n: queryInt(0) });

export const Role = z.enum(['admin', 'read-only']);
export const Token = z.object({
  id: z.string(),
  name: z.string(),
  user: z.string(),
  role: Role,
  createdAt: z.string(),
  revokedAt: z.string().nullable(),
});
export const CreateTokenBody = z.strictObject({
  name: z
    .string()
    .min(1)
    .max(63)
    .regex(/^[a-zA-Z0-9._-]+$/, 'letters, digits, dot, underscore and hyphen only'),
  role: Role.default('read-only'),
});
export const CreatedToken = Token.extend({ token: z.string() });

export const Cloud = z.object({ name: z.string(), type: z.string(), endpoint: z.string().nullable() });
