// charmflow migrate-model MODEL --to URL --token T: move a model to another controller
// (api/routes/model-migration.ts, workflows/model-migration-workflows.ts), and
// charmflow migrations: the models this controller moved, or is moving, away.
import type { Command } from 'commander';
import type { MigrationPlan, MigrationsView } from '../../api/routes/model-migration.ts';
import type { Operation } from '../../api/schemas.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { parseFormat, printStructured, since, table } from '../output.ts';
import { finishMutation } from './models.ts';

const enc = encodeURIComponent;

type Migrations = import('zod').infer<typeof MigrationsView>;

export function registerModelMigration(program: Command): void {
  program
    .command('migrate-model <model>')
    .description(
      'Move a model (SSH clouds only) to another controller: its store rows, charms, relation and leader data, ' +
        'secrets and machine credentials; the unit agents are handed over, and the model goes from here only once ' +
        'the target confirms. A failure at any step leaves the model working here, and the migration can be run again.',
    )
    .requiredOption('--to <url>', "the target controller's API URL, e.g. http://10.0.0.2:17070")
    .option('--token <token>', 'an admin token of the target controller (or CHARMFLOW_MIGRATE_TOKEN)')
    .option('--dry-run', 'check and say what would move; change nothing')
    .option('--format <format>', 'json: print the plan as JSON (with --dry-run)')
    .option('--no-wait', 'return at once with the operation id')
    .action(
      async (model: string, opts: { to: string; token?: string; dryRun?: boolean; format?: string; wait: boolean }) => {
        const token = opts.token ?? process.env.CHARMFLOW_MIGRATE_TOKEN;
        if (!token) throw new CliError('give --token T (or CHARMFLOW_MIGRATE_TOKEN): an admin token of the target', 2);
        if (opts.format !== undefined && opts.format !== 'json') throw new CliError('--format: expected json', 2);
        const api = new ApiClient();
        const res = await api.post<{ migration: MigrationPlan; operation?: Operation }>(
          `/v1/models/${enc(model)}/migrate`,
          { to: opts.to, token, ...(opts.dryRun ? { dryRun: true } : {}) },
        );
        const { migration } = res;
        if (res.operation) {
          await finishMutation(
            api,
            res.operation,
            opts,
            () => `Model "${migration.model}" moved to ${migration.to}; it is no longer on this controller.`,
          );
          return;
        }
        if (opts.format === 'json') {
          console.log(JSON.stringify(migration, null, 2));
          return;
        }
        console.log(`Model "${migration.model}" (cloud ${migration.cloud}) can move to ${migration.to}:`);
        for (const a of migration.applications) {
          console.log(`  ${a.name} (${a.charm}): ${a.units.join(', ') || 'no units'}`);
        }
        console.log(
          `  machines: ${migration.machines.map((m) => `${m.id} (${m.address ?? '?'})`).join(', ') || 'none'}`,
        );
        console.log(`  integrations: ${migration.integrations.join(', ') || 'none'}`);
      },
    );

  program
    .command('migrations')
    .description('List the models this controller moved, or is moving, to other controllers')
    .option('--format <format>', 'json, yaml or tabular')
    .action(async (opts: { format?: string }) => {
      const format = parseFormat(opts.format);
      const { migrations } = await new ApiClient().get<{ migrations: Migrations }>('/v1/migrations');
      if (printStructured(format, { migrations: migrations.outgoing })) return;
      if (migrations.outgoing.length === 0) {
        console.log('No model has moved from this controller.');
        return;
      }
      console.log(
        table(
          ['Operation', 'Model', 'To', 'State', 'Started', 'Error'],
          migrations.outgoing.map((m) => [m.operationId, m.model, m.to, m.state, since(m.createdAt), m.error ?? '']),
        ),
      );
    });
}
