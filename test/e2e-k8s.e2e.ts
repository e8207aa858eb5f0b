// `npm run e2e:k8s`: the Kubernetes scenarios of test/k8s.test.ts against a real
// cluster (kind, k3s, microk8s), named by $KUBECONFIG (context:
// $CHARMFLOW_E2E_K8S_CONTEXT, else the kubeconfig's current one). Skipped, saying
// why, when none is configured. Not part of `npm test`: it makes namespaces on the
// cluster (prefixed `cfe2e-<pid>-`, removed at the end) and needs this host to
// reach pod IPs (run it on a node of the cluster). The cross-cloud integration
// runs when $CHARMFLOW_E2E_SSH_HOST (root@host:port) and $CHARMFLOW_E2E_SSH_KEY
// name an SSH host the pods can reach.
import { existsSync } from 'node:fs';
import { after, before, describe } from 'node:test';
import { startTestController, type TestController } from './helpers/controller.ts';
import { k8sScenarios } from './k8s-scenarios.ts';

const kubeconfig = process.env.KUBECONFIG?.split(':')[0];
const skip = !kubeconfig
  ? 'no cluster configured: set KUBECONFIG to a kubeconfig of a kind, k3s or microk8s cluster (see README, "Kubernetes")'
  : !existsSync(kubeconfig)
    ? `KUBECONFIG names ${kubeconfig}, which does not exist`
    : undefined;
if (skip) console.log(`e2e:k8s skipped: ${skip}`);

function sshHost() {
  const spec = process.env.CHARMFLOW_E2E_SSH_HOST;
  const key = process.env.CHARMFLOW_E2E_SSH_KEY;
  const m = spec ? /^(?:root@)?([^:]+)(?::(\d+))?$/.exec(spec) : null;
  if (!m || !key) return undefined;
  return { address: m[1], port: Number(m[2] ?? 22), privateKeyPath: key };
}

describe('kubernetes: units as pods, on a real cluster', { skip }, () => {
  let c: TestController;
  before(async () => {
    c = await startTestController();
  });
  after(async () => {
    await c?.stop();
  });

  k8sScenarios({
    controller: () => c,
    kubeconfigPath: () => kubeconfig!,
    context: () => process.env.CHARMFLOW_E2E_K8S_CONTEXT,
    unpullableImage: 'registry.invalid/charmflow/nothing:missing',
    charmImage: process.env.CHARMFLOW_E2E_CHARM_IMAGE,
    sshHost,
    prefix: `cfe2e-${process.pid}-`,
  });
});
