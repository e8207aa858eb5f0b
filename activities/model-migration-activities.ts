// Activities of migrate-model (issue 11), on both controllers.
//
// The source (this controller, holding the model): talk to the target's API with
// the admin token kept sealed in `model_migrations`; hold the model's unit agents
// and take their state; write the model's export (store/backup.ts, scope `model`);
// let the agents go again (a failure); forget the model once the target confirms.
//
// The target: mark an imported model live once its agents run. Its rows come in
// through the API (api/routes/model-migration.ts), its machines are provisioned by
// the machine activities, and its agents start in workflows/model-migration-workflows.ts.
import { mkdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { WorkflowNotFoundError } from '@temporalio/client';
import { BACKUP_SUFFIX, removeModelRows, writeBackup } from '../store/backup.ts';
import { holdUpdate, type UnitEvent } from '../workflows/messages.ts';
import type { UnitAgentState } from '../workflows/unit-agent.ts';
import { controllerVersion, storeSecretKey } from './controller-backup-activities.ts';
import type { ActivityDeps } from './deps.ts';
import { onUnitAgent } from './unit-agents.ts';

/** Where a migration's export is written on the source: `<dataDir>/migrations/` (0700), the file 0600. */
export function migrationDir(dataDir: string): string {
  return join(dataDir, 'migrations');
}

/** The export file of migration `operationId` on the source. */
function exportFile(dataDir: string, operationId: number): string {
  return join(migrationDir(dataDir), `migrate-${operationId}${BACKUP_SUFFIX}`);
}

/** A unit agent's state as the target starts it, with the application it belongs to. */
export interface HandedAgent {
  application: string;
  state: UnitAgentState;
}

/** What holding a model's agents gave. */
export interface HeldAgents {
  agents: HandedAgent[];
  /** Queued events that cannot move (an action run by an operation of this controller), for people. */
  dropped: string[];
}

export interface TargetOperation {
  id: number;
  state: string;
  error: string | null;
  progress: Record<string, unknown>;
}

function heartbeat(details?: unknown): void {
  try {
    Context.current().heartbeat(details);
  } catch {
    // called outside an activity (a test)
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** A target's answer that will not change on a retry (refused token, bad request): no retry. */
class TargetRefused extends Error {}

/**
 * An agent's state, cleaned for another controller: the operations its events would
 * tell live here (their ids mean nothing there), and the charm goes to the machine
 * again before the first hook there (the target's runtime).
 */
export function handOverState(raw: UnitAgentState, dropped: string[]): UnitAgentState {
  const queue: UnitEvent[] = [];
  for (const ev of raw.queue) {
    if (ev.action) {
      dropped.push(`${raw.ref.unit}: action ${ev.hook} (operation ${ev.action.operationId})`);
      continue;
    }
    const { notify: _n, quiet: _q, supersedes: _s, ...rest } = ev;
    queue.push(rest);
  }
  const { waiters: _w, ...state } = raw;
  return { ...state, queue, prepared: false };
}

export function createModelMigrationActivities(deps: ActivityDeps) {
  const { store, dataDir } = deps;
  const db = store.db;

  async function migrationRow(operationId: number) {
    const row = await db
      .selectFrom('model_migrations')
      .selectAll()
      .where('operation_id', '=', operationId)
      .executeTakeFirst();
    if (!row) throw ApplicationFailure.nonRetryable(`migration ${operationId} is not recorded`, 'NotFound');
    return row;
  }

  /** One call to the target's API; a refusal that a retry cannot change is not retried. */
  async function callTarget<T>(
    operationId: number,
    method: string,
    path: string,
    body?: { json: unknown } | { bytes: Buffer },
  ): Promise<{ status: number; body: T }> {
    const row = await migrationRow(operationId);
    if (!row.token) throw ApplicationFailure.nonRetryable(`migration ${operationId} has ended`, 'Ended');
    const headers: Record<string, string> = { authorization: `Bearer ${store.secrets.open(row.token)}` };
    let payload: string | Uint8Array | undefined;
    if (body && 'json' in body) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body.json);
    } else if (body) {
      headers['content-type'] = 'application/octet-stream';
      payload = new Uint8Array(body.bytes.buffer, body.bytes.byteOffset, body.bytes.length);
    }
    let res: Response;
    try {
      res = await fetch(`${row.target_url}${path}`, {
        method,
        headers,
        body: payload as BodyInit | undefined,
        signal: AbortSignal.timeout(120_000),
      });
    } catch (err) {
      // unreachable for now: retried
      throw new Error(`cannot reach the target controller ${row.target_url}: ${(err as Error).message}`);
    }
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : {};
    } catch {
      // not JSON (a proxy's page): kept as text for the message
    }
    if (res.status === 401 || res.status === 403) {
      throw ApplicationFailure.nonRetryable(
        `the target controller ${row.target_url} refused the token (${res.status}): give an admin token of the target`,
        'TargetRefused',
      );
    }
    if (res.status >= 500) {
      throw new Error(`the target controller answered ${res.status} to ${method} ${path}: ${messageOf(parsed)}`);
    }
    return { status: res.status, body: parsed as T };
  }

  function refused(row: { target_url: string }, what: string, status: number, body: unknown): never {
    throw ApplicationFailure.nonRetryable(
      `the target controller ${row.target_url} refused ${what} (${status}): ${messageOf(body)}`,
      'TargetRefused',
      new TargetRefused(),
    );
  }

  async function unitsOf(uuid: string) {
    return db
      .selectFrom('units')
      .innerJoin('models', 'models.uuid', 'units.model_uuid')
      .select(['units.name', 'units.application', 'models.name as model', 'models.uuid'])
      .where('units.model_uuid', '=', uuid)
      .orderBy('units.application')
      .orderBy('units.number')
      .execute();
  }

  return {
    /**
     * The target answers with the token, runs a charmflow that reads this one's
     * exports, and has no model of this name but one an earlier attempt left
     * importing (which the import replaces).
     */
    async checkMigrationTarget(operationId: number): Promise<{ version: string }> {
      const row = await migrationRow(operationId);
      const res = await callTarget<{
        migrations?: { version?: string; models?: { name: string; uuid: string; status: string }[] };
      }>(operationId, 'GET', `/v1/migrations?model=${encodeURIComponent(row.model)}`);
      if (res.status !== 200) refused(row, 'the migration check', res.status, res.body);
      const same = res.body.migrations?.models?.find((m) => m.name === row.model);
      if (same && !(same.uuid === row.model_uuid && same.status === 'importing')) {
        throw ApplicationFailure.nonRetryable(
          `the target controller ${row.target_url} has a model named "${row.model}" already (status ${same.status}); destroy it there first`,
          'TargetHasModel',
        );
      }
      return { version: res.body.migrations?.version ?? 'unknown' };
    },

    /** The model is back to normal here (the migration failed): mutations go on. */
    async endModelMigrating(uuid: string, message: string): Promise<void> {
      await db
        .updateTable('models')
        .set({ status: 'available', message })
        .where('uuid', '=', uuid)
        .where('status', '=', 'migrating')
        .execute();
    },

    /**
     * Holds every unit agent of the model: each finishes the hook it runs, then runs
     * no other; returns their states (what each was told and has still to do).
     */
    async holdUnitAgents(operationId: number, uuid: string): Promise<HeldAgents> {
      const client = Context.current().client;
      const dropped: string[] = [];
      const agents: HandedAgent[] = [];
      const units = await unitsOf(uuid);
      // alive while agents finish the hooks they run
      const beat = setInterval(() => heartbeat({ holding: units.length - agents.length }), 2000);
      await Promise.all(
        units.map(async (u) => {
          const held = await onUnitAgent(client, { model: u.model, modelUuid: u.uuid, unit: u.name }, (h) =>
            h.executeUpdate(holdUpdate, { args: [{ hold: true, reason: `migrate-model, operation ${operationId}` }] }),
          );
          heartbeat({ held: u.name });
          if (!held?.value) {
            throw ApplicationFailure.nonRetryable(`unit ${u.name} has no running agent to hand over`, 'NoAgent');
          }
          agents.push({ application: u.application, state: handOverState(held.value as UnitAgentState, dropped) });
        }),
      ).finally(() => clearInterval(beat));
      agents.sort((a, b) => a.state.ref.unit.localeCompare(b.state.ref.unit, 'en', { numeric: true }));
      return { agents, dropped };
    },

    /** The model's agents go on (the migration failed). Agents already gone are fine. */
    async releaseUnitAgents(uuid: string): Promise<number> {
      const client = Context.current().client;
      let released = 0;
      for (const u of await unitsOf(uuid)) {
        const r = await onUnitAgent(client, { model: u.model, modelUuid: u.uuid, unit: u.name }, (h) =>
          h.executeUpdate(holdUpdate, { args: [{ hold: false }] }),
        );
        if (r) released++;
        heartbeat({ released: u.name });
      }
      return released;
    },

    /** Writes the model's export (its rows, charms, keys) for the target. */
    async exportModel(operationId: number, uuid: string): Promise<{ path: string; size: number; sha256: string }> {
      await mkdir(migrationDir(dataDir), { recursive: true, mode: 0o700 });
      const path = exportFile(dataDir, operationId);
      const written = await writeBackup(db, {
        file: path,
        id: `migrate-${operationId}`,
        controllerVersion: controllerVersion(),
        storeKind: store.kind,
        keys: { secretKey: { version: store.secrets.version, key: storeSecretKey(deps) }, sshKey: deps.controllerKey },
        model: uuid,
        onTable: (table) => heartbeat({ table }),
      });
      return { path, size: written.size, sha256: written.sha256 };
    },

    /**
     * Sends the export to the target, which imports the rows (nothing runs yet) and
     * provisions the machines (its key goes onto each host); returns the target's
     * operation. What an earlier attempt left importing there is aborted first.
     */
    async sendModelToTarget(operationId: number, uuid: string, path: string): Promise<number> {
      const row = await migrationRow(operationId);
      const bytes = await readFile(path);
      for (let attempt = 0; ; attempt++) {
        const res = await callTarget<{ operation?: { id: number }; error?: { code?: string } }>(
          operationId,
          'POST',
          '/v1/migrations/import',
          { bytes },
        );
        if (res.status === 202 && res.body.operation) return res.body.operation.id;
        if (res.status === 409 && attempt === 0 && /being imported/.test(messageOf(res.body))) {
          const gone = await callTarget(operationId, 'DELETE', `/v1/migrations/${encodeURIComponent(uuid)}`);
          if (gone.status === 200 || gone.status === 404) continue;
          refused(row, 'to abort an earlier import', gone.status, gone.body);
        }
        refused(row, 'the import', res.status, res.body);
      }
    },

    /** Waits (heartbeating) for an operation of the target to end; a failed one fails this. */
    async awaitTargetOperation(operationId: number, targetOperation: number): Promise<TargetOperation> {
      const row = await migrationRow(operationId);
      for (;;) {
        const res = await callTarget<TargetOperation>(operationId, 'GET', `/v1/operations/${targetOperation}`);
        const op = res.body;
        if (res.status !== 200 || typeof op?.state !== 'string') {
          refused(row, `a look at its operation ${targetOperation}`, res.status, res.body);
        }
        heartbeat({ target: op.state, step: op.progress?.step });
        if (op.state === 'succeeded') return op;
        if (op.state === 'failed' || op.state === 'cancelled') {
          throw ApplicationFailure.nonRetryable(
            `the target's operation ${targetOperation} ${op.state}: ${op.error ?? 'no reason given'}`,
            'TargetFailed',
          );
        }
        await sleep(1000);
      }
    },

    /** The target starts the model's agents from the states handed over; returns its operation. */
    async activateOnTarget(operationId: number, uuid: string, agents: HandedAgent[]): Promise<number> {
      const row = await migrationRow(operationId);
      const res = await callTarget<{ operation?: { id: number } }>(
        operationId,
        'POST',
        `/v1/migrations/${encodeURIComponent(uuid)}/activate`,
        { json: { agents } },
      );
      if (res.status === 202 && res.body.operation) return res.body.operation.id;
      return refused(row, 'to start the agents', res.status, res.body);
    },

    /**
     * The target forgets what it imported (nothing ran there): `aborted`; `absent`:
     * it had nothing; `active`: the model is live there already (its agents run), so
     * the migration succeeded after all.
     */
    async abortOnTarget(operationId: number, uuid: string): Promise<'aborted' | 'absent' | 'active'> {
      const row = await migrationRow(operationId);
      const res = await callTarget(operationId, 'DELETE', `/v1/migrations/${encodeURIComponent(uuid)}`);
      if (res.status === 200) return 'aborted';
      if (res.status === 404) return 'absent';
      if (res.status === 409 && /is live/.test(messageOf(res.body))) return 'active';
      return refused(row, 'to abort the import', res.status, res.body);
    },

    /**
     * The target runs the model: its agents here end (they are held: no hook is
     * cut short), and its rows go. Nothing runs on the machines.
     */
    async forgetMigratedModel(operationId: number, uuid: string): Promise<{ agents: number }> {
      const client = Context.current().client;
      let ended = 0;
      for (const u of await unitsOf(uuid)) {
        const r = await onUnitAgent(client, { model: u.model, modelUuid: u.uuid, unit: u.name }, async (h) => {
          try {
            await h.terminate(`model moved to another controller by migrate-model (operation ${operationId})`);
          } catch (err) {
            if (!(err instanceof WorkflowNotFoundError)) throw err;
            // ended already (a retry of this step)
          }
        });
        if (r) ended++;
        heartbeat({ ended: u.name });
      }
      await db.transaction().execute((tx) => removeModelRows(tx, uuid));
      return { agents: ended };
    },

    /** The migration's record ends; the token is wiped and the export file removed. */
    async finishModelMigration(operationId: number, state: 'done' | 'failed', error?: string): Promise<void> {
      await db
        .updateTable('model_migrations')
        .set({ state, error: error ?? null, token: '', finished_at: new Date() })
        .where('operation_id', '=', operationId)
        .execute();
      await rm(exportFile(dataDir, operationId), { force: true });
    },

    /** The target's side: an imported model is live (its agents run). */
    async markModelImported(uuid: string, message: string): Promise<void> {
      await db
        .updateTable('models')
        .set({ status: 'available', message })
        .where('uuid', '=', uuid)
        .where('status', '=', 'importing')
        .execute();
    },
  };
}

/** The message of an API error body (`{error: {message}}`), or the text. */
function messageOf(body: unknown): string {
  if (body && typeof body === 'object') {
    const { message, error } = body as { message?: unknown; error?: unknown };
    if (typeof message === 'string') return message;
    if (typeof error === 'string') return error;
    return JSON.stringify(body).slice(0, 500);
  }
  return String(body).slice(0, 500);
}

export type ModelMigrationActivities = ReturnType<typeof createModelMigrationActivities>;
