import type { Command } from 'commander';
import type { Operation } from '../../api/schemas.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { parseFormat, printStructured, since, table } from '../output.ts';

export function registerOperations(program: Command): void {
  program
    .command('operations')
    .description('List operations, newest first')
    .option('-m, --model <model>', 'only this model')
    .option('--state <state>', 'only operations in this state (pending, running, succeeded, failed)')
    .option('--limit <n>', 'at most this many', '50')
    .option('--format <format>', 'json, yaml or tabular')
    .action(async (opts: { model?: string; state?: string; limit: string; format?: string }) => {
      const format = parseFormat(opts.format);
      const q = new URLSearchParams({ limit: opts.limit });
      if (opts.model) q.set('model', opts.model);
      if (opts.state) q.set('state', opts.state);
      const { operations } = await new ApiClient().get<{ operations: Operation[] }>(`/v1/operations?${q}`);
      if (printStructured(format, { operations })) return;
      if (operations.length === 0) {
        process.stdout.write('No operations.\n');
        return;
      }
      process.stdout.write(
        `${table(
          ['ID', 'Kind', 'Model', 'Target', 'State', 'Started', 'Summary'],
          operations.map((o) => [
            o.id,
            o.kind,
            o.model,
            o.target,
            o.state,
            since(o.createdAt),
            o.state === 'failed' ? `${o.summary}: ${o.error}` : o.summary,
          ]),
        )}\n`,
      );
    });

  program
    .command('show-operation <id>')
    .description('Show one operation')
    .option('--format <format>', 'json, yaml or tabular', 'yaml')
    .action(async (id: string, opts: { format?: string }) => {
      if (!/^\d+$/.test(id)) throw new CliError(`invalid operation id "${id}": expected a number`, 2);
      const format = parseFormat(opts.format, 'yaml');
      const op = await new ApiClient().get<Operation>(`/v1/operations/${id}`);
      if (printStructured(format === 'tabular' ? 'yaml' : format, op)) return;
    });
}
