// The object store and the API semantics on top of it: one global resourceVersion counter,
// uids, generations, optimistic concurrency, the status subresource, graceful deletion and
// finalizers, and the event log watches read from. The HTTP layer and the in-process
// controllers both go through here, so they obey the same rules.

import { randomUUID } from 'node:crypto';
import { ApiError, alreadyExists, badRequest, conflict, invalid, notFound, type StatusCause } from './api-error.ts';
import { deepEqual, jsonPatch, mergePatch, strategicMergePatch } from './patch.ts';
import { apiVersionOf, type KubeObject, RESOURCES, type ResourceType, resourceKey } from './resources.ts';
import { nameCauses, randomSuffix, STRATEGIES, type StrategyContext } from './strategies.ts';

export type EventType = 'ADDED' | 'MODIFIED' | 'DELETED';

export interface StoredEvent {
  type: EventType;
  resource: ResourceType;
  object: KubeObject;
  /** The object before this change (MODIFIED, DELETED). */
  old?: KubeObject;
  rv: number;
}

export interface WriteOptions {
  dryRun?: boolean;
}

export interface DeleteOptions extends WriteOptions {
  propagationPolicy?: 'Orphan' | 'Background' | 'Foreground';
  gracePeriodSeconds?: number;
  preconditions?: { uid?: string; resourceVersion?: string };
}

const LOG_LIMIT = 50_000;

const nsKey = (ns: string | undefined, name: string) => `${ns ?? ''}/${name}`;

export class Registry {
  private rv = 1000;
  private readonly objects = new Map<string, Map<string, KubeObject>>();
  private readonly log: StoredEvent[] = [];
  private readonly listeners = new Set<(ev: StoredEvent) => void>();
  /** uids whose removal waits for a system component (kubelet, namespace controller) besides finalizers. */
  private readonly heldForSystem = new Set<string>();

  constructor(private readonly ctx: StrategyContext) {
    for (const t of RESOURCES) this.objects.set(resourceKey(t), new Map());
  }

  currentResourceVersion(): string {
    return String(this.rv);
  }

  subscribe(fn: (ev: StoredEvent) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Events after resourceVersion rv, or undefined when the log no longer reaches back that far. */
  eventsSince(rv: number): StoredEvent[] | undefined {
    const first = this.log[0];
    if (first && rv < first.rv - 1) return undefined;
    if (!first && rv < this.rv && this.rv > 1000 + LOG_LIMIT) return undefined;
    return this.log.filter((e) => e.rv > rv);
  }

  private table(t: ResourceType): Map<string, KubeObject> {
    return this.objects.get(resourceKey(t))!;
  }

  private emit(type: EventType, resource: ResourceType, object: KubeObject, old?: KubeObject): void {
    const ev: StoredEvent = {
      type,
      resource,
      object: structuredClone(object),
      old,
      rv: Number(object.metadata.resourceVersion),
    };
    this.log.push(ev);
    if (this.log.length > LOG_LIMIT) this.log.splice(0, this.log.length - LOG_LIMIT);
    for (const fn of this.listeners) {
      try {
        fn(ev);
      } catch (err) {
        console.error('kube-apiserver listener failed:', err);
      }
    }
  }

  get(t: ResourceType, ns: string | undefined, name: string): KubeObject | undefined {
    const o = this.table(t).get(nsKey(t.namespaced ? ns : undefined, name));
    return o ? structuredClone(o) : undefined;
  }

  mustGet(t: ResourceType, ns: string | undefined, name: string): KubeObject {
    const o = this.get(t, ns, name);
    if (!o) throw notFound(t.plural, t.group, name);
    return o;
  }

  list(t: ResourceType, ns?: string): KubeObject[] {
    const out: KubeObject[] = [];
    for (const o of this.table(t).values())
      if (!ns || !t.namespaced || o.metadata.namespace === ns) out.push(structuredClone(o));
    return out.sort((a, b) =>
      nsKey(a.metadata.namespace, a.metadata.name).localeCompare(nsKey(b.metadata.namespace, b.metadata.name)),
    );
  }

  /** Every object in the store whose ownerReferences name uid. */
  dependentsOf(uid: string): { resource: ResourceType; object: KubeObject }[] {
    const out: { resource: ResourceType; object: KubeObject }[] = [];
    for (const t of RESOURCES) {
      for (const o of this.table(t).values()) {
        if (o.metadata.ownerReferences?.some((r) => r.uid === uid))
          out.push({ resource: t, object: structuredClone(o) });
      }
    }
    return out;
  }

  private nextRv(): string {
    this.rv += 1;
    return String(this.rv);
  }

  private checkNamespace(t: ResourceType, ns: string | undefined, creating: boolean, name: string): void {
    if (!t.namespaced) return;
    if (!ns) throw badRequest('the namespace of the object must be set');
    const nsObj = this.table(RESOURCES[0]).get(nsKey(undefined, ns));
    if (!nsObj) throw notFound('namespaces', '', ns);
    if (creating && nsObj.metadata.deletionTimestamp) {
      throw new ApiError(
        403,
        'Forbidden',
        `${t.plural}${t.group ? `.${t.group}` : ''} "${name}" is forbidden: unable to create new content in namespace ${ns} because it is being terminated`,
        { name, kind: t.plural, ...(t.group ? { group: t.group } : {}) },
      );
    }
  }

  private checkTypeMeta(t: ResourceType, body: KubeObject): void {
    const want = apiVersionOf(t);
    if (body.apiVersion !== undefined && body.apiVersion !== want) {
      throw badRequest(
        `the API version in the data (${body.apiVersion}) does not match the expected API version (${want})`,
      );
    }
    if (body.kind !== undefined && body.kind !== t.kind) {
      throw badRequest(`the kind in the data (${body.kind}) does not match the expected kind (${t.kind})`);
    }
  }

  private validate(t: ResourceType, obj: KubeObject, old: KubeObject | undefined, extra: StatusCause[] = []): void {
    const strategy = STRATEGIES[t.plural];
    const causes = [
      ...extra,
      ...(old ? [] : nameCauses(obj.metadata.name, strategy?.dnsLabelName ?? false)),
      ...(strategy?.validate?.(obj, old) ?? []),
    ];
    if (causes.length > 0) throw invalid(t.kind, t.group, obj.metadata.name, causes);
  }

  create(t: ResourceType, ns: string | undefined, input: unknown, opts: WriteOptions = {}): KubeObject {
    if (!input || typeof input !== 'object' || Array.isArray(input))
      throw badRequest('the body of the request must be an object');
    const body = structuredClone(input) as KubeObject;
    this.checkTypeMeta(t, body);
    body.metadata ??= {} as KubeObject['metadata'];
    const meta = body.metadata;
    if (typeof meta !== 'object') throw badRequest('metadata must be an object');
    if (t.namespaced) {
      if (meta.namespace && ns && meta.namespace !== ns) {
        throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
      }
      ns = ns ?? meta.namespace;
    }
    if (meta.resourceVersion) {
      // What etcd3 storage answers, as a 500: a create must not carry a version.
      throw new ApiError(500, 'InternalError', 'resourceVersion should not be set on objects to be created');
    }
    if (!meta.name && meta.generateName) meta.name = `${meta.generateName}${randomSuffix()}`;
    if (!meta.name)
      throw invalid(t.kind, t.group, '', [
        {
          reason: 'FieldValueRequired',
          message: 'Required value: name or generateName is required',
          field: 'metadata.name',
        },
      ]);
    this.checkNamespace(t, ns, true, meta.name);
    const key = nsKey(t.namespaced ? ns : undefined, meta.name);
    if (this.table(t).has(key)) throw alreadyExists(t.plural, t.group, meta.name);

    const obj: KubeObject = {
      ...body,
      apiVersion: apiVersionOf(t),
      kind: t.kind,
      metadata: {
        ...meta,
        name: meta.name,
        ...(t.namespaced ? { namespace: ns } : {}),
        uid: randomUUID(),
        resourceVersion: '',
        creationTimestamp: now(),
      },
    };
    if (!t.namespaced) delete obj.metadata.namespace;
    delete obj.metadata.deletionTimestamp;
    delete obj.metadata.deletionGracePeriodSeconds;
    if (t.hasSpec) obj.metadata.generation = 1;
    else delete obj.metadata.generation;
    const strategy = STRATEGIES[t.plural];
    this.validate(t, obj, undefined);
    strategy?.prepareForCreate?.(obj, this.ctx);
    if (t.hasStatus) {
      const initial = strategy?.initialStatus?.(obj);
      if (initial === undefined) delete obj.status;
      else obj.status = initial;
    }
    if (opts.dryRun) return obj;
    obj.metadata.resourceVersion = this.nextRv();
    this.table(t).set(key, obj);
    this.emit('ADDED', t, obj);
    return structuredClone(obj);
  }

  /** PUT of the main resource (status kept) or of the status subresource (only status taken). */
  replace(
    t: ResourceType,
    ns: string | undefined,
    name: string,
    input: unknown,
    opts: WriteOptions & { subresource?: 'status' } = {},
  ): KubeObject {
    if (!input || typeof input !== 'object' || Array.isArray(input))
      throw badRequest('the body of the request must be an object');
    const body = structuredClone(input) as KubeObject;
    this.checkTypeMeta(t, body);
    body.metadata ??= {} as KubeObject['metadata'];
    if (body.metadata.name !== undefined && body.metadata.name !== name) {
      throw badRequest(`the name of the object (${body.metadata.name}) does not match the name on the URL (${name})`);
    }
    if (t.namespaced && body.metadata.namespace !== undefined && body.metadata.namespace !== ns) {
      throw badRequest('the namespace of the provided object does not match the namespace sent on the request');
    }
    this.checkNamespace(t, ns, false, name);
    const old = this.mustGet(t, ns, name);
    if (body.metadata.resourceVersion && body.metadata.resourceVersion !== old.metadata.resourceVersion) {
      throw conflict(t.plural, t.group, name);
    }
    if (body.metadata.uid && body.metadata.uid !== old.metadata.uid) {
      throw conflict(
        t.plural,
        t.group,
        name,
        `Precondition failed: UID in precondition: ${body.metadata.uid}, UID in object meta: ${old.metadata.uid}`,
      );
    }
    let next: KubeObject;
    if (opts.subresource === 'status') {
      next = { ...old, status: body.status };
    } else {
      next = {
        ...body,
        apiVersion: old.apiVersion,
        kind: old.kind,
        metadata: {
          ...body.metadata,
          name,
          ...(t.namespaced ? { namespace: ns } : {}),
          uid: old.metadata.uid,
          resourceVersion: old.metadata.resourceVersion,
          creationTimestamp: old.metadata.creationTimestamp,
        },
      };
      for (const k of ['deletionTimestamp', 'deletionGracePeriodSeconds', 'generation'] as const) {
        if (old.metadata[k] === undefined) delete next.metadata[k];
        else (next.metadata as Record<string, unknown>)[k] = old.metadata[k];
      }
      if (t.hasStatus) {
        if (old.status === undefined) delete next.status;
        else next.status = old.status;
      }
      const causes = STRATEGIES[t.plural]?.prepareForUpdate?.(next, old) ?? [];
      this.validate(t, next, old, causes);
      if (old.metadata.deletionTimestamp) {
        // New finalizers may not be added to an object being deleted.
        const added = (next.metadata.finalizers ?? []).filter((f) => !(old.metadata.finalizers ?? []).includes(f));
        if (added.length > 0) {
          throw invalid(t.kind, t.group, name, [
            {
              reason: 'FieldValueForbidden',
              message: `Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}`,
              field: 'metadata.finalizers',
            },
          ]);
        }
      }
    }
    return this.commit(t, old, next, opts);
  }

  /**
   * PATCH in one of the API server's patch formats. Server-side apply is approximated as a
   * strategic merge patch that creates a missing object (no field ownership is tracked).
   */
  patch(
    t: ResourceType,
    ns: string | undefined,
    name: string,
    contentType: string,
    patchBody: unknown,
    opts: WriteOptions & { subresource?: 'status' } = {},
  ): KubeObject {
    const type = contentType.split(';')[0].trim().toLowerCase();
    this.checkNamespace(t, ns, false, name);
    const old = this.get(t, ns, name);
    if (!old) {
      if (type === 'application/apply-patch+yaml' && !opts.subresource) {
        const body = patchBody as KubeObject;
        if (body?.metadata?.name !== undefined && body.metadata.name !== name) {
          throw badRequest(
            `the name of the object (${body.metadata.name}) does not match the name on the URL (${name})`,
          );
        }
        return this.create(t, ns, { ...body, metadata: { ...(body?.metadata ?? {}), name } }, opts);
      }
      throw notFound(t.plural, t.group, name);
    }
    const doc = old as any;
    let patched: any;
    switch (type) {
      case 'application/json-patch+json':
        patched = jsonPatch(doc, patchBody as never);
        break;
      case 'application/merge-patch+json':
        patched = mergePatch(doc, patchBody as never);
        break;
      case 'application/strategic-merge-patch+json':
      case 'application/apply-patch+yaml':
        if (!patchBody || typeof patchBody !== 'object' || Array.isArray(patchBody)) {
          throw badRequest('the body of the request must be an object');
        }
        patched = strategicMergePatch(doc, patchBody as never);
        break;
      default:
        throw new ApiError(
          415,
          'UnsupportedMediaType',
          `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json`,
        );
    }
    if (!patched || typeof patched !== 'object' || Array.isArray(patched))
      throw badRequest('the patched object must be an object');
    patched.metadata ??= {};
    if (patched.metadata.resourceVersion === undefined) patched.metadata.resourceVersion = old.metadata.resourceVersion;
    return this.replace(t, ns, name, patched, opts);
  }

  // Writes next over old (same key) if anything changed, bumping resourceVersion and generation.
  private commit(t: ResourceType, old: KubeObject, next: KubeObject, opts: WriteOptions = {}): KubeObject {
    if (t.hasSpec && !deepEqual(old.spec, next.spec)) next.metadata.generation = (old.metadata.generation ?? 0) + 1;
    if (
      deepEqual(
        { ...next, metadata: { ...next.metadata, resourceVersion: '' } },
        { ...old, metadata: { ...old.metadata, resourceVersion: '' } },
      )
    ) {
      return old; // no-op updates keep the resourceVersion, as on a real server
    }
    if (opts.dryRun) return next;
    next.metadata.resourceVersion = this.nextRv();
    const key = nsKey(t.namespaced ? next.metadata.namespace : undefined, next.metadata.name);
    this.table(t).set(key, next);
    this.emit('MODIFIED', t, next, old);
    this.maybeRemove(t, next);
    return structuredClone(next);
  }

  /**
   * In-process change by a controller (kubelet, StatefulSet controller): fn edits a copy of the
   * current object. Returns the stored result, or undefined when the object is gone.
   */
  mutate(t: ResourceType, ns: string | undefined, name: string, fn: (o: KubeObject) => void): KubeObject | undefined {
    const old = this.get(t, ns, name);
    if (!old) return undefined;
    const next = structuredClone(old);
    fn(next);
    return this.commit(t, old, next);
  }

  /**
   * DELETE. Returns the object as it stands after the request (with deletionTimestamp when the
   * deletion waits for something) and whether it is gone already.
   */
  delete(
    t: ResourceType,
    ns: string | undefined,
    name: string,
    opts: DeleteOptions = {},
  ): { object: KubeObject; gone: boolean } {
    this.checkNamespace(t, ns, false, name);
    const old = this.mustGet(t, ns, name);
    const pre = opts.preconditions;
    if (pre?.uid && pre.uid !== old.metadata.uid) {
      throw conflict(
        t.plural,
        t.group,
        name,
        `Precondition failed: UID in precondition: ${pre.uid}, UID in object meta: ${old.metadata.uid}`,
      );
    }
    if (pre?.resourceVersion && pre.resourceVersion !== old.metadata.resourceVersion) {
      throw conflict(
        t.plural,
        t.group,
        name,
        `Precondition failed: ResourceVersion in precondition: ${pre.resourceVersion}, ResourceVersion in meta: ${old.metadata.resourceVersion}`,
      );
    }
    if (opts.dryRun) return { object: old, gone: false };
    const policy = opts.propagationPolicy;
    const finalizers = [...(old.metadata.finalizers ?? [])];
    if (policy === 'Foreground' && !finalizers.includes('foregroundDeletion')) finalizers.push('foregroundDeletion');
    if (policy === 'Orphan' && !finalizers.includes('orphan')) finalizers.push('orphan');

    let grace = 0;
    if (t.plural === 'pods') {
      grace = opts.gracePeriodSeconds ?? old.spec?.terminationGracePeriodSeconds ?? 30;
      if (old.metadata.deletionGracePeriodSeconds !== undefined)
        grace = Math.min(grace, old.metadata.deletionGracePeriodSeconds);
      // A pod no kubelet ever ran goes at once; a running one waits for the kubelet to kill it.
      if (!old.spec?.nodeName) grace = 0;
    }
    const holdForSystem = t.plural === 'namespaces' || (t.plural === 'pods' && grace > 0);
    if (!holdForSystem && finalizers.length === 0) {
      this.remove(t, old);
      return { object: old, gone: true };
    }
    if (holdForSystem) this.heldForSystem.add(old.metadata.uid);
    const next = structuredClone(old);
    next.metadata.finalizers = finalizers.length > 0 ? finalizers : undefined;
    if (!next.metadata.finalizers) delete next.metadata.finalizers;
    if (!next.metadata.deletionTimestamp) {
      next.metadata.deletionTimestamp = new Date(Date.now() + grace * 1000).toISOString().replace(/\.\d+Z$/, 'Z');
      next.metadata.deletionGracePeriodSeconds = grace;
    } else if (t.plural === 'pods' && grace < (old.metadata.deletionGracePeriodSeconds ?? grace + 1)) {
      next.metadata.deletionGracePeriodSeconds = grace;
    }
    if (t.plural === 'namespaces') next.status = { ...(next.status ?? {}), phase: 'Terminating' };
    const stored = this.commit(t, old, next);
    return { object: stored, gone: false };
  }

  /** A system component (kubelet, namespace controller) is done with an object being deleted. */
  release(t: ResourceType, ns: string | undefined, name: string, uid: string): void {
    this.heldForSystem.delete(uid);
    const o = this.get(t, ns, name);
    if (o && o.metadata.uid === uid) this.maybeRemove(t, o);
  }

  /** Removes an object at once, whatever waits on it (force deletion). */
  forceRemove(t: ResourceType, ns: string | undefined, name: string): void {
    const o = this.get(t, ns, name);
    if (o) {
      this.heldForSystem.delete(o.metadata.uid);
      this.remove(t, o);
    }
  }

  private maybeRemove(t: ResourceType, o: KubeObject): void {
    if (!o.metadata.deletionTimestamp) return;
    if ((o.metadata.finalizers ?? []).length > 0) return;
    if (this.heldForSystem.has(o.metadata.uid)) return;
    this.remove(t, o);
  }

  private remove(t: ResourceType, o: KubeObject): void {
    const key = nsKey(t.namespaced ? o.metadata.namespace : undefined, o.metadata.name);
    const cur = this.table(t).get(key);
    if (!cur || cur.metadata.uid !== o.metadata.uid) return;
    this.table(t).delete(key);
    this.heldForSystem.delete(o.metadata.uid);
    const gone = structuredClone(cur);
    gone.metadata.resourceVersion = this.nextRv();
    this.emit('DELETED', t, gone, cur);
  }
}

export function now(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}
