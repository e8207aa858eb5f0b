# charmflow machine-side hook runner (stdlib only, runs with `python3 -S`, >= 3.8).
#
#   python3 -S runner.py < HookContext.json   -> HookEvent JSON lines on stdout
#                                               (one context per line runs those
#                                               hooks in turn; an empty line ends)
#   python3 -S runner.py install-tools BINDIR -> (re)create the hook tool symlinks,
#                                               the launcher they point at and the
#                                               modules' bytecode
#
# runner.py is a thin launcher that imports this module, so the code runs from
# cached bytecode (__pycache__) instead of being compiled on every hook.
#
# Protocol: charm/hook-protocol.ts. Contract: shared/DESIGN.md "The hook runtime".
#
# An empty stdin runs nothing and prints nothing (exit 0): the controller starts
# the runner while it still prepares the context, so the interpreter's start-up
# overlaps that work, and closes stdin empty when the hook is not to run after
# all (an earlier attempt finished it, the unit is gone).
#
# Durability: the hook runs under a detached supervisor (fork + setsid, forked
# as the runner starts and handed the context through a pipe)
# that records everything in <unitDir>/.hooks/<contextId>/:
#   ctx.json      the context (0600), read by the hook tools; it holds secrets
#                 (config, relation data), so it is emptied as soon as the
#                 result is recorded: a retry that re-attaches needs only
#                 result.json (replay) or, while the hook runs, the live dir
#   events.jsonl  one HookEvent per line (output, log, status, ...), appended
#   changes.json  pending changes recorded by the hook tools
#   result.json   the final result event, written atomically (temp + rename)
#   run.lock      flock held by the supervisor while it runs
# This foreground process only tails events.jsonl to stdout until result.json
# exists, so the channel that started it (SSH, a controller worker) may die
# without affecting the hook. Invoked again with the same contextId it either
# replays the stored result (replayed=true) or attaches to the running hook.
import os
import sys

try:
    import _json as _cjson

    class _ScanCtx(object):
        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = None
        memo = {}

        def __init__(self):
            self.parse_constant = {'-Infinity': float('-inf'), 'Infinity': float('inf'), 'NaN': float('nan')}.__getitem__

    _scanner = _cjson.make_scanner(_ScanCtx())
    _enc_str = _cjson.encode_basestring

    def json_loads(s):
        if isinstance(s, bytes):
            s = s.decode('utf-8')
        s = s.strip()
        try:
            value, end = _scanner(s, 0)
        except StopIteration:
            raise ValueError('invalid JSON')
        if end != len(s):
            raise ValueError('extra data after JSON value')
        return value
except Exception:  # pragma: no cover - non-CPython
    import json as _json_mod

    json_loads = _json_mod.loads

    def _enc_str(s):
        return _json_mod.dumps(s, ensure_ascii=False)


def _dump(v, out):
    if v is None:
        out.append('null')
    elif v is True:
        out.append('true')
    elif v is False:
        out.append('false')
    elif isinstance(v, str):
        out.append(_enc_str(v))
    elif isinstance(v, (int, float)):
        out.append(repr(v))
    elif isinstance(v, dict):
        out.append('{')
        first = True
        for k in v:
            if not first:
                out.append(',')
            first = False
            out.append(_enc_str(str(k)))
            out.append(':')
            _dump(v[k], out)
        out.append('}')
    elif isinstance(v, (list, tuple)):
        out.append('[')
        first = True
        for item in v:
            if not first:
                out.append(',')
            first = False
            _dump(item, out)
        out.append(']')
    else:
        out.append(_enc_str(str(v)))


def json_dumps(v):
    out = []
    _dump(v, out)
    return ''.join(out)


TOOL_NAMES = (
    'action-fail', 'action-get', 'action-log', 'action-set', 'application-version-set', 'close-port',
    'config-get', 'goal-state', 'is-leader', 'juju-log', 'leader-get', 'leader-set', 'network-get',
    'open-port', 'opened-ports', 'relation-get', 'relation-ids', 'relation-list', 'relation-model-get',
    'relation-set', 'state-delete', 'state-get', 'state-set', 'status-get', 'status-set', 'unit-get',
    'credential-get', 'secret-add', 'secret-get', 'secret-info-get', 'secret-set', 'secret-grant',
    'secret-revoke', 'secret-remove', 'secret-ids', 'storage-list', 'storage-get', 'storage-add',
    'resource-get', 'juju-reboot', 'add-metric', 'pod-spec-get', 'pod-spec-set', 'k8s-spec-set',
    'k8s-raw-set', 'payload-register', 'payload-status-set', 'payload-unregister',
)

_ID_CHARS = frozenset('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-')
KEEP_DIRS = 20
TAIL_LINES = 20
MAX_LINE = 16384
KILL_GRACE = 1.0
POLL = 0.003


def _signal_mod():
    # `import signal` pulls in enum (~5 ms); the C module has all we use.
    try:
        import _signal
        return _signal
    except ImportError:  # pragma: no cover
        import signal
        return signal


def now_ms():
    import time
    return int(time.time() * 1000)


class BadInput(Exception):
    pass


# ---------------------------------------------------------------- install-tools

def install_tools(bindir):
    here = os.path.dirname(os.path.abspath(__file__))
    tool = os.path.join(here, 'hook_tool.py')
    if not os.path.exists(tool):
        raise BadInput('hook_tool.py not found next to runner.py (%s)' % tool)
    st = os.stat(tool)
    if st.st_mode & 0o111 != 0o111:
        os.chmod(tool, st.st_mode | 0o755)
    precompile(here)
    launcher = write_launcher(here, tool)
    os.makedirs(bindir, exist_ok=True)
    target = os.path.relpath(launcher or tool, os.path.abspath(bindir))
    for name in TOOL_NAMES:
        link = os.path.join(bindir, name)
        try:
            if os.readlink(link) == target:
                continue
        except OSError:
            pass
        tmp = link + '.tmp.%d' % os.getpid()
        try:
            os.unlink(tmp)
        except OSError:
            pass
        os.symlink(target, tmp)
        os.rename(tmp, link)
    if launcher is None:
        # nothing points at an older launcher now
        try:
            os.unlink(os.path.join(here, LAUNCHER))
        except OSError:
            pass


# hook_tool.py with `#!<this interpreter> -SE` for its first line, generated by
# install-tools; the tool symlinks point at it. `#!/usr/bin/env python3` cannot
# pass flags portably, and a tool call without site (-S) and without PYTHON*
# variables (-E: a charm's PYTHONPATH, PYTHONPYCACHEPREFIX) starts sooner, and
# with the interpreter the bytecode in __pycache__ was compiled by.
LAUNCHER = 'hook_tool'


def launcher_shebang():
    exe = sys.executable
    if not exe or not os.path.isabs(exe) or any(c.isspace() for c in exe) or not os.access(exe, os.X_OK):
        return None
    exe = os.fsencode(exe)
    if len(exe) > 120:
        return None  # Linux before 5.1 reads 127 bytes of a shebang line
    return b'#!' + exe + b' -SE\n'


def write_launcher(here, tool):
    """(Re)write <runtime>/hook_tool; returns its path, or None when the tools
    must run hook_tool.py itself (no usable interpreter path, read-only dir)."""
    shebang = launcher_shebang()
    if shebang is None:
        return None
    path = os.path.join(here, LAUNCHER)
    try:
        with open(tool, 'rb') as f:
            body = f.read()
        if body.startswith(b'#!'):
            body = body[body.find(b'\n') + 1:]
        data = shebang + body
        try:
            with open(path, 'rb') as f:
                if f.read() == data:
                    return path
        except OSError:
            pass
        tmp = path + '.tmp.%d' % os.getpid()
        write_file(tmp, data, 0o755)
        os.chmod(tmp, 0o755)
        os.rename(tmp, path)
        return path
    except OSError:
        return None


def tools_need_install(tools_dir):
    """Whether our tools dir (<runtime>/bin) is missing, or its launcher names an
    interpreter that is gone (python3 moved): checked before every hook, a few
    syscalls. Another tools dir is not ours to repair."""
    here = os.path.dirname(os.path.abspath(__file__))
    if os.path.abspath(tools_dir) != os.path.join(here, 'bin'):
        return False
    if not os.path.isdir(tools_dir):
        return True
    try:
        fd = os.open(os.path.join(here, LAUNCHER), os.O_RDONLY)
    except OSError:
        return False  # the tools run hook_tool.py
    try:
        head = os.read(fd, 256)
    finally:
        os.close(fd)
    exe = head[2:].split(b'\n', 1)[0].split(b' ', 1)[0]
    return not head.startswith(b'#!') or not os.access(exe, os.X_OK)


# The modules runner.py and hook_tool.py import: what precompile() caches.
MODULES = ('cf_runner.py', 'cf_hook_tool.py')


def precompile(here):
    """Write the modules' bytecode to __pycache__ now, so the first hook and the
    first tool call do not pay for compiling them. Hash-checked pycs: Python
    compares the source's hash on every import (microseconds) and recompiles on
    any change, whatever the files' mtimes and sizes. Best effort and quiet: a
    read-only dir only costs speed."""
    try:
        import py_compile
        mode = py_compile.PycInvalidationMode.CHECKED_HASH
    except Exception:  # pragma: no cover
        return
    for name in MODULES:
        try:
            py_compile.compile(os.path.join(here, name), doraise=True, invalidation_mode=mode)
        except Exception:
            pass


# ---------------------------------------------------------------- context

def validate(ctx):
    if not isinstance(ctx, dict):
        raise BadInput('HookContext must be a JSON object')
    for key in ('contextId', 'kind', 'name', 'unit', 'application', 'charmDir', 'unitDir', 'toolsDir', 'model'):
        if key not in ctx:
            raise BadInput('HookContext is missing %r' % key)
    cid = ctx['contextId']
    if not isinstance(cid, str) or not cid or cid in ('.', '..') or \
            any(c not in _ID_CHARS for c in cid):
        raise BadInput('invalid contextId %r' % (cid,))
    if ctx['kind'] not in ('hook', 'action'):
        raise BadInput('invalid kind %r' % (ctx['kind'],))
    name = ctx['name']
    if not isinstance(name, str) or not name or '/' in name or name in ('.', '..'):
        raise BadInput('invalid name %r' % (name,))
    if ctx['kind'] == 'action' and not isinstance(ctx.get('action'), dict):
        raise BadInput('action context without "action"')
    for key in ('charmDir', 'unitDir', 'toolsDir'):
        if not isinstance(ctx[key], str) or not os.path.isabs(ctx[key]):
            raise BadInput('%s must be an absolute path' % key)


def hook_env(ctx, hook_dir):
    try:
        import pwd
        home = pwd.getpwuid(os.getuid()).pw_dir
    except Exception:
        home = os.environ.get('HOME', '/')
    kind = ctx['kind']
    name = ctx['name']
    dispatch_path = ('actions/' if kind == 'action' else 'hooks/') + name
    charm_dir = ctx['charmDir']
    env = {
        'PATH': ctx['toolsDir'] + ':/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        'HOME': home,
        'LANG': 'C.UTF-8',
        'JUJU_DISPATCH_PATH': dispatch_path,
        'JUJU_UNIT_NAME': ctx['unit'],
        'JUJU_MODEL_NAME': ctx['model']['name'],
        'JUJU_MODEL_UUID': ctx['model']['uuid'],
        'JUJU_VERSION': ctx.get('jujuVersion') or '3.6.4',
        'JUJU_CHARM_DIR': charm_dir,
        'CHARM_DIR': charm_dir,
        'JUJU_MACHINE_ID': str(ctx.get('machineId', '')),
        'JUJU_AVAILABILITY_ZONE': ctx.get('availabilityZone') or '',
        'JUJU_CONTEXT_ID': ctx['contextId'],
        'JUJU_PRINCIPAL_UNIT': '',
        'CHARMFLOW_HOOK_DIR': hook_dir,
    }
    if kind == 'hook':
        env['JUJU_HOOK_NAME'] = name
    else:
        env['JUJU_ACTION_NAME'] = name
        env['JUJU_ACTION_UUID'] = str(ctx['action'].get('id', ''))
    secret = ctx.get('secretEvent')
    if secret:
        env['JUJU_SECRET_ID'] = secret['id']
        if secret.get('label'):
            env['JUJU_SECRET_LABEL'] = secret['label']
        if secret.get('revision') is not None:
            env['JUJU_SECRET_REVISION'] = str(secret['revision'])
    rel = ctx.get('relation')
    if rel is not None:
        snap = None
        for r in ctx.get('relations') or ():
            if r.get('id') == rel.get('id'):
                snap = r
        endpoint = snap['endpoint'] if snap else ''
        env['JUJU_RELATION'] = endpoint
        env['JUJU_RELATION_ID'] = '%s:%d' % (endpoint, rel['id'])
        remote_app = rel.get('remoteApp')
        if not remote_app and rel.get('remoteUnit'):
            remote_app = rel['remoteUnit'].split('/', 1)[0]
        if not remote_app and snap:
            remote_app = snap.get('remoteApplication')
        if rel.get('remoteUnit'):
            env['JUJU_REMOTE_UNIT'] = rel['remoteUnit']
        if remote_app:
            env['JUJU_REMOTE_APP'] = remote_app
        if rel.get('departingUnit'):
            env['JUJU_DEPARTING_UNIT'] = rel['departingUnit']
    return env


# ---------------------------------------------------------------- files

def write_file(path, data, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        while data:
            n = os.write(fd, data)
            data = data[n:]
    finally:
        os.close(fd)


def write_atomic(path, data):
    # temp + rename: readers see all of it or nothing. No fsync: it costs
    # milliseconds per hook, and an empty result after a power cut is read as
    # an interrupted execution (see load_result).
    tmp = path + '.tmp'
    write_file(tmp, data)
    os.rename(tmp, path)


def read_json(path, default=None):
    try:
        with open(path, 'rb') as f:
            data = f.read()
    except (OSError, IOError):
        return default
    if not data.strip():
        return default
    try:
        return json_loads(data)
    except ValueError:
        return default


def rmtree(path):
    try:
        for root, dirs, files in os.walk(path, topdown=False):
            for f in files:
                try:
                    os.unlink(os.path.join(root, f))
                except OSError:
                    pass
            for d in dirs:
                p = os.path.join(root, d)
                try:
                    if os.path.islink(p):
                        os.unlink(p)
                    else:
                        os.rmdir(p)
                except OSError:
                    pass
        os.rmdir(path)
    except OSError:
        pass


def cleanup(hooks_dir, keep_name):
    """Remove execution dirs older than the newest KEEP_DIRS (never a running one)."""
    import fcntl
    import time
    entries = []
    try:
        names = os.listdir(hooks_dir)
    except OSError:
        return
    now = time.time()
    for n in names:
        p = os.path.join(hooks_dir, n)
        if n == keep_name or not os.path.isdir(p) or os.path.islink(p):
            continue
        try:
            mtime = os.stat(p).st_mtime
        except OSError:
            continue
        if n.startswith('.tmp-'):
            # an abandoned staging dir (its creator died before the rename)
            if now - mtime > 3600:
                rmtree(p)
            continue
        entries.append((mtime, n, p))
    entries.sort(reverse=True)
    for mtime, n, p in entries[KEEP_DIRS - 1:]:
        lock = os.path.join(p, 'run.lock')
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            fd = None
        try:
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its supervisor still runs
            rmtree(p)
        finally:
            if fd is not None:
                os.close(fd)


# ---------------------------------------------------------------- supervisor

class Recorder(object):
    def __init__(self, hook_dir):
        self.fd = os.open(os.path.join(hook_dir, 'events.jsonl'), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self.tail = []

    def output(self, stream, line):
        if len(self.tail) >= TAIL_LINES:
            del self.tail[0]
        self.tail.append(line)
        ev = '{"type":"output","ts":%d,"stream":"%s","line":%s}\n' % (now_ms(), stream, _enc_str(line))
        os.write(self.fd, ev.encode('utf-8', 'replace'))


def find_executable(ctx):
    charm_dir = ctx['charmDir']
    dispatch = os.path.join(charm_dir, 'dispatch')
    if os.path.exists(dispatch):
        return dispatch
    sub = 'actions' if ctx['kind'] == 'action' else 'hooks'
    path = os.path.join(charm_dir, sub, ctx['name'])
    if os.path.exists(path):
        return path
    return None


def run_hook(ctx, hook_dir, rec):
    """Runs the hook; returns (exitCode or None, timedOut, skipped)."""
    import select
    import time
    signal = _signal_mod()
    exe = find_executable(ctx)
    if exe is None:
        return 0, False, True
    env = hook_env(ctx, hook_dir)
    # SIGCHLD writes to wake_w, so poll() below notices the exit at once even
    # when something the hook left behind still holds its output pipes.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, _ignore_signal)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = spawn_hook(exe, env, ctx['charmDir'], out_w, err_w, signal)
    except OSError as e:
        for fd in (out_r, out_w, err_r, err_w):
            os.close(fd)
        _restore_sigchld(signal, wake_r, wake_w)
        rec.output('stderr', 'charmflow: cannot run hook: %s: %s' % (exe, e))
        return 126, False, False
    os.close(out_w)
    os.close(err_w)

    timeout = float(ctx.get('timeoutSeconds') or 3600)
    start = time.monotonic()
    deadline = start + timeout
    poller = select.poll()
    bufs = {out_r: b'', err_r: b''}
    names = {out_r: 'stdout', err_r: 'stderr'}
    open_fds = set([out_r, err_r])
    for fd in open_fds:
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
    poller.register(wake_r, select.POLLIN)
    status = None
    timed_out = False
    kill_at = None
    drain_until = None

    def flush_lines(fd, final=False):
        data = bufs[fd]
        while True:
            k = data.find(b'\n')
            if k < 0:
                break
            line, data = data[:k], data[k + 1:]
            if line.endswith(b'\r'):
                line = line[:-1]
            # a long line that ends in this read is cut like one still open
            while len(line) > MAX_LINE:
                rec.output(names[fd], line[:MAX_LINE].decode('utf-8', 'replace'))
                line = line[MAX_LINE:]
            rec.output(names[fd], line.decode('utf-8', 'replace'))
        while len(data) > MAX_LINE:
            rec.output(names[fd], data[:MAX_LINE].decode('utf-8', 'replace'))
            data = data[MAX_LINE:]
        if final and data:
            rec.output(names[fd], data.decode('utf-8', 'replace'))
            data = b''
        bufs[fd] = data

    while True:
        if status is None:
            wpid, st = os.waitpid(pid, os.WNOHANG)
            if wpid == pid:
                status = st
                # Output still buffered in the pipes is read below; background
                # processes the hook left holding them get a short grace only.
                drain_until = time.monotonic() + 0.2
        now = time.monotonic()
        if status is not None and (not open_fds or now >= drain_until):
            break
        if status is None and not timed_out and now >= deadline:
            timed_out = True
            try:
                os.killpg(pid, signal.SIGTERM)
            except OSError:
                pass
            kill_at = now + KILL_GRACE
        if kill_at is not None and now >= kill_at:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            kill_at = None
        if status is not None:
            wait = drain_until - now
        elif kill_at is not None:
            wait = kill_at - now
        elif timed_out:
            wait = 1.0  # the group was killed; SIGCHLD wakes us
        else:
            wait = deadline - now
        events = poller.poll(max(0, min(int(wait * 1000) + 1, 1000)))
        for fd, ev in events:
            if fd == wake_r:
                try:
                    os.read(wake_r, 512)
                except OSError:
                    pass
                continue
            chunk = b''
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                pass
            if chunk:
                bufs[fd] += chunk
                flush_lines(fd)
            else:
                poller.unregister(fd)
                open_fds.discard(fd)
                flush_lines(fd, final=True)
                os.close(fd)
    _restore_sigchld(signal, wake_r, wake_w)
    for fd in list(open_fds):
        flush_lines(fd, final=True)
    if open_fds:
        # Something the hook started (a daemon) still holds its stdout/stderr.
        # Closing our ends would kill it with SIGPIPE on its next write, so a
        # small detached sink keeps reading them until it lets go.
        sink(list(open_fds))
    if timed_out:
        # the whole group goes, including what the hook left behind
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass
    if os.WIFEXITED(status) and not timed_out:
        return os.WEXITSTATUS(status), False, False
    return None, timed_out, False


_HOOK_DEFAULT_SIGNALS = ('SIGPIPE', 'SIGHUP', 'SIGINT', 'SIGTERM', 'SIGCHLD')


def spawn_hook(exe, env, cwd, out_w, err_w, signal):
    """Start the hook: a session of its own, cwd the charm dir, stdin /dev/null,
    stdout and stderr into the pipes, default signal dispositions. posix_spawn
    (no copy of this process) where the platform has it, else fork + exec. An
    exec that fails raises OSError."""
    sigs = [getattr(signal, n) for n in _HOOK_DEFAULT_SIGNALS if hasattr(signal, n)]
    spawn = getattr(os, 'posix_spawn', None)
    if spawn is not None and hasattr(os, 'POSIX_SPAWN_DUP2'):
        os.chdir(cwd)  # the supervisor has no use for its own cwd
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1),
            (os.POSIX_SPAWN_DUP2, err_w, 2),
        ]
        try:
            return spawn(exe, [exe], env, file_actions=actions, setsid=True, setsigdef=sigs)
        except NotImplementedError:
            pass  # no POSIX_SPAWN_SETSID in this libc
    exec_r, exec_w = os.pipe()  # close-on-exec: EOF means exec succeeded
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            signal.set_wakeup_fd(-1)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for s in sigs:
                signal.signal(s, signal.SIG_DFL)
            os.chdir(cwd)
            os.execve(exe, [exe], env)
        except BaseException as e:
            try:
                os.write(exec_w, str(e).encode('utf-8', 'replace'))
            except BaseException:
                pass
        os._exit(127)
    os.close(exec_w)
    exec_err = read_all(exec_r)
    os.close(exec_r)
    if exec_err:
        os.waitpid(pid, 0)
        raise OSError(exec_err.decode('utf-8', 'replace'))
    return pid


def _ignore_signal(signum, frame):
    pass


def _restore_sigchld(signal, wake_r, wake_w):
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    os.close(wake_r)
    os.close(wake_w)


def sink(fds):
    """Read fds until EOF in a detached grandchild; close them here."""
    import select
    pid = os.fork()
    if pid == 0:
        try:
            if os.fork() != 0:
                os._exit(0)
            close_inherited(fds)
            poller = select.poll()
            for fd in fds:
                poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            left = set(fds)
            while left:
                for fd, _ in poller.poll():
                    try:
                        data = os.read(fd, 65536)
                    except OSError:
                        data = b''
                    if not data:
                        poller.unregister(fd)
                        left.discard(fd)
        finally:
            os._exit(0)
    for fd in fds:
        os.close(fd)
    os.waitpid(pid, 0)


def build_changes(ctx, hook_dir):
    ch = read_json(os.path.join(hook_dir, 'changes.json'), {}) or {}
    ports = ch.get('ports')
    if ports is None:
        ports = list(ctx.get('ports') or [])
    changes = {
        'relationSettings': ch.get('relationSettings') or {},
        'leaderSettings': ch.get('leaderSettings') or {},
        'charmState': ch.get('charmState') or {},
        'ports': ports,
        'actionResults': ch.get('actionResults') or {},
        'actionFailed': ch.get('actionFailed'),
    }
    if ch.get('secretOps'):
        # content in it is sealed under the hook's key (see cf_hook_tool.seal_content)
        changes['secretOps'] = ch['secretOps']
    return changes


def result_event(exit_code, skipped, timed_out, duration_ms, tail, changes, replayed=False):
    return {
        'type': 'result',
        'ts': now_ms(),
        'exitCode': exit_code,
        'skipped': skipped,
        'replayed': replayed,
        'timedOut': timed_out,
        'durationMs': duration_ms,
        'tail': tail,
        'changes': changes,
    }


def machine_lock_path(ctx):
    # <root>/units/<app>-<n> -> <root>/machine.lock
    return os.path.join(os.path.dirname(os.path.dirname(ctx['unitDir'])), 'machine.lock')


def supervise(ctx, hook_dir, run_lock_fd, done_w):
    """In the detached supervisor: run the hook once and record its result."""
    import fcntl
    import time
    hooks_dir = os.path.dirname(hook_dir)
    unit_lock = os.open(os.path.join(hooks_dir, 'unit.lock'), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(unit_lock, fcntl.LOCK_EX)  # one hook at a time per unit
    # Juju's machine lock: hooks of units sharing a machine never run at once
    # (two charms' apt-get would fight over dpkg's lock). Both fds are
    # close-on-exec, so a daemon a hook leaves behind never holds them.
    waiting = time.monotonic()
    machine_lock = os.open(machine_lock_path(ctx), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(machine_lock, fcntl.LOCK_EX)
    rec = Recorder(hook_dir)
    start = time.monotonic()
    lock_wait_ms = int((start - waiting) * 1000)
    try:
        code, timed_out, skipped = run_hook(ctx, hook_dir, rec)
    except Exception as e:  # a runner bug: still produce a result
        rec.output('stderr', 'charmflow: runner error: %s' % e)
        code, timed_out, skipped = None, False, False
    duration = int((time.monotonic() - start) * 1000)
    os.close(machine_lock)
    if timed_out:
        rec.output('stderr', 'charmflow: hook timed out after %ss; process group killed' % ctx.get('timeoutSeconds'))
    result = result_event(code, skipped, timed_out, duration, list(rec.tail), build_changes(ctx, hook_dir))
    result['lockWaitMs'] = lock_wait_ms
    write_atomic(os.path.join(hook_dir, 'result.json'), json_dumps(result).encode('utf-8'))
    forget_context(hook_dir)
    os.close(rec.fd)
    os.close(unit_lock)
    try:
        os.close(done_w)  # wakes the foreground at once
    except OSError:
        pass
    cleanup(hooks_dir, os.path.basename(hook_dir))
    os.close(run_lock_fd)


def forget_context(hook_dir):
    """Empty the context (it holds secrets) once the result is recorded: from
    then on every invocation for this context replays result.json, and nothing
    else reads it. Hook tools run after the hook (a daemon it left) fail.

    Emptied, not removed: on an ext4 without a journal, a new inode is not taken
    from those freed in the last seconds (minutes while their table block is
    dirty), and each allocation walks past every one of them. A file removed per
    hook made every file a busy machine's hooks created slower (at 1000 local
    units, ~7% of the host's CPU went to that walk)."""
    try:
        os.truncate(os.path.join(hook_dir, 'ctx.json'), 0)
    except OSError:
        pass


def close_inherited(keep):
    """Close every inherited fd but 0-2 and keep: the supervisor must not hold
    the caller's channel (an SSH session, a worker's pipes) open."""
    try:
        fds = [int(n) for n in os.listdir('/proc/self/fd')]
    except OSError:
        fds = range(3, 256)
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def execution_dirs(ctx):
    """<unitDir>/.hooks, and the execution dir of this context in it."""
    hooks_dir = os.path.join(ctx['unitDir'], '.hooks')
    return hooks_dir, os.path.join(hooks_dir, ctx['contextId'])


def claim(ctx, ctx_bytes):
    """Stage the execution dir and claim it (rename into place). Returns the held
    run lock, or None when another invocation claimed it first."""
    import fcntl
    hooks_dir, hook_dir = execution_dirs(ctx)
    staging = os.path.join(hooks_dir, '.tmp-%s-%d' % (ctx['contextId'], os.getpid()))
    os.mkdir(staging, 0o700)
    write_file(os.path.join(staging, 'ctx.json'), ctx_bytes, 0o600)
    write_file(os.path.join(staging, 'events.jsonl'), b'', 0o600)
    # held from before the claim until the supervisor exits
    lock_fd = os.open(os.path.join(staging, 'run.lock'), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        os.rename(staging, hook_dir)
    except OSError:
        os.close(lock_fd)
        rmtree(staging)
        return None
    return lock_fd


def read_all(fd):
    data = b''
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            return data
        data += chunk


class Supervisor(object):
    """The supervisor, forked as soon as the runner starts, before its context
    arrives: when the controller starts the runner early, the fork is done by
    the time the hook is due. Detached at once (a session of its own, none of the
    channel's fds), it waits for the context on a pipe. Given one, it claims the
    execution dir and runs the hook; given nothing, it exits."""

    def __init__(self):
        ctx_r, self.ctx_w = os.pipe()
        self.answer_r, answer_w = os.pipe()
        self.done_r, done_w = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                signal = _signal_mod()
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.signal(signal.SIGPIPE, signal.SIG_IGN)
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                devnull = os.open(os.devnull, os.O_RDWR)
                os.dup2(devnull, 0)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                os.close(devnull)
                close_inherited((ctx_r, answer_w, done_w))
                ctx_bytes = read_all(ctx_r)
                os.close(ctx_r)
                if ctx_bytes:
                    ctx = json_loads(ctx_bytes)
                    try:
                        lock_fd = claim(ctx, ctx_bytes)
                    except Exception as e:
                        os.write(answer_w, ('E%s' % e).encode('utf-8', 'replace'))
                        os._exit(1)
                    os.write(answer_w, b'1' if lock_fd is not None else b'0')
                    os.close(answer_w)
                    if lock_fd is not None:
                        supervise(ctx, execution_dirs(ctx)[1], lock_fd, done_w)
            except BaseException:
                os._exit(1)
            os._exit(0)
        os.close(ctx_r)
        os.close(answer_w)
        os.close(done_w)

    def start(self, ctx_bytes):
        """Hands the context over. Returns a fd that becomes readable (EOF) when
        the hook is done, or None when another invocation claimed the run first."""
        try:
            emit_to(self.ctx_w, ctx_bytes)
        except OSError:
            pass  # it died: its answer says so
        os.close(self.ctx_w)
        self.ctx_w = None
        answer = read_all(self.answer_r)
        os.close(self.answer_r)
        self.answer_r = None
        done_r, self.done_r = self.done_r, None
        if answer == b'1':
            return done_r
        os.close(done_r)
        if answer[:1] == b'E':
            raise OSError('cannot stage the hook: %s' % answer[1:].decode('utf-8', 'replace'))
        if answer != b'0':
            raise OSError('the hook supervisor died before it started the hook')
        return None

    def dismiss(self):
        """No hook for it to run: it exits."""
        for name in ('ctx_w', 'answer_r', 'done_r'):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)


# ---------------------------------------------------------------- foreground

def emit_to(fd, data):
    while data:
        n = os.write(fd, data)
        data = data[n:]


def emit(data):
    emit_to(1, data)


def lock_is_free(hook_dir):
    import fcntl
    try:
        fd = os.open(os.path.join(hook_dir, 'run.lock'), os.O_RDWR)
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return fd  # keep it held while we decide
    except OSError:
        os.close(fd)
        return False


def tail(hook_dir, done_fd):
    """Copy events.jsonl to stdout until result.json exists, then print the result."""
    import select
    import time
    result_path = os.path.join(hook_dir, 'result.json')
    ev_fd = None
    pending = b''
    last_check = last_data = time.monotonic()
    while True:
        finished = os.path.exists(result_path)
        if ev_fd is None:
            try:
                ev_fd = os.open(os.path.join(hook_dir, 'events.jsonl'), os.O_RDONLY)
            except OSError:
                ev_fd = None
        if ev_fd is not None:
            while True:
                chunk = os.read(ev_fd, 65536)
                if not chunk:
                    break
                pending += chunk
                last_data = time.monotonic()
                k = pending.rfind(b'\n')
                if k >= 0:
                    emit(pending[:k + 1])
                    pending = pending[k + 1:]
        if finished:
            break
        # poll fast while events flow, slower (up to 50 ms) when the hook is quiet
        quiet = time.monotonic() - last_data
        interval = POLL if quiet < 1.0 else min(0.05, POLL * (1 + quiet))
        if done_fd is not None:
            r, _, _ = select.select([done_fd], [], [], interval)
            if r:
                os.close(done_fd)
                done_fd = None
        else:
            time.sleep(interval)
            now = time.monotonic()
            if now - last_check > 0.5:
                last_check = now
                held = lock_is_free(hook_dir)
                if held is not False and not os.path.exists(result_path):
                    # the supervisor died without a result (machine restart, kill -9)
                    interrupted(hook_dir, held)
                elif held not in (True, False):
                    os.close(held)
    if ev_fd is not None:
        os.close(ev_fd)
    if done_fd is not None:
        os.close(done_fd)
    result = read_json(result_path)
    if result is None:
        result = result_event(None, False, False, 0, ['charmflow: the stored result is unreadable'],
                              build_changes({}, hook_dir))
    emit((json_dumps(result) + '\n').encode('utf-8'))


def interrupted(hook_dir, held_fd):
    ctx = read_json(os.path.join(hook_dir, 'ctx.json'), {}) or {}
    msg = 'charmflow: hook execution was interrupted (its supervisor died); not run again'
    try:
        fd = os.open(os.path.join(hook_dir, 'events.jsonl'), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, ('{"type":"output","ts":%d,"stream":"stderr","line":%s}\n'
                          % (now_ms(), _enc_str(msg))).encode('utf-8'))
        finally:
            os.close(fd)
    except OSError:
        pass
    result = result_event(None, False, False, 0, [msg], build_changes(ctx, hook_dir))
    write_atomic(os.path.join(hook_dir, 'result.json'), json_dumps(result).encode('utf-8'))
    forget_context(hook_dir)
    if held_fd not in (True, False):
        os.close(held_fd)


class ContextReader(object):
    """The contexts of the hooks to run, in order, from stdin: one JSON document per
    line. An empty line, or the end of stdin, means there are no more (a channel
    may keep stdin open, so the controller says so with an empty line). A single
    document without a newline, up to EOF, is one context too."""

    def __init__(self):
        self.buf = b''
        self.eof = False

    def next(self):
        while True:
            nl = self.buf.find(b'\n')
            if nl >= 0:
                line, self.buf = self.buf[:nl], self.buf[nl + 1:]
                return line
            if self.eof:
                line, self.buf = self.buf, b''
                return line
            if self.buf.rstrip().endswith(b'}'):
                try:
                    json_loads(self.buf)
                    line, self.buf = self.buf, b''
                    return line
                except Exception:
                    pass
            chunk = os.read(0, 65536)
            if chunk:
                self.buf += chunk
            else:
                self.eof = True


def run(stdin_bytes, supervisor):
    try:
        ctx = json_loads(stdin_bytes)
    except Exception as e:
        raise BadInput('HookContext is not valid JSON: %s' % e)
    validate(ctx)
    if tools_need_install(ctx['toolsDir']):
        install_tools(ctx['toolsDir'])  # self-heal (see tools_need_install)
    hooks_dir, hook_dir = execution_dirs(ctx)
    try:
        os.makedirs(hooks_dir, 0o700)
    except OSError:
        if not os.path.isdir(hooks_dir):
            raise
    result_path = os.path.join(hook_dir, 'result.json')
    if os.path.exists(result_path):
        replay(result_path)
        return
    done_fd = None
    if not os.path.isdir(hook_dir):
        done_fd = supervisor.start(stdin_bytes)
    if done_fd is None:
        # attach to (or recover) an execution started by an earlier invocation
        if os.path.exists(result_path):
            replay(result_path)
            return
        held = lock_is_free(hook_dir)
        if held is not False:
            if not os.path.exists(result_path):
                interrupted(hook_dir, held)
            elif held is not True:
                os.close(held)
    tail(hook_dir, done_fd)


def reap_children():
    """Supervisors of hooks that ended (each detached itself, but is still our child)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def replay(result_path):
    result = read_json(result_path)
    if result is None:
        # only after a machine crash right after the hook finished
        result = result_event(None, False, False, 0, ['charmflow: the stored result is unreadable'],
                              build_changes({}, os.path.dirname(result_path)))
    result['replayed'] = True
    result['ts'] = now_ms()
    emit((json_dumps(result) + '\n').encode('utf-8'))


def main(argv):
    try:
        if len(argv) >= 2 and argv[1] == 'install-tools':
            if len(argv) != 3:
                sys.stderr.write('usage: runner.py install-tools <bindir>\n')
                return 2
            install_tools(argv[2])
            return 0
        if len(argv) > 1:
            sys.stderr.write('usage: runner.py < HookContext.json | runner.py install-tools <bindir>\n')
            return 2
        # One hook after another, as long as the controller sends contexts: each
        # has its own supervisor, forked while the controller builds its context.
        contexts = ContextReader()
        supervisor = Supervisor()
        try:
            while True:
                ctx_bytes = contexts.next()
                if not ctx_bytes.strip():
                    break  # no (more) hooks: withdrawn, or the batch is done
                run(ctx_bytes, supervisor)
                supervisor.dismiss()
                reap_children()
                supervisor = Supervisor()
        finally:
            supervisor.dismiss()
        # Everything went out with os.write; skip the interpreter's teardown
        # (a few ms on every hook) while the controller waits for the exit.
        sys.stderr.flush()
        os._exit(0)
    except BadInput as e:
        sys.stderr.write('charmflow runner: %s\n' % e)
        return 2
    except BrokenPipeError:
        return 1
    except Exception as e:
        import traceback
        traceback.print_exc()
        sys.stderr.write('charmflow runner: internal error: %s\n' % e)
        return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv))
