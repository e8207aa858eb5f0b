// Label and field selectors, parsed as the API server parses them.

import { badRequest } from './api-error.ts';
import type { KubeObject } from './resources.ts';

type Requirement =
  | { key: string; op: 'eq' | 'ne'; value: string }
  | { key: string; op: 'in' | 'notin'; values: string[] }
  | { key: string; op: 'exists' | 'notexists' };

export type Selector = (obj: KubeObject) => boolean;

// Splits on commas that are not inside parentheses: `a in (x,y),b=c`.
function splitTerms(s: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of s) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else {
      cur += ch;
    }
  }
  out.push(cur);
  return out.map((t) => t.trim()).filter(Boolean);
}

function parseLabelRequirement(term: string): Requirement {
  let m = /^([^\s!=]+)\s*(==|=|!=)\s*([^\s]*)$/.exec(term);
  if (m) return { key: m[1], op: m[2] === '!=' ? 'ne' : 'eq', value: m[3] };
  m = /^([^\s!=]+)\s+(in|notin)\s*\(([^)]*)\)$/.exec(term);
  if (m) {
    const values = m[3]
      .split(',')
      .map((v) => v.trim())
      .filter(Boolean);
    return { key: m[1], op: m[2] as 'in' | 'notin', values };
  }
  m = /^(!?)\s*([^\s!=(),]+)$/.exec(term);
  if (m) return { key: m[2], op: m[1] ? 'notexists' : 'exists' };
  throw badRequest(`unable to parse requirement: found '${term}', expected: in, notin, =, ==, !=, gt, lt`);
}

function matches(req: Requirement, labels: Record<string, string>): boolean {
  const has = Object.hasOwn(labels, req.key);
  const v = labels[req.key];
  switch (req.op) {
    case 'eq':
      return has && v === req.value;
    case 'ne':
      return !has || v !== req.value;
    case 'in':
      return has && req.values.includes(v);
    case 'notin':
      return !has || !req.values.includes(v);
    case 'exists':
      return has;
    case 'notexists':
      return !has;
  }
}

export function parseLabelSelector(s: string | null | undefined): Selector {
  if (!s) return () => true;
  const reqs = splitTerms(s).map(parseLabelRequirement);
  return (obj) => reqs.every((r) => matches(r, obj.metadata.labels ?? {}));
}

/** A LabelSelector object (matchLabels/matchExpressions) as a predicate on labels. */
export function labelSelectorObject(sel: {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}): (labels: Record<string, string>) => boolean {
  const reqs: Requirement[] = [];
  for (const [key, value] of Object.entries(sel.matchLabels ?? {})) reqs.push({ key, op: 'eq', value });
  for (const e of sel.matchExpressions ?? []) {
    const op = e.operator.toLowerCase();
    if (op === 'in' || op === 'notin') reqs.push({ key: e.key, op, values: e.values ?? [] });
    else if (op === 'exists') reqs.push({ key: e.key, op: 'exists' });
    else if (op === 'doesnotexist') reqs.push({ key: e.key, op: 'notexists' });
  }
  return (labels) => reqs.every((r) => matches(r, labels));
}

/** `app=x,tier in (a,b)`: how a Scale's status.selector spells a LabelSelector. */
export function labelSelectorString(sel: {
  matchLabels?: Record<string, string>;
  matchExpressions?: { key: string; operator: string; values?: string[] }[];
}): string {
  const parts = Object.entries(sel.matchLabels ?? {}).map(([k, v]) => `${k}=${v}`);
  for (const e of sel.matchExpressions ?? []) {
    const op = e.operator.toLowerCase();
    if (op === 'exists') parts.push(e.key);
    else if (op === 'doesnotexist') parts.push(`!${e.key}`);
    else parts.push(`${e.key} ${op} (${(e.values ?? []).join(',')})`);
  }
  return parts.join(',');
}

const FIELDS: Record<string, (o: KubeObject) => string | undefined> = {
  'metadata.name': (o) => o.metadata.name,
  'metadata.namespace': (o) => o.metadata.namespace,
  'status.phase': (o) => o.status?.phase,
  'spec.nodeName': (o) => o.spec?.nodeName,
  'involvedObject.name': (o) => (o.involvedObject as { name?: string } | undefined)?.name,
  'involvedObject.kind': (o) => (o.involvedObject as { kind?: string } | undefined)?.kind,
  'involvedObject.uid': (o) => (o.involvedObject as { uid?: string } | undefined)?.uid,
  type: (o) => o.type as string | undefined,
};

export function parseFieldSelector(s: string | null | undefined): Selector {
  if (!s) return () => true;
  const preds = splitTerms(s).map((term) => {
    const m = /^([^\s!=]+)\s*(==|=|!=)\s*(.*)$/.exec(term);
    if (!m) throw badRequest(`invalid selector: '${s}'; can't understand '${term}'`);
    const get = FIELDS[m[1]];
    if (!get) throw badRequest(`field label not supported: ${m[1]}`);
    const want = m[3].trim();
    const neg = m[2] === '!=';
    return (o: KubeObject) => ((get(o) ?? '') === want) !== neg;
  });
  return (obj) => preds.every((p) => p(obj));
}
