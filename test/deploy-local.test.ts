// Charms on the local cloud, end to end: real controller, real hooks, real workloads.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { unitAgentWorkflowId } from '../workflows/messages.ts';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { httpText, waitFor } from './helpers/wait.ts';

const httpCharm = join(projectRoot, 'examples', 'charms', 'http-hooks');
const counterCharm = join(projectRoot, 'test', 'fixtures', 'charms', 'counter');

describe('deploy on the local cloud', () => {
  let c: TestController;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const status = async (model = 'default') => JSON.parse((await cli('status', '-m', model, '--format', 'json')).stdout);

  before(async () => {
    c = await startTestController();
  });
  after(async () => {
    await c?.stop();
  });

  test('deploy a classic hooks charm: units active, leader marked, workload answers', async () => {
    const d = await cli(
      'deploy',
      httpCharm,
      'web',
      '-n',
      '2',
      '--config',
      'content=first page',
      '--config',
      'port=18080',
    );
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /Deployed "web"/);
    // live per-unit progress was shown while waiting
    assert.match(d.stderr, /web\/0: /);
    const s = await status();
    const app = s.applications.web;
    assert.equal(app.charm, 'http-hooks');
    assert.equal(app.scale, 2);
    assert.equal(app['application-status'].current, 'active');
    const u0 = app.units['web/0'];
    const u1 = app.units['web/1'];
    assert.equal(u0.leader, true);
    assert.equal(u1.leader, undefined);
    for (const u of [u0, u1]) {
      assert.equal(u['workload-status'].current, 'active');
      assert.equal(u['juju-status'].current, 'idle');
      assert.deepEqual(u['open-ports'], ['18080/tcp']);
      assert.match(u['public-address'], /^127\./);
      assert.equal(s.machines[u.machine]['dns-name'], u['public-address']);
      assert.equal(await httpText(`http://${u['public-address']}:18080/`).then((t) => t?.trim()), 'first page');
    }
    assert.notEqual(u0['public-address'], u1['public-address'], 'each local machine has its own address');
    const table = (await cli('status')).stdout;
    assert.match(table, /^App\s+Version\s+Status\s+Scale\s+Charm\s+Rev\s+Message/m);
    assert.match(table, /^web\s+.*active\s+2\s+http-hooks\s+1/m);
    assert.match(table, /^web\/0\*\s+active\s+idle\s+\d+\s+127\.\S+\s+18080\/tcp/m);
    assert.match(table, /^Machine\s+State\s+Address\s+Message/m);
    // each unit agent is findable in the Temporal UI by model and application
    for (const unit of ['web/0', 'web/1']) {
      const { uuid } = await c.store.db
        .selectFrom('models')
        .select('uuid')
        .where('name', '=', 'default')
        .executeTakeFirstOrThrow();
      const agent = await c.client.workflow.getHandle(unitAgentWorkflowId('default', uuid, unit)).describe();
      assert.deepEqual(agent.searchAttributes.CharmflowModel, ['default'], unit);
      assert.deepEqual(agent.searchAttributes.CharmflowApplication, ['web'], unit);
    }
  });

  test('config changes run config-changed everywhere and the new content is served', async () => {
    const shown = await cli('config', 'web', '--format', 'json');
    const cfg = JSON.parse(shown.stdout);
    assert.equal(cfg.settings.content.value, 'first page');
    assert.equal(cfg.settings.content.source, 'user');
    assert.equal(cfg.settings.port.type, 'int');
    const set = await cli('config', 'web', 'content=second page');
    assert.equal(set.code, 0, set.stderr);
    const s = await status();
    for (const u of Object.values<any>(s.applications.web.units)) {
      assert.equal((await httpText(`http://${u['public-address']}:18080/`))?.trim(), 'second page');
    }
    const reset = await cli('config', 'web', '--reset', 'content');
    assert.equal(reset.code, 0, reset.stderr);
    const u0 = s.applications.web.units['web/0'];
    assert.equal((await httpText(`http://${u0['public-address']}:18080/`))?.trim(), 'hello from charmflow');
  });

  test('bad input names what is wrong and changes nothing', async () => {
    const unknownKey = await cli('config', 'web', 'colour=blue');
    assert.equal(unknownKey.code, 1);
    assert.match(unknownKey.stderr, /colour/);
    const badType = await cli('config', 'web', 'port=eighty');
    assert.equal(badType.code, 1);
    assert.match(badType.stderr, /port.*int/);
    const cfg = JSON.parse((await cli('config', 'web', '--format', 'json')).stdout);
    assert.equal(cfg.settings.port.value, 18080);
    const api400 = await c.api('PUT', '/v1/models/default/applications/web/config', { set: { port: 'x' } });
    assert.equal(api400.status, 400);
    assert.equal(api400.body.details[0].field, 'body.set.port');
    const noApp = await cli('config', 'ghost');
    assert.equal(noApp.code, 1);
    assert.match(noApp.stderr, /application "ghost" not found/);
    const noUnit = await cli('remove-unit', 'web/9');
    assert.equal(noUnit.code, 1);
    assert.match(noUnit.stderr, /unit "web\/9" not found/);
    const noCharm = await cli('deploy', 'no-such-charm');
    assert.equal(noCharm.code, 1);
    assert.match(noCharm.stderr, /charm "no-such-charm" not found/);
    const dup = await cli('deploy', httpCharm, 'web');
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /application "web" already exists/);
    const badUnit = await cli('resolve', 'web');
    assert.equal(badUnit.code, 2);
    const notInError = await cli('resolve', 'web/0');
    assert.equal(notInError.code, 1);
    assert.match(notInError.stderr, /not in an error state/);
  });

  test('a failing hook puts the unit in error with the output tail; retried automatically; resolve works', async () => {
    const d = await cli('deploy', counterCharm, 'flaky', '--config', 'fail-hook=install', '--config', 'fail-once=true');
    assert.equal(d.code, 1, 'deploy reports the failure');
    assert.match(d.stderr, /unit flaky\/0: hook failed: "install"/);
    // the unit's status log holds the tail of the hook's output
    const log = await cli('show-status-log', 'flaky/0', '--format', 'json');
    assert.match(log.stdout, /something went wrong in install/);
    assert.match(log.stdout, /second line of the failure/);
    // a failed hook commits nothing: its leader-set did not stick
    const app = await c.store.db
      .selectFrom('applications')
      .select('leader_settings')
      .where('name', '=', 'flaky')
      .executeTakeFirstOrThrow();
    assert.deepEqual(app.leader_settings, {});
    // the runners started ahead for leader-elected, config-changed and start were
    // withdrawn: none is left waiting for a context that will not come
    const { root_dir: root } = await c.store.db
      .selectFrom('units')
      .innerJoin('machines', (j) =>
        j.onRef('machines.model_uuid', '=', 'units.model_uuid').onRef('machines.id', '=', 'units.machine_id'),
      )
      .select('machines.root_dir')
      .where('units.name', '=', 'flaky/0')
      .executeTakeFirstOrThrow();
    const runnersOf = () =>
      readdirSync('/proc').filter((pid) => {
        try {
          return (
            /^\d+$/.test(pid) && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`${root}/runtime/runner.py`)
          );
        } catch {
          return false;
        }
      });
    await waitFor("no runner left on flaky/0's machine", async () => runnersOf().length === 0, 5_000);
    // retried automatically after 5 s; the second attempt succeeds (fail-once)
    await waitFor(
      'flaky/0 active after the automatic retry',
      async () => (await status()).applications.flaky.units['flaky/0']['workload-status'].current === 'active',
      60_000,
    );
    const leaderSettings = await c.store.db
      .selectFrom('applications')
      .select('leader_settings')
      .where('name', '=', 'flaky')
      .executeTakeFirstOrThrow();
    assert.deepEqual(leaderSettings.leader_settings, { 'elected-by': 'flaky/0' });

    // always failing: resolve --no-retry skips the hook
    const d2 = await cli('deploy', counterCharm, 'broken', '--config', 'fail-hook=config-changed');
    assert.equal(d2.code, 1);
    assert.equal((await status()).applications.broken.units['broken/0']['workload-status'].current, 'error');
    const r = await cli('resolve', 'broken/0', '--no-retry');
    assert.equal(r.code, 0, r.stderr);
    await waitFor('broken/0 out of error after the skip', async () => {
      const u = (await status()).applications.broken.units['broken/0'];
      return u['workload-status'].current === 'active' ? u : null;
    });
  });

  test('remove-unit stops the workload and cleans its files; remove-application removes the rest', async () => {
    const s = await status();
    const u1 = s.applications.web.units['web/1'];
    const machine = await c.store.db
      .selectFrom('machines')
      .selectAll()
      .where('id', '=', u1.machine)
      .executeTakeFirstOrThrow();
    const unitDir = join(machine.root_dir, 'units', 'web-1');
    assert.ok(existsSync(unitDir));
    const r = await cli('remove-unit', 'web/1');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await httpText(`http://${u1['public-address']}:18080/`, 1000), null, 'server gone');
    assert.ok(!existsSync(unitDir), 'unit files cleaned');
    const after1 = await status();
    assert.equal(after1.applications.web.scale, 1);
    assert.equal(after1.applications.web.units['web/1'], undefined);

    const u0 = after1.applications.web.units['web/0'];
    const ra = await cli('remove-application', 'web');
    assert.equal(ra.code, 0, ra.stderr);
    assert.equal(await httpText(`http://${u0['public-address']}:18080/`, 1000), null);
    assert.equal((await status()).applications.web, undefined);
    // hooks ran in Juju's teardown order (the unit's hook runs went with it; its status history stays)
    const hist = await c.store.db
      .selectFrom('status_history')
      .select(['message'])
      .where('entity', '=', 'web/0')
      .where('kind', '=', 'agent')
      .where('status', '=', 'executing')
      .orderBy('id')
      .execute();
    const hooks = hist.map((h) => h.message.replace(/^running (.*) hook$/, '$1'));
    assert.equal(
      (await c.store.db.selectFrom('hook_runs').select('unit').where('unit', '=', 'web/0').execute()).length,
      0,
    );
    assert.deepEqual(hooks.slice(0, 4), ['install', 'leader-elected', 'config-changed', 'start']);
    assert.deepEqual(hooks.slice(-2), ['stop', 'remove']);
  });

  test("a running deploy shows each unit's current hook live, then done", async () => {
    const d = await cli('deploy', counterCharm, 'slow', '--config', 'sleep=2', '--no-wait');
    assert.equal(d.code, 0, d.stderr);
    const ops = (await c.api('GET', '/v1/operations?limit=1')).body.operations;
    const id = ops[0].id as number;
    // the install hook sleeps 2 s: the operation shows it running, not just queued
    const running = await waitFor('install shown running', async () => {
      const op = (await c.api('GET', `/v1/operations/${id}`)).body;
      return op.progress?.units?.['slow/0'] === 'running install hook' ? op : null;
    });
    assert.equal(running.state, 'running');
    const done = await c.waitOperation(id, 60_000);
    assert.equal(done.state, 'succeeded');
    assert.equal(done.progress.units['slow/0'], 'done');
    assert.equal((await cli('remove-application', 'slow')).code, 0);
  });

  test("a unit's first hooks run one after another in one runner on its machine", async () => {
    const d = await cli('deploy', join(projectRoot, 'test', 'fixtures', 'charms', 'runner-pids'), 'pids', '-n', '2');
    assert.equal(d.code, 0, d.stderr);
    const machines = join(c.dataDir, 'machines');
    const files = readdirSync(machines, { recursive: true, encoding: 'utf8' }).filter(
      (f) => f.endsWith(join('units', 'pids-0', 'runner-pids')) || f.endsWith(join('units', 'pids-1', 'runner-pids')),
    );
    assert.equal(files.length, 2, files.join(', '));
    for (const f of files) {
      const lines = readFileSync(join(machines, f), 'utf8').trim().split('\n');
      const hooks = lines.map((l) => l.split(' ')[0]);
      assert.equal(hooks[0], 'install');
      assert.equal(hooks.at(-1), 'start');
      assert.equal(hooks.length, 4, lines.join('; '));
      // every hook's supervisor was forked by the same runner
      assert.equal(new Set(lines.map((l) => l.split(' ')[1])).size, 1, lines.join('; '));
    }
    assert.equal((await cli('remove-application', 'pids')).code, 0);
  });

  test("units sharing a machine take turns: Juju's machine lock", async () => {
    const first = await cli('deploy', counterCharm, 'lock-a');
    assert.equal(first.code, 0, first.stderr);
    const m = (await status()).applications['lock-a'].units['lock-a/0'].machine as string;
    // two more units on the same machine, each sleeping 1 s in install
    const d = await cli('deploy', counterCharm, 'lock-b', '-n', '2', '--to', `${m},${m}`, '--config', 'sleep=1');
    assert.equal(d.code, 0, d.stderr);
    const logs = await c.store.db
      .selectFrom('log_entries')
      .select(['entity', 'at'])
      .where('entity', 'in', ['lock-b/0', 'lock-b/1'])
      .where('message', '=', 'counter: running install')
      .orderBy('at')
      .execute();
    assert.equal(logs.length, 2);
    const gap = new Date(logs[1].at).getTime() - new Date(logs[0].at).getTime();
    assert.ok(gap >= 950, `the second install began ${gap} ms after the first, inside its 1 s sleep`);
    const runs = await c.store.db
      .selectFrom('hook_runs')
      .select(['unit', 'lock_wait_ms', 'duration_ms'])
      .where('unit', 'in', ['lock-b/0', 'lock-b/1'])
      .where('hook', '=', 'install')
      .execute();
    const waits = runs.map((r) => r.lock_wait_ms ?? 0).sort((a, b) => a - b);
    assert.ok(waits[1] >= 500, `one install waited for the machine lock: ${JSON.stringify(runs)}`);
    for (const r of runs) assert.ok((r.duration_ms ?? 0) >= 1000, `install ran its 1 s sleep: ${JSON.stringify(r)}`);
    assert.equal((await cli('remove-application', 'lock-b')).code, 0);
    assert.equal((await cli('remove-application', 'lock-a')).code, 0);
  });

  test('remove-unit --force always finishes, even with a failing stop hook', async () => {
    const d = await cli('deploy', counterCharm, 'stuck', '--config', 'fail-hook=stop');
    assert.equal(d.code, 0, d.stderr);
    const plain = await cli('remove-unit', 'stuck/0', '--timeout', '3');
    assert.equal(plain.code, 1);
    assert.match(plain.stderr, /--force/);
    const forced = await cli('remove-unit', 'stuck/0', '--force');
    assert.equal(forced.code, 0, forced.stderr);
    assert.equal((await status()).applications.stuck.units['stuck/0'], undefined);
  });
});
