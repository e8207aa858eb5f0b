// A whole controller for integration tests: real Temporal dev server, real worker,
// real API, in a temp data dir on free ports.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../../controller/config.ts';
import { type ControllerHandle, startController } from '../../controller/controller.ts';
import { freePort } from './ports.ts';
import { waitOperationEnd } from './wait.ts';

export interface TestController extends ControllerHandle {
  dataDir: string;
  /** fetch against the API with the admin token. */
  api(method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; body: any }>;
  /** Wait for an operation to end; returns it. */
  waitOperation(id: number, timeoutMs?: number): Promise<any>;
}

export interface TestControllerOptions {
  databaseUrl?: string;
  dataDir?: string;
  /** Run the worker in this process (default); false to run workers as separate processes. */
  worker?: boolean;
}

export async function startTestController(opts: TestControllerOptions = {}): Promise<TestController> {
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), 'charmflow-test-'));
  const config = loadConfig({
    dataDir,
    // a loopback range of its own, apart from a developer's controller
    localAddressBase: 100 + (process.pid % 100),
    apiHost: '127.0.0.1',
    apiPort: await freePort(),
    temporalPort: await freePort(),
    temporalUiPort: await freePort(),
    temporalAddress: undefined,
    databaseUrl: opts.databaseUrl,
    taskQueue: `charmflow-test-${process.pid}`,
  });
  const handle = await startController(config, { headless: true, worker: opts.worker });
  const api: TestController['api'] = async (method, path, body, token = handle.adminToken) => {
    const res = await fetch(`${handle.apiUrl}${path}`, {
      method,
      headers: {
        ...(token ? { authorization: `Bearer ${token}` } : {}),
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  const waitOperation = (id: number, timeoutMs = 60_000) => waitOperationEnd((path) => api('GET', path), id, timeoutMs);
  return {
    ...handle,
    dataDir,
    api,
    waitOperation,
    async stop() {
      await handle.stop();
      if (!opts.dataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
