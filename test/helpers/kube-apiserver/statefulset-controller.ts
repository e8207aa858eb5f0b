// The StatefulSet controller: keeps pods <sts>-0..<sts>-(replicas-1), created in ordinal order
// (OrderedReady: the next only once every lower ordinal is Running and Ready; Parallel: all at
// once), removed highest ordinal first, recreated under the same name when deleted, updated by
// RollingUpdate (highest ordinal first, down to the partition) or OnDelete, and reports status.

import { createHash } from 'node:crypto';
import { canonical } from './patch.ts';
import type { Registry, StoredEvent } from './registry.ts';
import { type KubeObject, resourceByName } from './resources.ts';
import { labelSelectorObject } from './selectors.ts';

const STS = resourceByName('statefulsets');
const PODS = resourceByName('pods');
const REVISIONS = resourceByName('controllerrevisions');

export const POD_NAME_LABEL = 'statefulset.kubernetes.io/pod-name';
export const POD_INDEX_LABEL = 'apps.kubernetes.io/pod-index';
export const REVISION_LABEL = 'controller-revision-hash';

const ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';
function revisionHash(template: unknown): string {
  const digest = createHash('sha256')
    .update(JSON.stringify(canonical(template)))
    .digest();
  let s = '';
  for (let i = 0; i < 10; i++) s += ALPHABET[digest[i] % ALPHABET.length];
  return s;
}

export function isPodReady(pod: KubeObject): boolean {
  return (
    pod.status?.phase === 'Running' &&
    (pod.status?.conditions ?? []).some(
      (c: { type: string; status: string }) => c.type === 'Ready' && c.status === 'True',
    )
  );
}

const ordinalOf = (stsName: string, podName: string): number | undefined => {
  const m = /^(.*)-(0|[1-9]\d*)$/.exec(podName);
  return m && m[1] === stsName ? Number(m[2]) : undefined;
};

export class StatefulSetController {
  private readonly dirty = new Set<string>();
  private running = false;
  private stopped = false;
  private readonly unsubscribe: () => void;
  private readonly resync: NodeJS.Timeout;

  constructor(private readonly registry: Registry) {
    this.unsubscribe = registry.subscribe((ev) => this.onEvent(ev));
    this.resync = setInterval(() => {
      for (const s of registry.list(STS)) this.enqueue(s.metadata.namespace!, s.metadata.name);
    }, 2_000);
    this.resync.unref();
  }

  private onEvent(ev: StoredEvent): void {
    if (ev.resource === STS) this.enqueue(ev.object.metadata.namespace!, ev.object.metadata.name);
    else if (ev.resource === PODS) {
      for (const ref of ev.object.metadata.ownerReferences ?? []) {
        if (ref.kind === 'StatefulSet' && ref.controller) this.enqueue(ev.object.metadata.namespace!, ref.name);
      }
    }
  }

  private enqueue(ns: string, name: string): void {
    if (this.stopped) return;
    this.dirty.add(`${ns}/${name}`);
    if (!this.running) {
      this.running = true;
      setImmediate(() => this.drain());
    }
  }

  private drain(): void {
    try {
      while (this.dirty.size > 0 && !this.stopped) {
        const key = this.dirty.values().next().value as string;
        this.dirty.delete(key);
        const [ns, name] = key.split('/');
        try {
          this.reconcile(ns, name);
        } catch (err) {
          console.error(`kube-apiserver statefulset controller: ${key}:`, err);
        }
      }
    } finally {
      this.running = false;
    }
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe();
    clearInterval(this.resync);
  }

  private revisionTemplate(sts: KubeObject, revision: string): unknown {
    const rev = this.registry.get(REVISIONS, sts.metadata.namespace, revision);
    return rev ? (rev.data as { spec: { template: unknown } }).spec.template : sts.spec.template;
  }

  // ControllerRevisions hold each template the set has had, so pods below a partition keep theirs.
  private ensureRevision(sts: KubeObject, name: string): void {
    if (this.registry.get(REVISIONS, sts.metadata.namespace, name)) return;
    const existing = this.registry
      .list(REVISIONS, sts.metadata.namespace)
      .filter((r) => r.metadata.ownerReferences?.some((o) => o.uid === sts.metadata.uid));
    const revision = Math.max(0, ...existing.map((r) => Number(r.revision) || 0)) + 1;
    this.registry.create(REVISIONS, sts.metadata.namespace, {
      metadata: {
        name,
        namespace: sts.metadata.namespace,
        labels: {
          ...(sts.spec.template.metadata?.labels ?? {}),
          [REVISION_LABEL]: name.slice(sts.metadata.name.length + 1),
        },
        ownerReferences: [ownerRef(sts)],
      },
      data: { spec: { template: { ...sts.spec.template, $patch: 'replace' } } },
      revision,
    });
  }

  private reconcile(ns: string, name: string): void {
    const sts = this.registry.get(STS, ns, name);
    if (!sts || sts.metadata.deletionTimestamp) return;
    if (this.registry.get(resourceByName('namespaces'), undefined, ns)?.metadata.deletionTimestamp) return;
    const spec = sts.spec;
    const replicas: number = spec.replicas ?? 1;
    const parallel = spec.podManagementPolicy === 'Parallel';
    const onDelete = spec.updateStrategy?.type === 'OnDelete';
    const partition: number = onDelete ? 0 : (spec.updateStrategy?.rollingUpdate?.partition ?? 0);
    const template = { ...spec.template };
    const updateRevision = `${name}-${revisionHash(template)}`;
    const currentRevision: string = sts.status?.currentRevision || updateRevision;
    this.ensureRevision(sts, updateRevision);

    const matchesSelector = labelSelectorObject(spec.selector ?? {});
    const pods = new Map<number, KubeObject>();
    for (const p of this.registry.list(PODS, ns)) {
      const owned = p.metadata.ownerReferences?.find((r) => r.controller);
      if (owned ? owned.uid !== sts.metadata.uid : !matchesSelector(p.metadata.labels ?? {})) continue;
      const ord = ordinalOf(name, p.metadata.name);
      if (ord === undefined) continue;
      if (!owned && !p.metadata.deletionTimestamp) {
        // An orphan that matches: adopt it, as the real controller does.
        const adopted = this.registry.mutate(PODS, ns, p.metadata.name, (o) => {
          o.metadata.ownerReferences = [...(o.metadata.ownerReferences ?? []), ownerRef(sts)];
        });
        if (adopted) pods.set(ord, adopted);
        continue;
      }
      pods.set(ord, p);
    }
    const revisionOf = (p: KubeObject) => p.metadata.labels?.[REVISION_LABEL];
    const revisionFor = (ord: number) => (!onDelete && ord < partition ? currentRevision : updateRevision);

    // Scale up (and replace deleted pods).
    for (let ord = 0; ord < replicas; ord++) {
      const pod = pods.get(ord);
      if (!pod) {
        const rev = revisionFor(ord);
        if (rev !== updateRevision && !this.registry.get(REVISIONS, ns, rev)) this.ensureRevision(sts, rev);
        const created = this.createPod(
          sts,
          ord,
          rev,
          rev === updateRevision ? template : this.revisionTemplate(sts, rev),
        );
        pods.set(ord, created);
        if (!parallel) break;
        continue;
      }
      if (!parallel && (pod.metadata.deletionTimestamp || !isPodReady(pod))) break;
    }

    const ordinals = [...pods.keys()].sort((a, b) => a - b);
    const below = ordinals.filter((o) => o < replicas);
    const allBelowReady =
      below.length === replicas &&
      below.every((o) => isPodReady(pods.get(o)!) && !pods.get(o)!.metadata.deletionTimestamp);

    // Scale down, highest ordinal first.
    const excess = ordinals.filter((o) => o >= replicas).sort((a, b) => b - a);
    if (parallel) {
      for (const o of excess) this.deletePod(pods.get(o)!);
    } else if (excess.length > 0) {
      const top = pods.get(excess[0])!;
      const anyTerminating = excess.some((o) => pods.get(o)!.metadata.deletionTimestamp);
      if (!anyTerminating && allBelowReady) this.deletePod(top);
    }

    // Rolling update: one pod at a time, highest ordinal first, down to the partition.
    if (!onDelete && excess.length === 0 && allBelowReady) {
      for (let ord = replicas - 1; ord >= partition; ord--) {
        const pod = pods.get(ord)!;
        if (revisionOf(pod) !== updateRevision) {
          this.deletePod(pod);
          break;
        }
      }
    }

    // Status.
    const live = this.registry.list(PODS, ns).filter((p) => {
      const ref = p.metadata.ownerReferences?.find((r) => r.controller);
      return ref?.uid === sts.metadata.uid;
    });
    const counted = live.filter((p) => ordinalOf(name, p.metadata.name) !== undefined);
    const ready = counted.filter((p) => isPodReady(p) && !p.metadata.deletionTimestamp).length;
    const updated = counted.filter((p) => revisionOf(p) === updateRevision).length;
    const atCurrent = counted.filter((p) => revisionOf(p) === currentRevision).length;
    const rolledOut =
      updated === replicas && counted.length === replicas && counted.every((p) => revisionOf(p) === updateRevision);
    const newCurrent = rolledOut ? updateRevision : currentRevision;
    const status = {
      observedGeneration: sts.metadata.generation,
      replicas: counted.length,
      readyReplicas: ready,
      availableReplicas: ready,
      currentReplicas: rolledOut ? updated : atCurrent,
      updatedReplicas: updated,
      currentRevision: newCurrent,
      updateRevision,
      collisionCount: 0,
    };
    this.registry.mutate(STS, ns, name, (o) => {
      if (o.metadata.uid === sts.metadata.uid) o.status = { ...(o.status ?? {}), ...status };
    });
  }

  private createPod(sts: KubeObject, ord: number, revision: string, template: unknown): KubeObject {
    const tpl = structuredClone(template) as any;
    delete tpl.$patch;
    const name = `${sts.metadata.name}-${ord}`;
    return this.registry.create(PODS, sts.metadata.namespace, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: {
        ...(tpl.metadata ?? {}),
        name,
        namespace: sts.metadata.namespace,
        generateName: `${sts.metadata.name}-`,
        labels: {
          ...(tpl.metadata?.labels ?? {}),
          [POD_NAME_LABEL]: name,
          [POD_INDEX_LABEL]: String(ord),
          [REVISION_LABEL]: revision,
        },
        ownerReferences: [ownerRef(sts)],
      },
      spec: {
        ...(tpl.spec ?? {}),
        hostname: name,
        ...(sts.spec.serviceName ? { subdomain: sts.spec.serviceName } : {}),
      },
    });
  }

  private deletePod(pod: KubeObject): void {
    if (pod.metadata.deletionTimestamp) return;
    try {
      this.registry.delete(PODS, pod.metadata.namespace, pod.metadata.name, {
        preconditions: { uid: pod.metadata.uid },
      });
    } catch {
      // gone or replaced meanwhile; the next pass sees the truth
    }
  }
}

function ownerRef(sts: KubeObject) {
  return {
    apiVersion: 'apps/v1',
    kind: 'StatefulSet',
    name: sts.metadata.name,
    uid: sts.metadata.uid,
    controller: true,
    blockOwnerDeletion: true,
  };
}
