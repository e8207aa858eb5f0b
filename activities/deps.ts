// What activities are built from. Tests pass real-but-local parts.
import type { Store } from '../store/store.ts';

export interface ActivityDeps {
  store: Store;
  /** The controller's data dir (local machines live under it). */
  dataDir: string;
}
