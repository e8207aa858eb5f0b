// `charmflow wait`: returns once a model (or one application) has settled, fails
// fast when a unit is in error, gives up after --timeout naming what is still busy.
import type { Command } from 'commander';
import type { WaitAnswer } from '../../api/routes/wait.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { parseFormat, printStructured } from '../output.ts';

/**
 * How long one long-poll waits (the API takes up to 60 s): short enough that the
 * progress shown follows what is busy. The first look waits not at all, so a model
 * that is busy says so at once.
 */
const POLL_SECONDS = 5;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** `90s`, `5m`, `1h30m`, `250ms`, or plain seconds (`45`); milliseconds. */
export function parseDuration(text: string, flag = '--timeout'): number {
  const s = text.trim();
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  if (/^(\d+(\.\d+)?(ms|s|m|h))+$/.test(s)) {
    let ms = 0;
    for (const m of s.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h)/g)) ms += Number(m[1]) * UNIT_MS[m[2]];
    return Math.round(ms);
  }
  throw new CliError(`invalid ${flag} "${text}": expected a duration like 90s, 5m or 1h, or seconds`, 2);
}

function describeBusy(busy: WaitAnswer['busy']): string[] {
  return busy.map((b) => `  ${b.what}: ${b.why}`);
}

export function registerWait(program: Command): void {
  program
    .command('wait')
    .description(
      'Wait until a model (or one application) has settled: nothing pending, executing or retrying; fails at once when a unit is in error',
    )
    .option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default')
    .option('--app <application>', 'only this application and its units')
    .option('--timeout <duration>', 'give up after this long (90s, 5m, 1h, or seconds)', '10m')
    .option('--format <format>', 'json or yaml: print the final answer')
    .action(async (opts: { model: string; app?: string; timeout: string; format?: string }) => {
      const format = parseFormat(opts.format);
      const limitMs = parseDuration(opts.timeout);
      const api = new ApiClient();
      const what = opts.app ? `application "${opts.app}" of model ${opts.model}` : `model ${opts.model}`;
      const deadline = Date.now() + limitMs;
      let shown = '';
      let answer: WaitAnswer;
      for (let first = true; ; first = false) {
        const left = Math.max(0, Math.ceil((deadline - Date.now()) / 1000));
        const q = new URLSearchParams({ timeout: String(first ? 0 : Math.min(left, POLL_SECONDS)) });
        if (opts.app) q.set('app', opts.app);
        answer = await api.get<WaitAnswer>(`/v1/models/${encodeURIComponent(opts.model)}/wait?${q}`);
        if (answer.settled || answer.errors.length > 0 || Date.now() >= deadline) break;
        // progress for people, on stderr, whenever what is busy changes
        const now = describeBusy(answer.busy).join('\n');
        if (now !== shown) {
          if (shown === '') process.stderr.write(`waiting for ${what} to settle:\n`);
          process.stderr.write(`${now}\n`);
          shown = now;
        }
      }
      printStructured(format, answer);
      if (answer.errors.length > 0) {
        // one ERROR line per unit in error (main prints the first `ERROR `)
        throw new CliError(answer.errors.map((e) => `unit ${e.unit} is in error: ${e.message}`).join('\nERROR '));
      }
      if (!answer.settled) {
        const busy = answer.busy.map((b) => `${b.what} (${b.why})`).join('; ');
        throw new CliError(`${what} has not settled after ${opts.timeout}; still busy: ${busy || 'unknown'}`);
      }
      if (format === 'tabular') process.stdout.write(`${what} is settled\n`);
    });
}
