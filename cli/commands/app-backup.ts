// Commands of application backups and schedules (issue 11): backup-application,
// app-backups, restore-application, remove-application-backup, schedules, and
// schedule add|show|pause|resume|trigger|delete.
import type { Command } from 'commander';
import type { Operation } from '../../api/schemas.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { uploadCharm } from '../charm-upload.ts';
import { parseFormat, printStructured, since, table } from '../output.ts';
import { waitForOperation } from '../wait.ts';
import { parseActionParams } from './actions.ts';

const enc = encodeURIComponent;

interface Backup {
  id: number;
  model: string;
  application: string;
  unit: string;
  charm: string;
  charmRevision: number;
  operationId: number;
  path: string;
  size: number;
  sha256: string;
  scheduleId: number | null;
  createdAt: string;
}

interface Run {
  id: number;
  workflowId: string;
  operationId: number | null;
  state: string;
  message: string;
  startedAt: string;
  finishedAt: string | null;
}

interface Schedule {
  id: number;
  scheduleId: string;
  model: string;
  application: string;
  kind: string;
  cron: string | null;
  interval: string | null;
  timezone: string | null;
  overlap: string;
  params: Record<string, unknown>;
  paused: boolean;
  note: string;
  temporal: {
    nextRuns: string[];
    actionsTaken: number;
    skippedOverlap: number;
    running: string[];
  } | null;
  lastRun: Run | null;
}

const modelOption = (cmd: Command) =>
  cmd.option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default');

/** `APP/N`, `APP/leader` or `APP` (its leader): the application and the unit choice. */
function splitUnit(arg: string): { app: string; unit: string } {
  const m = /^([a-z][a-z0-9-]*)(?:\/(\d+|leader))?$/.exec(arg);
  if (!m) throw new CliError(`invalid unit "${arg}": expected APP/N, APP/leader or APP`, 2);
  return { app: m[1], unit: m[2] ?? 'leader' };
}

function positiveInt(value: string, what: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) throw new CliError(`invalid ${what} "${value}": expected a number`, 2);
  return Number(value);
}

/** `N`, or a Temporal schedule id ending in `:N`. */
function scheduleNumber(value: string): number {
  const m = /^(?:schedule:.*:)?(\d+)$/.exec(value);
  if (!m || Number(m[1]) < 1) throw new CliError(`invalid schedule id "${value}": expected a number`, 2);
  return Number(m[1]);
}

function humanSize(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function when(s: Schedule): string {
  if (s.cron) return `cron ${s.cron}${s.timezone ? ` (${s.timezone})` : ''}`;
  return `every ${s.interval}`;
}

function scheduleTarget(s: Schedule): string {
  if (s.kind === 'backup') {
    const u = s.params.unit;
    return u === 'leader' || u === undefined ? `${s.application}/leader` : `${s.application}/${u}`;
  }
  const rev = s.params.revision;
  return rev === undefined ? `${s.application} → newest` : `${s.application} → rev ${rev}`;
}

function lastRun(r: Run | null): string {
  if (!r) return '';
  return `${r.state}${r.operationId ? ` (op ${r.operationId})` : ''} ${since(r.startedAt)}`;
}

export function registerAppBackups(program: Command): void {
  modelOption(
    program
      .command('backup-application <unit> [params...]')
      .description(
        "Back up an application: its charm's backup action runs on the unit (APP/N, APP/leader, or APP for its " +
          "leader) and returns the artifact's path (action-set path=...); the artifact is fetched into the controller's " +
          "backup store and listed with its size and sha256 (app-backups). params: the action's, key=value",
      )
      .option('--string-args', 'take every param value as a string')
      .option('--no-wait', 'return at once with the operation id')
      .option('--format <format>', 'json or yaml (the backup)'),
  ).action(
    async (
      arg: string,
      pairs: string[],
      opts: { model: string; stringArgs?: boolean; wait: boolean; format?: string },
    ) => {
      const { app, unit } = splitUnit(arg);
      const api = new ApiClient();
      const { operation } = await api.post<{ operation: Operation }>(
        `/v1/models/${enc(opts.model)}/applications/${enc(app)}/backups`,
        { unit, params: parseActionParams(pairs, opts.stringArgs) },
      );
      if (!opts.wait) {
        process.stdout.write(
          `operation ${operation.id} (${operation.kind}) started; follow it with: charmflow show-operation ${operation.id}\n`,
        );
        return;
      }
      const done = await waitForOperation(api, operation);
      const backup = (done.progress as { backup?: { id: number; size: number; sha256: string; path: string } }).backup;
      if (!backup) throw new CliError(`operation ${done.id} succeeded but recorded no backup`);
      const format = parseFormat(opts.format, 'tabular');
      if (printStructured(format, backup)) return;
      process.stdout.write(
        `Backup ${backup.id} of ${done.target}: ${backup.size} bytes, sha256 ${backup.sha256} (from ${backup.path}).\n`,
      );
    },
  );

  modelOption(
    program
      .command('app-backups [application]')
      .description("List the model's application backups (or one application's), newest first")
      .option('--format <format>', 'json, yaml or tabular'),
  ).action(async (application: string | undefined, opts: { model: string; format?: string }) => {
    const q = application ? `?application=${enc(application)}` : '';
    const { backups } = await new ApiClient().get<{ backups: Backup[] }>(`/v1/models/${enc(opts.model)}/backups${q}`);
    if (printStructured(parseFormat(opts.format), { backups })) return;
    if (backups.length === 0) {
      process.stdout.write(
        `No application backups${application ? ` of ${application}` : ''} in model ${opts.model}. Make one with: charmflow backup-application APP\n`,
      );
      return;
    }
    process.stdout.write(
      `${table(
        ['ID', 'Unit', 'Charm', 'Size', 'SHA256', 'Created', 'Schedule', 'Path on unit'],
        backups.map((b) => [
          b.id,
          b.unit,
          `${b.charm}:${b.charmRevision}`,
          humanSize(b.size),
          b.sha256.slice(0, 16),
          since(b.createdAt),
          b.scheduleId ?? '',
          b.path,
        ]),
      )}\n`,
    );
  });

  modelOption(
    program
      .command('restore-application <unit> <backup> [params...]')
      .description(
        "Restore an application backup on a unit (APP/N, APP/leader, or APP): the artifact is copied to the unit, then the charm's " +
          'restore action runs with its path as the param `path` (more params: key=value)',
      )
      .option('--string-args', 'take every param value as a string')
      .option('--no-wait', 'return at once with the operation id'),
  ).action(
    async (
      arg: string,
      backup: string,
      pairs: string[],
      opts: { model: string; stringArgs?: boolean; wait: boolean },
    ) => {
      const { app, unit } = splitUnit(arg);
      const api = new ApiClient();
      const { operation } = await api.post<{ operation: Operation }>(
        `/v1/models/${enc(opts.model)}/applications/${enc(app)}/restore`,
        { backup: positiveInt(backup, 'backup id'), unit, params: parseActionParams(pairs, opts.stringArgs) },
      );
      if (!opts.wait) {
        process.stdout.write(
          `operation ${operation.id} (${operation.kind}) started; follow it with: charmflow show-operation ${operation.id}\n`,
        );
        return;
      }
      const done = await waitForOperation(api, operation);
      process.stdout.write(`Backup ${backup} restored on ${done.target}.\n`);
    },
  );

  modelOption(
    program
      .command('remove-application-backup <backup>')
      .description("Remove an application backup: its artifact from the controller's backup store, and its record")
      .option('--no-wait', 'return at once with the operation id'),
  ).action(async (backup: string, opts: { model: string; wait: boolean }) => {
    const api = new ApiClient();
    const id = positiveInt(backup, 'backup id');
    const { operation } = await api.delete<{ operation: Operation }>(`/v1/models/${enc(opts.model)}/backups/${id}`);
    if (!opts.wait) {
      process.stdout.write(`operation ${operation.id} (${operation.kind}) started\n`);
      return;
    }
    await waitForOperation(api, operation);
    process.stdout.write(`Backup ${id} removed.\n`);
  });

  modelOption(
    program
      .command('schedules')
      .description("List the model's schedules (recurring backups and refreshes) with their next and last runs")
      .option('--app <application>', "only this application's")
      .option('--format <format>', 'json, yaml or tabular'),
  ).action(async (opts: { model: string; app?: string; format?: string }) => {
    const q = opts.app ? `?application=${enc(opts.app)}` : '';
    const { schedules } = await new ApiClient().get<{ schedules: Schedule[] }>(
      `/v1/models/${enc(opts.model)}/schedules${q}`,
    );
    if (printStructured(parseFormat(opts.format), { schedules })) return;
    if (schedules.length === 0) {
      process.stdout.write(
        `No schedules in model ${opts.model}. Add one with: charmflow schedule add backup APP --cron "0 3 * * *"\n`,
      );
      return;
    }
    process.stdout.write(
      `${table(
        ['ID', 'Kind', 'Target', 'When', 'Overlap', 'State', 'Next run', 'Runs', 'Last run'],
        schedules.map((s) => [
          s.id,
          s.kind,
          scheduleTarget(s),
          when(s),
          s.overlap,
          s.paused ? 'paused' : 'active',
          s.paused ? '' : since(s.temporal?.nextRuns[0] ?? null),
          s.temporal
            ? `${s.temporal.actionsTaken}${s.temporal.skippedOverlap ? ` (+${s.temporal.skippedOverlap} skipped)` : ''}`
            : '?',
          lastRun(s.lastRun),
        ]),
      )}\n`,
    );
  });

  const schedule = program
    .command('schedule')
    .description(
      'Recurring backups and refreshes of an application, as Temporal Schedules: add, show, pause, resume, trigger, delete',
    );

  modelOption(
    schedule
      .command('add <kind> <application> [params...]')
      .description(
        "Add a schedule: kind backup (the backup action on --unit, the leader by default; params: the action's, key=value) " +
          'or refresh (to --revision N, the charm at --path, or the newest revision when each run starts). ' +
          'Give --cron EXPR [--timezone TZ] or --interval D',
      )
      .option('--cron <expr>', 'cron expression: "0 3 * * *" (minute hour day-of-month month day-of-week), @daily, …')
      .option('--timezone <tz>', 'IANA time zone of --cron (default UTC)')
      .option('--interval <duration>', 'every this long: 30s, 10m, 1h30m, 1d')
      .option(
        '--overlap <policy>',
        'a run due while the last still runs: skip, buffer-one, buffer-all, allow-all, cancel-other, terminate-other',
        'skip',
      )
      .option('--unit <unit>', 'backup: the unit (N or leader)')
      .option('--keep <n>', 'backup: keep only the newest N backups this schedule made')
      .option('--revision <n>', 'refresh: a revision of the charm already uploaded')
      .option('--path <path>', 'refresh: a charm directory or .charm file, uploaded now')
      .option('--max-unavailable <n>', 'refresh: units refreshed at a time')
      .option('--gate-timeout <seconds>', 'refresh: how long each batch has to be active')
      .option('--probe <action>', 'refresh: an action each refreshed unit must complete')
      .option('--paused', 'make it paused')
      .option('--note <text>', 'a note shown with it (and in the Temporal UI)')
      .option('--string-args', 'take every param value as a string')
      .option('--format <format>', 'json or yaml (the schedule)'),
  ).action(
    async (
      kind: string,
      application: string,
      pairs: string[],
      opts: {
        model: string;
        cron?: string;
        timezone?: string;
        interval?: string;
        overlap: string;
        unit?: string;
        keep?: string;
        revision?: string;
        path?: string;
        maxUnavailable?: string;
        gateTimeout?: string;
        probe?: string;
        paused?: boolean;
        note?: string;
        stringArgs?: boolean;
        format?: string;
      },
    ) => {
      if (kind !== 'backup' && kind !== 'refresh') {
        throw new CliError(`invalid kind "${kind}": expected backup or refresh`, 2);
      }
      if (opts.cron !== undefined && opts.interval !== undefined)
        throw new CliError('give --cron or --interval, not both', 2);
      if (opts.cron === undefined && opts.interval === undefined)
        throw new CliError('give --cron EXPR or --interval D', 2);
      if (opts.path && opts.revision) throw new CliError('give --path or --revision, not both', 2);
      const api = new ApiClient();
      const body: Record<string, unknown> = {
        kind,
        application,
        overlap: opts.overlap,
        paused: opts.paused === true,
        ...(opts.cron !== undefined ? { cron: opts.cron } : {}),
        ...(opts.interval !== undefined ? { interval: opts.interval } : {}),
        ...(opts.timezone !== undefined ? { timezone: opts.timezone } : {}),
        ...(opts.note !== undefined ? { note: opts.note } : {}),
      };
      if (kind === 'backup') {
        if (opts.revision || opts.path || opts.maxUnavailable || opts.gateTimeout || opts.probe) {
          throw new CliError('--revision, --path, --max-unavailable, --gate-timeout and --probe are for refresh', 2);
        }
        if (opts.unit !== undefined) body.unit = opts.unit;
        if (opts.keep !== undefined) body.keep = positiveInt(opts.keep, '--keep');
        if (pairs.length > 0) body.params = parseActionParams(pairs, opts.stringArgs);
      } else {
        if (opts.unit !== undefined || opts.keep !== undefined || pairs.length > 0) {
          throw new CliError('--unit, --keep and params are for backup', 2);
        }
        if (opts.revision) body.revision = positiveInt(opts.revision, '--revision');
        if (opts.maxUnavailable) body.maxUnavailable = positiveInt(opts.maxUnavailable, '--max-unavailable');
        if (opts.gateTimeout) body.gateTimeoutSeconds = positiveInt(opts.gateTimeout, '--gate-timeout');
        if (opts.probe) body.probe = opts.probe;
        if (opts.path) {
          // uploaded now: the schedule keeps the revision
          const uploaded = await uploadCharm(api, opts.path);
          body.revision = uploaded.revision;
          body.charm = uploaded.name;
        }
      }
      const { schedule: s } = await api.post<{ schedule: Schedule }>(`/v1/models/${enc(opts.model)}/schedules`, body);
      if (printStructured(parseFormat(opts.format, 'tabular'), s)) return;
      process.stdout.write(
        `Schedule ${s.id} (${s.scheduleId}): ${s.kind} ${scheduleTarget(s)}, ${when(s)}, overlap ${s.overlap}${s.paused ? ', paused' : ''}.\n`,
      );
    },
  );

  schedule
    .command('show <id>')
    .description('A schedule and its runs, newest first, with the operation each made and its outcome')
    .option('--limit <n>', 'runs shown', '20')
    .option('--format <format>', 'json, yaml or tabular')
    .action(async (id: string, opts: { limit: string; format?: string }) => {
      const res = await new ApiClient().get<{ schedule: Schedule; runs: Run[] }>(
        `/v1/schedules/${scheduleNumber(id)}?limit=${positiveInt(opts.limit, '--limit')}`,
      );
      if (printStructured(parseFormat(opts.format), res)) return;
      const s = res.schedule;
      const lines = [
        `Schedule ${s.id}: ${s.kind} ${scheduleTarget(s)}`,
        `  Temporal schedule: ${s.scheduleId}`,
        `  When:    ${when(s)}, overlap ${s.overlap}`,
        `  State:   ${s.paused ? 'paused' : 'active'}${s.note ? ` (${s.note})` : ''}`,
      ];
      if (s.temporal) {
        lines.push(
          `  Next:    ${s.paused ? '-' : s.temporal.nextRuns.slice(0, 3).map(since).join(', ')}`,
          `  Runs:    ${s.temporal.actionsTaken} started, ${s.temporal.skippedOverlap} skipped (overlap)${s.temporal.running.length > 0 ? `, running: ${s.temporal.running.join(', ')}` : ''}`,
        );
      }
      process.stdout.write(`${lines.join('\n')}\n`);
      if (res.runs.length === 0) {
        process.stdout.write('No runs yet.\n');
        return;
      }
      process.stdout.write(
        `\n${table(
          ['Started', 'Finished', 'State', 'Operation', 'Message'],
          res.runs.map((r) => [since(r.startedAt), since(r.finishedAt), r.state, r.operationId ?? '', r.message]),
        )}\n`,
      );
    });

  for (const [verb, what] of [
    ['pause', 'Pause a schedule: no run starts until it is resumed'],
    ['resume', 'Resume a paused schedule'],
    ['trigger', 'Run a schedule now (its overlap policy applies)'],
  ] as const) {
    schedule
      .command(`${verb} <id>`)
      .description(what)
      .option('--note <text>', 'why (pause, resume)')
      .action(async (id: string, opts: { note?: string }) => {
        const n = scheduleNumber(id);
        const { schedule: s } = await new ApiClient().post<{ schedule: Schedule }>(
          `/v1/schedules/${n}/${verb}`,
          opts.note !== undefined && verb !== 'trigger' ? { note: opts.note } : {},
        );
        const done = verb === 'pause' ? 'paused' : verb === 'resume' ? 'resumed' : 'triggered';
        process.stdout.write(`Schedule ${s.id} (${s.kind} ${scheduleTarget(s)}) ${done}.\n`);
      });
  }

  schedule
    .command('delete <id>')
    .description('Delete a schedule (a run in progress goes on; the operations its runs made stay)')
    .action(async (id: string) => {
      const { schedule: s } = await new ApiClient().delete<{ schedule: Schedule }>(
        `/v1/schedules/${scheduleNumber(id)}`,
      );
      process.stdout.write(`Schedule ${s.id} (${s.kind} ${scheduleTarget(s)}) deleted.\n`);
    });
}
