// What a deploy does outside its workflow, so that its history stays the same size
// however many units it brings: the unit agents are started from an activity, a
// batch at a time, and the units are followed in the model store (where their hooks
// record what they did) instead of each agent signalling the deploy.
import { Context } from '@temporalio/activity';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { sql } from 'kysely';
import { asJsonRows } from '../store/json-rows.ts';
import { unitAgentWorkflowId } from '../workflows/messages.ts';
import { newUnitAgentState, type UnitsLaunch } from '../workflows/new-unit-agent.ts';
import { ApplicationKey, ModelKey } from '../workflows/search-attributes.ts';
import type { ActivityDeps } from './deps.ts';
import { createOperationActivities } from './operation-activities.ts';
import { agentSettingsOf } from './relation-activities.ts';

/** Agents started at once (one call to the Temporal server each). */
const START_CONCURRENCY = 16;

/**
 * How often the units are looked at: every half second, one more millisecond for each
 * unit still going (a look at 1000 units is not free on the embedded store); and at
 * most how often the operation's progress is written.
 */
const followPollMs = (open: number) => Math.min(500 + open, 2_000);
const PROGRESS_EVERY_MS = 1_000;

/** A unit's agent already running, started by something else than this deploy. */
export class EarlierAgentRunning extends Error {
  constructor(unit: string, workflowId: string) {
    super(`an earlier agent of ${unit} (${workflowId}) is still ending; the new one starts once it has ended`);
    this.name = 'EarlierAgentRunning';
  }
}

export interface FollowRequest {
  operationId: number;
  modelUuid: string;
  /** The deploy's units. */
  units: string[];
  /** Shown with the count of finished units, as the operation's step. */
  step: string;
  /** Answer after this long even if units are still going (the workflow asks again). */
  forMs: number;
}

export interface FollowResult {
  /** Units whose start hook succeeded, or that are gone. */
  finished: number;
  /** Units still going. */
  open: number;
  /** Units in error, with why. */
  errors: Record<string, string>;
}

interface UnitLook {
  name: string;
  workload_status: string;
  workload_message: string;
  agent_status: string;
  agent_message: string;
  last_hook: string;
  machine_id: string | null;
  machine_state: string | null;
  started: boolean;
}

const UNIT_LOOK_COLUMNS = [
  'name',
  'workload_status',
  'workload_message',
  'agent_status',
  'agent_message',
  'last_hook',
  'machine_id',
  'machine_state',
  'started',
] as const satisfies readonly (keyof UnitLook)[];

/** What a unit of a deploy is doing, as the operation's progress shows it. */
export function deployUnitState(u: UnitLook | undefined): { state: string; finished: boolean; error?: string } {
  if (!u) return { state: 'removed', finished: true };
  if (u.started) return { state: 'done', finished: true };
  if (u.workload_status === 'error') {
    // the machine could not run the hook at all: the agent says why; else the hook failed
    const error = u.agent_status === 'failed' && u.agent_message !== '' ? u.agent_message : u.workload_message;
    return { state: `error: ${error}`, finished: false, error };
  }
  if (u.agent_status === 'executing') return { state: u.agent_message || 'running hooks', finished: false };
  if (u.last_hook !== '') return { state: `${u.last_hook} done`, finished: false };
  if (u.machine_state !== null && u.machine_state !== 'started') {
    return { state: `waiting for machine ${u.machine_id} (${u.machine_state})`, finished: false };
  }
  return { state: 'queued install', finished: false };
}

export function createDeployActivities(deps: ActivityDeps) {
  const { db } = deps.store;
  const records = createOperationActivities(deps);

  return {
    /**
     * Starts the agents of these new units (install … start queued), a few at a time.
     * Safe to run again: an agent this deploy already started is left as it is, and a
     * unit removed meanwhile gets none.
     */
    async launchUnitAgents(launch: UnitsLaunch, units: { unit: string; leader: boolean }[]): Promise<number> {
      const ctx = Context.current();
      if (units.length === 0) return 0;
      const settings = await agentSettingsOf(db, launch.modelUuid);
      const present = new Set(
        (
          await db
            .selectFrom('units')
            .select('name')
            .where('model_uuid', '=', launch.modelUuid)
            .where(
              'name',
              'in',
              units.map((u) => u.unit),
            )
            .execute()
        ).map((r) => r.name),
      );
      // (none when the model went meanwhile: its units went with it)
      const toStart = units.filter((u) => present.has(u.unit));
      const launchedBy = ctx.info.workflowExecution?.workflowId ?? '';
      let next = 0;
      let started = 0;
      const startOne = async (u: { unit: string; leader: boolean }) => {
        const workflowId = unitAgentWorkflowId(launch.model, launch.modelUuid, u.unit);
        try {
          await ctx.client.workflow.start('unitAgentWorkflow', {
            taskQueue: ctx.info.taskQueue,
            workflowId,
            args: [newUnitAgentState(launch, u, settings)],
            memo: { launchedBy },
            staticSummary: `unit agent of ${u.unit} in model ${launch.model}`,
            typedSearchAttributes: [
              { key: ModelKey, value: launch.model },
              { key: ApplicationKey, value: launch.application },
            ],
          });
          started++;
        } catch (err) {
          if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
          // started by an earlier attempt of this activity: it runs; else an agent of
          // a unit of the same name that went (a redeploy) has not ended yet
          const running = await ctx.client.workflow.getHandle(workflowId).describe();
          if (running.memo?.launchedBy !== launchedBy) throw new EarlierAgentRunning(u.unit, workflowId);
        }
        ctx.heartbeat({ started });
      };
      const worker = async () => {
        while (next < toStart.length) await startOne(toStart[next++]);
      };
      await Promise.all(Array.from({ length: Math.min(START_CONCURRENCY, toStart.length) }, worker));
      return started;
    },

    /**
     * Follows the units until each ran its start hook (or is gone), one is in error,
     * or `forMs` passed; meanwhile the operation's progress shows what each is doing.
     */
    async followDeployedUnits(req: FollowRequest): Promise<FollowResult> {
      const ctx = Context.current();
      const until = Date.now() + req.forMs;
      let open = [...req.units];
      const finished: string[] = [];
      const shown: Record<string, string> = {};
      let lastShown = '';
      let lastWrite = 0;
      while (true) {
        const errors: Record<string, string> = {};
        const looks = new Map<string, UnitLook>();
        if (open.length > 0) {
          const rows = await asJsonRows(
            db,
            sql<UnitLook>`
            SELECT u.name, u.workload_status, u.workload_message, u.agent_status, u.agent_message,
              u.last_hook, u.machine_id, m.state AS machine_state,
              EXISTS (SELECT 1 FROM hook_runs h
                WHERE h.model_uuid = u.model_uuid AND h.unit = u.name AND h.hook = 'start' AND h.committed) AS started
            FROM units u LEFT JOIN machines m ON m.model_uuid = u.model_uuid AND m.id = u.machine_id
            WHERE u.model_uuid = ${req.modelUuid} AND u.name IN (${sql.join(open)})`,
            UNIT_LOOK_COLUMNS,
          );
          for (const r of rows) looks.set(r.name, r);
        }
        const still: string[] = [];
        for (const name of open) {
          const s = deployUnitState(looks.get(name));
          shown[name] = s.state;
          if (s.finished) finished.push(name);
          else still.push(name);
          if (s.error !== undefined) errors[name] = s.error;
        }
        open = still;
        const done = open.length === 0 || Object.keys(errors).length > 0 || Date.now() >= until;
        const view = JSON.stringify(shown);
        if (view !== lastShown && (done || Date.now() - lastWrite >= PROGRESS_EVERY_MS)) {
          await records.updateOperation(req.operationId, {
            state: 'running',
            // live: the units' states are as the store has them (the API reads no hook runs for them)
            progress: { step: `${req.step} (${finished.length}/${req.units.length} units)`, units: shown, live: true },
          });
          lastShown = view;
          lastWrite = Date.now();
        }
        if (done) return { finished: finished.length, open: open.length, errors };
        ctx.heartbeat({ finished: finished.length, open: open.length });
        await ctx.sleep(followPollMs(open.length));
      }
    },
  };
}

export type DeployActivities = ReturnType<typeof createDeployActivities>;
