// The charm's own description of itself: metadata.yaml, charmcraft.yaml,
// config.yaml and actions.yaml, parsed and checked the way Juju does, merged
// into one CharmMeta. The zod schemas here are the single definition of those
// files' shapes; every error names the file and the field at fault.
import { parseDocument } from 'yaml';
import { type ZodType, z } from 'zod';
import { CharmSymlinks } from './charm-symlinks.ts';

/** A charm file is invalid. `file` is the charm-relative path, `field` the dotted path inside it ('' for the whole file). */
export class CharmValidationError extends Error {
  override readonly name = 'CharmValidationError';
  constructor(
    readonly file: string,
    readonly field: string,
    readonly problem: string,
  ) {
    super(field ? `${file}: ${field}: ${problem}` : `${file}: ${problem}`);
  }
}

// Juju's charm (and application) name rule: no hyphen-separated part may be
// all digits, since `name-12` would read as a revision.
const CHARM_NAME_RE = /^[a-z][a-z0-9]*(-[a-z0-9]*[a-z][a-z0-9]*)*$/;
/**
 * Longest charm name. The application takes the charm's name unless told
 * otherwise, and becomes part of unit names (`app/12`), workflow ids and
 * directory names on machines: 50 leaves room under the API's 63 for those.
 */
export const MAX_CHARM_NAME_LENGTH = 50;
export const CharmName = z
  .string({ error: 'expected a string' })
  .max(MAX_CHARM_NAME_LENGTH, { error: `invalid charm name: longer than ${MAX_CHARM_NAME_LENGTH} characters` })
  .regex(CHARM_NAME_RE, {
    error:
      'invalid charm name: use lower-case letters, digits and hyphens, starting with a letter (no part all digits)',
  });

// Config option names reach hooks as `config-get NAME` arguments and env-free JSON keys;
// keep them to what every Juju charm uses.
const CONFIG_OPTION_NAME_RE = /^[A-Za-z][A-Za-z0-9_-]*$/;
const ConfigOptionName = z
  .string()
  .max(100, { error: 'invalid option name: longer than 100 characters' })
  .regex(CONFIG_OPTION_NAME_RE, {
    error: 'invalid option name: use letters, digits, hyphens and underscores, starting with a letter',
  });

// Endpoint names become hook names (`<endpoint>-relation-changed`) and env values.
const ENDPOINT_NAME_RE = /^[a-z][a-z0-9_-]*$/;
const EndpointName = z
  .string()
  .max(100, { error: 'invalid endpoint name: longer than 100 characters' })
  .regex(ENDPOINT_NAME_RE, {
    error: 'invalid endpoint name: use lower-case letters, digits, hyphens and underscores, starting with a letter',
  });

const ACTION_NAME_RE = /^[a-z](?:[a-z0-9_-]*[a-z0-9])?$/;
const ActionName = z
  .string()
  .max(100, { error: 'invalid action name: longer than 100 characters' })
  .regex(ACTION_NAME_RE, {
    error: 'invalid action name: use lower-case letters, digits and hyphens, starting with a letter',
  });

// Charm authors wrote YAML 1.1 (PyYAML, Juju's goyaml) where yes/no/on/off are
// booleans. Reading YAML 1.2 keeps keys such as `n:` or `on:` strings; boolean
// fields take the 1.1 words instead.
const YAML11_TRUE = new Set(['yes', 'Yes', 'YES', 'on', 'On', 'ON']);
const YAML11_FALSE = new Set(['no', 'No', 'NO', 'off', 'Off', 'OFF']);
function yaml11Bool(v: unknown): unknown {
  if (typeof v !== 'string') return v;
  if (YAML11_TRUE.has(v)) return true;
  if (YAML11_FALSE.has(v)) return false;
  return v;
}
const YamlBool = z.preprocess(yaml11Bool, z.boolean());

export const EndpointRole = z.enum(['provides', 'requires', 'peer']);
export type EndpointRole = z.infer<typeof EndpointRole>;

export const EndpointScope = z.enum(['global', 'container'], { error: 'expected one of global, container' });

/** One entry under provides/requires/peers. Juju accepts the shorthand `name: interface`. */
export const EndpointSpec = z.preprocess(
  (v) => (typeof v === 'string' ? { interface: v } : v),
  z.object({
    interface: z.string({ error: 'required: the interface name' }).min(1, { error: 'must not be empty' }),
    limit: z.number().int().nonnegative().nullish(),
    optional: YamlBool.optional(),
    scope: EndpointScope.optional(),
  }),
);
export type EndpointSpec = z.infer<typeof EndpointSpec>;

const EndpointMap = z.record(EndpointName, EndpointSpec).nullish();

/** Keys of metadata.yaml that Juju knows; anything else is tolerated (charms carry many). */
const metadataShape = {
  name: CharmName,
  'display-name': z.string().optional(),
  summary: z.string().nullish(),
  description: z.string().nullish(),
  provides: EndpointMap,
  requires: EndpointMap,
  peers: EndpointMap,
  subordinate: YamlBool.nullish(),
  series: z.array(z.string()).nullish(),
  'min-juju-version': z.union([z.string(), z.number()]).nullish(),
  assumes: z.array(z.unknown()).nullish(),
  resources: z.record(z.string(), z.looseObject({ type: z.string().optional() })).nullish(),
  storage: z.record(z.string(), z.looseObject({ type: z.string({ error: 'required: the storage type' }) })).nullish(),
  containers: z.record(z.string(), z.looseObject({})).nullish(),
  'extra-bindings': z.record(z.string(), z.unknown()).nullish(),
};

export const MetadataYaml = z.looseObject(metadataShape);
export type MetadataYaml = z.infer<typeof MetadataYaml>;

export const ConfigOptionType = z.enum(['string', 'int', 'float', 'boolean', 'secret'], {
  error: 'expected one of string, int, float, boolean, secret',
});
export type ConfigOptionType = z.infer<typeof ConfigOptionType>;

/** A config option as written in config.yaml (type defaults to string, as Juju has always accepted). */
const ConfigOptionInput = z
  .looseObject({
    type: ConfigOptionType.default('string'),
    default: z.union([z.string(), z.number(), z.boolean()]).nullish(),
    description: z.string().nullish(),
  })
  .transform((opt) =>
    opt.type === 'boolean' ? { ...opt, default: yaml11Bool(opt.default) as typeof opt.default } : opt,
  )
  .superRefine((opt, ctx) => {
    if (opt.default == null) return;
    const problem = defaultTypeProblem(opt.type, opt.default);
    if (problem) ctx.addIssue({ code: 'custom', path: ['default'], message: problem });
  });

function defaultTypeProblem(type: ConfigOptionType, value: string | number | boolean): string | undefined {
  const got = JSON.stringify(value);
  switch (type) {
    case 'string':
    case 'secret':
      return typeof value === 'string' ? undefined : `expected ${type}, got ${got}`;
    case 'int':
      return typeof value === 'number' && Number.isInteger(value) ? undefined : `expected int, got ${got}`;
    case 'float':
      return typeof value === 'number' ? undefined : `expected float, got ${got}`;
    case 'boolean':
      return typeof value === 'boolean' ? undefined : `expected boolean, got ${got}`;
  }
}

export const ConfigYaml = z.object({
  options: z.record(ConfigOptionName, ConfigOptionInput).nullish(),
});
export type ConfigYaml = z.infer<typeof ConfigYaml>;

/** An action as written in actions.yaml: its params are JSON-schema properties. */
const ActionSpecInput = z.looseObject({
  description: z.string().nullish(),
  params: z.record(z.string(), z.record(z.string(), z.unknown())).nullish(),
  required: z.array(z.string()).nullish(),
  additionalProperties: YamlBool.nullish(),
  'execution-group': z.string().nullish(),
  parallel: YamlBool.nullish(),
});

export const ActionsYaml = z.record(ActionName, ActionSpecInput.nullish()).nullish();
export type ActionsYaml = z.infer<typeof ActionsYaml>;

// charmcraft.yaml keys that are metadata.yaml keys when written inline.
export const CHARMCRAFT_METADATA_KEYS = [
  'name',
  'title',
  'summary',
  'description',
  'provides',
  'requires',
  'peers',
  'subordinate',
  'assumes',
  'resources',
  'storage',
  'containers',
  'extra-bindings',
  'devices',
  'terms',
  'links',
  'charm-user',
] as const;

/** charmcraft.yaml: build settings (ignored here) plus, optionally, the metadata, config and actions inline. */
export const CharmcraftYaml = z.looseObject({
  ...metadataShape,
  name: CharmName.optional(),
  title: z.string().optional(),
  type: z.literal('charm', { error: 'expected "charm"' }).optional(),
  config: ConfigYaml.nullish(),
  actions: ActionsYaml,
});
export type CharmcraftYaml = z.infer<typeof CharmcraftYaml>;

// ---- The merged view -------------------------------------------------------

export const ConfigValue = z.union([z.string(), z.number(), z.boolean()]);
export type ConfigValue = z.infer<typeof ConfigValue>;

export const ConfigOption = z.object({
  type: ConfigOptionType,
  default: ConfigValue.optional(),
  description: z.string().optional(),
});
export type ConfigOption = z.infer<typeof ConfigOption>;
export type ConfigOptions = Record<string, ConfigOption>;

export const ActionSpec = z.object({
  description: z.string(),
  params: z.record(z.string(), z.record(z.string(), z.unknown())),
  required: z.array(z.string()),
  additionalProperties: z.boolean(),
  executionGroup: z.string().optional(),
  parallel: z.boolean().optional(),
});
export type ActionSpec = z.infer<typeof ActionSpec>;

export const CharmEndpoint = z.object({
  name: z.string(),
  role: EndpointRole,
  interface: z.string(),
  limit: z.number().int().optional(),
  optional: z.boolean().optional(),
  scope: EndpointScope,
  /** True for the juju-info endpoint Juju gives every charm without it being declared. */
  implicit: z.boolean().optional(),
});
export type CharmEndpoint = z.infer<typeof CharmEndpoint>;

/** Everything the controller needs to know about a charm, from whichever files declared it. */
export const CharmMeta = z.object({
  name: z.string(),
  summary: z.string(),
  description: z.string(),
  endpoints: z.array(CharmEndpoint),
  config: z.object({ options: z.record(z.string(), ConfigOption) }),
  actions: z.record(z.string(), ActionSpec),
  subordinate: z.boolean(),
  /** The charm has a `dispatch` script: every hook and action runs it. */
  hasDispatch: z.boolean(),
  /** Names of the files in `hooks/` (classic hooks). */
  hooks: z.array(z.string()),
  series: z.array(z.string()),
  minJujuVersion: z.string().optional(),
  assumes: z.array(z.unknown()),
  resources: z.record(z.string(), z.record(z.string(), z.unknown())),
  storage: z.record(z.string(), z.record(z.string(), z.unknown())),
  containers: z.record(z.string(), z.record(z.string(), z.unknown())),
});
export type CharmMeta = z.infer<typeof CharmMeta>;

/** What parseCharm reads: an archive's file list, or a plain path → content map. */
export type CharmSource =
  | ReadonlyArray<{ readonly path: string; readonly data: Buffer; readonly symlinkTarget?: string }>
  | Readonly<Record<string, string | Buffer>>;

/** Build the merged CharmMeta from a charm's files; throws CharmValidationError naming file and field. */
export function parseCharm(source: CharmSource): CharmMeta {
  const read = fileReader(source);
  const metadataText = read('metadata.yaml');
  const charmcraftText = read('charmcraft.yaml');
  const configText = read('config.yaml');
  const actionsText = read('actions.yaml');

  const charmcraft =
    charmcraftText === undefined
      ? undefined
      : validateCharmFile('charmcraft.yaml', CharmcraftYaml, loadCharmYaml('charmcraft.yaml', charmcraftText));

  // A separate file wins over the same section inline in charmcraft.yaml: that is
  // what a packed charm holds (charmcraft generates them), and what Juju reads.
  let meta: MetadataYaml;
  let metaFile: string;
  if (metadataText !== undefined) {
    metaFile = 'metadata.yaml';
    meta = validateCharmFile(metaFile, MetadataYaml, loadCharmYaml(metaFile, metadataText));
  } else if (charmcraft?.name !== undefined) {
    metaFile = 'charmcraft.yaml';
    meta = { ...charmcraft, name: charmcraft.name };
  } else if (charmcraft !== undefined) {
    throw new CharmValidationError('charmcraft.yaml', 'name', 'required (or provide metadata.yaml)');
  } else {
    throw new CharmValidationError('metadata.yaml', '', 'missing: a charm needs metadata.yaml or charmcraft.yaml');
  }

  let configOptions: ConfigYaml['options'];
  if (configText !== undefined) {
    configOptions = validateCharmFile(
      'config.yaml',
      ConfigYaml,
      loadCharmYaml('config.yaml', configText) ?? {},
    ).options;
  } else {
    configOptions = charmcraft?.config?.options;
  }

  let actions: ActionsYaml;
  if (actionsText !== undefined) {
    actions = validateCharmFile('actions.yaml', ActionsYaml, loadCharmYaml('actions.yaml', actionsText));
  } else {
    actions = charmcraft?.actions;
  }

  const endpoints = collectEndpoints(metaFile, meta);
  const subordinate = meta.subordinate ?? false;
  if (subordinate && !endpoints.some((e) => e.role === 'requires' && e.scope === 'container')) {
    throw new CharmValidationError(
      metaFile,
      'subordinate',
      'a subordinate charm needs a "requires" endpoint with scope: container',
    );
  }
  const reservedAction = Object.keys(actions ?? {}).find((name) => name.startsWith('juju-'));
  if (reservedAction !== undefined) {
    const [file, field] =
      actionsText !== undefined ? ['actions.yaml', reservedAction] : ['charmcraft.yaml', `actions.${reservedAction}`];
    throw new CharmValidationError(file, field, 'the "juju-" prefix is reserved for action names');
  }

  const paths = listPaths(source);
  return {
    name: meta.name,
    summary: meta.summary ?? '',
    description: meta.description ?? '',
    endpoints,
    config: { options: normalizeOptions(configOptions) },
    actions: normalizeActions(actions),
    subordinate,
    hasDispatch: paths.includes('dispatch'),
    hooks: paths
      .filter((p) => p.startsWith('hooks/') && !p.slice('hooks/'.length).includes('/'))
      .map((p) => p.slice('hooks/'.length))
      .sort(),
    series: meta.series ?? [],
    minJujuVersion: meta['min-juju-version'] == null ? undefined : String(meta['min-juju-version']),
    assumes: meta.assumes ?? [],
    resources: meta.resources ?? {},
    storage: meta.storage ?? {},
    containers: meta.containers ?? {},
  };
}

/** Parse one YAML file (YAML 1.2; the schemas accept YAML 1.1's boolean words where a boolean is expected). */
export function loadCharmYaml(file: string, text: string): unknown {
  const doc = parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) {
    const first = doc.errors[0]!.message.split('\n')[0]!.replace(/:$/, '');
    throw new CharmValidationError(file, '', `invalid YAML: ${first}`);
  }
  return doc.toJS({ maxAliasCount: 1000 });
}

/** Run a schema; turn its first issue into a CharmValidationError naming file and field. */
export function validateCharmFile<T extends ZodType>(file: string, schema: T, value: unknown): z.infer<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const path = [...issue.path];
  let problem: string;
  if (issue.code === 'invalid_key') {
    problem = issue.issues[0]?.message ?? issue.message;
  } else if (issue.code === 'invalid_type') {
    const got = valueAt(value, path);
    problem = got === undefined ? 'required' : `expected ${issue.expected}, got ${describe(got)}`;
    if (path.length === 0) problem = `expected a mapping at the top level, got ${describe(got)}`;
  } else if (issue.code === 'invalid_union') {
    problem = `unexpected value ${describe(valueAt(value, path))}`;
  } else {
    problem = issue.message;
  }
  throw new CharmValidationError(file, formatPath(path), problem);
}

function collectEndpoints(file: string, meta: MetadataYaml): CharmEndpoint[] {
  const endpoints: CharmEndpoint[] = [];
  const seen = new Map<string, string>();
  const sections = [
    ['provides', 'provides'],
    ['requires', 'requires'],
    ['peers', 'peer'],
  ] as const;
  // Juju lets charms named juju-* use reserved names (its own system charms).
  const systemCharm = meta.name.startsWith('juju-');
  for (const [section, role] of sections) {
    for (const [name, spec] of Object.entries(meta[section] ?? {})) {
      const field = `${section}.${name}`;
      const earlier = seen.get(name);
      if (earlier) throw new CharmValidationError(file, field, `endpoint name "${name}" is already used in ${earlier}`);
      seen.set(name, section);
      if (!systemCharm && (name === 'juju' || name.startsWith('juju-'))) {
        throw new CharmValidationError(file, field, 'endpoint names "juju" and "juju-*" are reserved');
      }
      // A charm may require juju-info (subordinates do) but never offer a juju-* interface.
      if (!systemCharm && role !== 'requires' && (spec.interface === 'juju' || spec.interface.startsWith('juju-'))) {
        throw new CharmValidationError(file, `${field}.interface`, `interface "${spec.interface}" is reserved`);
      }
      endpoints.push({
        name,
        role,
        interface: spec.interface,
        ...(spec.limit != null ? { limit: spec.limit } : {}),
        ...(spec.optional !== undefined ? { optional: spec.optional } : {}),
        scope: spec.scope ?? 'global',
      });
    }
  }
  // Every Juju charm implicitly provides juju-info, which subordinates attach to.
  if (!seen.has('juju-info')) {
    endpoints.push({ name: 'juju-info', role: 'provides', interface: 'juju-info', scope: 'global', implicit: true });
  }
  return endpoints;
}

function normalizeOptions(options: ConfigYaml['options']): Record<string, ConfigOption> {
  const out: Record<string, ConfigOption> = {};
  for (const [name, opt] of Object.entries(options ?? {})) {
    out[name] = {
      type: opt.type,
      ...(opt.default != null ? { default: opt.default } : {}),
      ...(opt.description != null ? { description: opt.description } : {}),
    };
  }
  return out;
}

function normalizeActions(actions: ActionsYaml): Record<string, ActionSpec> {
  const out: Record<string, ActionSpec> = {};
  for (const [name, spec] of Object.entries(actions ?? {})) {
    out[name] = {
      description: spec?.description ?? '',
      params: spec?.params ?? {},
      required: spec?.required ?? [],
      // Juju 3 defaulted additionalProperties to true, Juju 4 to false; charmflow
      // refuses unknown parameters unless the action says it takes them.
      additionalProperties: spec?.additionalProperties ?? false,
      ...(spec?.['execution-group'] != null ? { executionGroup: spec['execution-group'] } : {}),
      ...(spec?.parallel != null ? { parallel: spec.parallel } : {}),
    };
  }
  return out;
}

function fileReader(source: CharmSource): (path: string) => string | undefined {
  if (Array.isArray(source)) {
    const files = source as Extract<CharmSource, ReadonlyArray<unknown>>;
    const byPath = new Map(files.map((f) => [f.path, f]));
    // Follow in-charm symlinks (metadata.yaml -> charmcraft/metadata.yaml happens) as the kernel would.
    const links = new CharmSymlinks(files);
    return (path) => {
      const f = byPath.get(links.resolve(path));
      return f === undefined || f.symlinkTarget !== undefined ? undefined : f.data.toString('utf8');
    };
  }
  const map = source as Readonly<Record<string, string | Buffer>>;
  return (path) => {
    const v = Object.hasOwn(map, path) ? map[path] : undefined;
    return v === undefined ? undefined : typeof v === 'string' ? v : v.toString('utf8');
  };
}

function listPaths(source: CharmSource): string[] {
  if (Array.isArray(source)) return (source as Extract<CharmSource, ReadonlyArray<unknown>>).map((f) => f.path);
  return Object.keys(source);
}

function valueAt(root: unknown, path: readonly PropertyKey[]): unknown {
  let v = root;
  for (const key of path) {
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<PropertyKey, unknown>)[key];
  }
  return v;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'a mapping';
  return JSON.stringify(v);
}

function formatPath(path: readonly PropertyKey[]): string {
  let out = '';
  for (const key of path) {
    if (typeof key === 'number') out += `[${key}]`;
    else out += out ? `.${String(key)}` : String(key);
  }
  return out;
}
