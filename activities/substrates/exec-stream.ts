// What the two remote substrates (SSH hosts, Kubernetes pods) do with a running
// command's output and with a request to stop it. Their wrapper script first prints a
// marker line with the command's process (group) id on stderr; until that line has been
// seen and cut out, stderr is held back ("the head"). Output goes to the caller's
// callbacks as it comes (a callback that throws stops the command and its error is the
// answer) and a bounded tail of each stream is kept for the result. A kill kills the
// command's process tree by id (once the id is known), and answers anyway after a grace
// period: on a dead link nothing more will come.

import { outputCollector } from './output-tail.ts';
import type { ExecRequest, ExecResult } from './substrate.ts';

export class ExecStream {
  private readonly out: ReturnType<typeof outputCollector>;
  private readonly err: ReturnType<typeof outputCollector>;
  private callbackError: unknown;
  /** The command's process (group) id, from the marker line. */
  private pid: number | undefined;
  private head: Buffer | undefined = Buffer.alloc(0);
  private graceTimer: NodeJS.Timeout | undefined;
  /** A kill was asked for. */
  killing = false;

  constructor(
    private readonly req: Pick<ExecRequest, 'onStdout' | 'onStderr'>,
    private readonly opts: {
      /** The marker's prefix: the id follows it, then a newline. */
      marker: string;
      /** Kills the command's tree; `pid` undefined when the marker never came. */
      killTree(pid: number | undefined): void;
      /** Gives up waiting for the command after a kill (the grace period ran out). */
      giveUp(): void;
      graceMs: number;
    },
  ) {
    this.out = outputCollector(req.onStdout !== undefined);
    this.err = outputCollector(req.onStderr !== undefined);
  }

  stdout(chunk: Buffer): void {
    this.out.push(chunk);
    this.deliver(this.req.onStdout, chunk);
  }

  stderr(chunk: Buffer): void {
    if (this.head === undefined) {
      this.passStderr(chunk);
      return;
    }
    const head = Buffer.concat([this.head, chunk]);
    this.head = head;
    const at = head.indexOf(this.opts.marker);
    const eol = at < 0 ? -1 : head.indexOf(10, at);
    if (eol >= 0) {
      this.pid = Number(head.subarray(at + this.opts.marker.length, eol).toString('latin1'));
      // anything before the marker (a login shell's start-up files) is still stderr
      this.endHead(Buffer.concat([head.subarray(0, at), head.subarray(eol + 1)]));
    } else if (head.length > 65536) {
      this.endHead(head);
    }
  }

  /** The command ended: stderr held back is stderr after all. */
  ended(): void {
    if (this.head !== undefined) this.endHead(this.head);
  }

  kill(): void {
    if (this.killing) return;
    this.killing = true;
    this.graceTimer = setTimeout(() => this.opts.giveUp(), this.opts.graceMs);
    // without the id yet, the kill waits for the marker (the first thing the command writes)
    if (this.head === undefined) this.opts.killTree(this.pid);
  }

  /** Kills the tree now if a kill was asked for and the id is known. */
  killIfAsked(): void {
    if (this.killing && this.head === undefined) this.opts.killTree(this.pid);
  }

  /** The answer: what was kept of the output, or the error a callback threw. */
  settle(code: number | null, resolve: (r: ExecResult) => void, reject: (e: unknown) => void): void {
    clearTimeout(this.graceTimer);
    if (this.callbackError !== undefined) reject(this.callbackError);
    else resolve({ code, stdout: this.out.text(), stderr: this.err.text() });
  }

  private endHead(rest: Buffer): void {
    this.head = undefined;
    this.passStderr(rest);
    if (this.killing) this.opts.killTree(this.pid);
  }

  private passStderr(chunk: Buffer): void {
    this.err.push(chunk);
    this.deliver(this.req.onStderr, chunk);
  }

  // a throwing callback is the caller's bug: stop the command and hand the error back
  private deliver(cb: ((chunk: Buffer) => void) | undefined, chunk: Buffer): void {
    if (!cb || this.callbackError !== undefined || chunk.length === 0) return;
    try {
      cb(chunk);
    } catch (e) {
      this.callbackError = e;
      this.kill();
    }
  }
}
