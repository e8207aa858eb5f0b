// Writes of unit status and logs, each with its history entry, so status,
// show-status-log and debug-log always agree.
import type { Db, Tx } from '../store/store.ts';

type Conn = Db | Tx;

export async function setWorkloadStatus(
  db: Conn,
  modelUuid: string,
  unit: string,
  status: string,
  message: string,
  data: Record<string, unknown> | null = null,
): Promise<void> {
  await db
    .updateTable('units')
    .set({ workload_status: status, workload_message: message })
    .where('model_uuid', '=', modelUuid)
    .where('name', '=', unit)
    .execute();
  await db
    .insertInto('status_history')
    .values({
      model_uuid: modelUuid,
      entity: unit,
      kind: 'workload',
      status,
      message,
      data: data ? JSON.stringify(data) : null,
    })
    .execute();
}

export async function setAgentStatus(
  db: Conn,
  modelUuid: string,
  unit: string,
  status: string,
  message: string,
): Promise<void> {
  await db
    .updateTable('units')
    .set({ agent_status: status, agent_message: message })
    .where('model_uuid', '=', modelUuid)
    .where('name', '=', unit)
    .execute();
  await db
    .insertInto('status_history')
    .values({ model_uuid: modelUuid, entity: unit, kind: 'agent', status, message, data: null })
    .execute();
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
