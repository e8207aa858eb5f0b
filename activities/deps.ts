// What activities are built from. Tests pass real-but-local parts.
import type { Store } from '../store/store.ts';
import type { Substrates } from './substrates/index.ts';

/** The controller's own SSH identity, installed on every SSH machine it manages. */
export interface ControllerKey {
  /** OpenSSH private key text. Never logged, never sent anywhere but to ssh2. */
  privateKey: string;
  /** `ssh-ed25519 AAAA... charmflow-controller` */
  publicKey: string;
}

export interface ActivityDeps {
  store: Store;
  /** The controller's data dir (local machines live under it). */
  dataDir: string;
  substrates: Substrates;
  controllerKey: ControllerKey;
  /** Loopback range for local machines: 127.<localNet>.x.y */
  localNet: number;
}
