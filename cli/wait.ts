// Follows an operation until it ends, showing its progress on stderr.
import type { Operation } from '../api/schemas.ts';
import { type ApiClient, CliError } from './api-client.ts';

interface Progress {
  step?: string;
  steps?: { n: number; step: string }[];
  units?: Record<string, string>;
}

/**
 * Prints an operation's progress as it changes: every step it went through once (even
 * those that came and went between two polls), then its units' states when they change.
 */
export class ProgressPrinter {
  private lastStep = 0;
  private lastStepText: string | undefined;
  private lastUnits = '';
  constructor(private readonly say: (line: string) => void) {}

  show(op: Operation): void {
    const { step, steps, units } = op.progress as Progress;
    // Operations recorded before steps were kept have only their current step.
    const log = Array.isArray(steps)
      ? steps
      : step
        ? [{ n: step === this.lastStepText ? this.lastStep : this.lastStep + 1, step }]
        : [];
    const fresh = log.filter((s) => s.n > this.lastStep);
    for (const s of fresh) this.say(`- ${s.step}`);
    if (fresh.length > 0) {
      this.lastStep = fresh[fresh.length - 1].n;
      this.lastStepText = fresh[fresh.length - 1].step;
    }
    const shown = units
      ? Object.entries(units)
          .map(([u, s]) => `  ${u}: ${s}`)
          .join('\n')
      : '';
    if (shown !== '' && (shown !== this.lastUnits || fresh.length > 0)) this.say(shown);
    this.lastUnits = shown;
  }
}

export interface WaitOptions {
  /** Give up after this long (ms); the operation goes on. */
  timeoutMs?: number;
  quiet?: boolean;
}

/**
 * Between two looks at an operation: quick at first (most operations end within
 * seconds), then once a second, which is as often as a long operation's progress
 * is written; a big deploy's record is large, and each look reads all of it.
 */
export function pollDelayMs(elapsedMs: number): number {
  return elapsedMs < 5_000 ? 250 : 1_000;
}

export async function waitForOperation(api: ApiClient, op: Operation, opts: WaitOptions = {}): Promise<Operation> {
  const began = Date.now();
  const deadline = began + (opts.timeoutMs ?? 30 * 60_000);
  const say = (line: string) => {
    if (!opts.quiet) process.stderr.write(`${line}\n`);
  };
  say(`operation ${op.id} (${op.kind}) started: ${op.summary}`);
  const progress = new ProgressPrinter(say);
  let current = op;
  while (true) {
    progress.show(current);
    if (current.state === 'succeeded') return current;
    if (current.state === 'failed' || current.state === 'cancelled') {
      throw new CliError(
        `operation ${current.id} (${current.kind}) ${current.state}: ${current.error ?? 'no reason given'}`,
      );
    }
    if (Date.now() > deadline) {
      throw new CliError(
        `operation ${current.id} still ${current.state} after the wait limit; follow it with \`charmflow show-operation ${current.id}\``,
      );
    }
    await new Promise((r) => setTimeout(r, pollDelayMs(Date.now() - began)));
    current = await api.get<Operation>(`/v1/operations/${current.id}`);
  }
}
