// `npm run bench [-- NAME...]`: runs the benchmarks and prints their figures.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { controllerBench } from './controller.bench.ts';
import { deployBench } from './deploy.bench.ts';

const benches: Record<string, () => Promise<Record<string, number | string>>> = {
  controller: controllerBench,
  deploy: deployBench,
};

const wanted = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const names = wanted.length > 0 ? wanted : Object.keys(benches);
for (const n of names) {
  if (!benches[n]) {
    console.error(`unknown benchmark "${n}"; known: ${Object.keys(benches).join(', ')}`);
    process.exit(2);
  }
}
const dir = join(import.meta.dirname ?? '.', 'results');
mkdirSync(dir, { recursive: true });
for (const n of names) {
  console.log(`== ${n}`);
  const figures = await benches[n]();
  for (const [k, v] of Object.entries(figures)) console.log(`  ${k.padEnd(36)} ${v}`);
  writeFileSync(join(dir, `${n}.json`), `${JSON.stringify({ at: new Date().toISOString(), figures }, null, 2)}\n`);
}
