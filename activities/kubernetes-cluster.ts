// A Kubernetes cloud: its kubeconfig (kept sealed in the store), and the objects
// charmflow makes on its cluster for a model (a namespace) and for each application
// (a StatefulSet, a headless Service for the pods, a Service for the open ports).
// Every object charmflow makes carries its labels, so a model's teardown finds
// exactly what it made, and nothing else, by label.
//
// Every call is safe to repeat: a create that meets 409 reads what exists and
// reconciles it; an update that meets 409 (someone changed the object meanwhile)
// reads it again and retries.
import { createHash } from 'node:crypto';
import {
  ApiException,
  AppsV1Api,
  CoreV1Api,
  KubeConfig,
  type V1Container,
  type V1Pod,
  type V1Service,
  type V1ServicePort,
  type V1StatefulSet,
} from '@kubernetes/client-node';
import type { Db } from '../store/store.ts';

export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY = 'charmflow';
export const MODEL_LABEL = 'charmflow.io/model-uuid';
export const APP_LABEL = 'charmflow.io/application';
export const REVISION_ANNOTATION = 'charmflow.io/charm-revision';
/** The container hooks run in: the charm's own, beside the workload containers. */
export const CHARM_CONTAINER = 'charm';
/** Where charmflow keeps its files in the charm container (an emptyDir, so a container restart keeps them). */
export const POD_ROOT_DIR = '/var/lib/charmflow';
/** Has sh, tar and python3: all the hook runtime asks. */
export const DEFAULT_CHARM_IMAGE = 'python:3.12-slim';
/** The charm container does nothing by itself: hooks are exec'd into it. */
const CHARM_CONTAINER_COMMAND = ['sh', '-c', 'trap "exit 0" TERM INT; while :; do sleep 3600 & wait $!; done'];
/** Juju's trick: a Service needs a port, so one that nothing listens on stands in until a charm opens one. */
const PLACEHOLDER_PORT: V1ServicePort = { name: 'placeholder', port: 65535, protocol: 'TCP' };
const CREDENTIAL_NAME = 'default';
const AUTH_TYPE = 'kubeconfig';

/** A kubeconfig that cannot be used: not YAML, no such context, no cluster behind it. */
export class KubeconfigError extends Error {
  readonly type = 'KubeconfigInvalid';
}

/** The cluster behind a kubeconfig did not answer, or refused the credentials. */
export class ClusterUnreachableError extends Error {
  readonly type = 'ClusterUnreachable';
}

export interface ParsedKubeconfig {
  /** A kubeconfig with only the chosen context, its cluster and user. */
  kubeconfig: string;
  context: string;
  server: string;
}

/** Reads a kubeconfig and keeps the one context asked for (default: its current one). */
export function parseKubeconfig(text: string, context?: string): ParsedKubeconfig {
  const kc = new KubeConfig();
  try {
    kc.loadFromString(text);
  } catch (err) {
    throw new KubeconfigError(`the kubeconfig cannot be read: ${err instanceof Error ? err.message : String(err)}`);
  }
  const contexts = kc.getContexts();
  if (contexts.length === 0) throw new KubeconfigError('the kubeconfig has no contexts');
  const name = context ?? kc.getCurrentContext();
  if (!name) {
    throw new KubeconfigError(
      `the kubeconfig has no current context; name one with --context (${contexts.map((c) => c.name).join(', ')})`,
    );
  }
  const ctx = kc.getContextObject(name);
  if (!ctx) {
    throw new KubeconfigError(
      `the kubeconfig has no context "${name}"; its contexts are: ${contexts.map((c) => c.name).join(', ')}`,
    );
  }
  const cluster = kc.getCluster(ctx.cluster);
  if (!cluster) throw new KubeconfigError(`context "${name}" names cluster "${ctx.cluster}", which is not defined`);
  const user = ctx.user ? kc.getUser(ctx.user) : null;
  if (ctx.user && !user) throw new KubeconfigError(`context "${name}" names user "${ctx.user}", which is not defined`);
  if (!/^https?:\/\//.test(cluster.server)) {
    throw new KubeconfigError(`cluster "${cluster.name}" has no usable server URL ("${cluster.server}")`);
  }
  const only = new KubeConfig();
  only.loadFromOptions({
    clusters: [cluster],
    users: user ? [user] : [],
    contexts: [ctx],
    currentContext: ctx.name,
  });
  return { kubeconfig: only.exportConfig(), context: ctx.name, server: cluster.server };
}

/** A KubeConfig from the text parseKubeconfig kept. */
export function loadKubeconfig(text: string): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromString(text);
  return kc;
}

function errorText(err: unknown): string {
  if (err instanceof ApiException) {
    const body = err.body as { message?: string } | string | undefined;
    const msg = typeof body === 'object' && body?.message ? body.message : String(body ?? '').slice(0, 200);
    return `HTTP ${err.code}${msg ? `: ${msg}` : ''}`;
  }
  const e = err as { message?: string; cause?: { message?: string; code?: string } };
  const cause = e.cause?.code ?? e.cause?.message;
  return `${e.message ?? String(err)}${cause ? ` (${cause})` : ''}`;
}

async function within<T>(ms: number, what: string, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms / 1000} s`)), ms);
  });
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Checks that the cluster answers and takes the credentials (listing namespaces). */
export async function checkCluster(kc: KubeConfig): Promise<void> {
  const server = kc.getCurrentCluster()?.server ?? '?';
  try {
    await within(10_000, `cluster ${server}`, kc.makeApiClient(CoreV1Api).listNamespace({ limit: 1 }));
  } catch (err) {
    throw new ClusterUnreachableError(`cannot reach the cluster at ${server}: ${errorText(err)}`);
  }
}

/** What a kubernetes cloud's row and credential hold. */
export async function storeKubernetesCloud(
  db: Db,
  seal: (v: string) => string,
  name: string,
  parsed: ParsedKubeconfig,
): Promise<void> {
  await db.transaction().execute(async (tx) => {
    await tx.insertInto('clouds').values({ name, type: 'kubernetes', endpoint: parsed.server }).execute();
    await tx
      .insertInto('credentials')
      .values({
        cloud: name,
        name: CREDENTIAL_NAME,
        auth_type: AUTH_TYPE,
        attributes: JSON.stringify({ kubeconfig: seal(parsed.kubeconfig), context: seal(parsed.context) }),
      })
      .execute();
  });
}

/** The kubeconfig of a kubernetes cloud, opened. */
export async function cloudKubeconfig(db: Db, open: (v: string) => string, cloud: string): Promise<KubeConfig> {
  const row = await db
    .selectFrom('credentials')
    .select('attributes')
    .where('cloud', '=', cloud)
    .where('name', '=', CREDENTIAL_NAME)
    .executeTakeFirst();
  const sealed = row?.attributes.kubeconfig;
  if (!sealed) throw new KubeconfigError(`cloud "${cloud}" has no kubeconfig credential`);
  return loadKubeconfig(open(sealed));
}

/** A model's namespace: its name (model names are DNS labels already). */
export function modelNamespace(modelName: string): string {
  return modelName;
}

/** The pod of unit `app/N`: the StatefulSet's N-th. */
export function unitPod(unit: string): string {
  const [app, n] = unit.split('/');
  return `${app}-${n}`;
}

const isStatus = (err: unknown, code: number) => err instanceof ApiException && err.code === code;
export const isNotFound = (err: unknown) => isStatus(err, 404);
const isConflict = (err: unknown) => isStatus(err, 409);

/** Reads, or undefined on 404. */
async function readOrNone<T>(read: () => Promise<T>): Promise<T | undefined> {
  try {
    return await read();
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** Deletes; a 404 (gone already) is fine. */
async function deleteIfThere(del: () => Promise<unknown>): Promise<void> {
  try {
    await del();
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

/** read → change → replace, again while the object changed underneath (409). */
async function updateLoop<T extends { metadata?: { resourceVersion?: string } }>(
  read: () => Promise<T>,
  change: (obj: T) => boolean,
  replace: (obj: T) => Promise<T>,
): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    const obj = await read();
    if (!change(obj)) return obj;
    try {
      return await replace(obj);
    } catch (err) {
      if (!isConflict(err) || attempt >= 10) throw err;
    }
  }
}

export interface WorkloadContainer {
  name: string;
  image: string;
}

/** The workload containers `metadata.yaml` asks for, each with its OCI image resource's `upstream-source`. */
export function workloadContainers(meta: {
  containers: Record<string, Record<string, unknown>>;
  resources: Record<string, Record<string, unknown>>;
}): { containers: WorkloadContainer[]; problems: string[] } {
  const containers: WorkloadContainer[] = [];
  const problems: string[] = [];
  for (const [name, spec] of Object.entries(meta.containers)) {
    if (name === CHARM_CONTAINER) {
      problems.push(`container "${name}" takes the name of charmflow's charm container`);
      continue;
    }
    const resource = typeof spec.resource === 'string' ? spec.resource : undefined;
    if (!resource) {
      problems.push(`container "${name}" names no resource (an oci-image) to run`);
      continue;
    }
    const res = meta.resources[resource];
    if (!res) {
      problems.push(`container "${name}" names resource "${resource}", which metadata.yaml does not declare`);
      continue;
    }
    if (res.type !== 'oci-image') {
      problems.push(`resource "${resource}" of container "${name}" is not an oci-image`);
      continue;
    }
    const image = typeof res['upstream-source'] === 'string' ? res['upstream-source'].trim() : '';
    if (!image) {
      problems.push(`resource "${resource}" of container "${name}" has no upstream-source image`);
      continue;
    }
    containers.push({ name, image });
  }
  return { containers, problems };
}

export interface ApplicationSpec {
  namespace: string;
  modelUuid: string;
  application: string;
  charmImage: string;
  workloads: WorkloadContainer[];
  charmRevision: number;
}

/** What the pod template is made of, hashed: a refresh changes it when the revision or images change. */
function templateOf(spec: ApplicationSpec) {
  const labels = {
    [MANAGED_BY_LABEL]: MANAGED_BY,
    [MODEL_LABEL]: spec.modelUuid,
    [APP_LABEL]: spec.application,
  };
  const containers: V1Container[] = [
    {
      name: CHARM_CONTAINER,
      image: spec.charmImage,
      command: CHARM_CONTAINER_COMMAND,
      volumeMounts: [{ name: 'charmflow', mountPath: POD_ROOT_DIR }],
    },
    ...spec.workloads.map((w) => ({ name: w.name, image: w.image })),
  ];
  return {
    metadata: { labels, annotations: { [REVISION_ANNOTATION]: String(spec.charmRevision) } },
    spec: {
      containers,
      volumes: [{ name: 'charmflow', emptyDir: {} }],
      terminationGracePeriodSeconds: 5,
      automountServiceAccountToken: false,
    },
  };
}

function labelsOf(spec: { modelUuid: string; application?: string }): Record<string, string> {
  return {
    [MANAGED_BY_LABEL]: MANAGED_BY,
    [MODEL_LABEL]: spec.modelUuid,
    ...(spec.application ? { [APP_LABEL]: spec.application } : {}),
  };
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** The ports a charm opened (`8080/tcp`, `1000-1002/udp`; icmp has no Service port) as Service ports. */
export function servicePorts(opened: string[]): V1ServicePort[] {
  const out: V1ServicePort[] = [];
  const seen = new Set<string>();
  for (const p of opened) {
    const m = /^(\d+)(?:-(\d+))?\/(tcp|udp|sctp)$/i.exec(p.trim());
    if (!m) continue;
    const proto = m[3].toUpperCase();
    const from = Number(m[1]);
    const to = Math.min(m[2] ? Number(m[2]) : from, from + 99);
    for (let port = from; port <= to; port++) {
      const name = `${proto.toLowerCase()}-${port}`;
      if (seen.has(name)) continue;
      seen.add(name);
      out.push({ name, port, targetPort: port as never, protocol: proto });
    }
  }
  return out.sort((a, b) => a.port - b.port || String(a.protocol).localeCompare(String(b.protocol)));
}

/** The cluster calls charmflow makes, on one cluster. */
export class Cluster {
  readonly core: CoreV1Api;
  readonly apps: AppsV1Api;

  constructor(readonly kc: KubeConfig) {
    this.core = kc.makeApiClient(CoreV1Api);
    this.apps = kc.makeApiClient(AppsV1Api);
  }

  /**
   * The model's namespace, made (and labelled as the model's) unless it exists.
   * A namespace that exists and is not charmflow's is used as it is, and left on
   * destroy; one another model made is refused.
   */
  async ensureNamespace(name: string, modelUuid: string): Promise<{ created: boolean }> {
    const existing = await readOrNone(() => this.core.readNamespace({ name }));
    if (existing) return this.ownNamespace(existing.metadata?.labels, name, modelUuid);
    try {
      await this.core.createNamespace({ body: { metadata: { name, labels: labelsOf({ modelUuid }) } } });
      return { created: true };
    } catch (err) {
      if (!isConflict(err)) throw err;
      const now = await this.core.readNamespace({ name });
      return this.ownNamespace(now.metadata?.labels, name, modelUuid);
    }
  }

  private ownNamespace(labels: Record<string, string> | undefined, name: string, modelUuid: string) {
    const owner = labels?.[MANAGED_BY_LABEL] === MANAGED_BY ? labels[MODEL_LABEL] : undefined;
    if (owner && owner !== modelUuid) {
      throw new KubeconfigError(`namespace "${name}" belongs to another charmflow model (${owner})`);
    }
    return { created: owner === modelUuid };
  }

  /**
   * Everything charmflow made for the model (found by its label) goes, and the
   * namespace too when charmflow made it; anything else in it stays.
   */
  async deleteModelObjects(namespace: string, modelUuid: string): Promise<{ deleted: string[] }> {
    const labelSelector = `${MANAGED_BY_LABEL}=${MANAGED_BY},${MODEL_LABEL}=${modelUuid}`;
    const deleted: string[] = [];
    const ns = await readOrNone(() => this.core.readNamespace({ name: namespace }));
    if (!ns) return { deleted };
    const sets = await this.apps.listNamespacedStatefulSet({ namespace, labelSelector });
    for (const s of sets.items) {
      await deleteIfThere(() => this.apps.deleteNamespacedStatefulSet({ namespace, name: s.metadata!.name! }));
      deleted.push(`statefulset/${s.metadata!.name}`);
    }
    const services = await this.core.listNamespacedService({ namespace, labelSelector });
    for (const s of services.items) {
      await deleteIfThere(() => this.core.deleteNamespacedService({ namespace, name: s.metadata!.name! }));
      deleted.push(`service/${s.metadata!.name}`);
    }
    const pods = await this.core.listNamespacedPod({ namespace, labelSelector });
    for (const p of pods.items) {
      await deleteIfThere(() => this.core.deleteNamespacedPod({ namespace, name: p.metadata!.name! }));
      deleted.push(`pod/${p.metadata!.name}`);
    }
    const labels = ns.metadata?.labels ?? {};
    if (labels[MANAGED_BY_LABEL] === MANAGED_BY && labels[MODEL_LABEL] === modelUuid) {
      await deleteIfThere(() => this.core.deleteNamespace({ name: namespace }));
      deleted.push(`namespace/${namespace}`);
    }
    return { deleted };
  }

  /**
   * The application's StatefulSet and Services, made or brought in line with the
   * spec: `replicas` pods (at least those it has when absent). A changed template
   * changes no running pod (OnDelete): charmflow's refresh replaces them one by one.
   */
  async ensureApplication(spec: ApplicationSpec, replicas: number): Promise<{ address: string | null }> {
    const { namespace, application: name } = spec;
    const labels = labelsOf(spec);
    const selector = { [MODEL_LABEL]: spec.modelUuid, [APP_LABEL]: name };
    await this.ensureService({
      metadata: { name: `${name}-endpoints`, namespace, labels },
      spec: { clusterIP: 'None', selector, publishNotReadyAddresses: true, ports: [PLACEHOLDER_PORT] },
    });
    await this.ensureService({
      metadata: { name, namespace, labels },
      spec: { selector, ports: [PLACEHOLDER_PORT] },
    });
    const service = await readOrNone(() => this.core.readNamespacedService({ namespace, name }));
    const ip = service?.spec?.clusterIP;
    const address = ip && ip !== 'None' ? ip : null;
    const template = templateOf(spec);
    const body: V1StatefulSet = {
      metadata: { name, namespace, labels },
      spec: {
        serviceName: `${name}-endpoints`,
        replicas,
        podManagementPolicy: 'Parallel',
        updateStrategy: { type: 'OnDelete' },
        selector: { matchLabels: selector },
        template,
      },
    };
    try {
      await this.apps.createNamespacedStatefulSet({ namespace, body });
      return { address };
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
    await updateLoop(
      () => this.apps.readNamespacedStatefulSet({ namespace, name }),
      (sts) => {
        const s = sts.spec!;
        const changed =
          s.replicas !== replicas || !sameJson(templateSignature(s.template), templateSignature(template));
        s.replicas = replicas;
        s.template = template;
        return changed;
      },
      (sts) => this.apps.replaceNamespacedStatefulSet({ namespace, name, body: sts }),
    );
    return { address };
  }

  private async ensureService(body: V1Service): Promise<void> {
    const namespace = body.metadata!.namespace!;
    try {
      await this.core.createNamespacedService({ namespace, body });
    } catch (err) {
      if (!isConflict(err)) throw err;
    }
  }

  /** The StatefulSet as it is, or undefined. */
  async readStatefulSet(namespace: string, name: string): Promise<V1StatefulSet | undefined> {
    return readOrNone(() => this.apps.readNamespacedStatefulSet({ namespace, name }));
  }

  /** Pods beyond `replicas` go (the StatefulSet controller deletes the highest ordinals). */
  async setReplicas(namespace: string, name: string, replicas: number): Promise<void> {
    const sts = await this.readStatefulSet(namespace, name);
    if (!sts) return;
    await updateLoop(
      () => this.apps.readNamespacedStatefulSet({ namespace, name }),
      (s) => {
        const changed = s.spec!.replicas !== replicas;
        s.spec!.replicas = replicas;
        return changed;
      },
      (s) => this.apps.replaceNamespacedStatefulSet({ namespace, name, body: s }),
    );
  }

  /** The application's objects go (its pods with its StatefulSet). */
  async deleteApplication(namespace: string, name: string): Promise<void> {
    await deleteIfThere(() => this.apps.deleteNamespacedStatefulSet({ namespace, name }));
    await deleteIfThere(() => this.core.deleteNamespacedService({ namespace, name }));
    await deleteIfThere(() => this.core.deleteNamespacedService({ namespace, name: `${name}-endpoints` }));
  }

  /** The application Service's ports: what its units opened (a placeholder when none). */
  async setServicePorts(namespace: string, name: string, opened: string[]): Promise<void> {
    const ports = servicePorts(opened);
    const want = ports.length > 0 ? ports : [PLACEHOLDER_PORT];
    const svc = await readOrNone(() => this.core.readNamespacedService({ namespace, name }));
    if (!svc) return;
    await updateLoop(
      () => this.core.readNamespacedService({ namespace, name }),
      (s) => {
        const have = (s.spec!.ports ?? []).map((p) => ({ name: p.name, port: p.port, protocol: p.protocol }));
        const changed = !sameJson(
          have,
          want.map((p) => ({ name: p.name, port: p.port, protocol: p.protocol })),
        );
        s.spec!.ports = want;
        return changed;
      },
      (s) => this.core.replaceNamespacedService({ namespace, name, body: s }),
    );
  }

  async readPod(namespace: string, name: string): Promise<V1Pod | undefined> {
    return readOrNone(() => this.core.readNamespacedPod({ namespace, name }));
  }

  /** Deletes the pod (its StatefulSet makes it again) and waits until that one is gone. */
  async replacePod(namespace: string, name: string, timeoutMs = 120_000): Promise<void> {
    const pod = await this.readPod(namespace, name);
    if (!pod) return;
    const uid = pod.metadata?.uid;
    await deleteIfThere(() => this.core.deleteNamespacedPod({ namespace, name }));
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const now = await this.readPod(namespace, name);
      if (!now || now.metadata?.uid !== uid) return;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`pod ${namespace}/${name} was not gone within ${timeoutMs / 1000} s`);
  }
}

/** What of a pod template decides its pods (the server adds defaults we do not compare). */
function templateSignature(
  t: V1StatefulSet['spec'] extends infer S ? (S extends { template: infer T } ? T : never) : never,
) {
  return {
    labels: t?.metadata?.labels ?? {},
    annotations: t?.metadata?.annotations ?? {},
    containers: (t?.spec?.containers ?? []).map((c) => ({ name: c.name, image: c.image, command: c.command ?? [] })),
  };
}

/** A short stable id for an opened kubeconfig (a cache key that is not the secret). */
export function kubeconfigId(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** Why a pod is not running, from its status: a pull failure names the image, for the unit's error. */
export function podProblem(pod: V1Pod): { fatal: boolean; message: string } | undefined {
  const statuses = [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])];
  for (const s of statuses) {
    const waiting = s.state?.waiting;
    if (waiting?.reason && /ErrImagePull|ImagePullBackOff|InvalidImageName|ErrImageNeverPull/.test(waiting.reason)) {
      return {
        fatal: true,
        message: `container ${s.name} cannot pull image ${s.image}: ${waiting.reason}${waiting.message ? `: ${waiting.message}` : ''}`,
      };
    }
    if (waiting?.reason === 'CreateContainerConfigError' || waiting?.reason === 'CreateContainerError') {
      return { fatal: true, message: `container ${s.name}: ${waiting.reason}: ${waiting.message ?? ''}` };
    }
  }
  if (pod.status?.phase === 'Failed') return { fatal: true, message: `pod failed: ${pod.status.message ?? ''}` };
  const unsched = pod.status?.conditions?.find((c) => c.type === 'PodScheduled' && c.status === 'False');
  if (unsched) return { fatal: false, message: `not scheduled: ${unsched.message ?? unsched.reason ?? ''}` };
  return undefined;
}

/**
 * Opens kubernetes clouds' kubeconfigs from the store for the substrate, each kept
 * a few seconds (every exec asks for one).
 */
export function kubeconfigSource(db: Db, open: (v: string) => string, ttlMs = 10_000) {
  const cache = new Map<string, { at: number; kc: Promise<KubeConfig> }>();
  return (cloud: string): Promise<KubeConfig> => {
    const hit = cache.get(cloud);
    if (hit && Date.now() - hit.at < ttlMs) return hit.kc;
    const kc = cloudKubeconfig(db, open, cloud);
    cache.set(cloud, { at: Date.now(), kc });
    kc.catch(() => cache.delete(cloud));
    return kc;
  };
}
