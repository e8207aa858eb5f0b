import type { Command } from 'commander';
import { loadConfig } from '../../controller/config.ts';
import { runUntilSignal } from '../run-until-signal.ts';

// The controller (Temporal worker, store, API server) loads only for the commands that run it,
// so every other command starts fast.
const loadController = () => import('../../controller/controller.ts');

/** Separate API and worker processes, for production (see docker-compose.yml). */
export function registerServe(program: Command): void {
  const run = async (role: 'api' | 'worker') => {
    const config = loadConfig();
    if (!config.temporalAddress || !config.databaseUrl) {
      process.stderr.write(
        `ERROR charmflow ${role === 'api' ? 'serve-api' : 'worker'} runs against shared services: set TEMPORAL_ADDRESS and DATABASE_URL (use \`charmflow up\` for the embedded controller)\n`,
      );
      process.exit(2);
    }
    await runUntilSignal(
      async () =>
        (await loadController()).startController(config, {
          api: role === 'api',
          worker: role === 'worker',
          logRequests: role === 'api',
          onProgress: (m) => process.stderr.write(`charmflow ${role}: ${m}\n`),
        }),
      (handle) => process.stdout.write(`charmflow ${role} ready${role === 'api' ? ` at ${handle.apiUrl}` : ''}\n`),
    );
  };
  program
    .command('serve-api')
    .description('Run only the API (production: TEMPORAL_ADDRESS and DATABASE_URL required)')
    .action(() => run('api'));
  program
    .command('worker')
    .description('Run only a worker (production: TEMPORAL_ADDRESS and DATABASE_URL required; run several)')
    .action(() => run('worker'));
}
