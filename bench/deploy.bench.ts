// Deploy 30 units of a trivial charm across 10 real sshd hosts, against a
// controller run as users run it (`charmflow up`: its own process, embedded
// Temporal dev server and PGlite store), and measure: wall time until all units
// are active, hooks per second, the controller's overhead per hook (hook wall time
// minus the same script run over an already open SSH connection), CPU per hook,
// peak memory, and SSH handshakes (counted by the hosts' sshd logs).
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { SshSubstrate } from '../activities/substrates/ssh-substrate.ts';
import { packCharm, readCharmDir } from '../charm/charm-archive.ts';
import { paths } from '../controller/config.ts';
import { openStore } from '../store/store.ts';
import { createFleet, fleetUnsupportedReason } from '../test/fleet.ts';
import { projectRoot } from '../test/helpers/cli.ts';
import { apiClient, controllerEnv, discardDataDir, startUp, stopUp } from './controller-process.ts';
import { cpuMs, mb, peakRssBytes, percentile, rssBytes, systemCpuMs } from './process-tree.ts';

// the figure is 30 units on 10 hosts; other sizes show how overhead grows with load
const HOSTS = Number(process.env.CHARMFLOW_BENCH_HOSTS ?? 10);
const UNITS = Number(process.env.CHARMFLOW_BENCH_UNITS ?? 30);

const round1 = (n: number) => Math.round(n * 10) / 10;

export async function deployBench(): Promise<Record<string, number | string>> {
  const unsupported = fleetUnsupportedReason();
  if (unsupported) return { skipped: unsupported };
  const fleet = await createFleet(HOSTS);
  const env = await controllerEnv();
  const logins = () =>
    fleet.hosts.map((h) => (readFileSync(h.logPath, 'utf8').match(/Accepted publickey/g) ?? []).length);
  let up: Awaited<ReturnType<typeof startUp>> | undefined;
  try {
    up = await startUp(env, ['--headless']);
    const controllerPid = up.child.pid!;
    // resident memory, sampled: before the deploy (start-up, add-machine) and during it
    const rss = { before: 0, during: 0 };
    let phase: keyof typeof rss = 'before';
    const sampler = setInterval(() => {
      rss[phase] = Math.max(rss[phase], rssBytes(controllerPid));
    }, 100);
    const temporalPid = Number(readFileSync(paths(env.CHARMFLOW_DATA_DIR).temporalPid, 'utf8'));
    const c = apiClient(env);

    const created = await c.api('POST', '/v1/models', { name: 'bench', cloud: 'manual' });
    await c.waitOperation(created.body.operation.id);
    // add the hosts, in parallel like an operator's script would
    const added = await Promise.all(
      fleet.hosts.map((h) =>
        c.api('POST', '/v1/models/bench/machines', {
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
    const machines = (await c.api('GET', '/v1/models/bench/machines')).body.machines as { id: string }[];
    const charm = await c.upload(
      '/v1/charms',
      await packCharm(await readCharmDir(join(projectRoot, 'test', 'fixtures', 'charms', 'trivial'))),
    );
    if (charm.status !== 201 && charm.status !== 200) throw new Error(`upload: ${JSON.stringify(charm.body)}`);

    const loginsBefore = logins();
    const cpu0 = { controller: cpuMs(controllerPid), temporal: cpuMs(temporalPid), all: systemCpuMs() };
    const to = Array.from({ length: UNITS }, (_, i) => machines[i % machines.length].id);
    const t0 = performance.now();
    const t0Epoch = Date.now();
    phase = 'during';
    const dep = await c.api('POST', '/v1/models/bench/applications', {
      charm: charm.body.charm.name,
      revision: charm.body.charm.revision,
      numUnits: UNITS,
      to,
    });
    if (dep.status !== 202) throw new Error(`deploy: ${JSON.stringify(dep.body)}`);
    // followed the way `charmflow deploy` follows it (its wait loop, its poll rate);
    // the deploy ends when the controller records the operation finished
    const op = await c.followAsCli(dep.body.operation, 600_000);
    const wallMs = op.finishedAt ? Date.parse(op.finishedAt) - t0Epoch : performance.now() - t0;
    const cpu = {
      controller: cpuMs(controllerPid) - cpu0.controller,
      temporal: cpuMs(temporalPid) - cpu0.temporal,
      all: systemCpuMs() - cpu0.all,
    };
    const loginsAfter = logins();
    const loginsDuringDeploy = loginsAfter.map((n, i) => n - loginsBefore[i]);
    if (op.state !== 'succeeded') throw new Error(`deploy failed: ${op.error}`);
    clearInterval(sampler);
    const peakController = peakRssBytes(controllerPid);
    const peakTemporal = peakRssBytes(temporalPid);
    await stopUp(up.child);

    // the hook runs, from the store the controller left behind
    const store = await openStore({ dataDir: paths(env.CHARMFLOW_DATA_DIR).store });
    const runs = await store.db
      .selectFrom('hook_runs')
      .select(['hook', 'unit', 'started_at', 'finished_at', 'lock_wait_ms'])
      .where('finished_at', 'is not', null)
      .execute();
    await store.close();
    // a hook's wall time runs from the controller taking it up to its commit, less
    // the time it queued on the machine lock behind a co-located unit's hook
    const measured = runs.filter((r) => r.hook !== 'start');
    const hookMs = measured
      .map((r) => new Date(r.finished_at!).getTime() - new Date(r.started_at).getTime() - (r.lock_wait_ms ?? 0))
      .sort((a, b) => a - b);
    const lockWait = measured.map((r) => r.lock_wait_ms ?? 0).sort((a, b) => a - b);

    // the same script over an already open SSH connection: exec `./hooks/install`
    // in a unit's charm dir, 200 times, through a warm pool
    const ssh = new SshSubstrate();
    const baseline: number[] = [];
    try {
      const target = fleet.target(0, { key: 'bench-baseline' });
      const charmDir = '/var/lib/charmflow/units/trivial-0/charm';
      await ssh.exec(target, { command: 'true' });
      for (let i = 0; i < 200; i++) {
        const t = performance.now();
        const r = await ssh.exec(target, { command: `cd ${charmDir} && ./hooks/install` });
        if (r.code !== 0) throw new Error(`baseline exec failed: ${r.stderr}`);
        baseline.push(performance.now() - t);
      }
    } finally {
      await ssh.close();
    }
    baseline.sort((a, b) => a - b);
    const base = percentile(baseline, 50);
    const overhead = hookMs.map((m) => m - base);
    const perHook = (ms: number) => Math.round(ms / runs.length);

    return {
      hosts: HOSTS,
      units: UNITS,
      // the controller's bound on concurrent activities, as `up` was given it
      max_concurrent_activities: process.env.CHARMFLOW_MAX_CONCURRENT_ACTIVITIES || 'as CPU allows (<= 200)',
      wall_time_until_all_active_s: round1(wallMs / 1000),
      hooks_run: runs.length,
      hooks_per_second: round1(runs.length / (wallMs / 1000)),
      hook_wall_ms_p50: round1(percentile(hookMs, 50)),
      hook_wall_ms_p99: round1(percentile(hookMs, 99)),
      machine_lock_wait_ms_p50: percentile(lockWait, 50),
      machine_lock_wait_ms_p99: percentile(lockWait, 99),
      baseline_exec_ms_p50: round1(base),
      controller_overhead_ms_p50: round1(percentile(overhead, 50)),
      controller_overhead_ms_p99: round1(percentile(overhead, 99)),
      cpu_ms_per_hook_controller: perHook(cpu.controller),
      cpu_ms_per_hook_temporal: perHook(cpu.temporal),
      cpu_ms_per_hook_machines_and_rest: perHook(cpu.all - cpu.controller - cpu.temporal),
      cpu_busy_percent: Math.round((cpu.all / (wallMs * cpus().length)) * 100),
      controller_peak_rss_mb: mb(peakController),
      controller_rss_before_deploy_max_mb: mb(rss.before),
      controller_rss_during_deploy_max_mb: mb(rss.during),
      temporal_dev_server_peak_rss_mb: mb(peakTemporal),
      ssh_logins_during_deploy: loginsDuringDeploy.reduce((a, b) => a + b, 0),
      // add-machine logs in with the user's key, then with the controller's own
      ssh_logins_per_host_max: Math.max(...loginsAfter),
    };
  } finally {
    if (up) await stopUp(up.child);
    discardDataDir(env);
    await fleet.destroy();
  }
}
