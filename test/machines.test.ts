// Machines on a fleet of real sshd hosts, through a real controller: add-machine pins
// the host key, installs the controller's key and the hook runtime; a changed host
// key or an unreachable host puts only that machine in error; removal cleans up.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { existsSync, lstatSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { type AddressInfo, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sql } from 'kysely';
import type { ActivityDeps } from '../activities/deps.ts';
import {
  createMachineActivities,
  hookRuntime,
  loadMachineTarget,
  type MachineActivities,
} from '../activities/machine-activities.ts';
import { createSubstrates, HostKeyMismatchError, type Substrates } from '../activities/substrates/index.ts';
import { startOperation } from '../api/operation-starter.ts';
import { loadCharm, packCharm } from '../charm/charm-archive.ts';
import { addCharm } from '../charm/charm-store.ts';
import { paths } from '../controller/config.ts';
import { loadOrCreateControllerKey } from '../controller/ssh-identity.ts';
import { openStore, type Store } from '../store/store.ts';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { waitFor } from './helpers/wait.ts';

const MODEL = 'hosts';
const HTTP_HOOKS = join(projectRoot, 'examples/charms/http-hooks');

describe('machines on a test fleet', { skip: fleetUnsupportedReason() }, () => {
  let fleet: Fleet;
  let c: TestController;
  let env: Record<string, string>;
  let deps: ActivityDeps;
  let substrates: Substrates;
  let modelUuid: string;
  /** machine id of fleet host i */
  const ids: string[] = [];
  let closedPortId: string;
  const cli = (...args: string[]): Promise<CliResult> => runCli([...args], env);

  async function machines(): Promise<any[]> {
    const res = await c.api('GET', `/v1/models/${MODEL}/machines`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body.machines;
  }

  async function machine(id: string): Promise<any> {
    return (await machines()).find((m) => m.id === id);
  }

  /** Runs a command on a machine the way hook execution does: from its row, with the controller's key. */
  async function execOn(id: string, command: string) {
    const target = await loadMachineTarget(deps, modelUuid, id);
    return substrates[target.kind].exec(target, { command, timeoutMs: 10_000 });
  }

  before(async () => {
    [fleet, c] = await Promise.all([createFleet(3), startTestController()]);
    env = { CHARMFLOW_DATA_DIR: c.dataDir };
    const add = await c.api('POST', '/v1/models', { name: MODEL, cloud: 'manual' });
    assert.equal(add.status, 202, JSON.stringify(add.body));
    assert.equal((await c.waitOperation(add.body.operation.id)).state, 'succeeded');
    modelUuid = (await c.api('GET', `/v1/models/${MODEL}`)).body.uuid;
    substrates = createSubstrates({ ssh: { readyTimeoutMs: 3_000 } });
    deps = {
      store: c.store,
      dataDir: c.dataDir,
      substrates,
      controllerKey: loadOrCreateControllerKey(paths(c.dataDir).controllerKey),
      localNet: 0,
    };
  });

  after(async () => {
    await substrates?.ssh.close();
    await c?.stop();
    await fleet?.destroy();
  });

  test('add-machine provisions every host: pinned key, controller key, hook runtime', async () => {
    const results = await Promise.all(
      fleet.hosts.map((h) =>
        cli('add-machine', `ssh:root@${h.address}`, '--private-key', h.privateKeyPath, '-m', MODEL),
      ),
    );
    for (const r of results) {
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /^created machine \d+$/m);
      assert.match(r.stderr, /operation \d+ \(add-machine\) started/);
    }
    const listed = await machines();
    assert.equal(listed.length, 3);
    const controllerKey = readFileSync(`${paths(c.dataDir).controllerKey}.pub`, 'utf8').trim();
    for (const [i, h] of fleet.hosts.entries()) {
      const m = listed.find((x) => x.address === h.address);
      assert.ok(m, `machine for ${h.address}`);
      ids[i] = m.id;
      assert.equal(m.kind, 'ssh');
      assert.equal(m.state, 'started', m.message);
      assert.equal(m.hostKeyFingerprint, h.hostKeyFingerprint);
      assert.equal(m.hostname, h.hostname);
      assert.equal(m.rootDir, '/var/lib/charmflow');
      assert.deepEqual(m.units, []);
      assert.deepEqual(m.ssh, { host: h.address, port: 22, user: 'root' });

      // the controller's key, once, in the login user's authorized_keys
      const authorized = readFileSync(join(h.homeDir, '.ssh', 'authorized_keys'), 'utf8');
      assert.equal(authorized.split('\n').filter((l) => l.trim() === controllerKey).length, 1, authorized);

      // the hook runtime and its tools on the host
      const runtime = join(h.rootFs, 'runtime');
      for (const f of hookRuntime().files)
        assert.deepEqual(readFileSync(join(runtime, f.name)), f.data, `${h.name} ${f.name}`);
      assert.ok(lstatSync(join(runtime, 'bin', 'juju-log')).isSymbolicLink());
      assert.ok(existsSync(join(h.rootFs, 'units')));

      const row = await c.store.db
        .selectFrom('machines')
        .selectAll()
        .where('model_uuid', '=', modelUuid)
        .where('id', '=', m.id)
        .executeTakeFirstOrThrow();
      assert.equal(row.bootstrap_key, null, 'the user key is gone once the controller key works');
      assert.equal(row.runtime_hash, hookRuntime().hash);

      // reachable with the controller's own key
      const res = await execOn(m.id, 'uname -n');
      assert.equal(res.code, 0, res.stderr);
      assert.equal(res.stdout.trim(), h.hostname);
    }
    assert.deepEqual([...ids].sort(), ['0', '1', '2']);

    const history = await c.store.db
      .selectFrom('status_history')
      .select(['entity', 'status'])
      .where('model_uuid', '=', modelUuid)
      .where('kind', '=', 'machine')
      .execute();
    for (const id of ids) assert.ok(history.some((e) => e.entity === `machine/${id}` && e.status === 'started'));

    const json = await cli('machines', '-m', MODEL, '--format', 'json');
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), { machines: listed });
    const table = await cli('machines', '-m', MODEL);
    assert.match(table.stdout, /^Machine\s+State\s+Address\s+Hostname\s+Units\s+Message$/m);
    assert.match(
      table.stdout,
      new RegExp(
        `^${ids[0]}\\s+started\\s+${fleet.hosts[0].address.replace(/\./g, '\\.')}\\s+${fleet.hosts[0].hostname}`,
        'm',
      ),
    );
  });

  test('provisioning twice changes nothing; the same host twice is a conflict', async () => {
    const h = fleet.hosts[0];
    const op = await startOperation(
      c.store.db,
      { client: c.client, taskQueue: c.config.taskQueue },
      {
        kind: 'add-machine',
        model: MODEL,
        target: `machine/${ids[0]}`,
        createdBy: 'test',
        workflow: 'addMachineWorkflow',
        summary: `provision machine ${ids[0]} again`,
        args: (operationId) => [{ operationId, model: MODEL, kind: 'add-machine', machineId: ids[0] }],
      },
    );
    const done = await c.waitOperation(op.id);
    assert.equal(done.state, 'succeeded', done.error);
    const authorized = readFileSync(join(h.homeDir, '.ssh', 'authorized_keys'), 'utf8');
    assert.equal(authorized.trim().split('\n').length, 1, 'no duplicate key');

    const dup = await cli('add-machine', `ssh:${h.address}:22`, '--private-key', h.privateKeyPath, '-m', MODEL);
    assert.equal(dup.code, 1);
    assert.match(
      dup.stderr,
      new RegExp(`${h.address.replace(/\./g, '\\.')}:22 is already a machine of model "${MODEL}"`),
    );
  });

  test('bad machine specs and requests are refused, naming what is wrong', async () => {
    for (const [spec, why] of [
      ['ssh:', /missing host/],
      ['ssh:root@', /missing host/],
      ['ssh:host:99999', /bad port "99999"/],
      ['ssh:host:abc', /bad port "abc"/],
      ['host', /only ssh: machines/],
    ] as const) {
      const r = await cli('add-machine', spec, '--private-key', fleet.hosts[0].privateKeyPath, '-m', MODEL);
      assert.equal(r.code, 2, `${spec}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(`invalid machine "${spec}"`));
      assert.match(r.stderr, why);
    }
    const home = mkdtempSync(join(tmpdir(), 'charmflow-nokey-'));
    try {
      const r = await runCli(['add-machine', 'ssh:10.0.0.1', '-m', MODEL], { ...env, HOME: home });
      assert.equal(r.code, 1);
      assert.match(r.stderr, /no private key found \(tried .*\.ssh\/id_ed25519, .*\.ssh\/id_ecdsa, .*\.ssh\/id_rsa\)/);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }

    const badHost = await c.api('POST', `/v1/models/${MODEL}/machines`, { ssh: { host: 'bad host!' } });
    assert.equal(badHost.status, 400);
    assert.ok(
      badHost.body.details.some((d: any) => d.field === 'body.ssh.host'),
      JSON.stringify(badHost.body),
    );
    const extra = await c.api('POST', `/v1/models/${MODEL}/machines`, { ssh: { host: 'a.b' }, pasword: 'x' });
    assert.equal(extra.status, 400);
    assert.match(extra.body.message, /pasword/);
    const secret = 'not-a-key-but-a-secret-value';
    const badKey = await c.api('POST', `/v1/models/${MODEL}/machines`, { ssh: { host: 'a.b' }, privateKey: secret });
    assert.equal(badKey.status, 400);
    assert.ok(badKey.body.details.some((d: any) => d.field === 'body.privateKey'));
    assert.ok(!JSON.stringify(badKey.body).includes(secret));
    const noModel = await c.api('POST', '/v1/models/nope/machines', { ssh: { host: 'a.b' } });
    assert.equal(noModel.status, 404);
    assert.equal(noModel.body.message, 'model "nope" not found');
    const noMachine = await c.api('DELETE', `/v1/models/${MODEL}/machines/42`);
    assert.equal(noMachine.status, 404);
    assert.equal(noMachine.body.message, 'machine "42" not found');
    assert.equal((await machines()).length, 3, 'nothing was added');
  });

  test('a changed host key puts that machine in error; the others still work', async () => {
    const pinned = fleet.hosts[1].hostKeyFingerprint;
    const newFingerprint = await fleet.rotateHostKey(1);
    const op = await startOperation(
      c.store.db,
      { client: c.client, taskQueue: c.config.taskQueue },
      {
        kind: 'add-machine',
        model: MODEL,
        target: `machine/${ids[1]}`,
        createdBy: 'test',
        workflow: 'addMachineWorkflow',
        summary: `provision machine ${ids[1]} again`,
        args: (operationId) => [{ operationId, model: MODEL, kind: 'add-machine', machineId: ids[1] }],
      },
    );
    const done = await c.waitOperation(op.id);
    assert.equal(done.state, 'failed');
    assert.match(done.error, /host key of .* changed/);
    assert.ok(done.error.includes(newFingerprint));
    const m = await machine(ids[1]);
    assert.equal(m.state, 'error');
    assert.match(m.message, /host key of .* changed/);
    assert.equal(m.hostKeyFingerprint, pinned, 'the pin is kept');
    await assert.rejects(execOn(ids[1], 'true'), HostKeyMismatchError);
    for (const i of [0, 2]) {
      assert.equal((await machine(ids[i])).state, 'started');
      const res = await execOn(ids[i], 'uname -n');
      assert.equal(res.stdout.trim(), fleet.hosts[i].hostname);
    }
  });

  test('an unreachable host fails add-machine with the reason; the others are unaffected', async () => {
    const h = fleet.hosts[0];
    const r = await cli('add-machine', `ssh:root@${h.address}:2222`, '--private-key', h.privateKeyPath, '-m', MODEL);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /operation \d+ \(add-machine\) failed: cannot reach root@.*:2222: connection refused/);
    const failed = (await machines()).find((x) => x.ssh?.port === 2222);
    assert.equal(failed.state, 'error');
    // the failed machine does not block a retry of the same host: it is replaced
    const retry = await cli(
      'add-machine',
      `ssh:root@${h.address}:2222`,
      '--private-key',
      h.privateKeyPath,
      '-m',
      MODEL,
    );
    assert.equal(retry.code, 1);
    assert.doesNotMatch(retry.stderr, /already a machine/);
    assert.match(retry.stderr, /operation \d+ \(add-machine\) failed: cannot reach root@.*:2222: connection refused/);
    const closed = (await machines()).filter((x) => x.ssh?.port === 2222);
    assert.equal(closed.length, 1, 'the retry replaced the failed record');
    const m = closed[0];
    assert.notEqual(m.id, failed.id);
    closedPortId = m.id;
    assert.equal(m.state, 'error');
    assert.match(m.message, /connection refused/);
    const row = await c.store.db
      .selectFrom('machines')
      .select('bootstrap_key')
      .where('model_uuid', '=', modelUuid)
      .where('id', '=', m.id)
      .executeTakeFirstOrThrow();
    assert.equal(row.bootstrap_key, null, 'a failed machine does not keep the user key');
    for (const i of [0, 2]) {
      assert.equal((await machine(ids[i])).state, 'started');
      assert.equal((await execOn(ids[i], 'true')).code, 0);
    }
  });

  test('the private key never shows in operations, listings or workflow histories', async () => {
    const key = fleet.hosts[0].privateKey;
    // a line from the middle of the key: JSON escaping cannot hide it
    const keyLine = key.split('\n')[2]!;
    assert.ok(keyLine.length > 40);
    const ops = (await c.api('GET', '/v1/operations?limit=1000')).body;
    const opsText = JSON.stringify(ops);
    assert.ok(!opsText.includes(keyLine));
    assert.ok(!JSON.stringify(await machines()).includes(keyLine));
    const adds = ops.operations.filter((o: any) => o.kind === 'add-machine');
    assert.ok(adds.length >= 4);
    for (const op of adds) {
      const history = await c.client.workflow.getHandle(op.workflowId).fetchHistory();
      const text = JSON.stringify(history, (_k, v) => (v instanceof Uint8Array ? Buffer.from(v).toString('utf8') : v));
      assert.ok(text.includes(MODEL), 'payloads are decoded');
      assert.ok(!text.includes(keyLine), `workflow ${op.workflowId} history holds the key`);
    }
    const params = await c.store.db
      .selectFrom('operations')
      .select('params')
      .where('kind', '=', 'add-machine')
      .execute();
    for (const p of params) assert.ok(!JSON.stringify(p.params).includes(keyLine));
    assert.ok(!readFileSync(join(c.dataDir, 'logs', 'temporal.log'), 'utf8').includes(keyLine));
  });

  test('provisioning heartbeats: a worker lost mid-way is noticed in seconds, not at the timeout', async () => {
    // a host that accepts the connection and never speaks SSH: the login waits
    const silent = createServer(() => {});
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const port = (silent.address() as AddressInfo).port;
    try {
      const res = await c.api('POST', `/v1/models/${MODEL}/machines`, {
        ssh: { host: '127.0.0.1', port },
        privateKey: readFileSync(fleet.hosts[0].privateKeyPath, 'utf8'),
      });
      assert.equal(res.status, 202, JSON.stringify(res.body));
      const handle = c.client.workflow.getHandle(res.body.operation.workflowId);
      const pending = await waitFor(
        'provisionMachine heartbeating',
        async () => {
          const d = await handle.describe();
          const a = d.raw.pendingActivities?.find((p) => p.activityType?.name === 'provisionMachine');
          return a?.lastHeartbeatTime ? a : null;
        },
        9_000,
      );
      assert.ok(pending.heartbeatDetails, 'the heartbeat names the machine');
      const done = await c.waitOperation(res.body.operation.id, 120_000);
      assert.equal(done.state, 'failed');
      const r = await cli('remove-machine', res.body.machineId, '--force', '-m', MODEL);
      assert.equal(r.code, 0, r.stderr);
    } finally {
      silent.close();
    }
  });

  test('remove-machine cleans the host; --force forgets an unreachable one', async () => {
    const h = fleet.hosts[0];
    const removed = await cli('remove-machine', ids[0], '-m', MODEL);
    assert.equal(removed.code, 0, removed.stderr);
    assert.match(removed.stdout, new RegExp(`removed machine ${ids[0]}`));
    assert.ok(!existsSync(join(h.rootFs, 'runtime')));
    assert.ok(!existsSync(join(h.rootFs, 'units')));
    assert.equal(await machine(ids[0]), undefined);

    // host 2 goes away: a plain removal fails with the reason, a forced one finishes
    await fleet.killHost(2);
    const refused = await cli('remove-machine', ids[2], '-m', MODEL);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /cannot reach .*; use --force/);
    assert.ok(await machine(ids[2]));
    const forced = await cli('remove-machine', ids[2], '--force', '-m', MODEL);
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal(await machine(ids[2]), undefined);

    // the machine with the changed host key and the never-reached one
    for (const id of [ids[1], closedPortId]) {
      const r = await cli('remove-machine', id, '--force', '-m', MODEL);
      assert.equal(r.code, 0, r.stderr);
    }
    assert.deepEqual(await machines(), []);
    const ops = (await c.api('GET', `/v1/operations?model=${MODEL}`)).body.operations;
    assert.ok(ops.some((o: any) => o.kind === 'remove-machine' && o.target === `machine/${ids[0]}`));
  });
});

// Local machines need no fleet: sandbox directories on this host, driven by the activities directly.
describe('local machines (activities)', () => {
  let dir: string;
  let store: Store;
  let substrates: Substrates;
  let acts: MachineActivities;
  let modelUuid: string;
  const model = 'sandbox';

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'charmflow-local-machines-'));
    store = await openStore({});
    substrates = createSubstrates();
    acts = createMachineActivities({
      store,
      dataDir: dir,
      substrates,
      controllerKey: loadOrCreateControllerKey(join(dir, 'controller-ssh-key')),
      localNet: 0,
    });
    await store.db.insertInto('clouds').values({ name: 'local', type: 'local', endpoint: null }).execute();
    modelUuid = randomUUID();
    await store.db
      .insertInto('models')
      .values({ uuid: modelUuid, name: model, cloud: 'local', config: '{}' })
      .execute();
  });

  after(async () => {
    await substrates?.ssh.close();
    await store?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  const machineCount = async () =>
    (await store.db.selectFrom('machines').select('id').where('model_uuid', '=', modelUuid).execute()).length;

  const row = (id: string) =>
    store.db
      .selectFrom('machines')
      .selectAll()
      .where('model_uuid', '=', modelUuid)
      .where('id', '=', id)
      .executeTakeFirst();

  test('allocate, provision (once), refuse removal with units, remove', async () => {
    const [a, b] = [await acts.allocateLocalMachine(model), await acts.allocateLocalMachine(model)];
    assert.deepEqual([a, b], ['0', '1']);
    const ra = (await row(a))!;
    const rb = (await row(b))!;
    assert.equal(ra.kind, 'local');
    assert.equal(ra.state, 'pending');
    assert.match(ra.address, /^127\.0\.\d+\.\d+$/);
    assert.notEqual(ra.address, rb.address);
    assert.equal(ra.root_dir, join(dir, 'machines', modelUuid, a));

    await acts.provisionMachine(model, a);
    const runner = join(ra.root_dir, 'runtime', 'runner.py');
    assert.ok(existsSync(runner));
    assert.ok(lstatSync(join(ra.root_dir, 'runtime', 'bin', 'config-get')).isSymbolicLink());
    assert.ok(existsSync(join(ra.root_dir, 'units')));
    const provisioned = (await row(a))!;
    assert.equal(provisioned.state, 'started');
    assert.equal(provisioned.runtime_hash, hookRuntime().hash);
    assert.ok(provisioned.hostname.length > 0);

    // a second run finds the runtime in place and uploads nothing
    const mtime = statSync(runner).mtimeMs;
    await new Promise((r) => setTimeout(r, 20));
    await acts.provisionMachine(model, a);
    assert.equal(statSync(runner).mtimeMs, mtime);
    const history = await store.db
      .selectFrom('status_history')
      .select('status')
      .where('entity', '=', `machine/${a}`)
      .execute();
    assert.deepEqual(
      history.map((h) => h.status),
      ['started'],
    );

    // units on it: refused unless forced
    const charm = await addCharm(store.db, await packCharm((await loadCharm(HTTP_HOOKS)).files));
    await store.db
      .insertInto('applications')
      .values({ model_uuid: modelUuid, name: 'web', charm_name: charm.name, charm_revision: charm.revision })
      .execute();
    await store.db
      .insertInto('units')
      .values({ model_uuid: modelUuid, name: 'web/0', application: 'web', number: 0, machine_id: a })
      .execute();
    await assert.rejects(acts.removeMachine(model, a, false), (err: any) => {
      assert.equal(err.type, 'MachineHasUnits');
      assert.match(err.message, /still hosts web\/0/);
      return true;
    });
    assert.ok(existsSync(ra.root_dir));
    await acts.removeMachine(model, a, true);
    assert.ok(!existsSync(ra.root_dir));
    assert.equal(await row(a), undefined);
    const unit = await store.db.selectFrom('units').selectAll().where('name', '=', 'web/0').executeTakeFirstOrThrow();
    assert.equal(unit.machine_id, null);
    assert.equal(unit.agent_status, 'lost');
    // removing again is fine
    await acts.removeMachine(model, a, false);
    await acts.removeMachine(model, b, false);
    assert.equal(await row(b), undefined);
  });

  test('allocating for a unit places it; a retried allocation returns the same machine', async () => {
    await store.db
      .insertInto('units')
      .values({ model_uuid: modelUuid, name: 'web/1', application: 'web', number: 1 })
      .execute();
    const before = await machineCount();
    const first = await acts.allocateLocalMachine(model, 'web/1');
    const retried = await acts.allocateLocalMachine(model, 'web/1');
    assert.equal(retried, first);
    assert.equal(await machineCount(), before + 1, 'one machine, however often the activity runs');
    const unit = await store.db.selectFrom('units').selectAll().where('name', '=', 'web/1').executeTakeFirstOrThrow();
    assert.equal(unit.machine_id, first);
    assert.equal(unit.agent_status, 'allocating');
    await assert.rejects(acts.allocateLocalMachine(model, 'ghost/0'), /unit ghost\/0 not found/);
    assert.equal(await machineCount(), before + 1);
  });

  test('many units get machines in a few statements: the ids and addresses one at a time would give, in order', async () => {
    const names = ['web/12', 'web/10', 'web/11', 'web/13', 'web/14'];
    await store.db
      .insertInto('units')
      .values(names.map((name) => ({ model_uuid: modelUuid, name, application: 'web', number: Number(name.slice(4)) })))
      .execute();
    const placedBefore = await acts.allocateLocalMachine(model, 'web/11');
    // the next addresses cross 127.0.0.255 and 127.0.1.0, which are never given
    await sql`SELECT setval('local_machine_seq', 253)`.execute(store.db);
    const before = await machineCount();

    const placed: Record<string, string> = await acts.allocateLocalMachines(model, names);
    const next = Number(placedBefore);
    const expected: Record<string, string> = {
      'web/12': String(next + 1),
      'web/10': String(next + 2),
      'web/11': placedBefore,
      'web/13': String(next + 3),
      'web/14': String(next + 4),
    };
    assert.deepEqual(placed, expected);
    assert.equal(await machineCount(), before + 4);
    const addresses = await Promise.all(
      ['web/12', 'web/10', 'web/13', 'web/14'].map(async (u) => (await row(placed[u]))!),
    );
    assert.deepEqual(
      addresses.map((m) => [m.address, m.state, m.kind, m.root_dir]),
      [
        ['127.0.0.254', 'pending', 'local', join(dir, 'machines', modelUuid, placed['web/12'])],
        ['127.0.1.1', 'pending', 'local', join(dir, 'machines', modelUuid, placed['web/10'])],
        ['127.0.1.2', 'pending', 'local', join(dir, 'machines', modelUuid, placed['web/13'])],
        ['127.0.1.3', 'pending', 'local', join(dir, 'machines', modelUuid, placed['web/14'])],
      ],
    );
    const units = await store.db
      .selectFrom('units')
      .select(['name', 'machine_id', 'agent_status'])
      .where('model_uuid', '=', modelUuid)
      .where('name', 'in', names)
      .orderBy('name')
      .execute();
    assert.deepEqual(
      units.map((u) => [u.name, u.machine_id, u.agent_status]),
      names
        .slice()
        .sort()
        .map((n) => [n, placed[n], 'allocating']),
    );

    // a retry (the first answer was lost) gives the same machines and makes none
    assert.deepEqual(await acts.allocateLocalMachines(model, names), placed);
    assert.equal(await machineCount(), before + 4);
    // one sequence for single and bulk allocations: the next machine follows on
    await store.db
      .insertInto('units')
      .values({ model_uuid: modelUuid, name: 'web/15', application: 'web', number: 15 })
      .execute();
    assert.equal(await acts.allocateLocalMachine(model, 'web/15'), String(next + 5));

    // an unknown unit fails the whole allocation: nothing is made
    await store.db
      .insertInto('units')
      .values({ model_uuid: modelUuid, name: 'web/16', application: 'web', number: 16 })
      .execute();
    const beforeFailure = await machineCount();
    await assert.rejects(acts.allocateLocalMachines(model, ['web/16', 'ghost/0']), /unit ghost\/0 not found/);
    assert.equal(await machineCount(), beforeFailure);
    const untouched = await store.db
      .selectFrom('units')
      .selectAll()
      .where('name', '=', 'web/16')
      .executeTakeFirstOrThrow();
    assert.equal(untouched.machine_id, null);
  });
});
