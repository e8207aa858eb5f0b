import type { Command } from 'commander';
import { stringify } from 'yaml';
import type { Operation } from '../../api/schemas.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { uploadCharm } from '../charm-upload.ts';
import { parseFormat, printStructured } from '../output.ts';
import { finishMutation } from './models.ts';

const modelOption = (cmd: Command) =>
  cmd.option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default');

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

export function parseUnitName(name: string): { app: string; n: number } {
  const m = name.match(/^([a-z][a-z0-9-]*)\/(\d+)$/);
  if (!m) throw new CliError(`invalid unit name "${name}": expected APP/N, e.g. web/0`, 2);
  return { app: m[1], n: Number(m[2]) };
}

function parseAssignments(pairs: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new CliError(`invalid config "${p}": expected key=value`, 2);
    out[p.slice(0, eq)] = p.slice(eq + 1);
  }
  return out;
}

const enc = encodeURIComponent;

/** PUT …/scale: an operation with the units it adds or removes, or (200) nothing to do. */
type ScaleAnswer =
  | { operation: Operation; from: number; scale: number; added: string[]; removed: string[] }
  | { operation: null; message: string };

export function registerApplications(program: Command): void {
  modelOption(
    program
      .command('deploy <charm> [application]')
      .description('Deploy a charm (a directory, a .charm file, or the name of an uploaded charm) as an application')
      .option('-n, --num-units <n>', 'number of units', '1')
      .option('--to <machines>', 'comma-separated machine numbers to place the units on, in order')
      .option('--config <key=value>', 'a config value (repeatable)', collect, [])
      .option(
        '--charm-image <image>',
        "kubernetes models: the image of the units' charm container (default python:3.12-slim)",
      )
      .option('--no-wait', 'return at once with the operation id'),
  ).action(
    async (
      charmArg: string,
      application: string | undefined,
      opts: { numUnits: string; to?: string; config: string[]; charmImage?: string; wait: boolean; model: string },
    ) => {
      if (!/^\d+$/.test(opts.numUnits))
        throw new CliError(`invalid --num-units "${opts.numUnits}": expected a number`, 2);
      const config = parseAssignments(opts.config);
      const to = opts.to ? opts.to.split(',').map((s) => s.trim()) : undefined;
      const api = new ApiClient();
      const charm = await uploadCharm(api, charmArg);
      const { operation } = await api.post<{ operation: Operation }>(`/v1/models/${enc(opts.model)}/applications`, {
        charm: charm.name,
        revision: charm.revision,
        ...(application ? { application } : {}),
        numUnits: Number(opts.numUnits),
        ...(to ? { to } : {}),
        config,
        ...(opts.charmImage ? { charmImage: opts.charmImage } : {}),
      });
      const appName = application ?? charm.name;
      await finishMutation(
        api,
        operation,
        opts,
        () => `Deployed "${appName}" from charm ${charm.name} (rev ${charm.revision}) with ${opts.numUnits} unit(s).`,
      );
    },
  );

  modelOption(
    program
      .command('add-unit <application>')
      .description('Add units to an application; they join its integrations once started')
      .option('-n, --num-units <n>', 'number of units to add', '1')
      .option('--to <machines>', 'comma-separated machine numbers to place the units on, in order')
      .option('--no-wait', 'return at once with the operation id'),
  ).action(async (application: string, opts: { numUnits: string; to?: string; wait: boolean; model: string }) => {
    if (!/^\d+$/.test(opts.numUnits) || Number(opts.numUnits) < 1) {
      throw new CliError(`invalid --num-units "${opts.numUnits}": expected a number of at least 1`, 2);
    }
    const to = opts.to ? opts.to.split(',').map((s) => s.trim()) : undefined;
    const api = new ApiClient();
    const { operation } = await api.post<{ operation: Operation }>(
      `/v1/models/${enc(opts.model)}/applications/${enc(application)}/units`,
      { numUnits: Number(opts.numUnits), ...(to ? { to } : {}) },
    );
    await finishMutation(api, operation, opts, () => `Added ${opts.numUnits} unit(s) to "${application}".`);
  });

  modelOption(
    program
      .command('scale-application <application> <scale>')
      .description(
        'Scale an application to N units: new units join its integrations; going down removes the ' +
          'highest-numbered units first, the leader last (then the lowest unit left is elected)',
      )
      .option('--to <machines>', 'comma-separated machine numbers to place the new units on, in order')
      .option('--no-wait', 'return at once with the operation id'),
  ).action(async (application: string, scale: string, opts: { to?: string; wait: boolean; model: string }) => {
    if (!/^\d+$/.test(scale) || Number(scale) > 1000) {
      throw new CliError(`invalid scale "${scale}": expected a number of units from 0 to 1000`, 2);
    }
    const to = opts.to ? opts.to.split(',').map((s) => s.trim()) : undefined;
    const api = new ApiClient();
    const res = await api.put<ScaleAnswer>(`/v1/models/${enc(opts.model)}/applications/${enc(application)}/scale`, {
      scale: Number(scale),
      ...(to ? { to } : {}),
    });
    if (res.operation === null) {
      // already that many units: nothing was started
      process.stdout.write(`${res.message}\n`);
      return;
    }
    const { from, added, removed } = res;
    const what = added.length > 0 ? `added ${added.join(', ')}` : `removed ${removed.join(', ')}`;
    await finishMutation(
      api,
      res.operation,
      opts,
      () => `Scaled "${application}" from ${from} to ${scale} unit(s): ${what}.`,
    );
  });

  modelOption(
    program
      .command('config <application> [assignments...]')
      .description("Show an application's config, or set values (key=value ...) and run config-changed on every unit")
      .option('--reset <keys>', 'comma-separated keys to reset to their defaults')
      .option('--timeout <seconds>', 'fail if config-changed is not done on every unit within this time')
      .option('--format <format>', 'json, yaml or tabular (when showing)')
      .option('--no-wait', 'return at once with the operation id'),
  ).action(
    async (
      application: string,
      assignments: string[],
      opts: { reset?: string; timeout?: string; format?: string; wait: boolean; model: string },
    ) => {
      if (opts.timeout !== undefined && !/^\d+$/.test(opts.timeout))
        throw new CliError(`invalid --timeout "${opts.timeout}": expected seconds`, 2);
      const api = new ApiClient();
      const path = `/v1/models/${enc(opts.model)}/applications/${enc(application)}/config`;
      if (assignments.length === 0 && !opts.reset) {
        const cfg = await api.get<{ settings: Record<string, { value?: unknown }> }>(path);
        const format = parseFormat(opts.format, 'yaml');
        if (printStructured(format === 'tabular' ? 'yaml' : format, cfg)) return;
        process.stdout.write(stringify(cfg));
        return;
      }
      const set = parseAssignments(assignments);
      const reset = opts.reset
        ? opts.reset
            .split(',')
            .map((s) => s.trim())
            .filter(Boolean)
        : [];
      const query = opts.timeout !== undefined ? `?${new URLSearchParams({ timeout: opts.timeout })}` : '';
      const { operation } = await api.put<{ operation: Operation }>(`${path}${query}`, { set, reset });
      await finishMutation(api, operation, opts, () => `Configured "${application}".`);
    },
  );

  modelOption(
    program
      .command('remove-unit <units...>')
      .description('Remove units: stop, then remove hooks; --force always finishes')
      .option('--force', 'remove even if hooks fail or the machine is unreachable')
      .option('--timeout <seconds>', 'how long to wait for the hooks before giving up', '300')
      .option('--no-wait', 'return at once with the operation id'),
  ).action(async (units: string[], opts: { force?: boolean; timeout: string; wait: boolean; model: string }) => {
    const api = new ApiClient();
    for (const u of units) {
      const { app, n } = parseUnitName(u);
      const q = new URLSearchParams({ force: String(Boolean(opts.force)), timeout: opts.timeout });
      const { operation } = await api.delete<{ operation: Operation }>(
        `/v1/models/${enc(opts.model)}/units/${enc(app)}/${n}?${q}`,
      );
      await finishMutation(api, operation, opts, () => `Removed unit ${u}.`);
    }
  });

  modelOption(
    program
      .command('remove-application <application>')
      .description('Remove an application and all its units')
      .option('--force', 'remove even if hooks fail or machines are unreachable')
      .option('--timeout <seconds>', 'how long to wait for the hooks before giving up', '300')
      .option('--no-wait', 'return at once with the operation id'),
  ).action(async (application: string, opts: { force?: boolean; timeout: string; wait: boolean; model: string }) => {
    const api = new ApiClient();
    const q = new URLSearchParams({ force: String(Boolean(opts.force)), timeout: opts.timeout });
    const { operation } = await api.delete<{ operation: Operation }>(
      `/v1/models/${enc(opts.model)}/applications/${enc(application)}?${q}`,
    );
    await finishMutation(api, operation, opts, () => `Removed application "${application}".`);
  });

  modelOption(
    program
      .command('resolve <unit>')
      .description("Retry a unit's failed hook now (or skip it with --no-retry)")
      .option('--no-retry', 'skip the failed hook instead of running it again')
      .option('--no-wait', 'return at once with the operation id'),
  ).action(async (unit: string, opts: { retry: boolean; wait: boolean; model: string }) => {
    const { app, n } = parseUnitName(unit);
    const api = new ApiClient();
    const { operation } = await api.post<{ operation: Operation }>(
      `/v1/models/${enc(opts.model)}/units/${enc(app)}/${n}/resolve`,
      { retry: opts.retry },
    );
    // the agent's answer: retried, skipped, or already being retried
    await finishMutation(api, operation, opts, (op) => {
      const answer = typeof op.progress?.step === 'string' ? op.progress.step : undefined;
      return `Resolved ${unit}: ${answer ?? `${opts.retry ? 'retrying' : 'skipping'} the failed hook`}.`;
    });
  });
}
