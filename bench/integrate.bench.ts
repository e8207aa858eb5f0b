// Integrate one provider unit with 20 requirer units spread over 10 real sshd
// hosts, against a controller run as users run it (`charmflow up`: its own
// process, embedded Temporal dev server and PGlite store), and measure: the time
// from the integrate request until the model has settled (every unit agent idle,
// nothing queued, no relation change pending), hooks per second over that time,
// the integrate operation's own duration, the relation hooks by kind, and the
// controller's peak memory.
//
// Both applications are the relator test charm (prov:data provides, req:source
// requires, interface relator): every relation hook logs and writes a token into
// its unit's bag (the leader also into the application's), so data moves both ways
// as it does between real charms. The model is settled (peer relations included)
// before the integrate request.
//
// CHARMFLOW_BENCH_INTEGRATE_UNITS (20) and CHARMFLOW_BENCH_INTEGRATE_HOSTS (10)
// pick other sizes; the requirer's units go round-robin over the hosts.
// CHARMFLOW_BENCH_INTEGRATE_TRACE=1 prints every relation hook the units logged.
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { packCharm, readCharmDir } from '../charm/charm-archive.ts';
import { paths } from '../controller/config.ts';
import { openStore } from '../store/store.ts';
import { createFleet, fleetUnsupportedReason } from '../test/fleet.ts';
import { projectRoot } from '../test/helpers/cli.ts';
import { parseRel } from '../test/helpers/relations.ts';
import { unitAgentQuery, unitAgentWorkflowId } from '../workflows/messages.ts';
import { apiClient, controllerEnv, discardDataDir, startUp, stopUp } from './controller-process.ts';
import { cpuMs, mb, peakRssBytes, percentile, rssBytes, systemCpuMs, treeRssBytes } from './process-tree.ts';

const UNITS = Number(process.env.CHARMFLOW_BENCH_INTEGRATE_UNITS ?? 20);
const HOSTS = Number(process.env.CHARMFLOW_BENCH_INTEGRATE_HOSTS ?? 10);
const MODEL = 'bench';
const PROVIDER = 'prov';
const REQUIRER = 'req';

const round1 = (n: number) => Math.round(n * 10) / 10;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Sweep {
  /** When the sweep ended: every unit had been looked at by then. */
  at: number;
  /** A unit still working, or '' when every one was idle with nothing queued. */
  busy: string;
  /** Hooks queued across all agents (the running one included). */
  queued: number;
}

/** One look at every unit agent, the way test/helpers/relations.ts settle() looks. */
async function sweep(client: Client, modelUuid: string, units: string[]): Promise<Sweep> {
  let busy = '';
  let queued = 0;
  const views = await Promise.all(
    units.map((u) =>
      client.workflow
        .getHandle(unitAgentWorkflowId(MODEL, modelUuid, u))
        .query(unitAgentQuery)
        .then(
          (view) => ({ u, view, err: '' }),
          (err: unknown) => ({ u, view: null, err: err instanceof Error ? err.message : String(err) }),
        ),
    ),
  );
  for (const { u, view, err } of views) {
    if (!view) {
      busy ||= `${u}: no agent answer (${err})`;
      continue;
    }
    if (view.failure) throw new Error(`${u} is in error: ${view.failure.hook}: ${view.failure.message}`);
    queued += view.queue.length;
    if (view.current !== null || view.queue.length > 0 || view.relationsPending) {
      busy ||= `${u}: ${view.current ?? ''} [${view.queue.join(', ')}]${view.relationsPending ? ' (relations pending)' : ''}`;
    }
  }
  return { at: performance.now(), busy, queued };
}

/**
 * Waits until every agent is quiet in three sweeps in a row (a commit's wake may
 * be on its way between two looks), looking only once `ready()` says so. Resolves
 * to when the first sweep of that quiet run ended, and the most hooks queued at once.
 */
async function settled(
  client: Client,
  modelUuid: string,
  units: string[],
  timeoutMs: number,
  ready: () => boolean = () => true,
): Promise<{ at: number; maxQueued: number }> {
  const deadline = performance.now() + timeoutMs;
  let quietSince: number | undefined;
  let quiet = 0;
  let maxQueued = 0;
  let last = 'not looked yet';
  while (performance.now() < deadline) {
    const s = await sweep(client, modelUuid, units);
    maxQueued = Math.max(maxQueued, s.queued);
    last = s.busy;
    if (s.busy || !ready()) {
      quiet = 0;
      quietSince = undefined;
    } else {
      quietSince ??= s.at;
      if (++quiet >= 3) return { at: quietSince, maxQueued };
    }
    await sleep(250);
  }
  throw new Error(`model ${MODEL} did not settle within ${timeoutMs} ms; busy: ${last}`);
}

/**
 * From what the relator charm logged in each relation hook: how many
 * relation-changed hooks ran for the remote application's data (no remote unit),
 * and how many saw nothing new, i.e. the same remote token and application token
 * as the unit's previous relation-changed for that remote unit (or, for the
 * application-level ones, the same application token as its previous hook in
 * the relation). The changed right after a joined is Juju's rule, not counted.
 */
function relationChanges(logged: { entity: string; message: string }[]): { appLevel: number; redundant: number } {
  const last = new Map<string, { hook: string; data: string }>();
  const lastApp = new Map<string, string>();
  let appLevel = 0;
  let redundant = 0;
  for (const { entity, message } of logged) {
    const l = parseRel(message);
    if (!l || !/-relation-(created|joined|changed)$/.test(l.hook)) continue;
    const rid = `${entity} ${l.fields.rid}`;
    const app = l.fields.apptoken ?? '';
    if (l.hook.endsWith('-relation-changed')) {
      if (!l.fields.remote) {
        appLevel++;
        if (lastApp.get(rid) === app) redundant++;
      } else {
        const prev = last.get(`${rid} ${l.fields.remote}`);
        if (prev?.hook.endsWith('-relation-changed') && prev.data === `${l.fields.seen}|${app}`) redundant++;
      }
    }
    if (l.fields.remote) last.set(`${rid} ${l.fields.remote}`, { hook: l.hook, data: `${l.fields.seen}|${app}` });
    lastApp.set(rid, app);
  }
  return { appLevel, redundant };
}

export async function integrateBench(): Promise<Record<string, number | string>> {
  const unsupported = fleetUnsupportedReason();
  if (unsupported) return { skipped: unsupported };
  if (!Number.isInteger(UNITS) || UNITS < 1 || !Number.isInteger(HOSTS) || HOSTS < 1) {
    throw new Error(`CHARMFLOW_BENCH_INTEGRATE_UNITS and _HOSTS want whole numbers >= 1, got ${UNITS}, ${HOSTS}`);
  }
  const fleet = await createFleet(HOSTS);
  const env = await controllerEnv();
  let up: Awaited<ReturnType<typeof startUp>> | undefined;
  let connection: Connection | undefined;
  let sampler: NodeJS.Timeout | undefined;
  try {
    up = await startUp(env, ['--headless']);
    const controllerPid = up.child.pid!;
    const temporalPid = Number(readFileSync(paths(env.CHARMFLOW_DATA_DIR).temporalPid, 'utf8'));
    // resident memory, sampled: before the integrate request (start-up, deploy,
    // peer relations) and from the request until the model settled
    const rss = {
      before: { controller: 0, temporal: 0, tree: 0 },
      during: { controller: 0, temporal: 0, tree: 0 },
    };
    let phase: keyof typeof rss = 'before';
    sampler = setInterval(() => {
      const p = rss[phase];
      p.controller = Math.max(p.controller, rssBytes(controllerPid));
      p.temporal = Math.max(p.temporal, rssBytes(temporalPid));
      p.tree = Math.max(p.tree, treeRssBytes(controllerPid).total);
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
    const charm = await c.upload(
      '/v1/charms',
      await packCharm(await readCharmDir(join(projectRoot, 'test', 'fixtures', 'charms', 'relator'))),
    );
    if (charm.status !== 201 && charm.status !== 200) throw new Error(`upload: ${JSON.stringify(charm.body)}`);

    // the provider's unit shares the first host; the requirer's go round-robin,
    // several to a host (placed with `to`, as `charmflow deploy --to` places them)
    const tDeploy = performance.now();
    const deploys = [
      { application: PROVIDER, numUnits: 1, to: [machines[0].id] },
      {
        application: REQUIRER,
        numUnits: UNITS,
        to: Array.from({ length: UNITS }, (_, i) => machines[i % machines.length].id),
      },
    ];
    for (const d of deploys) {
      const dep = await c.api('POST', `/v1/models/${MODEL}/applications`, {
        charm: charm.body.charm.name,
        revision: charm.body.charm.revision,
        ...d,
      });
      if (dep.status !== 202) throw new Error(`deploy ${d.application}: ${JSON.stringify(dep.body)}`);
      const op = await c.followAsCli(dep.body.operation, 900_000);
      if (op.state !== 'succeeded') throw new Error(`deploy ${d.application} failed: ${op.error}`);
    }
    const units = [`${PROVIDER}/0`, ...Array.from({ length: UNITS }, (_, i) => `${REQUIRER}/${i}`)];
    // peer relations settle first: the integration is measured on a quiet model
    const before = await settled(client, modelUuid, units, 1_800_000);
    const deployToSettledMs = before.at - tDeploy;

    const cpu0 = { controller: cpuMs(controllerPid), temporal: cpuMs(temporalPid), all: systemCpuMs() };
    phase = 'during';
    const t0 = performance.now();
    const t0Epoch = Date.now();
    const res = await c.api('POST', `/v1/models/${MODEL}/integrations`, {
      a: `${PROVIDER}:data`,
      b: `${REQUIRER}:source`,
    });
    if (res.status !== 202) throw new Error(`integrate: ${JSON.stringify(res.body)}`);
    // the operation, followed as `charmflow integrate` follows it; the model
    // counts as settled only once the operation has ended
    let opDone = false;
    const following = c.followAsCli(res.body.operation, 900_000).finally(() => {
      opDone = true;
    });
    const after = await settled(client, modelUuid, units, 900_000, () => opDone);
    const settledMs = after.at - t0;
    const op = await following;
    const cpuSpanMs = performance.now() - t0;
    const cpu = {
      controller: cpuMs(controllerPid) - cpu0.controller,
      temporal: cpuMs(temporalPid) - cpu0.temporal,
      all: systemCpuMs() - cpu0.all,
    };
    const settledEpoch = t0Epoch + settledMs;
    clearInterval(sampler);
    sampler = undefined;
    if (op.state !== 'succeeded') throw new Error(`integrate failed: ${op.error}`);
    const opMs = op.finishedAt ? Date.parse(op.finishedAt) - t0Epoch : Number.NaN;
    const integrations = (await c.api('GET', `/v1/models/${MODEL}/integrations`)).body.integrations as {
      type: string;
    }[];
    const peakController = peakRssBytes(controllerPid);
    const peakTemporal = peakRssBytes(temporalPid);
    await connection.close();
    connection = undefined;
    await stopUp(up.child);

    // the hooks, from the store the controller left behind
    const store = await openStore({ dataDir: paths(env.CHARMFLOW_DATA_DIR).store });
    const runs = await store.db
      .selectFrom('hook_runs')
      .select(['unit', 'hook', 'exit_code', 'started_at', 'finished_at'])
      .where('model_uuid', '=', modelUuid)
      .orderBy('started_at')
      .execute();
    const logged = await store.db
      .selectFrom('log_entries')
      .select(['entity', 'message'])
      .where('model_uuid', '=', modelUuid)
      .where('at', '>=', new Date(t0Epoch))
      .orderBy('id')
      .execute();
    await store.close();
    const at = (d: Date | string | null) => (d === null ? Number.NaN : new Date(d).getTime());
    const window = runs.filter((r) => at(r.started_at) >= t0Epoch);
    const earlier = runs.filter((r) => at(r.started_at) < t0Epoch);
    const late = window.filter((r) => at(r.started_at) > settledEpoch);
    const unfinished = window.filter((r) => r.finished_at === null || r.exit_code !== 0);
    const lastDoneMs = Math.max(...window.map((r) => at(r.finished_at))) - t0Epoch;

    // relation hooks by kind (the endpoint name left off), and by unit
    const kinds: Record<string, number> = {};
    const perUnit = new Map<string, Record<string, number>>();
    for (const r of window) {
      const kind = r.hook.replace(/^.*-relation-/, 'relation-');
      kinds[kind] = (kinds[kind] ?? 0) + 1;
      const u = perUnit.get(r.unit) ?? {};
      u[r.hook] = (u[r.hook] ?? 0) + 1;
      perUnit.set(r.unit, u);
    }
    // what Juju's rules make the least: created once a unit; joined and changed
    // once per remote unit; anything more is relation-changed brought by data
    // that changed after the unit first saw the remote unit (or app-level)
    const leastHooks = 1 + 2 * UNITS + UNITS * 3;
    const anomalies: string[] = [];
    for (const u of units) {
      const h = perUnit.get(u) ?? {};
      const endpoint = u.startsWith(`${PROVIDER}/`) ? 'data' : 'source';
      const joinedWant = u.startsWith(`${PROVIDER}/`) ? UNITS : 1;
      const createdN = h[`${endpoint}-relation-created`] ?? 0;
      const joinedN = h[`${endpoint}-relation-joined`] ?? 0;
      const changedN = h[`${endpoint}-relation-changed`] ?? 0;
      if (createdN !== 1) anomalies.push(`${u}: ${createdN}x ${endpoint}-relation-created`);
      if (joinedN !== joinedWant) anomalies.push(`${u}: ${joinedN}x ${endpoint}-relation-joined (want ${joinedWant})`);
      if (changedN < joinedWant)
        anomalies.push(`${u}: ${changedN}x ${endpoint}-relation-changed (want >= ${joinedWant})`);
      const other = Object.keys(h).filter((k) => !k.startsWith(`${endpoint}-relation-`));
      if (other.length > 0) anomalies.push(`${u}: also ran ${other.map((k) => `${h[k]}x ${k}`).join(', ')}`);
    }
    if (unfinished.length > 0) anomalies.push(`${unfinished.length} hook(s) unfinished or failed`);
    if (late.length > 0) anomalies.push(`${late.length} hook(s) started after the model looked settled`);
    const changes = relationChanges(logged);
    // a hook's wall time, from the controller taking it up to its commit; the
    // provider's unit runs one hook per requirer unit and more, one at a time
    const wall = window
      .filter((r) => r.finished_at !== null)
      .map((r) => at(r.finished_at) - at(r.started_at))
      .sort((a, b) => a - b);
    const provRuns = window.filter((r) => r.unit === `${PROVIDER}/0`);
    const provSpanMs =
      provRuns.length > 0 ? Math.max(...provRuns.map((r) => at(r.finished_at))) - at(provRuns[0].started_at) : 0;
    if (process.env.CHARMFLOW_BENCH_INTEGRATE_TRACE) {
      // every relation hook the units logged, in commit order
      for (const l of logged) if (parseRel(l.message)) console.log(`    ${l.entity}: ${l.message}`);
    }
    const changedMax = Math.max(
      ...units.map(
        (u) => perUnit.get(u)?.[`${u.startsWith(`${PROVIDER}/`) ? 'data' : 'source'}-relation-changed`] ?? 0,
      ),
    );

    return {
      hosts: HOSTS,
      provider_units: 1,
      requirer_units: UNITS,
      integrations_after: integrations.filter((i) => i.type === 'regular').length,
      deploy_to_settled_s: round1(deployToSettledMs / 1000),
      hooks_before_integrate: earlier.length,
      integrate_operation_s: round1(opMs / 1000),
      integrate_to_settled_s: round1(settledMs / 1000),
      integrate_to_last_hook_done_s: round1(lastDoneMs / 1000),
      hooks_run: window.length,
      hooks_least_by_juju_rules: leastHooks,
      hooks_per_second: round1(window.length / (lastDoneMs / 1000)),
      hooks_per_second_until_settled: round1(window.length / (settledMs / 1000)),
      ...Object.fromEntries(
        Object.entries(kinds)
          .sort(([a], [b]) => a.localeCompare(b))
          .map(([k, v]) => [`hooks: ${k}`, v]),
      ),
      provider_unit_hooks: provRuns.length,
      provider_unit_first_hook_to_last_done_s: round1(provSpanMs / 1000),
      hook_wall_ms_p50: Math.round(percentile(wall, 50)),
      hook_wall_ms_p99: Math.round(percentile(wall, 99)),
      relation_changed_per_unit_max: changedMax,
      relation_changed_app_level: changes.appLevel,
      relation_changed_seeing_nothing_new: changes.redundant,
      max_hooks_queued_at_once: after.maxQueued,
      cpu_ms_per_hook_controller: Math.round(cpu.controller / Math.max(1, window.length)),
      cpu_ms_per_hook_temporal: Math.round(cpu.temporal / Math.max(1, window.length)),
      cpu_busy_percent: Math.round((cpu.all / (cpuSpanMs * cpus().length)) * 100),
      controller_rss_during_integrate_max_mb: mb(rss.during.controller),
      controller_rss_before_integrate_max_mb: mb(rss.before.controller),
      controller_peak_rss_mb: mb(peakController),
      controller_tree_rss_during_integrate_max_mb: mb(rss.during.tree),
      temporal_dev_server_rss_during_integrate_max_mb: mb(rss.during.temporal),
      temporal_dev_server_peak_rss_mb: mb(peakTemporal),
      anomalies: anomalies.length > 0 ? anomalies.join('; ') : 'none',
    };
  } finally {
    if (sampler) clearInterval(sampler);
    await connection?.close().catch(() => {});
    if (up) await stopUp(up.child);
    discardDataDir(env);
    await fleet.destroy();
  }
}
