// Action parameters, checked against the action's schema in actions.yaml (each
// param a JSON Schema; `required`; `additionalProperties`) the way Juju does:
// defaults are filled in, wrong types and unknown names are refused with the name.
import { Ajv, type ErrorObject } from 'ajv';
import type { ActionSpec } from './metadata.ts';

export class ActionParamsError extends Error {
  constructor(
    message: string,
    /** The offending parameter (dotted for nested ones), when there is one. */
    readonly param?: string,
  ) {
    super(message);
  }
}

const ajv = new Ajv({ useDefaults: true, allErrors: false, strict: false });
const compiled = new Map<string, ReturnType<typeof ajv.compile>>();

/** The JSON Schema of an action's params object. */
export function actionSchema(spec: ActionSpec): Record<string, unknown> {
  return {
    type: 'object',
    properties: spec.params,
    required: spec.required,
    additionalProperties: spec.additionalProperties,
  };
}

function describe(e: ErrorObject): ActionParamsError {
  const path = e.instancePath.replace(/^\//, '').replaceAll('/', '.');
  if (e.keyword === 'additionalProperties') {
    const name = [path, (e.params as { additionalProperty: string }).additionalProperty].filter(Boolean).join('.');
    return new ActionParamsError(`unknown parameter "${name}"`, name);
  }
  if (e.keyword === 'required') {
    const name = [path, (e.params as { missingProperty: string }).missingProperty].filter(Boolean).join('.');
    return new ActionParamsError(`missing required parameter "${name}"`, name);
  }
  return new ActionParamsError(`parameter "${path}" ${e.message ?? 'is invalid'}`, path || undefined);
}

/**
 * The params to run `action` with: `given` checked against its schema, with the
 * schema's defaults filled in. Throws ActionParamsError naming the problem.
 */
export function checkActionParams(
  charmKey: string,
  action: string,
  spec: ActionSpec,
  given: Record<string, unknown>,
): Record<string, unknown> {
  const key = `${charmKey}:${action}`;
  let validate = compiled.get(key);
  if (!validate) {
    try {
      validate = ajv.compile(actionSchema(spec));
    } catch (err) {
      throw new ActionParamsError(
        `the charm's schema for action "${action}" is not valid JSON Schema: ${err instanceof Error ? err.message : err}`,
      );
    }
    compiled.set(key, validate);
  }
  const params = structuredClone(given);
  if (!validate(params)) throw describe((validate.errors ?? [])[0]);
  return params;
}
