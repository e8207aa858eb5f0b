// Deploy 30 units of a trivial charm across 10 real sshd hosts and measure:
// wall time until all units are active, hooks per second, the controller's
// overhead per hook (hook wall time minus the same script run over an already
// open SSH connection), peak memory, and SSH handshakes per host.
import { cpus } from 'node:os';
import { join } from 'node:path';
import { SshSubstrate } from '../activities/substrates/ssh-substrate.ts';
import { createFleet, fleetUnsupportedReason } from '../test/fleet.ts';
import { projectRoot } from '../test/helpers/cli.ts';
import { startTestController } from '../test/helpers/controller.ts';
import { cpuMs, mb, percentile, systemCpuMs, treeRssBytes } from './process-tree.ts';

const HOSTS = 10;
const UNITS = 30;

export async function deployBench(): Promise<Record<string, number | string>> {
  const unsupported = fleetUnsupportedReason();
  if (unsupported) return { skipped: unsupported };
  const fleet = await createFleet(HOSTS);
  const c = await startTestController();
  let peakController = 0;
  let peakTemporal = 0;
  const temporalPid = c.temporalPid;
  const sampler = setInterval(() => {
    peakController = Math.max(peakController, process.memoryUsage().rss);
    if (temporalPid) peakTemporal = Math.max(peakTemporal, treeRssBytes(temporalPid).total);
  }, 100);
  try {
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
    const upload = await fetch(`${c.apiUrl}/v1/charms`, {
      method: 'POST',
      headers: { authorization: `Bearer ${c.adminToken}`, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(await packDir(join(projectRoot, 'test', 'fixtures', 'charms', 'trivial'))),
    });
    const charm = (await upload.json()) as { charm: { name: string; revision: number } };

    const handshakesBefore = c.substrates?.ssh.stats().total.handshakes ?? 0;
    const to = Array.from({ length: UNITS }, (_, i) => machines[i % machines.length].id);
    const cpu0 = { self: process.cpuUsage(), temporal: temporalPid ? cpuMs(temporalPid) : 0, all: systemCpuMs() };
    const t0 = performance.now();
    const dep = await c.api('POST', '/v1/models/bench/applications', {
      charm: charm.charm.name,
      revision: charm.charm.revision,
      numUnits: UNITS,
      to,
    });
    if (dep.status !== 202) throw new Error(`deploy: ${JSON.stringify(dep.body)}`);
    const op = await c.waitOperation(dep.body.operation.id, 600_000);
    const wallMs = performance.now() - t0;
    const selfCpu = process.cpuUsage(cpu0.self);
    const cpu = {
      controller: (selfCpu.user + selfCpu.system) / 1000,
      temporal: temporalPid ? cpuMs(temporalPid) - cpu0.temporal : 0,
      all: systemCpuMs() - cpu0.all,
    };
    const handshakesDuringDeploy = (c.substrates?.ssh.stats().total.handshakes ?? 0) - handshakesBefore;
    if (op.state !== 'succeeded') throw new Error(`deploy failed: ${op.error}`);

    const runs = await c.store.db
      .selectFrom('hook_runs')
      .select(['hook', 'unit', 'started_at', 'finished_at', 'lock_wait_ms'])
      .where('finished_at', 'is not', null)
      .execute();
    // a hook's wall time runs from the controller taking it up to its commit, less
    // the time it queued on the machine lock behind a co-located unit's hook
    const measured = runs.filter((r) => r.hook !== 'start');
    const totalMs = measured.map((r) => new Date(r.finished_at!).getTime() - new Date(r.started_at).getTime());
    const hookMs = measured.map((r, i) => totalMs[i] - (r.lock_wait_ms ?? 0));
    const lockWait = measured.map((r) => r.lock_wait_ms ?? 0).sort((a, b) => a - b);

    // the same script over an already open SSH connection: exec `sh hooks/install`
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
    const overhead = hookMs.map((m) => m - base).sort((a, b) => a - b);

    const byKey = c.substrates?.ssh.stats().byKey ?? {};
    const handshakes = Object.values(byKey).map((s) => s.handshakes);
    return {
      hosts: HOSTS,
      units: UNITS,
      wall_time_until_all_active_s: Math.round(wallMs / 100) / 10,
      hooks_run: runs.length,
      hooks_per_second: Math.round((runs.length / (wallMs / 1000)) * 10) / 10,
      hook_wall_ms_p50:
        Math.round(
          percentile(
            [...hookMs].sort((a, b) => a - b),
            50,
          ) * 10,
        ) / 10,
      machine_lock_wait_ms_p50: percentile(lockWait, 50),
      machine_lock_wait_ms_p99: percentile(lockWait, 99),
      baseline_exec_ms_p50: Math.round(base * 10) / 10,
      controller_overhead_ms_p50: Math.round(percentile(overhead, 50) * 10) / 10,
      controller_overhead_ms_p99: Math.round(percentile(overhead, 99) * 10) / 10,
      cpu_ms_per_hook_controller: Math.round(cpu.controller / runs.length),
      cpu_ms_per_hook_temporal: Math.round(cpu.temporal / runs.length),
      cpu_ms_per_hook_machines_and_rest: Math.round((cpu.all - cpu.controller - cpu.temporal) / runs.length),
      cpu_busy_percent: Math.round((cpu.all / (wallMs * cpus().length)) * 100),
      controller_peak_rss_mb: mb(peakController),
      temporal_dev_server_peak_rss_mb: temporalPid ? mb(peakTemporal) : 'n/a',
      // add-machine logs in with the user's key, then with the controller's own: 2 per host
      ssh_handshakes_per_host_max: handshakes.length ? Math.max(...handshakes) : 'n/a',
      ssh_handshakes_during_deploy: handshakesDuringDeploy,
      ssh_handshakes_total: handshakes.length ? handshakes.reduce((a, b) => a + b, 0) : 'n/a',
    };
  } finally {
    clearInterval(sampler);
    await c.stop();
    await fleet.destroy();
  }
}

async function packDir(dir: string): Promise<Buffer> {
  const { readCharmDir, packCharm } = await import('../charm/charm-archive.ts');
  return packCharm(await readCharmDir(dir));
}
