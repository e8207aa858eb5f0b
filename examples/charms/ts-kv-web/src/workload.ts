// The web server process, as the charm drives it. An interface, so the charm's
// harness tests can swap in an in-memory one; NodeWorkload is the real thing.
import { spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import path from 'node:path';
import { type KvConnection, kvCall, readConnection } from './kv-client.ts';

export interface Workload {
  /** Writes (or, with null, removes) the connection the server reads on every request. */
  setConnection(conn: KvConnection | null): void;
  connection(): KvConnection | null;
  /** True while our server process runs. */
  running(): boolean;
  /** Starts the server on address:port and waits until it listens. */
  start(address: string, port: number): Promise<void>;
  stop(): Promise<void>;
  /** Removes everything the workload keeps (the remove hook). */
  purge(): void;
  /** Reads a key from the kv-store (the visits action). */
  readKey(conn: KvConnection, key: string): Promise<string | null>;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // An exited server that init has not reaped yet (a zombie) is gone for us.
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
  } catch {
    return true;
  }
}

/**
 * The real server: state beside the charm dir, not in it (a refresh rewrites the
 * charm files), named after the unit, since several units can share one host.
 */
export class NodeWorkload implements Workload {
  readonly stateDir: string;
  private readonly kvConf: string;
  private readonly pidfile: string;
  private readonly log: string;

  constructor(
    private readonly charmDir: string,
    private readonly unit: string,
  ) {
    this.stateDir = path.join(path.dirname(charmDir), `workload-${unit.replace('/', '-')}`);
    this.kvConf = path.join(this.stateDir, 'kv.json');
    this.pidfile = path.join(this.stateDir, 'server.pid');
    this.log = path.join(this.stateDir, 'server.log');
  }

  private ensureDir(): void {
    mkdirSync(this.stateDir, { recursive: true });
    chmodSync(this.stateDir, 0o700); // kv.json holds the kv-store password
  }

  setConnection(conn: KvConnection | null): void {
    if (conn === null) {
      rmSync(this.kvConf, { force: true });
      return;
    }
    this.ensureDir();
    writeFileSync(`${this.kvConf}.tmp`, JSON.stringify(conn), { mode: 0o600 });
    renameSync(`${this.kvConf}.tmp`, this.kvConf);
  }

  connection(): KvConnection | null {
    return readConnection(this.kvConf);
  }

  private pid(): number | null {
    let pid: number;
    try {
      pid = Number(readFileSync(this.pidfile, 'utf8').trim());
    } catch {
      return null;
    }
    if (!pid || !alive(pid)) return null;
    // A recycled pid must not be mistaken for our server.
    try {
      if (!readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('webserver.cjs')) return null;
    } catch {
      // no /proc: trust the pidfile
    }
    return pid;
  }

  running(): boolean {
    return this.pid() !== null;
  }

  async start(address: string, port: number): Promise<void> {
    this.ensureDir();
    rmSync(this.pidfile, { force: true });
    const script = path.join(this.charmDir, 'dist', 'webserver.cjs');
    if (!existsSync(script)) throw new Error(`${script} is missing: was the charm packed with charmflow pack?`);
    const log = openSync(this.log, 'a', 0o600);
    // A new session outlives the hook's process group; no fd of the hook stays
    // open in the server, or the hook runner would wait for it.
    const child = spawn(
      process.execPath,
      [
        script,
        '--bind',
        address,
        '--port',
        String(port),
        '--config',
        this.kvConf,
        '--unit',
        this.unit,
        '--pidfile',
        this.pidfile,
      ],
      { detached: true, stdio: ['ignore', log, log], cwd: '/', env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } },
    );
    child.unref();
    let exited: number | null = null;
    child.on('exit', (code) => {
      exited = code ?? -1;
    });
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (exited !== null) throw new Error(`the server exited with ${exited}; see ${this.log}`);
      if (existsSync(this.pidfile) && (await listening(address, port))) return;
      await sleep(100);
    }
    throw new Error(`the server did not listen on ${address}:${port} within 10s; see ${this.log}`);
  }

  async stop(): Promise<void> {
    const pid = this.pid();
    if (pid !== null) {
      process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
      if (alive(pid)) process.kill(pid, 'SIGKILL');
    }
    rmSync(this.pidfile, { force: true });
  }

  purge(): void {
    rmSync(this.stateDir, { recursive: true, force: true });
  }

  async readKey(conn: KvConnection, key: string): Promise<string | null> {
    const res = await kvCall(conn, 'GET', key);
    return res.status === 200 ? res.body : null;
  }
}

function listening(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host, port, timeout: 500 });
    s.on('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
    s.on('timeout', () => {
      s.destroy();
      resolve(false);
    });
  });
}
