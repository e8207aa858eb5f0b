// The substrates, keyed by the machine kind they serve.

import { KubernetesSubstrate, type KubernetesSubstrateOptions } from './kubernetes-substrate.ts';
import { LocalSubstrate, type LocalSubstrateOptions } from './local-substrate.ts';
import { SshSubstrate, type SshSubstrateOptions } from './ssh-substrate.ts';
import type { MachineTarget, Substrate } from './substrate.ts';

export * from './kubernetes-substrate.ts';
export * from './local-substrate.ts';
export * from './machine-shell.ts';
export * from './ssh-pool.ts';
export * from './ssh-substrate.ts';
export * from './substrate.ts';

export interface Substrates {
  local: LocalSubstrate;
  ssh: SshSubstrate;
  pod: KubernetesSubstrate;
}

export interface SubstratesOptions {
  local?: LocalSubstrateOptions;
  ssh?: SshSubstrateOptions;
  kubernetes?: KubernetesSubstrateOptions;
}

export function createSubstrates(opts: SubstratesOptions = {}): Substrates {
  return {
    local: new LocalSubstrate(opts.local),
    ssh: new SshSubstrate(opts.ssh),
    pod: new KubernetesSubstrate(opts.kubernetes),
  };
}

/** The substrate that serves a machine. */
export function substrateFor(substrates: Substrates, target: MachineTarget): Substrate {
  return substrates[target.kind];
}

/** Close every substrate's pooled connections. */
export async function closeSubstrates(substrates: Substrates): Promise<void> {
  await Promise.all([substrates.local.close(), substrates.ssh.close(), substrates.pod.close()]);
}
