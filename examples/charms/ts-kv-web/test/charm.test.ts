// ts-kv-web's own tests: every hook run by the @charmflow/ops harness against an
// in-memory state, with an in-memory workload instead of the server process.
// No controller, no machine: each test takes milliseconds.
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Harness, type RelationState, type State } from '@charmflow/ops/testing';
import { TsKvWebCharm } from '../src/charm.ts';
import type { KvConnection } from '../src/kv-client.ts';
import type { Workload } from '../src/workload.ts';

const charmDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The workload as the tests see it: what the charm asked of it. */
class FakeWorkload implements Workload {
  static last: FakeWorkload;
  conn: KvConnection | null = null;
  serving: { address: string; port: number } | null = null;
  starts = 0;
  kv: Record<string, string> = { visits: '41' };
  constructor() {
    FakeWorkload.last = this;
  }
  setConnection(conn: KvConnection | null) {
    this.conn = conn;
  }
  connection() {
    return this.conn;
  }
  running() {
    return this.serving !== null;
  }
  async start(address: string, port: number) {
    this.serving = { address, port };
    this.starts++;
  }
  async stop() {
    this.serving = null;
  }
  purge() {}
  async readKey(_conn: KvConnection, key: string) {
    return this.kv[key] ?? null;
  }
}

/** The charm with the fake workload; a test sets `FakeWorkload.seed` to start from a running server. */
class TestCharm extends TsKvWebCharm {
  static seed: Partial<FakeWorkload> = {};
  protected override createWorkload(): Workload {
    return Object.assign(new FakeWorkload(), TestCharm.seed);
  }
}

const harness = new Harness(TestCharm, { charmDir, unit: 'web/0' });

const kv = (over: Partial<RelationState> = {}): RelationState => ({
  endpoint: 'kv',
  id: 7,
  remoteApp: 'kv-store',
  remoteAppData: { username: 'web-7', password: 's3cret', database: 'webdb' },
  remoteUnitsData: {
    'kv-store/0': { host: '10.0.0.5', port: '7070' },
    'kv-store/1': { host: '10.0.0.6', port: '7070' },
  },
  ...over,
});

const started: State = {
  stored: { stored: { started: true, kvUnit: '', port: 0, address: '' } },
  address: '10.0.0.10',
};

describe('ts-kv-web (harness)', () => {
  test('install: maintenance, the workload version is Node.js', async () => {
    TestCharm.seed = {};
    const out = await harness.run('install');
    assert.equal(out.error, null);
    assert.deepEqual(out.unitStatus, { status: 'maintenance', message: 'installed' });
    assert.equal(out.workloadVersion, process.versions.node);
  });

  test('start without a relation: serves on the config port and is blocked', async () => {
    TestCharm.seed = {};
    const out = await harness.run('start', { config: { port: 9090 }, address: '10.0.0.10' });
    assert.deepEqual(out.unitStatus, { status: 'blocked', message: 'needs a kv relation' });
    assert.deepEqual(out.ports, ['9090/tcp']);
    assert.deepEqual(FakeWorkload.last.serving, { address: '10.0.0.10', port: 9090 });
    assert.deepEqual(out.stored.stored, { started: true, kvUnit: '', port: 9090, address: '10.0.0.10' });
    // the status-set while starting took effect at once, then collect-status set the verdict
    assert.deepEqual(
      out.statusHistory.map((s) => s.status),
      ['maintenance', 'blocked'],
    );
  });

  test('config-changed before start: waits, starts nothing', async () => {
    TestCharm.seed = {};
    const out = await harness.run('config-changed');
    assert.deepEqual(out.unitStatus, { status: 'maintenance', message: 'waiting for start' });
    assert.deepEqual(out.ports, []);
    assert.equal(FakeWorkload.last.serving, null);
  });

  test('the leader asks for its database and every unit sends its address; waiting for credentials', async () => {
    TestCharm.seed = {};
    const rel = kv({ remoteAppData: {}, remoteUnitsData: {} });
    const out = await harness.run(
      'kv-relation-created',
      { ...started, leader: true, relations: [rel] },
      { relation: rel },
    );
    assert.deepEqual(out.relations[0].localAppData, { database: 'web' });
    assert.deepEqual(out.relations[0].localUnitData, { 'client-address': '10.0.0.10' });
    assert.deepEqual(out.unitStatus, { status: 'waiting', message: 'waiting for kv-store credentials and address' });
  });

  test('a non-leader does not write the application bag', async () => {
    TestCharm.seed = {};
    const rel = kv();
    const out = await harness.run(
      'kv-relation-joined',
      { ...started, relations: [rel] },
      { relation: rel, remoteUnit: 'kv-store/0' },
    );
    assert.equal(out.error, null);
    assert.deepEqual(out.relations[0].localAppData, {});
    assert.deepEqual(out.relations[0].localUnitData, { 'client-address': '10.0.0.10' });
  });

  test('relation-changed with credentials: connects to the first kv-store unit, remembers it, active', async () => {
    TestCharm.seed = {};
    const rel = kv();
    const out = await harness.run(
      'kv-relation-changed',
      { ...started, leader: true, config: { database: 'webdb' }, relations: [rel] },
      { relation: rel, remoteUnit: 'kv-store/0' },
    );
    assert.deepEqual(out.unitStatus, { status: 'active', message: 'connected to kv-store at 10.0.0.5:7070' });
    assert.deepEqual(FakeWorkload.last.conn, {
      host: '10.0.0.5',
      port: '7070',
      username: 'web-7',
      password: 's3cret',
      database: 'webdb',
    });
    assert.equal(out.stored.stored.kvUnit, 'kv-store/0');
    assert.ok(out.logs.some((l) => l.message === 'using kv-store unit kv-store/0 at 10.0.0.5:7070'));
    // nothing secret in what it logged
    assert.ok(!JSON.stringify(out.logs).includes('s3cret'));
  });

  test('an unchanged bag is not written again', async () => {
    TestCharm.seed = { serving: { address: '10.0.0.10', port: 8080 } };
    const rel = kv({ localAppData: { database: 'web' }, localUnitData: { 'client-address': '10.0.0.10' } });
    const state: State = {
      leader: true,
      relations: [rel],
      stored: { stored: { started: true, kvUnit: 'kv-store/0', port: 8080, address: '10.0.0.10' } },
      ports: ['8080/tcp'],
      address: '10.0.0.10',
    };
    const out = await harness.run('update-status', state);
    assert.equal(FakeWorkload.last.starts, 0, 'the running server is left alone');
    assert.deepEqual(out.relations[0].localAppData, { database: 'web' });
    assert.deepEqual(out.unitStatus, { status: 'active', message: 'connected to kv-store at 10.0.0.5:7070' });
  });

  test('the kv-store unit in use departs: moves to the other one', async () => {
    TestCharm.seed = { serving: { address: '10.0.0.10', port: 8080 } };
    const rel = kv();
    const state: State = {
      relations: [rel],
      stored: { stored: { started: true, kvUnit: 'kv-store/0', port: 8080, address: '10.0.0.10' } },
      address: '10.0.0.10',
    };
    const out = await harness.run('kv-relation-departed', state, {
      relation: rel,
      remoteUnit: 'kv-store/0',
      departingUnit: 'kv-store/0',
    });
    assert.equal(out.stored.stored.kvUnit, 'kv-store/1');
    assert.deepEqual(out.unitStatus, { status: 'active', message: 'connected to kv-store at 10.0.0.6:7070' });
  });

  test('relation-broken: forgets the kv-store and is blocked', async () => {
    TestCharm.seed = { serving: { address: '10.0.0.10', port: 8080 } };
    const rel = kv();
    const out = await harness.run('kv-relation-broken', { ...started, relations: [rel] }, { relation: rel });
    assert.equal(FakeWorkload.last.conn, null);
    assert.equal(out.stored.stored.kvUnit, '');
    assert.deepEqual(out.unitStatus, { status: 'blocked', message: 'needs a kv relation' });
  });

  test('an invalid port blocks the unit', async () => {
    TestCharm.seed = {};
    const out = await harness.run('config-changed', { ...started, config: { port: 70000 } });
    assert.deepEqual(out.unitStatus, { status: 'blocked', message: 'invalid port: 70000' });
  });

  test('the port changes: the old one closes, the new one opens', async () => {
    TestCharm.seed = { serving: { address: '10.0.0.10', port: 8080 } };
    const out = await harness.run('config-changed', {
      stored: { stored: { started: true, kvUnit: '', port: 8080, address: '10.0.0.10' } },
      ports: ['8080/tcp'],
      config: { port: 8081 },
      address: '10.0.0.10',
    });
    assert.deepEqual(out.ports, ['8081/tcp']);
    assert.equal(FakeWorkload.last.starts, 1);
  });

  test('stop: closes the port and stops the server', async () => {
    TestCharm.seed = { serving: { address: '10.0.0.10', port: 8080 } };
    const out = await harness.run('stop', {
      stored: { stored: { started: true, kvUnit: '', port: 8080, address: '10.0.0.10' } },
      ports: ['8080/tcp'],
    });
    assert.deepEqual(out.ports, []);
    assert.equal(FakeWorkload.last.serving, null);
    assert.deepEqual(out.unitStatus, { status: 'maintenance', message: 'stopped' });
    assert.equal(out.stored.stored.started, false);
  });

  test('the visits action answers the count kept in the kv-store', async () => {
    TestCharm.seed = {
      conn: { host: '10.0.0.5', port: '7070', username: 'u', password: 'p', database: 'webdb' },
      kv: { visits: '41', hits: '3' },
    };
    const out = await harness.runAction('visits', {});
    assert.equal(out.actionFailed, null);
    assert.deepEqual(out.actionResults, { visits: '41', database: 'webdb', 'kv-store': '10.0.0.5:7070' });
    assert.deepEqual(out.actionLogs, ['asking kv-store at 10.0.0.5:7070']);
    const hits = await harness.runAction('visits', {}, { key: 'hits' });
    assert.equal(hits.actionResults.visits, '3');
  });

  test('the visits action without a kv-store fails with a message; the unit is not in error', async () => {
    TestCharm.seed = {};
    const out = await harness.runAction('visits', { unitStatus: { status: 'active', message: 'ok' } });
    assert.equal(out.actionFailed, 'not connected to a kv-store');
    assert.equal(out.unitStatus.status, 'active');
  });

  test('a workload that cannot start fails the hook: error with the message, nothing committed', async () => {
    TestCharm.seed = {
      start: async () => {
        throw new Error('port 8080 is taken');
      },
    };
    const rel = kv();
    const out = await harness.run('start', { leader: true, relations: [rel], address: '10.0.0.10' }, {});
    assert.equal(out.error, 'port 8080 is taken');
    assert.deepEqual(out.unitStatus, { status: 'error', message: 'port 8080 is taken' });
    // the relation data it wrote before failing, its ports and its stored state are not committed
    assert.deepEqual(out.relations[0].localAppData, {});
    assert.deepEqual(out.relations[0].localUnitData, {});
    assert.deepEqual(out.ports, []);
    assert.deepEqual(out.stored, {});
  });
});
