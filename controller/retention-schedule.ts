// The retention schedule: a Temporal Schedule that runs retentionWorkflow every
// interval, created at controller start or brought up to date with the settings of
// this start (CHARMFLOW_RETENTION_*).
import { type Client, ScheduleAlreadyRunning, ScheduleOverlapPolicy } from '@temporalio/client';
import { DEFAULT_RETENTION, type RetentionPolicy } from '../store/retention.ts';

/** One schedule per task queue: controllers sharing a Temporal namespace each prune their own store. */
export function retentionScheduleId(taskQueue: string): string {
  return `retention:${taskQueue}`;
}

export interface RetentionConfig {
  /** Between two runs, in milliseconds. */
  intervalMs: number;
  policy: RetentionPolicy;
}

const UNIT_MS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `90s`, `30m`, `1h`, `1d`: at least a minute. */
function interval(name: string, raw: string | undefined, fallbackMs: number): number {
  if (raw === undefined || raw === '') return fallbackMs;
  const m = /^(\d+)\s*([smhd])$/.exec(raw.trim());
  const ms = m ? Number(m[1]) * UNIT_MS[m[2]] : Number.NaN;
  if (!(ms >= 60_000))
    throw new Error(`${name} must be a duration of at least a minute (90s, 30m, 1h, 1d), got "${raw}"`);
  return ms;
}

function whole(name: string, raw: string | undefined, fallback: number): number {
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 2_147_483_647) {
    throw new Error(`${name} must be a whole number of at least 1, got "${raw}"`);
  }
  return n;
}

export function retentionConfigFromEnv(env: NodeJS.ProcessEnv = process.env): RetentionConfig {
  const d = DEFAULT_RETENTION;
  return {
    intervalMs: interval('CHARMFLOW_RETENTION_INTERVAL', env.CHARMFLOW_RETENTION_INTERVAL, 3_600_000),
    policy: {
      logDays: whole('CHARMFLOW_RETENTION_LOG_DAYS', env.CHARMFLOW_RETENTION_LOG_DAYS, d.logDays),
      logMaxRowsPerModel: whole(
        'CHARMFLOW_RETENTION_LOG_MAX_ROWS',
        env.CHARMFLOW_RETENTION_LOG_MAX_ROWS,
        d.logMaxRowsPerModel,
      ),
      statusDays: whole('CHARMFLOW_RETENTION_STATUS_DAYS', env.CHARMFLOW_RETENTION_STATUS_DAYS, d.statusDays),
      statusMaxRowsPerModel: whole(
        'CHARMFLOW_RETENTION_STATUS_MAX_ROWS',
        env.CHARMFLOW_RETENTION_STATUS_MAX_ROWS,
        d.statusMaxRowsPerModel,
      ),
      hookRunDays: whole('CHARMFLOW_RETENTION_HOOK_RUN_DAYS', env.CHARMFLOW_RETENTION_HOOK_RUN_DAYS, d.hookRunDays),
      operationDays: whole(
        'CHARMFLOW_RETENTION_OPERATION_DAYS',
        env.CHARMFLOW_RETENTION_OPERATION_DAYS,
        d.operationDays,
      ),
      batchSize: whole('CHARMFLOW_RETENTION_BATCH', env.CHARMFLOW_RETENTION_BATCH, d.batchSize),
    },
  };
}

/** Create the schedule, or update an existing one to this interval and policy. */
export async function ensureRetentionSchedule(client: Client, taskQueue: string, cfg: RetentionConfig): Promise<void> {
  const spec = { intervals: [{ every: cfg.intervalMs }] };
  const action = {
    type: 'startWorkflow' as const,
    workflowType: 'retentionWorkflow',
    workflowId: retentionScheduleId(taskQueue),
    taskQueue,
    args: [cfg.policy],
  };
  // a run still going when the next is due is not doubled; a controller down for a
  // while runs once when it is back, not once per missed interval
  const policies = { overlap: ScheduleOverlapPolicy.SKIP, catchupWindow: '1 minute' };
  try {
    await client.schedule.create({
      scheduleId: retentionScheduleId(taskQueue),
      spec,
      action,
      policies,
      state: { note: 'prunes old log lines, status history, hook runs and operations (CHARMFLOW_RETENTION_*)' },
    });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
    await client.schedule.getHandle(retentionScheduleId(taskQueue)).update((previous) => ({
      ...previous,
      spec,
      action,
      policies: { ...previous.policies, ...policies },
    }));
  }
}
