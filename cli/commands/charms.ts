import { existsSync } from 'node:fs';
import type { Command } from 'commander';
import type { CharmListEntry } from '../../api/routes/charms.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { uploadCharm } from '../charm-upload.ts';
import { parseFormat, printStructured, table } from '../output.ts';

export function registerCharms(program: Command): void {
  program
    .command('charms')
    .description('List the charms the controller has, with their revisions')
    .option('--format <format>', 'json, yaml or tabular')
    .action(async (opts: { format?: string }) => {
      const format = parseFormat(opts.format);
      const { charms } = await new ApiClient().get<{ charms: CharmListEntry[] }>('/v1/charms');
      if (printStructured(format, { charms })) return;
      if (charms.length === 0) {
        process.stdout.write('No charms. Upload one with: charmflow upload DIR\n');
        return;
      }
      process.stdout.write(
        `${table(
          ['Charm', 'Latest', 'Revisions', 'Summary'],
          charms.map((c) => [c.name, c.latest, c.revisions.join(','), c.summary]),
        )}\n`,
      );
    });

  program
    .command('upload <path>')
    .description('Upload a charm directory or .charm file; the same content keeps its revision')
    .action(async (path: string) => {
      if (!existsSync(path)) throw new CliError(`no charm directory or .charm file at ${path}`);
      const charm = await uploadCharm(new ApiClient(), path);
      const note = charm.created === false ? ' (unchanged)' : '';
      process.stdout.write(`uploaded charm "${charm.name}" revision ${charm.revision}${note}\n`);
    });
}
