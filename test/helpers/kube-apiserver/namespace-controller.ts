// Namespace deletion: the namespace stays Terminating while everything in it is deleted (pods
// stopped by the kubelet), then goes itself.

import type { Registry, StoredEvent } from './registry.ts';
import { type KubeObject, RESOURCES, resourceByName } from './resources.ts';

const NAMESPACES = resourceByName('namespaces');

export class NamespaceController {
  private readonly unsubscribe: () => void;
  private readonly draining = new Set<string>();
  private stopped = false;

  constructor(private readonly registry: Registry) {
    this.unsubscribe = registry.subscribe((ev) => this.onEvent(ev));
  }

  stop(): void {
    this.stopped = true;
    this.unsubscribe();
  }

  private onEvent(ev: StoredEvent): void {
    if (ev.resource !== NAMESPACES || ev.type !== 'MODIFIED') return;
    const ns = ev.object;
    if (!ns.metadata.deletionTimestamp || this.draining.has(ns.metadata.uid)) return;
    this.draining.add(ns.metadata.uid);
    void this.drain(ns);
  }

  private async drain(ns: KubeObject): Promise<void> {
    const name = ns.metadata.name;
    const started = Date.now();
    while (!this.stopped) {
      let left = 0;
      for (const t of RESOURCES) {
        if (!t.namespaced) continue;
        for (const o of this.registry.list(t, name)) {
          left++;
          if (o.metadata.deletionTimestamp) continue;
          try {
            this.registry.delete(t, name, o.metadata.name, {
              propagationPolicy: 'Background',
              preconditions: { uid: o.metadata.uid },
            });
          } catch {
            // gone meanwhile
          }
        }
      }
      // Terminating is visible for a moment even when the namespace was empty.
      if (left === 0 && Date.now() - started >= 200) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    this.draining.delete(ns.metadata.uid);
    if (this.stopped) return;
    this.registry.mutate(NAMESPACES, undefined, name, (o) => {
      if (o.metadata.uid === ns.metadata.uid) o.spec = { ...(o.spec ?? {}), finalizers: [] };
    });
    this.registry.release(NAMESPACES, undefined, name, ns.metadata.uid);
  }
}
