// Integrations over the network: the kv example pair (kv-store hands out
// credentials, kv-web reads them and counts its visits in kv-store) on real sshd
// hosts, the unmodified Python `ops` requirer beside the hooks one, scaling both
// sides, removing the integration, and an integration across two models on
// different clouds (local units using a kv-store on SSH hosts).
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildOpsCharm } from '../charm/build-ops-charm.ts';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { type CliResult, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import {
  fetchKvWebPage,
  KV_STORE_CHARM,
  KV_WEB_CHARM,
  kvStoreRequest,
  OPS_KV_WEB_CHARM,
  waitForKvWebConnected,
} from './helpers/kv-charms.ts';
import { settle } from './helpers/relations.ts';
import { waitFor } from './helpers/wait.ts';

const unsupported = fleetUnsupportedReason();

describe('integrations over SSH machines and across models', { skip: unsupported }, () => {
  let fleet: Fleet;
  let c: TestController;
  let opsCharm: string;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const status = async (model: string) => JSON.parse((await ok('status', '-m', model, '--format', 'json')).stdout);
  const address = async (model: string, unit: string): Promise<string> =>
    (await status(model)).applications[unit.split('/')[0]].units[unit]['public-address'];
  /** Hooks a unit ran, in order (its hook runs in the store). */
  const ran = async (unit: string, hook: string) =>
    (
      await c.store.db
        .selectFrom('hook_runs')
        .select(['hook', 'started_at'])
        .where('unit', '=', unit)
        .where('hook', '=', hook)
        .where('exit_code', '=', 0)
        .execute()
    ).length;

  before(async () => {
    [fleet, c] = await Promise.all([createFleet(4), startTestController()]);
    const out = join(mkdtempSync(join(tmpdir(), 'cf-ops-kv-')), 'ops-kv-web.charm');
    opsCharm = (await buildOpsCharm(OPS_KV_WEB_CHARM, out)).outFile;
    await ok('add-model', 'fleet', '--cloud', 'manual');
    for (const h of fleet.hosts) {
      await ok('add-machine', `ssh:root@${h.address}:${h.port}`, '--private-key', h.privateKeyPath, '-m', 'fleet');
    }
  });
  after(async () => {
    await c?.stop();
    await fleet?.destroy();
  });

  test('the pair across hosts: integrate, and the web page proves the path over the network', async () => {
    await ok('deploy', KV_STORE_CHARM, 'kv-store', '-n', '2', '--to', '0,1', '-m', 'fleet');
    await ok('deploy', KV_WEB_CHARM, 'kv-web', '--to', '2', '-m', 'fleet');
    await ok('deploy', opsCharm, 'opsweb', '--to', '3', '-m', 'fleet', '--config', 'database=ops');
    await settle(c, ['fleet']);
    const web = await address('fleet', 'kv-web/0');
    const before = await fetchKvWebPage(web, 8080);
    assert.equal(before.page.state, 'no-kv-store');
    assert.equal(
      (await status('fleet')).applications['kv-web'].units['kv-web/0']['workload-status'].current,
      'blocked',
    );

    await ok('integrate', 'kv-web', 'kv-store', '-m', 'fleet');
    await ok('integrate', 'opsweb:kv', 'kv-store:kv', '-m', 'fleet');
    await settle(c, ['fleet']);
    const store0 = await address('fleet', 'kv-store/0');
    assert.notEqual(store0, web, 'kv-web and kv-store are on different hosts');
    const first = await waitForKvWebConnected(web, 8080, { database: 'web' });
    assert.equal(first.host, store0);
    assert.equal(first.port, 7070);
    assert.match(first.user, /^kv-web-\d+$/);
    const second = await fetchKvWebPage(web, 8080);
    assert.equal(second.page.state === 'connected' && second.page.visits, first.visits + 1);
    // the ops charm (self.model.relations, app and unit bags) works with the hooks charm
    const ops = await waitForKvWebConnected(await address('fleet', 'opsweb/0'), 8080, { database: 'ops' });
    assert.equal(ops.host, store0);
    assert.match(ops.user, /^opsweb-\d+$/);
    const s = await status('fleet');
    for (const u of ['kv-web/0', 'opsweb/0']) {
      assert.equal(s.applications[u.split('/')[0]].units[u]['workload-status'].current, 'active', u);
    }
    assert.deepEqual(
      s.applications['kv-store'].relations.kv
        .map((r: { 'related-application': string }) => r['related-application'])
        .sort(),
      ['kv-web', 'opsweb'],
    );
    assert.deepEqual(s.applications['kv-store'].relations.cluster, [
      { 'related-application': 'kv-store', interface: 'kv-cluster', scope: 'global' },
    ]);
  });

  test('scale both sides: every join and depart, and the web side follows the store', async () => {
    await ok('add-unit', 'kv-web', '--to', '0', '-m', 'fleet');
    await ok('add-unit', 'kv-store', '--to', '2', '-m', 'fleet');
    await settle(c, ['fleet']);
    for (const w of ['kv-web/0', 'kv-web/1']) {
      assert.equal(await ran(w, 'kv-relation-joined'), 3, `${w} joined kv-store/0, /1 and /2`);
    }
    for (const k of ['kv-store/0', 'kv-store/1', 'kv-store/2']) {
      assert.equal(await ran(k, 'kv-relation-joined'), 3, `${k} joined kv-web/0, kv-web/1 and opsweb/0`);
      assert.equal(await ran(k, 'cluster-relation-joined'), 2, `${k} joined its two peers`);
    }
    const web1 = await address('fleet', 'kv-web/1');
    const p1 = await waitForKvWebConnected(web1, 8080, { database: 'web' });
    assert.equal(p1.unit, 'kv-web/1');

    // kv-store/0 goes: the web units depart from it and move to kv-store/1
    await ok('remove-unit', 'kv-store/0', '-m', 'fleet');
    await settle(c, ['fleet']);
    for (const w of ['kv-web/0', 'kv-web/1', 'opsweb/0']) {
      assert.equal(await ran(w, 'kv-relation-departed'), 1, w);
    }
    for (const k of ['kv-store/1', 'kv-store/2']) assert.equal(await ran(k, 'cluster-relation-departed'), 1, k);
    // the leader went: the lowest-numbered unit left is elected, the other is told
    assert.equal(await ran('kv-store/1', 'leader-elected'), 1);
    assert.equal((await status('fleet')).applications['kv-store'].units['kv-store/1'].leader, true);
    const store1 = await address('fleet', 'kv-store/1');
    const moved = await waitForKvWebConnected(await address('fleet', 'kv-web/0'), 8080, { host: store1 });
    assert.equal(moved.database, 'web');

    // a web unit goes: the store units run relation-departed for it
    await ok('remove-unit', 'kv-web/1', '-m', 'fleet');
    await settle(c, ['fleet']);
    for (const k of ['kv-store/1', 'kv-store/2']) assert.equal(await ran(k, 'kv-relation-departed'), 1, k);
  });

  test('remove-integration: broken on both sides, credentials revoked, data gone', async () => {
    const web = await address('fleet', 'kv-web/0');
    const page = await waitForKvWebConnected(web, 8080, { database: 'web' });
    const id = JSON.parse((await ok('integrations', '-m', 'fleet', '--format', 'json')).stdout).find(
      (i: { requirer: { application: string } }) => i.requirer.application === 'kv-web',
    ).id;
    const creds = await c.store.db
      .selectFrom('relation_data')
      .select('settings')
      .where('integration_id', '=', id)
      .where('owner', '=', 'kv-store')
      .executeTakeFirstOrThrow();
    const login = { username: creds.settings.username, password: creds.settings.password };
    assert.equal((await kvStoreRequest(page.host, 7070, login, 'web', 'visits')).status, 200);

    await ok('remove-integration', 'kv-web', 'kv-store', '-m', 'fleet');
    await settle(c, ['fleet']);
    assert.equal(await ran('kv-web/0', 'kv-relation-broken'), 1);
    for (const k of ['kv-store/1', 'kv-store/2']) assert.equal(await ran(k, 'kv-relation-broken'), 1, k);
    const after = await fetchKvWebPage(web, 8080);
    assert.equal(after.status, 503);
    assert.equal(after.page.state, 'no-kv-store');
    assert.equal(
      (await status('fleet')).applications['kv-web'].units['kv-web/0']['workload-status'].current,
      'blocked',
    );
    // the store's leader dropped the user: the old credentials no longer work
    await waitFor('the old credentials refused', async () =>
      (await kvStoreRequest(page.host, 7070, login, 'web', 'visits')).status === 401 ? true : null,
    );
    const bags = await c.store.db.selectFrom('relation_data').selectAll().where('integration_id', '=', id).execute();
    assert.deepEqual(bags, []);
    // opsweb's integration is untouched
    await waitForKvWebConnected(await address('fleet', 'opsweb/0'), 8080, { database: 'ops' });
  });

  test('across two models on different clouds: local units use the kv-store on SSH hosts', async () => {
    await ok('deploy', KV_WEB_CHARM, 'lweb', '-m', 'default', '--config', 'database=local');
    await settle(c, ['default']);
    const r = await ok('integrate', 'lweb', 'fleet.kv-store', '-m', 'default');
    assert.match(r.stdout, /Integrated fleet\.kv-store:kv with lweb:kv/);
    await settle(c, ['default', 'fleet']);
    const local = await address('default', 'lweb/0');
    assert.match(local, /^127\./, 'lweb runs on the local cloud');
    const page = await waitForKvWebConnected(local, 8080, { database: 'local' });
    assert.ok(
      [await address('fleet', 'kv-store/1'), await address('fleet', 'kv-store/2')].includes(page.host),
      `served by a kv-store on an SSH host: ${page.host}`,
    );
    // both models show it, each naming the other side with its model
    const here = JSON.parse((await ok('integrations', '-m', 'default', '--format', 'json')).stdout);
    const x = here.find((i: { type: string }) => i.type === 'cross-model');
    assert.deepEqual(
      [x.provider.model, x.provider.application, x.requirer.model, x.requirer.application],
      ['fleet', 'kv-store', 'default', 'lweb'],
    );
    const there = await status('fleet');
    assert.ok(
      there.applications['kv-store'].relations.kv.some(
        (rel: { 'related-application': string }) => rel['related-application'] === 'default.lweb',
      ),
    );
    // a scale on the far side reaches this model's unit
    await ok('add-unit', 'kv-store', '--to', '3', '-m', 'fleet');
    await settle(c, ['default', 'fleet']);
    assert.equal(await ran('lweb/0', 'kv-relation-joined'), 3);

    await ok('remove-integration', 'lweb', 'fleet.kv-store', '-m', 'default');
    await settle(c, ['default', 'fleet']);
    assert.equal(await ran('lweb/0', 'kv-relation-broken'), 1);
    assert.equal((await fetchKvWebPage(local, 8080)).page.state, 'no-kv-store');
  });

  test('destroying a model breaks its integrations with another model', async () => {
    await ok('add-model', 'edge');
    await ok('deploy', KV_WEB_CHARM, 'eweb', '-m', 'edge', '--config', 'database=edge');
    await ok('integrate', 'eweb', 'fleet.kv-store', '-m', 'edge');
    await settle(c, ['edge', 'fleet']);
    await waitForKvWebConnected(await address('edge', 'eweb/0'), 8080, { database: 'edge' });
    const stores = ['kv-store/1', 'kv-store/2', 'kv-store/3'];
    const before = await Promise.all(stores.map((k) => ran(k, 'kv-relation-broken')));
    await ok('destroy-model', 'edge');
    await settle(c, ['fleet']);
    const after = await Promise.all(stores.map((k) => ran(k, 'kv-relation-broken')));
    assert.deepEqual(
      after,
      before.map((n) => n + 1),
      'each kv-store unit ran relation-broken for the destroyed model’s integration',
    );
    const left = JSON.parse((await ok('integrations', '-m', 'fleet', '--format', 'json')).stdout);
    assert.ok(!left.some((i: { requirer: { model: string } }) => i.requirer.model === 'edge'));
  });
});
