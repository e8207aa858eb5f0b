// A unit's life across operations on the local cloud: redeploys of the same name,
// resolves racing automatic retries, config sent while a deploy provisions, and
// destroy-model ending everything the model ran.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
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
});
