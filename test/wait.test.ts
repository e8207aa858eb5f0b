// `charmflow wait` and `GET /v1/models/:model/wait`: a settled signal. Real
// controller, real hooks on the local cloud, the counter fixture charm (its `sleep`
// option holds install, its `fail-hook` option fails a hook).
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { operationConcerns } from '../api/routes/wait.ts';
import { parseDuration } from '../cli/commands/wait.ts';
import { unitAgentQuery, unitAgentWorkflowId } from '../workflows/messages.ts';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { waitFor } from './helpers/wait.ts';

const counterCharm = join(projectRoot, 'test', 'fixtures', 'charms', 'counter');

describe('wait: pure parts', () => {
  test('operationConcerns: an application, its units, its integrations, across models; not others', () => {
    const m = 'default';
    const yes = [
      { kind: 'deploy', target: 'web' },
      { kind: 'config', target: 'web' },
      { kind: 'resolve', target: 'web/0' },
      { kind: 'remove-unit', target: 'db/1,web/2' },
      { kind: 'integrate', target: 'web:db kv:db' },
      { kind: 'remove-integration', target: 'kv:db web:db' },
      { kind: 'destroy-model', target: 'default' },
      { kind: 'integrate', target: 'kv:db default.web:db', model_name: 'other' },
    ];
    const no = [
      { kind: 'deploy', target: 'webby' },
      { kind: 'resolve', target: 'webby/0' },
      { kind: 'remove-unit', target: 'db/1,webx/2' },
      { kind: 'integrate', target: 'kv:db other.web:db' },
      { kind: 'add-machine', target: 'machine/web' },
      { kind: 'integrate', target: 'kv:db default.webby:db', model_name: 'other' },
      { kind: 'integrate', target: 'kv:db web:db', model_name: 'other' },
      { kind: 'deploy', target: 'web', model_name: 'other' },
    ];
    for (const op of yes) assert.equal(operationConcerns({ model_name: m, ...op }, m, 'web'), true, JSON.stringify(op));
    for (const op of no) assert.equal(operationConcerns({ model_name: m, ...op }, m, 'web'), false, JSON.stringify(op));
    // the whole model: every operation of it, and integrations of other models reaching into it
    assert.equal(operationConcerns({ kind: 'add-machine', target: 'machine/0', model_name: m }, m), true);
    assert.equal(operationConcerns({ kind: 'integrate', target: 'a:x default.b:y', model_name: 'o' }, m), true);
    assert.equal(operationConcerns({ kind: 'integrate', target: 'a:x defaulty.b:y', model_name: 'o' }, m), false);
    assert.equal(operationConcerns({ kind: 'deploy', target: 'default.b', model_name: 'o' }, m), false);
  });

  test('parseDuration: units and plain seconds; nonsense refused with exit 2', () => {
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('5m'), 300_000);
    assert.equal(parseDuration('1h30m'), 5_400_000);
    assert.equal(parseDuration('250ms'), 250);
    assert.equal(parseDuration('45'), 45_000);
    assert.equal(parseDuration('1.5'), 1500);
    for (const bad of ['', 'soon', '5 m', '-3', '5d', 'm5']) {
      assert.throws(
        () => parseDuration(bad),
        (e: Error & { exitCode?: number }) => e.exitCode === 2 && e.message.includes('--timeout'),
        bad,
      );
    }
  });
});

describe('wait on a real controller', () => {
  let c: TestController;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const timed = async <T>(fn: () => Promise<T>): Promise<[T, number]> => {
    const t0 = Date.now();
    const r = await fn();
    return [r, Date.now() - t0];
  };
  let modelUuid = '';

  before(async () => {
    c = await startTestController();
    // the default model is made by an operation at start: let it finish
    await waitFor('the default model', async () => {
      const ops = await c.store.db
        .selectFrom('operations')
        .select('state')
        .where('model_name', '=', 'default')
        .execute();
      return ops.length > 0 && ops.every((o) => o.state === 'succeeded');
    });
    modelUuid = (
      await c.store.db.selectFrom('models').select('uuid').where('name', '=', 'default').executeTakeFirstOrThrow()
    ).uuid;
  });
  after(async () => {
    await c?.stop();
  });

  test('a settled model: wait returns at once, exit 0', async () => {
    const [r, ms] = await timed(() => cli('wait'));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'model default is settled\n');
    assert.equal(r.stderr, '', 'nothing to wait for: no progress shown');
    assert.ok(ms < 5_000, `took ${ms} ms`);
    const [api, apiMs] = await timed(() => c.api('GET', '/v1/models/default/wait?timeout=30'));
    assert.equal(api.status, 200);
    assert.deepEqual(api.body, { settled: true, errors: [], busy: [] });
    assert.ok(apiMs < 2_000, `took ${apiMs} ms`);
  });

  test('bad input: timeout out of range, unknown model or application, bad --timeout', async () => {
    for (const t of ['100', '-1', '61', 'soon']) {
      const r = await c.api('GET', `/v1/models/default/wait?timeout=${t}`);
      assert.equal(r.status, 400, t);
      assert.match(r.body.message, /querystring\.timeout/, t);
      assert.ok(
        r.body.details.some((d: { field: string }) => d.field === 'querystring.timeout'),
        JSON.stringify(r.body),
      );
    }
    const extra = await c.api('GET', '/v1/models/default/wait?until=never');
    assert.equal(extra.status, 400);
    assert.match(extra.body.message, /until/);
    const noApp = await c.api('GET', '/v1/models/default/wait?app=nope');
    assert.equal(noApp.status, 404);
    assert.match(noApp.body.message, /application "nope" not found/);
    const noModel = await c.api('GET', '/v1/models/nomodel/wait');
    assert.equal(noModel.status, 404);
    assert.match(noModel.body.message, /model "nomodel" not found/);

    const badFlag = await cli('wait', '--timeout', 'soon');
    assert.equal(badFlag.code, 2);
    assert.match(badFlag.stderr, /invalid --timeout "soon"/);
    const cliNoApp = await cli('wait', '--app', 'nope');
    assert.equal(cliNoApp.code, 1);
    assert.match(cliNoApp.stderr, /ERROR application "nope" not found/);
    const cliNoModel = await cli('wait', '-m', 'nomodel');
    assert.equal(cliNoModel.code, 1);
    assert.match(cliNoModel.stderr, /ERROR model "nomodel" not found/);
  });

  test('a busy model: wait returns only once the deploy is done and every unit is idle and active', async () => {
    const d = await cli('deploy', counterCharm, 'web', '-n', '2', '--config', 'sleep=4', '--no-wait');
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /operation \d+ \(deploy\) started/);
    const [r, ms] = await timed(() => cli('wait', '--timeout', '3m'));
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'model default is settled\n');
    assert.ok(ms >= 3_000, `wait returned after ${ms} ms, before install's 4 s sleep could have ended`);
    // progress was shown while it waited: what was busy
    assert.match(r.stderr, /^waiting for model default to settle:$/m);
    assert.match(r.stderr, /operation \d+ \(deploy\)|web\/[01]: /);
    // the moment wait returned, everything is done
    const [ops, s] = await Promise.all([
      c.store.db
        .selectFrom('operations')
        .select(['id', 'state'])
        .where('model_name', '=', 'default')
        .where('state', 'in', ['pending', 'running'])
        .execute(),
      c.api('GET', '/v1/models/default/status'),
    ]);
    assert.deepEqual(ops, []);
    const units = s.body.applications.web.units;
    assert.deepEqual(Object.keys(units).sort(), ['web/0', 'web/1']);
    for (const [name, u] of Object.entries<any>(units)) {
      assert.equal(u['workload-status'].current, 'active', name);
      assert.equal(u['juju-status'].current, 'idle', name);
      const view = await c.client.workflow
        .getHandle(unitAgentWorkflowId('default', modelUuid, name))
        .query(unitAgentQuery);
      assert.equal(view.current, null, name);
      assert.deepEqual(view.queue, [], name);
      assert.equal(view.failure, null, name);
      assert.ok(!view.relationsPending, name);
    }
    // --format json prints the answer
    const j = await cli('wait', '--app', 'web', '--format', 'json');
    assert.equal(j.code, 0, j.stderr);
    assert.deepEqual(JSON.parse(j.stdout), { settled: true, errors: [], busy: [] });
  });

  test('a timeout while busy: the long-poll answers settled:false with what is busy; the CLI exits 1 naming it', async () => {
    const d = await cli('deploy', counterCharm, 'slow', '--config', 'sleep=20', '--no-wait');
    assert.equal(d.code, 0, d.stderr);
    const [r, ms] = await timed(() => c.api('GET', '/v1/models/default/wait?app=slow&timeout=1'));
    assert.equal(r.status, 200);
    assert.equal(r.body.settled, false);
    assert.deepEqual(r.body.errors, []);
    assert.ok(r.body.busy.length > 0, JSON.stringify(r.body));
    assert.ok(
      r.body.busy.some((b: { what: string }) => /^operation \d+ \(deploy\)$/.test(b.what) || b.what === 'slow/0'),
      JSON.stringify(r.body.busy),
    );
    assert.ok(ms >= 900 && ms < 5_000, `long-poll of 1 s took ${ms} ms`);

    // the other application is settled meanwhile: --app looks only at its own
    const [web, webMs] = await timed(() => cli('wait', '--app', 'web'));
    assert.equal(web.code, 0, web.stderr);
    assert.equal(web.stdout, 'application "web" of model default is settled\n');
    assert.ok(webMs < 5_000, `took ${webMs} ms`);

    const [t, tMs] = await timed(() => cli('wait', '--timeout', '2s'));
    assert.equal(t.code, 1, t.stdout);
    assert.match(t.stderr, /ERROR model default has not settled after 2s; still busy: /);
    assert.match(t.stderr, /still busy: .*(operation \d+ \(deploy\)|slow\/0)/);
    assert.ok(tMs >= 2_000 && tMs < 10_000, `--timeout 2s took ${tMs} ms`);
    const tj = await cli('wait', '--app', 'slow', '--timeout', '1', '--format', 'json');
    assert.equal(tj.code, 1);
    const answer = JSON.parse(tj.stdout);
    assert.equal(answer.settled, false);
    assert.ok(answer.busy.length > 0);

    // and it does settle, once install's sleep is over
    const done = await cli('wait', '--app', 'slow', '--timeout', '3m');
    assert.equal(done.code, 0, done.stderr);
    const s = await c.api('GET', '/v1/models/default/status');
    assert.equal(s.body.applications.slow.units['slow/0']['workload-status'].current, 'active');
  });

  test('a unit in error: wait fails fast, naming every unit in error', async () => {
    const d = await cli('deploy', counterCharm, 'broken', '-n', '2', '--config', 'fail-hook=install', '--no-wait');
    assert.equal(d.code, 0, d.stderr);
    const [r, ms] = await timed(() => cli('wait', '--timeout', '5m'));
    assert.equal(r.code, 1, r.stdout);
    // at once: the first unit that failed is named (its sibling may not have failed yet)
    assert.match(r.stderr, /^ERROR unit broken\/[01] is in error: hook failed: "install"/m);
    assert.equal(r.stdout, '');
    // nowhere near its 5 minutes, nor waiting for the automatic retries
    assert.ok(ms < 60_000, `took ${ms} ms`);

    // once both failed, both are named, even while one of them runs an automatic retry
    await waitFor('both broken units in error', async () => {
      const rows = await c.store.db
        .selectFrom('units')
        .select('workload_status')
        .where('model_uuid', '=', modelUuid)
        .where('application', '=', 'broken')
        .execute();
      return rows.length === 2 && rows.every((u) => u.workload_status === 'error');
    });
    const both = await cli('wait', '--app', 'broken');
    assert.equal(both.code, 1);
    assert.match(both.stderr, /^ERROR unit broken\/0 is in error: hook failed: "install"/m);
    assert.match(both.stderr, /^ERROR unit broken\/1 is in error: hook failed: "install"/m);

    const j = await cli('wait', '--app', 'broken', '--format', 'json');
    assert.equal(j.code, 1);
    const answer = JSON.parse(j.stdout);
    assert.equal(answer.settled, false);
    assert.deepEqual(answer.errors.map((e: { unit: string }) => e.unit).sort(), ['broken/0', 'broken/1']);
    for (const e of answer.errors) assert.match(e.message, /hook failed: "install"/);

    // the API answers errors at once, not after its timeout
    const [api, apiMs] = await timed(() => c.api('GET', '/v1/models/default/wait?timeout=30'));
    assert.equal(api.status, 200);
    assert.equal(api.body.settled, false);
    assert.equal(api.body.errors.length, 2);
    assert.ok(apiMs < 5_000, `took ${apiMs} ms`);

    // the settled applications are still settled on their own
    const web = await cli('wait', '--app', 'web', '--timeout', '30s');
    assert.equal(web.code, 0, web.stderr);
  });
});
