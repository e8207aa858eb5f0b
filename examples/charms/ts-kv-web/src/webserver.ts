// The ts-kv-web page: the same page as the kv-web and ops-kv-web examples,
// served by Node.js (bundled by `charmflow pack` into dist/webserver.cjs; the
// charm starts it detached).
//
// GET / reads the kv connection the charm wrote (a JSON file with host, port,
// username, password, database; read on every request, so a relation change
// needs no restart), then makes a real round trip to that kv-store: GET the
// `visits` key, PUT it back plus one, and answers (text/plain)
//
//     unit ts-kv-web/0
//     connected to kv-store at 10.0.0.5:7070 database web as ts-kv-web-3; visits=4
//
// With no usable connection it answers 503 with a line `no kv-store`; if the
// kv-store cannot be reached or refuses, 502 with `kv-store error at H:P: why`.
import { renameSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import { kvCall, readConnection } from './kv-client.ts';

function arg(name: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  if (!v) {
    process.stderr.write(`usage: webserver --bind ADDR --port N --config FILE --unit UNIT --pidfile FILE\n`);
    process.exit(2);
  }
  return v;
}

const bind = arg('bind');
const port = Number(arg('port'));
const configPath = arg('config');
const unit = arg('unit');
const pidfile = arg('pidfile');

// One round trip at a time in this unit, so no visit of ours is lost.
let queue: Promise<unknown> = Promise.resolve();

const server = http.createServer((req, res) => {
  const answer = (code: number, lines: string[]) => {
    const body = [`unit ${unit}`, ...lines].map((l) => `${l}\n`).join('');
    res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    res.end(body);
  };
  if ((req.url ?? '/').split('?')[0] !== '/' || req.method !== 'GET') {
    answer(404, ['not found']);
    return;
  }
  const conn = readConnection(configPath);
  if (!conn) {
    answer(503, ['no kv-store']);
    return;
  }
  const where = `${conn.host}:${conn.port}`;
  const visit = queue.then(async () => {
    const got = await kvCall(conn, 'GET', 'visits');
    const visits = (got.status === 200 && /^\d+$/.test(got.body.trim()) ? Number(got.body.trim()) : 0) + 1;
    await kvCall(conn, 'PUT', 'visits', String(visits));
    return visits;
  });
  queue = visit.catch(() => undefined);
  visit.then(
    (visits) =>
      answer(200, [
        `connected to kv-store at ${where} database ${conn.database} as ${conn.username}; visits=${visits}`,
      ]),
    (err: Error) => answer(502, [`kv-store error at ${where}: ${err.message}`]),
  );
});

server.on('error', (err) => {
  process.stderr.write(`ts-kv-web cannot serve on ${bind}:${port}: ${err.message}\n`);
  process.exit(1);
});
server.listen(port, bind, () => {
  writeFileSync(`${pidfile}.tmp`, `${process.pid}\n`);
  renameSync(`${pidfile}.tmp`, pidfile);
  process.stdout.write(`ts-kv-web serving on ${bind}:${port} (pid ${process.pid})\n`);
});
process.on('SIGTERM', () => server.close(() => process.exit(0)));
process.on('SIGHUP', () => undefined);
