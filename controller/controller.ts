// `charmflow up`: the whole controller as one supervised process tree:
// the Temporal dev server (unless TEMPORAL_ADDRESS), the worker and the API.
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import { createActivities } from '../activities/index.ts';
import { kubeconfigSource } from '../activities/kubernetes-cluster.ts';
import { closeSubstrates, createSubstrates, type Substrates } from '../activities/substrates/index.ts';
import { buildApp } from '../api/app.ts';
import { startOperation, type TemporalDeps } from '../api/operation-starter.ts';
import { type HealthProbe, temporalReachable } from '../api/routes/health.ts';
import { issueToken, verifyToken } from '../api/tokens.ts';
import { type Db, isUniqueViolation, openStore, type Store } from '../store/store.ts';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes.ts';
import { type ControllerConfig, paths } from './config.ts';
import { startOperationReconciler } from './operation-reconciler.ts';
import { ensureRetentionSchedule, retentionConfigFromEnv } from './retention-schedule.ts';
import { loadOrCreateControllerKey } from './ssh-identity.ts';
import { startTemporalServer, type TemporalServer } from './temporal-server.ts';
import { type RunningWorker, startWorker } from './worker.ts';

const STOP_TIMEOUT_MS = 10_000;

export interface ControllerHandle {
  config: ControllerConfig;
  apiUrl: string;
  temporalAddress: string;
  temporalUiUrl: string | null;
  adminToken: string;
  adminTokenFile: string;
  store: Store;
  client: Client;
  app: FastifyInstance;
  /** The substrates this process's worker uses (absent without a worker). */
  substrates?: Substrates;
  /** Pid of the embedded Temporal dev server, when this process started one (it changes when it is restarted). */
  readonly temporalPid?: number;
  stop(): Promise<void>;
}

export interface StartOptions {
  /** Start the dev server without its Web UI (tests). */
  headless?: boolean;
  /** Log each request (the foreground `up`). */
  logRequests?: boolean;
  /** Run the worker in this process (default true; false for an API-only process). */
  worker?: boolean;
  /** Serve the API (default true; false for a worker-only process). */
  api?: boolean;
  onProgress?: (msg: string) => void;
  /** Between two passes of the operation reconciler (default 30 s). */
  reconcileIntervalMs?: number;
}

const RECONCILE_INTERVAL_MS = 30_000;
/** An operation younger than this is being started by the API that recorded it. */
const RECONCILE_GRACE_MS = 5000;
const DEFAULT_MODEL_FACT = 'default-model-created';

async function ensureAdminToken(store: Store, file: string): Promise<string> {
  if (existsSync(file)) {
    const token = readFileSync(file, 'utf8').trim();
    if (await verifyToken(store.db, token)) return token;
  }
  const { token } = await issueToken(store.db, { user: 'admin', name: 'admin', role: 'admin' });
  writeFileSync(file, `${token}\n`, { mode: 0o600 });
  chmodSync(file, 0o600);
  return token;
}

/** Clouds every controller has, on every start (a first start may have died before them). */
async function ensureClouds(store: Store): Promise<void> {
  await store.db
    .insertInto('clouds')
    .values([
      { name: 'local', type: 'local', endpoint: null },
      { name: 'manual', type: 'manual', endpoint: null },
    ])
    .onConflict((oc) => oc.column('name').doNothing())
    .execute();
}

/**
 * The `default` model, on every start until it has been created once: a first start
 * that died part way creates it at the next start, and a default model the user
 * destroyed is not made again. The fact is recorded with the model's intent, in one
 * transaction; a model that exists (a store from before the fact) records it.
 */
async function ensureDefaultModel(store: Store, temporal: TemporalDeps): Promise<void> {
  const fact = await store.db
    .selectFrom('controller_facts')
    .select('name')
    .where('name', '=', DEFAULT_MODEL_FACT)
    .executeTakeFirst();
  if (fact) return;
  const recordFact = (db: Db) =>
    db
      .insertInto('controller_facts')
      .values({ name: DEFAULT_MODEL_FACT, value: '{}' })
      .onConflict((oc) => oc.column('name').doNothing())
      .execute();
  const existing = await store.db.selectFrom('models').select('name').where('name', '=', 'default').executeTakeFirst();
  if (existing) {
    await recordFact(store.db);
    return;
  }
  const uuid = randomUUID();
  try {
    await startOperation(store.db, temporal, {
      kind: 'create-model',
      model: 'default',
      target: 'default',
      createdBy: 'admin',
      workflow: 'createModelWorkflow',
      summary: 'create model default on cloud local',
      params: { cloud: 'local' },
      args: (operationId) => [{ operationId, model: 'default', kind: 'create-model' }],
      intent: async (tx) => {
        await tx
          .insertInto('models')
          .values({ uuid, name: 'default', cloud: 'local', status: 'pending', config: '{}' })
          .execute();
        await recordFact(tx);
      },
      undo: async (d) => {
        await d.deleteFrom('models').where('uuid', '=', uuid).execute();
        await d.deleteFrom('controller_facts').where('name', '=', DEFAULT_MODEL_FACT).execute();
      },
    });
  } catch (err) {
    // another process serving the API made it meanwhile
    if (!isUniqueViolation(err)) throw err;
  }
}

async function registerSearchAttributes(client: Client, namespace: string): Promise<void> {
  const searchAttributes: Record<string, number> = {};
  // INDEXED_VALUE_TYPE_KEYWORD = 2
  for (const name of Object.keys(SEARCH_ATTRIBUTES)) searchAttributes[name] = 2;
  try {
    await client.connection.operatorService.addSearchAttributes({ namespace, searchAttributes });
  } catch (err) {
    if (!/already exists/i.test(String(err))) throw err;
  }
}

export async function startController(config: ControllerConfig, opts: StartOptions = {}): Promise<ControllerHandle> {
  const p = paths(config.dataDir);
  const say = opts.onProgress ?? (() => {});
  mkdirSync(config.dataDir, { recursive: true, mode: 0o700 });
  mkdirSync(p.logs, { recursive: true });
  // What was started, stopped in reverse order. A part that does not stop in time
  // is left behind with a message, so stopping never hangs.
  const stack: Array<[string, () => Promise<void>]> = [];
  const stopAll = async () => {
    while (stack.length > 0) {
      const [name, fn] = stack.pop()!;
      say(`stopping the ${name}`);
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<void>((resolve) => {
        timer = setTimeout(() => {
          console.error(`charmflow: the ${name} did not stop within ${STOP_TIMEOUT_MS / 1000}s; going on`);
          resolve();
        }, STOP_TIMEOUT_MS);
      });
      await Promise.race([
        fn().catch((err) => console.error(`charmflow: error stopping the ${name}: ${String(err)}`)),
        timeout,
      ]);
      clearTimeout(timer);
    }
  };
  try {
    say(config.databaseUrl ? 'opening the model store (Postgres)' : 'opening the model store (embedded PGlite)');
    const store = await openStore({
      databaseUrl: config.databaseUrl,
      dataDir: p.store,
      // on Postgres there is no embedded store dir: the key sits in the data dir itself
      secretKeyFile: config.databaseUrl
        ? process.env.CHARMFLOW_SECRET_KEY_FILE || join(config.dataDir, 'secret-key')
        : undefined,
    });
    stack.push(['model store', () => store.close()]);
    await ensureClouds(store);
    const adminToken = await ensureAdminToken(store, p.adminToken);

    let temporalAddress = config.temporalAddress;
    let temporal: TemporalServer | null = null;
    if (!temporalAddress) {
      say('starting the Temporal dev server');
      temporal = await startTemporalServer({
        dbFile: p.temporalDb,
        pidFile: p.temporalPid,
        logFile: join(p.logs, 'temporal.log'),
        port: config.temporalPort,
        uiPort: config.temporalUiPort,
        namespace: config.temporalNamespace,
        headless: opts.headless,
        log: (msg) => console.error(`charmflow: ${msg}`),
      });
      stack.push(['Temporal dev server', () => temporal!.stop()]);
      temporalAddress = temporal.address;
    }
    const connection = await Connection.connect({ address: temporalAddress });
    stack.push(['Temporal client', () => connection.close()]);
    const client = new Client({ connection, namespace: config.temporalNamespace });
    if (config.temporalAddress) await registerSearchAttributes(client, config.temporalNamespace);
    // the process that serves the API keeps the retention schedule in line with its settings
    if (opts.api !== false) await ensureRetentionSchedule(client, config.taskQueue, retentionConfigFromEnv());

    const temporalDeps: TemporalDeps = { client, taskQueue: config.taskQueue };
    const embedded = temporal;
    const health: Record<string, HealthProbe> = {
      // the embedded server's supervisor knows at once that it is down; else Temporal must answer
      temporal: async () => {
        if (!embedded) return temporalReachable(temporalDeps);
        if (!embedded.health().ok) return embedded.health();
        // a probe of a server that just died can wait out its restart and answer: that restart is news
        const exits = embedded.exits;
        const answer = await temporalReachable(temporalDeps);
        if (embedded.exits !== exits) {
          return { ok: false, detail: 'the embedded Temporal dev server exited and was restarted during this check' };
        }
        return embedded.health().ok ? answer : embedded.health();
      },
    };
    let substrates: Substrates | undefined;
    if (opts.worker !== false) {
      say('starting the worker');
      substrates = createSubstrates({
        kubernetes: { kubeconfigFor: kubeconfigSource(store.db, (v) => store.secrets.open(v)) },
      });
      const made = substrates;
      stack.push(['machine connections', () => closeSubstrates(made)]);
      const activities = createActivities({
        store,
        dataDir: config.dataDir,
        substrates,
        controllerKey: loadOrCreateControllerKey(p.controllerKey),
        localNet: config.localAddressBase,
      });
      const worker: RunningWorker = await startWorker({
        address: temporalAddress,
        namespace: config.temporalNamespace,
        taskQueue: config.taskQueue,
        activities,
        cacheDir: p.cache,
        maxConcurrentActivities: config.maxConcurrentActivities,
      });
      stack.push(['worker', () => worker.stop()]);
      health.worker = async () => {
        const state = worker.worker.getState();
        return state === 'RUNNING' ? { ok: true } : { ok: false, detail: `the worker is ${state.toLowerCase()}` };
      };
    }

    const app = await buildApp({ store, temporal: temporalDeps, health, logger: opts.logRequests });
    stack.push(['API', () => app.close()]);
    let apiUrl = `http://${config.apiHost}:${config.apiPort}`;
    if (opts.api !== false) {
      say('starting the API');
      const address = await app.listen({ host: config.apiHost, port: config.apiPort });
      apiUrl = address.replace('[::1]', 'localhost');
    }
    // only the process that serves the API tells local CLIs where it is
    if (opts.api !== false) {
      writeFileSync(p.controllerJson, JSON.stringify({ url: apiUrl, temporal: temporalAddress }, null, 2));
    }

    if (opts.api !== false) {
      await ensureDefaultModel(store, temporalDeps);
      // operations recorded but never started (a crash between the two) are started now and then
      const reconciler = startOperationReconciler(store.db, temporalDeps, {
        intervalMs: opts.reconcileIntervalMs ?? RECONCILE_INTERVAL_MS,
        graceMs: RECONCILE_GRACE_MS,
        log: (msg) => console.error(`charmflow: ${msg}`),
      });
      stack.push(['operation reconciler', () => reconciler.stop()]);
    }

    return {
      config,
      apiUrl,
      temporalAddress,
      temporalUiUrl: temporal?.uiUrl ?? null,
      adminToken,
      adminTokenFile: p.adminToken,
      store,
      client,
      app,
      substrates,
      get temporalPid() {
        return embedded?.pid;
      },
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
