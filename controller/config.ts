// Where the controller keeps its state and which ports it uses. Every value can be
// overridden by environment, so tests and several controllers can share one host.
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

export interface ControllerConfig {
  dataDir: string;
  apiHost: string;
  apiPort: number;
  /** External Temporal frontend (host:port). When unset the embedded dev server is started. */
  temporalAddress?: string;
  temporalPort: number;
  temporalUiPort: number;
  temporalNamespace: string;
  taskQueue: string;
  /** Postgres URL for the model store. When unset the embedded PGlite store is used. */
  databaseUrl?: string;
  /** First loopback address octet range for local machines: 127.0.<base>.N */
  localAddressBase: number;
  /**
   * At most this many activities (hooks, provisioning) at once in this worker. Unset:
   * as many as the host's CPU allows (Temporal's resource-based tuner), up to 200.
   */
  maxConcurrentActivities?: number;
}

function int(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number.parseInt(raw, 10);
  if (!Number.isInteger(n) || n <= 0 || n > 65535) throw new Error(`${name} must be a port number, got "${raw}"`);
  return n;
}

function count(name: string): number | undefined {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 10_000) {
    throw new Error(`${name} must be a whole number from 1 to 10000, got "${raw}"`);
  }
  return n;
}

export function defaultDataDir(): string {
  const xdg = process.env.XDG_DATA_HOME;
  return join(xdg && xdg.length > 0 ? xdg : join(homedir(), '.local', 'share'), 'charmflow');
}

export function loadConfig(overrides: Partial<ControllerConfig> = {}): ControllerConfig {
  const env = process.env;
  return {
    dataDir: resolve(env.CHARMFLOW_DATA_DIR || defaultDataDir()),
    apiHost: env.CHARMFLOW_API_HOST || '127.0.0.1',
    apiPort: int('CHARMFLOW_API_PORT', 17070),
    temporalAddress: env.TEMPORAL_ADDRESS || undefined,
    temporalPort: int('CHARMFLOW_TEMPORAL_PORT', 7233),
    temporalUiPort: int('CHARMFLOW_TEMPORAL_UI_PORT', 8233),
    temporalNamespace: env.TEMPORAL_NAMESPACE || 'default',
    taskQueue: env.CHARMFLOW_TASK_QUEUE || 'charmflow',
    databaseUrl: env.DATABASE_URL || undefined,
    localAddressBase: int('CHARMFLOW_LOCAL_NET', 0),
    maxConcurrentActivities: count('CHARMFLOW_MAX_CONCURRENT_ACTIVITIES'),
    ...overrides,
  };
}

/** Files inside the data dir. */
export function paths(dataDir: string) {
  return {
    store: join(dataDir, 'store'),
    temporalDb: join(dataDir, 'temporal.db'),
    temporalPid: join(dataDir, 'temporal.pid'),
    adminToken: join(dataDir, 'admin-token'),
    controllerJson: join(dataDir, 'controller.json'),
    controllerKey: join(dataDir, 'controller-ssh-key'),
    machines: join(dataDir, 'machines'),
    logs: join(dataDir, 'logs'),
    cache: join(dataDir, 'cache'),
  };
}
