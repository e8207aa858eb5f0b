#!/usr/bin/env python3
"""Starts the local cloud's commands on the controller's behalf.

Forking the controller itself copies the page tables of a process of several
hundred megabytes: tens of milliseconds of its main thread per hook. This small
process forks instead (vfork through subprocess), so the controller only moves
bytes over a pipe. It also drops to a machine's own uid and gid when told to.

Frames both ways: 4-byte big-endian length of what follows, 1-byte type, 4-byte
big-endian id, payload.
  controller -> spawner: S spawn (JSON: command, cwd, env, uid, gid, umask),
                         I stdin bytes, E close stdin, D drop output pipes
  spawner -> controller: P started (JSON: pid), F could not start (message),
                         O stdout bytes, R stderr bytes, X exited (JSON: code,
                         signal), C both output pipes closed

The spawner exits when its stdin closes; the commands it started live on in
their own sessions (a hook's supervisor is re-attached to by the next worker).
"""

import json
import os
import selectors
import signal
import struct
import subprocess
import sys

HEADER = struct.Struct(">IBI")
READ_SIZE = 65536


class Child:
    __slots__ = ("id", "proc", "open_pipes", "exited", "pending", "eof")

    def __init__(self, cid, proc):
        self.id = cid
        self.proc = proc
        self.open_pipes = 2
        self.exited = False
        # stdin not yet taken by the command, and whether to close it after
        self.pending = bytearray()
        self.eof = False


def main():
    out_fd = sys.stdout.fileno()
    in_fd = sys.stdin.fileno()
    os.set_blocking(out_fd, True)
    sel = selectors.DefaultSelector()
    children = {}
    by_pid = {}

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    sel.register(wake_r, selectors.EVENT_READ, ("wake", None))
    sel.register(in_fd, selectors.EVENT_READ, ("in", None))

    def send(kind, cid, payload=b""):
        data = HEADER.pack(len(payload) + 5, kind, cid) + payload
        view = memoryview(data)
        while view:
            n = os.write(out_fd, view)
            view = view[n:]

    def close_pipe(child, stream):
        try:
            sel.unregister(stream)
        except (KeyError, ValueError):
            pass
        stream.close()
        child.open_pipes -= 1
        finish_if_done(child)

    def finish_if_done(child):
        if child.open_pipes == 0 and child.exited:
            close_stdin(child)
            send(ord("C"), child.id)
            children.pop(child.id, None)

    def reap():
        for child in list(children.values()):
            if child.exited:
                continue
            code = child.proc.poll()
            if code is None:
                continue
            child.exited = True
            by_pid.pop(child.proc.pid, None)
            status = {"code": code, "signal": None} if code >= 0 else {"code": None, "signal": -code}
            send(ord("X"), child.id, json.dumps(status).encode())
            finish_if_done(child)

    def spawn(cid, spec):
        uid = spec.get("uid")
        gid = spec.get("gid")
        umask = spec.get("umask", -1)
        try:
            proc = subprocess.Popen(
                ["sh", "-c", spec["command"]],
                cwd=spec.get("cwd") or None,
                env=spec.get("env") or {},
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
                close_fds=True,
                user=uid,
                group=gid,
                extra_groups=[] if uid is not None else None,
                umask=umask,
            )
        except OSError as e:
            send(ord("F"), cid, str(e).encode("utf-8", "replace"))
            return
        child = Child(cid, proc)
        children[cid] = child
        by_pid[proc.pid] = child
        os.set_blocking(proc.stdin.fileno(), False)
        for stream, kind in ((proc.stdout, "O"), (proc.stderr, "R")):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream, selectors.EVENT_READ, ("pipe", (child, kind)))
        send(ord("P"), cid, json.dumps({"pid": proc.pid}).encode())

    def close_stdin(child):
        stdin = child.proc.stdin
        if stdin is None:
            return
        try:
            sel.unregister(stdin)
        except (KeyError, ValueError):
            pass
        try:
            stdin.close()
        except OSError:
            pass
        child.proc.stdin = None
        child.pending.clear()

    def flush_stdin(child):
        # never block on a command that does not read its input
        stdin = child.proc.stdin
        if stdin is None:
            return
        while child.pending:
            try:
                n = os.write(stdin.fileno(), child.pending)
            except BlockingIOError:
                break
            except OSError:
                close_stdin(child)
                return
            del child.pending[:n]
        waiting = bool(child.pending)
        registered = stdin.fileno() in sel.get_map()
        if waiting and not registered:
            sel.register(stdin, selectors.EVENT_WRITE, ("stdin", child))
        elif not waiting and registered:
            sel.unregister(stdin)
        if not waiting and child.eof:
            close_stdin(child)

    def handle(kind, cid, payload):
        if kind == ord("S"):
            spawn(cid, json.loads(payload))
            return
        child = children.get(cid)
        if child is None:
            return
        if kind == ord("I"):
            if child.proc.stdin is not None:
                child.pending += payload
                flush_stdin(child)
        elif kind == ord("E"):
            child.eof = True
            flush_stdin(child)
        elif kind == ord("D"):
            for stream in (child.proc.stdout, child.proc.stderr):
                if stream is not None and not stream.closed:
                    close_pipe(child, stream)

    buf = bytearray()
    while True:
        for key, _ in sel.select():
            what, data = key.data
            if what == "wake":
                try:
                    while os.read(wake_r, 4096):
                        pass
                except BlockingIOError:
                    pass
                reap()
            elif what == "in":
                chunk = os.read(in_fd, READ_SIZE)
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 4:
                    (length,) = struct.unpack_from(">I", buf, 0)
                    if len(buf) < 4 + length:
                        break
                    kind = buf[4]
                    (cid,) = struct.unpack_from(">I", buf, 5)
                    payload = bytes(buf[9 : 4 + length])
                    del buf[: 4 + length]
                    handle(kind, cid, payload)
            elif what == "stdin":
                flush_stdin(data)
            elif what == "pipe":
                child, kind = data
                stream = key.fileobj
                try:
                    chunk = os.read(stream.fileno(), READ_SIZE)
                except BlockingIOError:
                    continue
                if chunk:
                    send(ord(kind), child.id, chunk)
                else:
                    close_pipe(child, stream)
        # a child may exit between wake-ups without its SIGCHLD being seen yet
        if by_pid and any(c.open_pipes == 0 and not c.exited for c in children.values()):
            reap()


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        pass
