// Machines that are existing hosts reached over SSH (the `manual` cloud).
//
// Every call is one exec channel on the machine's pooled connection (ssh-pool.ts):
// nothing is installed on the host, and a command costs a channel, not a handshake.

import { atomicWriteCommand, PROBE_SCRIPT, parseProbeOutput, shellQuote } from './machine-shell.ts';
import { outputCollector } from './output-tail.ts';
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

  spareChannels(target: MachineTarget): number {
    return this.pool.spareChannels(target.key);
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
      // The caller that streams a stream keeps it: only a tail of it stays here.
      const out = outputCollector(req.onStdout !== undefined);
      const err = outputCollector(req.onStderr !== undefined);
      let code: number | null = null;
      let callbackError: unknown;
      let pgid: number | undefined;
      // stderr until our marker line has been seen and cut out.
      let head: Buffer | undefined = Buffer.alloc(0);
      let killing = false;
      let graceTimer: NodeJS.Timeout | undefined;
      let done = false;

      const finish = () => {
        if (done) return;
        done = true;
        clearTimeout(graceTimer);
        stop.removeEventListener('abort', kill);
        if (callbackError !== undefined) reject(callbackError);
        else resolve({ code, stdout: out.text(), stderr: err.text() });
      };
      const killGroup = () => {
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
      };
      const kill = () => {
        if (killing) return;
        killing = true;
        // On a dead link nothing more will come until keepalive gives up: answer anyway.
        graceTimer = setTimeout(finish, this.killGraceMs);
        // Without the group id yet, the kill waits for the marker (it is the first thing the command writes).
        if (head === undefined) killGroup();
      };
      // A throwing callback is the caller's bug: stop the command and hand the error back.
      const deliver = (cb: ((chunk: Buffer) => void) | undefined, chunk: Buffer) => {
        if (!cb || callbackError !== undefined || chunk.length === 0) return;
        try {
          cb(chunk);
        } catch (e) {
          callbackError = e;
          kill();
        }
      };
      const onStderr = (chunk: Buffer) => {
        err.push(chunk);
        deliver(req.onStderr, chunk);
      };
      const endHead = (rest: Buffer) => {
        head = undefined;
        onStderr(rest);
        if (killing) killGroup();
      };

      channel.on('data', (chunk: Buffer) => {
        out.push(chunk);
        deliver(req.onStdout, chunk);
      });
      channel.stderr.on('data', (chunk: Buffer) => {
        if (head === undefined) return onStderr(chunk);
        head = Buffer.concat([head, chunk]);
        const at = head.indexOf(PID_MARKER);
        const eol = at < 0 ? -1 : head.indexOf(10, at);
        if (eol >= 0) {
          pgid = Number(head.subarray(at + PID_MARKER.length, eol).toString('latin1'));
          // Anything before the marker came from the login shell's start-up files: still stderr.
          return endHead(Buffer.concat([head.subarray(0, at), head.subarray(eol + 1)]));
        }
        if (head.length > 65536) endHead(head);
      });
      channel.on('error', () => {
        // Surfaces as a close without exit status (code null).
      });
      // The exit status comes with 'close', not from 'exit': a short command's whole answer can
      // arrive in one packet, parsed before this listener exists, and 'exit' is not replayed.
      channel.once('close', (exitCode?: number | null) => {
        code = typeof exitCode === 'number' ? exitCode : null;
        if (head !== undefined) endHead(head);
        opened.release();
        finish();
      });

      stop.addEventListener('abort', kill, { once: true });
      if (stop.aborted) kill();
      feedStdin(req.stdin, channel);
    });
  }
}
