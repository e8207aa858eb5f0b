import type { Command } from 'commander';
import { ApiClient } from '../api-client.ts';
import { parseFormat, printStructured, since, table } from '../output.ts';

interface Token {
  id: string;
  name: string;
  user: string;
  role: string;
  createdAt: string;
  revokedAt: string | null;
}

export function registerTokens(program: Command): void {
  program
    .command('tokens')
    .description('List API tokens (their secrets are never shown again)')
    .option('--format <format>', 'json, yaml or tabular')
    .action(async (opts: { format?: string }) => {
      const format = parseFormat(opts.format);
      const { tokens } = await new ApiClient().get<{ tokens: Token[] }>('/v1/tokens');
      if (printStructured(format, { tokens })) return;
      process.stdout.write(
        `${table(
          ['ID', 'Name', 'User', 'Role', 'Created', 'Revoked'],
          tokens.map((t) => [t.id, t.name, t.user, t.role, since(t.createdAt), since(t.revokedAt)]),
        )}\n`,
      );
    });

  program
    .command('add-token <name>')
    .description('Create an API token; its secret is printed once')
    .option('--role <role>', 'admin or read-only', 'read-only')
    .option('--format <format>', 'json, yaml or tabular')
    .action(async (name: string, opts: { role: string; format?: string }) => {
      const format = parseFormat(opts.format);
      const t = await new ApiClient().post<Token & { token: string }>('/v1/tokens', { name, role: opts.role });
      if (printStructured(format, t)) return;
      process.stdout.write(`Token ${t.id} (${t.role}) created. Keep it now; it is not shown again:\n${t.token}\n`);
    });

  program
    .command('revoke-token <id>')
    .description('Revoke an API token')
    .action(async (id: string) => {
      await new ApiClient().delete(`/v1/tokens/${encodeURIComponent(id)}`);
      process.stdout.write(`Token ${id} revoked.\n`);
    });
}
