// Writes of unit status and logs, each with its history entry, so status,
// show-status-log and debug-log always agree.
import { sql } from 'kysely';
import type { Db, Tx } from '../store/store.ts';

type Conn = Db | Tx;

/**
 * A unit's workload or agent status and its history entry, in one statement: it
 * runs for every hook and every status-set while the hook still runs.
 */
async function setUnitStatus(
  db: Conn,
  kind: 'workload' | 'agent',
  modelUuid: string,
  unit: string,
  status: string,
  message: string,
  data: Record<string, unknown> | null,
): Promise<void> {
  const statusColumn = sql.ref(`${kind}_status`);
  const messageColumn = sql.ref(`${kind}_message`);
  await sql`
    WITH changed AS (
      UPDATE units SET ${statusColumn} = ${status}, ${messageColumn} = ${message}
      WHERE model_uuid = ${modelUuid} AND name = ${unit}
      RETURNING 1)
    INSERT INTO status_history (model_uuid, entity, kind, status, message, data)
    SELECT ${modelUuid}, ${unit}, ${kind}, ${status}, ${message}, ${data ? JSON.stringify(data) : null}::jsonb
    FROM changed`.execute(db);
}

export function setWorkloadStatus(
  db: Conn,
  modelUuid: string,
  unit: string,
  status: string,
  message: string,
  data: Record<string, unknown> | null = null,
): Promise<void> {
  return setUnitStatus(db, 'workload', modelUuid, unit, status, message, data);
}

export function setAgentStatus(
  db: Conn,
  modelUuid: string,
  unit: string,
  status: string,
  message: string,
): Promise<void> {
  return setUnitStatus(db, 'agent', modelUuid, unit, status, message, null);
}

export async function setApplicationStatus(
  db: Conn,
  modelUuid: string,
  application: string,
  status: string,
  message: string,
): Promise<void> {
  await db
    .updateTable('applications')
    .set({ status, message })
    .where('model_uuid', '=', modelUuid)
    .where('name', '=', application)
    .execute();
  await db
    .insertInto('status_history')
    .values({
      model_uuid: modelUuid,
      entity: `application/${application}`,
      kind: 'application',
      status,
      message,
      data: null,
    })
    .execute();
}

export interface LogLine {
  level: string;
  message: string;
  at?: Date;
}

export async function appendLogs(db: Conn, modelUuid: string, entity: string, lines: LogLine[]): Promise<void> {
  if (lines.length === 0) return;
  await db
    .insertInto('log_entries')
    .values(
      lines.map((l) => ({ model_uuid: modelUuid, entity, level: l.level, message: l.message, at: l.at ?? new Date() })),
    )
    .execute();
}

/** Record a machine's state (and its history entry) unless the machine is in it already. */
export async function setMachineStatus(
  db: Db,
  machine: { model_uuid: string; id: string },
  state: string,
  message: string,
  extra: { bootstrap_key?: null } = {},
): Promise<void> {
  await db.transaction().execute(async (tx) => {
    const res = await tx
      .updateTable('machines')
      .set({ state, message, ...extra })
      .where('model_uuid', '=', machine.model_uuid)
      .where('id', '=', machine.id)
      .where((eb) => eb.or([eb('state', '!=', state), eb('message', '!=', message)]))
      .executeTakeFirst();
    if (Number(res.numUpdatedRows) === 0) {
      if (extra.bootstrap_key === null) {
        await tx
          .updateTable('machines')
          .set({ bootstrap_key: null })
          .where('model_uuid', '=', machine.model_uuid)
          .where('id', '=', machine.id)
          .execute();
      }
      return;
    }
    await tx
      .insertInto('status_history')
      .values({
        model_uuid: machine.model_uuid,
        entity: `machine/${machine.id}`,
        kind: 'machine',
        status: state,
        message,
        data: null,
      })
      .execute();
  });
}
