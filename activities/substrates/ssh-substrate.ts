// Machines that are existing hosts reached over SSH (the `manual` cloud).
//
// Every call is one exec channel on the machine's pooled connection (ssh-pool.ts):
// nothing is installed on the host, and a command costs a channel, not a handshake.

import { ExecStream } from './exec-stream.ts';
import { atomicWriteCommand, PROBE_SCRIPT, parseProbeOutput, shellQuote } from './machine-shell.ts';
import { type OpenedExec, SshPool, type SshPoolOptions, type SshPoolStats } from './ssh-pool.ts';
import {
  acceptStdin,
  type ExecRequest,
  type ExecResult,
  feedStdin,
  type MachineTarget,
  MachineUnreachableError,
  type ProbeResult,
  type Substrate,
} from './substrate.ts';

export interface SshSubstrateOptions extends SshPoolOptions {
  /** Share a pool (for example with a benchmark that reads its stats). */
  pool?: SshPool;
  /** After a kill, how long to wait for the channel to close before answering anyway. Default 2 s. */
  killGraceMs?: number;
}

/** First line our wrapper writes to stderr: the command's process group id. */
const PID_MARKER = '__charmflow_pgid__=';

/**
 * What the channel asks the login shell to run: announce the process group (the
 * session leader's pid: sshd starts every command in a new session), start in
 * target.rootDir when it exists, else in the user's home (as the local substrate
 * does), and become `sh -c <command>`.
 */
function remoteCommand(target: MachineTarget, command: string): string {
  return [
    `printf '${PID_MARKER}%s\\n' "$$" >&2`,
    `cd ${shellQuote(target.rootDir)} 2>/dev/null`,
    `exec sh -c ${shellQuote(command)}`,
  ].join('; ');
}

export class SshSubstrate implements Substrate {
  readonly kind = 'ssh' as const;
  readonly pool: SshPool;
  private readonly killGraceMs: number;

  constructor(opts: SshSubstrateOptions = {}) {
    this.pool = opts.pool ?? new SshPool(opts);
    this.killGraceMs = opts.killGraceMs ?? 2_000;
  }

  async probe(target: MachineTarget): Promise<ProbeResult> {
    const { result, hostKeyFingerprint } = await this.run(target, { command: PROBE_SCRIPT, timeoutMs: 30_000 }, true);
    if (result.code !== 0) {
      throw new MachineUnreachableError(target.host ?? target.address, `probe failed: ${result.stderr.trim()}`);
    }
    const parsed = parseProbeOutput(result.stdout);
    return {
      hostKeyFingerprint: hostKeyFingerprint ?? '',
      address: parsed.serverAddress ?? target.host ?? target.address,
      hostname: parsed.hostname,
      missing: parsed.missing,
    };
  }

  async exec(target: MachineTarget, req: ExecRequest): Promise<ExecResult> {
    acceptStdin(req);
    return (await this.run(target, req, false)).result;
  }

  async putFile(target: MachineTarget, path: string, content: string | Buffer, mode = 0o644): Promise<void> {
    const { result } = await this.run(target, { command: atomicWriteCommand(path, mode), stdin: content }, false);
    if (result.code !== 0) {
      const why = result.code === null ? 'killed' : `exit ${result.code}`;
      throw new Error(`putFile ${path} on ${target.host ?? target.address} failed (${why}): ${result.stderr.trim()}`);
    }
  }

  async release(target: MachineTarget): Promise<void> {
    await this.pool.release(target);
  }

  async close(): Promise<void> {
    await this.pool.close();
  }

  stats(): SshPoolStats {
    return this.pool.stats();
  }

  /**
   * Timeouts and aborts: before the command starts (waiting for a slot, the connection or
   * the channel), a timeout is a MachineUnreachableError and an abort answers code null
   * without running anything; once it runs, both kill its process group and answer
   * code null with the output so far.
   */
  private async run(
    target: MachineTarget,
    req: ExecRequest,
    allowUnpinned: boolean,
  ): Promise<{ result: ExecResult; hostKeyFingerprint?: string }> {
    const killed = { code: null, stdout: '', stderr: '' };
    if (req.signal?.aborted) return { result: killed };
    const stop = new AbortController();
    let timedOut = false;
    const onAbort = () => stop.abort(req.signal?.reason);
    req.signal?.addEventListener('abort', onAbort, { once: true });
    const timer =
      req.timeoutMs !== undefined
        ? setTimeout(() => {
            timedOut = true;
            stop.abort(new Error(`timed out after ${req.timeoutMs} ms`));
          }, req.timeoutMs)
        : undefined;
    try {
      let opened: OpenedExec;
      try {
        opened = await this.pool.openExec(target, remoteCommand(target, req.command), {
          allowUnpinned,
          signal: stop.signal,
          // Opened after we gave up: it started anyway, so kill it like any aborted command.
          onLate: (late) => void this.stream(target, late, { command: req.command }, stop.signal),
        });
      } catch (err) {
        if (!stop.signal.aborted) throw err;
        if (timedOut) {
          throw new MachineUnreachableError(
            target.host ?? target.address,
            `command not started within ${req.timeoutMs} ms`,
          );
        }
        return { result: killed };
      }
      return {
        result: await this.stream(target, opened, req, stop.signal),
        hostKeyFingerprint: opened.hostKeyFingerprint,
      };
    } finally {
      clearTimeout(timer);
      req.signal?.removeEventListener('abort', onAbort);
    }
  }

  private stream(target: MachineTarget, opened: OpenedExec, req: ExecRequest, stop: AbortSignal): Promise<ExecResult> {
    const { channel } = opened;
    req.onStarted?.();
    return new Promise<ExecResult>((resolve, reject) => {
      let code: number | null = null;
      let done = false;
      const finish = () => {
        if (done) return;
        done = true;
        stop.removeEventListener('abort', kill);
        stream.settle(code, resolve, reject);
      };
      const stream: ExecStream = new ExecStream(req, {
        marker: PID_MARKER,
        graceMs: this.killGraceMs,
        giveUp: finish,
        killTree: (pgid) => {
          const close = () => {
            if (!done) channel.close();
          };
          if (pgid === undefined) return close();
          // A separate command, not an SSH signal request: sshd refuses those on root sessions.
          this.pool
            .openExec(target, `kill -KILL -- -${pgid} 2>/dev/null; true`, {
              unbounded: true,
              signal: AbortSignal.timeout(this.killGraceMs),
            })
            .then((k) => {
              k.channel.resume();
              k.channel.stderr.resume();
              k.channel.on('error', () => {});
              k.channel.once('close', () => {
                k.release();
                close();
              });
              k.channel.end();
            }, close);
        },
      });
      const kill = () => stream.kill();

      channel.on('data', (chunk: Buffer) => stream.stdout(chunk));
      channel.stderr.on('data', (chunk: Buffer) => stream.stderr(chunk));
      channel.on('error', () => {
        // Surfaces as a close without exit status (code null).
      });
      // The exit status comes with 'close', not from 'exit': a short command's whole answer can
      // arrive in one packet, parsed before this listener exists, and 'exit' is not replayed.
      channel.once('close', (exitCode?: number | null) => {
        code = typeof exitCode === 'number' ? exitCode : null;
        stream.ended();
        opened.release();
        finish();
      });

      stop.addEventListener('abort', kill, { once: true });
      if (stop.aborted) kill();
      feedStdin(req.stdin, channel);
    });
  }
}
