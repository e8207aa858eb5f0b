// The Temporal worker: runs the bundled workflows and the activities.

import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { setFlagsFromString } from 'node:v8';
import {
  DefaultLogger,
  NativeConnection,
  ResourceBasedController,
  Runtime,
  Worker,
  type WorkerTuner,
} from '@temporalio/worker';
import type { Activities } from '../activities/index.ts';

const workflowsDir = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'workflows');

/**
 * V8 lets a heap grow up to about four times what survived the last full
 * collection before it collects again. A busy controller promotes short-lived
 * objects (hook contexts, statements, activity payloads) to the old generation
 * at hundreds of megabytes a minute, so its heap stood at three to four times its
 * live size: 335 MB used after a 1000-unit deploy, 91 MB of it live. Growing by
 * at most this percentage keeps it near its live size for a little more marking.
 * CHARMFLOW_HEAP_GROWING_PERCENT sets another (0: V8's own heuristics); a node
 * started with --heap-growing-percent keeps its own.
 */
const HEAP_GROWING_PERCENT = 30;

function boundHeapGrowth(): void {
  if (process.execArgv.some((a) => a.startsWith('--heap-growing-percent'))) return;
  const fromEnv = process.env.CHARMFLOW_HEAP_GROWING_PERCENT;
  const percent = fromEnv === undefined || fromEnv === '' ? HEAP_GROWING_PERCENT : Number(fromEnv);
  if (!Number.isInteger(percent) || percent < 0) {
    throw new Error(`CHARMFLOW_HEAP_GROWING_PERCENT must be a whole number of percent, got "${fromEnv}"`);
  }
  // read by V8 at every full collection, in this thread and in the workflow thread
  if (percent > 0) setFlagsFromString(`--heap-growing-percent=${percent}`);
}

let runtimeInstalled = false;
/** Quieter core logs: warnings and errors only. */
function installRuntime(): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  boundHeapGrowth();
  // no shutdownSignals: the controller owns SIGINT/SIGTERM and stops the worker itself, in order
  Runtime.install({ logger: new DefaultLogger('WARN'), shutdownSignals: [] });
}

/**
 * Bundling the workflows with webpack takes seconds; the bundle only depends on
 * the workflow sources, so it is cached by their hash and a restart reuses it.
 */
export async function workflowBundlePath(cacheDir: string): Promise<string> {
  const hash = createHash('sha256');
  for (const f of readdirSync(workflowsDir).sort()) {
    if (f.endsWith('.ts')) hash.update(f).update(readFileSync(join(workflowsDir, f)));
  }
  // activity type imports and shared schema modules can change the bundle too
  hash.update(readFileSync(join(workflowsDir, '..', 'package-lock.json')));
  const file = join(cacheDir, `workflows-${hash.digest('hex').slice(0, 16)}.js`);
  if (existsSync(file)) return file;
  mkdirSync(cacheDir, { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  // webpack's memory stays with the process that ran it: bundle in a short-lived child
  const script = `
    const { writeFileSync } = await import('node:fs');
    const { bundleWorkflowCode } = await import('@temporalio/worker');
    const quiet = () => {};
    const { code } = await bundleWorkflowCode({
      workflowsPath: process.argv[1],
      logger: { log: quiet, trace: quiet, debug: quiet, info: quiet, warn: quiet, error: console.error },
    });
    writeFileSync(process.argv[2], code);`;
  await promisify(execFile)(
    process.execPath,
    ['--input-type=module', '-e', script, join(workflowsDir, 'index.ts'), tmp],
    {
      cwd: join(workflowsDir, '..'),
      maxBuffer: 16 * 1024 * 1024,
    },
  );
  renameSync(tmp, file);
  return file;
}

export interface WorkerOptions {
  address: string;
  namespace: string;
  taskQueue: string;
  activities: Activities;
  cacheDir: string;
  /** A fixed bound on concurrent activities; unset, the host's CPU decides (up to 200). */
  maxConcurrentActivities?: number;
}

/**
 * Task slots beyond a minimum are handed out while the host's CPU stays under 70%, so a burst of
 * hooks cannot starve the API, the dev server or units on the local cloud; hooks
 * waiting on remote machines cost no CPU and do not hold others back. An operator
 * may bound activities to a fixed number instead (CHARMFLOW_MAX_CONCURRENT_ACTIVITIES).
 */
function workerTuner(maxActivities: number | undefined): WorkerTuner {
  const controller = ResourceBasedController.create({ targetCpuUsage: 0.7, targetMemoryUsage: 0.9 });
  const byResources = (minimumSlots: number, maximumSlots: number) =>
    ({ type: 'resource-based', controller, minimumSlots, maximumSlots }) as const;
  return {
    workflowTaskSlotSupplier: byResources(2, 100),
    // at least 16 at any CPU load: a busy host must not hold a rolling refresh's batch
    // back by seconds for a slot (hooks waiting on machines cost this host nothing)
    activityTaskSlotSupplier: maxActivities ? { type: 'fixed-size', numSlots: maxActivities } : byResources(16, 200),
    localActivityTaskSlotSupplier: byResources(2, 100),
    nexusTaskSlotSupplier: { type: 'fixed-size', numSlots: 1 },
  };
}

/**
 * Workflows kept in memory between their tasks; one evicted replays its history at
 * its next task. 128 by default: at 1000 units a cache of 1200 took the controller
 * from 27 to 21 ms of CPU per hook but from 526 to 794 MB peak RSS.
 * CHARMFLOW_MAX_CACHED_WORKFLOWS trades one for the other.
 */
function cachedWorkflows(): number {
  const fromEnv = process.env.CHARMFLOW_MAX_CACHED_WORKFLOWS;
  if (fromEnv === undefined || fromEnv === '') return 128;
  const n = Number(fromEnv);
  if (!Number.isInteger(n) || n < 0) {
    throw new Error(`CHARMFLOW_MAX_CACHED_WORKFLOWS must be a whole number, got "${fromEnv}"`);
  }
  return n;
}

export interface RunningWorker {
  worker: Worker;
  stop(): Promise<void>;
}

export async function startWorker(opts: WorkerOptions): Promise<RunningWorker> {
  installRuntime();
  const codePath = await workflowBundlePath(opts.cacheDir);
  const connection = await NativeConnection.connect({ address: opts.address });
  const worker = await Worker.create({
    connection,
    namespace: opts.namespace,
    taskQueue: opts.taskQueue,
    workflowBundle: { codePath },
    activities: opts.activities,
    tuner: workerTuner(opts.maxConcurrentActivities),
    maxCachedWorkflows: cachedWorkflows(),
    shutdownGraceTime: '2 seconds',
  });
  const running = worker.run();
  return {
    worker,
    async stop() {
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running.catch(() => {});
      await connection.close();
    },
  };
}
