// A charm's YAML as the SDK tools need it: endpoints, config options, action
// params. Reads metadata.yaml + config.yaml + actions.yaml, or the same keys
// inline in charmcraft.yaml.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

export type ConfigOptionType = 'string' | 'int' | 'float' | 'boolean' | 'secret';

export interface ConfigOptionMeta {
  type: ConfigOptionType;
  default?: string | number | boolean;
  description?: string;
}

/** One action parameter: a JSON schema, as actions.yaml gives it. */
export interface ParamSchema {
  type?: string | string[];
  description?: string;
  default?: unknown;
  enum?: unknown[];
  items?: ParamSchema;
  properties?: Record<string, ParamSchema>;
  required?: string[];
}

export interface ActionMeta {
  description?: string;
  params: Record<string, ParamSchema>;
  required: string[];
  additionalProperties: boolean;
}

export interface EndpointMeta {
  name: string;
  role: 'provides' | 'requires' | 'peer';
  interface: string;
  limit?: number;
}

export interface CharmMeta {
  name: string;
  endpoints: EndpointMeta[];
  config: Record<string, ConfigOptionMeta>;
  actions: Record<string, ActionMeta>;
}

type Doc = Record<string, unknown>;

function readYaml(path: string): Doc | undefined {
  if (!existsSync(path)) return undefined;
  const doc = parse(readFileSync(path, 'utf8')) as unknown;
  if (doc === null || doc === undefined) return {};
  if (typeof doc !== 'object' || Array.isArray(doc)) throw new Error(`${path}: expected a map`);
  return doc as Doc;
}

const OPTION_TYPES = new Set(['string', 'int', 'float', 'boolean', 'secret']);

/** Reads a charm directory's YAML (throws with the file's name on a bad one). */
export function loadCharmMeta(dir: string): CharmMeta {
  const craft = readYaml(join(dir, 'charmcraft.yaml')) ?? {};
  const metadata = readYaml(join(dir, 'metadata.yaml')) ?? craft;
  const name = metadata.name;
  if (typeof name !== 'string' || name === '') throw new Error(`${dir}: the charm has no name (metadata.yaml)`);
  const endpoints: EndpointMeta[] = [];
  for (const [section, role] of [
    ['provides', 'provides'],
    ['requires', 'requires'],
    ['peers', 'peer'],
  ] as const) {
    const specs = (metadata[section] ?? {}) as Record<string, { interface?: string; limit?: number } | string>;
    for (const [ep, spec] of Object.entries(specs)) {
      const iface = typeof spec === 'string' ? spec : spec?.interface;
      endpoints.push({
        name: ep,
        role,
        interface: iface ?? '',
        ...(typeof spec === 'object' && spec?.limit !== undefined ? { limit: spec.limit } : {}),
      });
    }
  }
  const configDoc = readYaml(join(dir, 'config.yaml')) ?? (craft.config as Doc | undefined) ?? {};
  const config: Record<string, ConfigOptionMeta> = {};
  for (const [key, raw] of Object.entries((configDoc.options ?? {}) as Record<string, Doc>)) {
    const type = String(raw?.type ?? 'string');
    if (!OPTION_TYPES.has(type)) throw new Error(`config option ${key}: unknown type ${type}`);
    config[key] = {
      type: type as ConfigOptionType,
      ...(raw.default !== undefined && raw.default !== null
        ? { default: raw.default as string | number | boolean }
        : {}),
      ...(typeof raw.description === 'string' ? { description: raw.description } : {}),
    };
  }
  const actionsDoc = readYaml(join(dir, 'actions.yaml')) ?? (craft.actions as Doc | undefined) ?? {};
  const actions: Record<string, ActionMeta> = {};
  for (const [action, raw] of Object.entries(actionsDoc as Record<string, Doc | null>)) {
    const spec = raw ?? {};
    actions[action] = {
      ...(typeof spec.description === 'string' ? { description: spec.description } : {}),
      params: (spec.params ?? {}) as Record<string, ParamSchema>,
      required: (spec.required ?? []) as string[],
      additionalProperties: spec.additionalProperties !== false,
    };
  }
  return { name, endpoints, config, actions };
}

/** Config options' defaults (what config-get gives for options not set). */
export function configDefaults(meta: CharmMeta): Record<string, string | number | boolean> {
  const out: Record<string, string | number | boolean> = {};
  for (const [k, o] of Object.entries(meta.config)) if (o.default !== undefined) out[k] = o.default;
  return out;
}
