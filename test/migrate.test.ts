// migrate and evacuate-machine over real sshd hosts: kv-store moves to another
// host while a client polls kv-web (which reads from it) the whole time; a
// migration that cannot settle rolls back; a machine is evacuated.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { type CliResult, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { KV_STORE_CHARM, KV_WEB_CHARM, pollKvWeb, waitForKvWebConnected } from './helpers/kv-charms.ts';
import { settle } from './helpers/relations.ts';

const unsupported = fleetUnsupportedReason();

describe('migrate and evacuate-machine over SSH hosts', { skip: unsupported }, () => {
  let fleet: Fleet;
  let c: TestController;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const status = async () => JSON.parse((await ok('status', '-m', 'fleet', '--format', 'json')).stdout);
  const unitsOf = async (app: string) => {
    const s = await status();
    return Object.fromEntries(
      Object.entries(s.applications[app]?.units ?? {}).map(([u, v]) => [
        u,
        { machine: (v as { machine: string }).machine, address: (v as { 'public-address': string })['public-address'] },
      ]),
    ) as Record<string, { machine: string; address: string }>;
  };

  const poller = (address: string) => pollKvWeb(address);

  before(async () => {
    [fleet, c] = await Promise.all([createFleet(4), startTestController()]);
    await ok('add-model', 'fleet', '--cloud', 'manual');
    for (const h of fleet.hosts) {
      await ok('add-machine', `ssh:root@${h.address}:${h.port}`, '--private-key', h.privateKeyPath, '-m', 'fleet');
    }
    await ok('deploy', KV_STORE_CHARM, 'kv-store', '--to', '0', '-m', 'fleet');
    await ok('deploy', KV_WEB_CHARM, 'kv-web', '--to', '1', '-m', 'fleet');
    await ok('integrate', 'kv-web', 'kv-store', '-m', 'fleet');
    await settle(c, ['fleet']);
  });
  after(async () => {
    await c?.stop();
    await fleet?.destroy();
  });

  test('kv-store moves to another host while kv-web is polled: no request fails', async () => {
    const web = (await unitsOf('kv-web'))['kv-web/0'].address;
    const before = await waitForKvWebConnected(web, 8080, { database: 'web' });
    assert.equal(before.host, fleet.hosts[0].address);
    const poll = poller(web);
    const r = await ok('migrate', 'kv-store', '--to', '2', '-m', 'fleet');
    assert.match(r.stdout, /Migrated "kv-store"/);
    assert.match(r.stderr, /draining kv-store\/0: the related units depart from them/);
    await settle(c, ['fleet']);
    const { requests, failures } = await poll.end();
    assert.ok(requests > 20, `the client polled the whole time (${requests} requests)`);
    assert.deepEqual(failures, [], `${failures.length} of ${requests} requests failed`);
    const now = await unitsOf('kv-store');
    assert.deepEqual(Object.keys(now), ['kv-store/1']);
    assert.equal(now['kv-store/1'].machine, '2');
    const after = await waitForKvWebConnected(web, 8080, { database: 'web' });
    assert.equal(after.host, fleet.hosts[2].address, 'kv-web now reads from the new host');
    assert.equal((await status()).applications['kv-store'].units['kv-store/1'].leader, true, 'leadership moved too');
    console.log(`migrate: ${requests} requests while migrating, ${failures.length} failed`);
  });

  test('a migration that cannot settle rolls back: the new units go, the old stay untouched', async () => {
    const r = await cli('migrate', 'kv-store', '--to', '3', '--settle-timeout', '1', '-m', 'fleet');
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /migration of kv-store failed: the new units did not settle within 1s; rolled back: kv-store\/2 removed, kv-store\/1 untouched/,
    );
    await settle(c, ['fleet']);
    assert.deepEqual(Object.keys(await unitsOf('kv-store')), ['kv-store/1']);
    const web = (await unitsOf('kv-web'))['kv-web/0'].address;
    const page = await waitForKvWebConnected(web, 8080, { database: 'web' });
    assert.equal(page.host, fleet.hosts[2].address);
  });

  test('bad input: an unknown machine 404, a machine in error 409, nothing changes', async () => {
    const unknown = await c.api('POST', '/v1/models/fleet/applications/kv-store/migrate', { to: ['9'] });
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.message, /machine "?9"?/);
    const both = await c.api('POST', '/v1/models/fleet/applications/kv-store/migrate', { to: ['3'], toCloud: 'local' });
    assert.equal(both.status, 400);
    const same = await c.api('POST', '/v1/models/fleet/applications/kv-store/migrate', { to: ['2'] });
    assert.equal(same.status, 400);
    assert.match(same.body.message, /machine 2 holds a unit that is moving off it/);
    await c.store.db
      .updateTable('machines')
      .set({ state: 'error', message: 'broken for the test' })
      .where('id', '=', '3')
      .execute();
    const broken = await c.api('POST', '/v1/models/fleet/applications/kv-store/migrate', { to: ['3'] });
    assert.equal(broken.status, 409);
    assert.match(broken.body.message, /machine 3 is in error: broken for the test/);
    await c.store.db.updateTable('machines').set({ state: 'started', message: '' }).where('id', '=', '3').execute();
    assert.deepEqual(Object.keys(await unitsOf('kv-store')), ['kv-store/1']);
  });

  test('evacuate-machine moves everything off a machine', async () => {
    const r = await ok('evacuate-machine', '2', '--to', '0', '-m', 'fleet');
    assert.match(r.stdout, /Evacuated machine 2/);
    await settle(c, ['fleet']);
    const store = await unitsOf('kv-store');
    assert.deepEqual(
      Object.values(store).map((u) => u.machine),
      ['0'],
    );
    const web = (await unitsOf('kv-web'))['kv-web/0'].address;
    const page = await waitForKvWebConnected(web, 8080, { database: 'web' });
    assert.equal(page.host, fleet.hosts[0].address);
  });
});
