// A hook that prints tens of megabytes: every byte streams to whoever reads it
// live, while what the controller keeps of the output stays bounded.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LocalSubstrate } from '../activities/substrates/local-substrate.ts';
import { KEPT_OUTPUT_BYTES, OutputTail } from '../activities/substrates/output-tail.ts';
import type { MachineTarget } from '../activities/substrates/substrate.ts';

const MB50 = 50_000_000;

describe('hook output is kept bounded', () => {
  let root: string;
  let target: MachineTarget;
  const local = new LocalSubstrate();

  before(() => {
    root = mkdtempSync('/var/tmp/cf-output-');
    target = { key: 'model/0', kind: 'local', address: '127.0.0.5', rootDir: join(root, 'machine-0') };
    mkdirSync(target.rootDir, { recursive: true });
  });
  after(() => {
    rmSync(root, { recursive: true, force: true });
  });

  test('50 MB on stdout and stderr stream whole; the result keeps the last 64 KiB of each and says what it dropped', async () => {
    // 50,000,000 bytes of numbered lines, then a last line to find in the tail.
    const script = (stream: string) => `seq 1 100000000 | head -c ${MB50 - 8} ${stream}; printf 'THE-END\\n' ${stream}`;
    let streamedOut = 0;
    let streamedErr = 0;
    const before = process.memoryUsage().rss;
    const res = await local.exec(target, {
      command: `{ ${script('')}; } & { ${script('>&2')}; }; wait`,
      onStdout: (c) => {
        streamedOut += c.length;
      },
      onStderr: (c) => {
        streamedErr += c.length;
      },
    });
    const grew = process.memoryUsage().rss - before;
    assert.equal(res.code, 0);
    assert.equal(streamedOut, MB50);
    assert.equal(streamedErr, MB50);
    for (const kept of [res.stdout, res.stderr]) {
      const note = `[charmflow: ${MB50 - KEPT_OUTPUT_BYTES} earlier bytes dropped]\n`;
      assert.ok(kept.startsWith(note), kept.slice(0, 80));
      assert.equal(Buffer.byteLength(kept.slice(note.length)), KEPT_OUTPUT_BYTES);
      assert.ok(kept.endsWith('THE-END\n'));
    }
    // Not a measurement of the exec alone (the heap moves), but 100 MB kept whole would show.
    assert.ok(grew < 60 * 1024 * 1024, `RSS grew by ${Math.round(grew / 1024 / 1024)} MB`);
  });

  test('a caller that does not stream a stream still gets all of it', async () => {
    const res = await local.exec(target, { command: 'head -c 200000 /dev/zero | tr "\\0" x' });
    assert.equal(res.stdout.length, 200_000);
  });

  test('the tail is exactly the last bytes, across chunk boundaries', () => {
    const t = new OutputTail(10);
    for (const piece of ['abc', 'defghij', 'klmnopqrstu', 'v', 'wxyz']) t.push(Buffer.from(piece));
    assert.equal(t.dropped, 16);
    assert.equal(t.text(), '[charmflow: 16 earlier bytes dropped]\nqrstuvwxyz');
    const small = new OutputTail(10);
    small.push(Buffer.from('short'));
    assert.equal(small.text(), 'short');
  });
});
