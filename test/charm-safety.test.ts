// Hostile charms against a real controller: archives that inflate far beyond their
// size, and what the upload must answer while keeping the controller responsive.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startTestController, type TestController } from './helpers/controller.ts';
import { deflatedZeros, fileEntry, writeRawZip, zipBombCharm } from './helpers/zip-bomb.ts';

describe('charm upload limits', () => {
  let c: TestController;

  async function upload(bytes: Buffer) {
    const started = Date.now();
    const res = await fetch(`${c.apiUrl}/v1/charms`, {
      method: 'POST',
      headers: { authorization: `Bearer ${c.adminToken}`, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(bytes),
    });
    return { status: res.status, body: (await res.json()) as any, ms: Date.now() - started };
  }

  async function stored() {
    return {
      charms: (await c.api('GET', '/v1/charms')).body.charms,
      operations: (await c.api('GET', '/v1/operations?limit=1000')).body.operations.length,
    };
  }

  /** Run fn with some CHARMFLOW_CHARM_MAX_* set, restoring the environment after. */
  async function withEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
    const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
    Object.assign(process.env, vars);
    try {
      return await fn();
    } finally {
      for (const [k, v] of Object.entries(saved)) {
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
      }
    }
  }

  before(async () => {
    c = await startTestController();
  });
  after(async () => {
    await c?.stop();
  });

  test('a 1 MB charm holding a 1 GiB file is refused with 413 at once, storing nothing', async () => {
    const bomb = zipBombCharm(1024);
    assert.ok(bomb.length < 1.1 * 1024 * 1024, `the bomb is ${bomb.length} bytes`);
    const before = await stored();
    const res = await upload(bomb);
    assert.equal(res.status, 413, JSON.stringify(res.body));
    assert.match(res.body.message, /payload\.bin: unpacks to more than the limit of 64 MiB per file/);
    assert.deepEqual(res.body.details, [
      {
        field: 'payload.bin',
        message: 'unpacks to more than the limit of 64 MiB per file (limit entryBytes=67108864)',
      },
    ]);
    // Refused on its declared size, before inflating: well under the minute it used to take.
    assert.ok(res.ms < 10_000, `took ${res.ms} ms`);
    assert.deepEqual(await stored(), before);
    const health = await fetch(`${c.apiUrl}/healthz`);
    assert.equal(health.status, 200);
  });

  test('an entry that inflates past the size it declares is refused, however small the claim', async () => {
    const before = await stored();
    const res = await upload(zipBombCharm(1024, 1));
    assert.ok(res.status === 400 || res.status === 413, JSON.stringify(res.body));
    assert.match(res.body.message, /payload\.bin|too many bytes/);
    assert.ok(res.ms < 10_000, `took ${res.ms} ms`);
    assert.deepEqual(await stored(), before);
    assert.equal((await c.api('GET', '/v1/charms')).status, 200);
  });

  test('the total and the entry count are bounded too, and the limits come from the environment', async () => {
    const before = await stored();
    const mib = deflatedZeros(1);
    const entries = [
      fileEntry('metadata.yaml', 'name: many\n'),
      ...['a', 'b', 'c'].map((n) => ({
        name: `${n}.bin`,
        deflated: mib.deflated,
        crc: mib.crc,
        declaredSize: mib.size,
      })),
    ];
    const charm = writeRawZip(entries);

    const total = await withEnv({ CHARMFLOW_CHARM_MAX_BYTES: String(2 * 1024 * 1024) }, () => upload(charm));
    assert.equal(total.status, 413, JSON.stringify(total.body));
    // metadata.yaml and a.bin fit; b.bin brings the total past 2 MiB
    assert.equal(total.body.details[0].field, 'b.bin');
    assert.match(total.body.details[0].message, /more than the limit of 2 MiB in all \(limit totalBytes=2097152\)/);

    const count = await withEnv({ CHARMFLOW_CHARM_MAX_ENTRIES: '3' }, () => upload(charm));
    assert.equal(count.status, 413, JSON.stringify(count.body));
    assert.equal(count.body.details[0].field, '(archive)');
    assert.match(count.body.message, /4 entries, more than the limit of 3/);
    assert.deepEqual(await stored(), before);

    // Within the limits the same archive is a charm like any other.
    const ok = await upload(charm);
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    assert.equal(ok.body.charm.name, 'many');
  });
});
