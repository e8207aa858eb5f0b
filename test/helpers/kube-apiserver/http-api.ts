// The HTTP face of the server: bearer authentication, the REST paths of the served resources
// (CRUD, list and watch, status and scale subresources, pod exec over a websocket), discovery.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer } from 'ws';
import { parse as parseYaml } from 'yaml';
import { ApiError, badRequest, notFound, type Status, successStatus } from './api-error.ts';
import { chooseProtocol, runExec } from './exec-stream.ts';
import type { Container, Kubelet } from './kubelet.ts';
import type { DeleteOptions, Registry, StoredEvent } from './registry.ts';
import { apiVersionOf, type KubeObject, RESOURCES, type ResourceType, resourceByPath } from './resources.ts';
import { labelSelectorString, parseFieldSelector, parseLabelSelector, type Selector } from './selectors.ts';

const MAX_BODY = 32 * 1024 * 1024;
const DEFAULT_WATCH_TIMEOUT_S = 1800;

export interface ApiDeps {
  registry: Registry;
  kubelet: Kubelet;
  token: string;
  serverAddress: () => string;
}

interface Route {
  resource: ResourceType;
  namespace?: string;
  name?: string;
  subresource?: string;
  /** /api/v1/watch/... (the old spelling of ?watch=true). */
  watchPath: boolean;
}

type Discovery = { body: unknown } | undefined;

export class HttpApi {
  private readonly wss = new WebSocketServer({
    noServer: true,
    handleProtocols: (offered) => chooseProtocol(offered),
  });
  private readonly watches = new Set<ServerResponse>();

  constructor(private readonly deps: ApiDeps) {}

  close(): void {
    for (const res of this.watches) res.end();
    for (const ws of this.wss.clients) ws.terminate();
    this.wss.close();
  }

  private authorized(req: IncomingMessage): boolean {
    const h = req.headers.authorization ?? '';
    return h === `Bearer ${this.deps.token}`;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    try {
      if (!this.authorized(req)) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
      const url = new URL(req.url ?? '/', 'https://localhost');
      const discovery = this.discovery(url.pathname);
      if (discovery) return sendJson(res, 200, discovery.body);
      if (['/healthz', '/readyz', '/livez'].includes(url.pathname)) {
        res.writeHead(200, { 'Content-Type': 'text/plain' });
        res.end('ok');
        return;
      }
      const route = parseRoute(url.pathname);
      if (!route) throw new ApiError(404, 'NotFound', 'the server could not find the requested resource', {});
      await this.dispatch(req, res, route, url.searchParams);
    } catch (err) {
      if (res.headersSent) {
        res.end();
        return;
      }
      const apiErr =
        err instanceof ApiError
          ? err
          : new ApiError(500, 'InternalError', `Internal error occurred: ${(err as Error).message ?? String(err)}`);
      if (!(err instanceof ApiError)) console.error('kube-apiserver:', err);
      sendJson(res, apiErr.code, apiErr.toStatus());
    }
  }

  private async dispatch(req: IncomingMessage, res: ServerResponse, route: Route, q: URLSearchParams): Promise<void> {
    const { registry } = this.deps;
    const t = route.resource;
    const method = req.method ?? 'GET';
    const ns = t.namespaced ? route.namespace : undefined;
    const dryRun = q.getAll('dryRun').includes('All');
    const isWatch = route.watchPath || q.get('watch') === 'true' || q.get('watch') === '1';

    if (route.subresource) return this.subresource(req, res, route, q);

    if (!route.name) {
      switch (method) {
        case 'GET':
          if (isWatch) return this.watch(req, res, t, route.namespace, q);
          return sendJson(res, 200, this.listBody(t, route.namespace, q));
        case 'POST': {
          if (!t.namespaced && route.namespace) throw methodNotAllowed();
          if (t.namespaced && !route.namespace) throw methodNotAllowed();
          const body = await readJson(req);
          const created = registry.create(t, ns, body, { dryRun });
          return sendJson(res, 201, created);
        }
        case 'DELETE': {
          const label = parseLabelSelector(q.get('labelSelector'));
          const field = parseFieldSelector(q.get('fieldSelector'));
          const opts = await deleteOptions(req, q);
          for (const o of registry.list(t, route.namespace)) {
            if (!label(o) || !field(o) || o.metadata.deletionTimestamp) continue;
            try {
              registry.delete(t, o.metadata.namespace, o.metadata.name, { ...opts, dryRun });
            } catch {
              // gone meanwhile
            }
          }
          return sendJson(res, 200, successStatus());
        }
        default:
          throw methodNotAllowed();
      }
    }

    const name = route.name;
    switch (method) {
      case 'GET':
        if (isWatch) {
          q.set('fieldSelector', [q.get('fieldSelector'), `metadata.name=${name}`].filter(Boolean).join(','));
          return this.watch(req, res, t, route.namespace, q);
        }
        if (t.namespaced && !registry.get(resourceByPath('', 'v1', 'namespaces')!, undefined, ns!)) {
          throw notFound(t.plural, t.group, name);
        }
        return sendJson(res, 200, registry.mustGet(t, ns, name));
      case 'PUT': {
        const body = await readJson(req);
        return sendJson(res, 200, registry.replace(t, ns, name, body, { dryRun }));
      }
      case 'PATCH': {
        const { contentType, body } = await readPatch(req, q);
        const exists = registry.get(t, ns, name) !== undefined;
        const result = registry.patch(t, ns, name, contentType, body, { dryRun });
        return sendJson(res, exists ? 200 : 201, result);
      }
      case 'DELETE': {
        const opts = await deleteOptions(req, q);
        const { object, gone } = registry.delete(t, ns, name, { ...opts, dryRun });
        if (t.deleteReturnsObject || !gone) return sendJson(res, gone ? 200 : 202, object);
        return sendJson(
          res,
          200,
          successStatus({ name, ...(t.group ? { group: t.group } : {}), kind: t.plural, uid: object.metadata.uid }),
        );
      }
      default:
        throw methodNotAllowed();
    }
  }

  private async subresource(
    req: IncomingMessage,
    res: ServerResponse,
    route: Route,
    q: URLSearchParams,
  ): Promise<void> {
    const { registry } = this.deps;
    const t = route.resource;
    const ns = t.namespaced ? route.namespace : undefined;
    const name = route.name!;
    const method = req.method ?? 'GET';
    const dryRun = q.getAll('dryRun').includes('All');
    const sub = route.subresource;

    if (sub === 'status' && t.hasStatus) {
      switch (method) {
        case 'GET':
          return sendJson(res, 200, registry.mustGet(t, ns, name));
        case 'PUT':
          return sendJson(
            res,
            200,
            registry.replace(t, ns, name, await readJson(req), { dryRun, subresource: 'status' }),
          );
        case 'PATCH': {
          const { contentType, body } = await readPatch(req, q);
          return sendJson(res, 200, registry.patch(t, ns, name, contentType, body, { dryRun, subresource: 'status' }));
        }
        default:
          throw methodNotAllowed();
      }
    }
    if (sub === 'scale' && t.plural === 'statefulsets') {
      const scaleOf = (o: KubeObject) => ({
        kind: 'Scale',
        apiVersion: 'autoscaling/v1',
        metadata: {
          name: o.metadata.name,
          namespace: o.metadata.namespace,
          uid: o.metadata.uid,
          resourceVersion: o.metadata.resourceVersion,
          creationTimestamp: o.metadata.creationTimestamp,
        },
        spec: { replicas: o.spec.replicas },
        status: { replicas: o.status?.replicas ?? 0, selector: labelSelectorString(o.spec.selector ?? {}) },
      });
      const current = registry.mustGet(t, ns, name);
      if (method === 'GET') return sendJson(res, 200, scaleOf(current));
      let scale: { metadata?: { resourceVersion?: string }; spec?: { replicas?: unknown } };
      if (method === 'PUT') scale = (await readJson(req)) as typeof scale;
      else if (method === 'PATCH') {
        const { contentType, body } = await readPatch(req, q);
        const { jsonPatch, mergePatch } = await import('./patch.ts');
        const base = scaleOf(current) as never;
        scale = (
          contentType.startsWith('application/json-patch+json')
            ? jsonPatch(base, body as never)
            : mergePatch(base, body as never)
        ) as typeof scale;
      } else throw methodNotAllowed();
      const replicas = scale?.spec?.replicas;
      if (typeof replicas !== 'number' || !Number.isInteger(replicas) || replicas < 0) {
        throw new ApiError(
          422,
          'Invalid',
          `Scale.autoscaling "${name}" is invalid: spec.replicas: Invalid value: ${JSON.stringify(replicas)}: must be greater than or equal to 0`,
        );
      }
      const updated = registry.replace(
        t,
        ns,
        name,
        {
          ...current,
          metadata: {
            ...current.metadata,
            resourceVersion: scale.metadata?.resourceVersion ?? current.metadata.resourceVersion,
          },
          spec: { ...current.spec, replicas },
        },
        { dryRun },
      );
      return sendJson(res, 200, scaleOf(updated));
    }
    if (sub === 'log' && t.plural === 'pods') {
      registry.mustGet(t, ns, name);
      res.writeHead(200, { 'Content-Type': 'text/plain' });
      res.end('');
      return;
    }
    if (sub === 'exec' && t.plural === 'pods') {
      throw badRequest('Upgrade request required');
    }
    throw new ApiError(404, 'NotFound', 'the server could not find the requested resource', {});
  }

  private listBody(t: ResourceType, ns: string | undefined, q: URLSearchParams) {
    const label = parseLabelSelector(q.get('labelSelector'));
    const field = parseFieldSelector(q.get('fieldSelector'));
    if (t.namespaced && ns && !this.deps.registry.get(resourceByPath('', 'v1', 'namespaces')!, undefined, ns)) {
      // A real server answers an empty list for a namespace that does not exist.
    }
    let items = this.deps.registry.list(t, ns).filter((o) => label(o) && field(o));
    const rv = this.deps.registry.currentResourceVersion();
    const metadata: Record<string, unknown> = { resourceVersion: rv };
    const limit = Number(q.get('limit') ?? 0);
    let start = 0;
    const cont = q.get('continue');
    if (cont) {
      try {
        start = (JSON.parse(Buffer.from(cont, 'base64url').toString('utf8')) as { start: number }).start;
      } catch {
        throw badRequest('continue key is not valid');
      }
    }
    items = items.slice(start);
    if (limit > 0 && items.length > limit) {
      metadata.continue = Buffer.from(JSON.stringify({ start: start + limit })).toString('base64url');
      metadata.remainingItemCount = items.length - limit;
      items = items.slice(0, limit);
    }
    return {
      kind: `${t.kind}List`,
      apiVersion: apiVersionOf(t),
      metadata,
      items: items.map(({ kind: _k, apiVersion: _a, ...rest }) => rest),
    };
  }

  private watch(
    req: IncomingMessage,
    res: ServerResponse,
    t: ResourceType,
    ns: string | undefined,
    q: URLSearchParams,
  ): void {
    const { registry } = this.deps;
    const label = parseLabelSelector(q.get('labelSelector'));
    const field = parseFieldSelector(q.get('fieldSelector'));
    const inScope: Selector = (o) => (!ns || !t.namespaced || o.metadata.namespace === ns) && label(o) && field(o);
    const rvParam = q.get('resourceVersion');
    const timeout = Number(q.get('timeoutSeconds') ?? DEFAULT_WATCH_TIMEOUT_S);

    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-cache, private' });
    res.flushHeaders();
    const write = (type: string, object: unknown) => {
      if (!res.writableEnded) res.write(`${JSON.stringify({ type, object })}\n`);
    };
    const deliver = (ev: StoredEvent) => {
      if (ev.resource !== t) return;
      const now = inScope(ev.object);
      const before = ev.old ? inScope(ev.old) : false;
      if (ev.type === 'ADDED') {
        if (now) write('ADDED', ev.object);
      } else if (ev.type === 'DELETED') {
        if (now || before) write('DELETED', ev.object);
      } else if (now && before) write('MODIFIED', ev.object);
      else if (now) write('ADDED', ev.object);
      else if (before) write('DELETED', ev.object);
    };

    // Same tick: nothing can happen between the replay and the subscription.
    if (!rvParam || rvParam === '0') {
      for (const o of registry.list(t, ns)) if (inScope(o)) write('ADDED', o);
    } else {
      const since = registry.eventsSince(Number(rvParam));
      if (!since || Number.isNaN(Number(rvParam))) {
        const status: Status = new ApiError(
          410,
          'Expired',
          `too old resource version: ${rvParam} (${registry.currentResourceVersion()})`,
        ).toStatus();
        write('ERROR', status);
        res.end();
        return;
      }
      for (const ev of since) deliver(ev);
    }
    const unsubscribe = registry.subscribe(deliver);
    this.watches.add(res);
    const timer = setTimeout(() => res.end(), Math.max(0, timeout) * 1000);
    timer.unref();
    const done = () => {
      clearTimeout(timer);
      unsubscribe();
      this.watches.delete(res);
    };
    res.once('close', done);
    req.once('close', done);
  }

  private discovery(path: string): Discovery {
    const groups = [...new Set(RESOURCES.filter((r) => r.group).map((r) => r.group))];
    const resourceList = (group: string, version: string) => ({
      kind: 'APIResourceList',
      apiVersion: 'v1',
      groupVersion: group ? `${group}/${version}` : version,
      resources: RESOURCES.filter((r) => r.group === group && r.version === version).flatMap((r) => {
        const verbs = ['create', 'delete', 'deletecollection', 'get', 'list', 'patch', 'update', 'watch'];
        const main = {
          name: r.plural,
          singularName: r.singular,
          namespaced: r.namespaced,
          kind: r.kind,
          verbs,
          ...(r.shortNames ? { shortNames: r.shortNames } : {}),
        };
        const subs = [];
        if (r.hasStatus)
          subs.push({
            name: `${r.plural}/status`,
            singularName: '',
            namespaced: r.namespaced,
            kind: r.kind,
            verbs: ['get', 'patch', 'update'],
          });
        if (r.plural === 'statefulsets')
          subs.push({
            name: 'statefulsets/scale',
            singularName: '',
            namespaced: true,
            group: 'autoscaling',
            version: 'v1',
            kind: 'Scale',
            verbs: ['get', 'patch', 'update'],
          });
        if (r.plural === 'pods') {
          subs.push({
            name: 'pods/exec',
            singularName: '',
            namespaced: true,
            kind: 'PodExecOptions',
            verbs: ['create', 'get'],
          });
          subs.push({ name: 'pods/log', singularName: '', namespaced: true, kind: 'Pod', verbs: ['get'] });
        }
        return [main, ...subs];
      }),
    });
    const groupOf = (g: string) => ({
      kind: 'APIGroup',
      apiVersion: 'v1',
      name: g,
      versions: [{ groupVersion: `${g}/v1`, version: 'v1' }],
      preferredVersion: { groupVersion: `${g}/v1`, version: 'v1' },
    });
    if (path === '/version') {
      return {
        body: {
          major: '1',
          minor: '31',
          gitVersion: 'v1.31.0-charmflow-test',
          goVersion: 'go1.22',
          platform: 'linux/amd64',
        },
      };
    }
    if (path === '/api') {
      return {
        body: {
          kind: 'APIVersions',
          versions: ['v1'],
          serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: this.deps.serverAddress() }],
        },
      };
    }
    if (path === '/api/v1') return { body: resourceList('', 'v1') };
    if (path === '/apis') return { body: { kind: 'APIGroupList', apiVersion: 'v1', groups: groups.map(groupOf) } };
    for (const g of groups) {
      if (path === `/apis/${g}`) return { body: groupOf(g) };
      if (path === `/apis/${g}/v1`) return { body: resourceList(g, 'v1') };
    }
    return undefined;
  }

  /** Websocket upgrades: pod exec (the only streaming subresource served). */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const refuse = (err: ApiError) => {
      const body = JSON.stringify(err.toStatus());
      socket.end(
        `HTTP/1.1 ${err.code} ${err.reason}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    };
    try {
      if (!this.authorized(req)) throw new ApiError(401, 'Unauthorized', 'Unauthorized');
      const url = new URL(req.url ?? '/', 'https://localhost');
      const route = parseRoute(url.pathname);
      if (route?.resource.plural !== 'pods' || !route.name || route.subresource !== 'exec') {
        throw new ApiError(404, 'NotFound', 'the server could not find the requested resource', {});
      }
      const exec = this.prepareExec(route.namespace!, route.name, url.searchParams);
      this.wss.handleUpgrade(req, socket, head, (ws) => runExec(ws, exec));
    } catch (err) {
      refuse(err instanceof ApiError ? err : new ApiError(500, 'InternalError', String(err)));
    }
  }

  private prepareExec(ns: string, name: string, q: URLSearchParams) {
    const { registry, kubelet } = this.deps;
    const pods = resourceByPath('', 'v1', 'pods')!;
    const pod = registry.mustGet(pods, ns, name);
    const command = q.getAll('command');
    if (command.length === 0) throw badRequest('you must specify at least 1 command');
    const flag = (k: string) => q.get(k) === 'true' || q.get(k) === '1';
    const stdin = flag('stdin');
    const stdout = flag('stdout');
    const stderr = flag('stderr');
    if (!stdin && !stdout && !stderr) throw badRequest('you must specify at least 1 of stdin, stdout, stderr');
    const containers = (pod.spec.containers ?? []) as Container[];
    let containerName = q.get('container') ?? '';
    if (!containerName) {
      if (containers.length !== 1) {
        throw badRequest(
          `a container name must be specified for pod ${name}, choose one of: [${containers.map((c) => c.name).join(' ')}]`,
        );
      }
      containerName = containers[0].name;
    }
    const container = containers.find((c) => c.name === containerName);
    if (!container) throw badRequest(`container ${containerName} is not valid for pod ${name}`);
    const phase = pod.status?.phase;
    if (phase === 'Succeeded' || phase === 'Failed') {
      throw badRequest(`cannot exec into a container in a completed pod; current phase is ${phase}`);
    }
    const state = (pod.status?.containerStatuses ?? []).find((s: { name: string }) => s.name === containerName)?.state;
    const sb = kubelet.host.sandbox(pod.metadata.uid);
    // A pod being deleted still runs until its kubelet has stopped it, and takes execs until then.
    if (!state?.running || !sb || sb.dead) {
      throw badRequest(`unable to upgrade connection: container not found ("${containerName}")`);
    }
    const env = kubelet.host.execEnv(pod.spec.hostname ?? name, kubelet.containerEnv(pod, container));
    return {
      argv: kubelet.host.execArgv(sb, command, container.workingDir || '/'),
      env,
      stdin,
      stdout,
      stderr,
      command,
    };
  }
}

function methodNotAllowed(): ApiError {
  return new ApiError(405, 'MethodNotAllowed', 'the server does not allow this method on the requested resource');
}

function parseRoute(pathname: string): Route | undefined {
  const parts = pathname.split('/').filter(Boolean).map(decodeURIComponent);
  let group: string;
  let version: string;
  let rest: string[];
  if (parts[0] === 'api' && parts.length >= 2) {
    group = '';
    version = parts[1];
    rest = parts.slice(2);
  } else if (parts[0] === 'apis' && parts.length >= 3) {
    group = parts[1];
    version = parts[2];
    rest = parts.slice(3);
  } else return undefined;
  let watchPath = false;
  if (rest[0] === 'watch') {
    watchPath = true;
    rest = rest.slice(1);
  }
  if (rest.length === 0) return undefined;
  // namespaces/{ns}/{plural}[/{name}[/{sub}]] for namespaced resources
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    const resource = resourceByPath(group, version, rest[2]);
    if (resource?.namespaced && rest.length <= 5) {
      return { resource, namespace: rest[1], name: rest[3], subresource: rest[4], watchPath };
    }
    if (group !== '' || rest.length !== 3) return undefined;
  }
  const resource = resourceByPath(group, version, rest[0]);
  if (!resource || rest.length > 3) return undefined;
  if (resource.namespaced && rest.length > 1) return undefined;
  return { resource, name: rest[1], subresource: rest[2], watchPath };
}

async function readBody(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) throw new ApiError(413, 'RequestEntityTooLarge', 'the request is too large');
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const raw = (await readBody(req)).toString('utf8');
  if (!raw.trim()) throw badRequest('the body of the request was empty');
  try {
    return JSON.parse(raw);
  } catch (err) {
    throw badRequest(`the object provided is unrecognized: ${(err as Error).message}`);
  }
}

async function readPatch(req: IncomingMessage, q: URLSearchParams): Promise<{ contentType: string; body: unknown }> {
  const contentType = String(req.headers['content-type'] ?? '').toLowerCase();
  const raw = (await readBody(req)).toString('utf8');
  if (!raw.trim()) throw badRequest('the body of the request was empty');
  if (contentType.startsWith('application/apply-patch+yaml')) {
    if (!q.get('fieldManager')) throw badRequest('PATCH, application/apply-patch+yaml requests must set fieldManager');
    try {
      return { contentType, body: parseYaml(raw) };
    } catch (err) {
      throw badRequest(`error decoding YAML: ${(err as Error).message}`);
    }
  }
  try {
    return { contentType, body: JSON.parse(raw) };
  } catch (err) {
    throw badRequest(`error decoding patch: ${(err as Error).message}`);
  }
}

async function deleteOptions(req: IncomingMessage, q: URLSearchParams): Promise<DeleteOptions> {
  const raw = (await readBody(req)).toString('utf8').trim();
  let body: {
    propagationPolicy?: string;
    gracePeriodSeconds?: number;
    orphanDependents?: boolean;
    preconditions?: { uid?: string; resourceVersion?: string };
  } = {};
  if (raw) {
    try {
      body = JSON.parse(raw);
    } catch {
      throw badRequest('the body of the request was not valid DeleteOptions');
    }
  }
  const policy =
    q.get('propagationPolicy') ??
    body.propagationPolicy ??
    (q.get('orphanDependents') === 'true' || body.orphanDependents ? 'Orphan' : undefined);
  if (policy !== undefined && !['Orphan', 'Background', 'Foreground'].includes(policy)) {
    throw new ApiError(
      422,
      'Invalid',
      `DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "${policy}": supported values: "Foreground", "Background", "Orphan"`,
    );
  }
  const graceRaw = q.get('gracePeriodSeconds') ?? body.gracePeriodSeconds;
  const grace = graceRaw === undefined || graceRaw === null ? undefined : Number(graceRaw);
  return {
    propagationPolicy: policy as DeleteOptions['propagationPolicy'],
    gracePeriodSeconds: grace,
    preconditions: body.preconditions,
  };
}

function sendJson(res: ServerResponse, code: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}
