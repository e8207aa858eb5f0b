// The kv example charms (examples/charms/kv-store, kv-web, ops-kv-web), for
// tests: where they are, how to read kv-web's page, how to talk to kv-store.
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const KV_STORE_CHARM = path.join(repo, 'examples', 'charms', 'kv-store');
export const KV_WEB_CHARM = path.join(repo, 'examples', 'charms', 'kv-web');
/** An ops charm: build it with buildOpsCharm(OPS_KV_WEB_CHARM, out) before deploying. */
export const OPS_KV_WEB_CHARM = path.join(repo, 'examples', 'charms', 'ops-kv-web');

/** What a kv-web (or ops-kv-web) unit's page says. */
export type KvWebPage =
  | {
      state: 'connected';
      /** The unit that served the page (`kv-web/0`). */
      unit: string | null;
      /** The kv-store unit's address and port (from its unit bag). */
      host: string;
      port: number;
      database: string;
      user: string;
      /** The visit count after this visit. */
      visits: number;
    }
  | { state: 'no-kv-store'; unit: string | null }
  | { state: 'error'; unit: string | null; message: string };

const CONNECTED = /^connected to kv-store at (\S+):(\d+) database (\S+) as (\S+); visits=(\d+)$/m;

/** Parses a kv-web page; throws on a page that is none of the three kinds. */
export function parseKvWebPage(body: string): KvWebPage {
  const unit = /^unit (\S+)$/m.exec(body)?.[1] ?? null;
  const m = CONNECTED.exec(body);
  if (m) {
    return {
      state: 'connected',
      unit,
      host: m[1],
      port: Number(m[2]),
      database: m[3],
      user: m[4],
      visits: Number(m[5]),
    };
  }
  if (/^no kv-store$/m.test(body)) return { state: 'no-kv-store', unit };
  const err = /^(kv-store error at .*)$/m.exec(body);
  if (err) return { state: 'error', unit, message: err[1] };
  throw new Error(`not a kv-web page: ${JSON.stringify(body.slice(0, 200))}`);
}

/** GET / of a kv-web unit (each call is one visit). 200 = connected, 503 = no kv-store, 502 = kv-store error. */
export async function fetchKvWebPage(
  address: string,
  port: number,
  timeoutMs = 10_000,
): Promise<{ status: number; body: string; page: KvWebPage }> {
  const host = address.includes(':') ? `[${address}]` : address;
  const res = await fetch(`http://${host}:${port}/`, { signal: AbortSignal.timeout(timeoutMs) });
  const body = await res.text();
  return { status: res.status, body, page: parseKvWebPage(body) };
}

export interface KvCredentials {
  username: string;
  password: string;
}

/**
 * One request to a kv-store unit: PUT (with a value) or GET /kv/<database>/<key>.
 * 200 value | 204 stored | 404 no such key | 401 bad credentials | 403 not your database.
 */
export async function kvStoreRequest(
  address: string,
  port: number,
  creds: KvCredentials | null,
  database: string,
  key: string,
  value?: string,
): Promise<{ status: number; body: string }> {
  const host = address.includes(':') ? `[${address}]` : address;
  const headers: Record<string, string> = {};
  if (creds) headers.authorization = `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
  const res = await fetch(`http://${host}:${port}/kv/${database}/${key}`, {
    method: value === undefined ? 'GET' : 'PUT',
    headers,
    body: value,
    signal: AbortSignal.timeout(10_000),
  });
  return { status: res.status, body: await res.text() };
}

/**
 * Polls a kv-web unit's page until it is connected and matches `want` (say,
 * `{ database: 'web' }`: right after integrate the kv-store may first hand out
 * a user on the application's own name, before the requirer's `database`
 * arrives). Every connected poll is a visit, so `visits` goes up while waiting.
 */
export async function waitForKvWebConnected(
  address: string,
  port: number,
  want: Partial<Omit<Extract<KvWebPage, { state: 'connected' }>, 'state'>> = {},
  timeoutMs = 60_000,
): Promise<Extract<KvWebPage, { state: 'connected' }>> {
  const deadline = Date.now() + timeoutMs;
  let last = 'nothing yet';
  while (Date.now() < deadline) {
    try {
      const { page, status, body } = await fetchKvWebPage(address, port, 5_000);
      if (page.state === 'connected' && Object.entries(want).every(([k, v]) => page[k as keyof typeof page] === v)) {
        return page;
      }
      last = `${status}: ${body.trim()}`;
    } catch (err) {
      last = (err as Error).message;
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(
    `kv-web at ${address}:${port} not connected as ${JSON.stringify(want)} after ${timeoutMs} ms; last: ${last}`,
  );
}

/**
 * Polls kv-web's page at `address` every 50 ms until `end()`; counts the requests,
 * and every one that did not answer 200 `connected` (what the migration tests hold
 * to zero).
 */
export function pollKvWeb(address: string, port = 8080): { end(): Promise<{ requests: number; failures: string[] }> } {
  let stop = false;
  const failures: string[] = [];
  let requests = 0;
  const done = (async () => {
    while (!stop) {
      requests++;
      try {
        const r = await fetchKvWebPage(address, port, 5000);
        if (r.status !== 200 || r.page.state !== 'connected')
          failures.push(`${r.status} ${r.body.trim().slice(0, 120)}`);
      } catch (err) {
        failures.push((err as Error).message);
      }
      await new Promise((res) => setTimeout(res, 50));
    }
  })();
  return {
    async end() {
      stop = true;
      await done;
      return { requests, failures };
    },
  };
}
