// The CLI's only way to the controller: the HTTP API.
import { existsSync, readFileSync } from 'node:fs';
import { defaultDataDir, paths } from '../controller/config.ts';

export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}

export interface Endpoint {
  url: string;
  token: string;
}

/** CHARMFLOW_URL/CHARMFLOW_TOKEN, else the local controller's data dir. */
export function resolveEndpoint(): Endpoint {
  const dataDir = process.env.CHARMFLOW_DATA_DIR || defaultDataDir();
  const p = paths(dataDir);
  let url = process.env.CHARMFLOW_URL;
  let token = process.env.CHARMFLOW_TOKEN;
  if (!url && existsSync(p.controllerJson)) {
    url = (JSON.parse(readFileSync(p.controllerJson, 'utf8')) as { url: string }).url;
  }
  if (!token && existsSync(p.adminToken)) {
    try {
      token = readFileSync(p.adminToken, 'utf8').trim();
    } catch {
      // not readable by this user: fall through to the message below
    }
  }
  if (!url) {
    throw new CliError(
      `no controller found: start one with \`charmflow up\` (data dir ${dataDir}), or set CHARMFLOW_URL and CHARMFLOW_TOKEN`,
    );
  }
  if (!token)
    throw new CliError(`no token: set CHARMFLOW_TOKEN (or run as the controller's owner to use ${p.adminToken})`);
  return { url: url.replace(/\/$/, ''), token };
}

interface ErrorShape {
  statusCode?: number;
  message?: string;
  details?: { field: string; message: string }[];
}

export class ApiClient {
  constructor(private readonly endpoint: Endpoint = resolveEndpoint()) {}

  get url(): string {
    return this.endpoint.url;
  }

  async request<T>(method: string, path: string, body?: unknown, headers: Record<string, string> = {}): Promise<T> {
    let res: Response;
    const isBinary = body instanceof Uint8Array;
    try {
      res = await fetch(`${this.endpoint.url}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.endpoint.token}`,
          ...(body !== undefined ? { 'content-type': isBinary ? 'application/octet-stream' : 'application/json' } : {}),
          ...headers,
        },
        body: body === undefined ? undefined : isBinary ? Buffer.from(body as Uint8Array) : JSON.stringify(body),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? String(err);
      throw new CliError(
        `cannot reach the controller at ${this.endpoint.url} (${cause}); is \`charmflow up\` running?`,
      );
    }
    const text = await res.text();
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = text;
    }
    if (!res.ok) {
      const e = (parsed ?? {}) as ErrorShape;
      throw new CliError(e.message ?? `HTTP ${res.status}`);
    }
    return parsed as T;
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path);
  }
  post<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('POST', path, body ?? {});
  }
  put<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('PUT', path, body ?? {});
  }
  delete<T>(path: string, body?: unknown): Promise<T> {
    return this.request<T>('DELETE', path, body);
  }
}
