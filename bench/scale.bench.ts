// Scale on the local cloud: deploy N units of a trivial charm into the `default`
// model (one local machine per unit) against `charmflow up` run as `npm start`
// runs it, and measure the time until every unit is active, hooks per second, the
// controller's and the dev server's peak memory, `status` latency on the settled
// model, and the longest workflow history (unit agents and the deploy).
//
// `npm run bench -- scale` runs 200 and 1000 units; CHARMFLOW_BENCH_SCALE_UNITS=200,500
// picks other sizes.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Connection } from '@temporalio/client';
import { packCharm, readCharmDir } from '../charm/charm-archive.ts';
import { paths } from '../controller/config.ts';
import { projectRoot } from '../test/helpers/cli.ts';
import { apiClient, controllerEnv, discardDataDir, startUp, stopUp } from './controller-process.ts';
import { cpuMs, mb, peakRssBytes, percentile, rssBytes, systemCpuMs } from './process-tree.ts';

const SIZES = (process.env.CHARMFLOW_BENCH_SCALE_UNITS ?? '200,1000')
  .split(',')
  .map((s) => Number(s.trim()))
  .filter((n) => Number.isInteger(n) && n > 0);

const round1 = (n: number) => Math.round(n * 10) / 10;

/** The longest history among the workflows of one model (unit agents and operations). */
async function longestHistory(temporalPort: string, model: string): Promise<{ events: number; workflowId: string }> {
  const connection = await Connection.connect({ address: `127.0.0.1:${temporalPort}` });
  try {
    let best = { events: 0, workflowId: '' };
    let nextPageToken: Uint8Array | undefined;
    do {
      const page = await connection.workflowService.listWorkflowExecutions({
        namespace: 'default',
        query: `CharmflowModel = "${model}"`,
        pageSize: 1000,
        nextPageToken,
      });
      for (const e of page.executions ?? []) {
        const events = Number(e.historyLength ?? 0);
        if (events > best.events) best = { events, workflowId: e.execution?.workflowId ?? '' };
      }
      nextPageToken = page.nextPageToken?.length ? page.nextPageToken : undefined;
    } while (nextPageToken);
    return best;
  } finally {
    await connection.close();
  }
}

async function scaleOnce(units: number): Promise<Record<string, number | string>> {
  const env = await controllerEnv();
  let up: Awaited<ReturnType<typeof startUp>> | undefined;
  try {
    up = await startUp(env, ['--headless']);
    const controllerPid = up.child.pid!;
    const temporalPid = Number(readFileSync(paths(env.CHARMFLOW_DATA_DIR).temporalPid, 'utf8'));
    let peakSampled = 0;
    const sampler = setInterval(() => {
      peakSampled = Math.max(peakSampled, rssBytes(controllerPid));
    }, 200);
    const c = apiClient(env);
    const charm = await c.upload(
      '/v1/charms',
      await packCharm(await readCharmDir(join(projectRoot, 'test', 'fixtures', 'charms', 'trivial'))),
    );
    if (charm.status !== 201 && charm.status !== 200) throw new Error(`upload: ${JSON.stringify(charm.body)}`);

    const cpu0 = { controller: cpuMs(controllerPid), temporal: cpuMs(temporalPid), all: systemCpuMs() };
    const t0 = performance.now();
    const t0Epoch = Date.now();
    const dep = await c.api('POST', '/v1/models/default/applications', {
      charm: charm.body.charm.name,
      revision: charm.body.charm.revision,
      numUnits: units,
    });
    if (dep.status !== 202) throw new Error(`deploy: ${JSON.stringify(dep.body)}`);
    // where the time goes: when the deploy reached each of its steps
    const phases: Record<string, number> = {};
    let following = true;
    const follower = (async () => {
      while (following) {
        const r = await c.api('GET', `/v1/operations/${dep.body.operation.id}`).catch(() => undefined);
        const step = String(r?.body?.progress?.step ?? '').replace(/ \(\d+\/\d+ units\)$/, '');
        if (step && !(step in phases)) phases[step] = Math.round((performance.now() - t0) / 100) / 10;
        // (each look reads the whole deploy record: 1000 units, ~85 KB)
        await new Promise((res) => setTimeout(res, 500));
      }
    })();
    const op = await c.followAsCli(dep.body.operation, 1_800_000);
    const wallMs = op.finishedAt ? Date.parse(op.finishedAt) - t0Epoch : performance.now() - t0;
    const cpu = {
      controller: cpuMs(controllerPid) - cpu0.controller,
      temporal: cpuMs(temporalPid) - cpu0.temporal,
      all: systemCpuMs() - cpu0.all,
    };
    following = false;
    await follower;
    if (op.state !== 'succeeded') throw new Error(`deploy of ${units} units failed: ${op.error}`);

    // every unit active, as status shows it
    const status = await c.api('GET', '/v1/models/default/status');
    if (status.status !== 200) throw new Error(`status: ${JSON.stringify(status.body)}`);
    const shown = JSON.stringify(status.body);
    const active = (shown.match(/"workload-status":\{"current":"active"/g) ?? []).length;

    // status latency on the settled model, as a CLI or dashboard polls it
    const latencies: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t = performance.now();
      const r = await c.api('GET', '/v1/models/default/status');
      if (r.status !== 200) throw new Error(`status: ${r.status}`);
      latencies.push(performance.now() - t);
    }
    latencies.sort((a, b) => a - b);
    const history = await longestHistory(env.CHARMFLOW_TEMPORAL_PORT, 'default');
    clearInterval(sampler);
    const hooks = 4 * units;
    return {
      units,
      wall_time_until_all_active_s: round1(wallMs / 1000),
      units_active_in_status: active,
      hooks_run: hooks,
      hooks_per_second: round1(hooks / (wallMs / 1000)),
      cpu_ms_per_hook_controller: Math.round(cpu.controller / hooks),
      cpu_ms_per_hook_temporal: Math.round(cpu.temporal / hooks),
      cpu_ms_per_hook_machines_and_rest: Math.round((cpu.all - cpu.controller - cpu.temporal) / hooks),
      cpu_busy_percent: Math.round((cpu.all / (wallMs * cpus().length)) * 100),
      controller_peak_rss_mb: mb(Math.max(peakRssBytes(controllerPid), peakSampled)),
      temporal_dev_server_peak_rss_mb: mb(peakRssBytes(temporalPid)),
      status_ms_p50: round1(percentile(latencies, 50)),
      status_ms_p99: round1(percentile(latencies, 99)),
      status_bytes: shown.length,
      longest_history_events: history.events,
      longest_history_workflow: history.workflowId,
      // seconds from the request to the first sight of each step
      ...Object.fromEntries(Object.entries(phases).map(([k, v]) => [`step_s: ${k}`, v])),
    };
  } finally {
    if (up) await stopUp(up.child);
    discardDataDir(env);
  }
}

export async function scaleBench(): Promise<Record<string, number | string>> {
  const out: Record<string, number | string> = {};
  // `npm start` builds dist/ and runs the controller from it; from stale sources
  // `charmflow up` would run through tsx's loader, about 80 MB more resident memory
  execFileSync(process.execPath, [join(projectRoot, 'scripts', 'build.js')], { stdio: 'inherit' });
  for (const n of SIZES) {
    console.log(`  -- ${n} units`);
    const figures = await scaleOnce(n);
    for (const [k, v] of Object.entries(figures)) {
      console.log(`     ${k.padEnd(36)} ${v}`);
      if (k !== 'units') out[`u${n}_${k}`] = v;
    }
  }
  return out;
}
