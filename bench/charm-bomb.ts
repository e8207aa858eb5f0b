// Peak memory of the API process while it refuses a zip bomb: a ~1 MB `.charm`
// whose one file inflates to 1 GiB (or `--mib N`). The API runs in this process on
// a PGlite store in a temp dir (as `up` keeps it); the peak is VmHWM, reset (clear_refs) just before the
// upload, so it is the upload's own high-water mark. A second client polls /healthz
// meanwhile, to show whether the API stalls.
//
//   node --import tsx bench/charm-bomb.ts [--mib 1024] [--declared-mib N]
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Client } from '@temporalio/client';
import { buildApp } from '../api/app.ts';
import { issueToken } from '../api/tokens.ts';
import { openStore } from '../store/store.ts';
import { zipBombCharm } from '../test/helpers/zip-bomb.ts';

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i < 0 ? fallback : Number(process.argv[i + 1]);
}

function statusKb(field: string): number {
  const m = readFileSync('/proc/self/status', 'utf8').match(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm'));
  return m ? Number(m[1]) : Number.NaN;
}

const mib = flag('--mib', 1024);
const declared = flag('--declared-mib', mib);
const dataDir = mkdtempSync(path.join(tmpdir(), 'charmflow-bomb-'));
const store = await openStore({ dataDir });
const { token } = await issueToken(store.db, { user: 'admin', name: 'bench', role: 'admin' });
// The charm routes never reach Temporal; a lazy client never connects.
const app = await buildApp({ store, temporal: { client: new Client(), taskQueue: 'bench' } });
const url = await app.listen({ host: '127.0.0.1', port: 0 });
const bomb = zipBombCharm(mib, declared);

await fetch(`${url}/healthz`); // the first request pays for connection set-up
let slowestHealth = 0;
let polling = true;
let uploading = false;
let healthChecks = 0;
const poller = (async () => {
  while (polling) {
    const during = uploading;
    const t = performance.now();
    await fetch(`${url}/healthz`);
    if (during) {
      healthChecks++;
      slowestHealth = Math.max(slowestHealth, performance.now() - t);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
})();

global.gc?.();
writeFileSync('/proc/self/clear_refs', '5'); // resets VmHWM to the current RSS
const baseKb = statusKb('VmHWM');
uploading = true;
const started = performance.now();
const res = await fetch(`${url}/v1/charms`, {
  method: 'POST',
  headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream' },
  body: new Uint8Array(bomb),
});
const body = await res.text();
const ms = performance.now() - started;
const peakKb = statusKb('VmHWM');
polling = false;
await poller;
console.log(
  JSON.stringify(
    {
      archiveBytes: bomb.length,
      inflatesToMiB: mib,
      declaredMiB: declared,
      status: res.status,
      answer: body.slice(0, 300),
      uploadMs: Math.round(ms),
      rssBeforeMB: Math.round(baseKb / 1024),
      peakRssMB: Math.round(peakKb / 1024),
      peakGrowthMB: Math.round((peakKb - baseKb) / 1024),
      healthzDuringUpload: healthChecks,
      slowestHealthzMs: Math.round(slowestHealth),
    },
    null,
    2,
  ),
);
await app.close();
await store.close();
rmSync(dataDir, { recursive: true, force: true });
