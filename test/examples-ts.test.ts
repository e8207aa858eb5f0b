// TypeScript charms end to end: `charmflow init` then `charmflow pack` give a
// .charm whose dispatch runs under the real hook runner and hook tools; and the
// ts-kv-web example deployed on sshd hosts next to the hooks and ops kv-web
// charms, counting its visits through kv-store, its action run through the API,
// and a handler that throws putting the unit in error with nothing committed.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildOpsCharm } from '../charm/build-ops-charm.ts';
import { extractCharm, readCharmZip } from '../charm/charm-archive.ts';
import { HookContext, type HookContextInput, HookEvent, type HookResult } from '../charm/hook-protocol.ts';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { type AptProxy, startAptProxy } from './helpers/apt-proxy.ts';
import { type CliResult, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import {
  fetchKvWebPage,
  KV_STORE_CHARM,
  KV_WEB_CHARM,
  OPS_KV_WEB_CHARM,
  waitForKvWebConnected,
} from './helpers/kv-charms.ts';
import { settle } from './helpers/relations.ts';
import { waitFor } from './helpers/wait.ts';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TS_KV_WEB = path.join(repo, 'examples', 'charms', 'ts-kv-web');
const tsxLoader = path.join(repo, 'node_modules', 'tsx', 'dist', 'loader.mjs');

describe('charmflow init and pack: a TypeScript charm under the real hook runner', () => {
  let root: string;
  let charmDir: string;
  let runner: string;
  let toolsDir: string;
  let seq = 0;

  before(() => {
    root = mkdtempSync(path.join(tmpdir(), 'cf-ts-init-'));
    mkdirSync(path.join(root, 'runtime'));
    for (const f of readdirSync(path.join(repo, 'charm', 'runtime')).filter((n) => n.endsWith('.py'))) {
      copyFileSync(path.join(repo, 'charm', 'runtime', f), path.join(root, 'runtime', f));
    }
    runner = path.join(root, 'runtime', 'runner.py');
    toolsDir = path.join(root, 'runtime', 'bin');
    const r = spawnSync('python3', ['-S', runner, 'install-tools', toolsDir], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  const hook = (
    name: string,
    over: Partial<HookContextInput> = {},
  ): Promise<{ events: HookEvent[]; result: HookResult }> => {
    const ctx: HookContextInput = {
      contextId: `ts-${++seq}-${process.pid}`,
      kind: 'hook',
      name,
      unit: 'hello-ts/0',
      application: 'hello-ts',
      model: { name: 'dev', uuid: '6f0c5a2e-0000-4000-8000-00000000beef' },
      machineId: '0',
      charmDir,
      unitDir: path.join(root, 'unit'),
      toolsDir,
      config: { greeting: 'howdy' },
      isLeader: true,
      leaderSettings: {},
      relations: [],
      privateAddress: '127.0.0.1',
      publicAddress: '127.0.0.1',
      ports: [],
      unitStatus: { status: 'waiting', message: '' },
      applicationStatus: { status: 'unknown', message: '' },
      timeoutSeconds: 60,
      ...over,
    };
    const child = spawn('python3', ['-S', runner], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      out += c;
    });
    child.stdin.end(JSON.stringify(HookContext.parse(ctx)));
    return new Promise((resolve, reject) => {
      child.on('error', reject);
      child.on('close', () => {
        const events = out
          .split('\n')
          .filter(Boolean)
          .map((l) => HookEvent.parse(JSON.parse(l)));
        const result = events.find((e): e is HookResult => e.type === 'result');
        if (!result) reject(new Error(`no result: ${out}`));
        else resolve({ events, result });
      });
    });
  };

  test('init scaffolds a charm whose own harness test passes', async () => {
    const dir = path.join(root, 'hello-ts');
    const r = await runCli(['init', 'hello-ts', '--dir', dir]);
    assert.equal(r.code, 0, r.stderr);
    for (const f of [
      'metadata.yaml',
      'config.yaml',
      'actions.yaml',
      'src/charm.ts',
      'src/charm-types.ts',
      'test/charm.test.ts',
    ]) {
      assert.ok(readFileSync(path.join(dir, f), 'utf8').length > 0, f);
    }
    assert.match(readFileSync(path.join(dir, 'src/charm-types.ts'), 'utf8'), /readonly greeting: string;/);
    const t = spawnSync(
      process.execPath,
      ['--import', tsxLoader, '--test', '--test-reporter=tap', 'test/charm.test.ts'],
      // its own test run, not a subtest of this one
      { cwd: dir, encoding: 'utf8', env: { ...process.env, NODE_TEST_CONTEXT: undefined } },
    );
    assert.equal(t.status, 0, t.stdout + t.stderr);
    assert.match(t.stdout, /# pass 2/);
    // a second init into the same place is refused
    const again = await runCli(['init', 'hello-ts', '--dir', dir]);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /exists and is not empty/);
    for (const lang of ['bash', 'python']) {
      const other = await runCli(['init', `hello-${lang}`, '--lang', lang, '--dir', path.join(root, `hello-${lang}`)]);
      assert.equal(other.code, 0, other.stderr);
    }
    const sh = spawnSync(path.join(root, 'hello-bash', 'test', 'hooks.test.sh'), { encoding: 'utf8' });
    assert.equal(sh.status, 0, sh.stdout + sh.stderr);
  });

  test('pack bundles it into a .charm whose dispatch runs the hooks and actions', async () => {
    const out = path.join(root, 'hello-ts.charm');
    const r = await runCli(['pack', path.join(root, 'hello-ts'), '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    const files = await readCharmZip(readFileSync(out));
    assert.deepEqual(files.map((f) => `${f.path} ${f.mode.toString(8)}`).sort(), [
      'actions.yaml 644',
      'config.yaml 644',
      'dispatch 755',
      'dist/charm.cjs 644',
      'metadata.yaml 644',
    ]);
    assert.match(files.find((f) => f.path === 'dispatch')!.data.toString(), /^# charmflow-runtime: node$/m);
    charmDir = path.join(root, 'unit', 'charm');
    mkdirSync(path.join(root, 'unit'), { recursive: true });
    await extractCharm(files, charmDir);

    const changed = await hook('config-changed');
    assert.equal(changed.result.exitCode, 0, changed.result.tail.join('\n'));
    const status = changed.events.filter((e) => e.type === 'status');
    assert.deepEqual(
      status.map((e) => e.type === 'status' && [e.scope, e.status, e.message]),
      [['unit', 'active', 'howdy from hello-ts/0']],
    );

    const greet = await hook('greet', {
      kind: 'action',
      action: { id: '7', params: { name: 'Ada' } },
      charmState: { 'charmflow.stored.stored': '{"greetings":4}' },
    });
    assert.equal(greet.result.exitCode, 0, greet.result.tail.join('\n'));
    assert.deepEqual(greet.result.changes.actionResults, { message: 'howdy, Ada', count: '5' });
    assert.deepEqual(greet.result.changes.charmState, { 'charmflow.stored.stored': '{"greetings":5}' });
  });

  test('a handler that throws fails the hook with its message; what it wrote is not committed', async () => {
    // the packed bundle with its install handler made to throw, run by the real runner
    const bundle = path.join(charmDir, 'dist', 'charm.cjs');
    const text = readFileSync(bundle, 'utf8');
    const patched = text.replace(
      /this\.on\("install", \(\) => this\.log\.info\("installing hello-ts"\)\);/,
      'this.on("install", () => { this.stored.greetings = 99; this.unit.openPort(9999); throw new Error("disk full on /srv"); });',
    );
    assert.notEqual(patched, text, 'the bundle has the install handler to patch');
    writeFileSync(bundle, patched);
    const failed = await hook('install');
    assert.equal(failed.result.exitCode, 1);
    assert.match(failed.result.tail.join('\n'), /^ERROR install hook: disk full on \/srv$/m);
    assert.ok(
      failed.events.some((e) => e.type === 'log' && e.level === 'ERROR' && e.message.includes('disk full on /srv')),
    );
    // the stored state was never saved (and on exit 1 the controller commits nothing of the hook)
    assert.deepEqual(failed.result.changes.charmState, {});
  });
});

const unsupported = fleetUnsupportedReason();

/** A host's own root with the distro's nodejs gone, apt going through `proxy` (host:port). */
const withoutNode = (proxy: string) =>
  [
    'dpkg --purge --force-depends --force-remove-essential nodejs >/dev/null 2>&1',
    '! command -v node',
    `printf 'Acquire::http::Proxy "http://%s";\\n' "${proxy}" > /etc/apt/apt.conf.d/99-fleet-proxy`,
  ].join(' && ');

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as AddressInfo;
  await new Promise((r) => srv.close(r));
  return port;
}

describe('ts-kv-web on sshd hosts beside kv-web and ops-kv-web', { skip: unsupported, timeout: 600_000 }, () => {
  let fleet: Fleet;
  let proxy: AptProxy;
  let c: TestController;
  let dir: string;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const status = async () => JSON.parse((await ok('status', '-m', 'fleet', '--format', 'json')).stdout);
  const unitOf = async (unit: string) => (await status()).applications[unit.split('/')[0]].units[unit];

  before(async () => {
    // host 2 (tsweb) and host 3 have their own root without Node.js: host 2's apt reaches
    // Debian's mirror through a proxy here, host 3's apt reaches nothing (port 9 refuses)
    const port = await freePort();
    [fleet, c] = await Promise.all([
      createFleet(4, {
        ownRoot: { 2: withoutNode(`$FLEET_GATEWAY:${port}`), 3: withoutNode('$FLEET_GATEWAY:9') },
        startTimeoutMs: 120_000,
      }),
      startTestController(),
    ]);
    proxy = await startAptProxy(fleet.gateway, port);
    dir = mkdtempSync(path.join(tmpdir(), 'cf-ts-kv-'));
    await buildOpsCharm(OPS_KV_WEB_CHARM, path.join(dir, 'ops-kv-web.charm'));
    await ok('pack', TS_KV_WEB, '--out', path.join(dir, 'ts-kv-web.charm'));
    await ok('add-model', 'fleet', '--cloud', 'manual');
    for (const h of fleet.hosts) {
      await ok('add-machine', `ssh:root@${h.address}:${h.port}`, '--private-key', h.privateKeyPath, '-m', 'fleet');
    }
  });
  after(async () => {
    await c?.stop();
    await proxy?.close();
    await fleet?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('the same page and the same count through kv-store, from all three kinds of charm', async () => {
    assert.notEqual(fleet.sh(2, 'command -v node').code, 0, 'host 2 starts without Node.js');
    assert.equal(fleet.sh(1, 'command -v node').code, 0, "host 1 has the test machine's Node.js");
    await ok('deploy', KV_STORE_CHARM, 'kv-store', '--to', '0', '-m', 'fleet');
    await ok('deploy', KV_WEB_CHARM, 'kv-web', '--to', '1', '-m', 'fleet', '--config', 'database=shared');
    await ok(
      'deploy',
      path.join(dir, 'ops-kv-web.charm'),
      'opsweb',
      '--to',
      '1',
      '-m',
      'fleet',
      '--config',
      'database=shared',
      '--config',
      'port=8081',
    );
    await ok(
      'deploy',
      path.join(dir, 'ts-kv-web.charm'),
      'tsweb',
      '--to',
      '2',
      '-m',
      'fleet',
      '--config',
      'database=shared',
    );
    await settle(c, ['fleet']);
    // before tsweb's first hook its machine got the distro's nodejs, through apt
    const node = fleet.sh(2, 'command -v node && node --version && dpkg-query -W nodejs');
    assert.equal(node.code, 0, node.stderr);
    assert.match(node.stdout, /^\/usr\/bin\/node\nv\d+\.\d+\.\d+\nnodejs\t.*deb\d+u/);
    assert.ok(proxy.stats.forwarded > 0, 'apt fetched through the proxy');
    console.log(`host 2 got ${node.stdout.split('\n')[1]} (${node.stdout.split('\n')[2]}) from Debian through apt`);
    const ts = await unitOf('tsweb/0');
    assert.deepEqual(ts['workload-status'], { current: 'blocked', message: 'needs a kv relation' });
    const tsAddr: string = ts['public-address'];
    assert.equal((await fetchKvWebPage(tsAddr, 8080)).page.state, 'no-kv-store');
    assert.match((await status()).applications.tsweb.version ?? ts.version ?? '', /^\d+\.\d+\.\d+$|^$/);

    for (const app of ['kv-web', 'opsweb', 'tsweb']) await ok('integrate', `${app}:kv`, 'kv-store:kv', '-m', 'fleet');
    await settle(c, ['fleet']);
    const store = (await unitOf('kv-store/0'))['public-address'];
    const webAddr = (await unitOf('kv-web/0'))['public-address'];
    // the three share one database: each visit, from any of them, counts once
    const first = await waitForKvWebConnected(tsAddr, 8080, { database: 'shared' });
    assert.equal(first.host, store);
    assert.equal(first.port, 7070);
    assert.equal(first.unit, 'tsweb/0');
    assert.match(first.user, /^tsweb-\d+$/);
    const hooks = await waitForKvWebConnected(webAddr, 8080, { database: 'shared' });
    const ops = await waitForKvWebConnected(webAddr, 8081, { database: 'shared' });
    const again = await fetchKvWebPage(tsAddr, 8080);
    assert.equal(again.page.state === 'connected' && again.page.visits, Math.max(hooks.visits, ops.visits) + 1);
    assert.deepEqual((await unitOf('tsweb/0'))['workload-status'], {
      current: 'active',
      message: `connected to kv-store at ${store}:7070`,
    });
    assert.equal((await unitOf('tsweb/0'))['open-ports']?.[0] ?? '8080/tcp', '8080/tcp');

    // the action, through the API: the count kept in kv-store, not counted as a visit
    const run = JSON.parse((await ok('run', 'tsweb/0', 'visits', '-m', 'fleet', '--format', 'json')).stdout);
    assert.equal(run.status, 'completed', JSON.stringify(run));
    assert.equal(run.results.visits, String(again.page.state === 'connected' && again.page.visits));
    assert.equal(run.results.database, 'shared');
    assert.equal(run.results['kv-store'], `${store}:7070`);
    const key = JSON.parse(
      (await ok('run', 'tsweb/0', 'visits', 'key=nothing-here', '-m', 'fleet', '--format', 'json')).stdout,
    );
    assert.equal(key.results.visits, '0');
  });

  test('a handler that throws: the unit is in error with the message, nothing committed; fixed config heals it', async () => {
    // kv-store/0 already listens on 7070 of its host: tsweb on the same host cannot bind it
    await ok('add-unit', 'tsweb', '--to', '0', '-m', 'fleet');
    await settle(c, ['fleet']);
    const failing = await cli('config', 'tsweb', 'port=7070', '-m', 'fleet');
    assert.equal(failing.code, 1, failing.stderr);
    assert.match(failing.stderr, /unit tsweb\/1: hook failed: "config-changed"/);
    const err = await waitFor('tsweb/1 in error', async () => {
      const u = await unitOf('tsweb/1');
      return u['workload-status'].current === 'error' ? u : null;
    });
    assert.match(err['workload-status'].message, /hook failed: "config-changed"/);
    const history = await c.store.db
      .selectFrom('status_history')
      .select(['status', 'data'])
      .where('entity', '=', 'tsweb/1')
      .where('status', '=', 'error')
      .execute();
    const tail = JSON.stringify(history.map((h) => h.data));
    assert.match(tail, /ERROR config-changed hook: the server (exited with 1|did not listen)/);
    // nothing the failed hook wrote was committed: its ports and stored state are as before the hook
    const after = await c.store.db
      .selectFrom('units')
      .selectAll()
      .where('name', '=', 'tsweb/1')
      .executeTakeFirstOrThrow();
    assert.deepEqual(after.ports, ['8080/tcp']);
    assert.equal(JSON.parse((after.charm_state as Record<string, string>)['charmflow.stored.stored']).port, 8080);
    // tsweb/0 on its own host took the new port
    await ok('config', 'tsweb', 'port=8080', '-m', 'fleet');
    await waitFor('tsweb/1 active again', async () =>
      (await unitOf('tsweb/1'))['workload-status'].current === 'active' ? true : null,
    );
  });

  test('on a machine where nodejs cannot be installed, the unit is in error saying why', async () => {
    await ok('deploy', path.join(dir, 'ts-kv-web.charm'), 'tsbad', '--to', '3', '-m', 'fleet', '--no-wait');
    const failed = await waitFor(
      'tsbad/0 in error',
      async () => {
        const u = (await status()).applications.tsbad?.units['tsbad/0'];
        return u?.['workload-status'].current === 'error' ? u : null;
      },
      180_000,
    );
    // status says why: the workload is in error on install, the agent's message gives the reason
    assert.deepEqual(failed['workload-status'], { current: 'error', message: 'hook failed: "install"' });
    const why: string = failed['juju-status'].message;
    assert.match(why, /needs Node\.js, but node is not on the machine/);
    assert.match(why, /apt-get: .*Unable to connect/);
    console.log(`tsbad/0 on a host whose apt reaches no mirror: ${why}`);
    assert.notEqual(fleet.sh(3, 'command -v node').code, 0);
    await ok('remove-application', 'tsbad', '--force', '-m', 'fleet');
  });
});
