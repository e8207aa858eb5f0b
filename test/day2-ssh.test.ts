// Day-2 operations over real sshd hosts (the test fleet): actions on a unit of an
// SSH machine, a refresh whose health gate fails and rolls itself back, a machine
// cut off the network in the middle of a refresh, and `wait` on a settled, a busy
// and a broken model. The worker-crash case is in refresh-crash.test.ts (it needs
// Postgres and a worker of its own).
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { unitAgentQuery, unitAgentWorkflowId } from '../workflows/messages.ts';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { settle } from './helpers/relations.ts';
import { waitFor } from './helpers/wait.ts';

const fixtures = join(projectRoot, 'test', 'fixtures', 'charms');
const actor = join(fixtures, 'actor');
const versioned = join(fixtures, 'versioned');
const counter = join(fixtures, 'counter');
const M = 'day2';

interface UnitView {
  machine: string;
  'public-address': string;
  leader?: boolean;
  'workload-status': { current: string; message?: string };
  'juju-status': { current: string; message?: string };
}

/**
 * A copy of the versioned fixture as another revision. Every hook of it also
 * appends `<hook> <version>` to ran.log in the unit's directory on the machine
 * (the machine's own record of what ran), and upgrade-charm sleeps `slow` seconds.
 */
function versionedRevision(dir: string, version: string, behaviour: string, slow = 0): string {
  const d = join(dir, `${version}-${behaviour}`);
  cpSync(versioned, d, { recursive: true, verbatimSymlinks: true });
  writeFileSync(join(d, 'VERSION'), `${version}\n`);
  writeFileSync(join(d, 'behaviour'), `${behaviour}\n`);
  const common = join(d, 'hooks', 'common.sh');
  const text = readFileSync(common, 'utf8');
  const marker = 'juju-log -- "HOOK $hook $version"\n';
  assert.ok(text.includes(marker), 'the fixture logs HOOK <hook> <version>');
  writeFileSync(
    common,
    text.replace(
      marker,
      `${marker}echo "$hook $version" >>"$dir/../ran.log"\nif [ "$hook" = upgrade-charm ]; then sleep ${slow}; fi\n`,
    ),
  );
  return d;
}

describe('day-2 operations over SSH machines', { skip: fleetUnsupportedReason() }, () => {
  let fleet: Fleet;
  let c: TestController;
  let dir: string;
  let uuid: string;
  const cli = (args: string[], timeoutMs = 240_000): Promise<CliResult> =>
    runCli([...args, '-m', M], { CHARMFLOW_DATA_DIR: c.dataDir }, timeoutMs);
  const ok = async (...args: string[]) => {
    const r = await cli(args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const timed = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
    const t0 = Date.now();
    const r = await fn();
    return [r, Date.now() - t0];
  };
  const status = async () => JSON.parse((await ok('status', '--format', 'json')).stdout);
  const app = async (name: string) =>
    (await status()).applications[name] as { 'charm-rev': number; units: Record<string, UnitView> };
  /** `<workload status> <message>` of each unit of an application. */
  const messages = async (name: string) =>
    Object.fromEntries(
      Object.entries((await app(name)).units).map(([u, s]) => [
        u,
        `${s['workload-status'].current} ${s['workload-status'].message ?? ''}`,
      ]),
    );
  const unitRow = (unit: string) =>
    c.store.db
      .selectFrom('units')
      .select(['workload_status', 'agent_status', 'charm_revision', 'machine_id'])
      .where('model_uuid', '=', uuid)
      .where('name', '=', unit)
      .executeTakeFirstOrThrow();
  /** The fleet host a unit runs on. */
  const hostOf = async (unit: string) => {
    const u = (await app(unit.split('/')[0])).units[unit];
    const i = fleet.hosts.findIndex((h) => h.address === u['public-address']);
    assert.ok(i >= 0, `${unit} is on a fleet host: ${u['public-address']}`);
    return { i, host: fleet.hosts[i], machine: u.machine };
  };
  /** A file in a unit's directory on its machine, read through the host's own filesystem. */
  const onMachine = async (unit: string, file: string) => {
    const { host } = await hostOf(unit);
    try {
      return readFileSync(join(host.rootFs, 'units', unit.replace('/', '-'), file), 'utf8');
    } catch {
      return '';
    }
  };
  const hookRuns = (unit: string, hook: string, since: Date) =>
    c.store.db
      .selectFrom('hook_runs')
      .select(['context_id', 'exit_code', 'committed', 'started_at', 'finished_at'])
      .where('model_uuid', '=', uuid)
      .where('unit', '=', unit)
      .where('hook', '=', hook)
      .where('started_at', '>=', since)
      .execute();
  const logged = (unit: string, message: string) =>
    c.store.db
      .selectFrom('log_entries')
      .select(['id', 'at'])
      .where('model_uuid', '=', uuid)
      .where('entity', '=', unit)
      .where('message', '=', message)
      .execute();
  const agentView = (unit: string) =>
    c.client.workflow.getHandle(unitAgentWorkflowId(M, uuid, unit)).query(unitAgentQuery);
  const opId = (r: CliResult) => {
    const m = /operation (\d+)/.exec(r.stdout);
    assert.ok(m, `an operation id in: ${r.stdout}`);
    return Number(m[1]);
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cf-day2-ssh-'));
    [fleet, c] = await Promise.all([createFleet(4), startTestController()]);
    const add = await runCli(['add-model', M, '--cloud', 'manual'], { CHARMFLOW_DATA_DIR: c.dataDir });
    assert.equal(add.code, 0, add.stderr);
    for (const h of fleet.hosts) {
      await ok('add-machine', `ssh:root@${h.address}:${h.port}`, '--private-key', h.privateKeyPath);
    }
    uuid = (await c.store.db.selectFrom('models').select('uuid').where('name', '=', M).executeTakeFirstOrThrow()).uuid;
    // actor on host 0; three units of the versioned charm (revision 1, v1) on hosts 1..3
    await ok('deploy', actor, 'act', '--to', '0');
    await ok('deploy', versionedRevision(dir, 'v1', 'good'), 'app', '-n', '3', '--to', '1,2,3');
    await settle(c, [M], 240_000);
  });
  after(async () => {
    // a test that failed half-way may have left a link down
    for (let i = 0; i < (fleet?.hosts.length ?? 0); i++) await fleet.linkUp(i).catch(() => {});
    await c?.stop();
    await fleet?.destroy();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('actions on an SSH unit: results shown; a failing one exits non-zero with its message; the unit stays active', async () => {
    const r = await ok('run', 'act/0', 'echo', 'text=ssh', 'times=3', '--format', 'json');
    const out = JSON.parse(r.stdout);
    assert.equal(out.status, 'completed');
    assert.equal(out.unit, 'act/0');
    assert.deepEqual(out.results, { result: { text: 'sshsshssh', times: '3' }, unit: 'act/0' });
    assert.deepEqual(
      out.log.map((l: { message: string }) => l.message),
      ['round 1 of 3', 'round 2 of 3', 'round 3 of 3'],
    );
    // the default format: results as YAML on stdout, the log on stderr
    const y = await ok('run', 'act/leader', 'echo', 'text=yo');
    assert.match(y.stdout, /result:\n\s+text: yoyo\n\s+times: "2"/);
    assert.match(y.stderr, /round 2 of 2/);

    const f = await cli(['run', 'act/0', 'fail', '--format', 'json']);
    assert.notEqual(f.code, 0, 'a failed action exits non-zero');
    assert.match(f.stderr, /action fail on act\/0 failed: nope: the thing is broken/);
    const failed = JSON.parse(f.stdout);
    assert.equal(failed.status, 'failed');
    assert.equal(failed.message, 'nope: the thing is broken');
    assert.deepEqual(failed.results, { partial: 'yes' });
    const crash = await cli(['run', 'act/0', 'crash']);
    assert.notEqual(crash.code, 0);
    assert.match(crash.stderr, /the action exited with code 3: .*crashing now/);

    const row = await unitRow('act/0');
    assert.equal(row.workload_status, 'active', 'a failed action never puts the unit in error');
    assert.equal(row.agent_status, 'idle');
    const s = (await app('act')).units['act/0'];
    assert.equal(s['workload-status'].current, 'active');
    assert.equal(s['public-address'], fleet.hosts[0].address, 'the action ran on the SSH host');
    // and it goes on running what comes next
    const again = JSON.parse((await ok('run', 'act/0', 'echo', 'text=after', 'times=1', '--format', 'json')).stdout);
    assert.equal(again.results.result.text, 'after');
  });

  test('wait on a settled model returns at once, exit 0', async () => {
    const [r, ms] = await timed(() => ok('wait'));
    assert.equal(r.stdout, `model ${M} is settled\n`);
    assert.equal(r.stderr, '');
    assert.ok(ms < 5_000, `wait took ${ms} ms on a settled model`);
  });

  test('wait on a busy model (deploy --no-wait) returns once the new units are active', async () => {
    const d = await ok('deploy', counter, 'web', '-n', '2', '--to', '0,1', '--config', 'sleep=4', '--no-wait');
    assert.match(d.stdout, /operation \d+ \(deploy\) started/);
    const [r, ms] = await timed(() => ok('wait', '--timeout', '4m'));
    assert.equal(r.stdout, `model ${M} is settled\n`);
    assert.ok(ms >= 3_000, `wait returned after ${ms} ms, before install's 4 s sleep could have ended`);
    assert.match(r.stderr, new RegExp(`^waiting for model ${M} to settle:$`, 'm'));
    // the moment it returned: the deploy is done, both units are active and idle on their hosts
    const running = await c.store.db
      .selectFrom('operations')
      .select(['id', 'kind', 'state'])
      .where('model_name', '=', M)
      .where('state', 'in', ['pending', 'running'])
      .execute();
    assert.deepEqual(running, []);
    const web = await app('web');
    assert.deepEqual(Object.keys(web.units).sort(), ['web/0', 'web/1']);
    for (const [name, u] of Object.entries(web.units)) {
      assert.equal(u['workload-status'].current, 'active', name);
      assert.equal(u['juju-status'].current, 'idle', name);
    }
    assert.equal(web.units['web/1']['public-address'], fleet.hosts[1].address);
  });

  test('a refresh that fails its health gate rolls every refreshed unit back by itself', async () => {
    const before = await app('app');
    const from = before['charm-rev'];
    assert.deepEqual(await messages('app'), {
      'app/0': 'active running v1',
      'app/1': 'active running v1',
      'app/2': 'active running v1',
    });
    const since = new Date();
    const r = await cli([
      'refresh',
      'app',
      '--path',
      versionedRevision(dir, 'v2', 'blocked'),
      '--max-unavailable',
      '2',
      '--gate-timeout',
      '5',
    ]);
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(
      r.stderr,
      /health gate failed at batch 1\/2 \(app\/1, app\/2\): not active within 5s: app\/[12] is blocked \(v2 is broken\)/,
    );
    assert.match(r.stderr, new RegExp(`rolled back app/1, app/2: every unit is back on revision ${from} and active`));
    const op = await c.store.db
      .selectFrom('operations')
      .select(['state', 'error'])
      .where('model_name', '=', M)
      .where('kind', '=', 'refresh')
      .orderBy('id', 'desc')
      .executeTakeFirstOrThrow();
    assert.equal(op.state, 'failed');
    assert.match(op.error ?? '', /health gate failed .*v2 is broken.*every unit is back on revision/);

    // every unit on the old revision and active, as the controller and the machines see it
    const now = await app('app');
    assert.equal(now['charm-rev'], from, 'charm-rev unchanged');
    assert.deepEqual(await messages('app'), {
      'app/0': 'active running v1',
      'app/1': 'active running v1',
      'app/2': 'active running v1',
    });
    for (const u of ['app/0', 'app/1', 'app/2']) {
      const row = await unitRow(u);
      assert.equal(row.charm_revision, null, `${u} follows its application's revision again`);
      assert.equal(row.workload_status, 'active', u);
      assert.equal(await onMachine(u, `workload-${u.replace('/', '-')}`), 'v1\n', `${u}'s workload file`);
      assert.equal(await onMachine(u, 'charm/VERSION'), 'v1\n', `${u} has the old charm on its machine`);
    }
    // the refreshed units ran v2 and came back to v1; the leader never ran v2
    for (const u of ['app/1', 'app/2']) {
      const ran = (await onMachine(u, 'ran.log'))
        .trim()
        .split('\n')
        .filter((l) => !l.startsWith('update-status'));
      const i = ran.indexOf('upgrade-charm v2');
      assert.ok(i >= 0, `${u} ran upgrade-charm v2: ${ran.join(' | ')}`);
      assert.ok(ran.indexOf('upgrade-charm v1', i) > i, `${u} ran upgrade-charm v1 after it: ${ran.join(' | ')}`);
      assert.equal(ran.at(-1), 'config-changed v1', `${u}: ${ran.join(' | ')}`);
    }
    assert.deepEqual(await logged('app/0', 'HOOK upgrade-charm v2'), []);
    assert.deepEqual(await hookRuns('app/0', 'upgrade-charm', since), []);
    await settle(c, [M], 120_000);
  });

  test('a machine cut off the network mid-refresh stops it naming the unit and machine; nothing else changes', async () => {
    const from = (await app('app'))['charm-rev'];
    // batches of one, the leader last: app/1 goes first; its upgrade-charm takes 15 s
    const victim = 'app/1';
    const { i: hostIndex, machine } = await hostOf(victim);
    const untouched = ['app/2', 'app/0'];
    const since = new Date();
    const d = await ok('refresh', 'app', '--path', versionedRevision(dir, 'v3', 'good', 15), '--no-wait');
    const id = opId(d);
    await waitFor(
      `${victim} running upgrade-charm v3`,
      async () => (await logged(victim, 'HOOK upgrade-charm v3')).length > 0,
      60_000,
    );
    const cut = Date.now();
    await fleet.linkDown(hostIndex);
    let op: { state: string; error: string | null };
    try {
      op = await c.waitOperation(id, 180_000);
    } catch (err) {
      await fleet.linkUp(hostIndex);
      throw err;
    }
    const stoppedAfter = Date.now() - cut;
    assert.equal(op.state, 'failed', JSON.stringify(op));
    assert.match(
      op.error ?? '',
      new RegExp(`refresh stopped at batch 1/3 \\(app/1\\): machine ${machine} of unit app/1 is down: `),
    );
    assert.match(op.error ?? '', /units already refreshed: app\/1;/);
    assert.match(op.error ?? '', /nothing else was changed/);

    // nothing else changes, even a while later: the others were never sent upgrade-charm
    await new Promise((r) => setTimeout(r, 5_000));
    assert.equal((await app('app'))['charm-rev'], from, 'the application stays on its revision');
    for (const u of untouched) {
      assert.deepEqual(await hookRuns(u, 'upgrade-charm', since), [], `${u} ran no upgrade-charm`);
      assert.deepEqual(await logged(u, 'HOOK upgrade-charm v3'), [], u);
      const view = await agentView(u);
      assert.ok(!view.queue.some((h: string) => h.startsWith('upgrade-charm')), `${u} queue: ${view.queue.join(', ')}`);
      assert.notEqual(view.current, 'upgrade-charm', u);
      const row = await unitRow(u);
      assert.equal(row.charm_revision, null, `${u} still follows the application's revision`);
      assert.equal(row.workload_status, 'active', u);
      assert.equal(await onMachine(u, 'charm/VERSION'), 'v1\n', `${u} still has the old charm`);
    }
    const messagesNow = await messages('app');
    assert.equal(messagesNow['app/0'], 'active running v1');
    assert.equal(messagesNow['app/2'], 'active running v1');
    const m = await c.store.db
      .selectFrom('machines')
      .select(['state', 'message'])
      .where('model_uuid', '=', uuid)
      .where('id', '=', machine)
      .executeTakeFirstOrThrow();
    assert.equal(m.state, 'error', 'the cut-off machine is shown in error');
    console.log(`# refresh stopped ${stoppedAfter} ms after the link went down: ${op.error}`);

    // the link comes back: the machine and the unit recover (the unit finishes the hooks it was given)
    await fleet.linkUp(hostIndex);
    await waitFor(
      `machine ${machine} back`,
      async () =>
        (
          await c.store.db
            .selectFrom('machines')
            .select('state')
            .where('model_uuid', '=', uuid)
            .where('id', '=', machine)
            .executeTakeFirstOrThrow()
        ).state === 'started',
      180_000,
    );
    await settle(c, [M], 240_000);
    const back = await unitRow(victim);
    assert.equal(back.workload_status, 'active', `${victim} recovered`);
    assert.equal((await messages('app'))[victim], 'active running v3', `${victim} finished its refresh hooks`);
  });

  test('after the link is back, the stopped refresh can be rolled back as its error says', async () => {
    const from = (await app('app'))['charm-rev'];
    const r = await cli(['refresh', 'app', '--revision', String(from), '--gate-timeout', '30']);
    assert.equal(r.code, 0, `refresh app --revision ${from} (the rollback the error proposes): ${r.stderr}`);
    assert.equal((await app('app'))['charm-rev'], from);
    assert.deepEqual(await messages('app'), {
      'app/0': 'active running v1',
      'app/1': 'active running v1',
      'app/2': 'active running v1',
    });
    await settle(c, [M], 120_000);
  });

  test('wait on a model with a unit in error fails fast, naming it', async () => {
    const d = await ok('deploy', counter, 'broken', '--to', '2', '--config', 'fail-hook=install', '--no-wait');
    assert.match(d.stdout, /operation \d+ \(deploy\) started/);
    const [r, ms] = await timed(() => cli(['wait', '--timeout', '5m']));
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /^ERROR unit broken\/0 is in error: hook failed: "install"/m);
    assert.equal(r.stdout, '');
    assert.ok(ms < 60_000, `took ${ms} ms`);
    const row = await unitRow('broken/0');
    assert.equal(row.workload_status, 'error');
    // the rest of the model is still settled on its own
    const act = await cli(['wait', '--app', 'act', '--timeout', '30s']);
    assert.equal(act.code, 0, act.stderr);
  });
});
