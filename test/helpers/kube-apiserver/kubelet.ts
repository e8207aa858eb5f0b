// The node agent: runs each pod in a sandbox, reports its status (IP, phase, readiness, image pull
// errors), and on a graceful deletion stops the pod's processes before the object goes.

import { createHash } from 'node:crypto';
import type { SandboxHost } from './pod-sandbox.ts';
import { now, type Registry, type StoredEvent } from './registry.ts';
import { type KubeObject, resourceByName } from './resources.ts';

const PODS = resourceByName('pods');
/** The most a graceful deletion waits for a pod's processes to exit after SIGTERM. */
const MAX_GRACE_MS = 3_000;
const BACKOFF_AFTER_MS = 10_000;

interface Container {
  name: string;
  image: string;
  workingDir?: string;
  env?: {
    name: string;
    value?: string;
    valueFrom?: Record<string, { name?: string; key: string; fieldPath?: string }>;
  }[];
}

export function defaultUnpullable(image: string): boolean {
  const noDigest = image.split('@')[0];
  const last = noDigest.slice(noDigest.lastIndexOf('/') + 1);
  const colon = last.lastIndexOf(':');
  return colon >= 0 && last.slice(colon + 1) === 'missing';
}

const condition = (type: string, status: 'True' | 'False', reason?: string, message?: string) => ({
  type,
  status,
  lastProbeTime: null,
  lastTransitionTime: now(),
  ...(reason ? { reason } : {}),
  ...(message ? { message } : {}),
});

const fakeDigest = (s: string) => createHash('sha256').update(s).digest('hex');

export class Kubelet {
  private readonly work = new Map<string, Promise<void>>();
  private readonly backoffTimers = new Set<NodeJS.Timeout>();
  private stopped = false;
  private readonly unsubscribe: () => void;

  constructor(
    private readonly registry: Registry,
    readonly host: SandboxHost,
    private readonly unpullable: (image: string) => boolean,
    readonly nodeName: string,
  ) {
    this.unsubscribe = registry.subscribe((ev) => this.onEvent(ev));
  }

  private onEvent(ev: StoredEvent): void {
    if (ev.resource !== PODS || this.stopped) return;
    const pod = ev.object;
    const uid = pod.metadata.uid;
    if (ev.type === 'ADDED' && !pod.metadata.deletionTimestamp) {
      this.enqueue(uid, () => this.startPod(pod));
    } else if (ev.type === 'MODIFIED' && pod.metadata.deletionTimestamp && !ev.old?.metadata.deletionTimestamp) {
      const graceMs = Math.min((pod.metadata.deletionGracePeriodSeconds ?? 30) * 1000, MAX_GRACE_MS);
      this.enqueue(uid, () => this.stopPod(pod, graceMs));
    } else if (ev.type === 'DELETED') {
      // Removed without waiting for us (grace period 0, or forced): kill what is left.
      this.enqueue(uid, () => this.host.destroy(uid, 0));
    }
  }

  // One pod's steps run in order: start, then stop.
  private enqueue(uid: string, step: () => Promise<void>): void {
    const prev = this.work.get(uid) ?? Promise.resolve();
    const next = prev
      .then(step)
      .catch((err) => {
        if (!this.stopped) console.error(`kube-apiserver kubelet: pod ${uid}:`, err);
      })
      .finally(() => {
        if (this.work.get(uid) === next) this.work.delete(uid);
      });
    this.work.set(uid, next);
  }

  private current(pod: KubeObject): KubeObject | undefined {
    const o = this.registry.get(PODS, pod.metadata.namespace, pod.metadata.name);
    return o && o.metadata.uid === pod.metadata.uid ? o : undefined;
  }

  private setStatus(pod: KubeObject, status: Record<string, unknown>): void {
    this.registry.mutate(PODS, pod.metadata.namespace, pod.metadata.name, (o) => {
      if (o.metadata.uid === pod.metadata.uid) o.status = status;
    });
  }

  private async startPod(pod: KubeObject): Promise<void> {
    if (!this.current(pod)) return;
    const spec = pod.spec;
    const sb = await this.host.start({
      podUid: pod.metadata.uid,
      namespace: pod.metadata.namespace!,
      name: pod.metadata.name,
      hostname: spec.hostname ?? pod.metadata.name,
      subdomain: spec.subdomain,
    });
    const live = this.current(pod);
    if (!live || live.metadata.deletionTimestamp || this.stopped) return; // its stop step follows
    const started = now();
    const containers = (spec.containers ?? []) as Container[];
    const pulling = containers.filter((c) => this.unpullable(c.image));
    const base = {
      hostIP: this.host.gateway ?? sb.ip,
      hostIPs: [{ ip: this.host.gateway ?? sb.ip }],
      podIP: sb.ip,
      podIPs: [{ ip: sb.ip }],
      startTime: started,
      qosClass: 'BestEffort',
      initContainerStatuses: ((spec.initContainers ?? []) as Container[]).map((c) => ({
        name: c.name,
        image: c.image,
        imageID: `${c.image}@sha256:${fakeDigest(c.image)}`,
        containerID: `containerd://${fakeDigest(`${pod.metadata.uid}/${c.name}`)}`,
        ready: true,
        restartCount: 0,
        started: false,
        state: { terminated: { exitCode: 0, reason: 'Completed', startedAt: started, finishedAt: started } },
        lastState: {},
      })),
    };
    if (base.initContainerStatuses.length === 0) delete (base as Partial<typeof base>).initContainerStatuses;
    const statusOf = (c: Container, waitingReason?: string) =>
      waitingReason
        ? {
            name: c.name,
            image: c.image,
            imageID: '',
            ready: false,
            restartCount: 0,
            started: false,
            state: {
              waiting: {
                reason: waitingReason,
                message:
                  waitingReason === 'ErrImagePull'
                    ? `failed to pull and unpack image "${c.image}": failed to resolve reference "${c.image}": not found`
                    : `Back-off pulling image "${c.image}"`,
              },
            },
            lastState: {},
          }
        : {
            name: c.name,
            image: c.image,
            imageID: `${c.image}@sha256:${fakeDigest(c.image)}`,
            containerID: `containerd://${fakeDigest(`${pod.metadata.uid}/${c.name}`)}`,
            ready: true,
            restartCount: 0,
            started: true,
            state: { running: { startedAt: started } },
            lastState: {},
          };
    if (pulling.length === 0) {
      this.setStatus(pod, {
        phase: 'Running',
        conditions: [
          condition('PodReadyToStartContainers', 'True'),
          condition('Initialized', 'True'),
          condition('Ready', 'True'),
          condition('ContainersReady', 'True'),
          condition('PodScheduled', 'True'),
        ],
        ...base,
        containerStatuses: containers.map((c) => statusOf(c)),
      });
      return;
    }
    const pendingStatus = (reason: string) => {
      const names = pulling.map((c) => c.name).join(' ');
      return {
        phase: 'Pending',
        conditions: [
          condition('PodReadyToStartContainers', 'True'),
          condition('Initialized', 'True'),
          condition('Ready', 'False', 'ContainersNotReady', `containers with unready status: [${names}]`),
          condition('ContainersReady', 'False', 'ContainersNotReady', `containers with unready status: [${names}]`),
          condition('PodScheduled', 'True'),
        ],
        ...base,
        containerStatuses: containers.map((c) => (this.unpullable(c.image) ? statusOf(c, reason) : statusOf(c))),
      };
    };
    this.setStatus(pod, pendingStatus('ErrImagePull'));
    const timer = setTimeout(() => {
      this.backoffTimers.delete(timer);
      const cur = this.current(pod);
      if (cur && !cur.metadata.deletionTimestamp) this.setStatus(pod, pendingStatus('ImagePullBackOff'));
    }, BACKOFF_AFTER_MS);
    timer.unref();
    this.backoffTimers.add(timer);
  }

  private async stopPod(pod: KubeObject, graceMs: number): Promise<void> {
    await this.host.destroy(pod.metadata.uid, graceMs);
    this.registry.release(PODS, pod.metadata.namespace, pod.metadata.name, pod.metadata.uid);
  }

  /** The environment of a container's processes: its env entries with values resolved. */
  containerEnv(pod: KubeObject, container: Container): Record<string, string> {
    const env: Record<string, string> = {};
    for (const e of container.env ?? []) {
      if (e.value !== undefined) env[e.name] = expand(String(e.value), env);
      else if (e.valueFrom?.fieldRef?.fieldPath) {
        const v = fieldRef(pod, e.valueFrom.fieldRef.fieldPath);
        if (v !== undefined) env[e.name] = v;
      } else if (e.valueFrom?.secretKeyRef) {
        const ref = e.valueFrom.secretKeyRef;
        const s = this.registry.get(resourceByName('secrets'), pod.metadata.namespace, ref.name ?? '');
        const data = (s?.data as Record<string, string> | undefined)?.[ref.key];
        if (data !== undefined) env[e.name] = Buffer.from(data, 'base64').toString('utf8');
      } else if (e.valueFrom?.configMapKeyRef) {
        const ref = e.valueFrom.configMapKeyRef;
        const cm = this.registry.get(resourceByName('configmaps'), pod.metadata.namespace, ref.name ?? '');
        const data = (cm?.data as Record<string, string> | undefined)?.[ref.key];
        if (data !== undefined) env[e.name] = data;
      } else env[e.name] = '';
    }
    return env;
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe();
    for (const t of this.backoffTimers) clearTimeout(t);
  }

  /** Waits for every queued pod step (start or stop) to finish. */
  async idle(): Promise<void> {
    while (this.work.size > 0) await Promise.allSettled([...this.work.values()]);
  }
}

// $(VAR) references to earlier variables, as the kubelet expands them; $$ escapes.
function expand(value: string, env: Record<string, string>): string {
  return value.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name: string | undefined) => {
    if (m === '$$') return '$';
    return name !== undefined && Object.hasOwn(env, name) ? env[name] : m;
  });
}

function fieldRef(pod: KubeObject, path: string): string | undefined {
  const m = /^metadata\.(labels|annotations)\['(.+)'\]$/.exec(path);
  if (m) return pod.metadata[m[1] as 'labels' | 'annotations']?.[m[2]];
  switch (path) {
    case 'metadata.name':
      return pod.metadata.name;
    case 'metadata.namespace':
      return pod.metadata.namespace;
    case 'metadata.uid':
      return pod.metadata.uid;
    case 'spec.nodeName':
      return pod.spec?.nodeName;
    case 'spec.serviceAccountName':
      return pod.spec?.serviceAccountName;
    case 'status.podIP':
      return pod.status?.podIP;
    case 'status.hostIP':
      return pod.status?.hostIP;
    default:
      return undefined;
  }
}

export type { Container };
