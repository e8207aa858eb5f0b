// Starts the local cloud's commands through a small helper process
// (local_spawner.py) instead of forking the controller: a fork copies the page
// tables of the whole controller, tens of milliseconds of its main thread per hook
// once it holds a few hundred megabytes. The helper forks a process of a few
// megabytes, and can start a command as a machine's own uid.
//
// A spawned command looks like the part of a ChildProcess the local substrate uses:
// `pid` (its own session and process group, so `process.kill(-pid)` reaches it),
// stdout/stderr data events, a stdin that takes writes and an end, and the
// 'spawn', 'exit', 'error' and 'close' events.
import { type ChildProcess, spawn } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where local_spawner.py is, from the sources or from the bundle in dist/. */
function spawnerScript(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    for (const candidate of [
      join(dir, 'local_spawner.py'),
      join(dir, 'activities', 'substrates', 'local_spawner.py'),
    ]) {
      if (existsSync(candidate)) return candidate;
    }
    dir = dirname(dir);
  }
  throw new Error('local_spawner.py not found beside the local substrate');
}

export interface SpawnSpec {
  command: string;
  cwd: string;
  env: Record<string, string>;
  /** Run as this uid and gid (the controller must be root). */
  uid?: number;
  gid?: number;
  /** umask for the command, e.g. 0o077. */
  umask?: number;
}

class Output extends EventEmitter {
  destroyed = false;
  /** Stop listening; the helper closes its end of the pipe. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.onDestroy();
  }
  constructor(private readonly onDestroy: () => void) {
    super();
  }
}

class Input extends EventEmitter {
  private ended = false;
  constructor(private readonly sendFrame: (type: string, payload?: Buffer) => void) {
    super();
  }
  write(data: string | Buffer): boolean {
    if (this.ended) return false;
    const bytes = typeof data === 'string' ? Buffer.from(data) : data;
    // frames of at most 1 MiB, so one large context does not make one huge frame
    for (let at = 0; at < bytes.length; at += 1 << 20) this.sendFrame('I', bytes.subarray(at, at + (1 << 20)));
    return true;
  }
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.sendFrame('E');
  }
}

export class SpawnedCommand extends EventEmitter {
  pid: number | undefined;
  exitCode: number | null = null;
  readonly stdout: Output;
  readonly stderr: Output;
  readonly stdin: Input;
  /** Exited and both output pipes closed (or dropped). */
  private exited = false;
  private pipesClosed = false;
  private closed = false;

  constructor(
    readonly id: number,
    /** @internal: the helper that started it. */
    readonly helper: ChildProcess,
    sendFrame: (type: string, payload?: Buffer) => void,
  ) {
    super();
    let dropped = false;
    const drop = () => {
      if (dropped) return;
      dropped = true;
      sendFrame('D');
    };
    this.stdout = new Output(drop);
    this.stderr = new Output(drop);
    this.stdin = new Input(sendFrame);
  }

  private pendingKill: NodeJS.Signals | undefined;

  /** Signals the command's whole process group; asked before it has started, as soon as it has. */
  killGroup(signal: NodeJS.Signals): void {
    if (this.pid === undefined) {
      this.pendingKill = signal;
      return;
    }
    try {
      process.kill(-this.pid, signal);
    } catch {
      // the group is gone already
    }
  }

  /** @internal: a frame for this command from the helper. */
  receive(type: string, payload: Buffer): void {
    switch (type) {
      case 'P':
        this.pid = (JSON.parse(payload.toString()) as { pid: number }).pid;
        this.emit('spawn');
        if (this.pendingKill) this.killGroup(this.pendingKill);
        break;
      case 'F':
        this.fail(new Error(`cannot start a local command: ${payload.toString()}`));
        break;
      case 'O':
        if (!this.stdout.destroyed) this.stdout.emit('data', payload);
        break;
      case 'R':
        if (!this.stderr.destroyed) this.stderr.emit('data', payload);
        break;
      case 'X': {
        const { code, signal } = JSON.parse(payload.toString()) as { code: number | null; signal: number | null };
        this.exitCode = code;
        this.exited = true;
        this.emit('exit', code, signal);
        this.closeIfDone();
        break;
      }
      case 'C':
        this.pipesClosed = true;
        this.closeIfDone();
        break;
    }
  }

  /** @internal: the command will never report again (it could not start, or the helper died). */
  fail(err: Error): void {
    if (this.closed) return;
    this.closed = true;
    this.emit('error', err);
  }

  private closeIfDone(): void {
    if (this.closed || !this.exited || !this.pipesClosed) return;
    this.closed = true;
    this.emit('close', this.exitCode);
  }
}

/**
 * One helper process, started on first use and again if it dies. Commands it
 * had started live on (each in its own session); only their output is lost, so
 * those are failed here and the hook runtime re-attaches as after a worker crash.
 */
export class LocalSpawner {
  private helper: ChildProcess | undefined;
  private readonly commands = new Map<number, SpawnedCommand>();
  private nextId = 1;
  private pending: Buffer = Buffer.alloc(0);

  spawn(spec: SpawnSpec): SpawnedCommand {
    const helper = this.ensureHelper();
    const id = this.nextId++;
    if (this.nextId > 0xffff_fff0) this.nextId = 1;
    const cmd = new SpawnedCommand(id, helper, (type, payload) => this.send(helper, type, id, payload));
    this.commands.set(id, cmd);
    this.holdOpen(true);
    const forget = () => {
      this.commands.delete(id);
      if (this.commands.size === 0) this.holdOpen(false);
    };
    cmd.once('close', forget);
    cmd.once('error', forget);
    const json = JSON.stringify({
      command: spec.command,
      cwd: spec.cwd,
      env: spec.env,
      uid: spec.uid ?? null,
      gid: spec.gid ?? null,
      umask: spec.umask ?? -1,
    });
    this.send(helper, 'S', id, Buffer.from(json));
    return cmd;
  }

  /** Ends the helper (its commands live on). */
  close(): void {
    const helper = this.helper;
    this.helper = undefined;
    helper?.stdin?.end();
  }

  private ensureHelper(): ChildProcess {
    if (this.helper && this.helper.exitCode === null && !this.helper.killed) return this.helper;
    const helper = spawn('python3', ['-S', '-u', spawnerScript()], {
      stdio: ['pipe', 'pipe', 'inherit'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LANG: 'C.UTF-8' },
    });
    this.pending = Buffer.alloc(0);
    helper.stdout!.on('data', (chunk: Buffer) => this.receive(chunk));
    helper.stdin!.on('error', () => {});
    const lost = (why: string) => {
      if (this.helper === helper) this.helper = undefined;
      const err = new Error(`the local command helper ${why}`);
      for (const cmd of [...this.commands.values()]) if (cmd.helper === helper) cmd.fail(err);
    };
    helper.on('error', (e) => lost(`could not start: ${e.message}`));
    helper.on('exit', (code, signal) => lost(`exited (${signal ?? `code ${code}`})`));
    this.helper = helper;
    this.holdOpen(false);
    return helper;
  }

  /** The event loop waits on the helper only while one of its commands runs. */
  private holdOpen(hold: boolean): void {
    const helper = this.helper;
    if (!helper) return;
    for (const handle of [helper, helper.stdout, helper.stdin] as unknown as { ref?(): void; unref?(): void }[]) {
      if (hold) handle?.ref?.();
      else handle?.unref?.();
    }
  }

  private send(helper: ChildProcess, type: string, id: number, payload: Buffer = Buffer.alloc(0)): void {
    if (helper !== this.helper || !helper.stdin || helper.stdin.destroyed) return;
    const header = Buffer.alloc(9);
    header.writeUInt32BE(payload.length + 5, 0);
    header.writeUInt8(type.charCodeAt(0), 4);
    header.writeUInt32BE(id, 5);
    helper.stdin.write(payload.length > 0 ? Buffer.concat([header, payload]) : header);
  }

  private receive(chunk: Buffer): void {
    this.pending = this.pending.length > 0 ? Buffer.concat([this.pending, chunk]) : chunk;
    let at = 0;
    while (this.pending.length - at >= 4) {
      const length = this.pending.readUInt32BE(at);
      if (this.pending.length - at < 4 + length) break;
      const type = String.fromCharCode(this.pending[at + 4]);
      const id = this.pending.readUInt32BE(at + 5);
      // copied: the chunk's buffer is reused for the next read
      const payload = Buffer.from(this.pending.subarray(at + 9, at + 4 + length));
      at += 4 + length;
      this.commands.get(id)?.receive(type, payload);
    }
    this.pending = this.pending.subarray(at);
  }
}
