// The kv example charms (examples/charms/kv-store, kv-web, ops-kv-web) run by
// the real machine-side runner (`python3 -S runner.py`, HookContext on stdin,
// as test/hook-runtime.test.ts does), with the real hook tools and real
// servers talking over loopback. A small in-test "controller" keeps the
// relation data bags and leader settings, builds each hook's snapshot from
// them and applies what each hook commits, so data really flows from one
// charm's relation-set to the other's relation-get.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildOpsCharm } from '../charm/build-ops-charm.ts';
import { extractCharm, packCharm, readCharmDir, readCharmZip } from '../charm/charm-archive.ts';
import {
  HookContext,
  type HookContextInput,
  HookEvent,
  type HookResult,
  type RelationSnapshot,
} from '../charm/hook-protocol.ts';
import {
  fetchKvWebPage,
  KV_STORE_CHARM,
  KV_WEB_CHARM,
  kvStoreRequest,
  OPS_KV_WEB_CHARM,
  parseKvWebPage,
  waitForKvWebConnected,
} from './helpers/kv-charms.ts';
import { freePort } from './helpers/ports.ts';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The python3 a hook gets through its PATH: the runner and pip must use the same one. */
function hookPython(): string {
  for (const dir of SYSTEM_PATH.split(':')) {
    const p = path.join(dir, 'python3');
    if (existsSync(p)) return p;
  }
  return 'python3';
}
const PY = hookPython();

let root: string;
let runner: string;
let toolsDir: string;
let seq = 0;

// ---- a minimal controller: bags, leader settings, snapshots, commits ----------

type Bag = Record<string, string>;
const appOf = (unit: string) => unit.split('/')[0];

/** One integration: its bags (unit or app name -> settings) and who is in it. */
class Relation {
  bags: Record<string, Bag> = {};
  /** app -> { endpoint, role, units currently joined } */
  constructor(
    readonly id: number,
    readonly iface: string,
    readonly sides: Record<string, { endpoint: string; role: 'provides' | 'requires' | 'peer'; units: string[] }>,
  ) {}

  snapshot(unit: string): RelationSnapshot {
    const app = appOf(unit);
    const side = this.sides[app];
    const remoteApp = side.role === 'peer' ? app : Object.keys(this.sides).find((a) => a !== app)!;
    const remoteUnits = this.sides[remoteApp].units.filter((u) => u !== unit);
    const data: Record<string, Bag> = {};
    for (const name of [unit, app, remoteApp, ...remoteUnits]) data[name] = { ...this.bags[name] };
    return {
      id: this.id,
      endpoint: side.endpoint,
      interface: this.iface,
      role: side.role,
      remoteApplication: remoteApp,
      data,
      units: remoteUnits,
    };
  }

  commit(unit: string, changes: { unit?: Record<string, string | null>; app?: Record<string, string | null> }) {
    for (const [owner, delta] of [
      [unit, changes.unit],
      [appOf(unit), changes.app],
    ] as const) {
      if (!delta) continue;
      const bag = { ...this.bags[owner] };
      for (const [k, v] of Object.entries(delta)) {
        if (v === null) delete bag[k];
        else bag[k] = v;
      }
      this.bags[owner] = bag;
    }
  }
}

const leaderSettings: Record<string, Bag> = {};

interface Unit {
  name: string;
  app: string;
  charmDir: string;
  unitDir: string;
  stateDir: string;
  address: string;
  config: Record<string, string | number | boolean>;
  isLeader: boolean;
  relations: Relation[];
  ports: string[];
  status: { status: string; message: string };
}

const units: Unit[] = [];

/** A unit of a charm: its files packed and unpacked as a deploy does (the hook symlinks survive). */
async function deployUnit(
  charmSrc: string | Buffer,
  name: string,
  opts: { address: string; config: Unit['config']; isLeader: boolean },
): Promise<Unit> {
  const slug = name.replace('/', '-');
  const base = path.join(root, slug);
  const charmDir = path.join(base, 'charm');
  const files =
    typeof charmSrc === 'string'
      ? await readCharmZip(await packCharm(await readCharmDir(charmSrc)))
      : await readCharmZip(charmSrc);
  await extractCharm(files, charmDir);
  const unitDir = path.join(base, 'state');
  mkdirSync(unitDir);
  const unit: Unit = {
    name,
    app: appOf(name),
    charmDir,
    unitDir,
    stateDir: path.join(base, `workload-${slug}`),
    address: opts.address,
    config: opts.config,
    isLeader: opts.isLeader,
    relations: [],
    ports: [],
    status: { status: 'waiting', message: 'agent initialising' },
  };
  units.push(unit);
  return unit;
}

interface Run {
  events: HookEvent[];
  result: HookResult;
}

/** Runs one hook on a unit through the real runner; on exit 0 commits its changes to the model. */
async function hook(
  unit: Unit,
  name: string,
  relation?: { rel: Relation; remoteUnit?: string; departingUnit?: string },
): Promise<Run> {
  const rel = relation?.rel;
  const ctx: HookContextInput = {
    contextId: `ctx-${++seq}-${process.pid}`,
    kind: 'hook',
    name,
    unit: unit.name,
    application: unit.app,
    model: { name: 'kv', uuid: '6f0c5a2e-0000-4000-8000-00000000c0de' },
    machineId: String(units.indexOf(unit)),
    charmDir: unit.charmDir,
    unitDir: unit.unitDir,
    toolsDir,
    config: unit.config,
    isLeader: unit.isLeader,
    leaderSettings: { ...leaderSettings[unit.app] },
    relations: unit.relations.map((r) => r.snapshot(unit.name)),
    relation: rel
      ? {
          id: rel.id,
          remoteApp: rel.snapshot(unit.name).remoteApplication,
          ...(relation.remoteUnit ? { remoteUnit: relation.remoteUnit } : {}),
          ...(relation.departingUnit ? { departingUnit: relation.departingUnit } : {}),
        }
      : undefined,
    privateAddress: unit.address,
    publicAddress: unit.address,
    ports: unit.ports,
    unitStatus: unit.status,
    applicationStatus: { status: 'unknown', message: '' },
    timeoutSeconds: 60,
  };
  const run = await runRunner(ctx);
  const { result } = run;
  assert.equal(result.exitCode, 0, `${unit.name} ${name} failed:\n${result.tail.join('\n')}`);
  for (const ev of run.events)
    if (ev.type === 'status' && ev.scope === 'unit') unit.status = { status: ev.status, message: ev.message };
  for (const [rid, ch] of Object.entries(result.changes.relationSettings)) {
    unit.relations.find((r) => r.id === Number(rid))!.commit(unit.name, ch);
  }
  const ls = { ...leaderSettings[unit.app] };
  for (const [k, v] of Object.entries(result.changes.leaderSettings)) {
    if (v === null) delete ls[k];
    else ls[k] = v;
  }
  leaderSettings[unit.app] = ls;
  unit.ports = result.changes.ports;
  return run;
}

function runRunner(ctx: HookContextInput): Promise<Run> {
  const child = spawn(PY, ['-S', runner], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => {
    out += c;
  });
  child.stderr.setEncoding('utf8').on('data', (c: string) => {
    err += c;
  });
  child.stdin.end(JSON.stringify(HookContext.parse(ctx)));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      try {
        assert.equal(code, 0, `runner exit ${code}: ${err}`);
        const events = out
          .split('\n')
          .filter(Boolean)
          .map((l) => HookEvent.parse(JSON.parse(l)));
        const result = events.find((e): e is HookResult => e.type === 'result');
        assert.ok(result, `no result: ${out} ${err}`);
        resolve({ events, result });
      } catch (e) {
        reject(e);
      }
    });
  });
}

const logs = (run: Run) => run.events.flatMap((e) => (e.type === 'log' ? [e.message] : []));
const lastStatus = (run: Run) => run.events.filter((e) => e.type === 'status').at(-1);

async function refused(address: string, port: number): Promise<boolean> {
  try {
    await fetch(`http://${address}:${port}/`, { signal: AbortSignal.timeout(3000) });
    return false;
  } catch {
    return true;
  }
}

/** True while the process exists and is not a zombie (the daemons' parent, init, may reap late). */
function running(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0] !== 'Z';
  } catch {
    return false;
  }
}

function serverPid(unit: Unit): number | null {
  try {
    return Number(readFileSync(path.join(unit.stateDir, 'server.pid'), 'utf8').trim()) || null;
  } catch {
    return null;
  }
}

/** Fallback cleanup: kill what a unit's pidfile names, if it is still one of our servers. */
function killServer(unit: Unit) {
  const pid = serverPid(unit);
  if (!pid) return;
  try {
    const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    if (cmd.includes(unit.charmDir) || cmd.includes('webserver.py')) process.kill(pid, 'SIGKILL');
  } catch {
    // gone already
  }
}

before(() => {
  root = mkdtempSync(path.join(tmpdir(), 'charmflow-examples-kv-'));
  mkdirSync(path.join(root, 'runtime'));
  for (const f of readdirSync(path.join(repo, 'charm', 'runtime')).filter((n) => n.endsWith('.py'))) {
    copyFileSync(path.join(repo, 'charm', 'runtime', f), path.join(root, 'runtime', f));
  }
  runner = path.join(root, 'runtime', 'runner.py');
  toolsDir = path.join(root, 'runtime', 'bin');
  const r = spawnSync(PY, ['-S', runner, 'install-tools', toolsDir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});

after(() => {
  for (const u of units) killServer(u);
  rmSync(root, { recursive: true, force: true });
});

describe('kv example charms', { timeout: 300_000 }, () => {
  let store0: Unit;
  let store1: Unit;
  let web0: Unit;
  let cluster: Relation;
  let kv: Relation; // kv-store:kv <-> web:kv
  let webPort: number;
  let creds: { username: string; password: string; database: string };

  before(async () => {
    const [kvPort, webP] = [await freePort(), await freePort()];
    webPort = webP;
    store0 = await deployUnit(KV_STORE_CHARM, 'kv-store/0', {
      address: '127.0.0.1',
      config: { port: kvPort },
      isLeader: true,
    });
    web0 = await deployUnit(KV_WEB_CHARM, 'web/0', {
      address: '127.0.0.1',
      config: { port: webPort, database: 'webdb' },
      isLeader: true,
    });
    cluster = new Relation(0, 'kv-cluster', {
      'kv-store': { endpoint: 'cluster', role: 'peer', units: ['kv-store/0'] },
    });
    store0.relations.push(cluster);
  });

  test('kv-store starts as leader and serves, with no database yet', async () => {
    for (const name of ['install', 'cluster-relation-created', 'leader-elected', 'config-changed']) {
      await hook(store0, name, name.startsWith('cluster') ? { rel: cluster } : undefined);
    }
    const port = store0.config.port as number;
    assert.ok(await refused('127.0.0.1', port), 'nothing serves before start');
    const start = await hook(store0, 'start');
    assert.deepEqual(lastStatus(start), {
      ...lastStatus(start),
      status: 'active',
      message: `serving 0 database(s) on :${port}`,
    });
    assert.deepEqual(store0.ports, [`${port}/tcp`]);
    const res = await fetch(`http://127.0.0.1:${port}/`);
    assert.equal(await res.text(), 'kv-store\n');
    assert.equal(
      (await kvStoreRequest('127.0.0.1', port, { username: 'nobody', password: 'x' }, 'web', 'k')).status,
      401,
    );
  });

  test('kv-web without a kv relation serves "no kv-store" and is blocked', async () => {
    for (const name of ['install', 'leader-elected', 'config-changed', 'start']) await hook(web0, name);
    assert.deepEqual(web0.status, { status: 'blocked', message: 'needs a kv relation' });
    const { status, page } = await fetchKvWebPage('127.0.0.1', webPort);
    assert.equal(status, 503);
    assert.deepEqual(page, { state: 'no-kv-store', unit: 'web/0' });
  });

  test('integrate: web asks for its database, the kv-store leader creates its user, web connects and counts visits', async () => {
    kv = new Relation(7, 'kv', {
      'kv-store': { endpoint: 'kv', role: 'provides', units: [] },
      web: { endpoint: 'kv', role: 'requires', units: [] },
    });
    store0.relations.push(kv);
    web0.relations.push(kv);

    // relation-created on both sides: kv-web's leader asks for its database at once.
    const created = await hook(web0, 'kv-relation-created', { rel: kv });
    assert.deepEqual(created.result.changes.relationSettings, {
      '7': { app: { database: 'webdb' }, unit: { 'client-address': '127.0.0.1' } },
    });
    assert.equal(web0.status.status, 'waiting');
    const storeCreated = await hook(store0, 'kv-relation-created', { rel: kv });
    assert.ok(logs(storeCreated).some((m) => m.includes('kv-relation-created') && m.includes('kv:7')));

    // The units join each other.
    kv.sides['kv-store'].units = ['kv-store/0'];
    kv.sides.web.units = ['web/0'];
    const joined = await hook(store0, 'kv-relation-joined', { rel: kv, remoteUnit: 'web/0' });
    const committed = joined.result.changes;
    const app = committed.relationSettings['7']?.app;
    assert.ok(app, JSON.stringify(committed));
    assert.equal(app.username, 'web-7');
    assert.equal(app.database, 'webdb', 'the database the requirer asked for');
    assert.match(app.password ?? '', /^[0-9a-f]{48}$/);
    assert.deepEqual(committed.relationSettings['7'].unit, {
      host: '127.0.0.1',
      port: String(store0.config.port),
    });
    assert.deepEqual(committed.leaderSettings, { 'creds-7': `web-7:${app.password}:webdb` });
    assert.deepEqual(store0.status, {
      status: 'active',
      message: `serving 1 database(s) on :${store0.config.port}`,
    });
    creds = { username: 'web-7', password: app.password!, database: 'webdb' };
    // No secret in what the hook logged or printed (only its committed changes hold it).
    assert.ok(!JSON.stringify(joined.events.filter((e) => e.type !== 'result')).includes(creds.password));
    assert.ok(!joined.result.tail.join('\n').includes(creds.password));

    // kv-web sees the kv-store unit join, then its data change.
    await hook(web0, 'kv-relation-joined', { rel: kv, remoteUnit: 'kv-store/0' });
    const changed = await hook(web0, 'kv-relation-changed', { rel: kv, remoteUnit: 'kv-store/0' });
    // Its bags already hold what it would write: an unchanged bag is not written again.
    assert.deepEqual(changed.result.changes.relationSettings, {});
    assert.deepEqual(web0.status, {
      status: 'active',
      message: `connected to kv-store at 127.0.0.1:${store0.config.port}`,
    });

    const first = await fetchKvWebPage('127.0.0.1', webPort);
    assert.equal(first.status, 200, first.body);
    assert.match(
      first.body,
      new RegExp(
        `^connected to kv-store at 127\\.0\\.0\\.1:${store0.config.port} database webdb as web-7; visits=1$`,
        'm',
      ),
    );
    assert.deepEqual(first.page, {
      state: 'connected',
      unit: 'web/0',
      host: '127.0.0.1',
      port: store0.config.port,
      database: 'webdb',
      user: 'web-7',
      visits: 1,
    });
    const second = await fetchKvWebPage('127.0.0.1', webPort);
    assert.equal(second.page.state === 'connected' && second.page.visits, 2);
    // The count lives in kv-store, under web's database.
    assert.deepEqual(await kvStoreRequest('127.0.0.1', store0.config.port as number, creds, 'webdb', 'visits'), {
      status: 200,
      body: '2',
    });
  });

  test('kv-store checks credentials and keeps each user to its own database', async () => {
    const port = store0.config.port as number;
    const at = (c: { username: string; password: string } | null, db: string, key: string, value?: string) =>
      kvStoreRequest('127.0.0.1', port, c, db, key, value);
    assert.equal((await at({ ...creds, password: 'wrong' }, 'webdb', 'visits')).status, 401);
    assert.equal((await at(null, 'webdb', 'visits')).status, 401);
    assert.equal((await at({ ...creds, username: 'other-1' }, 'webdb', 'visits')).status, 401);
    assert.equal((await at(creds, 'otherdb', 'visits')).status, 403);
    assert.equal((await at(creds, 'otherdb', 'visits', 'x')).status, 403);
    assert.equal((await at(creds, 'webdb', 'missing')).status, 404);
    assert.equal((await at(creds, 'webdb', 'greeting', 'hello there')).status, 204);
    assert.deepEqual(await at(creds, 'webdb', 'greeting'), { status: 200, body: 'hello there' });
  });

  test('a non-leader kv-store unit installs the users from leader settings and publishes its own address', async () => {
    store1 = await deployUnit(KV_STORE_CHARM, 'kv-store/1', {
      address: '127.0.0.2',
      config: { port: await freePort() },
      isLeader: false,
    });
    cluster.sides['kv-store'].units = ['kv-store/0', 'kv-store/1'];
    kv.sides['kv-store'].units = ['kv-store/0', 'kv-store/1'];
    store1.relations.push(cluster, kv);
    // A unit added to an application already in relations sees them from the start.
    const hooks = [
      'install',
      'cluster-relation-created',
      'kv-relation-created',
      'leader-settings-changed',
      'config-changed',
    ];
    for (const name of hooks) {
      await hook(
        store1,
        name,
        name.startsWith('cluster') ? { rel: cluster } : name.startsWith('kv') ? { rel: kv } : undefined,
      );
    }
    const start = await hook(store1, 'start');
    const port = store1.config.port as number;
    assert.deepEqual(store1.status, { status: 'active', message: `serving 1 database(s) on :${port}` });
    // Where it listens, in its unit bag; never the app bag (only the leader may write it).
    assert.deepEqual(start.result.changes.relationSettings, {
      '7': { unit: { host: '127.0.0.2', port: String(port) } },
    });
    assert.deepEqual(start.result.changes.leaderSettings, {});
    // The same user works here, against this unit's own (separate) store.
    assert.equal((await kvStoreRequest('127.0.0.2', port, creds, 'webdb', 'visits')).status, 404);
    assert.equal((await kvStoreRequest('127.0.0.2', port, { ...creds, password: 'x' }, 'webdb', 'visits')).status, 401);
    const joined = await hook(store1, 'kv-relation-joined', { rel: kv, remoteUnit: 'web/0' });
    assert.deepEqual(joined.result.changes.relationSettings, {}, 'nothing new to publish');

    // The peers learn each other's address.
    const peer = await hook(store1, 'cluster-relation-joined', { rel: cluster, remoteUnit: 'kv-store/0' });
    assert.deepEqual(peer.result.changes.relationSettings, { '0': { unit: { host: '127.0.0.2' } } });
    assert.ok(logs(peer).some((m) => m.includes('1 peer(s)')));
  });

  test('kv-web keeps its kv-store unit while it stays, and moves to another when it departs', async () => {
    await hook(web0, 'kv-relation-joined', { rel: kv, remoteUnit: 'kv-store/1' });
    await hook(web0, 'kv-relation-changed', { rel: kv, remoteUnit: 'kv-store/1' });
    const still = await fetchKvWebPage('127.0.0.1', webPort);
    assert.deepEqual(
      [still.page.state, still.page.state === 'connected' && still.page.host],
      ['connected', '127.0.0.1'],
    );
    assert.equal(still.page.state === 'connected' && still.page.visits, 3);

    kv.sides['kv-store'].units = ['kv-store/1'];
    const departed = await hook(web0, 'kv-relation-departed', {
      rel: kv,
      remoteUnit: 'kv-store/0',
      departingUnit: 'kv-store/0',
    });
    assert.ok(logs(departed).some((m) => m.includes('kv-store/0 departed')));
    const port1 = store1.config.port as number;
    assert.deepEqual(web0.status, { status: 'active', message: `connected to kv-store at 127.0.0.2:${port1}` });
    const moved = await fetchKvWebPage('127.0.0.1', webPort);
    // kv-store units do not replicate: the count starts again on kv-store/1.
    assert.deepEqual(moved.page, {
      state: 'connected',
      unit: 'web/0',
      host: '127.0.0.2',
      port: port1,
      database: 'webdb',
      user: 'web-7',
      visits: 1,
    });
    // The departing unit also learns it (a departed hook that only logs).
    const storeDeparted = await hook(store0, 'kv-relation-departed', {
      rel: kv,
      remoteUnit: 'web/0',
      departingUnit: 'kv-store/0',
    });
    assert.ok(logs(storeDeparted).some((m) => m.includes('kv-store/0 departed')));
    kv.sides['kv-store'].units = ['kv-store/0', 'kv-store/1']; // back, for what follows
    await hook(web0, 'kv-relation-joined', { rel: kv, remoteUnit: 'kv-store/0' });
    // ...and kv-store/0 joins again from its side (it no longer counts itself leaving)
    await hook(store0, 'kv-relation-joined', { rel: kv, remoteUnit: 'web/0' });
  });

  test('an ops charm (ops-kv-web) interoperates with the hooks kv-store', async (t) => {
    let built: Buffer;
    try {
      const out = path.join(root, 'ops-kv-web.charm');
      await buildOpsCharm(OPS_KV_WEB_CHARM, out, { python: PY });
      built = await readFile(out);
    } catch (e) {
      // Only a pip that cannot fetch ops (no index reachable) is a reason to skip.
      const msg = (e as Error).message;
      if (!/pip install/.test(msg)) throw e;
      t.skip(`ops is not installable here: ${msg.split('\n')[0]}`);
      return;
    }
    const opsPort = await freePort();
    const ops0 = await deployUnit(built, 'opsweb/0', {
      address: '127.0.0.3',
      config: { port: opsPort, database: 'opsdb' },
      isLeader: true,
    });
    for (const name of ['install', 'leader-elected', 'config-changed', 'start']) await hook(ops0, name);
    assert.deepEqual(ops0.status, { status: 'blocked', message: 'needs a kv relation' });
    assert.deepEqual((await fetchKvWebPage('127.0.0.3', opsPort)).page, { state: 'no-kv-store', unit: 'opsweb/0' });

    const rel = new Relation(8, 'kv', {
      'kv-store': { endpoint: 'kv', role: 'provides', units: ['kv-store/0', 'kv-store/1'] },
      opsweb: { endpoint: 'kv', role: 'requires', units: ['opsweb/0'] },
    });
    ops0.relations.push(rel);
    store0.relations.push(rel);
    store1.relations.push(rel);
    const created = await hook(ops0, 'kv-relation-created', { rel });
    assert.deepEqual(created.result.changes.relationSettings, {
      '8': { app: { database: 'opsdb' }, unit: { 'client-address': '127.0.0.3' } },
    });
    const joined = await hook(store0, 'kv-relation-joined', { rel, remoteUnit: 'opsweb/0' });
    const app = joined.result.changes.relationSettings['8']?.app;
    assert.equal(app?.username, 'opsweb-8');
    assert.equal(app?.database, 'opsdb');
    assert.deepEqual(store0.status, {
      status: 'active',
      message: `serving 2 database(s) on :${store0.config.port}`,
    });
    await hook(store1, 'kv-relation-joined', { rel, remoteUnit: 'opsweb/0' });
    await hook(ops0, 'kv-relation-joined', { rel, remoteUnit: 'kv-store/0' });
    const changed = await hook(ops0, 'kv-relation-changed', { rel, remoteUnit: 'kv-store/0' });
    assert.deepEqual(changed.result.changes.relationSettings, {}, 'nothing rewritten');
    assert.deepEqual(ops0.status, {
      status: 'active',
      message: `connected to kv-store at 127.0.0.1:${store0.config.port}`,
    });
    assert.deepEqual(await waitForKvWebConnected('127.0.0.3', opsPort, { database: 'opsdb' }, 10_000), {
      state: 'connected',
      unit: 'opsweb/0',
      host: '127.0.0.1',
      port: store0.config.port,
      database: 'opsdb',
      user: 'opsweb-8',
      visits: 1,
    });
    for (const visits of [2, 3]) {
      const { status, page, body } = await fetchKvWebPage('127.0.0.3', opsPort);
      assert.equal(status, 200, body);
      assert.deepEqual(page, {
        state: 'connected',
        unit: 'opsweb/0',
        host: '127.0.0.1',
        port: store0.config.port,
        database: 'opsdb',
        user: 'opsweb-8',
        visits,
      });
    }

    // Departed: on to the other kv-store unit.
    rel.sides['kv-store'].units = ['kv-store/1'];
    await hook(ops0, 'kv-relation-departed', { rel, remoteUnit: 'kv-store/0', departingUnit: 'kv-store/0' });
    const moved = await fetchKvWebPage('127.0.0.3', opsPort);
    assert.equal(moved.page.state === 'connected' && `${moved.page.host}:${moved.page.visits}`, '127.0.0.2:1');

    // Broken: forget everything.
    rel.sides['kv-store'].units = [];
    await hook(ops0, 'kv-relation-broken', { rel });
    assert.deepEqual(ops0.status, { status: 'blocked', message: 'needs a kv relation' });
    const gone = await fetchKvWebPage('127.0.0.3', opsPort);
    assert.deepEqual([gone.status, gone.page.state], [503, 'no-kv-store']);
    assert.equal(existsSync(path.join(ops0.stateDir, 'kv.json')), false, 'the credentials are forgotten');

    await hook(ops0, 'stop');
    assert.ok(await refused('127.0.0.3', opsPort));
    await hook(ops0, 'remove');
    assert.equal(existsSync(ops0.stateDir), false);
  });

  test('a kv-store port change reaches kv-web; update-status revives a dead kv-store server, its data kept', async () => {
    // web/0 is on kv-store/1 since kv-store/0 departed earlier.
    const oldPort = store1.config.port as number;
    const newPort = await freePort();
    store1.config = { port: newPort };
    const changed = await hook(store1, 'config-changed');
    assert.equal(changed.result.changes.relationSettings['7']?.unit?.port, String(newPort));
    assert.deepEqual(store1.ports, [`${newPort}/tcp`]);
    assert.ok(await refused('127.0.0.2', oldPort), 'the old port is closed');
    const databases = new Set(Object.values(leaderSettings['kv-store']).map((v) => v.split(':')[2])).size;
    assert.deepEqual(store1.status, { status: 'active', message: `serving ${databases} database(s) on :${newPort}` });

    await hook(web0, 'kv-relation-changed', { rel: kv, remoteUnit: 'kv-store/1' });
    assert.deepEqual(web0.status, { status: 'active', message: `connected to kv-store at 127.0.0.2:${newPort}` });
    const moved = await fetchKvWebPage('127.0.0.1', webPort);
    assert.deepEqual(moved.page.state === 'connected' && [moved.page.host, moved.page.port, moved.page.visits], [
      '127.0.0.2',
      newPort,
      2,
    ]);

    const pid = serverPid(store1)!;
    process.kill(pid, 'SIGKILL');
    for (let i = 0; i < 50 && running(pid); i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal((await fetchKvWebPage('127.0.0.1', webPort)).status, 502, 'kv-store down: the page says so');
    await hook(store1, 'update-status');
    assert.notEqual(serverPid(store1), pid);
    const back = await fetchKvWebPage('127.0.0.1', webPort);
    assert.equal(back.page.state === 'connected' && back.page.visits, 3, back.body);
  });

  test('kv-relation-broken: kv-web forgets the kv-store (blocked), the kv-store leader drops its user', async () => {
    kv.sides['kv-store'].units = [];
    kv.sides.web.units = [];
    // During relation-broken the relation is still in the snapshot, as Juju lists it.
    const broken = await hook(web0, 'kv-relation-broken', { rel: kv });
    assert.deepEqual(broken.result.changes.relationSettings, {}, 'nothing written to a broken relation');
    assert.deepEqual(web0.status, { status: 'blocked', message: 'needs a kv relation' });
    const page = await fetchKvWebPage('127.0.0.1', webPort);
    assert.deepEqual([page.status, page.page.state], [503, 'no-kv-store']);
    assert.equal(existsSync(path.join(web0.stateDir, 'kv.json')), false);

    const port = store0.config.port as number;
    assert.equal((await kvStoreRequest('127.0.0.1', port, creds, 'webdb', 'visits')).status, 200);
    const storeBroken = await hook(store0, 'kv-relation-broken', { rel: kv });
    assert.deepEqual(storeBroken.result.changes.leaderSettings, { 'creds-7': null });
    assert.deepEqual(storeBroken.result.changes.relationSettings, {});
    assert.equal((await kvStoreRequest('127.0.0.1', port, creds, 'webdb', 'visits')).status, 401, 'user dropped');
    // The other unit follows through leader-settings-changed.
    const port1 = store1.config.port as number;
    assert.equal((await kvStoreRequest('127.0.0.2', port1, creds, 'webdb', 'visits')).status, 200);
    await hook(store1, 'leader-settings-changed');
    assert.equal((await kvStoreRequest('127.0.0.2', port1, creds, 'webdb', 'visits')).status, 401);
    for (const u of [store0, web0]) u.relations = u.relations.filter((r) => r !== kv);
    store1.relations = store1.relations.filter((r) => r !== kv);
  });

  test('a requirer that names its database late (or badly) gets its user moved, same name and password', async () => {
    const rel = new Relation(9, 'kv', {
      'kv-store': { endpoint: 'kv', role: 'provides', units: ['kv-store/0'] },
      late: { endpoint: 'kv', role: 'requires', units: ['late/0'] },
    });
    store0.relations.push(rel);
    const joined = await hook(store0, 'kv-relation-joined', { rel, remoteUnit: 'late/0' });
    const first = joined.result.changes.relationSettings['9']?.app;
    assert.deepEqual({ ...first, password: '' }, { username: 'late-9', database: 'late', password: '' });

    rel.bags.late = { database: '../etc' };
    const bad = await hook(store0, 'kv-relation-changed', { rel, remoteUnit: 'late/0' });
    assert.deepEqual(bad.result.changes.relationSettings, {}, 'an invalid name is ignored');
    assert.ok(logs(bad).some((m) => m.includes('ignoring invalid database name')));

    rel.bags.late = { database: 'latedb' };
    const changed = await hook(store0, 'kv-relation-changed', { rel, remoteUnit: 'late/0' });
    assert.deepEqual(changed.result.changes.relationSettings['9']?.app, { ...first, database: 'latedb' });
    assert.deepEqual(changed.result.changes.leaderSettings, { 'creds-9': `late-9:${first?.password}:latedb` });
    const late = { username: 'late-9', password: first!.password! };
    const port = store0.config.port as number;
    assert.equal((await kvStoreRequest('127.0.0.1', port, late, 'latedb', 'k', 'v')).status, 204);
    assert.equal((await kvStoreRequest('127.0.0.1', port, late, 'late', 'k')).status, 403);

    rel.sides.late.units = [];
    await hook(store0, 'kv-relation-broken', { rel });
    assert.equal((await kvStoreRequest('127.0.0.1', port, late, 'latedb', 'k')).status, 401);
    assert.equal(leaderSettings['kv-store']['creds-9'], undefined);
    store0.relations = store0.relations.filter((r) => r !== rel);
  });

  test('stop ends every server, remove deletes the workload state', async () => {
    for (const u of [web0, store1, store0]) {
      const pid = serverPid(u);
      assert.ok(pid, `${u.name} has a server`);
      await hook(u, 'stop');
      assert.equal(u.status.status, 'maintenance');
      assert.ok(await refused(u.address, u.config.port as number), `${u.name} stopped serving`);
      assert.deepEqual(u.ports, []);
      await hook(u, 'remove');
      assert.equal(existsSync(u.stateDir), false);
      assert.equal(running(pid), false, `${u.name}: server pid ${pid} is gone`);
    }
  });

  test('the page parser reads all three kinds of page and refuses anything else', () => {
    assert.deepEqual(
      parseKvWebPage('unit a/1\nconnected to kv-store at 10.0.0.5:7070 database d as u-1; visits=12\n'),
      {
        state: 'connected',
        unit: 'a/1',
        host: '10.0.0.5',
        port: 7070,
        database: 'd',
        user: 'u-1',
        visits: 12,
      },
    );
    assert.deepEqual(parseKvWebPage('unit a/1\nno kv-store\n'), { state: 'no-kv-store', unit: 'a/1' });
    assert.deepEqual(parseKvWebPage('kv-store error at h:1: HTTP 401\n'), {
      state: 'error',
      unit: null,
      message: 'kv-store error at h:1: HTTP 401',
    });
    assert.throws(() => parseKvWebPage('<html>hello</html>'), /not a kv-web page/);
  });
});
