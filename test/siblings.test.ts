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
      'sib/1': [false, 'goal=3'],
      'sib/2': [false, 'goal=3'],
    });
  });
});
