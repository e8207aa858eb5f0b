// @charmflow/ops: the SDK's dispatch (defer, stored state, collect-status,
// errors) through its harness, and its typing: a config key, endpoint or action
// param the charm's YAML does not have is a compile-time error (tsc).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import type { CharmMeta } from '../sdk/charm-meta.ts';
import { generateCharmTypes } from '../sdk/codegen.ts';
import { Charm, type Framework, flattenResults, Status } from '../sdk/index.ts';
import { Harness } from '../sdk/testing.ts';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

const meta: CharmMeta = {
  name: 'demo',
  endpoints: [
    { name: 'db', role: 'requires', interface: 'pg' },
    { name: 'peers', role: 'peer', interface: 'demo-peers' },
  ],
  config: { mode: { type: 'string', default: 'fast' }, size: { type: 'int' } },
  actions: {
    backup: { params: { target: { type: 'string', default: '/tmp' } }, required: [], additionalProperties: false },
  },
};

type DemoTypes = {
  config: { readonly mode: string; readonly size?: number };
  actions: { backup: { readonly target: string } };
  endpoints: 'db' | 'peers';
};

/** A charm that exercises the model: it defers db events until it has a size. */
class DemoCharm extends Charm<DemoTypes> {
  readonly stored = this.storedState({ runs: 0, seen: [] as string[] });

  constructor(framework: Framework) {
    super(framework);
    this.on('config-changed', () => {
      this.stored.runs += 1;
      if (this.config.mode === 'boom') {
        this.relation('db')?.localUnitData.set('half', 'written');
        this.leaderData.update({ half: 'written' });
        throw new Error('mode boom is not supported');
      }
      if (this.unit.isLeader()) this.leaderData.update({ mode: this.config.mode });
      this.unit.openPort(5432);
    });
    this.on('db-relation-changed', (e) => {
      if (this.config.size === undefined) {
        e.defer();
        return;
      }
      this.stored.seen = [...this.stored.seen, `${e.relation.relationId}:${e.remoteUnit}`];
      e.relation.localUnitData.update({ size: String(this.config.size) });
      if (this.unit.isLeader())
        e.relation.localAppData.update({ 'remote-host': e.relation.unitData(e.remoteUnit!).get('host') });
    });
    this.on('backup-action', (e) => {
      e.log(`backing up to ${e.params.target}`);
      return { target: e.params.target, stats: { files: 3, ok: true } };
    });
    this.on('leader-elected', () => {
      const secret = this.secrets.add({ password: 'pw-1' }, { label: 'admin' });
      this.leaderData.update({ 'admin-secret': secret.id });
    });
    this.on('secret-changed', (e) => {
      this.log.info(`secret now ${e.secret.content({ refresh: true }).password?.length} chars`);
    });
    this.on('collect-unit-status', (e) => {
      e.add(Status.active('ready'));
      if (this.config.size === undefined) e.add(Status.blocked('set size'));
    });
    this.on('collect-app-status', (e) => e.add(Status.waiting(`mode ${this.config.mode}`)));
  }
}

const harness = new Harness(DemoCharm, { meta });
const db = { endpoint: 'db', id: 3, remoteApp: 'pg', remoteUnitsData: { 'pg/0': { host: '10.1.1.1' } } };

describe('sdk: dispatch through the harness', () => {
  test('config defaults fill in, stored state commits, collect-status picks the most pressing', async () => {
    const out = await harness.run('config-changed', { leader: true, stored: { stored: { runs: 4, seen: [] } } });
    assert.equal(out.error, null);
    assert.equal(out.config.mode, 'fast');
    assert.deepEqual(out.leaderData, { mode: 'fast' });
    assert.deepEqual(out.ports, ['5432/tcp']);
    assert.equal(out.stored.stored.runs, 5);
    assert.deepEqual(out.unitStatus, { status: 'blocked', message: 'set size' });
    assert.deepEqual(out.appStatus, { status: 'waiting', message: 'mode fast' });
  });

  test('a non-leader: no app status from collect-app-status, no leader data written', async () => {
    const out = await harness.run('config-changed', { config: { size: 2 }, leaderData: { mode: 'x' } });
    assert.equal(out.error, null);
    assert.deepEqual(out.leaderData, { mode: 'x' });
    const quiet = await harness.run('update-status', { config: { size: 2 } });
    assert.equal(quiet.error, null);
    assert.deepEqual(quiet.appStatus, { status: 'unknown', message: '' });
    assert.deepEqual(quiet.unitStatus, { status: 'active', message: 'ready' });
  });

  test('a deferred event runs again before the next event, until it is handled', async () => {
    const first = await harness.run(
      'db-relation-changed',
      { leader: true, relations: [db] },
      { relation: db, remoteUnit: 'pg/0' },
    );
    assert.deepEqual(first.deferred, [
      { name: 'db-relation-changed', relationId: 'db:3', remoteUnit: 'pg/0', remoteApp: 'pg' },
    ]);
    assert.deepEqual(first.relations[0].localUnitData, {});
    // still no size: stays deferred (once, not twice)
    const second = await harness.run('update-status', { leader: true, relations: [db], deferred: first.deferred });
    assert.deepEqual(second.deferred, first.deferred);
    // a size now: the deferred relation-changed runs first, during config-changed's dispatch
    const third = await harness.run('config-changed', {
      leader: true,
      relations: [db],
      deferred: first.deferred,
      config: { size: 9 },
      stored: second.stored,
    });
    assert.equal(third.error, null);
    assert.deepEqual(third.deferred, []);
    assert.deepEqual(third.relations[0].localUnitData, { size: '9' });
    assert.deepEqual(third.relations[0].localAppData, { 'remote-host': '10.1.1.1' });
    assert.deepEqual(third.stored.stored.seen, ['db:3:pg/0']);
  });

  test('a deferred event of a relation that is gone is dropped', async () => {
    const out = await harness.run('update-status', {
      deferred: [{ name: 'db-relation-changed', relationId: 'db:8', remoteUnit: 'pg/1' }],
    });
    assert.deepEqual(out.deferred, []);
    assert.ok(out.logs.some((l) => l.level === 'DEBUG' && l.message.includes('db:8 is gone')));
  });

  test('a handler throwing: error with its message, nothing committed (data, leader data, ports, stored state)', async () => {
    const out = await harness.run('config-changed', {
      leader: true,
      config: { mode: 'boom' },
      relations: [db],
      stored: { stored: { runs: 1, seen: [] } },
      leaderData: { mode: 'fast' },
    });
    assert.equal(out.error, 'mode boom is not supported');
    assert.deepEqual(out.unitStatus, { status: 'error', message: 'mode boom is not supported' });
    assert.deepEqual(out.relations[0].localUnitData, {});
    assert.deepEqual(out.leaderData, { mode: 'fast' });
    assert.deepEqual(out.stored.stored, { runs: 1, seen: [] });
  });

  test('actions: params with defaults, nested results flattened, logs', async () => {
    const out = await harness.runAction('backup');
    assert.deepEqual(out.actionResults, { target: '/tmp', 'stats.files': '3', 'stats.ok': 'true' });
    assert.deepEqual(out.actionLogs, ['backing up to /tmp']);
    await assert.rejects(harness.runAction('backup', {}, { nope: 1 }), /has no param "nope"/);
    await assert.rejects(harness.runAction('restore'), /not in demo's actions.yaml/);
    assert.throws(() => flattenResults({ Bad_Key: 1 }), /lower-case/);
  });

  test('the harness refuses config the charm does not have, or of the wrong type', async () => {
    await assert.rejects(harness.run('install', { config: { colour: 'red' } }), /"colour" is not in demo's config/);
    await assert.rejects(harness.run('install', { config: { size: 'big' } }), /"size" is int/);
  });

  test('secrets: the leader adds one, a secret-changed handler refreshes it', async () => {
    const out = await harness.run('leader-elected', { leader: true });
    const id = out.leaderData['admin-secret'];
    assert.match(id, /^secret:/);
    assert.deepEqual(out.secrets.find((s) => s.id === id)?.content, { password: 'pw-1' });
    const secret = { id, label: 'admin', content: { password: 'pw-1' }, latest: { password: 'longer-pw' } };
    const changed = await harness.run('secret-changed', { secrets: [secret] }, { secret });
    assert.ok(changed.logs.some((l) => l.message === 'secret now 9 chars'));
    assert.deepEqual(changed.secrets[0].content, { password: 'longer-pw' });
  });
});

describe('sdk: types from the charm YAML', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'cf-sdk-types-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  const tsc = (file: string) => {
    writeFileSync(
      path.join(dir, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          allowImportingTsExtensions: true,
          skipLibCheck: true,
          types: ['node'],
          typeRoots: [path.join(repo, 'node_modules', '@types')],
          paths: { '@charmflow/ops': [path.join(repo, 'sdk', 'index.ts')] },
        },
        files: [file, 'charm-types.ts'],
      }),
    );
    return spawnSync(process.execPath, [path.join(repo, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', dir], {
      encoding: 'utf8',
    });
  };

  const charmSource = (directive: string) => `
import { Charm, type Framework } from '@charmflow/ops';
import type { Types } from './charm-types.ts';
export class C extends Charm<Types> {
  constructor(f: Framework) {
    super(f);
    const port: number = this.config.port;
    const db: string = this.config.database;
    ${directive}
    const missing = this.config.colour;
    this.on('kv-relation-changed', (e) => e.relation.localUnitData.set('p', String(port + db.length)));
    // @ts-expect-error: no such endpoint in metadata.yaml
    this.on('db-relation-changed', () => undefined);
    this.on('visits-action', (e) => {
      const key: string = e.params.key;
      // @ts-expect-error: no such param in actions.yaml
      return { k: key + e.params.nope };
    });
    // @ts-expect-error: no such action
    this.on('reset-action', () => undefined);
    // @ts-expect-error: config is read-only
    this.config.port = 1;
    void missing;
  }
}
`;

  test('generated types: a config key missing from config.yaml is a compile-time error', () => {
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      path.join(dir, 'charm-types.ts'),
      generateCharmTypes(path.join(repo, 'examples', 'charms', 'ts-kv-web')),
    );
    writeFileSync(path.join(dir, 'ok.ts'), charmSource('// @ts-expect-error: colour is not in config.yaml'));
    const ok = tsc('ok.ts');
    assert.equal(ok.status, 0, `tsc: ${ok.stdout}${ok.stderr}`);
    // the control: without the directive, tsc names the missing key
    writeFileSync(path.join(dir, 'bad.ts'), charmSource(''));
    const bad = tsc('bad.ts');
    assert.notEqual(bad.status, 0);
    assert.match(bad.stdout, /bad\.ts\(\d+,\d+\): error TS2339: Property 'colour' does not exist/);
    assert.equal(
      bad.stdout
        .trim()
        .split('\n')
        .filter((l) => l.includes('error TS')).length,
      1,
      bad.stdout,
    );
  });
});

describe('sdk: deploying a TypeScript charm from its source folder', () => {
  test('the folder is bundled as pack does: dispatch and dist/charm.cjs, no TypeScript source', async () => {
    const { uploadCharm } = await import('../cli/charm-upload.ts');
    const { loadCharm } = await import('../charm/charm-archive.ts');
    let sent: Buffer | undefined;
    const api = {
      request: async (_method: string, _path: string, body: Buffer) => {
        sent = body;
        return { charm: { name: 'ts-kv-web', revision: 1, created: true } };
      },
    };
    const ref = await uploadCharm(api as never, path.join(repo, 'examples', 'charms', 'ts-kv-web'));
    assert.equal(ref.name, 'ts-kv-web');
    assert.ok(sent, 'an archive was uploaded');
    const charm = await loadCharm(sent);
    const names = charm.files.map((f) => f.path).sort();
    assert.ok(names.includes('dispatch'), names.join(' '));
    assert.ok(names.includes('dist/charm.cjs'), names.join(' '));
    assert.ok(!names.some((n) => n.endsWith('.ts')), `no TypeScript source in the archive: ${names.join(' ')}`);
  });
});
