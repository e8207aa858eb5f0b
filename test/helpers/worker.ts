// A worker as its own process beside a test controller started with `worker: false`
// (on Postgres), as production runs it: the crash tests kill it and start another.
import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { cliPath } from './cli.ts';
import type { TestController } from './controller.ts';

/** Starts `charmflow worker` for the controller; its output goes to `logFile`, or nowhere. */
export function spawnWorker(c: TestController, logFile?: string): ChildProcess {
  const child = spawn(process.execPath, [cliPath, 'worker'], {
    env: {
      ...process.env,
      TEMPORAL_ADDRESS: c.temporalAddress,
      DATABASE_URL: c.config.databaseUrl,
      CHARMFLOW_DATA_DIR: c.dataDir,
      CHARMFLOW_TASK_QUEUE: c.config.taskQueue,
      CHARMFLOW_LOCAL_NET: String(c.config.localAddressBase),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (logFile) {
    const log = createWriteStream(logFile);
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
  } else {
    child.stdout?.on('data', () => {});
    child.stderr?.on('data', () => {});
  }
  return child;
}
