import { mkdtempSync } from 'node:fs';
import { loadConfig } from '../controller/config.ts';
import { startController } from '../controller/controller.ts';

const mb = (n: number) => Math.round(n / 1048576);
const show = (tag: string) => {
  const m = process.memoryUsage();
  console.log(
    tag,
    'rss',
    mb(m.rss),
    'heapTotal',
    mb(m.heapTotal),
    'heapUsed',
    mb(m.heapUsed),
    'external',
    mb(m.external),
    'arrayBuffers',
    mb(m.arrayBuffers),
  );
};
show('start');

const dataDir = mkdtempSync('/tmp/memctl-');
const config = loadConfig({ dataDir, apiPort: 17991, temporalPort: 17935, temporalUiPort: 17936 } as any);
const c = await startController(config, {});
show('up');
await new Promise((r) => setTimeout(r, 5000));
(globalThis as any).gc?.();
show('up+gc');
await c.stop();
process.exit(0);
