// Pod exec over the Kubernetes websocket protocol (channel.k8s.io, v4 and v5): every binary
// message starts with a channel byte (0 stdin, 1 stdout, 2 stderr, 3 error/status, 4 resize,
// 255 close in v5). On exit the status goes on channel 3 as a metav1.Status, and the socket closes.

import { spawn } from 'node:child_process';
import type { WebSocket } from 'ws';

/** Subprotocols in the order this server prefers them. */
export const EXEC_PROTOCOLS = [
  'v5.channel.k8s.io',
  'v4.channel.k8s.io',
  'v3.channel.k8s.io',
  'v2.channel.k8s.io',
  'channel.k8s.io',
];

export function chooseProtocol(offered: Set<string>): string | false {
  for (const p of EXEC_PROTOCOLS) if (offered.has(p)) return p;
  return false;
}

const STDIN = 0;
const STDOUT = 1;
const STDERR = 2;
const ERROR = 3;
const CLOSE = 255;

/** How long output may keep coming after the command exited (a background child holding stdout). */
const DRAIN_AFTER_EXIT_MS = 500;
const MAX_BUFFERED = 4 * 1024 * 1024;

const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGTERM: 15,
};

export interface ExecRequest {
  argv: string[];
  env: Record<string, string>;
  stdin: boolean;
  stdout: boolean;
  stderr: boolean;
  /** The command as the client gave it, for status messages. */
  command: string[];
}

export function runExec(ws: WebSocket, req: ExecRequest): void {
  const child = spawn(req.argv[0], req.argv.slice(1), {
    env: req.env,
    stdio: [req.stdin ? 'pipe' : 'ignore', req.stdout ? 'pipe' : 'ignore', req.stderr ? 'pipe' : 'ignore'],
  });
  let finished = false;
  let pending = 0;

  const send = (channel: number, data: Buffer) => {
    if (ws.readyState !== ws.OPEN) return;
    const frame = Buffer.allocUnsafe(data.length + 1);
    frame[0] = channel;
    data.copy(frame, 1);
    pending += frame.length;
    if (pending > MAX_BUFFERED) {
      child.stdout?.pause();
      child.stderr?.pause();
    }
    ws.send(frame, { binary: true }, () => {
      pending -= frame.length;
      if (pending <= MAX_BUFFERED / 2) {
        child.stdout?.resume();
        child.stderr?.resume();
      }
    });
  };

  child.stdout?.on('data', (d: Buffer) => send(STDOUT, d));
  child.stderr?.on('data', (d: Buffer) => send(STDERR, d));
  child.stdin?.on('error', () => {
    // the command exited without reading all its input
  });

  ws.on('message', (data: Buffer, isBinary: boolean) => {
    if (!isBinary || data.length === 0) return;
    const channel = data[0];
    if (channel === STDIN) {
      if (child.stdin && !child.stdin.writableEnded) child.stdin.write(data.subarray(1));
    } else if (channel === CLOSE && data[1] === STDIN) {
      child.stdin?.end();
    }
    // channel 4 (terminal resize) means nothing without a tty
  });
  // Before v5 a client has no way to close stdin but closing the socket; the command goes on.
  ws.on('close', () => {
    child.stdin?.end();
  });
  ws.on('error', () => undefined);

  const finish = (status: object) => {
    if (finished) return;
    finished = true;
    child.stdout?.destroy();
    child.stderr?.destroy();
    send(ERROR, Buffer.from(JSON.stringify(status)));
    if (ws.readyState === ws.OPEN) ws.close(1000);
  };

  child.once('error', (err) => {
    finish({
      metadata: {},
      status: 'Failure',
      message: `failed to exec in container: ${err.message}`,
      reason: 'InternalError',
      details: { causes: [{ message: err.message }] },
      code: 500,
    });
  });

  child.once('exit', (code, signal) => {
    const rc = code ?? 128 + (signal ? (SIGNALS[signal] ?? 0) : 0);
    const report = () =>
      finish(
        rc === 0
          ? { metadata: {}, status: 'Success' }
          : {
              metadata: {},
              status: 'Failure',
              message: `command terminated with non-zero exit code: error executing command [${req.command.join(' ')}], exit code ${rc}`,
              reason: 'NonZeroExitCode',
              details: { causes: [{ reason: 'ExitCode', message: String(rc) }] },
            },
      );
    const streams = [child.stdout, child.stderr].filter((s) => s && !s.readableEnded);
    if (streams.length === 0) return report();
    let open = streams.length;
    const timer = setTimeout(report, DRAIN_AFTER_EXIT_MS);
    for (const s of streams) {
      s!.once('close', () => {
        open -= 1;
        if (open === 0) {
          clearTimeout(timer);
          report();
        }
      });
    }
  });
}
