// `npm run bench [-- NAME...] [-- --runs N]`: runs the benchmarks and prints their
// figures. With --runs N each benchmark runs N times, one after the other, and the
// summary gives each numeric figure's median with its range: on a shared machine
// one run's latencies drift by several milliseconds.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { controllerBench } from './controller.bench.ts';
import { deployBench } from './deploy.bench.ts';
import { integrateBench } from './integrate.bench.ts';
import { refreshBench } from './refresh.bench.ts';
import { scaleBench } from './scale.bench.ts';

type Figures = Record<string, number | string>;

const benches: Record<string, () => Promise<Figures>> = {
  controller: controllerBench,
  deploy: deployBench,
  integrate: integrateBench,
  refresh: refreshBench,
  scale: scaleBench,
};

const args = process.argv.slice(2);
const runsAt = args.indexOf('--runs');
const runs = runsAt >= 0 ? Number(args[runsAt + 1]) : 1;
if (!Number.isInteger(runs) || runs < 1 || runs > 50) {
  console.error(`--runs wants a whole number from 1 to 50, got "${args[runsAt + 1]}"`);
  process.exit(2);
}
const wanted = args.filter((a, i) => !a.startsWith('-') && (runsAt < 0 || i !== runsAt + 1));
const names = wanted.length > 0 ? wanted : Object.keys(benches);
for (const n of names) {
  if (!benches[n]) {
    console.error(`unknown benchmark "${n}"; known: ${Object.keys(benches).join(', ')}`);
    process.exit(2);
  }
}

/** Each figure over the runs: the median and the range of numbers, else the first value. */
function summarize(all: Figures[]): Figures {
  const out: Figures = {};
  for (const key of Object.keys(all[0])) {
    const values = all.map((f) => f[key]);
    if (all.length === 1 || !values.every((v) => typeof v === 'number')) {
      out[key] = values[0];
      continue;
    }
    const sorted = (values as number[]).slice().sort((a, b) => a - b);
    const mid = sorted.length >> 1;
    const median = sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
    const round = (n: number) => Math.round(n * 10) / 10;
    out[key] = `${round(median)} (${round(sorted[0])}–${round(sorted[sorted.length - 1])})`;
  }
  return out;
}

const print = (figures: Figures) => {
  for (const [k, v] of Object.entries(figures)) console.log(`  ${k.padEnd(36)} ${v}`);
};

const dir = join(import.meta.dirname ?? '.', 'results');
mkdirSync(dir, { recursive: true });
for (const n of names) {
  const all: Figures[] = [];
  for (let i = 1; i <= runs; i++) {
    console.log(runs > 1 ? `== ${n} (run ${i} of ${runs})` : `== ${n}`);
    all.push(await benches[n]());
    print(all[all.length - 1]);
  }
  const figures = summarize(all);
  if (runs > 1) {
    console.log(`== ${n}: median (min–max) of ${runs} runs`);
    print(figures);
  }
  writeFileSync(
    join(dir, `${n}.json`),
    `${JSON.stringify({ at: new Date().toISOString(), runs: all.length, figures, each: all }, null, 2)}\n`,
  );
}
