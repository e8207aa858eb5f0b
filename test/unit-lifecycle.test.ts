// A unit's life across operations on the local cloud: redeploys of the same name,
// resolves racing automatic retries, config sent while a deploy provisions, and
// destroy-model ending everything the model ran.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { resolveUpdate, unitAgentQuery, unitAgentWorkflowId } from '../workflows/messages.ts';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { waitFor } from './helpers/wait.ts';

const counterCharm = join(projectRoot, 'test', 'fixtures', 'charms', 'counter');

describe('unit lifecycle', () => {
  let c: TestController;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const status = async (model = 'default') => JSON.parse((await cli('status', '-m', model, '--format', 'json')).stdout);

  /** The unit's directory on its machine. */
  async function unitDir(unit: string, model = 'default'): Promise<string> {
    const row = await c.store.db
      .selectFrom('units')
      .innerJoin('machines', (j) =>
        j.onRef('machines.model_uuid', '=', 'units.model_uuid').onRef('machines.id', '=', 'units.machine_id'),
      )
      .innerJoin('models', 'models.uuid', 'units.model_uuid')
      .select('machines.root_dir')
      .where('models.name', '=', model)
      .where('units.name', '=', unit)
      .executeTakeFirstOrThrow();
    const [app, n] = unit.split('/');
    return join(row.root_dir, 'units', `${app}-${n}`);
  }
  const hooksRun = async (unit: string, model = 'default') =>
    readFileSync(join(await unitDir(unit, model), 'counter', 'hooks.log'), 'utf8')
      .trim()
      .split('\n');

  before(async () => {
    c = await startTestController();
  });
  after(async () => {
    await c?.stop();
  });

  test('an application removed and deployed again under the same name runs all its hooks again', async () => {
    const first = await cli('deploy', counterCharm, 'again');
    assert.equal(first.code, 0, first.stderr);
    assert.deepEqual(await hooksRun('again/0'), ['install', 'leader-elected', 'config-changed', 'start']);
    const removed = await cli('remove-application', 'again');
    assert.equal(removed.code, 0, removed.stderr);
    assert.equal(
      (await c.store.db.selectFrom('hook_runs').select('unit').where('unit', '=', 'again/0').execute()).length,
      0,
      "the unit's hook runs went with it",
    );
    const second = await cli('deploy', counterCharm, 'again');
    assert.equal(second.code, 0, second.stderr);
    // the new unit's own files: every hook really ran on it
    assert.deepEqual(await hooksRun('again/0'), ['install', 'leader-elected', 'config-changed', 'start']);
    const runs = await c.store.db
      .selectFrom('hook_runs')
      .select(['hook', 'context_id', 'exit_code'])
      .where('unit', '=', 'again/0')
      .execute();
    assert.equal(runs.length, 4, JSON.stringify(runs));
    assert.equal((await cli('remove-application', 'again')).code, 0);
  });

  test('resolve: refused with the reason when the unit is not in error', async () => {
    const d = await cli('deploy', counterCharm, 'calm');
    assert.equal(d.code, 0, d.stderr);
    const agent = c.client.workflow.getHandle(unitAgentWorkflowId('default', 'calm/0'));
    await assert.rejects(agent.executeUpdate(resolveUpdate, { args: [{ retry: true }] }), (err: Error) => {
      assert.match(String((err as { cause?: Error }).cause?.message ?? err.message), /calm\/0 is not in error/);
      return true;
    });
    const api = await c.api('POST', '/v1/models/default/units/calm/0/resolve', { retry: true });
    assert.equal(api.status, 409);
    assert.match(api.body.message, /not in an error state/);
    assert.equal((await cli('remove-application', 'calm')).code, 0);
  });

  test('resolve during an automatic retry is not lost: a skip waits for the attempt, then skips at once', async () => {
    // install sleeps 8 s and fails, every time
    const d = await cli('deploy', counterCharm, 'retrying', '--config', 'fail-hook=install', '--config', 'sleep=8');
    assert.equal(d.code, 1);
    const agent = c.client.workflow.getHandle(unitAgentWorkflowId('default', 'retrying/0'));
    // the automatic retry (5 s after the failure) is running install again
    await waitFor(
      'the automatic retry of install running',
      async () => {
        const v = await agent.query(unitAgentQuery);
        return v.failure !== null && v.current === 'install';
      },
      30_000,
    );
    const retry = await cli('resolve', 'retrying/0');
    assert.equal(retry.code, 0, retry.stderr);
    assert.match(retry.stdout, /Resolved retrying\/0: the install hook of retrying\/0 is being retried now/);
    const skip = await c.api('POST', '/v1/models/default/units/retrying/0/resolve', { retry: false });
    assert.equal(skip.status, 202, JSON.stringify(skip.body));
    const op = await c.waitOperation(skip.body.operation.id, 60_000);
    assert.equal(op.state, 'succeeded', op.error);
    assert.equal(op.progress.outcome, 'skipped');
    const skippedAt = Date.now();
    // the skip took effect as the attempt failed, not after the next backoff (10 s)
    await waitFor(
      'retrying/0 active after the skip',
      async () => (await status()).applications.retrying.units['retrying/0']['workload-status'].current === 'active',
      30_000,
    );
    assert.ok(Date.now() - skippedAt < 8_000, `active ${Date.now() - skippedAt} ms after the skip`);
    assert.deepEqual((await hooksRun('retrying/0')).slice(-3), ['leader-elected', 'config-changed', 'start']);
    assert.equal((await cli('remove-application', 'retrying')).code, 0);
  });
});
