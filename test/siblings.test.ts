// What a unit sees of its application's other units: the leader their statuses
// (status-get --application), every unit their names (goal-state). Only the leader's
// hook context carries the statuses, so a big application's hooks stay small.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';

describe('siblings in the hook context', () => {
  let c: TestController;
  before(async () => {
    c = await startTestController();
  });
  after(async () => {
    await c?.stop();
  });

  test('the leader counts 3 units in status-get --application; every unit counts 3 in goal-state', async () => {
    const cli = (...args: string[]) => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
    const d = await cli('deploy', join(projectRoot, 'test', 'fixtures', 'charms', 'siblings'), 'sib', '-n', '3');
    assert.equal(d.code, 0, d.stderr);
    const st = await cli('status', '--format', 'json');
    assert.equal(st.code, 0, st.stderr);
    const units = JSON.parse(st.stdout).applications.sib.units as Record<
      string,
      { leader?: boolean; 'workload-status': { message: string } }
    >;
    const seen = Object.fromEntries(
      Object.entries(units).map(([n, u]) => [n, [u.leader === true, u['workload-status'].message]]),
    );
    // the deploy's step log, as the CLI prints it: every step once, numbered, in order
    const op = await c.store.db
      .selectFrom('operations')
      .select('progress')
      .where('kind', '=', 'deploy')
      .executeTakeFirstOrThrow();
    const steps = (op.progress as { steps: { n: number; step: string }[] }).steps;
    assert.deepEqual(
      steps.map((s) => s.n),
      steps.map((_, i) => i + 1),
    );
    const names = steps.map((s) => s.step.replace(/ \(\d+\/3 units\)$/, ''));
    assert.deepEqual(
      [...new Set(names)],
      [
        'allocating machines',
        "provisioning 3 machine(s) and starting their units' agents",
        'running install, leader, config-changed and start hooks',
      ],
    );
    assert.match(steps.at(-1)?.step ?? '', /\(3\/3 units\)$/);
    assert.deepEqual(seen, {
      'sib/0': [true, 'leader app-units=3 goal=3'],
      'sib/1': [false, 'goal=3 sib/0,sib/1,sib/2'],
      'sib/2': [false, 'goal=3 sib/0,sib/1,sib/2'],
    });
  });

  test('goal-state follows the units added and removed, even when their count comes back to what it was', async () => {
    const cli = (...args: string[]) => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
    const messages = async () => {
      const st = await cli('status', '--format', 'json');
      assert.equal(st.code, 0, st.stderr);
      const units = JSON.parse(st.stdout).applications.sib.units as Record<
        string,
        { 'workload-status': { message: string } }
      >;
      return Object.fromEntries(Object.entries(units).map(([n, u]) => [n, u['workload-status'].message]));
    };
    const added = await cli('add-unit', 'sib', '-n', '2');
    assert.equal(added.code, 0, added.stderr);
    const five = 'goal=5 sib/0,sib/1,sib/2,sib/3,sib/4';
    const afterAdd = await messages();
    assert.equal(afterAdd['sib/3'], five);
    assert.equal(afterAdd['sib/4'], five);
    // one out, one in: five units again, but another five
    const removed = await cli('remove-unit', 'sib/1');
    assert.equal(removed.code, 0, removed.stderr);
    const again = await cli('add-unit', 'sib');
    assert.equal(again.code, 0, again.stderr);
    const afterSwap = await messages();
    assert.equal(afterSwap['sib/1'], undefined);
    assert.equal(afterSwap['sib/5'], 'goal=5 sib/0,sib/2,sib/3,sib/4,sib/5');
  });
});
