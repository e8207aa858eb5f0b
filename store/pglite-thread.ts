// PGlite on a worker thread of its own. Postgres compiled to WASM runs each
// statement synchronously: on the main thread, every statement would hold up
// the SSH channels, the Temporal worker and the API for as long as it runs. Here
// statements run beside them, and the main thread only waits for the answer.
import { Worker } from 'node:worker_threads';

/** The part of PGlite the store uses. */
export interface PGliteLike {
  readonly waitReady: Promise<void>;
  query<T>(sql: string, params?: unknown[]): Promise<{ rows: T[]; affectedRows?: number }>;
  exec(sql: string): Promise<unknown>;
  close(): Promise<void>;
}

// CommonJS, evaluated in the worker; PGlite itself is imported by URL.
const WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const failure = (e) => ({
  message: e && e.message ? e.message : String(e),
  fields: e && typeof e === 'object'
    ? Object.fromEntries(['code', 'detail', 'hint', 'constraint', 'table', 'column', 'schema', 'severity', 'position', 'where']
        .filter((k) => e[k] !== undefined).map((k) => [k, e[k]]))
    : {},
});
(async () => {
  let pg;
  try {
    const { PGlite } = await import(workerData.pglite);
    pg = new PGlite(workerData.dataDir, { startParams: [...PGlite.defaultStartParams, ...workerData.startParams] });
    await pg.waitReady;
  } catch (e) {
    parentPort.postMessage({ id: 0, ok: false, error: failure(e) });
    return;
  }
  parentPort.postMessage({ id: 0, ok: true });
  parentPort.on('message', async (m) => {
    try {
      if (m.op === 'query') {
        const r = await pg.query(m.sql, m.params);
        parentPort.postMessage({ id: m.id, ok: true, rows: r.rows, affectedRows: r.affectedRows });
      } else if (m.op === 'exec') {
        await pg.exec(m.sql);
        parentPort.postMessage({ id: m.id, ok: true });
      } else if (m.op === 'close') {
        await pg.close();
        parentPort.postMessage({ id: m.id, ok: true });
        parentPort.close();
      }
    } catch (e) {
      parentPort.postMessage({ id: m.id, ok: false, error: failure(e) });
    }
  });
})();
`;

interface Reply {
  id: number;
  ok: boolean;
  rows?: unknown[];
  affectedRows?: number;
  error?: { message: string; fields: Record<string, unknown> };
}

/** An error as PGlite raised it in the worker: same message, same SQLSTATE `code`. */
function rebuild(error: NonNullable<Reply['error']>): Error {
  return Object.assign(new Error(error.message), error.fields);
}

export class PGliteThread implements PGliteLike {
  readonly waitReady: Promise<void>;
  private readonly worker: Worker;
  private readonly pending = new Map<number, { resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private gone: Error | undefined;

  constructor(dataDir: string | undefined, startParams: string[]) {
    this.worker = new Worker(WORKER, {
      eval: true,
      workerData: { pglite: import.meta.resolve('@electric-sql/pglite'), dataDir, startParams },
    });
    this.waitReady = new Promise<void>((resolve, reject) => {
      this.pending.set(0, { resolve: (r) => (r.ok ? resolve() : reject(rebuild(r.error!))), reject });
    });
    this.worker.on('message', (r: Reply) => {
      const waiter = this.pending.get(r.id);
      this.pending.delete(r.id);
      waiter?.resolve(r);
    });
    const fail = (err: Error) => {
      this.gone ??= err;
      for (const w of this.pending.values()) w.reject(err);
      this.pending.clear();
    };
    this.worker.on('error', fail);
    this.worker.on('exit', (code) => fail(new Error(`the store's PGlite thread exited (code ${code})`)));
  }

  private call(message: { op: string; sql?: string; params?: unknown[] }): Promise<Reply> {
    if (this.gone) return Promise.reject(this.gone);
    const id = this.nextId++;
    return new Promise<Reply>((resolve, reject) => {
      this.pending.set(id, {
        resolve: (r) => (r.ok ? resolve(r) : reject(rebuild(r.error!))),
        reject,
      });
      this.worker.postMessage({ id, ...message });
    });
  }

  async query<T>(sql: string, params: unknown[] = []): Promise<{ rows: T[]; affectedRows?: number }> {
    const r = await this.call({ op: 'query', sql, params });
    return { rows: r.rows as T[], affectedRows: r.affectedRows };
  }

  async exec(sql: string): Promise<unknown> {
    return this.call({ op: 'exec', sql });
  }

  async close(): Promise<void> {
    if (this.gone) return;
    await this.call({ op: 'close' });
    await this.worker.terminate();
  }
}
