// One interface for every place units run. Implementations live beside it:
// local-substrate.ts (sandbox dirs on the controller host), ssh-substrate.ts
// (existing hosts over pooled SSH), kubernetes-substrate.ts (pods, by exec).

/** How to reach one machine. Stored in the model store; passed to every call. */
export interface MachineTarget {
  /** `<model-uuid>/<machine-id>`: unique per controller, used as a pool key. */
  key: string;
  kind: 'local' | 'ssh' | 'pod';
  /** Address units on this machine serve on (127.0.0.N locally, the host's address over SSH, the pod's IP). */
  address: string;
  /** Directory on the machine that holds charmflow's files (tools, units). */
  rootDir: string;
  /** local only: run commands as this uid and gid (a machine of its own on the controller's host). */
  uid?: number;
  // ssh only
  host?: string;
  port?: number;
  user?: string;
  /** Private key (PEM/OpenSSH text) used to log in. */
  privateKey?: string;
  /** Pinned host key, as `SHA256:<base64>` fingerprint. Absent only on first contact. */
  hostKeyFingerprint?: string;
  // pod only
  /** The kubernetes cloud whose credentials reach the pod. */
  cloud?: string;
  namespace?: string;
  pod?: string;
  /** The container hooks are exec'd into. */
  container?: string;
}

export interface ExecRequest {
  /** Run through `sh -c` on the machine. */
  command: string;
  /**
   * Bytes written to the command's stdin, which is then closed. A promise lets the
   * command start before its input is ready: the bytes are written when it
   * resolves (stdin closes empty if it resolves to nothing or rejects). An async
   * iterable writes each chunk as it comes, and closes stdin when it ends (or throws).
   */
  stdin?: string | Buffer | Promise<string | Buffer | undefined> | AsyncIterable<string>;
  /** Called with each chunk of stdout as it arrives (live streaming). */
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  /** Called once the command has been started on the machine (before any output). */
  onStarted?: () => void;
  /** Aborting kills the command (or closes its channel). */
  signal?: AbortSignal;
  timeoutMs?: number;
}

/**
 * A promised stdin may settle before the command starts (or never be needed, if
 * it cannot start): its rejection is handled here at once, and means no input.
 */
export function acceptStdin(req: ExecRequest): void {
  if (req.stdin instanceof Promise) req.stdin.catch(() => {});
}

/** Feeds an ExecRequest's stdin to a command's input stream, then closes it. */
export function feedStdin(
  stdin: ExecRequest['stdin'],
  input: { write(data: string | Buffer): unknown; end(): unknown },
): void {
  const send = (data: string | Buffer | undefined) => {
    if (data !== undefined && data.length > 0) input.write(data);
    input.end();
  };
  if (stdin instanceof Promise) stdin.then(send, () => send(undefined));
  else if (stdin !== undefined && typeof stdin !== 'string' && !Buffer.isBuffer(stdin)) {
    void (async () => {
      try {
        for await (const chunk of stdin) if (chunk.length > 0) input.write(chunk);
      } catch {
        // the feed gave up: stdin closes, as for a promise that rejects
      }
      input.end();
    })();
  } else send(stdin);
}

export interface ExecResult {
  /** Exit code; null when killed by a signal or the channel was lost. */
  code: number | null;
  stdout: string;
  stderr: string;
}

export interface ProbeResult {
  /** `SHA256:<base64>` of the host key; `local` for local machines; `pod:<uid>` for a pod. */
  hostKeyFingerprint: string;
  address: string;
  hostname: string;
  /** Whether python3, tar and sh are present (the runtime's demands). */
  missing: string[];
}

/** Raised when a pinned host key does not match. Never retried. */
export class HostKeyMismatchError extends Error {
  readonly type = 'HostKeyMismatch';
  constructor(
    readonly host: string,
    readonly expected: string,
    readonly actual: string,
  ) {
    super(`host key of ${host} changed: expected ${expected}, got ${actual}; refusing to connect`);
  }
}

/** Raised when a machine cannot be reached (refused, timed out, auth failed). */
export class MachineUnreachableError extends Error {
  readonly type = 'MachineUnreachable';
  constructor(
    readonly host: string,
    reason: string,
  ) {
    super(`cannot reach ${host}: ${reason}`);
  }
}

/**
 * Raised when a machine cannot become usable by itself (a pod whose image cannot be
 * pulled): provisioning puts it in error at once, no retry would help.
 */
export class MachineFailedError extends Error {
  readonly type = 'MachineFailed';
  constructor(
    readonly host: string,
    reason: string,
  ) {
    super(`${host}: ${reason}`);
  }
}

export interface Substrate {
  readonly kind: MachineTarget['kind'];
  /** First contact: learn the host key (not yet pinned) and check the runtime's demands. */
  probe(target: MachineTarget): Promise<ProbeResult>;
  exec(target: MachineTarget, req: ExecRequest): Promise<ExecResult>;
  /**
   * Which incarnation of the machine answers now, for machines that can be replaced
   * under the same name (a pod its StatefulSet made again): the probe's
   * hostKeyFingerprint of the one running now. Absent: a machine is never replaced.
   */
  incarnation?(target: MachineTarget): Promise<string>;
  /** Write a file atomically (temp + rename), creating parent dirs. */
  putFile(target: MachineTarget, path: string, content: string | Buffer, mode?: number): Promise<void>;
  /** Drop pooled resources for one machine (after removal). */
  release(target: MachineTarget): Promise<void>;
  /** Close every pooled connection. */
  close(): Promise<void>;
}
