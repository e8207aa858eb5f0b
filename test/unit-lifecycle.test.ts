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
import { httpText, waitFor } from './helpers/wait.ts';

const counterCharm = join(projectRoot, 'test', 'fixtures', 'charms', 'counter');
const httpCharm = join(projectRoot, 'examples', 'charms', 'http-hooks');
const daemonCharm = join(projectRoot, 'test', 'fixtures', 'charms', 'daemon');

/** Whether the process runs (an unreaped zombie does not). */
function alive(pid: number): boolean {
  try {
    return !/^\S+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

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
  const modelUuid = async (name: string) =>
    (await c.store.db.selectFrom('models').select('uuid').where('name', '=', name).executeTakeFirstOrThrow()).uuid;
  const agentOf = async (unit: string, model = 'default') =>
    c.client.workflow.getHandle(unitAgentWorkflowId(model, await modelUuid(model), unit));
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
      .orderBy('started_at')
      .execute();
    // the counter charm's peer relation brings relation-created right after install
    assert.deepEqual(
      runs.map((r) => r.hook),
      ['install', 'replicas-relation-created', 'leader-elected', 'config-changed', 'start'],
      JSON.stringify(runs),
    );
    assert.equal((await cli('remove-application', 'again')).code, 0);
  });

  test('resolve: refused with the reason when the unit is not in error', async () => {
    const d = await cli('deploy', counterCharm, 'calm');
    assert.equal(d.code, 0, d.stderr);
    const agent = await agentOf('calm/0');
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
    const agent = await agentOf('retrying/0');
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

  test('a retry asked for during an automatic retry runs the hook again at once if that attempt fails', async () => {
    const d = await cli(
      'deploy',
      counterCharm,
      'eager',
      '--config',
      'fail-hook=install',
      '--config',
      'sleep=4',
      '--no-wait',
    );
    assert.equal(d.code, 0, d.stderr);
    const agent = await waitFor('the agent of eager/0', async () => {
      const a = await agentOf('eager/0');
      return (await a.describe().then(
        () => true,
        () => false,
      ))
        ? a
        : null;
    });
    const view = () => agent.query(unitAgentQuery);
    await waitFor(
      'the automatic retry running',
      async () => {
        const v = await view();
        return v.failure?.attempts === 1 && v.current === 'install';
      },
      30_000,
    );
    const r = await c.api('POST', '/v1/models/default/units/eager/0/resolve', { retry: true });
    assert.equal(r.status, 202);
    const op = await c.waitOperation(r.body.operation.id, 30_000);
    assert.equal(op.progress.outcome, 'retrying');
    assert.match(op.progress.step, /again at once if this attempt fails/);
    await waitFor('the second attempt failed', async () => (await view()).failure?.attempts === 2, 30_000);
    const failedAt = Date.now();
    // not after the 10 s backoff: at once
    await waitFor('the third attempt running', async () => (await view()).current === 'install', 30_000);
    assert.ok(Date.now() - failedAt < 4_000, `third attempt began ${Date.now() - failedAt} ms after the second failed`);
    assert.equal((await cli('remove-application', 'eager', '--force')).code, 0);
  });

  test('destroy-model ends what its units run, their agents and machines; the name is free at once', async () => {
    const add = await cli('add-model', 'doomed');
    assert.equal(add.code, 0, add.stderr);
    const d = await cli('deploy', daemonCharm, 'sleeper', '-n', '2', '-m', 'doomed');
    assert.equal(d.code, 0, d.stderr);
    const uuid = await modelUuid('doomed');
    const pids = await Promise.all(
      ['sleeper/0', 'sleeper/1'].map(async (u) =>
        Number(readFileSync(join(await unitDir(u, 'doomed'), 'daemon.pid'), 'utf8')),
      ),
    );
    for (const pid of pids) assert.ok(alive(pid), `workload ${pid} runs`);
    const agents = await Promise.all(['sleeper/0', 'sleeper/1'].map((u) => agentOf(u, 'doomed')));
    const machinesDir = join(c.dataDir, 'machines', uuid);
    assert.ok(existsSync(machinesDir));

    const destroyed = await cli('destroy-model', 'doomed');
    assert.equal(destroyed.code, 0, destroyed.stderr);
    for (const pid of pids) await waitFor(`workload ${pid} gone`, async () => !alive(pid), 10_000);
    for (const a of agents) assert.notEqual((await a.describe()).status.name, 'RUNNING', a.workflowId);
    assert.ok(!existsSync(machinesDir), 'machine dirs cleaned');
    for (const table of ['units', 'machines', 'applications', 'hook_runs'] as const) {
      const left = await c.store.db.selectFrom(table).select('model_uuid').where('model_uuid', '=', uuid).execute();
      assert.equal(left.length, 0, table);
    }
    // the stop and remove hooks ran through the agents before the kill
    const ran = await c.store.db.selectFrom('operations').selectAll().where('kind', '=', 'destroy-model').execute();
    assert.equal(ran.at(-1)?.state, 'succeeded');

    // a model of the same name deploys at once
    assert.equal((await cli('add-model', 'doomed')).code, 0);
    const again = await cli('deploy', daemonCharm, 'sleeper', '-m', 'doomed');
    assert.equal(again.code, 0, again.stderr);
    const pid = Number(readFileSync(join(await unitDir('sleeper/0', 'doomed'), 'daemon.pid'), 'utf8'));
    assert.ok(alive(pid));
    assert.equal((await cli('destroy-model', 'doomed')).code, 0);
    await waitFor('the second workload gone', async () => !alive(pid), 10_000);
  });

  test('config sent while the deploy still provisions waits for the agent and runs with the new value', async () => {
    const upload = await cli('upload', httpCharm);
    assert.equal(upload.code, 0, upload.stderr);
    const deploy = await c.api('POST', '/v1/models/default/applications', {
      charm: 'http-hooks',
      application: 'early',
      config: { port: 18181, content: 'first' },
    });
    assert.equal(deploy.status, 202, JSON.stringify(deploy.body));
    // at once: the unit agent does not exist yet
    const config = await c.api('PUT', '/v1/models/default/applications/early/config', { set: { content: 'second' } });
    assert.equal(config.status, 202, JSON.stringify(config.body));
    const agentThen = await (await agentOf('early/0')).describe().then(
      () => true,
      () => false,
    );
    const op = await c.waitOperation(config.body.operation.id, 120_000);
    assert.equal(op.state, 'succeeded', op.error);
    assert.equal((await c.waitOperation(deploy.body.operation.id, 120_000)).state, 'succeeded');
    const u = (await status()).applications.early.units['early/0'];
    assert.equal((await httpText(`http://${u['public-address']}:18181/`))?.trim(), 'second');
    // the config operation's own config-changed ran, after the deploy's
    const runs = await c.store.db
      .selectFrom('hook_runs')
      .select('hook')
      .where('unit', '=', 'early/0')
      .where('hook', '=', 'config-changed')
      .where('exit_code', '=', 0)
      .execute();
    assert.equal(runs.length, 2, `config-changed runs (agent existed when config was sent: ${agentThen})`);
    assert.equal((await cli('remove-application', 'early')).code, 0);
  });
});
