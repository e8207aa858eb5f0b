// User config checked against a charm's config options: `k=v` strings from the
// CLI coerced the way Juju does, typed values from the API checked as they are,
// and the effective config a hook sees (`config-get --format=json`).
import type { ConfigOption, ConfigOptions, ConfigOptionType, ConfigValue } from './metadata.ts';

/** A config value is unknown to the charm or has the wrong type. `key` is the option at fault. */
export class ConfigValueError extends Error {
  override readonly name = 'ConfigValueError';
  constructor(
    readonly key: string,
    message: string,
  ) {
    super(message);
  }
}

// Juju's CLI takes Go's strconv.ParseBool spellings; its YAML config files add
// YAML 1.1's yes/no/on/off. Accept both, case-insensitively.
const TRUE_WORDS = new Set(['true', 't', '1', 'yes', 'y', 'on']);
const FALSE_WORDS = new Set(['false', 'f', '0', 'no', 'n', 'off']);

const INT_RE = /^[+-]?\d+$/;
const FLOAT_RE = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** Parse `key=value` assignments (value may contain `=`) into typed values for the charm's options. */
export function parseConfigAssignments(
  assignments: readonly string[],
  options: ConfigOptions,
): Record<string, ConfigValue> {
  const out: Record<string, ConfigValue> = {};
  for (const assignment of assignments) {
    const eq = assignment.indexOf('=');
    if (eq <= 0) {
      throw new ConfigValueError(assignment, `config assignment "${assignment}": expected key=value`);
    }
    const key = assignment.slice(0, eq);
    out[key] = coerceConfigValue(key, assignment.slice(eq + 1), options);
  }
  return out;
}

/** Coerce one string value to the option's type. */
export function coerceConfigValue(key: string, raw: string, options: ConfigOptions): ConfigValue {
  const option = lookup(key, options);
  switch (option.type) {
    case 'string':
    case 'secret':
      return raw;
    case 'int': {
      const n = Number(raw.trim());
      if (!INT_RE.test(raw.trim()) || !Number.isSafeInteger(n)) throw typeError(key, option.type, raw);
      return n;
    }
    case 'float': {
      const n = Number(raw.trim());
      if (!FLOAT_RE.test(raw.trim()) || !Number.isFinite(n)) throw typeError(key, option.type, raw);
      return n;
    }
    case 'boolean': {
      const word = raw.trim().toLowerCase();
      if (TRUE_WORDS.has(word)) return true;
      if (FALSE_WORDS.has(word)) return false;
      throw typeError(key, option.type, raw);
    }
  }
}

/** Check already-typed values (API JSON or a YAML config file); ints may be given for floats. */
export function validateConfigObject(obj: unknown, options: ConfigOptions): Record<string, ConfigValue> {
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj)) {
    throw new ConfigValueError('', `config: expected an object of option values, got ${describe(obj)}`);
  }
  const out: Record<string, ConfigValue> = {};
  for (const [key, value] of Object.entries(obj)) {
    const option = lookup(key, options);
    if (!matchesType(option.type, value)) throw typeError(key, option.type, value);
    out[key] = value as ConfigValue;
  }
  return out;
}

/**
 * The config a hook sees: defaults overlaid with the values set, options with
 * neither left out (what `config-get --format=json` returns). Set values for
 * options the charm no longer has are dropped.
 */
export function effectiveConfig(
  options: ConfigOptions,
  set: Readonly<Record<string, ConfigValue>>,
): Record<string, ConfigValue> {
  const out: Record<string, ConfigValue> = {};
  for (const [key, option] of Object.entries(options)) {
    const value = Object.hasOwn(set, key) ? set[key] : undefined;
    if (value !== undefined && value !== null) out[key] = value;
    else if (option.default !== undefined) out[key] = option.default;
  }
  return out;
}

function lookup(key: string, options: ConfigOptions): ConfigOption {
  const option = Object.hasOwn(options, key) ? options[key] : undefined;
  if (!option) throw new ConfigValueError(key, `config option "${key}": unknown option (the charm has no such option)`);
  return option;
}

function matchesType(type: ConfigOptionType, value: unknown): boolean {
  switch (type) {
    case 'string':
    case 'secret':
      return typeof value === 'string';
    case 'int':
      return typeof value === 'number' && Number.isSafeInteger(value);
    case 'float':
      return typeof value === 'number' && Number.isFinite(value);
    case 'boolean':
      return typeof value === 'boolean';
  }
}

function typeError(key: string, type: ConfigOptionType, got: unknown): ConfigValueError {
  return new ConfigValueError(key, `config option "${key}": expected ${type}, got ${describe(got)}`);
}

function describe(v: unknown): string {
  if (v === undefined) return 'nothing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  return JSON.stringify(v);
}
