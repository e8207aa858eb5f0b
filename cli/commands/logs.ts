import type { Command } from 'commander';
import type { LogEntry, LogsPage, StatusLog } from '../../api/routes/logs.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { parseFormat, printStructured, since, table } from '../output.ts';

const POLL_MS = 300;
const PAGE = 1000;
// Ids come from a sequence, so on Postgres with several writers a row can commit
// after one with a higher id was already shown. Each poll re-reads this many ids
// behind the cursor and prints only what it has not printed yet.
const OVERLAP = 64;

const NON_UNIT_PREFIXES = new Set(['machine', 'application', 'model']);
const UNIT_NAME = /^([a-z][a-z0-9-]*)\/(\d+)$/;

function clock(iso: string, utc: boolean): string {
  const d = new Date(iso);
  const parts = utc
    ? [d.getUTCHours(), d.getUTCMinutes(), d.getUTCSeconds()]
    : [d.getHours(), d.getMinutes(), d.getSeconds()];
  return parts.map((p) => String(p).padStart(2, '0')).join(':');
}

/** One line in Juju's debug-log style. */
export function formatLogLine(e: LogEntry, utc = false): string {
  const time = clock(e.at, utc);
  const unit = UNIT_NAME.exec(e.entity);
  if (unit && !NON_UNIT_PREFIXES.has(unit[1])) {
    return `unit-${unit[1]}-${unit[2]}: ${time} ${e.level} unit.${e.entity}.juju-log ${e.message}`;
  }
  return `${e.entity}: ${time} ${e.level} ${e.message}`;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

function wholeNumber(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < min || n > max) {
    throw new CliError(`invalid ${flag} "${value}": expected a whole number from ${min} to ${max}`, 2);
  }
  return n;
}

/** Resolves once SIGINT or SIGTERM arrives (or stdout closes); the follow loop's way out. */
function stopSignal(): { readonly stopped: boolean; done: Promise<void>; dispose(): void } {
  let stopped = false;
  let resolve!: () => void;
  const done = new Promise<void>((r) => {
    resolve = r;
  });
  const stop = () => {
    stopped = true;
    resolve();
  };
  const onStdoutError = (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') stop();
    else throw err;
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  process.stdout.on('error', onStdoutError);
  return {
    get stopped() {
      return stopped;
    },
    done,
    dispose() {
      process.off('SIGINT', stop);
      process.off('SIGTERM', stop);
      process.stdout.off('error', onStdoutError);
    },
  };
}

interface DebugLogOptions {
  model: string;
  include: string[];
  exclude: string[];
  level?: string;
  replay?: boolean;
  tail: boolean;
  lines: string;
  utc?: boolean;
  format?: string;
}

async function debugLog(opts: DebugLogOptions): Promise<void> {
  const format = opts.format ?? 'text';
  if (format !== 'text' && format !== 'json') {
    throw new CliError(`invalid --format "${format}": expected json or text`, 2);
  }
  const lines = wholeNumber('--lines', opts.lines, 0, PAGE);
  const api = new ApiClient();
  const base = new URLSearchParams();
  for (const e of opts.include) base.append('include', e);
  for (const e of opts.exclude) base.append('exclude', e);
  if (opts.level) base.set('level', opts.level);
  const path = `/v1/models/${encodeURIComponent(opts.model)}/logs`;
  const get = (extra: Record<string, string>): Promise<LogsPage> => {
    const q = new URLSearchParams(base);
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    return api.get<LogsPage>(`${path}?${q}`);
  };

  const printed = new Set<number>();
  let last = 0;
  const show = (entries: LogEntry[]) => {
    let out = '';
    for (const e of entries) {
      if (printed.has(e.id)) continue;
      printed.add(e.id);
      out += format === 'json' ? `${JSON.stringify(e)}\n` : `${formatLogLine(e, opts.utc)}\n`;
      if (e.id > last) last = e.id;
    }
    if (out) process.stdout.write(out);
  };
  // Ctrl-C while following means "stop", exit 0: catch it before the first line is
  // printed, since whoever reads the first line may press it at once.
  const stop = opts.tail ? stopSignal() : undefined;
  /** The answer, or null once stopped (a late answer is dropped, its failure too). */
  const unlessStopped = <T>(request: Promise<T>): Promise<T | null> => {
    if (!stop) return request;
    request.catch(() => {});
    return Promise.race([request, stop.done.then(() => null)]);
  };
  /** Everything after `from`, page by page. */
  const readFrom = async (from: number) => {
    let cursor = from;
    while (!stop?.stopped) {
      const page = await unlessStopped(get({ after: String(cursor), limit: String(PAGE) }));
      if (!page) return;
      show(page.entries);
      cursor = page.last;
      if (page.entries.length < PAGE) return;
    }
  };

  try {
    if (opts.replay) {
      await readFrom(0);
    } else {
      // --lines 0 still needs a starting point: the newest matching id, not shown.
      const page = await unlessStopped(get({ tail: String(Math.max(lines, 1)) }));
      if (page && lines > 0) show(page.entries);
      else if (page) last = page.last;
    }
    if (!stop) return;

    // Lines older than the start were left out on purpose; only later ones may arrive late.
    const floor = last;
    while (!stop.stopped) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((r) => {
          timer = setTimeout(r, POLL_MS);
        }),
        stop.done,
      ]);
      clearTimeout(timer);
      if (stop.stopped) break;
      await readFrom(Math.max(floor, last - OVERLAP));
      for (const id of printed) if (id <= last - OVERLAP) printed.delete(id);
    }
  } finally {
    stop?.dispose();
  }
}

const STATUS_TYPES: Record<string, string> = { unit: 'workload,agent', workload: 'workload', 'juju-unit': 'agent' };

export function renderStatusLog(log: StatusLog): string {
  if (log.entries.length === 0) return `No status history for unit ${log.unit}.\n`;
  const rendered = table(
    ['Time', 'Type', 'Status', 'Message'],
    log.entries.map((e) => [since(e.at), e.kind === 'agent' ? 'juju-unit' : e.kind, e.status, e.message]),
  ).split('\n');
  const out = [rendered[0]];
  log.entries.forEach((e, i) => {
    out.push(rendered[i + 1]);
    // A failed hook's last output lines, under its row.
    const tail = (e.data as { tail?: unknown } | undefined)?.tail;
    if (Array.isArray(tail)) for (const line of tail) out.push(`    ${String(line)}`);
  });
  return `${out.join('\n')}\n`;
}

export function registerLogs(program: Command): void {
  program
    .command('debug-log')
    .description("Show a model's log: the last lines, then new ones as they come (Ctrl-C stops)")
    .option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default')
    .option('-i, --include <entity>', 'only this unit (app/0), application (app) or entity; repeatable', collect, [])
    .option('-x, --exclude <entity>', 'not this unit, application or entity; repeatable', collect, [])
    .option('-l, --level <level>', 'lowest level shown: TRACE, DEBUG, INFO, WARNING or ERROR')
    .option('--replay', 'start from the first line instead of the last --lines')
    .option('-n, --lines <n>', 'how many of the latest lines to start with', '10')
    .option('--no-tail', 'print what is there and exit instead of following')
    .option('--utc', 'show times in UTC rather than local time')
    .option('--format <format>', 'text, or json for one object per line')
    .action(debugLog);

  program
    .command('show-status-log <unit>')
    .description("Show a unit's status history, oldest first")
    .option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default')
    .option('--limit <n>', 'the latest this many entries', '20')
    .option('--type <type>', 'unit (workload and agent), workload or juju-unit', 'unit')
    .option('--format <format>', 'json, yaml or tabular')
    .action(async (unit: string, opts: { model: string; limit: string; type: string; format?: string }) => {
      const format = parseFormat(opts.format);
      const m = UNIT_NAME.exec(unit);
      if (!m) throw new CliError(`invalid unit name "${unit}": expected <application>/<number>, e.g. web/0`, 2);
      const kinds = STATUS_TYPES[opts.type];
      if (!kinds) throw new CliError(`invalid --type "${opts.type}": expected unit, workload or juju-unit`, 2);
      const limit = wholeNumber('--limit', opts.limit, 1, 1000);
      const q = new URLSearchParams({ limit: String(limit), kinds });
      const log = await new ApiClient().get<StatusLog>(
        `/v1/models/${encodeURIComponent(opts.model)}/units/${m[1]}/${m[2]}/status-log?${q}`,
      );
      if (printStructured(format, log)) return;
      process.stdout.write(renderStatusLog(log));
    });
}
