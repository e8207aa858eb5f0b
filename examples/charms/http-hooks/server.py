#!/usr/bin/env python3
"""Serve one directory over HTTP as a detached daemon.

The hook that starts it must be able to exit while the server keeps running,
so this binds first (a busy port fails the hook, where someone sees it), then
double-forks into a new session (the hook runner may kill the hook's process
group), points every fd away from the hook's pipes (or the runner would wait
for them to close), writes its pidfile and tells the parent it is serving.
"""

import argparse
import functools
import http.server
import os
import signal
import sys


class Handler(http.server.SimpleHTTPRequestHandler):
    # Keep the page fresh: a config change must show at once.
    def end_headers(self):
        self.send_header("Cache-Control", "no-store")
        super().end_headers()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bind", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--pidfile", required=True)
    parser.add_argument("--log", required=True)
    args = parser.parse_args()

    # Absolute: the daemon leaves the hook's cwd.
    directory = os.path.abspath(args.dir)
    pidfile = os.path.abspath(args.pidfile)
    logfile = os.path.abspath(args.log)
    server = http.server.ThreadingHTTPServer(
        (args.bind, args.port), functools.partial(Handler, directory=directory)
    )

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
    os.umask(0o022)
    devnull = os.open(os.devnull, os.O_RDONLY)
    log = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(devnull, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    sys.stdout = os.fdopen(1, "w", buffering=1)
    sys.stderr = os.fdopen(2, "w", buffering=1)
    keep = sorted({0, 1, 2, server.fileno(), ready_w})
    # Close everything else we inherited, the hook runner's pipes included.
    start = 0
    for fd in keep + [os.sysconf("SC_OPEN_MAX")]:
        if start < fd:
            os.closerange(start, fd)
        start = fd + 1

    tmp = f"{pidfile}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{os.getpid()}\n")
    os.replace(tmp, pidfile)

    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"serving {directory} on {args.bind}:{args.port} (pid {os.getpid()})", flush=True)
    os.write(ready_w, b"1")
    os.close(ready_w)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
