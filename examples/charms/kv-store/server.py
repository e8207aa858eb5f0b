#!/usr/bin/env python3
"""A small key-value HTTP server with basic auth, run as a detached daemon.

    PUT /kv/<database>/<key>   body = value     -> 204
    GET /kv/<database>/<key>                    -> 200 value, or 404
    GET /                                       -> 200 "kv-store" (no auth; a liveness probe)

A request without valid credentials gets 401; a user touching a database
other than its own gets 403. Users live in a JSON file, {"user": {"sha256":
hex of the password, "database": name}}, which the hooks rewrite; it is read
again whenever it changes (checked on every request), so no restart is
needed. Each database is one JSON file under --data.

The hook that starts the server must be able to exit while the server keeps
running, so this binds first (a busy port fails the hook, where someone sees
it), then double-forks into a new session (the hook runner may kill the
hook's process group), points every fd away from the hook's pipes (or the
runner would wait for them to close), writes its pidfile and tells the parent
it is serving.
"""

import argparse
import base64
import binascii
import hashlib
import hmac
import http.server
import json
import os
import re
import signal
import sys
import threading

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_VALUE = 1 << 20


class Users:
    """The users file, loaded again when its inode, mtime or size changes."""

    def __init__(self, path):
        self.path = path
        self.sig = None
        self.users = {}
        self.lock = threading.Lock()

    def current(self):
        try:
            st = os.stat(self.path)
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            sig = None
        with self.lock:
            if sig != self.sig:
                try:
                    with open(self.path) as f:
                        self.users = json.load(f) if sig else {}
                except (OSError, ValueError) as e:
                    print(f"cannot read users file: {e}", file=sys.stderr, flush=True)
                    self.users = {}
                self.sig = sig
            return self.users

    def check(self, header):
        """The user's record for an `Authorization: Basic ...` header, or None."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        record = self.current().get(user)
        if not isinstance(record, dict):
            return None
        given = hashlib.sha256(password.encode("utf-8")).hexdigest()
        if not hmac.compare_digest(given, str(record.get("sha256", ""))):
            return None
        return record


class Store:
    def __init__(self, directory):
        self.dir = directory
        self.lock = threading.Lock()

    def _load(self, database):
        try:
            with open(os.path.join(self.dir, f"{database}.json")) as f:
                return json.load(f)
        except FileNotFoundError:
            return {}

    def get(self, database, key):
        with self.lock:
            return self._load(database).get(key)

    def put(self, database, key, value):
        with self.lock:
            data = self._load(database)
            data[key] = value
            path = os.path.join(self.dir, f"{database}.json")
            with open(f"{path}.tmp", "w") as f:
                json.dump(data, f)
            os.replace(f"{path}.tmp", path)


class Handler(http.server.BaseHTTPRequestHandler):
    server_version = "kv-store/1"
    users: Users
    store: Store

    def _send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _target(self):
        """(record, database, key) for an authorized /kv/<db>/<key>, or None after answering."""
        parts = self.path.split("?", 1)[0].split("/")
        if len(parts) != 4 or parts[:2] != ["", "kv"] or not NAME.match(parts[2]) or not NAME.match(parts[3]):
            self._send(404, b"not found\n")
            return None
        record = self.users.check(self.headers.get("Authorization"))
        if record is None:
            self._send(401, b"unauthorized\n", [("WWW-Authenticate", 'Basic realm="kv-store"')])
            return None
        if record.get("database") != parts[2]:
            self._send(403, b"forbidden: not your database\n")
            return None
        return record, parts[2], parts[3]

    def do_GET(self):
        if self.path == "/":
            self._send(200, b"kv-store\n")
            return
        target = self._target()
        if target is None:
            return
        value = self.store.get(target[1], target[2])
        if value is None:
            self._send(404, b"no such key\n")
        else:
            self._send(200, value.encode("utf-8"))

    def do_PUT(self):
        target = self._target()
        if target is None:
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_VALUE:
            self._send(413, b"value too large\n")
            return
        try:
            value = self.rfile.read(length).decode("utf-8")
        except UnicodeDecodeError:
            self._send(400, b"value must be UTF-8 text\n")
            return
        self.store.put(target[1], target[2], value)
        self._send(204)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--users", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()

    # Absolute: the daemon leaves the hook's cwd.
    pidfile = os.path.abspath(args.pidfile)
    logfile = os.path.abspath(args.log)
    os.makedirs(args.data, exist_ok=True)
    Handler.users = Users(os.path.abspath(args.users))
    Handler.store = Store(os.path.abspath(args.data))
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
    print(f"kv-store serving on {args.bind}:{args.port} (pid {os.getpid()})", flush=True)
    os.write(ready_w, b"1")
    os.close(ready_w)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
