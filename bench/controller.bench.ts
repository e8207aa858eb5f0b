// Controller foundation figures: time from `charmflow up` to a healthy API (first
// start and restart), GET /v1/models latency, idle memory of the process tree.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { controllerEnv, discardDataDir, startUp, stopUp as stop } from './controller-process.ts';
import { mb, percentile, treeRssBytes } from './process-tree.ts';

export async function controllerBench(): Promise<Record<string, number>> {
  const env = await controllerEnv();
  const dataDir = env.CHARMFLOW_DATA_DIR;
  try {
    const first = await startUp(env);
    console.error(`  first start healthy in ${Math.round(first.ms)} ms`);
    await stop(first.child);
    const second = await startUp(env);
    console.error(`  restart healthy in ${Math.round(second.ms)} ms`);
    const token = readFileSync(join(dataDir, 'admin-token'), 'utf8').trim();
    const url = `http://127.0.0.1:${env.CHARMFLOW_API_PORT}/v1/models`;
    const headers = { authorization: `Bearer ${token}` };
    for (let i = 0; i < 100; i++) await (await fetch(url, { headers })).json(); // warm-up
    const samples: number[] = [];
    for (let i = 0; i < 1000; i++) {
      const t = performance.now();
      const r = await fetch(url, { headers });
      await r.json();
      samples.push(performance.now() - t);
    }
    samples.sort((a, b) => a - b);
    console.error('  1000 GET /v1/models done; sampling idle memory');
    // idle: no requests for a while, sample the tree's RSS
    let peak = 0;
    let processes = 0;
    for (let i = 0; i < 20; i++) {
      const t = treeRssBytes(second.child.pid!);
      if (t.total > peak) {
        peak = t.total;
        processes = t.processes;
      }
      await new Promise((r) => setTimeout(r, 250));
    }
    await stop(second.child);
    return {
      first_start_to_healthy_ms: Math.round(first.ms),
      restart_to_healthy_ms: Math.round(second.ms),
      get_models_p50_ms: Math.round(percentile(samples, 50) * 100) / 100,
      get_models_p99_ms: Math.round(percentile(samples, 99) * 100) / 100,
      idle_tree_peak_rss_mb: mb(peak),
      idle_tree_processes: processes,
    };
  } finally {
    discardDataDir(env);
  }
}
