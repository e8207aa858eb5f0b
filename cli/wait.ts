// Follows an operation until it ends, showing its progress on stderr.
import type { Operation } from '../api/schemas.ts';
import { type ApiClient, CliError } from './api-client.ts';

function describeProgress(op: Operation): string[] {
  const { step, units } = op.progress as { step?: string; units?: Record<string, string> };
  const lines = step ? [`- ${step}`] : [];
  if (units) lines.push(...Object.entries(units).map(([u, s]) => `  ${u}: ${s}`));
  return lines;
}

export interface WaitOptions {
  /** Give up after this long (ms); the operation goes on. */
  timeoutMs?: number;
  quiet?: boolean;
}

export async function waitForOperation(api: ApiClient, op: Operation, opts: WaitOptions = {}): Promise<Operation> {
  const deadline = Date.now() + (opts.timeoutMs ?? 30 * 60_000);
  const say = (line: string) => {
    if (!opts.quiet) process.stderr.write(`${line}\n`);
  };
  say(`operation ${op.id} (${op.kind}) started: ${op.summary}`);
  let last = '';
  let current = op;
  while (true) {
    const shown = describeProgress(current).join('\n');
    if (shown !== last && shown !== '') {
      say(shown);
      last = shown;
    }
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
    await new Promise((r) => setTimeout(r, 250));
    current = await api.get<Operation>(`/v1/operations/${current.id}`);
  }
}
