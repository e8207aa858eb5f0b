import type { Command } from 'commander';
import type { Operation } from '../../api/schemas.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { uploadCharm } from '../charm-upload.ts';
import { parseFormat, printStructured } from '../output.ts';
import { finishMutation } from './models.ts';

const enc = encodeURIComponent;

interface Plan {
  application: string;
  charm: string;
  from: number;
  to: number;
  batches: string[][];
  hooks: string[];
  gate: string;
}

function renderPlan(plan: Plan): string {
  const lines = [
    `refresh ${plan.application}: ${plan.charm} revision ${plan.from} → ${plan.to}, ${plan.batches.length} batch(es):`,
    ...plan.batches.map((b, i) => `  ${i + 1}. ${b.join(', ')}: ${plan.hooks.join(' → ')}, then the health gate`),
    `gate: ${plan.gate}`,
  ];
  return `${lines.join('\n')}\n`;
}

function positiveInt(value: string, flag: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1)
    throw new CliError(`invalid ${flag} "${value}": expected a number of at least 1`, 2);
  return Number(value);
}

export function registerRefresh(program: Command): void {
  program
    .command('refresh <application>')
    .description(
      'Refresh an application to another charm revision in rolling batches (the leader last): upgrade-charm and ' +
        'config-changed per unit, then a health gate (every unit active); a failed gate rolls every refreshed unit back',
    )
    .option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default')
    .option('--path <path>', 'a charm directory or .charm file to upload and refresh to')
    .option('--revision <n>', 'a revision of the charm already uploaded')
    .option('--max-unavailable <n>', 'units refreshed at a time', '1')
    .option('--pause-after-first', 'stop after the first batch until resume-operation (or abort-operation)')
    .option('--gate-timeout <seconds>', 'how long each batch has to be active', '300')
    .option('--probe <action>', 'an action every refreshed unit must also complete, as part of the gate')
    .option('--dry-run', 'print the plan (units, order, hooks) and change nothing')
    .option('--format <format>', 'json or yaml for --dry-run (default: text)')
    .option('--no-wait', 'return at once with the operation id')
    .action(
      async (
        application: string,
        opts: {
          model: string;
          path?: string;
          revision?: string;
          maxUnavailable: string;
          pauseAfterFirst?: boolean;
          gateTimeout: string;
          probe?: string;
          dryRun?: boolean;
          format?: string;
          wait: boolean;
        },
      ) => {
        if (opts.path && opts.revision) throw new CliError('give --path or --revision, not both', 2);
        const api = new ApiClient();
        let revision = opts.revision ? positiveInt(opts.revision, '--revision') : undefined;
        let charm: string | undefined;
        if (opts.path) {
          const uploaded = await uploadCharm(api, opts.path);
          revision = uploaded.revision;
          charm = uploaded.name;
        }
        const body = {
          ...(revision !== undefined ? { revision } : {}),
          ...(charm ? { charm } : {}),
          maxUnavailable: positiveInt(opts.maxUnavailable, '--max-unavailable'),
          pauseAfterFirst: opts.pauseAfterFirst === true,
          gateTimeoutSeconds: positiveInt(opts.gateTimeout, '--gate-timeout'),
          ...(opts.probe ? { probe: opts.probe } : {}),
          dryRun: opts.dryRun === true,
        };
        const res = await api.post<{ plan: Plan; operation?: Operation }>(
          `/v1/models/${enc(opts.model)}/applications/${enc(application)}/refresh`,
          body,
        );
        if (opts.dryRun) {
          if (printStructured(parseFormat(opts.format), res.plan)) return;
          process.stdout.write(`${renderPlan(res.plan)}(dry run: nothing changed)\n`);
          return;
        }
        process.stderr.write(renderPlan(res.plan));
        await finishMutation(
          api,
          res.operation as Operation,
          opts,
          () => `Refreshed "${application}" to revision ${res.plan.to}.`,
        );
      },
    );

  for (const [verb, what] of [
    ['resume', 'Resume a refresh paused after its first batch'],
    ['abort', 'Abort a refresh: every unit it refreshed rolls back to the old revision'],
  ] as const) {
    program
      .command(`${verb}-operation <id>`)
      .description(what)
      .action(async (id: string) => {
        if (!/^\d+$/.test(id)) throw new CliError(`invalid operation id "${id}": expected a number`, 2);
        const { operation } = await new ApiClient().post<{ operation: Operation }>(`/v1/operations/${id}/${verb}`);
        process.stdout.write(`Operation ${operation.id} (${operation.summary}): ${verb} sent.\n`);
      });
  }
}
