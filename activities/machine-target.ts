// How to reach a machine, from its row in the model store.
import type { MachineRow } from '../store/schema.ts';
import type { SecretBox } from '../store/secret-box.ts';
import type { ControllerKey } from './deps.ts';
import { CHARM_CONTAINER } from './kubernetes-cluster.ts';
import { localIsolationEnabled, localMachineUid } from './substrates/local-isolation.ts';
import type { MachineTarget } from './substrates/substrate.ts';

/** `secrets` opens the user's key, sealed in the store, for the login that installs the controller's. */
export function machineTarget(row: MachineRow, key: ControllerKey, secrets: Pick<SecretBox, 'open'>): MachineTarget {
  const target: MachineTarget = {
    key: `${row.model_uuid}/${row.id}`,
    kind: row.kind === 'ssh' || row.kind === 'pod' ? row.kind : 'local',
    address: row.address,
    rootDir: row.root_dir,
  };
  if (row.kind === 'local' && localIsolationEnabled()) target.uid = localMachineUid(row.address);
  if (row.kind === 'ssh') {
    target.host = row.host ?? row.address;
    target.port = row.port ?? 22;
    target.user = row.ssh_user ?? 'root';
    // until the controller's key is installed, the user's key opens the door
    target.privateKey = row.bootstrap_key ? secrets.open(row.bootstrap_key) : key.privateKey;
    target.hostKeyFingerprint = row.host_key_fingerprint ?? undefined;
  }
  if (row.kind === 'pod') {
    // its cloud's kubeconfig is opened by the substrate, when it execs
    target.cloud = row.cloud ?? undefined;
    target.namespace = row.namespace ?? undefined;
    target.pod = row.host ?? undefined;
    target.container = CHARM_CONTAINER;
    target.hostKeyFingerprint = row.host_key_fingerprint ?? undefined;
  }
  return target;
}

/** Where a unit's files live on its machine. */
export function unitPaths(rootDir: string, unit: string) {
  const [app, n] = unit.split('/');
  const unitDir = `${rootDir}/units/${app}-${n}`;
  return {
    unitDir,
    charmDir: `${unitDir}/charm`,
    runtimeDir: `${rootDir}/runtime`,
    toolsDir: `${rootDir}/runtime/bin`,
    runner: `${rootDir}/runtime/runner.py`,
  };
}
