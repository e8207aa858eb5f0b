// Follows an operation until it ends, showing its progress on stderr.
import type { Operation } from '../api/schemas.ts';
import { type ApiClient, CliError } from './api-client.ts';

interface Progress {
  step?: string;
  steps?: { n: number; step: string }[];
  units?: Record<string, string>;
}

/** Up to this many units, the progress shows each unit's changes; beyond it, a count per state. */
export const UNIT_LINES_UP_TO = 20;

/** A unit's state as counted among many: without a machine's number or an error's message. */
function stateGroup(state: string): string {
  if (state.startsWith('error')) return 'error';
  return state.replace(/^waiting for machine \S+ /, 'waiting for machine ');
}

/**
 * Prints an operation's progress as it changes: every step it went through once (even
 * those that came and went between two polls), then the units whose state changed.
 * An operation on many units shows how many are in each state instead (a deploy of
 * 1000 printed 1000 lines a second), and still names each unit that fails.
 */
export class ProgressPrinter {
  private lastStep = 0;
  private lastStepText: string | undefined;
  private readonly lastUnits = new Map<string, string>();
  private lastSummary = '';
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
    if (!units) return;
    const names = Object.keys(units);
    const changed = names.filter((u) => this.lastUnits.get(u) !== units[u]);
    for (const u of changed) this.lastUnits.set(u, units[u]);
    const lines = (which: string[]) => which.map((u) => `  ${u}: ${units[u]}`).join('\n');
    if (names.length <= UNIT_LINES_UP_TO) {
      if (changed.length > 0) this.say(lines(changed));
      return;
    }
    const failed = changed.filter((u) => units[u].startsWith('error'));
    if (failed.length > 0) this.say(lines(failed));
    const counts = new Map<string, number>();
    for (const u of names) counts.set(stateGroup(units[u]), (counts.get(stateGroup(units[u])) ?? 0) + 1);
    const summary = `  ${names.length} units: ${[...counts]
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .map(([state, n]) => `${n} ${state}`)
      .join(', ')}`;
    if (summary !== this.lastSummary) this.say(summary);
    this.lastSummary = summary;
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
