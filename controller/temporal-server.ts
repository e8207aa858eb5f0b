// Supervises the embedded Temporal dev server (the Temporal CLI's `server start-dev`).
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SEARCH_ATTRIBUTES } from '../workflows/search-attributes.ts';

const projectRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** Finds the Temporal CLI the install step provided. */
export function findTemporalCli(): string {
  if (process.env.TEMPORAL_CLI) return process.env.TEMPORAL_CLI;
  const local = join(projectRoot, 'tools', 'bin', 'temporal');
  if (existsSync(local)) return local;
  const r = spawnSync('sh', ['-c', 'command -v temporal'], { encoding: 'utf8' });
  if (r.status === 0 && r.stdout.trim()) return r.stdout.trim();
  throw new Error(
    'the Temporal CLI was not found: run `npm install` (it builds it into tools/bin), or set TEMPORAL_CLI=/path/to/temporal, or set TEMPORAL_ADDRESS to use an existing cluster',
  );
}

export interface TemporalServerOptions {
  dbFile: string;
  pidFile: string;
  logFile: string;
  port: number;
  uiPort: number;
  namespace: string;
  /** No Web UI (tests). */
  headless?: boolean;
}

export interface TemporalServer {
  address: string;
  uiUrl: string | null;
  /** The dev server's own pid (it changes when the server is restarted). */
  readonly pid: number | undefined;
  /** Down while the server is being restarted after it exited. */
  health(): { ok: boolean; detail?: string };
  /** How many times the server was found dead (a check that spans a restart sees it change). */
  readonly exits: number;
  stop(): Promise<void>;
}

export function waitForPort(host: string, port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolvePromise, reject) => {
    const attempt = () => {
      const sock = connect({ host, port });
      sock.once('connect', () => {
        sock.destroy();
        resolvePromise();
      });
      sock.once('error', () => {
        sock.destroy();
        if (Date.now() > deadline) reject(new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`));
        else setTimeout(attempt, 100);
      });
    };
    attempt();
  });
}

/** Kills a dev server left behind by a controller that died without cleaning up (one from before the guard). */
function killStale(pidFile: string): void {
  if (!existsSync(pidFile)) return;
  const pid = Number.parseInt(readFileSync(pidFile, 'utf8'), 10);
  if (Number.isInteger(pid) && pid > 1) {
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      // its process group: the guard and the server, or the server alone
      const pgid = Number(readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')[2]);
      if (cmdline.includes('start-dev')) process.kill(pgid > 1 ? -pgid : pid, 'SIGTERM');
    } catch {
      // gone already
    }
  }
  rmSync(pidFile, { force: true });
}

/**
 * The guard between the controller and the dev server (python3, which charmflow
 * needs anyway). It asks Linux to SIGTERM it when the controller dies
 * (PR_SET_PDEATHSIG) and to SIGKILL the server when the guard dies; as a fallback
 * (no prctl, or a race at start) it watches its stdin, a pipe from the controller
 * that reaches EOF when the controller is gone, however it died. Told to stop, or
 * on either sign, it SIGTERMs the server and SIGKILLs it 5 s later; it exits with
 * the server's status. It writes the server's own pid to the pid file.
 * argv: controller pid, pid file, server command...
 */
export const GUARD = `
import ctypes, os, signal, sys, threading
controller, pid_file, cmd = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
def pdeathsig(sig):
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(sig), 0, 0, 0)
    except Exception:
        pass
pdeathsig(signal.SIGTERM)
if os.getppid() != controller:
    sys.exit(70)
guard = os.getpid()
server = os.fork()
if server == 0:
    pdeathsig(signal.SIGKILL)
    if os.getppid() != guard:
        os._exit(70)
    os.execvp(cmd[0], cmd)
with open(pid_file + ".tmp", "w") as f:
    f.write(str(server))
os.replace(pid_file + ".tmp", pid_file)
stopping = []
def kill(sig):
    try:
        os.kill(server, sig)
    except ProcessLookupError:
        pass
def stop(*_):
    if stopping:
        return
    stopping.append(1)
    kill(signal.SIGTERM)
    t = threading.Timer(5, kill, [signal.SIGKILL])
    t.daemon = True
    t.start()
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, stop)
def watch():
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    os.kill(guard, signal.SIGTERM)
threading.Thread(target=watch, daemon=True).start()
status = os.waitpid(server, 0)[1]
code = os.waitstatus_to_exitcode(status)
sys.exit(128 - code if code < 0 else code)
`;

let pythonFound: string | null | undefined;
/** The python3 that runs the guard, or null when there is none (the server then runs unguarded). */
export function python(): string | null {
  if (pythonFound === undefined) {
    const candidate = process.env.CHARMFLOW_PYTHON || 'python3';
    pythonFound = spawnSync(candidate, ['-c', ''], { stdio: 'ignore' }).status === 0 ? candidate : null;
  }
  return pythonFound;
}

export interface TemporalServerEvents {
  /** A line for the controller's log: the server died, is restarting, is back. */
  log?: (msg: string) => void;
}

/** Restart delays after an unexpected exit: 1 s doubling to 30 s; back to 1 s after a minute up. */
const RESTART_MIN_MS = 1000;
const RESTART_MAX_MS = 30_000;
const STABLE_MS = 60_000;

export async function startTemporalServer(opts: TemporalServerOptions & TemporalServerEvents): Promise<TemporalServer> {
  const cli = findTemporalCli();
  mkdirSync(dirname(opts.dbFile), { recursive: true });
  killStale(opts.pidFile);
  const args = [
    'server',
    'start-dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(opts.port),
    '--db-filename',
    opts.dbFile,
    '--namespace',
    opts.namespace,
    '--log-level',
    'warn',
    // write-ahead log, synced at checkpoints: durable across a crash of any
    // process, far fewer fsyncs per workflow task than the rollback journal
    '--sqlite-pragma',
    'journal_mode=wal',
    '--sqlite-pragma',
    'synchronous=normal',
    // an activity scheduled by a workflow task goes straight back to the worker
    // that completed it, skipping a round through the task queue
    '--dynamic-config-value',
    'system.enableActivityEagerExecution=true',
  ];
  for (const [name, type] of Object.entries(SEARCH_ATTRIBUTES)) args.push('--search-attribute', `${name}=${type}`);
  if (opts.headless) args.push('--headless');
  else args.push('--ui-port', String(opts.uiPort));
  const log = openSync(opts.logFile, 'a');
  const say = opts.log ?? (() => {});
  const py = python();
  if (!py) say('python3 not found: the Temporal dev server is not guarded against an abrupt end of the controller');

  interface Run {
    child: ChildProcess;
    exited: Promise<NodeJS.Signals | number | null>;
    done: boolean;
  }
  const spawnOnce = (): Run => {
    // Own process group, so stopping it also stops anything it started.
    const child = py
      ? spawn(py, ['-c', GUARD, String(process.pid), opts.pidFile, cli, ...args], {
          stdio: ['pipe', log, log],
          detached: true,
        })
      : spawn(cli, args, { stdio: ['ignore', log, log], detached: true });
    if (!py) writeFileSync(opts.pidFile, String(child.pid));
    const run: Run = {
      child,
      done: false,
      exited: new Promise((r) =>
        child.once('exit', (code, signal) => {
          run.done = true;
          // whatever is left of its group (a server whose guard was killed) goes with it
          try {
            process.kill(-child.pid!, 'SIGKILL');
          } catch {
            // none left
          }
          r(signal ?? code);
        }),
      ),
    };
    // spawn errors (ENOENT) arrive as 'error' and then 'exit'
    child.once('error', (err) => say(`the Temporal dev server could not be started: ${err.message}`));
    return run;
  };
  const ready = async (run: Run): Promise<void> => {
    try {
      await Promise.race([
        waitForPort('127.0.0.1', opts.port, 60_000),
        run.exited.then(() => {
          throw new Error(`the Temporal dev server exited at start; see ${opts.logFile}`);
        }),
      ]);
    } catch (err) {
      try {
        if (!run.done) process.kill(-run.child.pid!, 'SIGKILL');
      } catch {
        // gone meanwhile
      }
      throw err;
    }
  };

  let current = spawnOnce();
  await ready(current);
  let stopping = false;
  let down: string | null = null;
  let exits = 0;
  let wake: (() => void) | undefined;
  const sleep = (ms: number) =>
    new Promise<void>((r) => {
      const t = setTimeout(r, ms);
      wake = () => {
        clearTimeout(t);
        r();
      };
    });
  // Supervision: a server that exits while the controller runs is started again.
  const supervise = async () => {
    let delay = RESTART_MIN_MS;
    let upSince = Date.now();
    while (!stopping) {
      const how = await current.exited;
      if (stopping) return;
      down = `the embedded Temporal dev server exited (${how}); restarting`;
      exits++;
      if (Date.now() - upSince >= STABLE_MS) delay = RESTART_MIN_MS;
      say(`the Temporal dev server exited (${how}); starting it again in ${delay / 1000}s (log: ${opts.logFile})`);
      await sleep(delay);
      if (stopping) return;
      delay = Math.min(delay * 2, RESTART_MAX_MS);
      current = spawnOnce();
      try {
        await ready(current);
        upSince = Date.now();
        down = null;
        say(`the Temporal dev server is up again (pid ${readPid(opts.pidFile) ?? current.child.pid})`);
      } catch (err) {
        say(`the Temporal dev server did not come back: ${(err as Error).message}`);
        await current.exited;
      }
    }
  };
  const supervising = supervise();

  return {
    address: `127.0.0.1:${opts.port}`,
    uiUrl: opts.headless ? null : `http://127.0.0.1:${opts.uiPort}`,
    get pid() {
      return readPid(opts.pidFile) ?? current.child.pid;
    },
    get exits() {
      return exits;
    },
    health() {
      return down === null ? { ok: true } : { ok: false, detail: down };
    },
    async stop() {
      stopping = true;
      wake?.();
      const run = current;
      if (!run.done) {
        try {
          process.kill(-run.child.pid!, 'SIGTERM');
        } catch {
          // already gone
        }
        const timer = setTimeout(() => {
          try {
            process.kill(-run.child.pid!, 'SIGKILL');
          } catch {
            // already gone
          }
        }, 6000);
        await run.exited;
        clearTimeout(timer);
      }
      await supervising;
      rmSync(opts.pidFile, { force: true });
    },
  };
}

function readPid(file: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(file, 'utf8'), 10);
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}
