import type { Command } from 'commander';
import { loadConfig } from '../../controller/config.ts';
import { runUntilSignal } from '../run-until-signal.ts';

// The controller (Temporal worker, store, API server) loads only for the commands that run it,
// so every other command starts fast.
const loadController = () => import('../../controller/controller.ts');

export function registerUp(program: Command): void {
  program
    .command('up')
    .description(
      'Start the controller in the foreground: Temporal dev server (unless TEMPORAL_ADDRESS), worker and API',
    )
    .option('--headless', 'do not start the Temporal Web UI')
    .option('--quiet', 'do not log each API request')
    .addHelpText(
      'after',
      `
Environment:
  CHARMFLOW_DATA_DIR   where state is kept (default ~/.local/share/charmflow)
  CHARMFLOW_API_PORT   API port on 127.0.0.1 (default 17070); CHARMFLOW_API_HOST to bind elsewhere
  TEMPORAL_ADDRESS     use this Temporal cluster instead of the embedded dev server
  DATABASE_URL         use this Postgres for the model store instead of embedded PGlite
  CHARMFLOW_TEMPORAL_PORT / CHARMFLOW_TEMPORAL_UI_PORT   dev server ports (7233 / 8233)`,
    )
    .action(async (opts: { headless?: boolean; quiet?: boolean }) => {
      const started = Date.now();
      const config = loadConfig();
      await runUntilSignal(
        async () =>
          (await loadController()).startController(config, {
            headless: opts.headless,
            logRequests: !opts.quiet,
            onProgress: (m) => process.stderr.write(`charmflow: ${m}\n`),
          }),
        (handle) => {
          const secs = ((Date.now() - started) / 1000).toFixed(1);
          process.stdout.write(
            [
              `charmflow controller is up (${secs}s)`,
              `  API:          ${handle.apiUrl}/v1`,
              `  API docs:     ${handle.apiUrl}/docs   (OpenAPI: ${handle.apiUrl}/openapi.json)`,
              `  Temporal UI:  ${handle.temporalUiUrl ?? `(external cluster at ${handle.temporalAddress})`}`,
              `  Admin token:  ${handle.adminTokenFile} (readable by its owner only)`,
              `  Data dir:     ${config.dataDir}`,
              `  Store:        ${handle.store.kind}`,
              'Press Ctrl-C to stop.',
              '',
            ].join('\n'),
          );
        },
      );
    });
}
