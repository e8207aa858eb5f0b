// migrate-model between two real controllers (each with its own Temporal dev server
// and store) over real sshd hosts: kv-store and kv-web, integrated, move from the
// source to the target while a client polls kv-web the whole time. A first attempt
// that the target refuses part way leaves the source working; the retry moves it:
// same status, relation and leader data, secrets and credentials carried, the target's
// key on the hosts, and the target runs the units' hooks from then on.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { type CliResult, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { KV_STORE_CHARM, KV_WEB_CHARM, pollKvWeb, waitForKvWebConnected } from './helpers/kv-charms.ts';
import { settle } from './helpers/relations.ts';

const unsupported = fleetUnsupportedReason();

describe('migrate-model between two controllers over SSH hosts', { skip: unsupported }, () => {
  let fleet: Fleet;
  let src: TestController;
  let dst: TestController;
  const cli = (c: TestController, ...args: string[]): Promise<CliResult> =>
    runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const ok = async (c: TestController, ...args: string[]) => {
    const r = await cli(c, ...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const status = async (c: TestController) =>
    JSON.parse((await ok(c, 'status', '-m', 'fleet', '--format', 'json')).stdout);
  /** What must be the same on both sides: units, their machines, addresses, status and leadership; relations. */
  const essence = (s: any) => ({
    applications: Object.fromEntries(
      Object.entries(s.applications as Record<string, any>).map(([name, a]) => [
        name,
        {
          charm: a.charm,
          relations: a.relations,
          units: Object.fromEntries(
            Object.entries(a.units as Record<string, any>).map(([u, v]) => [
              u,
              {
                machine: v.machine,
                address: v['public-address'],
                leader: v.leader ?? false,
                workload: v['workload-status'],
              },
            ]),
          ),
        },
      ]),
    ),
    machines: Object.fromEntries(
      Object.entries(s.machines as Record<string, any>).map(([id, m]) => [id, { address: m['dns-name'] ?? m.address }]),
    ),
  });
  const relationData = async (c: TestController) =>
    (
      await c.store.db
        .selectFrom('relation_data')
        .select(['integration_id', 'owner', 'settings', 'version'])
        .orderBy('integration_id')
        .orderBy('owner')
        .execute()
    ).map((r) => ({
      ...r,
      // values may be sealed: each controller seals with its own key
      settings: Object.fromEntries(Object.entries(r.settings).map(([k, v]) => [k, c.store.secrets.open(v)])),
    }));

  const poller = (address: string) => pollKvWeb(address);

  let web = '';

  before(async () => {
    [fleet, src, dst] = await Promise.all([createFleet(2), startTestController(), startTestController()]);
    await ok(src, 'add-model', 'fleet', '--cloud', 'manual');
    for (const h of fleet.hosts) {
      await ok(src, 'add-machine', `ssh:root@${h.address}:${h.port}`, '--private-key', h.privateKeyPath, '-m', 'fleet');
    }
    await ok(src, 'deploy', KV_STORE_CHARM, 'kv-store', '--to', '0', '-m', 'fleet');
    await ok(src, 'deploy', KV_WEB_CHARM, 'kv-web', '--to', '1', '-m', 'fleet');
    await ok(src, 'integrate', 'kv-web', 'kv-store', '-m', 'fleet');
    await settle(src, ['fleet']);
    web = fleet.hosts[1].address;
    await waitForKvWebConnected(web, 8080, { database: 'web' });
  });
  after(async () => {
    await Promise.all([src?.stop(), dst?.stop()]);
    await fleet?.destroy();
  });

  test('a wrong token: refused before anything moves; the model is untouched', async () => {
    const r = await cli(src, 'migrate-model', 'fleet', '--to', dst.apiUrl, '--token', 'cf_not-a-token');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /refused the token \(401\)/);
    assert.match(r.stderr, /model fleet stays on this controller, working as before/);
    assert.ok(!(r.stdout + r.stderr).includes('cf_not-a-token'));
    const model = await src.store.db
      .selectFrom('models')
      .selectAll()
      .where('name', '=', 'fleet')
      .executeTakeFirstOrThrow();
    assert.equal(model.status, 'available');
    const row = await src.store.db.selectFrom('model_migrations').selectAll().executeTakeFirstOrThrow();
    assert.equal(row.state, 'failed');
    assert.equal(row.token, '', 'the token is wiped when the migration ends');
  });

  test('the target refuses the import part way: the agents go on here, the target keeps nothing', async () => {
    // the target holds other content under the revision of kv-web the model uses
    const rev = await src.store.db
      .selectFrom('applications')
      .select('charm_revision')
      .where('name', '=', 'kv-web')
      .executeTakeFirstOrThrow();
    await dst.store.db
      .insertInto('charms')
      .values({
        name: 'kv-web',
        revision: rev.charm_revision,
        sha256: 'f'.repeat(64),
        metadata: JSON.stringify({ name: 'kv-web' }),
        archive: Buffer.from('other'),
        size: 5,
      })
      .execute();
    try {
      const r = await cli(src, 'migrate-model', 'fleet', '--to', dst.apiUrl, '--token', dst.adminToken);
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /charm kv-web revision \d+ is other content here, and restored applications need it/);
      assert.match(r.stderr, /stays on this controller/);
    } finally {
      await dst.store.db.deleteFrom('charms').where('name', '=', 'kv-web').execute();
    }
    assert.equal(
      (await dst.store.db.selectFrom('models').select('name').where('name', '=', 'fleet').execute()).length,
      0,
    );
    // the agents were held and are let go: a change runs its hooks here
    await ok(src, 'config', 'kv-web', 'database=web1', '-m', 'fleet');
    await settle(src, ['fleet']);
    const page = await waitForKvWebConnected(web, 8080, { database: 'web1' });
    assert.equal(page.host, fleet.hosts[0].address);
  });

  test('a migration cancelled (from the Temporal UI) rolls back: the model stays here and works', async () => {
    const r = await ok(src, 'migrate-model', 'fleet', '--to', dst.apiUrl, '--token', dst.adminToken, '--no-wait');
    const opId = Number(/operation (\d+)/.exec(r.stdout)?.[1]);
    const started = await src.api('GET', `/v1/operations/${opId}`);
    await src.client.workflow.getHandle(started.body.workflowId).cancel();
    const op = await src.waitOperation(opId, 120_000);
    assert.equal(op.state, 'cancelled', JSON.stringify(op));
    const model = await src.store.db
      .selectFrom('models')
      .selectAll()
      .where('name', '=', 'fleet')
      .executeTakeFirstOrThrow();
    assert.equal(model.status, 'available');
    const row = await src.store.db
      .selectFrom('model_migrations')
      .selectAll()
      .where('operation_id', '=', opId)
      .executeTakeFirstOrThrow();
    assert.deepEqual([row.state, row.token], ['failed', '']);
    assert.equal(
      (await dst.store.db.selectFrom('models').select('name').where('name', '=', 'fleet').execute()).length,
      0,
    );
    // whatever the cancel cut short, the agents here run hooks again
    await ok(src, 'config', 'kv-web', 'database=web3', '-m', 'fleet');
    await settle(src, ['fleet']);
    await waitForKvWebConnected(web, 8080, { database: 'web3' });
  });

  test('the model moves while kv-web is polled: no request fails, the same model runs on the target', async () => {
    const before = essence(await status(src));
    const bags = await relationData(src);
    const hookRuns = (await src.store.db.selectFrom('hook_runs').select('context_id').execute()).length;
    const poll = poller(web);
    const started = Date.now();
    const r = await ok(src, 'migrate-model', 'fleet', '--to', dst.apiUrl, '--token', dst.adminToken);
    const took = Date.now() - started;
    assert.match(r.stdout, /Model "fleet" moved to http:\/\/127\.0\.0\.1:\d+; it is no longer on this controller/);
    const opId = Number(/operation (\d+) \(migrate-model\)/.exec(r.stderr)?.[1]);
    const op = await src.api('GET', `/v1/operations/${opId}`);
    assert.equal(op.body.state, 'succeeded');
    assert.match(
      op.body.progress.step,
      /model fleet moved to http:\/\/127\.0\.0\.1:\d+: 2 unit agent\(s\) handed over/,
    );
    assert.ok(!(r.stdout + r.stderr).includes(dst.adminToken));

    // the source has let go of it
    assert.equal(
      (await src.store.db.selectFrom('models').select('name').where('name', '=', 'fleet').execute()).length,
      0,
    );
    const outgoing = await src.api('GET', '/v1/migrations');
    assert.equal(outgoing.status, 200);
    assert.equal(outgoing.body.migrations.outgoing[0].state, 'done');
    assert.ok(!JSON.stringify(outgoing.body).includes(dst.adminToken));

    // the target has it whole
    await settle(dst, ['fleet']);
    assert.deepEqual(essence(await status(dst)), before);
    assert.deepEqual(await relationData(dst), bags, 'relation and leader data came with their versions');
    const moved = await dst.store.db.selectFrom('hook_runs').select('context_id').execute();
    assert.equal(moved.length, hookRuns, 'the hook history came along');
    const model = await dst.store.db
      .selectFrom('models')
      .selectAll()
      .where('name', '=', 'fleet')
      .executeTakeFirstOrThrow();
    assert.equal(model.status, 'available');

    // the target's key opens every host; the user's key was never needed again
    const dstKey = readFileSync(join(dst.dataDir, 'controller-ssh-key.pub'), 'utf8')
      .trim()
      .split(/\s+/)
      .slice(0, 2)
      .join(' ');
    for (const h of fleet.hosts) {
      const keys = readFileSync(join(h.homeDir, '.ssh', 'authorized_keys'), 'utf8');
      assert.ok(keys.includes(dstKey), `${h.name} lets the target in`);
    }

    // the workload kept serving throughout
    const { requests, failures } = await poll.end();
    assert.ok(requests > 20, `the client polled the whole time (${requests} requests)`);
    assert.deepEqual(failures, [], `${failures.length} of ${requests} requests failed`);
    console.log(`migrate-model: ${took} ms, ${requests} requests while moving, ${failures.length} failed`);

    // and the target runs the units now: a change runs hooks there, data flows between the units
    await ok(dst, 'config', 'kv-web', 'database=web2', '-m', 'fleet');
    await settle(dst, ['fleet']);
    const page = await waitForKvWebConnected(web, 8080, { database: 'web2' });
    assert.equal(page.host, fleet.hosts[0].address);
    const ran = await dst.store.db
      .selectFrom('hook_runs')
      .select(['unit', 'hook'])
      .where('hook', '=', 'config-changed')
      .where('unit', '=', 'kv-web/0')
      .execute();
    assert.ok(ran.length > 0);
  });
});
