// Talking to a kv-store unit (the kv interface's HTTP API), for the web page and
// the `visits` action: GET/PUT /kv/<database>/<key> with basic auth.
import { readFileSync } from 'node:fs';
import http from 'node:http';

/** Where and as whom to reach the kv-store: the file the charm writes for the server. */
export interface KvConnection {
  host: string;
  port: string;
  username: string;
  password: string;
  database: string;
}

const KEYS = ['host', 'port', 'username', 'password', 'database'] as const;

/** The connection file, or null when there is none (or it is incomplete). */
export function readConnection(path: string): KvConnection | null {
  try {
    const conn = JSON.parse(readFileSync(path, 'utf8')) as Partial<KvConnection>;
    return KEYS.every((k) => typeof conn[k] === 'string' && conn[k] !== '') ? (conn as KvConnection) : null;
  } catch {
    return null;
  }
}

/** One request: 200 (value), 204 (stored) or 404 are answers; anything else throws. */
export function kvCall(
  conn: KvConnection,
  method: 'GET' | 'PUT',
  key: string,
  body?: string,
): Promise<{ status: number; body: string }> {
  const auth = Buffer.from(`${conn.username}:${conn.password}`).toString('base64');
  return new Promise((resolve, reject) => {
    // Straight to the kv-store's private address: never through a proxy.
    const req = http.request(
      {
        host: conn.host,
        port: Number(conn.port),
        method,
        path: `/kv/${encodeURIComponent(conn.database)}/${encodeURIComponent(key)}`,
        headers: {
          authorization: `Basic ${auth}`,
          ...(body !== undefined ? { 'content-length': Buffer.byteLength(body) } : {}),
        },
        timeout: 5000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => {
          text += c;
        });
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          if (status === 200 || status === 204 || status === 201 || status === 404) resolve({ status, body: text });
          else reject(new Error(`HTTP ${status}`));
        });
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end(body);
  });
}
