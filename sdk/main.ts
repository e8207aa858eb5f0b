// The entry point of a charm process: reads the hook environment, builds the
// charm and dispatches the event, and turns an uncaught error into a failed
// hook (message logged and on stderr, exit 1) so the runtime commits nothing.
import { type Charm, type CharmClass, type DispatchInfo, Framework } from './charm.ts';
import type { CharmTypes } from './events.ts';
import { createToolBackend } from './tool-backend.ts';

/** What the hook environment says this dispatch is; null outside a hook. */
export function dispatchInfoFromEnv(env: NodeJS.ProcessEnv = process.env): DispatchInfo | null {
  const path = env.JUJU_DISPATCH_PATH;
  const unit = env.JUJU_UNIT_NAME;
  if (!path || !unit) return null;
  const [dir, ...rest] = path.split('/');
  const name = rest.join('/') || dir;
  const kind = dir === 'actions' || env.JUJU_ACTION_NAME ? 'action' : 'hook';
  const info: DispatchInfo = {
    kind,
    name: kind === 'action' ? (env.JUJU_ACTION_NAME ?? name) : name,
    unit,
    model: env.JUJU_MODEL_NAME ?? '',
    charmDir: env.JUJU_CHARM_DIR ?? env.CHARM_DIR ?? process.cwd(),
  };
  const opt = {
    relationId: env.JUJU_RELATION_ID,
    remoteUnit: env.JUJU_REMOTE_UNIT,
    remoteApp: env.JUJU_REMOTE_APP,
    departingUnit: env.JUJU_DEPARTING_UNIT,
    actionId: env.JUJU_ACTION_UUID ?? env.JUJU_ACTION_ID,
    secretId: env.JUJU_SECRET_ID,
    secretLabel: env.JUJU_SECRET_LABEL,
  };
  for (const [k, v] of Object.entries(opt)) if (v) (info as unknown as Record<string, string>)[k] = v;
  if (env.JUJU_SECRET_REVISION) info.secretRevision = Number(env.JUJU_SECRET_REVISION);
  return info;
}

/**
 * Runs the charm for the event in the hook environment. Call it once at the end of
 * the charm's entry module: `run(MyCharm)`. Outside a hook (no JUJU_DISPATCH_PATH,
 * say when a test imports the module) it does nothing, so the same module serves the
 * test harness.
 */
export function run<C extends Charm<CharmTypes>>(charmClass: CharmClass<C>): Promise<void> | undefined {
  const info = dispatchInfoFromEnv();
  if (info === null) return undefined;
  const backend = createToolBackend();
  return (async () => {
    try {
      const framework = new Framework(backend, info);
      await framework.dispatch(new charmClass(framework));
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const where = info.kind === 'action' ? `action ${info.name}` : `${info.name} hook`;
      // The message first, on its own line, so the unit's error shows it; the stack after.
      process.stderr.write(`ERROR ${where}: ${message}\n`);
      if (err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
      try {
        backend.log('ERROR', `${where} failed: ${message}`);
        if (info.kind === 'action') backend.actionFail(message);
      } catch {
        // the tools may be what failed; stderr has the message
      }
      process.exitCode = 1;
    }
  })();
}
