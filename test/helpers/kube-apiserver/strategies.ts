// Per-kind rules applied on create and update: defaults, validation, immutable fields, the status
// an object starts with. What a real server's registry strategies do, for the kinds served here.

import { randomInt } from 'node:crypto';
import { forbiddenField, invalidValue, required, type StatusCause } from './api-error.ts';
import { deepEqual } from './patch.ts';
import type { KubeObject } from './resources.ts';
import { labelSelectorObject } from './selectors.ts';

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const CONFIG_KEY = /^[-._a-zA-Z0-9]+$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;

export interface StrategyContext {
  /** A free ClusterIP for a new Service. */
  allocateClusterIP(): string;
  nodeName: string;
}

export interface Strategy {
  /** Names must be DNS labels (namespaces, services) rather than DNS subdomains. */
  dnsLabelName?: boolean;
  validate?(obj: KubeObject, old: KubeObject | undefined): StatusCause[];
  prepareForCreate?(obj: KubeObject, ctx: StrategyContext): void;
  /** Fix up an update: carry over allocated values, refuse changes to immutable fields. */
  prepareForUpdate?(obj: KubeObject, old: KubeObject): StatusCause[];
  initialStatus?(obj: KubeObject): unknown;
}

function validateLabels(obj: KubeObject): StatusCause[] {
  const causes: StatusCause[] = [];
  for (const [k, v] of Object.entries(obj.metadata.labels ?? {})) {
    if (typeof v !== 'string' || v.length > 63 || !LABEL_VALUE.test(v)) {
      causes.push(invalidValue(`metadata.labels`, v, `a valid label value must be 63 characters or less (key ${k})`));
    }
  }
  return causes;
}

function validateContainers(containers: any, field: string, optional = false): StatusCause[] {
  if (containers === undefined && optional) return [];
  if (!Array.isArray(containers) || containers.length === 0) return optional ? [] : [required(field)];
  const causes: StatusCause[] = [];
  const seen = new Set<string>();
  containers.forEach((c, i) => {
    if (!c || typeof c !== 'object') {
      causes.push(invalidValue(`${field}[${i}]`, c, 'must be an object'));
      return;
    }
    if (!c.name) causes.push(required(`${field}[${i}].name`));
    else if (!DNS_LABEL.test(c.name)) causes.push(invalidValue(`${field}[${i}].name`, c.name, 'must be a DNS label'));
    else if (seen.has(c.name))
      causes.push({
        reason: 'FieldValueDuplicate',
        message: `Duplicate value: "${c.name}"`,
        field: `${field}[${i}].name`,
      });
    seen.add(c.name);
    if (!c.image) causes.push(required(`${field}[${i}].image`));
    if (c.env !== undefined && !Array.isArray(c.env))
      causes.push(invalidValue(`${field}[${i}].env`, c.env, 'must be a list'));
  });
  return causes;
}

function validatePodSpec(spec: any, field: string): StatusCause[] {
  if (!spec || typeof spec !== 'object') return [required(field)];
  return [
    ...validateContainers(spec.containers, `${field}.containers`),
    ...validateContainers(spec.initContainers, `${field}.initContainers`, true),
  ];
}

const POD_MUTABLE = (spec: Record<string, unknown>) => {
  // What may change on a running pod: container images, activeDeadlineSeconds, tolerations additions.
  const s = structuredClone(spec) as Record<string, unknown> & {
    containers?: { image?: string }[];
    initContainers?: { image?: string }[];
  };
  for (const c of s.containers ?? []) delete c.image;
  for (const c of s.initContainers ?? []) delete c.image;
  delete s.activeDeadlineSeconds;
  delete s.tolerations;
  return s;
};

const pods: Strategy = {
  validate(obj) {
    return [...validateLabels(obj), ...validatePodSpec(obj.spec, 'spec')];
  },
  prepareForCreate(obj, ctx) {
    obj.spec.nodeName ??= ctx.nodeName;
    obj.spec.restartPolicy ??= 'Always';
    obj.spec.terminationGracePeriodSeconds ??= 30;
    obj.spec.dnsPolicy ??= 'ClusterFirst';
    obj.spec.schedulerName ??= 'default-scheduler';
    obj.spec.serviceAccountName ??= 'default';
    for (const c of obj.spec.containers ?? []) {
      c.imagePullPolicy ??=
        String(c.image).endsWith(':latest') || !String(c.image).includes(':') ? 'Always' : 'IfNotPresent';
      c.terminationMessagePath ??= '/dev/termination-log';
      c.terminationMessagePolicy ??= 'File';
      c.resources ??= {};
    }
  },
  prepareForUpdate(obj, old) {
    if (!deepEqual(POD_MUTABLE(obj.spec ?? {}), POD_MUTABLE(old.spec ?? {}))) {
      return [
        forbiddenField(
          'spec',
          'pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations)',
        ),
      ];
    }
    return [];
  },
  initialStatus: () => ({ phase: 'Pending', qosClass: 'BestEffort' }),
};

const services: Strategy = {
  dnsLabelName: true,
  validate(obj) {
    const causes = validateLabels(obj);
    const spec = obj.spec;
    if (!spec || typeof spec !== 'object') return [...causes, required('spec')];
    const type = spec.type ?? 'ClusterIP';
    if (!['ClusterIP', 'NodePort', 'LoadBalancer', 'ExternalName'].includes(type)) {
      causes.push({ reason: 'FieldValueNotSupported', message: `Unsupported value: "${type}"`, field: 'spec.type' });
    }
    const ports = spec.ports ?? [];
    if (!Array.isArray(ports)) causes.push(invalidValue('spec.ports', ports, 'must be a list'));
    else {
      if (ports.length === 0 && spec.clusterIP !== 'None' && type !== 'ExternalName')
        causes.push(required('spec.ports'));
      ports.forEach((p: { port?: unknown; name?: string }, i: number) => {
        if (typeof p.port !== 'number' || p.port < 1 || p.port > 65535) {
          causes.push(invalidValue(`spec.ports[${i}].port`, p.port, 'must be between 1 and 65535, inclusive'));
        }
        if (ports.length > 1 && !p.name) causes.push(required(`spec.ports[${i}].name`));
      });
    }
    return causes;
  },
  prepareForCreate(obj, ctx) {
    const spec = obj.spec;
    spec.type ??= 'ClusterIP';
    spec.sessionAffinity ??= 'None';
    spec.ipFamilies ??= ['IPv4'];
    spec.ipFamilyPolicy ??= 'SingleStack';
    spec.internalTrafficPolicy ??= 'Cluster';
    if (!spec.clusterIP) spec.clusterIP = ctx.allocateClusterIP();
    spec.clusterIPs = [spec.clusterIP];
    for (const p of spec.ports ?? []) {
      p.protocol ??= 'TCP';
      p.targetPort ??= p.port;
    }
  },
  prepareForUpdate(obj, old) {
    const spec = obj.spec ?? {};
    obj.spec = spec;
    // Like the real server: an update that leaves the allocated address out keeps it.
    if (!spec.clusterIP) spec.clusterIP = old.spec.clusterIP;
    if (!spec.clusterIPs) spec.clusterIPs = old.spec.clusterIPs;
    spec.type ??= 'ClusterIP';
    spec.sessionAffinity ??= old.spec.sessionAffinity ?? 'None';
    for (const p of spec.ports ?? []) {
      p.protocol ??= 'TCP';
      p.targetPort ??= p.port;
    }
    if (spec.clusterIP !== old.spec.clusterIP) {
      return [
        { reason: 'FieldValueInvalid', message: 'Invalid value: field is immutable', field: 'spec.clusterIPs[0]' },
      ];
    }
    return [];
  },
  initialStatus: () => ({ loadBalancer: {} }),
};

function validateDataKeys(obj: KubeObject, field: 'data' | 'stringData' | 'binaryData'): StatusCause[] {
  const data = obj[field];
  if (data === undefined || data === null) return [];
  if (typeof data !== 'object' || Array.isArray(data)) return [invalidValue(field, data, 'must be a map')];
  const causes: StatusCause[] = [];
  for (const [k, v] of Object.entries(data)) {
    if (!CONFIG_KEY.test(k))
      causes.push(
        invalidValue(
          `${field}[${k}]`,
          k,
          "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
        ),
      );
    if (typeof v !== 'string') causes.push(invalidValue(`${field}[${k}]`, v, 'must be a string'));
    else if (
      field !== 'stringData' &&
      (obj.kind === 'Secret' || field === 'binaryData') &&
      !/^[A-Za-z0-9+/]*={0,2}$/.test(v)
    ) {
      causes.push(invalidValue(`${field}[${k}]`, '<value>', 'illegal base64 data'));
    }
  }
  return causes;
}

const secrets: Strategy = {
  validate(obj, old) {
    const causes = [...validateLabels(obj), ...validateDataKeys(obj, 'data'), ...validateDataKeys(obj, 'stringData')];
    if (old && (old.type ?? 'Opaque') !== (obj.type ?? 'Opaque')) {
      causes.push({ reason: 'FieldValueInvalid', message: 'Invalid value: field is immutable', field: 'type' });
    }
    if (old?.immutable === true && !deepEqual(old.data ?? {}, obj.data ?? {})) {
      causes.push(forbiddenField('data', 'field is immutable when `immutable` is set'));
    }
    return causes;
  },
  prepareForCreate(obj) {
    foldStringData(obj);
  },
  prepareForUpdate(obj) {
    foldStringData(obj);
    return [];
  },
};

// stringData is write-only: merged into data (base64) and never stored.
function foldStringData(obj: KubeObject): void {
  obj.type ??= 'Opaque';
  const sd = obj.stringData as Record<string, string> | undefined;
  if (sd && typeof sd === 'object') {
    const data = (obj.data ?? {}) as Record<string, string>;
    for (const [k, v] of Object.entries(sd)) data[k] = Buffer.from(String(v), 'utf8').toString('base64');
    obj.data = data;
  }
  delete obj.stringData;
}

const configmaps: Strategy = {
  validate(obj, old) {
    const causes = [...validateLabels(obj), ...validateDataKeys(obj, 'data'), ...validateDataKeys(obj, 'binaryData')];
    if (
      old?.immutable === true &&
      (!deepEqual(old.data ?? {}, obj.data ?? {}) || !deepEqual(old.binaryData ?? {}, obj.binaryData ?? {}))
    ) {
      causes.push(forbiddenField('data', 'field is immutable when `immutable` is set'));
    }
    return causes;
  },
};

const statefulsets: Strategy = {
  validate(obj) {
    const causes = validateLabels(obj);
    const spec = obj.spec;
    if (!spec || typeof spec !== 'object') return [...causes, required('spec')];
    if (obj.metadata.name.length > 52) {
      causes.push(invalidValue('metadata.name', obj.metadata.name, 'must be no more than 52 characters'));
    }
    if (spec.replicas !== undefined && (!Number.isInteger(spec.replicas) || spec.replicas < 0)) {
      causes.push(invalidValue('spec.replicas', spec.replicas, 'must be greater than or equal to 0'));
    }
    if (!spec.selector || typeof spec.selector !== 'object') causes.push(required('spec.selector'));
    else if (
      Object.keys(spec.selector.matchLabels ?? {}).length === 0 &&
      (spec.selector.matchExpressions ?? []).length === 0
    ) {
      causes.push(invalidValue('spec.selector', spec.selector, 'empty selector is invalid for statefulset'));
    } else if (!labelSelectorObject(spec.selector)(spec.template?.metadata?.labels ?? {})) {
      causes.push(
        invalidValue(
          'spec.template.metadata.labels',
          spec.template?.metadata?.labels ?? {},
          '`selector` does not match template `labels`',
        ),
      );
    }
    causes.push(...validatePodSpec(spec.template?.spec, 'spec.template.spec'));
    const policy = spec.podManagementPolicy;
    if (policy !== undefined && policy !== 'OrderedReady' && policy !== 'Parallel') {
      causes.push({
        reason: 'FieldValueNotSupported',
        message: `Unsupported value: "${policy}": supported values: "OrderedReady", "Parallel"`,
        field: 'spec.podManagementPolicy',
      });
    }
    const strategy = spec.updateStrategy?.type;
    if (strategy !== undefined && strategy !== 'RollingUpdate' && strategy !== 'OnDelete') {
      causes.push({
        reason: 'FieldValueNotSupported',
        message: `Unsupported value: "${strategy}": supported values: "OnDelete", "RollingUpdate"`,
        field: 'spec.updateStrategy.type',
      });
    }
    const partition = spec.updateStrategy?.rollingUpdate?.partition;
    if (partition !== undefined && (!Number.isInteger(partition) || partition < 0)) {
      causes.push(
        invalidValue('spec.updateStrategy.rollingUpdate.partition', partition, 'must be greater than or equal to 0'),
      );
    }
    return causes;
  },
  prepareForCreate(obj) {
    defaultStatefulSet(obj);
  },
  prepareForUpdate(obj, old) {
    defaultStatefulSet(obj);
    // Only replicas, template, updateStrategy, persistentVolumeClaimRetentionPolicy, minReadySeconds, ordinals may change.
    const frozen = (s: Record<string, unknown>) => {
      const {
        replicas,
        template,
        updateStrategy,
        persistentVolumeClaimRetentionPolicy,
        minReadySeconds,
        ordinals,
        revisionHistoryLimit,
        ...rest
      } = s;
      return rest;
    };
    if (!deepEqual(frozen(obj.spec), frozen(old.spec))) {
      return [
        forbiddenField(
          'spec',
          "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        ),
      ];
    }
    return [];
  },
  initialStatus: () => ({ replicas: 0, availableReplicas: 0 }),
};

function defaultStatefulSet(obj: KubeObject): void {
  const spec = obj.spec;
  spec.replicas ??= 1;
  spec.podManagementPolicy ??= 'OrderedReady';
  spec.revisionHistoryLimit ??= 10;
  spec.updateStrategy ??= { type: 'RollingUpdate' };
  if (spec.updateStrategy.type === 'RollingUpdate') {
    spec.updateStrategy.rollingUpdate ??= {};
    spec.updateStrategy.rollingUpdate.partition ??= 0;
  }
  spec.persistentVolumeClaimRetentionPolicy ??= { whenDeleted: 'Retain', whenScaled: 'Retain' };
  spec.template ??= {};
  spec.template.metadata ??= {};
  if (spec.template.spec)
    pods.prepareForCreate?.({ spec: spec.template.spec } as KubeObject, { allocateClusterIP: () => '', nodeName: '' });
  if (spec.template.spec) delete spec.template.spec.nodeName;
}

const namespaces: Strategy = {
  dnsLabelName: true,
  validate: validateLabels,
  prepareForCreate(obj) {
    obj.spec = { finalizers: ['kubernetes'] };
    obj.metadata.labels = { ...(obj.metadata.labels ?? {}), 'kubernetes.io/metadata.name': obj.metadata.name };
  },
  prepareForUpdate(obj, old) {
    obj.spec = old.spec;
    obj.metadata.labels = { ...(obj.metadata.labels ?? {}), 'kubernetes.io/metadata.name': obj.metadata.name };
    return [];
  },
  initialStatus: () => ({ phase: 'Active' }),
};

export const STRATEGIES: Record<string, Strategy> = {
  pods,
  services,
  secrets,
  configmaps,
  statefulsets,
  namespaces,
};

export function nameCauses(name: string, dnsLabel: boolean): StatusCause[] {
  if (dnsLabel) {
    return name.length <= 63 && DNS_LABEL.test(name)
      ? []
      : [
          invalidValue(
            'metadata.name',
            name,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
          ),
        ];
  }
  return name.length <= 253 && DNS_SUBDOMAIN.test(name)
    ? []
    : [
        invalidValue(
          'metadata.name',
          name,
          "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ),
      ];
}

const NAME_SUFFIX_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';
export function randomSuffix(n = 5): string {
  let s = '';
  for (let i = 0; i < n; i++) s += NAME_SUFFIX_ALPHABET[randomInt(NAME_SUFFIX_ALPHABET.length)];
  return s;
}
