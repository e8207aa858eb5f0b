// A rolling refresh of 20 units of the `versioned` test charm, two to each of 10
// real sshd hosts, with --max-unavailable 5, against a controller run as users
// run it (`charmflow up`: its own process, embedded Temporal dev server and
// PGlite store). The model is settled (peer relation included) before the v2
// revision is uploaded and the refresh asked for; the refresh is followed as
// `charmflow refresh` follows it. Measured: the time from the request until the
// operation succeeded, and per batch (as the plan made them: batches of at most
// max-unavailable non-leaders, then the leader alone):
//
// - wall time: from the batch's first upgrade-charm starting to its health gate
//   passing (the gate's last unitsHealth activity completing, from the refresh
//   workflow's history);
// - hook time: the longest per-unit sum of upgrade-charm + config-changed as the
//   machine timed them (hook_runs.duration_ms);
// - overhead: wall time minus hook time, and where it went: before the first hook
//   (revision write, signal to the unit agent, activity dispatch, charm shipped),
//   per hook (context, SSH, commit), after the last hook (unit agent's wake to the
//   refresh workflow, the gate's polls), and between batches.
//
// CHARMFLOW_BENCH_REFRESH_UNITS (20), _HOSTS (10) and _MAX_UNAVAILABLE (5) pick
// other sizes; the units go round-robin over the hosts.
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import proto from '@temporalio/proto';
import { packCharm, readCharmDir } from '../charm/charm-archive.ts';
import { paths } from '../controller/config.ts';
import { openStore } from '../store/store.ts';
import { createFleet, fleetUnsupportedReason } from '../test/fleet.ts';
import { projectRoot } from '../test/helpers/cli.ts';
import { unitAgentWorkflowId } from '../workflows/messages.ts';
import { apiClient, controllerEnv, discardDataDir, startUp, stopUp } from './controller-process.ts';
import { mb, peakRssBytes, percentile, rssBytes } from './process-tree.ts';

const UNITS = Number(process.env.CHARMFLOW_BENCH_REFRESH_UNITS ?? 20);
const HOSTS = Number(process.env.CHARMFLOW_BENCH_REFRESH_HOSTS ?? 10);
const MAX_UNAVAILABLE = Number(process.env.CHARMFLOW_BENCH_REFRESH_MAX_UNAVAILABLE ?? 5);
/** Generous: the bench measures the gate passing, never it timing out. */
const GATE_TIMEOUT_S = 900;
const MODEL = 'bench';
const APP = 'app';

const round1 = (n: number) => Math.round(n * 10) / 10;
const at = (d: Date | string | null) => (d === null ? Number.NaN : new Date(d).getTime());
const max = (xs: number[]) => (xs.length > 0 ? Math.max(...xs) : Number.NaN);
const mean = (xs: number[]) => (xs.length > 0 ? xs.reduce((a, b) => a + b, 0) / xs.length : Number.NaN);

type HistoryEvent = proto.temporal.api.history.v1.IHistoryEvent;
const EventType = proto.temporal.api.enums.v1.EventType;

/** An event's time in epoch ms (the dev server runs on this machine: one clock with the store's). */
function eventMs(e: HistoryEvent): number {
  const t = e.eventTime;
  if (!t) return Number.NaN;
  const s = t.seconds as unknown as number | { toNumber(): number } | null | undefined;
  return (typeof s === 'object' && s !== null ? s.toNumber() : Number(s ?? 0)) * 1000 + (t.nanos ?? 0) / 1e6;
}

/** Activity calls in a history: type, when scheduled, started (picked up by a worker) and completed. */
function activityCalls(events: HistoryEvent[]): { type: string; scheduled: number; started: number; done: number }[] {
  const byId = new Map<string, { type: string; scheduled: number; started: number; done: number }>();
  for (const e of events) {
    if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED) {
      const type = e.activityTaskScheduledEventAttributes?.activityType?.name ?? '';
      byId.set(String(e.eventId), { type, scheduled: eventMs(e), started: Number.NaN, done: Number.NaN });
    } else if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED) {
      const call = byId.get(String(e.activityTaskStartedEventAttributes?.scheduledEventId));
      if (call) call.started = eventMs(e);
    } else if (e.eventType === EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED) {
      const call = byId.get(String(e.activityTaskCompletedEventAttributes?.scheduledEventId));
      if (call) call.done = eventMs(e);
    }
  }
  return [...byId.values()];
}

/** When each signal of a name reached the workflow. */
function signalTimes(events: HistoryEvent[], name: string): number[] {
  return events
    .filter(
      (e) =>
        e.eventType === EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED &&
        e.workflowExecutionSignaledEventAttributes?.signalName === name,
    )
    .map(eventMs);
}

/** A copy of the fixture charm with another VERSION (its status message and workload file name it). */
function charmRevision(dir: string, version: string): string {
  const d = join(dir, version);
  cpSync(join(projectRoot, 'test', 'fixtures', 'charms', 'versioned'), d, { recursive: true, verbatimSymlinks: true });
  writeFileSync(join(d, 'VERSION'), `${version}\n`);
  writeFileSync(join(d, 'behaviour'), 'good\n');
  return d;
}

export async function refreshBench(): Promise<Record<string, number | string>> {
  const unsupported = fleetUnsupportedReason();
  if (unsupported) return { skipped: unsupported };
  for (const [k, v] of Object.entries({ UNITS, HOSTS, MAX_UNAVAILABLE })) {
    if (!Number.isInteger(v) || v < 1)
      throw new Error(`CHARMFLOW_BENCH_REFRESH_${k} wants a whole number >= 1, got ${v}`);
  }
  const charmDir = mkdtempSync(join(tmpdir(), 'cf-bench-refresh-'));
  const fleet = await createFleet(HOSTS);
  const env = await controllerEnv();
  let up: Awaited<ReturnType<typeof startUp>> | undefined;
  let connection: Connection | undefined;
  let sampler: NodeJS.Timeout | undefined;
  try {
    up = await startUp(env, ['--headless']);
    const controllerPid = up.child.pid!;
    // resident memory, sampled: before the refresh request (start-up, deploy, peer
    // relation) and from the request until the operation ended
    const rss = { before: 0, during: 0 };
    let phase: keyof typeof rss = 'before';
    sampler = setInterval(() => {
      rss[phase] = Math.max(rss[phase], rssBytes(controllerPid));
    }, 100);
    const c = apiClient(env);
    connection = await Connection.connect({
      address: process.env.TEMPORAL_ADDRESS || `127.0.0.1:${env.CHARMFLOW_TEMPORAL_PORT}`,
    });
    const client = new Client({ connection, namespace: process.env.TEMPORAL_NAMESPACE || 'default' });

    const created = await c.api('POST', '/v1/models', { name: MODEL, cloud: 'manual' });
    if (created.status !== 202) throw new Error(`add-model: ${JSON.stringify(created.body)}`);
    const modelOp = await c.waitOperation(created.body.operation.id);
    if (modelOp.state !== 'succeeded') throw new Error(`add-model failed: ${modelOp.error}`);
    const modelUuid = (await c.api('GET', `/v1/models/${MODEL}`)).body.uuid as string;
    const added = await Promise.all(
      fleet.hosts.map((h) =>
        c.api('POST', `/v1/models/${MODEL}/machines`, {
          ssh: { host: h.address, port: h.port, user: h.user },
          privateKey: h.privateKey,
        }),
      ),
    );
    for (const a of added) {
      if (a.status !== 202) throw new Error(`add-machine: ${JSON.stringify(a.body)}`);
      const op = await c.waitOperation(a.body.operation.id, 120_000);
      if (op.state !== 'succeeded') throw new Error(`add-machine failed: ${op.error}`);
    }
    const machines = (await c.api('GET', `/v1/models/${MODEL}/machines`)).body.machines as { id: string }[];
    const upload = async (version: string) => {
      const r = await c.upload('/v1/charms', await packCharm(await readCharmDir(charmRevision(charmDir, version))));
      if (r.status !== 201 && r.status !== 200) throw new Error(`upload ${version}: ${JSON.stringify(r.body)}`);
      return r.body.charm as { name: string; revision: number };
    };
    const v1 = await upload('v1');

    // the units round-robin over the hosts, placed with `to` as `deploy --to` places them
    const tDeploy = performance.now();
    const dep = await c.api('POST', `/v1/models/${MODEL}/applications`, {
      charm: v1.name,
      revision: v1.revision,
      application: APP,
      numUnits: UNITS,
      to: Array.from({ length: UNITS }, (_, i) => machines[i % machines.length].id),
    });
    if (dep.status !== 202) throw new Error(`deploy: ${JSON.stringify(dep.body)}`);
    const deployed = await c.followAsCli(dep.body.operation, 900_000);
    if (deployed.state !== 'succeeded') throw new Error(`deploy failed: ${deployed.error}`);
    // the peer relation's hooks settle first: the refresh is measured on a quiet model
    const settleBy = performance.now() + 1_800_000;
    while (true) {
      const w = await c.api('GET', `/v1/models/${MODEL}/wait?timeout=60`);
      if (w.status !== 200) throw new Error(`wait: ${JSON.stringify(w.body)}`);
      if (w.body.errors.length > 0)
        throw new Error(`units in error before the refresh: ${JSON.stringify(w.body.errors)}`);
      if (w.body.settled) break;
      if (performance.now() > settleBy) throw new Error(`model never settled: ${JSON.stringify(w.body.busy)}`);
    }
    const deployToSettledMs = performance.now() - tDeploy;
    const v2 = await upload('v2');

    phase = 'during';
    const t0 = performance.now();
    const t0Epoch = Date.now();
    const res = await c.api('POST', `/v1/models/${MODEL}/applications/${APP}/refresh`, {
      revision: v2.revision,
      maxUnavailable: MAX_UNAVAILABLE,
      gateTimeoutSeconds: GATE_TIMEOUT_S,
    });
    if (res.status !== 202) throw new Error(`refresh: ${JSON.stringify(res.body)}`);
    const plan = res.body.plan as { batches: string[][]; from: number; to: number };
    const op = await c.followAsCli(res.body.operation, 1_800_000);
    const followedMs = performance.now() - t0;
    clearInterval(sampler);
    sampler = undefined;
    if (op.state !== 'succeeded') throw new Error(`refresh failed: ${op.error}`);
    const finishedEpoch = op.finishedAt ? Date.parse(op.finishedAt) : t0Epoch + followedMs;
    const totalMs = finishedEpoch - t0Epoch;

    // every unit on v2 and active, as status shows it
    const status = await c.api('GET', `/v1/models/${MODEL}/status`);
    const app = status.body.applications?.[APP] as {
      'charm-rev': number;
      units: Record<string, { 'workload-status': { current: string; message?: string } }>;
    };
    const anomalies: string[] = [];
    if (app['charm-rev'] !== v2.revision) anomalies.push(`application on revision ${app['charm-rev']}`);
    const notOnV2 = Object.entries(app.units).filter(
      ([, u]) => u['workload-status'].current !== 'active' || u['workload-status'].message !== 'running v2',
    );
    if (notOnV2.length > 0) anomalies.push(`${notOnV2.length} unit(s) not "active running v2"`);

    // where the time went: the refresh workflow's history and each unit agent's
    const workflowId = (await c.api('GET', `/v1/operations/${res.body.operation.id}`)).body.workflowId as string;
    const opHistory = (await client.workflow.getHandle(workflowId).fetchHistory()).events ?? [];
    const opCalls = activityCalls(opHistory);
    const batchStarts = opCalls.filter((a) => a.type === 'setUnitsRevision').map((a) => a.scheduled);
    const health = opCalls.filter((a) => a.type === 'unitsHealth');
    const progressSignals = signalTimes(opHistory, 'unitProgress');
    const agentUnits = plan.batches.flat();
    const agents = new Map<string, { enqueued: number[]; runHooks: ReturnType<typeof activityCalls> }>();
    for (const u of agentUnits) {
      const events =
        (await client.workflow.getHandle(unitAgentWorkflowId(MODEL, modelUuid, u)).fetchHistory()).events ?? [];
      agents.set(u, {
        enqueued: signalTimes(events, 'enqueue'),
        runHooks: activityCalls(events).filter((a) => a.type === 'runHooks'),
      });
    }
    await connection.close();
    connection = undefined;
    const peakController = peakRssBytes(controllerPid);
    await stopUp(up.child);

    // the hook runs, from the store the controller left behind
    const store = await openStore({ dataDir: paths(env.CHARMFLOW_DATA_DIR).store });
    const runs = await store.db
      .selectFrom('hook_runs')
      .select(['unit', 'hook', 'exit_code', 'started_at', 'finished_at', 'duration_ms', 'lock_wait_ms'])
      .where('model_uuid', '=', modelUuid)
      .where('started_at', '>=', new Date(t0Epoch))
      .orderBy('started_at')
      .execute();
    await store.close();
    const kinds: Record<string, number> = {};
    for (const r of runs) kinds[r.hook] = (kinds[r.hook] ?? 0) + 1;
    if (runs.some((r) => r.exit_code !== 0)) anomalies.push('a hook failed or never finished');
    const runOf = (u: string, hook: string) => runs.find((r) => r.unit === u && r.hook === hook);
    // per hook, what the controller added around the hook's own run time
    const perHookOverhead = runs
      .filter((r) => (r.hook === 'upgrade-charm' || r.hook === 'config-changed') && r.finished_at !== null)
      .map((r) => at(r.finished_at) - at(r.started_at) - (r.duration_ms ?? 0) - (r.lock_wait_ms ?? 0))
      .sort((a, b) => a - b);

    if (batchStarts.length !== plan.batches.length) {
      anomalies.push(`${batchStarts.length} batch starts in the history for ${plan.batches.length} planned`);
    }
    const out: Record<string, number | string> = {};
    const parts = { toFirstHook: [] as number[], afterHooks: [] as number[], between: [] as number[] };
    const overheads: number[] = [];
    for (const [i, batch] of plan.batches.entries()) {
      const start = batchStarts[i];
      const next = batchStarts[i + 1] ?? finishedEpoch;
      const uc = batch.map((u) => runOf(u, 'upgrade-charm'));
      const cc = batch.map((u) => runOf(u, 'config-changed'));
      if (uc.some((r) => !r) || cc.some((r) => !r)) {
        anomalies.push(`batch ${i + 1}: a unit without upgrade-charm and config-changed`);
        continue;
      }
      const firstHook = Math.min(...uc.map((r) => at(r!.started_at)));
      const lastHookDone = Math.max(...cc.map((r) => at(r!.finished_at)));
      const hookMs = Math.max(...batch.map((_, j) => (uc[j]!.duration_ms ?? 0) + (cc[j]!.duration_ms ?? 0)));
      // the gate: unitsHealth calls scheduled after the batch's last unit reported
      // done, before the next batch (watchMachines' look for a machine down comes earlier)
      const lastDone = max(progressSignals.filter((t) => t >= start && t <= next));
      const gate = health.filter((h) => h.scheduled >= lastDone && h.scheduled <= next);
      const gatePassed = max(gate.map((h) => h.done));
      const wallMs = gatePassed - firstHook;
      // per unit: refresh → agent's signal, signal → runHooks scheduled (the agent's workflow task),
      // scheduled → picked up by the worker (an activity slot), picked up → first hook (the charm shipped)
      const signalMs: number[] = [];
      const scheduleMs: number[] = [];
      const queueMs: number[] = [];
      const shipMs: number[] = [];
      for (const [j, u] of batch.entries()) {
        const a = agents.get(u)!;
        const ucStart = at(uc[j]!.started_at);
        const enq = a.enqueued.find((t) => t >= start) ?? Number.NaN;
        const call = a.runHooks.filter((h) => h.started <= ucStart && h.started >= start).at(-1);
        signalMs.push(enq - start);
        scheduleMs.push((call?.scheduled ?? Number.NaN) - enq);
        queueMs.push((call?.started ?? Number.NaN) - (call?.scheduled ?? Number.NaN));
        shipMs.push(ucStart - (call?.started ?? Number.NaN));
      }
      const k = `batch_${i + 1}`;
      out[`${k}_units`] = batch.join(' ');
      out[`${k}_wall_s`] = round1(wallMs / 1000);
      out[`${k}_hook_ms`] = hookMs;
      out[`${k}_overhead_ms`] = Math.round(wallMs - hookMs);
      out[`${k}_start_to_first_hook_ms`] = Math.round(firstHook - start);
      out[`${k}_signal_ms_max`] = Math.round(max(signalMs));
      out[`${k}_signal_to_activity_scheduled_ms_max`] = Math.round(max(scheduleMs));
      out[`${k}_activity_scheduled_to_started_ms_max`] = Math.round(max(queueMs));
      out[`${k}_charm_ship_ms_max`] = Math.round(max(shipMs));
      out[`${k}_hooks_span_ms`] = Math.round(lastHookDone - firstHook);
      out[`${k}_last_hook_to_gate_passed_ms`] = Math.round(gatePassed - lastHookDone);
      out[`${k}_gate_polls`] = gate.length;
      out[`${k}_gate_passed_to_next_batch_ms`] = Math.round(next - gatePassed);
      out[`${k}_lock_wait_ms_max`] = max([...uc, ...cc].map((r) => r!.lock_wait_ms ?? 0));
      overheads.push(wallMs - hookMs);
      parts.toFirstHook.push(firstHook - start);
      parts.afterHooks.push(gatePassed - lastHookDone);
      parts.between.push(next - gatePassed);
    }

    return {
      hosts: HOSTS,
      units: UNITS,
      max_unavailable: MAX_UNAVAILABLE,
      // the controller's bound on concurrent activities, as `up` was given it
      max_concurrent_activities: process.env.CHARMFLOW_MAX_CONCURRENT_ACTIVITIES || 'as CPU allows (<= 200)',
      plan: plan.batches.map((b) => b.length).join('+'),
      leader_batch: plan.batches.at(-1)?.join(' ') ?? '',
      deploy_to_settled_s: round1(deployToSettledMs / 1000),
      total_time_s: round1(totalMs / 1000),
      request_to_first_batch_ms: Math.round(batchStarts[0] - t0Epoch),
      hooks_run: runs.length,
      hooks_per_second: round1(runs.length / (totalMs / 1000)),
      ...Object.fromEntries(
        Object.entries(kinds)
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([k, v]) => [`hooks: ${k}`, v]),
      ),
      ...out,
      overhead_per_batch_ms_mean: Math.round(mean(overheads)),
      start_to_first_hook_ms_mean: Math.round(mean(parts.toFirstHook)),
      last_hook_to_gate_passed_ms_mean: Math.round(mean(parts.afterHooks)),
      gate_passed_to_next_batch_ms_mean: Math.round(mean(parts.between)),
      per_hook_controller_ms_p50: Math.round(percentile(perHookOverhead, 50)),
      per_hook_controller_ms_p99: Math.round(percentile(perHookOverhead, 99)),
      controller_peak_rss_mb: mb(peakController),
      controller_rss_before_refresh_max_mb: mb(rss.before),
      controller_rss_during_refresh_max_mb: mb(rss.during),
      anomalies: anomalies.length > 0 ? anomalies.join('; ') : 'none',
    };
  } finally {
    if (sampler) clearInterval(sampler);
    await connection?.close().catch(() => {});
    if (up) await stopUp(up.child);
    discardDataDir(env);
    await fleet.destroy();
    rmSync(charmDir, { recursive: true, force: true });
  }
}
