import type { Command } from 'commander';
import type { Operation } from '../../api/schemas.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { finishMutation } from './models.ts';

const enc = encodeURIComponent;

function machineList(value: string | undefined): string[] | undefined {
  if (value === undefined) return undefined;
  const ids = value.split(',').map((s) => s.trim());
  for (const id of ids)
    if (!/^\d+$/.test(id)) throw new CliError(`invalid machine "${id}" in --to: expected numbers`, 2);
  return ids;
}

export function registerMigrate(program: Command): void {
  program
    .command('migrate <application>')
    .description(
      "Move an application's units to other machines with no downtime: new units on the targets, wait until they " +
        'are settled and integrated, drain the old units from their relations, then remove them. A failure rolls back.',
    )
    .option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default')
    .option('--to <machines>', 'target machine numbers, one per unit in order (fewer: units share them)')
    .option('--to-cloud <cloud>', 'new machines on this cloud instead (local)')
    .option('--settle-timeout <seconds>', 'how long the new units have to settle before it rolls back', '600')
    .option('--no-wait', 'return at once with the operation id')
    .action(
      async (
        application: string,
        opts: { model: string; to?: string; toCloud?: string; settleTimeout: string; wait: boolean },
      ) => {
        if ((opts.to === undefined) === (opts.toCloud === undefined)) {
          throw new CliError('give --to MACHINES or --to-cloud CLOUD', 2);
        }
        if (!/^\d+$/.test(opts.settleTimeout)) throw new CliError('--settle-timeout: expected seconds', 2);
        const api = new ApiClient();
        const { operation } = await api.post<{ operation: Operation }>(
          `/v1/models/${enc(opts.model)}/applications/${enc(application)}/migrate`,
          {
            ...(opts.to ? { to: machineList(opts.to) } : { toCloud: opts.toCloud }),
            settleTimeoutSeconds: Number(opts.settleTimeout),
          },
        );
        await finishMutation(api, operation, opts, () => `Migrated "${application}".`);
      },
    );

  program
    .command('evacuate-machine <machine>')
    .description('Move every unit off a machine (as migrate does, application by application)')
    .option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default')
    .option('--to <machines>', 'target machine numbers (the local cloud makes new ones when left out)')
    .option('--settle-timeout <seconds>', 'how long the new units have to settle before it rolls back', '600')
    .option('--no-wait', 'return at once with the operation id')
    .action(async (machine: string, opts: { model: string; to?: string; settleTimeout: string; wait: boolean }) => {
      if (!/^\d+$/.test(machine)) throw new CliError(`invalid machine "${machine}": expected a number`, 2);
      const api = new ApiClient();
      const { operation } = await api.post<{ operation: Operation }>(
        `/v1/models/${enc(opts.model)}/machines/${machine}/evacuate`,
        { ...(opts.to ? { to: machineList(opts.to) } : {}), settleTimeoutSeconds: Number(opts.settleTimeout) },
      );
      await finishMutation(api, operation, opts, () => `Evacuated machine ${machine}.`);
    });
}
