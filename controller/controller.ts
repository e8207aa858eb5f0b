// `charmflow up`: the whole controller as one supervised process tree:
// the Temporal dev server (unless TEMPORAL_ADDRESS), the worker and the API.
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import { createActivities } from '../activities/index.ts';
import { closeSubstrates, createSubstrates, type Substrates } from '../activities/substrates/index.ts';
import { buildApp } from '../api/app.ts';
import { startOperation } from '../api/operation-starter.ts';
import { issueToken, verifyToken } from '../api/tokens.ts';
import { openStore, type Store } from '../store/store.ts';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes.ts';
import { type ControllerConfig, paths } from './config.ts';
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
  /** Pid of the embedded Temporal dev server, when this process started one. */
  temporalPid?: number;
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
}

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

/** Clouds every controller has. Returns true on the very first start of this store. */
async function ensureClouds(store: Store): Promise<boolean> {
  const res = await store.db
    .insertInto('clouds')
    .values([
      { name: 'local', type: 'local', endpoint: null },
      { name: 'manual', type: 'manual', endpoint: null },
    ])
    .onConflict((oc) => oc.column('name').doNothing())
    .returning('name')
    .execute();
  return res.some((r) => r.name === 'local');
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
    const store = await openStore({ databaseUrl: config.databaseUrl, dataDir: p.store });
    stack.push(['model store', () => store.close()]);
    const firstStart = await ensureClouds(store);
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

    let substrates: Substrates | undefined;
    if (opts.worker !== false) {
      say('starting the worker');
      substrates = createSubstrates();
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
    }

    const app = await buildApp({
      store,
      temporal: { client, taskQueue: config.taskQueue },
      logger: opts.logRequests,
    });
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

    if (firstStart && opts.api !== false) {
      const existing = await store.db
        .selectFrom('models')
        .select('name')
        .where('name', '=', 'default')
        .executeTakeFirst();
      if (!existing) {
        const uuid = randomUUID();
        await startOperation(
          store.db,
          { client, taskQueue: config.taskQueue },
          {
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
            },
          },
        );
      }
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
      temporalPid: temporal?.child.pid,
      stop: stopAll,
    };
  } catch (err) {
    await stopAll();
    throw err;
  }
}
