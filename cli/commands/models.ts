import type { Command } from 'commander';
import type { Model, Operation } from '../../api/schemas.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { parseFormat, printStructured, since, table } from '../output.ts';
import { waitForOperation } from '../wait.ts';

export async function finishMutation(
  api: ApiClient,
  op: Operation,
  opts: { wait?: boolean },
  done: (op: Operation) => string,
): Promise<void> {
  if (opts.wait === false) {
    process.stdout.write(
      `operation ${op.id} (${op.kind}) started; follow it with: charmflow show-operation ${op.id}\n`,
    );
    return;
  }
  const finished = await waitForOperation(api, op);
  process.stdout.write(`${done(finished)}\n`);
}

export function registerModels(program: Command): void {
  program
    .command('models')
    .description('List models')
    .option('--format <format>', 'json, yaml or tabular')
    .action(async (opts: { format?: string }) => {
      const format = parseFormat(opts.format);
      const { models } = await new ApiClient().get<{ models: Model[] }>('/v1/models');
      if (printStructured(format, { models })) return;
      if (models.length === 0) {
        process.stdout.write('No models. Add one with: charmflow add-model NAME\n');
        return;
      }
      process.stdout.write(
        `${table(
          ['Model', 'Cloud', 'Status', 'Life', 'Created'],
          models.map((m) => [m.name, m.cloud, m.status, m.life, since(m.createdAt)]),
        )}\n`,
      );
    });

  program
    .command('add-model <name>')
    .description('Create a model')
    .option('--cloud <cloud>', 'cloud to create it on', 'local')
    .option('--no-wait', 'return at once with the operation id')
    .action(async (name: string, opts: { cloud: string; wait: boolean }) => {
      const api = new ApiClient();
      const { operation } = await api.post<{ operation: Operation }>('/v1/models', { name, cloud: opts.cloud });
      await finishMutation(api, operation, opts, () => `Added model "${name}" on cloud ${opts.cloud}.`);
    });

  program
    .command('model-config [assignments...]')
    .description(
      "Show a model's settings, or set them (key=value …): update-status-hook-interval (e.g. 30s, 5m; default 5m)",
    )
    .option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default')
    .option('--reset <keys>', 'comma-separated keys back to their defaults')
    .option('--format <format>', 'json, yaml or tabular')
    .action(async (assignments: string[], opts: { model: string; reset?: string; format?: string }) => {
      const api = new ApiClient();
      const path = `/v1/models/${encodeURIComponent(opts.model)}/config`;
      type Shown = Record<string, { value: string; default: string; description: string; source: string }>;
      let config: Shown;
      if (assignments.length > 0 || opts.reset) {
        const set: Record<string, string> = {};
        for (const a of assignments) {
          const eq = a.indexOf('=');
          if (eq <= 0) throw new CliError(`invalid setting "${a}": expected key=value`, 2);
          set[a.slice(0, eq)] = a.slice(eq + 1);
        }
        const reset = opts.reset ? opts.reset.split(',').map((k) => k.trim()) : [];
        ({ config } = await api.put<{ config: Shown }>(path, { set, reset }));
        if (!opts.format) return;
      } else {
        ({ config } = await api.get<{ config: Shown }>(path));
      }
      const format = parseFormat(opts.format);
      if (printStructured(format, config)) return;
      process.stdout.write(
        `${table(
          ['Key', 'Value', 'Source', 'Description'],
          Object.entries(config).map(([k, v]) => [k, v.value, v.source, v.description]),
        )}\n`,
      );
    });

  program
    .command('destroy-model <name>')
    .description('Destroy a model and everything in it')
    .option('--no-wait', 'return at once with the operation id')
    .action(async (name: string, opts: { wait: boolean }) => {
      const api = new ApiClient();
      const { operation } = await api.delete<{ operation: Operation }>(`/v1/models/${encodeURIComponent(name)}`);
      await finishMutation(api, operation, opts, () => `Destroyed model "${name}".`);
    });
}
