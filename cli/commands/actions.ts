import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { parse as parseYaml, stringify } from 'yaml';
import type { Operation } from '../../api/schemas.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { parseFormat, printStructured, table } from '../output.ts';
import { waitForOperation } from '../wait.ts';

const enc = encodeURIComponent;

const modelOption = (cmd: Command) =>
  cmd.option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default');

/** `k=v …` as Juju takes them: dotted keys nest, values read as YAML scalars (`--string-args`: as given). */
export function parseActionParams(pairs: string[], strings = false): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const p of pairs) {
    const eq = p.indexOf('=');
    if (eq <= 0) throw new CliError(`invalid parameter "${p}": expected key=value`, 2);
    const path = p.slice(0, eq).split('.');
    if (path.some((k) => k === '')) throw new CliError(`invalid parameter name "${p.slice(0, eq)}"`, 2);
    const raw = p.slice(eq + 1);
    let value: unknown = raw;
    if (!strings) {
      try {
        value = raw === '' ? '' : parseYaml(raw);
      } catch {
        value = raw;
      }
    }
    let at = out;
    for (const k of path.slice(0, -1)) {
      if (typeof at[k] !== 'object' || at[k] === null) at[k] = {};
      at = at[k] as Record<string, unknown>;
    }
    at[path[path.length - 1]] = value;
  }
  return out;
}

function showOutcome(op: Operation, format: 'json' | 'yaml' | 'tabular'): void {
  const outcome = op.action;
  if (format === 'json') {
    process.stdout.write(`${JSON.stringify({ id: op.id, unit: op.target, ...outcome }, null, 2)}\n`);
    return;
  }
  if (!outcome) return;
  for (const l of outcome.log) process.stderr.write(`${l.at} ${l.message}\n`);
  if (Object.keys(outcome.results).length > 0) process.stdout.write(stringify(outcome.results));
}

export function registerActions(program: Command): void {
  modelOption(
    program
      .command('run <unit> <action> [params...]')
      .description(
        'Run an action on a unit (APP/N, or APP/leader) with params key=value (dotted keys nest; values read as YAML). ' +
          'Prints its results; a failed action exits non-zero with its message (the unit is not put in error).',
      )
      .option('--params <file>', 'a YAML file of params (key=value arguments override it)')
      .option('--string-args', 'take every value as a string')
      .option('--background', 'queue it and return the operation id at once')
      .option('--format <format>', 'json or yaml (the results)', 'yaml'),
  ).action(
    async (
      unit: string,
      action: string,
      pairs: string[],
      opts: { model: string; params?: string; stringArgs?: boolean; background?: boolean; format: string },
    ) => {
      const format = parseFormat(opts.format, 'yaml');
      let params: Record<string, unknown> = {};
      if (opts.params) {
        let text: string;
        try {
          text = readFileSync(opts.params, 'utf8');
        } catch (err) {
          throw new CliError(`cannot read --params ${opts.params}: ${(err as Error).message}`, 2);
        }
        const parsed = parseYaml(text);
        if (parsed !== null && (typeof parsed !== 'object' || Array.isArray(parsed))) {
          throw new CliError(`--params ${opts.params}: expected a YAML map of params`, 2);
        }
        params = parsed ?? {};
      }
      params = { ...params, ...parseActionParams(pairs, opts.stringArgs) };
      const api = new ApiClient();
      const { operation } = await api.post<{ operation: Operation }>(`/v1/models/${enc(opts.model)}/actions`, {
        unit,
        action,
        params,
      });
      if (opts.background) {
        process.stdout.write(
          `Scheduled operation ${operation.id} (${action} on ${operation.target}); see it with: charmflow show-operation ${operation.id}\n`,
        );
        return;
      }
      try {
        const done = await waitForOperation(api, operation);
        showOutcome(done, format);
      } catch (err) {
        const op = await api.get<Operation>(`/v1/operations/${operation.id}`);
        showOutcome(op, format);
        throw err;
      }
    },
  );

  modelOption(
    program
      .command('actions <application>')
      .description("List an application's actions (with --schema, each one's params schema)")
      .option('--schema', 'show the params schemas')
      .option('--format <format>', 'json, yaml or tabular'),
  ).action(async (application: string, opts: { model: string; schema?: boolean; format?: string }) => {
    const format = parseFormat(opts.format, opts.schema ? 'yaml' : 'tabular');
    const { actions } = await new ApiClient().get<{
      actions: Record<string, { description: string; schema: Record<string, unknown> }>;
    }>(`/v1/models/${enc(opts.model)}/applications/${enc(application)}/actions`);
    const shown = opts.schema
      ? actions
      : Object.fromEntries(Object.entries(actions).map(([k, v]) => [k, v.description]));
    if (printStructured(format, shown)) return;
    if (Object.keys(actions).length === 0) {
      process.stdout.write(`Application "${application}" has no actions.\n`);
      return;
    }
    process.stdout.write(
      `${table(
        ['Action', 'Description'],
        Object.entries(actions).map(([k, v]) => [k, v.description.split('\n')[0]]),
      )}\n`,
    );
  });

  program
    .command('cancel-operation <id>')
    .description('Cancel a queued action (one already running runs to its end)')
    .action(async (id: string) => {
      if (!/^\d+$/.test(id)) throw new CliError(`invalid operation id "${id}": expected a number`, 2);
      const { operation } = await new ApiClient().post<{ operation: Operation }>(`/v1/operations/${id}/cancel`);
      process.stdout.write(`Operation ${operation.id} (${operation.summary}) cancelled.\n`);
    });
}
