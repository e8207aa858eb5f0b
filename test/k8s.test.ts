// Kubernetes (issue 12) against the in-process API server double
// (test/helpers/kube-apiserver): units as pods of StatefulSets, hooks exec'd into
// them, through the CLI and API with a real Temporal dev server, beside sshd hosts
// whose bridge the pods share (a cross-cloud integration).
import { mkdirSync, rmSync } from 'node:fs';
import { after, before, describe } from 'node:test';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import {
  type KubeApiServer,
  kubeApiServerUnsupportedReason,
  startKubeApiServer,
} from './helpers/kube-apiserver/index.ts';
import { k8sScenarios } from './k8s-scenarios.ts';

const unsupported = kubeApiServerUnsupportedReason() ?? fleetUnsupportedReason();
const UNPULLABLE = 'registry.example/charmflow/nothing:missing';

describe('kubernetes: units as pods, against the API server double', { skip: unsupported }, () => {
  let fleet: Fleet;
  let c: TestController;
  let kube: KubeApiServer;
  const dir = `/var/tmp/charmflow-k8s-test-${process.pid}`;

  before(async () => {
    mkdirSync(dir, { recursive: true });
    [fleet, c] = await Promise.all([createFleet(1), startTestController()]);
    kube = await startKubeApiServer({
      dir,
      unpullableImage: (image) => image.endsWith(':missing'),
      // pods on the fleet's bridge, beside its sshd hosts (which use .10 and up)
      network: { bridge: fleet.bridge, prefix: fleet.gateway.replace(/\d+$/, ''), firstHost: 100 },
    });
  });
  after(async () => {
    await c?.stop();
    await kube?.stop();
    await fleet?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  k8sScenarios({
    controller: () => c,
    kubeconfigPath: () => kube.kubeconfigPath,
    context: () => 'fake',
    unpullableImage: UNPULLABLE,
    sshHost: () => fleet.hosts[0],
    prefix: '',
  });
});
