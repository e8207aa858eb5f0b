// The Kubernetes scenarios of issue 12, written once against a cluster reached by a
// kubeconfig: test/k8s.test.ts runs them against the in-process API server double,
// `npm run e2e:k8s` (test/e2e-k8s.e2e.ts) against a real cluster ($KUBECONFIG).
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { AppsV1Api, CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { type CliResult, runCli } from './helpers/cli.ts';
import type { TestController } from './helpers/controller.ts';
import { fetchKvWebPage, KV_STORE_CHARM, KV_WEB_CHARM } from './helpers/kv-charms.ts';
import { settle } from './helpers/relations.ts';
import { waitFor } from './helpers/wait.ts';

export interface K8sScenarioEnv {
  controller: () => TestController;
  /** The kubeconfig file of the cluster, and the context to use. */
  kubeconfigPath: () => string;
  context: () => string | undefined;
  /** An image the cluster cannot pull. */
  unpullableImage: string;
  /** The charm container's image for the scenarios (default: charmflow's default). */
  charmImage?: string;
  /** An SSH host the pods can reach, for the cross-cloud integration (absent: that scenario is skipped). */
  sshHost?: () => { address: string; port: number; privateKeyPath: string } | undefined;
  /** A prefix for model names, so runs against a shared cluster do not collide. */
  prefix: string;
}

function ids(kubeconfig: string) {
  const kc = new KubeConfig();
  kc.loadFromFile(kubeconfig);
  return { kc, core: kc.makeApiClient(CoreV1Api), apps: kc.makeApiClient(AppsV1Api) };
}

async function podUid(core: CoreV1Api, namespace: string, name: string): Promise<string | undefined> {
  try {
    const p = await core.readNamespacedPod({ namespace, name });
    return p.metadata?.deletionTimestamp ? undefined : p.metadata?.uid;
  } catch {
    return undefined;
  }
}

async function exists(read: () => Promise<unknown>): Promise<boolean> {
  try {
    await read();
    return true;
  } catch (err) {
    if ((err as { code?: number }).code === 404) return false;
    throw err;
  }
}

export function k8sScenarios(env: K8sScenarioEnv): void {
  const m = `${env.prefix}kub`;
  const shared = `${env.prefix}shared`;
  const sshModel = `${env.prefix}ssh`;
  const cloud = `${env.prefix}k8s`;
  const c = () => env.controller();
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c().dataDir });
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stdout}\n${r.stderr}`);
    return r;
  };
  const k = () => ids(env.kubeconfigPath());
  const ctxArgs = () => (env.context() ? ['--context', env.context()!] : []);
  const status = async (model: string) => JSON.parse((await ok('status', '-m', model, '--format', 'json')).stdout);
  const unitAddress = async (unit: string) =>
    (await status(m)).applications[unit.split('/')[0]].units[unit]['public-address'] as string;
  const image = env.charmImage ? ['--charm-image', env.charmImage] : [];
  const page = async (addr: string, port: number) => (await fetchKvWebPage(addr, port)).page;
  const pageOrNull = (addr: string, port: number) => page(addr, port).catch(() => null);

  test('add-k8s refuses an unreadable kubeconfig, a bad one, an unknown context and an unreachable cluster; nothing is stored', async () => {
    const unreadable = await cli('add-k8s', 'bad', '--kubeconfig', '/nonexistent/kubeconfig');
    assert.notEqual(unreadable.code, 0);
    assert.match(unreadable.stderr, /cannot read kubeconfig \/nonexistent\/kubeconfig: ENOENT/);

    const dir = mkdtempSync(join(tmpdir(), 'cf-kubeconfig-'));
    const notYaml = join(dir, 'not-yaml');
    writeFileSync(notYaml, 'clusters: [this is : not yaml');
    const r1 = await cli('add-k8s', 'bad', '--kubeconfig', notYaml);
    assert.notEqual(r1.code, 0);
    assert.match(r1.stderr, /the kubeconfig cannot be read/);

    const r2 = await cli('add-k8s', 'bad', '--kubeconfig', env.kubeconfigPath(), '--context', 'nosuch');
    assert.notEqual(r2.code, 0);
    assert.match(r2.stderr, /no context "nosuch"; its contexts are: /);

    // the same credentials, pointed at a port nothing listens on
    const text = readFileSync(env.kubeconfigPath(), 'utf8');
    const server = /server:\s*(\S+)/.exec(text)?.[1];
    assert.ok(server, 'the kubeconfig names a server');
    const dead = join(dir, 'dead');
    writeFileSync(dead, text.replace(server, 'https://127.0.0.1:9'));
    const r3 = await cli('add-k8s', 'bad', '--kubeconfig', dead, ...ctxArgs());
    assert.notEqual(r3.code, 0);
    assert.match(r3.stderr, /cannot reach the cluster at https:\/\/127\.0\.0\.1:9/);

    const clouds = JSON.parse((await ok('clouds', '--format', 'json')).stdout).clouds;
    assert.ok(!clouds.some((x: { name: string }) => x.name === 'bad'));
    const creds = await c().store.db.selectFrom('credentials').selectAll().where('cloud', '=', 'bad').execute();
    assert.equal(creds.length, 0);
  });

  test('add-k8s registers the cluster: clouds lists it, its credentials sealed and never shown', async () => {
    await ok('add-k8s', cloud, '--kubeconfig', env.kubeconfigPath(), ...ctxArgs());
    const out = (await ok('clouds', '--format', 'json')).stdout;
    const listed = JSON.parse(out).clouds.find((x: { name: string }) => x.name === cloud);
    assert.equal(listed.type, 'kubernetes');
    assert.match(listed.endpoint, /^https?:\/\//);
    const cred = await c()
      .store.db.selectFrom('credentials')
      .selectAll()
      .where('cloud', '=', cloud)
      .executeTakeFirstOrThrow();
    for (const v of Object.values(cred.attributes)) assert.match(v, /^cfsec:v\d+:/);
    const token = /token:\s*(\S+)/.exec(readFileSync(env.kubeconfigPath(), 'utf8'))?.[1];
    if (token) {
      assert.ok(!out.includes(token), 'the listing never shows the token');
      assert.ok(!JSON.stringify(cred).includes(token), 'the store keeps it sealed');
    }
    const again = await cli('add-k8s', cloud, '--kubeconfig', env.kubeconfigPath(), ...ctxArgs());
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /already exists/);
  });

  test('add-model on the kubernetes cloud makes a namespace labelled as the model', async () => {
    await ok('add-model', m, '--cloud', cloud);
    const model = await c().store.db.selectFrom('models').selectAll().where('name', '=', m).executeTakeFirstOrThrow();
    const ns = await k().core.readNamespace({ name: m });
    assert.equal(ns.metadata?.labels?.['app.kubernetes.io/managed-by'], 'charmflow');
    assert.equal(ns.metadata?.labels?.['charmflow.io/model-uuid'], model.uuid);
  });

  test('a charm without a usable image is refused, and leaves nothing behind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cf-noimage-'));
    cpSync(KV_WEB_CHARM, dir, { recursive: true, verbatimSymlinks: true });
    const meta = readFileSync(join(dir, 'metadata.yaml'), 'utf8');
    writeFileSync(
      join(dir, 'metadata.yaml'),
      `${meta.replace(/^name: kv-web$/m, 'name: noimage')}\ncontainers:\n  app:\n    resource: app-image\nresources:\n  app-image:\n    type: oci-image\n`,
    );
    const r = await cli('deploy', dir, 'noimage', '-m', m);
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /no usable image for Kubernetes: resource "app-image" of container "app" has no upstream-source/,
    );
    assert.equal((await status(m)).applications.noimage, undefined);
    assert.equal(await exists(() => k().apps.readNamespacedStatefulSet({ namespace: m, name: 'noimage' })), false);

    // an image the cluster cannot pull: the unit's machine in error naming ErrImagePull
    const bad = await cli('deploy', KV_WEB_CHARM, 'badimg', '-m', m, '--charm-image', env.unpullableImage);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr + bad.stdout, /ErrImagePull|ImagePullBackOff/);
    const machines = JSON.parse((await ok('machines', '-m', m, '--format', 'json')).stdout).machines;
    assert.ok(
      machines.some(
        (x: { state: string; message: string }) =>
          x.state === 'error' && /ErrImagePull|ImagePullBackOff/.test(x.message),
      ),
      JSON.stringify(machines),
    );
    await ok('remove-application', 'badimg', '-m', m, '--force', '--timeout', '5');
    await waitFor(
      'badimg objects gone',
      async () => !(await exists(() => k().apps.readNamespacedStatefulSet({ namespace: m, name: 'badimg' }))),
      60_000,
    );
    assert.equal(await exists(() => k().core.readNamespacedService({ namespace: m, name: 'badimg' })), false);
    const left = await c().store.db.selectFrom('machines').select('id').where('host', 'like', 'badimg-%').execute();
    assert.equal(left.length, 0);
  });

  test('deploy: an application is a StatefulSet with Services, a unit a pod addressed by its pod IP', async () => {
    await ok('deploy', KV_WEB_CHARM, 'kv-web', '-m', m, ...image);
    const sts = await k().apps.readNamespacedStatefulSet({ namespace: m, name: 'kv-web' });
    assert.equal(sts.spec?.podManagementPolicy, 'Parallel');
    assert.equal(sts.spec?.updateStrategy?.type, 'OnDelete');
    assert.equal(sts.spec?.replicas, 1);
    assert.equal(sts.spec?.serviceName, 'kv-web-endpoints');
    const headless = await k().core.readNamespacedService({ namespace: m, name: 'kv-web-endpoints' });
    assert.equal(headless.spec?.clusterIP, 'None');
    const pod = await k().core.readNamespacedPod({ namespace: m, name: 'kv-web-0' });
    const addr = await unitAddress('kv-web/0');
    assert.equal(addr, pod.status?.podIP);
    const machines = JSON.parse((await ok('machines', '-m', m, '--format', 'json')).stdout).machines;
    assert.equal(machines.length, 1);
    // the application's address is its Service's
    const svc = await k().core.readNamespacedService({ namespace: m, name: 'kv-web' });
    assert.ok(svc.spec?.clusterIP && svc.spec.clusterIP !== 'None');
    assert.equal((await status(m)).applications['kv-web'].address, svc.spec?.clusterIP);
    assert.equal((await status(m)).model.type, 'caas');
    // the charm opened its port: the application's Service carries it
    await waitFor('service port 8080', async () => {
      const svc = await k().core.readNamespacedService({ namespace: m, name: 'kv-web' });
      return svc.spec?.ports?.some((p) => p.port === 8080 && p.protocol === 'TCP');
    });
    const first = await page(addr, 8080);
    assert.equal(first.state, 'no-kv-store');
    assert.equal(first.unit, 'kv-web/0');
  });

  test('config: config-changed runs in the pod; the Service follows the opened port', async () => {
    await ok('config', 'kv-web', 'port=8081', '-m', m);
    const addr = await unitAddress('kv-web/0');
    const p = await waitFor('kv-web on 8081', () => pageOrNull(addr, 8081));
    assert.equal(p.state, 'no-kv-store');
    await waitFor('service port 8081 only', async () => {
      const svc = await k().core.readNamespacedService({ namespace: m, name: 'kv-web' });
      const ports = (svc.spec?.ports ?? []).map((p) => p.port);
      return ports.length === 1 && ports[0] === 8081;
    });
  });

  test('scale 1 → 3 → 1: replicas and pods follow, unit events per pod', async () => {
    await ok('scale-application', 'kv-web', '3', '-m', m);
    const s = await status(m);
    assert.deepEqual(Object.keys(s.applications['kv-web'].units).sort(), ['kv-web/0', 'kv-web/1', 'kv-web/2']);
    assert.equal((await k().apps.readNamespacedStatefulSet({ namespace: m, name: 'kv-web' })).spec?.replicas, 3);
    for (const n of [1, 2]) {
      const pod = await k().core.readNamespacedPod({ namespace: m, name: `kv-web-${n}` });
      assert.equal(await unitAddress(`kv-web/${n}`), pod.status?.podIP);
      const p = await waitFor(`kv-web/${n} serving`, () => pageOrNull(pod.status!.podIP!, 8081));
      assert.equal(p.unit, `kv-web/${n}`);
    }
    const mid = await cli('remove-unit', 'kv-web/1', '-m', m);
    assert.notEqual(mid.code, 0);
    assert.match(mid.stderr, /remove kv-web\/2 first/);

    await ok('scale-application', 'kv-web', '1', '-m', m);
    const after = await status(m);
    assert.deepEqual(Object.keys(after.applications['kv-web'].units), ['kv-web/0']);
    assert.equal((await k().apps.readNamespacedStatefulSet({ namespace: m, name: 'kv-web' })).spec?.replicas, 1);
    await waitFor(
      'pods 1 and 2 gone',
      async () => !(await podUid(k().core, m, 'kv-web-1')) && !(await podUid(k().core, m, 'kv-web-2')),
      60_000,
    );
    const runs = await c()
      .store.db.selectFrom('hook_runs')
      .select(['unit', 'hook'])
      .where('unit', '=', 'kv-web/0')
      .where('hook', '=', 'start')
      .execute();
    assert.equal(runs.length, 1, 'kv-web/0 started once');
    const machines = JSON.parse((await ok('machines', '-m', m, '--format', 'json')).stdout).machines;
    assert.equal(machines.length, 1, 'the removed units took their pods and machines with them');
    // a new unit takes the ordinal after the highest in use: pod kv-web-1 again
    await ok('add-unit', 'kv-web', '-m', m);
    assert.ok((await status(m)).applications['kv-web'].units['kv-web/1']);
    assert.ok(await podUid(k().core, m, 'kv-web-1'));
    await ok('remove-unit', 'kv-web/1', '-m', m);
  });

  test('a cross-cloud integration: kv-web pods use a kv-store on an SSH machine', async (t) => {
    const host = env.sshHost?.();
    if (!host) return t.skip('no SSH host the pods can reach');
    await ok('add-model', sshModel, '--cloud', 'manual');
    await ok(
      'add-machine',
      `ssh:root@${host.address}:${host.port}`,
      '--private-key',
      host.privateKeyPath,
      '-m',
      sshModel,
    );
    await ok('deploy', KV_STORE_CHARM, 'kv-store', '-m', sshModel);
    await ok('integrate', '-m', m, 'kv-web', `${sshModel}.kv-store`);
    await settle(c(), [m, sshModel]);
    const addr = await unitAddress('kv-web/0');
    const connected = await waitFor('kv-web connected', async () => {
      const p = await pageOrNull(addr, 8081);
      return p?.state === 'connected' ? p : null;
    });
    assert.equal(connected.state === 'connected' && connected.host, host.address);
  });

  test('a pod deleted from under charmflow is made again, and its unit hooks resume there', async () => {
    const before = await podUid(k().core, m, 'kv-web-0');
    assert.ok(before);
    await k().core.deleteNamespacedPod({ namespace: m, name: 'kv-web-0' });
    const after = await waitFor(
      'kv-web-0 made again',
      async () => {
        const uid = await podUid(k().core, m, 'kv-web-0');
        return uid && uid !== before ? uid : null;
      },
      120_000,
    );
    assert.notEqual(after, before);
    // the next hook finds the new pod: runtime and charm delivered again, and the hook runs there
    await ok('config', 'kv-web', 'port=8082', '-m', m);
    const pod = await k().core.readNamespacedPod({ namespace: m, name: 'kv-web-0' });
    const addr = await unitAddress('kv-web/0');
    assert.equal(addr, pod.status?.podIP);
    const p = await waitFor('kv-web on 8082 in the new pod', () => pageOrNull(addr, 8082)).catch(async (err) => {
      const log = await cli('debug-log', '-m', m, '--no-tail', '--lines', '60');
      throw new Error(`${err.message}\n${log.stdout}\n${JSON.stringify(await status(m))}`);
    });
    assert.equal(p.unit, 'kv-web/0');
    const machine = await c()
      .store.db.selectFrom('machines')
      .selectAll()
      .where('host', '=', 'kv-web-0')
      .executeTakeFirstOrThrow();
    assert.equal(machine.host_key_fingerprint, `pod:${after}`);
    const restarted = await c()
      .store.db.selectFrom('hook_runs')
      .select('hook')
      .where('unit', '=', 'kv-web/0')
      .where('context_id', 'like', `%${after}%`)
      .orderBy('started_at')
      .execute();
    assert.deepEqual(
      restarted.map((r) => r.hook),
      ['upgrade-charm', 'config-changed', 'start'],
    );
  });

  test('refresh: the pod template follows, pods are made again one by one under the health gate', async () => {
    await ok('scale-application', 'kv-web', '2', '-m', m);
    const uids = [await podUid(k().core, m, 'kv-web-0'), await podUid(k().core, m, 'kv-web-1')];
    const dir = mkdtempSync(join(tmpdir(), 'cf-kvweb2-'));
    cpSync(KV_WEB_CHARM, dir, { recursive: true, verbatimSymlinks: true });
    writeFileSync(join(dir, 'metadata.yaml'), `${readFileSync(join(dir, 'metadata.yaml'), 'utf8')}# revision 2\n`);
    const since = new Date();
    await ok('refresh', 'kv-web', '--path', dir, '-m', m);
    const sts = await k().apps.readNamespacedStatefulSet({ namespace: m, name: 'kv-web' });
    const rev = (await status(m)).applications['kv-web']['charm-rev'];
    assert.equal(sts.spec?.template.metadata?.annotations?.['charmflow.io/charm-revision'], String(rev));
    for (const [i, old] of uids.entries()) {
      const now = await podUid(k().core, m, `kv-web-${i}`);
      assert.ok(now && now !== old, `kv-web-${i} was made again`);
      const upgraded = await c()
        .store.db.selectFrom('hook_runs')
        .select('hook')
        .where('unit', '=', `kv-web/${i}`)
        .where('hook', 'in', ['upgrade-charm', 'start'])
        .where('exit_code', '=', 0)
        .where('started_at', '>=', since)
        .orderBy('started_at')
        .execute();
      // upgrade-charm once (the refresh's), then start in the new pod
      assert.deepEqual(
        upgraded.map((r) => r.hook),
        ['upgrade-charm', 'start'],
      );
    }
    const s = await status(m);
    for (const u of Object.values(s.applications['kv-web'].units) as { 'workload-status': { current: string } }[]) {
      assert.equal(u['workload-status'].current, env.sshHost?.() ? 'active' : 'blocked');
    }
  });

  test('remove-application runs stop and remove, then its StatefulSet, Services and pods go', async () => {
    if (env.sshHost?.()) await ok('remove-integration', '-m', m, 'kv-web', `${sshModel}.kv-store`);
    await ok('remove-application', 'kv-web', '-m', m);
    for (const n of [0, 1]) {
      const hooks = await c()
        .store.db.selectFrom('status_history')
        .select('status')
        .where('entity', '=', `kv-web/${n}`)
        .where('kind', '=', 'agent')
        .where('status', '=', 'removed')
        .execute();
      assert.equal(hooks.length >= 1, true);
    }
    await waitFor(
      'kv-web objects gone',
      async () => !(await exists(() => k().apps.readNamespacedStatefulSet({ namespace: m, name: 'kv-web' }))),
      60_000,
    );
    assert.equal(await exists(() => k().core.readNamespacedService({ namespace: m, name: 'kv-web' })), false);
    assert.equal(await exists(() => k().core.readNamespacedService({ namespace: m, name: 'kv-web-endpoints' })), false);
    await waitFor('kv-web pods gone', async () => !(await podUid(k().core, m, 'kv-web-0')), 60_000);
  });

  test('destroy-model: what charmflow made goes; a namespace it did not make, and foreign objects in it, stay', async () => {
    const { core } = k();
    await core.createNamespace({ body: { metadata: { name: shared, labels: { team: 'theirs' } } } });
    await core.createNamespacedConfigMap({
      namespace: shared,
      body: { metadata: { name: 'theirs' }, data: { keep: 'me' } },
    });
    await ok('add-model', shared, '--cloud', cloud);
    await ok('deploy', KV_WEB_CHARM, 'kv-web', '-m', shared, ...image);
    assert.ok(await podUid(core, shared, 'kv-web-0'));
    await ok('destroy-model', shared);
    await waitFor(
      'charmflow objects gone from the shared namespace',
      async () => !(await exists(() => k().apps.readNamespacedStatefulSet({ namespace: shared, name: 'kv-web' }))),
      60_000,
    );
    assert.equal(await exists(() => core.readNamespacedService({ namespace: shared, name: 'kv-web' })), false);
    const ns = await core.readNamespace({ name: shared });
    assert.equal(ns.metadata?.labels?.team, 'theirs');
    assert.ok(!ns.metadata?.deletionTimestamp, 'the namespace stays');
    const cm = await core.readNamespacedConfigMap({ namespace: shared, name: 'theirs' });
    assert.equal(cm.data?.keep, 'me');
    await core.deleteNamespace({ name: shared });

    // the model's own namespace, made by charmflow, goes with it
    if (env.sshHost?.()) await ok('destroy-model', sshModel);
    await ok('destroy-model', m);
    await waitFor('namespace gone', async () => !(await exists(() => k().core.readNamespace({ name: m }))), 120_000);
    await ok('remove-k8s', cloud);
    const clouds = JSON.parse((await ok('clouds', '--format', 'json')).stdout).clouds;
    assert.ok(!clouds.some((x: { name: string }) => x.name === cloud));
  });
}
