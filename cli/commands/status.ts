import type { Command } from 'commander';
import type { ModelStatus } from '../../api/routes/status.ts';
import { ApiClient } from '../api-client.ts';
import { parseFormat, printStructured, table } from '../output.ts';
import { statusIntegrations } from './integrations.ts';

export function renderStatus(s: ModelStatus): string {
  const out: string[] = [];
  out.push(
    table(
      ['Model', 'Cloud', 'Status'],
      [
        [
          s.model.name,
          s.model.cloud,
          s.model['model-status'].current + (s.model.life !== 'alive' ? ` (${s.model.life})` : ''),
        ],
      ],
    ),
  );
  const apps = Object.entries(s.applications);
  if (apps.length > 0) {
    out.push(
      '',
      table(
        ['App', 'Version', 'Status', 'Scale', 'Charm', 'Rev', 'Message'],
        apps.map(([name, a]) => [
          name,
          a.version ?? '',
          a['application-status'].current,
          a.scale,
          a.charm,
          a['charm-rev'],
          a['application-status'].message ?? '',
        ]),
      ),
    );
    const unitRows: string[][] = [];
    for (const [, a] of apps) {
      for (const [uname, u] of Object.entries(a.units)) {
        unitRows.push([
          uname + (u.leader ? '*' : ''),
          u['workload-status'].current,
          u['juju-status'].current,
          u.machine ?? '',
          u['public-address'],
          (u['open-ports'] ?? []).join(','),
          u['workload-status'].message ?? u['juju-status'].message ?? '',
        ]);
      }
    }
    if (unitRows.length > 0) {
      out.push('', table(['Unit', 'Workload', 'Agent', 'Machine', 'Address', 'Ports', 'Message'], unitRows));
    }
  }
  const machines = Object.entries(s.machines);
  if (machines.length > 0) {
    out.push(
      '',
      table(
        ['Machine', 'State', 'Address', 'Message'],
        machines.map(([id, m]) => [id, m['juju-status'].current, m['dns-name'], m['juju-status'].message ?? '']),
      ),
    );
  }
  if (apps.length === 0 && machines.length === 0) out.push('', `Model "${s.model.name}" is empty.`);
  return `${out.join('\n')}\n`;
}

export function registerStatus(program: Command): void {
  program
    .command('status')
    .description("Show a model's applications, units and machines")
    .option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default')
    .option('--format <format>', 'json, yaml or tabular')
    .option('--relations', 'also show the Integration table (provider, requirer, interface, type)')
    .action(async (opts: { model: string; format?: string; relations?: boolean }) => {
      const format = parseFormat(opts.format);
      const s = await new ApiClient().get<ModelStatus>(`/v1/models/${encodeURIComponent(opts.model)}/status`);
      if (printStructured(format, s)) return;
      process.stdout.write(renderStatus(s) + (opts.relations ? statusIntegrations(s) : ''));
    });
}
