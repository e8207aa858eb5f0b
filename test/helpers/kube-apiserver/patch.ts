// The three patch formats of the API server: JSON merge patch (RFC 7386), strategic merge patch
// (merge patch whose known lists merge by a key instead of being replaced) and JSON patch (RFC 6902).

import { ApiError, badRequest } from './api-error.ts';

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

const isObject = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

export function mergePatch(target: Json | undefined, patch: Json): Json {
  if (!isObject(patch)) return structuredClone(patch);
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

// The lists Kubernetes types declare with patchStrategy=merge, by field name, and the key they merge on.
function mergeKeyFor(field: string, items: Json[]): string | undefined {
  switch (field) {
    case 'containers':
    case 'initContainers':
    case 'ephemeralContainers':
    case 'volumes':
    case 'env':
    case 'imagePullSecrets':
      return 'name';
    case 'volumeMounts':
      return 'mountPath';
    case 'conditions':
      return 'type';
    case 'ownerReferences':
      return 'uid';
    case 'hostAliases':
      return 'ip';
    case 'ports':
      return items.some((i) => isObject(i) && 'containerPort' in i) ? 'containerPort' : 'port';
    default:
      return undefined;
  }
}

const PRIMITIVE_SET_FIELDS = new Set(['finalizers']);

export function strategicMergePatch(target: Json | undefined, patch: Json): Json {
  if (!isObject(patch)) return structuredClone(patch);
  if (patch.$patch === 'replace') {
    const { $patch: _, ...rest } = patch;
    return structuredClone(rest);
  }
  if (patch.$patch === 'delete') return null;
  const out: JsonObject = isObject(target) ? { ...target } : {};
  for (const [k, v] of Object.entries(patch)) {
    if (k.startsWith('$setElementOrder/') || k === '$retainKeys' || k.startsWith('$deleteFromPrimitiveList/')) {
      if (k.startsWith('$deleteFromPrimitiveList/')) {
        const field = k.slice('$deleteFromPrimitiveList/'.length);
        const cur = out[field];
        if (Array.isArray(cur) && Array.isArray(v)) out[field] = cur.filter((x) => !v.includes(x));
      }
      continue;
    }
    if (v === null) {
      delete out[k];
      continue;
    }
    const cur = out[k];
    if (Array.isArray(v) && PRIMITIVE_SET_FIELDS.has(k)) {
      const base = Array.isArray(cur) ? [...cur] : [];
      for (const x of v) if (!base.includes(x)) base.push(x);
      out[k] = base;
      continue;
    }
    const key = Array.isArray(v) ? mergeKeyFor(k, [...v, ...(Array.isArray(cur) ? cur : [])]) : undefined;
    if (Array.isArray(v) && key && v.every(isObject)) {
      const merged: Json[] = Array.isArray(cur) ? [...cur] : [];
      for (const item of v as JsonObject[]) {
        const idx = merged.findIndex((m) => isObject(m) && m[key] === item[key]);
        if (item.$patch === 'delete') {
          if (idx >= 0) merged.splice(idx, 1);
        } else if (idx >= 0) {
          merged[idx] = strategicMergePatch(merged[idx], item);
        } else {
          merged.push(strategicMergePatch(undefined, item));
        }
      }
      out[k] = merged;
      continue;
    }
    out[k] = strategicMergePatch(cur, v);
  }
  return out;
}

function unescapePointer(seg: string): string {
  return seg.replace(/~1/g, '/').replace(/~0/g, '~');
}

function parsePointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw badRequest(`invalid JSON pointer: ${path}`);
  return path.slice(1).split('/').map(unescapePointer);
}

function jsonPatchError(message: string): ApiError {
  return new ApiError(422, 'Invalid', message);
}

function getAt(doc: Json, path: string[]): Json | undefined {
  let cur: Json | undefined = doc;
  for (const seg of path) {
    if (Array.isArray(cur)) cur = cur[Number(seg)];
    else if (isObject(cur)) cur = Object.hasOwn(cur, seg) ? cur[seg] : undefined;
    else return undefined;
  }
  return cur;
}

function parentOf(doc: Json, path: string[], op: string, full: string): { parent: JsonObject | Json[]; last: string } {
  if (path.length === 0) throw jsonPatchError(`jsonpatch ${op} operation does not apply to the root: ${full}`);
  const parent = getAt(doc, path.slice(0, -1));
  if (!isObject(parent) && !Array.isArray(parent)) {
    throw jsonPatchError(`jsonpatch ${op} operation does not apply: doc is missing path: "${full}"`);
  }
  return { parent, last: path[path.length - 1] };
}

function arrayIndex(arr: Json[], last: string, allowEnd: boolean, full: string): number {
  if (last === '-' && allowEnd) return arr.length;
  if (!/^(0|[1-9]\d*)$/.test(last)) throw jsonPatchError(`invalid array index in path "${full}"`);
  const i = Number(last);
  if (i > arr.length || (!allowEnd && i === arr.length)) {
    throw jsonPatchError(`unable to access invalid index: ${i} in path "${full}"`);
  }
  return i;
}

function add(doc: Json, path: string[], value: Json, full: string): Json {
  if (path.length === 0) return structuredClone(value);
  const { parent, last } = parentOf(doc, path, 'add', full);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, true, full), 0, structuredClone(value));
  else parent[last] = structuredClone(value);
  return doc;
}

function remove(doc: Json, path: string[], full: string): Json {
  const { parent, last } = parentOf(doc, path, 'remove', full);
  if (Array.isArray(parent)) parent.splice(arrayIndex(parent, last, false, full), 1);
  else {
    if (!Object.hasOwn(parent, last)) {
      throw jsonPatchError(`jsonpatch remove operation does not apply: doc is missing key: ${full}`);
    }
    delete parent[last];
  }
  return doc;
}

function deepEqual(a: unknown, b: unknown): boolean {
  return JSON.stringify(canonical(a)) === JSON.stringify(canonical(b));
}

function canonical(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(canonical);
  if (isObject(v))
    return Object.fromEntries(
      Object.keys(v)
        .sort()
        .map((k) => [k, canonical(v[k])]),
    );
  return v;
}

export function jsonPatch(target: Json, ops: Json): Json {
  if (!Array.isArray(ops)) throw badRequest('json: cannot unmarshal object into Go value of type jsonpatch.Patch');
  let doc = structuredClone(target);
  for (const raw of ops) {
    if (!isObject(raw) || typeof raw.op !== 'string' || typeof raw.path !== 'string') {
      throw badRequest(`invalid JSON patch operation: ${JSON.stringify(raw)}`);
    }
    const full = raw.path;
    const path = parsePointer(full);
    switch (raw.op) {
      case 'add':
        doc = add(doc, path, raw.value ?? null, full);
        break;
      case 'remove':
        doc = remove(doc, path, full);
        break;
      case 'replace': {
        if (getAt(doc, path) === undefined) {
          throw jsonPatchError(`jsonpatch replace operation does not apply: doc is missing key: ${full}`);
        }
        if (path.length === 0) doc = structuredClone(raw.value ?? null);
        else {
          const { parent, last } = parentOf(doc, path, 'replace', full);
          if (Array.isArray(parent)) parent[arrayIndex(parent, last, false, full)] = structuredClone(raw.value ?? null);
          else parent[last] = structuredClone(raw.value ?? null);
        }
        break;
      }
      case 'move':
      case 'copy': {
        if (typeof raw.from !== 'string') throw badRequest(`jsonpatch ${raw.op} operation needs "from"`);
        const from = parsePointer(raw.from);
        const value = getAt(doc, from);
        if (value === undefined) {
          throw jsonPatchError(`jsonpatch ${raw.op} operation does not apply: doc is missing from path: ${raw.from}`);
        }
        if (raw.op === 'move') doc = remove(doc, from, raw.from);
        doc = add(doc, path, value, full);
        break;
      }
      case 'test':
        if (!deepEqual(getAt(doc, path), raw.value)) {
          throw jsonPatchError(
            `the server rejected our request due to an error in our request: testing value ${full} failed`,
          );
        }
        break;
      default:
        throw badRequest(`Unexpected kind: ${raw.op}`);
    }
  }
  return doc;
}

export { canonical, deepEqual };
