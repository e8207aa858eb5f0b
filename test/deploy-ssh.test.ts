// Charms on real sshd hosts (network namespaces made by the test) and on the local
// cloud: both example charms, a classic hooks charm and a Python `ops` charm packed
// with its dependency, serving over the network, reconfigured, removed.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildOpsCharm } from '../charm/build-ops-charm.ts';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { httpText, waitFor } from './helpers/wait.ts';

const httpCharm = join(projectRoot, 'examples', 'charms', 'http-hooks');
const opsSrc = join(projectRoot, 'examples', 'charms', 'ops-http');
const unsupported = fleetUnsupportedReason();

describe('deploy onto SSH machines and the local cloud', { skip: unsupported }, () => {
  let fleet: Fleet;
  let c: TestController;
  let opsCharm: string;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const status = async (model: string) => JSON.parse((await cli('status', '-m', model, '--format', 'json')).stdout);

  before(async () => {
    [fleet, c] = await Promise.all([createFleet(3), startTestController()]);
    const out = join(mkdtempSync(join(tmpdir(), 'cf-ops-')), 'ops-http.charm');
    opsCharm = (await buildOpsCharm(opsSrc, out)).outFile;
  });
  after(async () => {
    await c?.stop();
    await fleet?.destroy();
  });

  test('add three SSH machines to a model on the manual cloud', async () => {
    assert.equal((await cli('add-model', 'fleet', '--cloud', 'manual')).code, 0);
    for (const h of fleet.hosts) {
      const r = await cli(
        'add-machine',
        `ssh:root@${h.address}:${h.port}`,
        '--private-key',
        h.privateKeyPath,
        '-m',
        'fleet',
      );
      assert.equal(r.code, 0, r.stderr);
    }
    const machines = JSON.parse((await cli('machines', '-m', 'fleet', '--format', 'json')).stdout).machines;
    assert.equal(machines.length, 3);
    assert.ok(machines.every((m: { state: string }) => m.state === 'started'));
  });

  test('both example charms serve over the network from every host', async () => {
    const web = await cli('deploy', httpCharm, 'web', '-n', '3', '-m', 'fleet', '--config', 'content=hooks on ssh');
    assert.equal(web.code, 0, web.stderr);
    const ops = await cli(
      'deploy',
      opsCharm,
      'opsweb',
      '-n',
      '3',
      '--to',
      '0,1,2',
      '-m',
      'fleet',
      '--config',
      'port=9090',
      '--config',
      'content=ops on ssh',
    );
    assert.equal(ops.code, 0, ops.stderr);
    const s = await status('fleet');
    assert.equal(s.applications.web.scale, 3);
    assert.equal(s.applications.opsweb['application-status'].current, 'active');
    const addresses = new Set<string>();
    for (const [name, port, text] of [
      ['web', 8080, 'hooks on ssh'],
      ['opsweb', 9090, 'ops on ssh'],
    ] as const) {
      for (const u of Object.values<any>(s.applications[name].units)) {
        assert.equal(u['workload-status'].current, 'active', `${name}: ${JSON.stringify(u)}`);
        assert.deepEqual(u['open-ports'], [`${port}/tcp`]);
        addresses.add(u['public-address']);
        assert.equal((await httpText(`http://${u['public-address']}:${port}/`))?.trim(), text);
      }
    }
    assert.deepEqual([...addresses].sort(), fleet.hosts.map((h) => h.address).sort());
    assert.equal(s.applications.web.units['web/0'].leader, true);
  });

  test('config changes are served on every host', async () => {
    assert.equal((await cli('config', 'web', 'content=changed', '-m', 'fleet')).code, 0);
    assert.equal((await cli('config', 'opsweb', 'content=ops changed', '-m', 'fleet')).code, 0);
    for (const h of fleet.hosts) {
      assert.equal((await httpText(`http://${h.address}:8080/`))?.trim(), 'changed');
      assert.equal((await httpText(`http://${h.address}:9090/`))?.trim(), 'ops changed');
    }
  });

  test('the ops charm runs on the local cloud too', async () => {
    const d = await cli('deploy', opsCharm, 'localops', '--config', 'port=9191', '--config', 'content=ops on local');
    assert.equal(d.code, 0, d.stderr);
    const u = (await status('default')).applications.localops.units['localops/0'];
    assert.equal(u['workload-status'].current, 'active');
    assert.equal((await httpText(`http://${u['public-address']}:9191/`))?.trim(), 'ops on local');
    assert.equal((await cli('remove-application', 'localops')).code, 0);
    assert.equal(await httpText(`http://${u['public-address']}:9191/`, 1000), null);
  });

  test('remove: services gone, unit files cleaned on the hosts', async () => {
    const r = await cli('remove-application', 'opsweb', '-m', 'fleet');
    assert.equal(r.code, 0, r.stderr);
    for (const [i, h] of fleet.hosts.entries()) {
      assert.equal(await httpText(`http://${h.address}:9090/`, 1000), null);
      assert.ok(!existsSync(join(h.rootFs, 'units', `opsweb-${i}`)), `opsweb/${i} files cleaned`);
    }
    assert.equal((await status('fleet')).applications.opsweb, undefined);
  });

  test('a host whose key changed is refused; the other machines keep working', async () => {
    const changed = fleet.hosts[0];
    await fleet.rotateHostKey(0);
    const r = await cli('config', 'web', 'content=after rotation', '-m', 'fleet');
    assert.equal(r.code, 1, 'the operation reports the refused machine');
    assert.match(r.stderr, /web\/0/);
    const s = await status('fleet');
    const machine0 = Object.entries<any>(s.machines).find(([, m]) => m['dns-name'] === changed.address)![1];
    assert.equal(machine0['juju-status'].current, 'error');
    assert.match(machine0['juju-status'].message, /host key/);
    assert.equal(s.applications.web.units['web/0']['workload-status'].current, 'error');
    for (const h of fleet.hosts.slice(1)) {
      await waitFor(
        `new content on ${h.address}`,
        async () => (await httpText(`http://${h.address}:8080/`))?.trim() === 'after rotation',
      );
    }
    // nothing ran on the refused host: its last config-changed is from before the rotation
    const runs = await c.store.db
      .selectFrom('hook_runs')
      .select(['hook', 'exit_code'])
      .where('unit', '=', 'web/0')
      .where('hook', '=', 'config-changed')
      .where('finished_at', 'is not', null)
      .execute();
    assert.equal(runs.length, 2, 'the deploy and the first config change only');
  });

  test('a config held up by a machine in error says which unit waits on which machine and why', async () => {
    // web/0's agent still retries the refused config-changed: a new one queues behind it
    const r = runCli(['config', 'web', 'content=held up', '-m', 'fleet', '--timeout', '25'], {
      CHARMFLOW_DATA_DIR: c.dataDir,
    });
    const op = await waitFor('the config operation', async () => {
      const ops = (await c.api('GET', '/v1/operations?model=fleet&limit=1')).body.operations;
      return ops[0]?.kind === 'config' && ops[0].summary.includes('content') && ops[0].state === 'running'
        ? ops[0]
        : null;
    });
    const machineId = (await status('fleet')).applications.web.units['web/0'].machine;
    const waiting = await waitFor(
      "web/0's reason in the operation's progress",
      async () => {
        const view = (await c.api('GET', `/v1/operations/${op.id}`)).body;
        const state = view.progress?.units?.['web/0'];
        return typeof state === 'string' && state.startsWith('waiting: ') ? state : null;
      },
      20_000,
    );
    assert.match(waiting, new RegExp(`^waiting: machine ${machineId} is in error: .*host key`));
    const done = await r;
    assert.equal(done.code, 1, 'fails after its own timeout');
    assert.match(done.stderr, new RegExp(`not done within 25s on web/0: waiting: machine ${machineId} is in error`));
  });

  test('--force removes an application whose unit sits on the refused machine', async () => {
    const plain = await cli('remove-application', 'web', '-m', 'fleet', '--timeout', '5');
    assert.equal(plain.code, 1);
    const forced = await cli('remove-application', 'web', '-m', 'fleet', '--force');
    assert.equal(forced.code, 0, forced.stderr);
    for (const [i, h] of fleet.hosts.entries()) {
      if (i === 0) continue;
      assert.equal(await httpText(`http://${h.address}:8080/`, 1000), null);
      assert.ok(!existsSync(join(h.rootFs, 'units', `web-${i}`)));
    }
    assert.equal((await status('fleet')).applications.web, undefined);
  });
});
