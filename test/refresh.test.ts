// Rolling refresh on the local cloud: batches with the leader last, a health gate
// that rolls every refreshed unit back by itself, a unit stuck on a failed hook
// rolled back too, pause/resume/abort, dry run, and what is refused up front.
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { settle } from './helpers/relations.ts';
import { waitFor } from './helpers/wait.ts';

const source = join(projectRoot, 'test', 'fixtures', 'charms', 'versioned');

describe('refresh', () => {
  let c: TestController;
  let dir: string;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  /** A copy of the fixture as another revision: its version and behaviour. */
  const revision = (version: string, behaviour: string, edit?: (charmDir: string) => void) => {
    const d = join(dir, `${version}-${behaviour}`);
    cpSync(source, d, { recursive: true, verbatimSymlinks: true });
    writeFileSync(join(d, 'VERSION'), `${version}\n`);
    writeFileSync(join(d, 'behaviour'), `${behaviour}\n`);
    edit?.(d);
    return d;
  };
  const units = async () => {
    const s = JSON.parse((await ok('status', '--format', 'json')).stdout);
    return s.applications.app as {
      'charm-rev': number;
      units: Record<string, { 'workload-status': { current: string; message?: string }; leader?: boolean }>;
    };
  };
  const messages = async () =>
    Object.fromEntries(
      Object.entries((await units()).units).map(([u, s]) => [
        u,
        `${s['workload-status'].current} ${s['workload-status'].message ?? ''}`,
      ]),
    );
  const hookStarts = async (hook: string) =>
    (
      await c.store.db
        .selectFrom('hook_runs')
        .select(['unit', 'started_at'])
        .where('hook', '=', hook)
        .orderBy('started_at')
        .execute()
    ).map((r) => r.unit);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cf-refresh-'));
    c = await startTestController();
    await ok('deploy', source, 'app', '-n', '3');
    await settle(c, ['default']);
  });
  after(async () => {
    await c?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('dry run prints the plan, leader last, and changes nothing', async () => {
    const r = await ok(
      'refresh',
      'app',
      '--path',
      revision('v2', 'good'),
      '--max-unavailable',
      '2',
      '--dry-run',
      '--format',
      'json',
    );
    const plan = JSON.parse(r.stdout);
    assert.deepEqual(plan.batches, [['app/1', 'app/2'], ['app/0']]);
    assert.deepEqual(plan.hooks, ['upgrade-charm', 'config-changed']);
    assert.equal(plan.from, 1);
    assert.equal(plan.to, 2);
    const text = await ok('refresh', 'app', '--revision', '2', '--dry-run');
    assert.match(text.stdout, /1\. app\/1: upgrade-charm → config-changed/);
    assert.match(text.stdout, /dry run: nothing changed/);
    assert.equal((await units())['charm-rev'], 1);
    assert.deepEqual(await hookStarts('upgrade-charm'), []);
  });

  test('a good revision rolls out batch by batch, the leader last', async () => {
    const r = await ok('refresh', 'app', '--revision', '2', '--max-unavailable', '2');
    assert.match(r.stdout, /Refreshed "app" to revision 2/);
    assert.match(r.stderr, /batch 1\/2 \(app\/1, app\/2\)/);
    assert.equal((await units())['charm-rev'], 2);
    assert.deepEqual(await messages(), {
      'app/0': 'active running v2',
      'app/1': 'active running v2',
      'app/2': 'active running v2',
    });
    const upgrades = await hookStarts('upgrade-charm');
    assert.equal(upgrades.at(-1), 'app/0', 'the leader was refreshed last');
  });

  test('a revision that fails its health gate rolls every refreshed unit back by itself', async () => {
    const r = await cli('refresh', 'app', '--path', revision('v3', 'blocked'), '--gate-timeout', '5');
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /health gate failed at batch 1\/3 \(app\/1\): not active within 5s: app\/1 is blocked \(v3 is broken\)/,
    );
    assert.match(r.stderr, /rolled back app\/1: every unit is back on revision 2 and active/);
    assert.equal((await units())['charm-rev'], 2);
    assert.deepEqual(await messages(), {
      'app/0': 'active running v2',
      'app/1': 'active running v2',
      'app/2': 'active running v2',
    });
    // the other units never ran the bad revision
    const upgraded = await c.store.db
      .selectFrom('log_entries')
      .select('entity')
      .where('message', '=', 'HOOK upgrade-charm v3')
      .execute();
    assert.deepEqual(
      upgraded.map((u) => u.entity),
      ['app/1'],
    );
  });

  test('a unit stuck on a failed upgrade-charm is rolled back too, not left in error', async () => {
    const r = await cli('refresh', 'app', '--path', revision('v4', 'fail-upgrade'), '--max-unavailable', '2');
    assert.notEqual(r.code, 0);
    assert.match(
      r.stderr,
      /health gate failed at batch 1\/2 \(app\/1, app\/2\): unit app\/[12]: hook failed: "upgrade-charm"/,
    );
    assert.match(r.stderr, /every unit is back on revision 2 and active/);
    assert.deepEqual(await messages(), {
      'app/0': 'active running v2',
      'app/1': 'active running v2',
      'app/2': 'active running v2',
    });
    await settle(c, ['default']);
  });

  test('a probe action is part of the gate', async () => {
    const r = await cli('refresh', 'app', '--path', revision('v5', 'probe-fail'), '--probe', 'probe');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /probe probe on app\/1 failed: v5 probe failed/);
    assert.deepEqual(Object.values(await messages()), ['active running v2', 'active running v2', 'active running v2']);
    await settle(c, ['default']);
  });

  test('pause after the first batch, a second refresh refused with 409, resume; abort rolls back', async () => {
    const v6 = revision('v6', 'good');
    const run = runCli(['refresh', 'app', '--path', v6, '--pause-after-first'], { CHARMFLOW_DATA_DIR: c.dataDir });
    const op = await waitFor('the refresh paused', async () => {
      const ops = (await c.api('GET', '/v1/operations?limit=5')).body.operations;
      return ops.find(
        (o: { kind: string; progress: { paused?: boolean } }) => o.kind === 'refresh' && o.progress.paused,
      );
    });
    assert.deepEqual(await messages(), {
      'app/0': 'active running v2',
      'app/1': 'active running v6',
      'app/2': 'active running v2',
    });
    const second = await c.api('POST', '/v1/models/default/applications/app/refresh', { revision: 2 });
    assert.equal(second.status, 409);
    assert.match(second.body.message, new RegExp(`operation ${op.id} .* is running: one refresh at a time`));
    await ok('resume-operation', String(op.id));
    const done = await run;
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual(Object.values(await messages()), ['active running v6', 'active running v6', 'active running v6']);

    // pause again, then abort: the first batch goes back
    const back = runCli(['refresh', 'app', '--path', revision('v7', 'good'), '--pause-after-first'], {
      CHARMFLOW_DATA_DIR: c.dataDir,
    });
    const op2 = await waitFor('the second refresh paused', async () => {
      const ops = (await c.api('GET', '/v1/operations?limit=5')).body.operations;
      return ops.find(
        (o: { id: number; kind: string; progress: { paused?: boolean } }) =>
          o.kind === 'refresh' && o.id !== op.id && o.progress.paused,
      );
    });
    await ok('abort-operation', String(op2.id));
    const aborted = await back;
    assert.notEqual(aborted.code, 0);
    assert.match(
      aborted.stderr,
      /aborted by request while paused; rolled back app\/1: every unit is back on revision \d+ and active/,
    );
    assert.deepEqual(Object.values(await messages()), ['active running v6', 'active running v6', 'active running v6']);
  });

  test('refused before anything changes: unknown revision 404, an endpoint in use dropped 400, same revision 400', async () => {
    const unknown = await c.api('POST', '/v1/models/default/applications/app/refresh', { revision: 99 });
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.message, /versioned:99/);
    const noRing = revision('v8', 'good', (d) => {
      const meta = readFileSync(join(d, 'metadata.yaml'), 'utf8').replace(
        /peers:\n {2}ring:\n {4}interface: versioned-ring\n/,
        '',
      );
      writeFileSync(join(d, 'metadata.yaml'), meta);
    });
    const r = await cli('refresh', 'app', '--path', noRing);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /drops endpoint "ring", which is in use/);
    const current = (await units())['charm-rev'];
    const same = await c.api('POST', '/v1/models/default/applications/app/refresh', { revision: current });
    assert.equal(same.status, 400);
    assert.match(same.body.message, /already runs versioned revision/);
    assert.equal((await units())['charm-rev'], current);
  });
});
