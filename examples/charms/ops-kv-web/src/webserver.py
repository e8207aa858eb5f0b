#!/usr/bin/env python3
"""The ops-kv-web page (standard library only; the charm starts it detached).

GET / reads the kv connection the charm wrote (a JSON file with host, port,
username, password, database; read on every request, so a relation change
needs no restart), then makes a real round trip to that kv-store: GET the
`visits` key, PUT it back plus one, and answers (text/plain)

    unit ops-kv-web/0
    connected to kv-store at 10.0.0.5:7070 database web as ops-kv-web-3; visits=4

With no usable connection it answers 503 with a line `no kv-store`; if the
kv-store cannot be reached or refuses, 502 with `kv-store error at H:P: why`.
The same page as the kv-web charm's.
"""

import argparse
import base64
import http.server
import json
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
    server_version = "ops-kv-web/1"
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
    parser.add_argument("--config", required=True, help="the kv connection file the charm writes")
    parser.add_argument("--unit", required=True)
    args = parser.parse_args()
    Handler.config_path = args.config
    Handler.unit = args.unit
    server = http.server.ThreadingHTTPServer((args.bind, args.port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"ops-kv-web serving on {args.bind}:{args.port}", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
