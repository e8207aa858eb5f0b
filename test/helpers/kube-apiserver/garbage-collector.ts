// Owner references: when an owner goes, its dependents go too (Background), or go first
// (Foreground: the owner waits with the foregroundDeletion finalizer), or stay without the
// reference (Orphan: the owner waits with the orphan finalizer while references are removed).

import type { Registry, StoredEvent } from './registry.ts';
import { RESOURCES } from './resources.ts';

export class GarbageCollector {
  private readonly unsubscribe: () => void;

  constructor(private readonly registry: Registry) {
    this.unsubscribe = registry.subscribe((ev) => queueMicrotask(() => this.onEvent(ev)));
  }

  stop(): void {
    this.unsubscribe();
  }

  private onEvent(ev: StoredEvent): void {
    const o = ev.object;
    if (ev.type === 'DELETED') {
      this.deleteDependents(o.metadata.uid, 'Background');
      // A dependent gone may let an owner waiting in foreground deletion go.
      for (const ref of o.metadata.ownerReferences ?? []) this.checkForeground(ref.uid);
      return;
    }
    const finalizers = o.metadata.finalizers ?? [];
    if (!o.metadata.deletionTimestamp) return;
    if (finalizers.includes('orphan')) {
      for (const dep of this.registry.dependentsOf(o.metadata.uid)) {
        this.registry.mutate(dep.resource, dep.object.metadata.namespace, dep.object.metadata.name, (d) => {
          d.metadata.ownerReferences = (d.metadata.ownerReferences ?? []).filter((r) => r.uid !== o.metadata.uid);
          if (d.metadata.ownerReferences.length === 0) delete d.metadata.ownerReferences;
        });
      }
      this.removeFinalizer(ev, 'orphan');
    } else if (finalizers.includes('foregroundDeletion')) {
      this.deleteDependents(o.metadata.uid, 'Foreground');
      this.checkForeground(o.metadata.uid);
    }
  }

  private deleteDependents(uid: string, policy: 'Background' | 'Foreground'): void {
    for (const dep of this.registry.dependentsOf(uid)) {
      if (dep.object.metadata.deletionTimestamp) continue;
      try {
        this.registry.delete(dep.resource, dep.object.metadata.namespace, dep.object.metadata.name, {
          propagationPolicy: policy,
          preconditions: { uid: dep.object.metadata.uid },
        });
      } catch {
        // gone meanwhile
      }
    }
  }

  private checkForeground(ownerUid: string): void {
    if (this.registry.dependentsOf(ownerUid).length > 0) return;
    for (const t of RESOURCES) {
      for (const o of this.registry.list(t)) {
        if (o.metadata.uid === ownerUid && o.metadata.finalizers?.includes('foregroundDeletion')) {
          this.removeFinalizer({ resource: t, object: o } as StoredEvent, 'foregroundDeletion');
        }
      }
    }
  }

  private removeFinalizer(ev: Pick<StoredEvent, 'resource' | 'object'>, name: string): void {
    const o = ev.object;
    this.registry.mutate(ev.resource, o.metadata.namespace, o.metadata.name, (cur) => {
      if (cur.metadata.uid !== o.metadata.uid) return;
      cur.metadata.finalizers = (cur.metadata.finalizers ?? []).filter((f) => f !== name);
      if (cur.metadata.finalizers.length === 0) delete cur.metadata.finalizers;
    });
  }
}
