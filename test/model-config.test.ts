// model-config: the update-status interval is a model setting (5 minutes by
// default); running agents follow a change at once, new units start with it.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { waitFor } from './helpers/wait.ts';

const trivial = join(projectRoot, 'test', 'fixtures', 'charms', 'trivial');

describe('model-config: update-status interval', () => {
  let c: TestController;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const updates = async (unit: string) =>
    (
      await c.store.db
        .selectFrom('hook_runs')
        .select('hook')
        .where('unit', '=', unit)
        .where('hook', '=', 'update-status')
        .execute()
    ).length;

  before(async () => {
    c = await startTestController();
    const d = await cli('deploy', trivial, 'tick');
    assert.equal(d.code, 0, d.stderr);
  });
  after(async () => {
    await c?.stop();
  });

  test('5 minutes by default; shown with its source', async () => {
    const r = await cli('model-config', '--format', 'json');
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout)['update-status-hook-interval'], {
      value: '5m',
      default: '5m',
      description: 'how often every unit runs update-status (a duration: 30s, 5m, 1h)',
      source: 'default',
    });
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(await updates('tick/0'), 0, 'no update-status within seconds at the default');
  });

  test('a short interval reaches the running agent at once; new units start with it; reset goes back', async () => {
    const r = await cli('model-config', 'update-status-hook-interval=2s');
    assert.equal(r.code, 0, r.stderr);
    await waitFor('update-status twice', async () => (await updates('tick/0')) >= 2, 20_000);
    assert.equal((await cli('add-unit', 'tick')).code, 0);
    await waitFor('update-status on the new unit', async () => (await updates('tick/1')) >= 2, 20_000);
    const shown = JSON.parse((await cli('model-config', '--format', 'json')).stdout)['update-status-hook-interval'];
    assert.equal(shown.value, '2s');
    assert.equal(shown.source, 'model');
    assert.equal((await cli('model-config', '--reset', 'update-status-hook-interval')).code, 0);
    await new Promise((r) => setTimeout(r, 2500));
    const before = await updates('tick/0');
    await new Promise((r) => setTimeout(r, 5000));
    assert.equal(await updates('tick/0'), before, 'back to 5 minutes: no more update-status');
  });

  test('bad values are refused with 400 naming the key, and nothing changes', async () => {
    for (const [set, why] of [
      [{ 'update-status-hook-interval': 'soon' }, /must be a duration from 1s to 24h/],
      [{ 'update-status-hook-interval': '0s' }, /must be a duration/],
      [{ 'update-status-hook-interval': '48h' }, /must be a duration/],
      [{ 'no-such-key': '1' }, /unknown model setting "no-such-key"/],
    ] as const) {
      const res = await c.api('PUT', '/v1/models/default/config', { set });
      assert.equal(res.status, 400, JSON.stringify(res.body));
      assert.match(res.body.message, why);
      assert.match(JSON.stringify(res.body.details), /body\.set\./);
    }
    const r = await cli('model-config', 'update-status-hook-interval=forever');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /update-status-hook-interval must be a duration/);
    assert.equal(
      JSON.parse((await cli('model-config', '--format', 'json')).stdout)['update-status-hook-interval'].source,
      'default',
    );
  });
});
