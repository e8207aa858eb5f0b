// An in-process Kubernetes API server test double, for provider tests on a machine where no real
// cluster can run. Served over HTTPS with a bearer token; see README.md beside this file for what
// it models and where it differs from a real cluster.

import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { stringify as toYaml } from 'yaml';
import { GarbageCollector } from './garbage-collector.ts';
import { HttpApi } from './http-api.ts';
import { defaultUnpullable, Kubelet } from './kubelet.ts';
import { NamespaceController } from './namespace-controller.ts';
import { type PodNetworkOptions, SandboxHost, sandboxUnsupportedReason } from './pod-sandbox.ts';
import { Registry } from './registry.ts';
import { resourceByKind, resourceByName } from './resources.ts';
import { StatefulSetController } from './statefulset-controller.ts';

export interface KubeApiServerOptions {
  /** Where pods' sandboxes live (NOT under /tmp: each pod gets its own /tmp). */
  dir: string;
  /** Images a pod cannot pull: the pod's container stays Waiting with reason ErrImagePull / ImagePullBackOff. */
  unpullableImage?: (image: string) => boolean;
  /** Put pods on this existing bridge/subnet (to share L2 with test/fleet.ts sshd hosts) instead of a bridge of your own. */
  network?: PodNetworkOptions;
}

export interface KubeApiServer {
  url: string;
  kubeconfigPath: string;
  kubeconfig: string;
  token: string;
  /** Read an object as stored (for assertions), or undefined. */
  get(apiVersion: string, kind: string, namespace: string | undefined, name: string): unknown;
  list(apiVersion: string, kind: string, namespace?: string): unknown[];
  stop(): Promise<void>;
}

export const NODE_NAME = 'charmflow-node';
export { sandboxUnsupportedReason as kubeApiServerUnsupportedReason };

export async function startKubeApiServer(opts: KubeApiServerOptions): Promise<KubeApiServer> {
  const host = SandboxHost.create(opts.dir, opts.network);
  const tlsDir = join(opts.dir, `apiserver-${host.k}`);
  let nextServiceIp = 10;
  const registry = new Registry({
    nodeName: NODE_NAME,
    allocateClusterIP: () => {
      const n = nextServiceIp++;
      return `10.96.${Math.floor(n / 250)}.${(n % 250) + 1}`;
    },
  });
  const kubelet = new Kubelet(registry, host, opts.unpullableImage ?? defaultUnpullable, NODE_NAME);
  const controllers = [
    new StatefulSetController(registry),
    new GarbageCollector(registry),
    new NamespaceController(registry),
  ];

  try {
    for (const name of ['default', 'kube-system', 'kube-public', 'kube-node-lease']) {
      registry.create(resourceByName('namespaces'), undefined, { metadata: { name } });
    }
    registry.create(resourceByName('nodes'), undefined, {
      metadata: { name: NODE_NAME, labels: { 'kubernetes.io/hostname': NODE_NAME, 'kubernetes.io/os': 'linux' } },
      spec: {},
    });
    registry.mutate(resourceByName('nodes'), undefined, NODE_NAME, (n) => {
      n.status = {
        conditions: [
          { type: 'Ready', status: 'True', reason: 'KubeletReady', message: 'kubelet is posting ready status' },
        ],
        addresses: [
          { type: 'InternalIP', address: host.gateway ?? '127.0.0.1' },
          { type: 'Hostname', address: NODE_NAME },
        ],
        nodeInfo: {
          kubeletVersion: 'v1.31.0',
          containerRuntimeVersion: 'charmflow-sandbox://1',
          operatingSystem: 'linux',
          architecture: 'amd64',
        },
      };
    });
    registry.create(resourceByName('services'), 'default', {
      metadata: { name: 'kubernetes', labels: { component: 'apiserver', provider: 'kubernetes' } },
      spec: { clusterIP: '10.96.0.1', ports: [{ name: 'https', port: 443, targetPort: 6443 }] },
    });

    mkdirSync(tlsDir, { recursive: true, mode: 0o700 });
    const keyPath = join(tlsDir, 'tls.key');
    const certPath = join(tlsDir, 'tls.crt');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        keyPath,
        '-out',
        certPath,
        '-days',
        '7',
        '-subj',
        '/CN=charmflow-kube-apiserver',
        '-addext',
        'subjectAltName=IP:127.0.0.1,DNS:localhost',
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    const cert = readFileSync(certPath);
    const token = randomBytes(24).toString('hex');

    let address = '';
    const api = new HttpApi({ registry, kubelet, token, serverAddress: () => address });
    const server = createServer({ key: readFileSync(keyPath), cert });
    server.on('request', (req, res) => {
      void api.handle(req, res);
    });
    server.on('upgrade', (req, socket, head) => api.handleUpgrade(req, socket, head));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    const port = (server.address() as AddressInfo).port;
    address = `127.0.0.1:${port}`;
    const url = `https://${address}`;

    const kubeconfig = toYaml({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fake', cluster: { server: url, 'certificate-authority-data': cert.toString('base64') } }],
      users: [{ name: 'fake', user: { token } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake', namespace: 'default' } }],
      'current-context': 'fake',
      preferences: {},
    });
    const kubeconfigPath = join(tlsDir, 'kubeconfig');
    writeFileSync(kubeconfigPath, kubeconfig, { mode: 0o600 });

    let stopped = false;
    return {
      url,
      kubeconfigPath,
      kubeconfig,
      token,
      get(apiVersion, kind, namespace, name) {
        const t = resourceByKind(apiVersion, kind);
        if (!t) throw new Error(`unknown kind ${apiVersion} ${kind}`);
        return registry.get(t, namespace, name);
      },
      list(apiVersion, kind, namespace) {
        const t = resourceByKind(apiVersion, kind);
        if (!t) throw new Error(`unknown kind ${apiVersion} ${kind}`);
        return registry.list(t, namespace);
      },
      async stop() {
        if (stopped) return;
        stopped = true;
        for (const c of controllers) c.stop();
        kubelet.stop();
        api.close();
        server.closeAllConnections();
        await new Promise<void>((resolve) => server.close(() => resolve()));
        await kubelet.idle().catch(() => undefined);
        await host.stop();
        rmSync(tlsDir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    for (const c of controllers) c.stop();
    kubelet.stop();
    await host.stop();
    rmSync(tlsDir, { recursive: true, force: true });
    throw err;
  }
}
