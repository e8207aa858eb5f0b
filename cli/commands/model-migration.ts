// charmflow migrate-model MODEL --to URL --token T: move a model to another controller
// (api/routes/model-migration.ts). For now only --dry-run does something: the checks,
// and what would move; the move itself is refused by the controller (501).
import type { Command } from 'commander';
import type { MigrationPlan } from '../../api/routes/model-migration.ts';
import { ApiClient, CliError } from '../api-client.ts';

const enc = encodeURIComponent;

export function registerModelMigration(program: Command): void {
  program
    .command('migrate-model <model>')
    .description(
      'Move a model (SSH clouds only) to another controller: its store rows, charms, relation and leader data, ' +
        'secrets and machine credentials; the unit agents are handed over. --dry-run checks and says what would move.',
    )
    .requiredOption('--to <url>', "the target controller's API URL")
    .option('--token <token>', 'an admin token of the target controller (or CHARMFLOW_MIGRATE_TOKEN)')
    .option('--dry-run', 'check and say what would move; change nothing')
    .option('--format <format>', 'json: print the plan as JSON (with --dry-run)')
    .action(async (model: string, opts: { to: string; token?: string; dryRun?: boolean; format?: string }) => {
      const token = opts.token ?? process.env.CHARMFLOW_MIGRATE_TOKEN;
      if (!token) throw new CliError('give --token T (or CHARMFLOW_MIGRATE_TOKEN): an admin token of the target', 2);
      if (opts.format !== undefined && opts.format !== 'json') throw new CliError('--format: expected json', 2);
      const api = new ApiClient();
      const { migration } = await api.post<{ migration: MigrationPlan }>(`/v1/models/${enc(model)}/migrate`, {
        to: opts.to,
        token,
        ...(opts.dryRun ? { dryRun: true } : {}),
      });
      if (opts.format === 'json') {
        console.log(JSON.stringify(migration, null, 2));
        return;
      }
      console.log(`Model "${migration.model}" (cloud ${migration.cloud}) can move to ${migration.to}:`);
      for (const a of migration.applications) {
        console.log(`  ${a.name} (${a.charm}): ${a.units.join(', ') || 'no units'}`);
      }
      console.log(`  machines: ${migration.machines.map((m) => `${m.id} (${m.address ?? '?'})`).join(', ') || 'none'}`);
      console.log(`  integrations: ${migration.integrations.join(', ') || 'none'}`);
    });
}
