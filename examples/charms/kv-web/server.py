#!/usr/bin/env python3
"""The kv-web page, run as a detached daemon.

GET / reads the kv connection the hooks wrote (a JSON file with host, port,
username, password, database; read on every request, so a relation change
needs no restart), then makes a real round trip to that kv-store: GET the
`visits` key, PUT it back plus one, and answers (text/plain)

    unit kv-web/0
    connected to kv-store at 10.0.0.5:7070 database web as kv-web-3; visits=4

With no connection file it answers 503 with a line `no kv-store`; if the
kv-store cannot be reached or refuses, 502 with `kv-store error at H:P: why`.

Daemon: binds first (a busy port fails the hook, where someone sees it), then
double-forks into a new session (the hook runner may kill the hook's process
group), points every fd away from the hook's pipes (or the runner would wait
for them to close), writes its pidfile and tells the parent it is serving.
"""

import argparse
import base64
import http.server
import json
import os
import signal
import sys
import threading
import urllib.error
import urllib.request


KEYS = ("host", "port", "username", "password", "database")
# Straight to the kv-store's private address: never through a proxy from the environment.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class KvError(Exception):
    pass


def kv_call(conn, method, key, body=None):
    """One request to kv-store: (status, text). 404 is an answer; other failures raise KvError."""
    host = f"[{conn['host']}]" if ":" in conn["host"] else conn["host"]
    url = f"http://{host}:{conn['port']}/kv/{conn['database']}/{key}"
    token = base64.b64encode(f"{conn['username']}:{conn['password']}".encode()).decode()
    req = urllib.request.Request(url, data=body, method=method, headers={"Authorization": f"Basic {token}"})
    try:
        with OPENER.open(req, timeout=5) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return 404, ""
        raise KvError(f"HTTP {e.code}") from None
    except OSError as e:
        raise KvError(str(getattr(e, "reason", e))) from None


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "kv-web/1"
    config_path: str
    unit: str
    # One round trip at a time in this unit, so no visit of ours is lost.
    lock = threading.Lock()

    def _answer(self, code, lines):
        body = "".join(f"{line}\n" for line in [f"unit {self.unit}", *lines]).encode("utf-8")
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path.split("?", 1)[0] != "/":
            self._answer(404, ["not found"])
            return
        try:
            with open(self.config_path) as f:
                conn = json.load(f)
            if not all(isinstance(conn.get(k), str) and conn[k] for k in KEYS):
                raise ValueError("incomplete")
        except (OSError, ValueError):
            self._answer(503, ["no kv-store"])
            return
        where = f"{conn['host']}:{conn['port']}"
        try:
            with self.lock:
                status, text = kv_call(conn, "GET", "visits")
                visits = (int(text) if status == 200 and text.strip().isdigit() else 0) + 1
                kv_call(conn, "PUT", "visits", str(visits).encode())
        except KvError as e:
            self._answer(502, [f"kv-store error at {where}: {e}"])
            return
        self._answer(
            200,
            [f"connected to kv-store at {where} database {conn['database']} as {conn['username']}; visits={visits}"],
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", required=True, help="the kv connection file the hooks write")
    parser.add_argument("--unit", required=True)
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()

    # Absolute: the daemon leaves the hook's cwd.
    pidfile = os.path.abspath(args.pidfile)
    logfile = os.path.abspath(args.log)
    Handler.config_path = os.path.abspath(args.config)
    Handler.unit = args.unit
    server = http.server.ThreadingHTTPServer((args.bind, args.port), Handler)

    ready_r, ready_w = os.pipe()
    if os.fork() > 0:
        os.close(ready_w)
        ok = os.read(ready_r, 1) == b"1"
        if not ok:
            print(f"server failed to start; see {logfile}", file=sys.stderr)
        sys.exit(0 if ok else 1)

    os.close(ready_r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)

    os.chdir("/")
    os.umask(0o077)
    devnull = os.open(os.devnull, os.O_RDONLY)
    log = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    # Close everything else we inherited, the hook runner's pipes included.
    keep = sorted({0, 1, 2, server.fileno(), ready_w})
    start = 0
    for fd in keep + [os.sysconf("SC_OPEN_MAX")]:
        if start < fd:
            os.closerange(start, fd)
        start = fd + 1

    with open(f"{pidfile}.tmp", "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(f"{pidfile}.tmp", pidfile)

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"kv-web serving on {args.bind}:{args.port} (pid {os.getpid()})", flush=True)
    os.write(ready_w, b"1")
    os.close(ready_w)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
