// Helpers for the integration tests: when a model has settled, and what each unit
// of the relator fixture charm logged about its hooks.
import { unitAgentQuery, unitAgentWorkflowId } from '../../workflows/messages.ts';
import type { TestController } from './controller.ts';

/** One `REL <hook> key=value ...` line the relator charm logged. */
export interface RelLine {
  hook: string;
  fields: Record<string, string>;
}

export function parseRel(message: string): RelLine | null {
  // juju-log in a relation hook prefixes the relation id (`data:3: `)
  const m = /^(?:\S+: )?REL (\S+) (.*)$/.exec(message);
  if (!m) return null;
  const fields: Record<string, string> = {};
  for (const part of m[2].split(' ')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields[part.slice(0, eq)] = part.slice(eq + 1);
  }
  return { hook: m[1], fields };
}

/** Every REL line a unit logged, in order. */
export async function relLines(c: TestController, modelUuid: string, unit: string): Promise<RelLine[]> {
  const rows = await c.store.db
    .selectFrom('log_entries')
    .select('message')
    .where('model_uuid', '=', modelUuid)
    .where('entity', '=', unit)
    .orderBy('id')
    .execute();
  return rows.map((r) => parseRel(r.message)).filter((l): l is RelLine => l !== null);
}

/** Every hook a unit logged (`HOOK name` and `REL name` lines), in order. */
export async function hookNames(c: TestController, modelUuid: string, unit: string): Promise<string[]> {
  const rows = await c.store.db
    .selectFrom('log_entries')
    .select('message')
    .where('model_uuid', '=', modelUuid)
    .where('entity', '=', unit)
    .orderBy('id')
    .execute();
  return rows
    .map((r) => /^(?:\S+: )?(?:REL|HOOK) (\S+)/.exec(r.message)?.[1])
    .filter((h): h is string => h !== undefined);
}

/**
 * Waits until every unit agent of the models is idle with nothing queued, twice
 * in a row a little apart (a commit's wake may be on its way between two looks).
 */
export async function settle(c: TestController, models: string[], timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let quiet = 0;
  let busy = '';
  while (Date.now() < deadline) {
    const units = await c.store.db
      .selectFrom('units')
      .innerJoin('models', 'models.uuid', 'units.model_uuid')
      .select(['models.name as model', 'models.uuid as uuid', 'units.name as unit'])
      .where('models.name', 'in', models)
      .execute();
    busy = '';
    for (const u of units) {
      try {
        const view = await c.client.workflow
          .getHandle(unitAgentWorkflowId(u.model, u.uuid, u.unit))
          .query(unitAgentQuery);
        if (view.current !== null || view.queue.length > 0 || view.relationsPending) {
          busy = `${u.unit}: ${view.current ?? ''} [${view.queue.join(', ')}]`;
          break;
        }
        if (view.failure) throw new Error(`${u.unit} is in error: ${view.failure.message}`);
      } catch (err) {
        if (err instanceof Error && err.message.includes('is in error')) throw err;
        busy = `${u.unit}: no agent answer (${err instanceof Error ? err.message : err})`;
        break;
      }
    }
    quiet = busy ? 0 : quiet + 1;
    if (quiet >= 3) return;
    await new Promise((r) => setTimeout(r, 400));
  }
  throw new Error(`models ${models.join(', ')} did not settle within ${timeoutMs} ms; busy: ${busy}`);
}
