// The `charmflow` command: an API client (plus `up`, which runs the controller).
import { Command, CommanderError } from 'commander';
import { CliError } from './api-client.ts';
import { registerActions } from './commands/actions.ts';
import { registerAppBackups } from './commands/app-backup.ts';
import { registerApplications } from './commands/applications.ts';
import { registerCharmDev } from './commands/charm-dev.ts';
import { registerCharms } from './commands/charms.ts';
import { registerClouds } from './commands/clouds.ts';
import { registerControllerBackups } from './commands/controller-backup.ts';
import { registerIntegrations } from './commands/integrations.ts';
import { registerLogs } from './commands/logs.ts';
import { registerMachines } from './commands/machines.ts';
import { registerMigrate } from './commands/migrate.ts';
import { registerModelMigration } from './commands/model-migration.ts';
import { registerModels } from './commands/models.ts';
import { registerOperations } from './commands/operations.ts';
import { registerRefresh } from './commands/refresh.ts';
import { registerServe } from './commands/serve.ts';
import { registerStatus } from './commands/status.ts';
import { registerTokens } from './commands/tokens.ts';
import { registerUp } from './commands/up.ts';
import { registerWait } from './commands/wait.ts';

export function buildProgram(): Command {
  const program = new Command('charmflow')
    .description('charmflow: run charms through their whole lifecycle, on durable Temporal workflows')
    .version('0.1.0')
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
  program.addHelpText(
    'after',
    `
The CLI talks to the controller's API: on the controller's host it finds it through
the data dir (CHARMFLOW_DATA_DIR); elsewhere set CHARMFLOW_URL and CHARMFLOW_TOKEN.`,
  );
  registerUp(program);
  registerModels(program);
  registerClouds(program);
  registerStatus(program);
  registerCharms(program);
  registerCharmDev(program);
  registerMachines(program);
  registerApplications(program);
  registerIntegrations(program);
  registerActions(program);
  registerRefresh(program);
  registerMigrate(program);
  registerModelMigration(program);
  registerAppBackups(program);
  registerControllerBackups(program);
  registerLogs(program);
  registerOperations(program);
  registerWait(program);
  registerTokens(program);
  registerServe(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // help and version exit 0; usage errors were already printed by commander
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof CliError) {
      process.stderr.write(`ERROR ${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`ERROR ${err instanceof Error ? err.message : String(err)}\n`);
    return 1;
  }
}

// `charmflow status | head`: a reader that went away ends the command quietly
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

const code = await main(process.argv);
// `up` keeps running until a signal; everything else exits with its code.
const longRunning = ['up', 'serve-api', 'worker'];
if (!process.argv.slice(2).some((a) => longRunning.includes(a)) || code !== 0) process.exitCode = code;
