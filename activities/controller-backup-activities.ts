// Activities of controller backups (issue 11): write a backup file of the whole
// model store (store/backup.ts), and after a restore, put the restored machines
// under this controller and say how each restored unit's agent starts again.
import { readFileSync } from 'node:fs';
import { chmod, mkdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { updateStatusMs } from '../api/model-config.ts';
import { BACKUP_SUFFIX, BackupKey, writeBackup } from '../store/backup.ts';
import type { UnitEvent } from '../workflows/messages.ts';
import type { RelationsSeen } from '../workflows/relations.ts';
import type { UnitAgentState } from '../workflows/unit-agent.ts';
import type { ActivityDeps } from './deps.ts';
import { relationViews } from './relation-activities.ts';
import { localMachinesDir } from './substrates/local-isolation.ts';

/** Where create-backup writes: `<dataDir>/backups/controller/` (0700), each file 0600. */
export function controllerBackupDir(dataDir: string): string {
  return join(dataDir, 'backups', 'controller');
}

/** charmflow's version, from its package.json (beside activities/ and dist/ alike). */
export function controllerVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(join(import.meta.dirname ?? '.', '..', 'package.json'), 'utf8'));
    return typeof pkg.version === 'string' ? pkg.version : '0.0.0';
  } catch {
    return '0.0.0';
  }
}

/**
 * The file of the store's secret key, found as openStore finds it: CHARMFLOW_SECRET_KEY_FILE,
 * else `secret-key` in the embedded store's directory, or in the data dir with Postgres.
 */
function secretKeyFile(deps: ActivityDeps): string {
  return (
    process.env.CHARMFLOW_SECRET_KEY_FILE ||
    (deps.store.kind === 'postgres' ? join(deps.dataDir, 'secret-key') : join(deps.dataDir, 'store', 'secret-key'))
  );
}

/**
 * The key this controller's store is sealed with, read from its file and checked
 * against the store: a backup or a model's export must open its own secrets.
 */
export function storeSecretKey(deps: ActivityDeps): Buffer {
  const file = secretKeyFile(deps);
  let raw: Buffer;
  try {
    raw = Buffer.from(readFileSync(file, 'utf8').trim(), 'base64');
  } catch (err) {
    throw ApplicationFailure.nonRetryable(
      `cannot read this controller's secret key (${file}): ${(err as Error).message}`,
      'SecretKey',
    );
  }
  const { secrets } = deps.store;
  if (raw.length !== 32 || new BackupKey(raw, secrets.version).keyCheck() !== secrets.keyCheck()) {
    throw ApplicationFailure.nonRetryable(
      `the secret key file ${file} is not the key this controller's store is sealed with`,
      'SecretKey',
    );
  }
  return raw;
}

/** A restored model, as the restore operation names it. */
export interface RestoredModel {
  name: string;
  uuid: string;
}

/** How one restored unit's agent starts. */
export interface RestoredAgent {
  application: string;
  state: UnitAgentState;
}

/** The hook named by a unit's error status (`hook failed: "config-changed"`), unless a relation hook's. */
function failedHook(status: string, message: string): string | undefined {
  if (status !== 'error') return undefined;
  const hook = /^hook failed: "([^"]+)"/.exec(message)?.[1];
  return hook && !hook.includes('-relation-') ? hook : undefined;
}

function heartbeat(details?: unknown): void {
  try {
    Context.current().heartbeat(details);
  } catch {
    // called outside an activity (a test)
  }
}

export function createControllerBackupActivities(deps: ActivityDeps) {
  const { store, dataDir } = deps;
  const db = store.db;

  return {
    /**
     * Writes backup `id` to `<dataDir>/backups/controller/<id>.cfbackup` and records
     * its path, size, sha256 and manifest. Idempotent: a backup already written is
     * left as it is.
     */
    async writeControllerBackup(id: string): Promise<{ path: string; size: number; sha256: string }> {
      const row = await db.selectFrom('controller_backups').selectAll().where('id', '=', id).executeTakeFirst();
      if (!row) throw ApplicationFailure.nonRetryable(`backup ${id} is not recorded`, 'NotFound');
      if (row.state === 'ready' && (await stat(row.path).catch(() => null))) {
        return { path: row.path, size: Number(row.size), sha256: row.sha256 };
      }
      const raw = storeSecretKey(deps);
      const dir = controllerBackupDir(dataDir);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      await chmod(dir, 0o700);
      const path = join(dir, `${id}${BACKUP_SUFFIX}`);
      // alive while a large store is read and packed
      const beat = setInterval(() => heartbeat({ backup: id }), 10_000);
      const written = await writeBackup(db, {
        file: path,
        id,
        controllerVersion: controllerVersion(),
        storeKind: store.kind,
        keys: {
          secretKey: { version: store.secrets.version, key: raw },
          sshKey: deps.controllerKey,
        },
        onTable: (table) => heartbeat({ table }),
      }).finally(() => clearInterval(beat));
      await db
        .updateTable('controller_backups')
        .set({
          state: 'ready',
          path,
          size: written.size,
          sha256: written.sha256,
          manifest: JSON.stringify(written.manifest),
          error: null,
          finished_at: new Date(),
        })
        .where('id', '=', id)
        .execute();
      return { path, size: written.size, sha256: written.sha256 };
    },

    /** The backup could not be written: its record says why. */
    async markControllerBackupFailed(id: string, message: string): Promise<void> {
      await db
        .updateTable('controller_backups')
        .set({ state: 'failed', error: message, finished_at: new Date() })
        .where('id', '=', id)
        .where('state', '=', 'pending')
        .execute();
    },

    /**
     * The restored models' machines become this controller's: a local machine's
     * directory is under this controller's data dir (the backup may come from
     * another). Returns each model's machines to provision.
     */
    async adoptRestoredMachines(models: RestoredModel[]): Promise<{ model: string; machines: string[] }[]> {
      const out: { model: string; machines: string[] }[] = [];
      for (const m of models) {
        const rows = await db
          .selectFrom('machines')
          .select(['id', 'kind', 'root_dir', 'life'])
          .where('model_uuid', '=', m.uuid)
          .execute();
        for (const r of rows) {
          const rootDir = join(localMachinesDir(dataDir), m.uuid, r.id);
          if (r.kind === 'local' && r.root_dir !== rootDir) {
            await db
              .updateTable('machines')
              .set({ root_dir: rootDir })
              .where('model_uuid', '=', m.uuid)
              .where('id', '=', r.id)
              .execute();
          }
        }
        const ids = rows
          .filter((r) => r.life === 'alive')
          .map((r) => r.id)
          .sort((a, b) => Number(a) - Number(b) || a.localeCompare(b));
        out.push({ model: m.name, machines: ids });
      }
      return out;
    },

    /**
     * How each restored unit's agent starts: the charm is shipped again before its
     * next hook (its machine may have been cleaned, or be new); a unit that had run
     * install is started, told of its relations as the backup has them (so no
     * relation hook runs again) and runs nothing now; a unit that had not finished
     * install runs a deploy's hooks; a unit in error on a hook runs that hook again.
     * The states hold unit names and data bag versions, never a secret.
     */
    async restoredUnitAgents(models: RestoredModel[]): Promise<RestoredAgent[]> {
      const out: RestoredAgent[] = [];
      for (const m of models) {
        const model = await db.selectFrom('models').select('config').where('uuid', '=', m.uuid).executeTakeFirst();
        if (!model) continue;
        const interval = updateStatusMs(model.config);
        const relatable = new Set(
          (await db.selectFrom('endpoints').select('application').where('model_uuid', '=', m.uuid).execute()).map(
            (e) => e.application,
          ),
        );
        const units = await db
          .selectFrom('units')
          .select([
            'name',
            'application',
            'number',
            'leader',
            'installed',
            'life',
            'workload_status',
            'workload_message',
          ])
          .where('model_uuid', '=', m.uuid)
          .orderBy('application')
          .orderBy('number')
          .execute();
        for (const u of units) {
          const ref = { model: m.name, modelUuid: m.uuid, unit: u.name };
          const base = { ref, seq: 0, prepared: false, updateStatusMs: interval };
          let state: UnitAgentState;
          if (!u.installed) {
            const queue: UnitEvent[] = [
              { hook: 'install' },
              { hook: u.leader ? 'leader-elected' : 'leader-settings-changed' },
              { hook: 'config-changed' },
              { hook: 'start' },
            ];
            state = {
              ...base,
              queue,
              ...(relatable.has(u.application)
                ? { relatable: true, started: false, relations: {}, syncWanted: true }
                : {}),
            };
          } else {
            const again = failedHook(u.workload_status, u.workload_message);
            state = { ...base, queue: again ? [{ hook: again }] : [] };
            if (relatable.has(u.application)) {
              const seen: RelationsSeen = {};
              for (const v of await relationViews(db, ref)) {
                if (v.dying) continue;
                seen[v.id] = {
                  endpoint: v.endpoint,
                  remoteApp: v.remoteApp,
                  units: { ...v.units },
                  appVersion: v.appVersion,
                };
              }
              Object.assign(state, { relatable: true, started: true, relations: seen, syncWanted: true });
            }
          }
          out.push({ application: u.application, state });
          heartbeat({ model: m.name, unit: u.name });
        }
      }
      return out;
    },
  };
}

export type ControllerBackupActivities = ReturnType<typeof createControllerBackupActivities>;
