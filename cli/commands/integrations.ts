import type { Command } from 'commander';
import type { Integration } from '../../api/routes/integrations.ts';
import type { ModelStatus } from '../../api/routes/status.ts';
import type { Operation } from '../../api/schemas.ts';
import { ApiClient } from '../api-client.ts';
import { parseFormat, printStructured, table } from '../output.ts';
import { finishMutation } from './models.ts';

const enc = encodeURIComponent;

const modelOption = (cmd: Command) =>
  cmd.option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default');

const endName = (e: Integration['provider'], model: string) =>
  `${e.model === model ? '' : `${e.model}.`}${e.application}:${e.endpoint}`;

/** Juju's Integration table (`status --relations`). */
export function renderIntegrations(integrations: Integration[], model: string): string {
  return table(
    ['Integration provider', 'Requirer', 'Interface', 'Type', 'Message'],
    integrations.map((i) => [
      endName(i.provider, model),
      endName(i.requirer, model),
      i.interface,
      i.type,
      i.life === 'alive' ? '' : i.life,
    ]),
  );
}

export function registerIntegrations(program: Command): void {
  modelOption(
    program
      .command('integrate <a> <b>')
      .description(
        'Integrate two applications: APP[:ENDPOINT] or, for an application in another model, MODEL.APP[:ENDPOINT]. ' +
          'Endpoints are matched by interface (provides ↔ requires) when only one pair fits.',
      )
      .option('--no-wait', 'return at once with the operation id'),
  ).action(async (a: string, b: string, opts: { model: string; wait: boolean }) => {
    const api = new ApiClient();
    const { operation } = await api.post<{ operation: Operation }>(`/v1/models/${enc(opts.model)}/integrations`, {
      a,
      b,
    });
    await finishMutation(api, operation, opts, () => `Integrated ${operation.target.replace(' ', ' with ')}.`);
  });

  modelOption(
    program
      .command('remove-integration <a> <b>')
      .alias('remove-relation')
      .description(
        'Remove an integration: every unit at both ends runs relation-departed and relation-broken, then its data goes',
      )
      .option('--timeout <seconds>', 'fail if the units have not run relation-broken within this time', '600')
      .option('--no-wait', 'return at once with the operation id'),
  ).action(async (a: string, b: string, opts: { model: string; wait: boolean; timeout: string }) => {
    const api = new ApiClient();
    const q = new URLSearchParams({ a, b, timeout: opts.timeout });
    const { operation } = await api.delete<{ operation: Operation }>(`/v1/models/${enc(opts.model)}/integrations?${q}`);
    await finishMutation(api, operation, opts, () => `Removed integration ${operation.target}.`);
  });

  modelOption(
    program
      .command('integrations')
      .description("List the model's integrations (peers, within the model, across models)")
      .option('--format <format>', 'json, yaml or tabular'),
  ).action(async (opts: { model: string; format?: string }) => {
    const format = parseFormat(opts.format);
    const { integrations } = await new ApiClient().get<{ integrations: Integration[] }>(
      `/v1/models/${enc(opts.model)}/integrations`,
    );
    if (printStructured(format, integrations)) return;
    if (integrations.length === 0) {
      process.stdout.write(`No integrations in model "${opts.model}".\n`);
      return;
    }
    process.stdout.write(`${renderIntegrations(integrations, opts.model)}\n`);
  });
}

/** `status --relations`: the Integration table after the rest. */
export function statusIntegrations(s: ModelStatus): string {
  const list = s.integrations ?? [];
  if (list.length === 0) return '';
  return `\n${renderIntegrations(list, s.model.name)}\n`;
}
