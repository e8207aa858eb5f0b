// A secret config value reaches a hook through its context file on the machine;
// once the hooks are over, no file under the machine's root may still hold it.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';

const counterCharm = join(projectRoot, 'test', 'fixtures', 'charms', 'counter');

describe('hook contexts on machines', () => {
  let c: TestController;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });

  before(async () => {
    c = await startTestController();
  });
  after(async () => {
    await c?.stop();
  });

  test('after successful and failed hooks no file under the machine root holds the secret', async () => {
    const secret = `tok-${randomBytes(12).toString('hex')}`;
    const ok = await cli('deploy', counterCharm, 'kept', '--config', `secret-token=${secret}`);
    assert.equal(ok.code, 0, ok.stderr);
    const failed = await cli(
      'deploy',
      counterCharm,
      'failing',
      '--config',
      `secret-token=${secret}`,
      '--config',
      'fail-hook=install',
    );
    assert.equal(failed.code, 1, 'the second deploy fails in install');
    const roots = await c.store.db
      .selectFrom('units')
      .innerJoin('machines', (j) =>
        j.onRef('machines.model_uuid', '=', 'units.model_uuid').onRef('machines.id', '=', 'units.machine_id'),
      )
      .select('machines.root_dir')
      .where('units.name', 'in', ['kept/0', 'failing/0'])
      .execute();
    assert.equal(roots.length, 2);
    for (const { root_dir: root } of roots) {
      // the hooks did run here: their execution dirs (results, events) remain
      const dirs = spawnSync('find', [root, '-path', '*/.hooks/*', '-name', 'result.json'], { encoding: 'utf8' });
      assert.ok(dirs.stdout.trim().length > 0, `no hook results under ${root}`);
      const grep = spawnSync('grep', ['-rl', '--', secret, root], { encoding: 'utf8' });
      assert.equal(grep.stdout, '', `files under ${root} still holding the secret:\n${grep.stdout}`);
      assert.equal(grep.status, 1, grep.stderr);
    }
  });
});
