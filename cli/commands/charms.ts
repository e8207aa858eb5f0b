import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { CharmListEntry } from '../../api/routes/charms.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { packCharmPath, uploadCharm } from '../charm-upload.ts';
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
    .command('pack <dir>')
    .description('Pack a charm directory into a .charm file (validated, deterministic)')
    .option('-o, --output <file>', 'where to write it (default: <name>.charm in the current directory)')
    .action(async (dir: string, opts: { output?: string }) => {
      const { name, archive, sha256 } = await packCharmPath(dir);
      const out = resolve(opts.output ?? `${name}.charm`);
      await writeFile(out, archive);
      // The content hash, which the controller reports for the revision holding this content.
      process.stdout.write(`${out}\nsha256 ${sha256}\n`);
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
