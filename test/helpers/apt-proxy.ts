// A forward HTTP proxy for apt on test hosts: fleet hosts have no route off their
// bridge, so a host that must apt-get from Debian's mirrors is pointed here
// (Acquire::http::Proxy). Only GET and HEAD of http:// URLs on the allowed hosts pass.
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface AptProxy {
  readonly port: number;
  /** Requests forwarded, and refused (method or host not allowed). */
  readonly stats: { forwarded: number; refused: number };
  close(): Promise<void>;
}

export const DEBIAN_MIRRORS = ['deb.debian.org', 'security.debian.org'];

export async function startAptProxy(address: string, port = 0, allowedHosts = DEBIAN_MIRRORS): Promise<AptProxy> {
  const stats = { forwarded: 0, refused: 0 };
  const server: Server = createServer((req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      stats.refused++;
      res.writeHead(400).end('absolute http:// URL expected\n');
      return;
    }
    if (
      (req.method !== 'GET' && req.method !== 'HEAD') ||
      url.protocol !== 'http:' ||
      !allowedHosts.includes(url.hostname)
    ) {
      stats.refused++;
      res.writeHead(403).end(`not forwarded: ${req.method} ${url.href}\n`);
      return;
    }
    stats.forwarded++;
    const headers: Record<string, string | string[] | undefined> = { ...req.headers, host: url.host };
    delete headers['proxy-connection'];
    const upstream = request(url, { method: req.method, headers }, (up) => {
      res.writeHead(up.statusCode ?? 502, up.headers);
      up.pipe(res);
    });
    upstream.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502);
      res.end(`upstream: ${err.message}\n`);
    });
    req.pipe(upstream);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, address, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    stats,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
