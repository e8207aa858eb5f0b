// The resource types the server knows: where they live in the URL space and what they carry.

export interface ResourceType {
  /** '' for the core group. */
  group: string;
  version: string;
  plural: string;
  singular: string;
  kind: string;
  namespaced: boolean;
  /** Has a `status` the main resource may not change (a status subresource). */
  hasStatus: boolean;
  /** Has a `spec` whose changes bump metadata.generation. */
  hasSpec: boolean;
  /** Answer a DELETE with the object rather than a Status (as the real server does for these). */
  deleteReturnsObject: boolean;
  shortNames?: string[];
}

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  deletionGracePeriodSeconds?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
  finalizers?: string[];
  [key: string]: unknown;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

/** Any stored object. Fields beyond metadata are checked by each kind's strategy. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta & { name: string; uid: string; resourceVersion: string; creationTimestamp: string };
  spec?: any;
  status?: any;
  [key: string]: unknown;
}

const r = (
  group: string,
  version: string,
  plural: string,
  kind: string,
  namespaced: boolean,
  extra: Partial<ResourceType> = {},
): ResourceType => ({
  group,
  version,
  plural,
  singular: kind.toLowerCase(),
  kind,
  namespaced,
  hasStatus: false,
  hasSpec: false,
  deleteReturnsObject: false,
  ...extra,
});

export const RESOURCES: ResourceType[] = [
  r('', 'v1', 'namespaces', 'Namespace', false, {
    hasStatus: true,
    deleteReturnsObject: true,
    shortNames: ['ns'],
  }),
  r('', 'v1', 'nodes', 'Node', false, { hasStatus: true, hasSpec: true, shortNames: ['no'] }),
  r('', 'v1', 'pods', 'Pod', true, { hasStatus: true, hasSpec: true, deleteReturnsObject: true, shortNames: ['po'] }),
  r('', 'v1', 'services', 'Service', true, {
    hasStatus: true,
    hasSpec: true,
    deleteReturnsObject: true,
    shortNames: ['svc'],
  }),
  r('', 'v1', 'secrets', 'Secret', true),
  r('', 'v1', 'configmaps', 'ConfigMap', true, { shortNames: ['cm'] }),
  r('', 'v1', 'events', 'Event', true, { shortNames: ['ev'] }),
  r('', 'v1', 'serviceaccounts', 'ServiceAccount', true, { shortNames: ['sa'] }),
  r('', 'v1', 'persistentvolumeclaims', 'PersistentVolumeClaim', true, {
    hasStatus: true,
    hasSpec: true,
    shortNames: ['pvc'],
  }),
  r('apps', 'v1', 'statefulsets', 'StatefulSet', true, { hasStatus: true, hasSpec: true, shortNames: ['sts'] }),
  r('apps', 'v1', 'controllerrevisions', 'ControllerRevision', true),
];

export const apiVersionOf = (t: ResourceType) => (t.group ? `${t.group}/${t.version}` : t.version);

export function resourceByPath(group: string, version: string, plural: string): ResourceType | undefined {
  return RESOURCES.find((t) => t.group === group && t.version === version && t.plural === plural);
}

export function resourceByKind(apiVersion: string, kind: string): ResourceType | undefined {
  return RESOURCES.find((t) => apiVersionOf(t) === apiVersion && t.kind === kind);
}

export function resourceByName(plural: string): ResourceType {
  const t = RESOURCES.find((x) => x.plural === plural);
  if (!t) throw new Error(`unknown resource ${plural}`);
  return t;
}

export const resourceKey = (t: ResourceType) => `${t.plural}.${t.group}`;
