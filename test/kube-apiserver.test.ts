// The in-process Kubernetes API server test double, driven through @kubernetes/client-node the way
// the Kubernetes provider drives a real cluster.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { get as httpsGet } from 'node:https';
import { connect } from 'node:net';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import * as k8s from '@kubernetes/client-node';
import WebSocket from 'ws';
import { createFleet, fleetUnsupportedReason } from './fleet.ts';
import {
  type KubeApiServer,
  kubeApiServerUnsupportedReason,
  startKubeApiServer,
} from './helpers/kube-apiserver/index.ts';

const BASE = '/var/tmp/charmflow-kube-test';
const reason = kubeApiServerUnsupportedReason();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(
  what: string,
  fn: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    await sleep(50);
  }
  throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

/** The HTTP status of a client-node call that must fail, and the Status body it carried. */
async function failure(p: Promise<unknown>): Promise<{ code: number; body: any }> {
  try {
    await p;
  } catch (err) {
    const e = err as { code?: number; body?: unknown };
    assert.ok(typeof e.code === 'number', `not an ApiException: ${String(err)}`);
    return { code: e.code!, body: typeof e.body === 'string' ? JSON.parse(e.body) : e.body };
  }
  assert.fail('the call succeeded');
}

interface ExecResult {
  stdout: string;
  stderr: string;
  status: k8s.V1Status;
  code: number;
}

function exitCodeOf(status: k8s.V1Status): number {
  if (status.status === 'Success') return 0;
  const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
  return cause ? Number(cause.message) : -1;
}

async function exec(
  kc: k8s.KubeConfig,
  ns: string,
  pod: string,
  command: string[],
  stdin?: Buffer | string,
): Promise<ExecResult> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const chunks: Buffer[] = [];
  const errChunks: Buffer[] = [];
  stdout.on('data', (d) => chunks.push(d));
  stderr.on('data', (d) => errChunks.push(d));
  const input = stdin === undefined ? null : new PassThrough();
  const status = await new Promise<k8s.V1Status>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`exec ${command.join(' ')} timed out`)), 15_000);
    new k8s.Exec(kc)
      .exec(ns, pod, 'charm', command, stdout, stderr, input, false, (s) => {
        clearTimeout(timer);
        resolve(s);
      })
      .then(
        (ws) => {
          ws.on('close', () => setTimeout(() => reject(new Error('exec socket closed without a status')), 200));
          input?.end(stdin);
        },
        (err) => {
          clearTimeout(timer);
          reject(err);
        },
      );
  });
  return {
    stdout: Buffer.concat(chunks).toString('utf8'),
    stderr: Buffer.concat(errChunks).toString('utf8'),
    status,
    code: exitCodeOf(status),
  };
}

/** The status code with which the websocket upgrade of an exec was refused. */
async function execRefused(kc: k8s.KubeConfig, ns: string, pod: string, container = 'charm'): Promise<string> {
  try {
    const ws = await new k8s.Exec(kc).exec(
      ns,
      pod,
      container,
      ['true'],
      new PassThrough(),
      new PassThrough(),
      null,
      false,
    );
    ws.close();
  } catch (err) {
    return String((err as { message?: string }).message ?? err);
  }
  assert.fail('exec was accepted');
}

function statefulSet(
  name: string,
  replicas: number,
  extra: Partial<k8s.V1StatefulSetSpec> = {},
  image = 'ubuntu:24.04',
): k8s.V1StatefulSet {
  return {
    metadata: { name, labels: { app: name } },
    spec: {
      replicas,
      serviceName: `${name}-endpoints`,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name: 'charm', image, env: [{ name: 'APP_NAME', value: name }] }] },
      },
      ...extra,
    },
  };
}

function canConnect(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port });
    const done = (ok: boolean) => {
      s.destroy();
      resolve(ok);
    };
    s.setTimeout(1000, () => done(false));
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

/** Host pids whose command line contains marker. */
function hostPidsWith(marker: string): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${e}/cmdline`, 'utf8').includes(marker)) out.push(Number(e));
    } catch {
      // gone
    }
  }
  return out;
}

describe('kube-apiserver test double', { skip: reason }, () => {
  let server: KubeApiServer;
  let kc: k8s.KubeConfig;
  let core: k8s.CoreV1Api;
  let apps: k8s.AppsV1Api;
  const dir = join(BASE, String(process.pid));

  async function readyPods(ns: string, app: string, n: number): Promise<k8s.V1Pod[]> {
    return until(`${n} ready ${app} pods`, async () => {
      const pods = (await core.listNamespacedPod({ namespace: ns, labelSelector: `app=${app}` })).items;
      const ready = pods.filter(
        (p) =>
          !p.metadata?.deletionTimestamp &&
          p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
      );
      return ready.length === n && pods.length === n ? pods : undefined;
    });
  }

  async function newNamespace(name: string): Promise<void> {
    await core.createNamespace({ body: { metadata: { name } } });
  }

  before(async () => {
    mkdirSync(dir, { recursive: true });
    server = await startKubeApiServer({ dir });
    kc = new k8s.KubeConfig();
    kc.loadFromFile(server.kubeconfigPath);
    core = kc.makeApiClient(k8s.CoreV1Api);
    apps = kc.makeApiClient(k8s.AppsV1Api);
  });

  after(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('kubeconfig: one https cluster with its CA, a bearer token, context fake', () => {
    assert.equal(kc.getCurrentContext(), 'fake');
    assert.match(server.url, /^https:\/\/127\.0\.0\.1:\d+$/);
    assert.equal(kc.getCurrentCluster()?.server, server.url);
    assert.ok(kc.getCurrentCluster()?.caData);
    assert.equal(kc.getCurrentUser()?.token, server.token);
    assert.equal(readFileSync(server.kubeconfigPath, 'utf8'), server.kubeconfig);
  });

  test('CRUD: create, get, list by label and field, replace, patch, delete; 404, AlreadyExists, 422', async () => {
    await newNamespace('crud');
    const created = await core.createNamespacedConfigMap({
      namespace: 'crud',
      body: { metadata: { name: 'one', labels: { tier: 'a' } }, data: { k: 'v' } },
    });
    assert.ok(created.metadata?.uid);
    assert.match(created.metadata?.resourceVersion ?? '', /^\d+$/);
    assert.ok(created.metadata?.creationTimestamp);
    await core.createNamespacedConfigMap({
      namespace: 'crud',
      body: { metadata: { name: 'two', labels: { tier: 'b' } } },
    });

    const got = await core.readNamespacedConfigMap({ namespace: 'crud', name: 'one' });
    assert.deepEqual(got.data, { k: 'v' });
    const stored = server.get('v1', 'ConfigMap', 'crud', 'one') as any;
    assert.deepEqual(
      [stored.kind, stored.metadata.uid, stored.metadata.resourceVersion, stored.data],
      ['ConfigMap', got.metadata?.uid, got.metadata?.resourceVersion, { k: 'v' }],
    );

    const byLabel = await core.listNamespacedConfigMap({ namespace: 'crud', labelSelector: 'tier=b' });
    assert.deepEqual(
      byLabel.items.map((c) => c.metadata?.name),
      ['two'],
    );
    const setBased = await core.listNamespacedConfigMap({ namespace: 'crud', labelSelector: 'tier in (a,b),tier!=a' });
    assert.deepEqual(
      setBased.items.map((c) => c.metadata?.name),
      ['two'],
    );
    const byName = await core.listNamespacedConfigMap({ namespace: 'crud', fieldSelector: 'metadata.name=one' });
    assert.deepEqual(
      byName.items.map((c) => c.metadata?.name),
      ['one'],
    );
    assert.ok(Number(byName.metadata?.resourceVersion) >= Number(created.metadata?.resourceVersion));

    const replaced = await core.replaceNamespacedConfigMap({
      namespace: 'crud',
      name: 'one',
      body: { ...got, data: { k: 'w' } },
    });
    assert.equal(replaced.data?.k, 'w');
    assert.equal(replaced.metadata?.uid, created.metadata?.uid);
    assert.ok(Number(replaced.metadata?.resourceVersion) > Number(got.metadata?.resourceVersion));

    // client-node's patchNamespacedX sends application/json-patch+json unless told otherwise
    const jsonPatched = await core.patchNamespacedConfigMap({
      namespace: 'crud',
      name: 'one',
      body: [{ op: 'add', path: '/data/extra', value: '1' }],
    });
    assert.deepEqual(jsonPatched.data, { k: 'w', extra: '1' });
    const merged = await core.patchNamespacedConfigMap(
      { namespace: 'crud', name: 'one', body: { data: { extra: null, more: '2' } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    assert.deepEqual(merged.data, { k: 'w', more: '2' });

    const missing = await failure(core.readNamespacedConfigMap({ namespace: 'crud', name: 'nope' }));
    assert.equal(missing.code, 404);
    assert.equal(missing.body.kind, 'Status');
    assert.equal(missing.body.reason, 'NotFound');
    assert.equal(missing.body.message, 'configmaps "nope" not found');
    assert.equal((await failure(core.deleteNamespacedConfigMap({ namespace: 'crud', name: 'nope' }))).code, 404);
    assert.equal(
      (await failure(core.patchNamespacedConfigMap({ namespace: 'crud', name: 'nope', body: [] }))).code,
      404,
    );
    const noNs = await failure(
      core.createNamespacedConfigMap({ namespace: 'ghost', body: { metadata: { name: 'x' } } }),
    );
    assert.equal(noNs.code, 404);
    assert.equal(noNs.body.message, 'namespaces "ghost" not found');

    const dup = await failure(
      core.createNamespacedConfigMap({ namespace: 'crud', body: { metadata: { name: 'one' } } }),
    );
    assert.equal(dup.code, 409);
    assert.equal(dup.body.reason, 'AlreadyExists');

    const bad = await failure(
      core.createNamespacedPod({
        namespace: 'crud',
        body: { metadata: { name: 'Bad_Name' }, spec: { containers: [] } },
      }),
    );
    assert.equal(bad.code, 422);
    assert.equal(bad.body.reason, 'Invalid');
    assert.ok(bad.body.details.causes.some((c: any) => c.field === 'spec.containers'));

    const secret = await core.createNamespacedSecret({
      namespace: 'crud',
      body: { metadata: { name: 's' }, stringData: { pw: 'hunter2' } },
    });
    assert.equal(secret.data?.pw, Buffer.from('hunter2').toString('base64'));
    assert.equal(secret.stringData, undefined);
    const svc = await core.createNamespacedService({
      namespace: 'crud',
      body: { metadata: { name: 'svc' }, spec: { ports: [{ port: 80 }] } },
    });
    assert.match(svc.spec?.clusterIP ?? '', /^10\.96\.\d+\.\d+$/);
    const headless = await core.createNamespacedService({
      namespace: 'crud',
      body: { metadata: { name: 'hl' }, spec: { clusterIP: 'None', ports: [{ port: 80 }] } },
    });
    assert.equal(headless.spec?.clusterIP, 'None');

    await core.deleteNamespacedConfigMap({ namespace: 'crud', name: 'one' });
    assert.equal(server.get('v1', 'ConfigMap', 'crud', 'one'), undefined);
    assert.deepEqual(
      server.list('v1', 'ConfigMap', 'crud').map((c: any) => c.metadata.name),
      ['two'],
    );
  });

  test('a write carrying a stale resourceVersion gets 409 Conflict; a fresh one succeeds', async () => {
    await newNamespace('occ');
    const v1 = await core.createNamespacedConfigMap({
      namespace: 'occ',
      body: { metadata: { name: 'c' }, data: { n: '1' } },
    });
    const v2 = await core.replaceNamespacedConfigMap({
      namespace: 'occ',
      name: 'c',
      body: { ...v1, data: { n: '2' } },
    });
    const stale = await failure(
      core.replaceNamespacedConfigMap({ namespace: 'occ', name: 'c', body: { ...v1, data: { n: '3' } } }),
    );
    assert.equal(stale.code, 409);
    assert.deepEqual(
      { kind: stale.body.kind, status: stale.body.status, reason: stale.body.reason, code: stale.body.code },
      { kind: 'Status', status: 'Failure', reason: 'Conflict', code: 409 },
    );
    assert.match(stale.body.message, /the object has been modified/);
    const stalePatch = await failure(
      core.patchNamespacedConfigMap(
        {
          namespace: 'occ',
          name: 'c',
          body: { metadata: { resourceVersion: v1.metadata?.resourceVersion }, data: { n: '4' } },
        },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      ),
    );
    assert.equal(stalePatch.code, 409);
    const testOp = await failure(
      core.patchNamespacedConfigMap({
        namespace: 'occ',
        name: 'c',
        body: [
          { op: 'test', path: '/metadata/resourceVersion', value: v1.metadata?.resourceVersion },
          { op: 'replace', path: '/data/n', value: '5' },
        ],
      }),
    );
    assert.equal(testOp.code, 422);
    const fresh = await core.patchNamespacedConfigMap({
      namespace: 'occ',
      name: 'c',
      body: [
        { op: 'test', path: '/metadata/resourceVersion', value: v2.metadata?.resourceVersion },
        { op: 'replace', path: '/data/n', value: '6' },
      ],
    });
    assert.equal(fresh.data?.n, '6');
  });

  test('status subresource: the main resource ignores .status, /status changes only .status', async () => {
    await newNamespace('status');
    const sts = await apps.createNamespacedStatefulSet({
      namespace: 'status',
      body: { ...statefulSet('st', 0), status: { replicas: 99, readyReplicas: 99 } as k8s.V1StatefulSetStatus },
    });
    assert.notEqual(sts.status?.replicas, 99);
    assert.equal(sts.metadata?.generation, 1);
    const current = await until('status reported', async () => {
      const s = await apps.readNamespacedStatefulSet({ namespace: 'status', name: 'st' });
      return s.status?.observedGeneration === 1 ? s : undefined;
    });
    const put = await apps.replaceNamespacedStatefulSet({
      namespace: 'status',
      name: 'st',
      body: { ...current, metadata: { ...current.metadata, labels: { app: 'st', x: 'y' } }, status: { replicas: 42 } },
    });
    assert.equal(put.metadata?.labels?.x, 'y');
    assert.equal(put.status?.replicas, 0);
    assert.equal(put.metadata?.generation, 1, 'a label change is no spec change');

    // Pods: the status a client writes through /status stays; a main-resource PUT cannot touch it.
    await core.createNamespacedPod({
      namespace: 'status',
      body: { metadata: { name: 'p' }, spec: { containers: [{ name: 'charm', image: 'ubuntu:24.04' }] } },
    });
    const running = await until('pod running', async () => {
      const p = await core.readNamespacedPod({ namespace: 'status', name: 'p' });
      return p.status?.phase === 'Running' ? p : undefined;
    });
    const viaStatus = await core.replaceNamespacedPodStatus({
      namespace: 'status',
      name: 'p',
      body: {
        ...running,
        metadata: { ...running.metadata, labels: { ignored: 'yes' } },
        status: { ...running.status, message: 'hello' },
      },
    });
    assert.equal(viaStatus.status?.message, 'hello');
    assert.equal(viaStatus.metadata?.labels?.ignored, undefined, '/status ignores metadata');
    const viaMain = await core.patchNamespacedPod(
      { namespace: 'status', name: 'p', body: { metadata: { labels: { a: 'b' } }, status: { message: 'nope' } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.StrategicMergePatch),
    );
    assert.equal(viaMain.metadata?.labels?.a, 'b');
    assert.equal(viaMain.status?.message, 'hello');
    const statusPatch = await core.patchNamespacedPodStatus(
      { namespace: 'status', name: 'p', body: { status: { message: 'patched' }, spec: { containers: [] } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    assert.equal(statusPatch.status?.message, 'patched');
    assert.equal(statusPatch.spec?.containers.length, 1);
    const immutable = await failure(
      core.patchNamespacedPod(
        { namespace: 'status', name: 'p', body: { spec: { hostname: 'other' } } },
        k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
      ),
    );
    assert.equal(immutable.code, 422);
  });

  test('watch: ADDED, MODIFIED, DELETED in order, filtered by label, resumable from a resourceVersion', async () => {
    await newNamespace('watch');
    const seen: string[] = [];
    const watch = new k8s.Watch(kc);
    const req = await watch.watch(
      '/api/v1/namespaces/watch/configmaps',
      { labelSelector: 'w=yes' },
      (type, obj) => seen.push(`${type} ${obj.metadata.name} ${obj.data?.n ?? ''}`),
      () => undefined,
    );
    const c = await core.createNamespacedConfigMap({
      namespace: 'watch',
      body: { metadata: { name: 'c', labels: { w: 'yes' } }, data: { n: '1' } },
    });
    await core.createNamespacedConfigMap({
      namespace: 'watch',
      body: { metadata: { name: 'other', labels: { w: 'no' } } },
    });
    await core.replaceNamespacedConfigMap({ namespace: 'watch', name: 'c', body: { ...c, data: { n: '2' } } });
    await core.deleteNamespacedConfigMap({ namespace: 'watch', name: 'c' });
    await until('three events', () => seen.length >= 3 || undefined);
    await sleep(100);
    req.abort();
    assert.deepEqual(seen, ['ADDED c 1', 'MODIFIED c 2', 'DELETED c 2']);

    // From a resourceVersion: only what came after it.
    const resumed: string[] = [];
    const req2 = await watch.watch(
      '/api/v1/namespaces/watch/configmaps',
      { resourceVersion: c.metadata?.resourceVersion, labelSelector: 'w=yes' },
      (type, obj) => resumed.push(`${type} ${obj.metadata.name}`),
      () => undefined,
    );
    await until('replayed events', () => resumed.length >= 2 || undefined);
    req2.abort();
    assert.deepEqual(resumed, ['MODIFIED c', 'DELETED c']);

    // timeoutSeconds ends the stream from the server side.
    const ended = await new Promise<boolean>((resolve) => {
      void watch.watch(
        '/api/v1/namespaces/watch/configmaps',
        { timeoutSeconds: 1 },
        () => undefined,
        () => resolve(true),
      );
      setTimeout(() => resolve(false), 5000);
    });
    assert.ok(ended, 'the watch ended after timeoutSeconds');
  });

  test('StatefulSet 1→3→1: pods by ordinal, created in order, removed highest first, status follows', async () => {
    await newNamespace('scale');
    const events: string[] = [];
    const watch = await new k8s.Watch(kc).watch(
      '/api/v1/namespaces/scale/pods',
      {},
      (type, obj) => {
        if (type === 'ADDED' || type === 'DELETED') events.push(`${type} ${obj.metadata.name}`);
      },
      () => undefined,
    );
    const sts = await apps.createNamespacedStatefulSet({ namespace: 'scale', body: statefulSet('web', 1) });
    const [p0] = await readyPods('scale', 'web', 1);
    assert.equal(p0.metadata?.name, 'web-0');
    assert.equal(p0.metadata?.labels?.['statefulset.kubernetes.io/pod-name'], 'web-0');
    assert.equal(p0.metadata?.labels?.['apps.kubernetes.io/pod-index'], '0');
    assert.match(p0.metadata?.labels?.['controller-revision-hash'] ?? '', /^web-\w+$/);
    assert.deepEqual(
      p0.metadata?.ownerReferences?.map((o) => [o.kind, o.name, o.uid, o.controller]),
      [['StatefulSet', 'web', sts.metadata?.uid, true]],
    );
    assert.equal(p0.spec?.hostname, 'web-0');
    assert.equal(p0.spec?.subdomain, 'web-endpoints');
    assert.match(p0.status?.podIP ?? '', /^\d+\.\d+\.\d+\.\d+$/);

    await apps.patchNamespacedStatefulSetScale(
      { namespace: 'scale', name: 'web', body: { spec: { replicas: 3 } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    const three = await readyPods('scale', 'web', 3);
    assert.deepEqual(three.map((p) => p.metadata?.name).sort(), ['web-0', 'web-1', 'web-2']);
    assert.equal(new Set(three.map((p) => p.status?.podIP)).size, 3);
    const status = await until('status of 3', async () => {
      const s = await apps.readNamespacedStatefulSet({ namespace: 'scale', name: 'web' });
      return s.status?.readyReplicas === 3 ? s.status : undefined;
    });
    assert.equal(status.replicas, 3);
    assert.equal(status.currentRevision, status.updateRevision);
    assert.equal(status.observedGeneration, 2);
    assert.equal(status.updateRevision, p0.metadata?.labels?.['controller-revision-hash']);

    const current = await apps.readNamespacedStatefulSet({ namespace: 'scale', name: 'web' });
    await apps.replaceNamespacedStatefulSet({
      namespace: 'scale',
      name: 'web',
      body: { ...current, spec: { ...current.spec!, replicas: 1 } },
    });
    await until('scaled down to 1', async () => {
      const pods = (await core.listNamespacedPod({ namespace: 'scale' })).items;
      return pods.length === 1 || undefined;
    });
    await sleep(100);
    watch.abort();
    assert.deepEqual(events, ['ADDED web-0', 'ADDED web-1', 'ADDED web-2', 'DELETED web-2', 'DELETED web-1']);
    const down = await until('status of 1', async () => {
      const s = await apps.readNamespacedStatefulSet({ namespace: 'scale', name: 'web' });
      return s.status?.replicas === 1 && s.status.readyReplicas === 1 ? s.status : undefined;
    });
    assert.equal(down.observedGeneration, 3);
  });

  test('OrderedReady waits for each pod to be Ready; Parallel does not', async () => {
    await newNamespace('order');
    await apps.createNamespacedStatefulSet({
      namespace: 'order',
      body: statefulSet('stuck', 3, {}, 'charm-base:missing'),
    });
    await apps.createNamespacedStatefulSet({
      namespace: 'order',
      body: statefulSet('par', 3, { podManagementPolicy: 'Parallel' }, 'charm-base:missing'),
    });
    await until('three parallel pods', async () => {
      const pods = (await core.listNamespacedPod({ namespace: 'order', labelSelector: 'app=par' })).items;
      return pods.length === 3 || undefined;
    });
    const stuck = await until('stuck-0 image pull failing', async () => {
      const p = await core.readNamespacedPod({ namespace: 'order', name: 'stuck-0' });
      return p.status?.containerStatuses?.[0]?.state?.waiting ? p : undefined;
    });
    assert.equal(stuck.status?.phase, 'Pending');
    await sleep(300);
    const names = (await core.listNamespacedPod({ namespace: 'order', labelSelector: 'app=stuck' })).items.map(
      (p) => p.metadata?.name,
    );
    assert.deepEqual(names, ['stuck-0'], 'stuck-1 waits for stuck-0 to be Ready');
  });

  test('a pod deleted under its StatefulSet comes back: same name, new uid, empty sandbox', async () => {
    await newNamespace('recreate');
    await apps.createNamespacedStatefulSet({ namespace: 'recreate', body: statefulSet('db', 1) });
    const [before] = await readyPods('recreate', 'db', 1);
    const wrote = await exec(kc, 'recreate', 'db-0', [
      'sh',
      '-c',
      'echo data > /var/lib/charmflow/state && echo tmp > /tmp/t',
    ]);
    assert.equal(wrote.code, 0);
    const deleted = await core.deleteNamespacedPod({ namespace: 'recreate', name: 'db-0' });
    assert.ok(deleted.metadata?.deletionTimestamp, 'graceful deletion marks the pod first');
    const after = await until('db-0 recreated', async () => {
      const p = await core.readNamespacedPod({ namespace: 'recreate', name: 'db-0' });
      return p.metadata?.uid !== before.metadata?.uid && p.status?.phase === 'Running' ? p : undefined;
    });
    assert.equal(after.metadata?.name, 'db-0');
    const look = await exec(kc, 'recreate', 'db-0', ['sh', '-c', 'ls -A /var/lib/charmflow /tmp']);
    assert.equal(look.code, 0);
    assert.doesNotMatch(look.stdout, /state|\bt\b/);
  });

  test('RollingUpdate with a partition updates only ordinals at or above it; OnDelete waits for deletions', async () => {
    await newNamespace('rollout');
    await apps.createNamespacedStatefulSet({
      namespace: 'rollout',
      body: statefulSet('ru', 3, { updateStrategy: { type: 'RollingUpdate', rollingUpdate: { partition: 1 } } }),
    });
    await apps.createNamespacedStatefulSet({
      namespace: 'rollout',
      body: statefulSet('od', 2, { updateStrategy: { type: 'OnDelete' } }),
    });
    const ru0 = await readyPods('rollout', 'ru', 3);
    await readyPods('rollout', 'od', 2);
    const oldRev = ru0[0].metadata?.labels?.['controller-revision-hash'];
    const newImage = [{ op: 'replace', path: '/spec/template/spec/containers/0/image', value: 'ubuntu:25.04' }];
    await apps.patchNamespacedStatefulSet({ namespace: 'rollout', name: 'ru', body: newImage });
    await apps.patchNamespacedStatefulSet({ namespace: 'rollout', name: 'od', body: newImage });
    const ru = await until('ru-1 and ru-2 updated', async () => {
      const s = await apps.readNamespacedStatefulSet({ namespace: 'rollout', name: 'ru' });
      return s.status?.updatedReplicas === 2 && s.status.readyReplicas === 3 ? s : undefined;
    });
    const revs = Object.fromEntries(
      (await core.listNamespacedPod({ namespace: 'rollout', labelSelector: 'app=ru' })).items.map((p) => [
        p.metadata?.name,
        [p.metadata?.labels?.['controller-revision-hash'], p.spec?.containers[0].image],
      ]),
    );
    assert.deepEqual(revs['ru-0'], [oldRev, 'ubuntu:24.04']);
    assert.deepEqual(revs['ru-1'], [ru.status?.updateRevision, 'ubuntu:25.04']);
    assert.deepEqual(revs['ru-2'], [ru.status?.updateRevision, 'ubuntu:25.04']);
    assert.equal(ru.status?.currentRevision, oldRev);

    await sleep(300);
    const od = (await core.listNamespacedPod({ namespace: 'rollout', labelSelector: 'app=od' })).items;
    assert.deepEqual(
      od.map((p) => p.spec?.containers[0].image),
      ['ubuntu:24.04', 'ubuntu:24.04'],
      'OnDelete leaves pods alone',
    );
    await core.deleteNamespacedPod({ namespace: 'rollout', name: 'od-1' });
    await until('od-1 recreated at the new revision', async () => {
      const p = await core.readNamespacedPod({ namespace: 'rollout', name: 'od-1' });
      return p.spec?.containers[0].image === 'ubuntu:25.04' && p.status?.phase === 'Running' ? p : undefined;
    });
  });

  test('exec: stdout, stderr, exit code, env, hostname, and a tar piped through stdin', async () => {
    await newNamespace('exec');
    await apps.createNamespacedStatefulSet({ namespace: 'exec', body: statefulSet('ex', 1) });
    await readyPods('exec', 'ex', 1);

    const ok = await exec(kc, 'exec', 'ex-0', [
      'sh',
      '-c',
      'echo out; echo err >&2; echo "$APP_NAME $HOSTNAME $HOME"; hostname',
    ]);
    assert.equal(ok.code, 0);
    assert.equal(ok.status.status, 'Success');
    assert.equal(ok.stdout, 'out\nex ex-0 /root\nex-0\n');
    assert.equal(ok.stderr, 'err\n');

    const failed = await exec(kc, 'exec', 'ex-0', ['sh', '-c', 'echo partial; exit 7']);
    assert.equal(failed.code, 7);
    assert.equal(failed.stdout, 'partial\n');
    assert.deepEqual(
      { status: failed.status.status, reason: failed.status.reason, causes: failed.status.details?.causes },
      { status: 'Failure', reason: 'NonZeroExitCode', causes: [{ reason: 'ExitCode', message: '7' }] },
    );
    assert.match(failed.status.message ?? '', /^command terminated with non-zero exit code: .*exit code 7$/);

    const notFound = await exec(kc, 'exec', 'ex-0', ['no-such-command']);
    assert.notEqual(notFound.code, 0);

    // A tar of a small directory through stdin, unpacked in the pod, read back.
    const src = join(dir, 'tar-src');
    mkdirSync(join(src, 'sub'), { recursive: true });
    writeFileSync(join(src, 'a.txt'), 'alpha\n');
    writeFileSync(join(src, 'sub', 'b.bin'), Buffer.from(Array.from({ length: 70_000 }, (_, i) => i % 251)));
    const tarball = execFileSync('tar', ['-C', src, '-cf', '-', '.']);
    const untar = await exec(
      kc,
      'exec',
      'ex-0',
      [
        'sh',
        '-c',
        'mkdir -p /var/lib/charmflow/charm && tar -C /var/lib/charmflow/charm -xf - && cat /var/lib/charmflow/charm/a.txt && sha256sum /var/lib/charmflow/charm/sub/b.bin',
      ],
      tarball,
    );
    assert.equal(untar.code, 0, untar.stderr);
    const sha = execFileSync('sha256sum', [join(src, 'sub', 'b.bin')], { encoding: 'utf8' }).split(' ')[0];
    assert.equal(untar.stdout, `alpha\n${sha}  /var/lib/charmflow/charm/sub/b.bin\n`);
    assert.equal(
      existsSync('/var/lib/charmflow/charm/a.txt') &&
        readFileSync('/var/lib/charmflow/charm/a.txt', 'utf8') === 'alpha\n',
      false,
    );

    // JSON on stdin, as a hook runtime sends its context.
    const json = await exec(
      kc,
      'exec',
      'ex-0',
      ['python3', '-c', 'import json,sys; print(json.load(sys.stdin)["unit"])'],
      '{"unit":"ex/0"}',
    );
    assert.equal(json.stdout, 'ex/0\n');

    // Large output arrives whole.
    const big = await exec(kc, 'exec', 'ex-0', ['sh', '-c', 'head -c 3000000 /dev/zero | tr "\\0" x']);
    assert.equal(big.stdout.length, 3_000_000);
  });

  test('a process started by exec listens on the pod IP, is reached from here, and dies with its pod', async () => {
    await newNamespace('net');
    await core.createNamespacedPod({
      namespace: 'net',
      body: {
        metadata: { name: 'srv', labels: { app: 'srv' } },
        spec: { containers: [{ name: 'charm', image: 'ubuntu:24.04' }] },
      },
    });
    const [pod] = await readyPods('net', 'srv', 1);
    const ip = pod.status!.podIP!;
    const marker = `cfkube-marker-${process.pid}`;
    const started = await exec(kc, 'net', 'srv', [
      'sh',
      '-c',
      `mkdir -p /var/lib/charmflow/${marker} && echo served > /var/lib/charmflow/${marker}/index.html && nohup python3 -m http.server 8080 --bind ${ip} --directory /var/lib/charmflow/${marker} >/dev/null 2>&1 &`,
    ]);
    assert.equal(started.code, 0, started.stderr);
    const body = await until('the server answers', async () => {
      const res = await fetch(`http://${ip}:8080/index.html`);
      return res.ok ? res.text() : undefined;
    });
    assert.equal(body, 'served\n');
    const ps = await exec(kc, 'net', 'srv', ['sh', '-c', 'cat /proc/1/comm; cat /proc/[0-9]*/comm | sort -u']);
    const [init, ...names] = ps.stdout.trim().split('\n');
    assert.match(init, /^(python3|sleep)/, 'pid 1 of the pod is its pause process');
    assert.ok(names.includes('python3'), ps.stdout);
    assert.ok(!names.includes('node') && !names.includes('tsx'), `the pod sees only its own processes: ${ps.stdout}`);
    assert.ok(hostPidsWith(marker).length > 0);

    await core.deleteNamespacedPod({ namespace: 'net', name: 'srv' });
    await until('the pod gone', async () => {
      const r = await core.listNamespacedPod({ namespace: 'net' });
      return r.items.length === 0 || undefined;
    });
    assert.deepEqual(hostPidsWith(marker), [], 'the nohup server died with its pod');
    assert.equal(await canConnect(ip, 8080), false);
  });

  test("pods' /var/lib/charmflow, /tmp and /root are their own", async () => {
    await newNamespace('iso');
    await apps.createNamespacedStatefulSet({
      namespace: 'iso',
      body: statefulSet('iso', 2, { podManagementPolicy: 'Parallel' }),
    });
    await readyPods('iso', 'iso', 2);
    for (const p of ['iso-0', 'iso-1']) {
      const r = await exec(kc, 'iso', p, [
        'sh',
        '-c',
        `echo ${p} > /var/lib/charmflow/who && echo ${p} > /tmp/who && echo ${p} > /root/who`,
      ]);
      assert.equal(r.code, 0, r.stderr);
    }
    for (const p of ['iso-0', 'iso-1']) {
      const r = await exec(kc, 'iso', p, ['sh', '-c', 'cat /var/lib/charmflow/who /tmp/who /root/who']);
      assert.equal(r.stdout, `${p}\n${p}\n${p}\n`);
    }
    assert.equal(
      existsSync('/var/lib/charmflow/who') && readFileSync('/var/lib/charmflow/who', 'utf8').startsWith('iso-'),
      false,
    );
    // Pods reach each other on their IPs.
    const pods = await readyPods('iso', 'iso', 2);
    const peer = pods.find((p) => p.metadata?.name === 'iso-1')!.status!.podIP!;
    await exec(kc, 'iso', 'iso-1', [
      'sh',
      '-c',
      `nohup python3 -m http.server 8081 --bind ${peer} --directory /var/lib/charmflow >/dev/null 2>&1 &`,
    ]);
    const fromPeer = await until('iso-0 reaches iso-1', async () => {
      const r = await exec(kc, 'iso', 'iso-0', [
        'python3',
        '-c',
        `import urllib.request; print(urllib.request.urlopen("http://${peer}:8081/who").read().decode(), end="")`,
      ]);
      return r.code === 0 ? r.stdout : undefined;
    });
    assert.equal(fromPeer, 'iso-1\n');
  });

  test('unpullable image: ErrImagePull, exec refused; exec into a missing pod or unknown container refused', async () => {
    await newNamespace('pull');
    await core.createNamespacedPod({
      namespace: 'pull',
      body: {
        metadata: { name: 'bad' },
        spec: { containers: [{ name: 'charm', image: 'registry.example/charm:missing' }] },
      },
    });
    const bad = await until('image pull failure', async () => {
      const p = await core.readNamespacedPod({ namespace: 'pull', name: 'bad' });
      return p.status?.containerStatuses?.[0]?.state?.waiting ? p : undefined;
    });
    assert.equal(bad.status?.phase, 'Pending');
    assert.equal(bad.status?.containerStatuses?.[0].state?.waiting?.reason, 'ErrImagePull');
    assert.equal(bad.status?.containerStatuses?.[0].ready, false);
    assert.match(await execRefused(kc, 'pull', 'bad'), /400/);

    await core.createNamespacedPod({
      namespace: 'pull',
      body: {
        metadata: { name: 'good', labels: { app: 'good' } },
        spec: { containers: [{ name: 'charm', image: 'ubuntu:24.04' }] },
      },
    });
    await readyPods('pull', 'good', 1);
    assert.match(await execRefused(kc, 'pull', 'ghost'), /404/);
    assert.match(await execRefused(kc, 'pull', 'good', 'sidecar'), /400/);
  });

  test('namespace deletion: Terminating, then its pods, StatefulSets and other objects go, then the namespace', async () => {
    await newNamespace('doomed');
    await apps.createNamespacedStatefulSet({
      namespace: 'doomed',
      body: statefulSet('d', 2, { podManagementPolicy: 'Parallel' }),
    });
    await core.createNamespacedSecret({
      namespace: 'doomed',
      body: { metadata: { name: 's' }, stringData: { a: 'b' } },
    });
    const pods = await readyPods('doomed', 'd', 2);
    const marker = `cfkube-doomed-${process.pid}`;
    await exec(kc, 'doomed', 'd-0', ['sh', '-c', `nohup sh -c 'sleep 300; : ${marker}' >/dev/null 2>&1 &`]);
    await until('workload running', () => hostPidsWith(marker).length > 0 || undefined);
    const deleting = await core.deleteNamespace({ name: 'doomed' });
    assert.equal((deleting as k8s.V1Namespace).status?.phase, 'Terminating');
    const refused = await failure(
      core.createNamespacedConfigMap({ namespace: 'doomed', body: { metadata: { name: 'late' } } }),
    );
    assert.equal(refused.code, 403);
    await until('namespace gone', async () => {
      const r = await failure(core.readNamespace({ name: 'doomed' }));
      return r.code === 404 || undefined;
    });
    assert.deepEqual(server.list('v1', 'Pod', 'doomed'), []);
    assert.deepEqual(server.list('apps/v1', 'StatefulSet', 'doomed'), []);
    assert.deepEqual(server.list('v1', 'Secret', 'doomed'), []);
    assert.deepEqual(hostPidsWith(marker), []);
    for (const p of pods) assert.equal(await canConnect(p.status!.podIP!, 22), false);
  });

  test('deleting a StatefulSet garbage-collects its pods (Background) or leaves them (Orphan)', async () => {
    await newNamespace('gc');
    await apps.createNamespacedStatefulSet({ namespace: 'gc', body: statefulSet('bg', 1) });
    await apps.createNamespacedStatefulSet({ namespace: 'gc', body: statefulSet('orph', 1) });
    await readyPods('gc', 'bg', 1);
    await readyPods('gc', 'orph', 1);
    await apps.deleteNamespacedStatefulSet({ namespace: 'gc', name: 'bg', propagationPolicy: 'Background' });
    await apps.deleteNamespacedStatefulSet({ namespace: 'gc', name: 'orph', propagationPolicy: 'Orphan' });
    await until('bg pods gone', async () => {
      const r = await core.listNamespacedPod({ namespace: 'gc', labelSelector: 'app=bg' });
      return r.items.length === 0 || undefined;
    });
    await until('orph gone', () =>
      server.get('apps/v1', 'StatefulSet', 'gc', 'orph') === undefined ? true : undefined,
    );
    const orphan = await core.readNamespacedPod({ namespace: 'gc', name: 'orph-0' });
    assert.equal(orphan.metadata?.ownerReferences, undefined);
    assert.equal(orphan.status?.phase, 'Running');
  });

  test('unauthenticated or wrongly authenticated requests get 401', async () => {
    const wrong = new k8s.KubeConfig();
    wrong.loadFromString(server.kubeconfig.replace(server.token, 'not-the-token'));
    const denied = await failure(wrong.makeApiClient(k8s.CoreV1Api).listNamespace());
    assert.equal(denied.code, 401);
    assert.match(await execRefused(wrong, 'default', 'whatever'), /401/);
    // No token at all: a Status body, as a real server answers.
    const res = await new Promise<{ code: number; body: any }>((resolve, reject) => {
      httpsGet(
        `${server.url}/api/v1/namespaces`,
        { ca: Buffer.from(kc.getCurrentCluster()!.caData!, 'base64') },
        (r) => {
          let text = '';
          r.on('data', (d) => {
            text += d;
          });
          r.on('end', () => resolve({ code: r.statusCode ?? 0, body: JSON.parse(text) }));
        },
      ).on('error', reject);
    });
    assert.equal(res.code, 401);
    assert.deepEqual([res.body.kind, res.body.reason, res.body.code], ['Status', 'Unauthorized', 401]);
  });

  test('an informer (list, then watch from its resourceVersion) follows pods', async () => {
    await newNamespace('inf');
    const informer = k8s.makeInformer(kc, '/api/v1/namespaces/inf/pods', () =>
      core.listNamespacedPod({ namespace: 'inf' }),
    );
    const seen: string[] = [];
    informer.on('add', (p) => seen.push(`add ${p.metadata?.name}`));
    informer.on('delete', (p) => seen.push(`delete ${p.metadata?.name}`));
    await core.createNamespacedPod({
      namespace: 'inf',
      body: { metadata: { name: 'early' }, spec: { containers: [{ name: 'charm', image: 'ubuntu:24.04' }] } },
    });
    await informer.start();
    await core.createNamespacedPod({
      namespace: 'inf',
      body: { metadata: { name: 'late' }, spec: { containers: [{ name: 'charm', image: 'ubuntu:24.04' }] } },
    });
    await core.deleteNamespacedPod({ namespace: 'inf', name: 'early', gracePeriodSeconds: 0 });
    await until('informer events', () => (seen.length >= 3 ? true : undefined));
    await informer.stop();
    assert.deepEqual(seen, ['add early', 'add late', 'delete early']);
    assert.deepEqual(
      informer.list().map((p) => p.metadata?.name),
      ['late'],
    );
  });

  test('exec speaks v4.channel.k8s.io too: channels 1/2/3 and the status, stdin ended by closing nothing', async () => {
    await newNamespace('v4');
    await core.createNamespacedPod({
      namespace: 'v4',
      body: {
        metadata: { name: 'p', labels: { app: 'p' } },
        spec: {
          containers: [
            {
              name: 'charm',
              image: 'ubuntu:24.04',
              workingDir: '/var/lib/charmflow',
              env: [
                { name: 'A', value: 'x' },
                { name: 'B', value: '$(A)-y' },
                { name: 'POD', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
              ],
            },
          ],
        },
      },
    });
    await readyPods('v4', 'p', 1);
    const ca = Buffer.from(kc.getCurrentCluster()!.caData!, 'base64');
    const url = `${server.url.replace('https', 'wss')}/api/v1/namespaces/v4/pods/p/exec?command=sh&command=-c&command=${encodeURIComponent('pwd; echo "$B $POD"; echo e >&2; exit 3')}&stdout=true&stderr=true&container=charm`;
    const frames: Buffer[] = [];
    const protocol = await new Promise<string>((resolve, reject) => {
      const ws = new WebSocket(url, ['v4.channel.k8s.io'], {
        ca,
        headers: { Authorization: `Bearer ${server.token}` },
      });
      ws.on('message', (d: Buffer) => frames.push(d));
      ws.on('close', () => resolve(ws.protocol));
      ws.on('error', reject);
    });
    assert.equal(protocol, 'v4.channel.k8s.io');
    const text = (ch: number) => Buffer.concat(frames.filter((f) => f[0] === ch).map((f) => f.subarray(1))).toString();
    assert.equal(text(1), '/var/lib/charmflow\nx-y p\n');
    assert.equal(text(2), 'e\n');
    assert.equal(JSON.parse(text(3)).details.causes[0].message, '3');
    assert.equal(frames[frames.length - 1][0], 3, 'the status comes last');
  });

  test('a crashed server is cleaned up by the next start: namespaces, links, pods, claim', async () => {
    const crashDir = join(dir, 'crash');
    mkdirSync(crashDir, { recursive: true });
    const script = join(crashDir, 'crash.mts');
    writeFileSync(
      script,
      [
        `import * as k8s from ${JSON.stringify(import.meta.resolve('@kubernetes/client-node'))};`,
        `import { startKubeApiServer } from ${JSON.stringify(import.meta.resolve('./helpers/kube-apiserver/index.ts'))};`,
        `const s = await startKubeApiServer({ dir: ${JSON.stringify(crashDir)} });`,
        `const kc = new k8s.KubeConfig(); kc.loadFromFile(s.kubeconfigPath);`,
        `const core = kc.makeApiClient(k8s.CoreV1Api);`,
        `await core.createNamespacedPod({ namespace: 'default', body: { metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'i:1' }] } } });`,
        `for (;;) { const p = await core.readNamespacedPod({ namespace: 'default', name: 'p' }); if (p.status?.phase === 'Running') break; await new Promise((r) => setTimeout(r, 50)); }`,
        `console.log('READY');`,
        `setInterval(() => {}, 1000);`,
      ].join('\n'),
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script], {
      cwd: process.cwd(),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
    });
    try {
      await until('the crashing server runs a pod', () => (out.includes('READY') ? true : undefined), 20_000);
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
    const claim = readdirSync('/var/tmp/charmflow-kube-apiserver').find((k) =>
      readFileSync(join('/var/tmp/charmflow-kube-apiserver', k, 'owner.json'), 'utf8').includes(`"pid":${child.pid},`),
    );
    assert.ok(claim, 'the child claimed a number');
    const leftovers = () => ({
      netns: execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' })
        .split('\n')
        .filter((l) => l.startsWith(`cfkube-${claim}-`)),
      links: execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' })
        .split('\n')
        .filter((l) => new RegExp(`: cfk(br${claim}|${claim}p\\d+)[@:]`).test(l)),
      claim: existsSync(join('/var/tmp/charmflow-kube-apiserver', claim!)),
      pods: existsSync(join(crashDir, 'pods')) && readdirSync(join(crashDir, 'pods')).length > 0,
    });
    const before = leftovers();
    assert.equal(before.netns.length, 1);
    assert.equal(before.links.length, 2, 'bridge and veth');
    assert.ok(before.claim && before.pods);
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    // The pod's pause process outlives its crashed server until someone reaps it.
    const next = await startKubeApiServer({ dir: join(dir, 'after-crash') });
    await next.stop();
    assert.deepEqual(leftovers(), { netns: [], links: [], claim: false, pods: false });
  });

  test('pods on a test/fleet.ts bridge share L2 with the fleet hosts', { skip: fleetUnsupportedReason() }, async () => {
    const fleet = await createFleet(1);
    const shared = await startKubeApiServer({
      dir: join(dir, 'shared'),
      network: { bridge: fleet.bridge, prefix: `10.231.${fleet.id}.`, firstHost: 100 },
    });
    try {
      const skc = new k8s.KubeConfig();
      skc.loadFromFile(shared.kubeconfigPath);
      const score = skc.makeApiClient(k8s.CoreV1Api);
      await score.createNamespacedPod({
        namespace: 'default',
        body: { metadata: { name: 'p' }, spec: { containers: [{ name: 'charm', image: 'ubuntu:24.04' }] } },
      });
      const pod = await until('pod on the fleet bridge', async () => {
        const p = await score.readNamespacedPod({ namespace: 'default', name: 'p' });
        return p.status?.phase === 'Running' ? p : undefined;
      });
      assert.equal(pod.status?.podIP, `10.231.${fleet.id}.100`);
      const host = fleet.hosts[0];
      const banner = await exec(skc, 'default', 'p', [
        'python3',
        '-c',
        `import socket; s=socket.create_connection(("${host.address}", 22), 3); print(s.recv(64).decode().split("-")[0])`,
      ]);
      assert.equal(banner.stdout.trim(), 'SSH', banner.stderr);
    } finally {
      await shared.stop();
      await fleet.destroy();
    }
  });
});
