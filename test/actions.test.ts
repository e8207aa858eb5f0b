// Actions end to end on the local cloud: params checked against actions.yaml with
// defaults filled in, results, logs and failures shown, a failing action never
// putting the unit in error, and a queued action cancelled.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { waitFor } from './helpers/wait.ts';

const actor = join(projectRoot, 'test', 'fixtures', 'charms', 'actor');

describe('actions', () => {
  let c: TestController;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const unitStatus = async (unit: string) =>
    await c.store.db
      .selectFrom('units')
      .select(['workload_status', 'agent_status'])
      .where('name', '=', unit)
      .executeTakeFirstOrThrow();

  before(async () => {
    c = await startTestController();
    const d = await cli('deploy', actor, 'act', '-n', '2');
    assert.equal(d.code, 0, d.stderr);
  });
  after(async () => {
    await c?.stop();
  });

  test('an action returns its results and log; defaults are filled in; APP/leader finds the leader', async () => {
    const r = await cli('run', 'act/leader', 'echo', 'text=ab', '--format', 'json');
    assert.equal(r.code, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.equal(out.status, 'completed');
    assert.equal(out.unit, 'act/0');
    assert.deepEqual(out.results, { result: { text: 'abab', times: '2' }, unit: 'act/0' });
    assert.deepEqual(
      out.log.map((l: { message: string }) => l.message),
      ['round 1 of 2', 'round 2 of 2'],
    );
    // yaml by default, logs on stderr
    const y = await cli('run', 'act/1', 'echo', 'text=x', 'times=3');
    assert.equal(y.code, 0, y.stderr);
    assert.match(y.stdout, /result:\n\s+text: xxx\n\s+times: "3"/);
    assert.match(y.stderr, /round 3 of 3/);
    // the operation keeps the outcome
    const ops = (await c.api('GET', '/v1/operations?limit=1')).body.operations;
    assert.equal(ops[0].kind, 'run-action');
    assert.equal(ops[0].action.results.result.text, 'xxx');
    const listed = await cli('actions', 'act', '--format', 'json');
    assert.deepEqual(Object.keys(JSON.parse(listed.stdout)), ['crash', 'echo', 'fail', 'open', 'slow']);
  });

  test('a failing action fails its operation with the message; the unit stays active, not in error', async () => {
    const f = await cli('run', 'act/0', 'fail', '--format', 'json');
    assert.notEqual(f.code, 0);
    assert.match(f.stderr, /action fail on act\/0 failed: nope: the thing is broken/);
    const out = JSON.parse(f.stdout);
    assert.equal(out.status, 'failed');
    assert.deepEqual(out.results, { partial: 'yes' }, 'results set before the failure are kept');
    const crash = await cli('run', 'act/0', 'crash');
    assert.notEqual(crash.code, 0);
    assert.match(crash.stderr, /the action exited with code 3: .*crashing now/);
    assert.deepEqual(await unitStatus('act/0'), { workload_status: 'active', agent_status: 'idle' });
    // and the unit goes on running what comes next
    assert.equal((await cli('run', 'act/0', 'echo', 'text=after')).code, 0);
  });

  test('bad input is refused with 400 naming the problem, and nothing runs', async () => {
    const before = (await c.api('GET', '/v1/operations?limit=1000')).body.operations.length;
    const cases: [Record<string, unknown>, number, RegExp, string][] = [
      [
        { unit: 'act/0', action: 'nope' },
        400,
        /no action "nope" \(its actions: crash, echo, fail, open, slow\)/,
        'body.action',
      ],
      [{ unit: 'act/0', action: 'echo' }, 400, /missing required parameter "text"/, 'body.params.text'],
      [
        { unit: 'act/0', action: 'echo', params: { text: 'a', extra: 1 } },
        400,
        /unknown parameter "extra"/,
        'body.params.extra',
      ],
      [
        { unit: 'act/0', action: 'echo', params: { text: 'a', times: 0 } },
        400,
        /parameter "times" must be >= 1/,
        'body.params.times',
      ],
      [
        { unit: 'act/0', action: 'echo', params: { text: 5 } },
        400,
        /parameter "text" must be string/,
        'body.params.text',
      ],
      [{ unit: 'act/9', action: 'echo', params: { text: 'a' } }, 404, /act\/9/, ''],
      [{ unit: 'nope/leader', action: 'echo', params: { text: 'a' } }, 404, /nope/, ''],
      [{ unit: 'act', action: 'echo' }, 400, /APP\/N or APP\/leader/, 'body.unit'],
    ];
    for (const [body, code, why, field] of cases) {
      const res = await c.api('POST', '/v1/models/default/actions', body);
      assert.equal(res.status, code, JSON.stringify([body, res.body]));
      assert.match(res.body.message, why);
      if (field) assert.ok(JSON.stringify(res.body.details).includes(field), JSON.stringify(res.body));
    }
    // the schema allows any params on `open`
    const open = await cli('run', 'act/0', 'open', 'a.b=1', 'c=x', '--format', 'json');
    assert.equal(open.code, 0, open.stderr);
    assert.deepEqual(JSON.parse(JSON.parse(open.stdout).results.got), { a: { b: 1 }, c: 'x' });
    const r = await cli('run', 'act/0', 'echo', 'times=0', 'text=a');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /times/);
    const after = (await c.api('GET', '/v1/operations?limit=1000')).body.operations.length;
    assert.equal(after, before + 1, 'only the valid `open` run made an operation');
  });

  test('a queued action can be cancelled; a running one runs to its end', async () => {
    const slow = await cli('run', 'act/1', 'slow', 'seconds=4', '--background');
    assert.equal(slow.code, 0, slow.stderr);
    const slowId = Number(/operation (\d+)/.exec(slow.stdout)?.[1]);
    const queued = await cli('run', 'act/1', 'echo', 'text=never', '--background');
    const queuedId = Number(/operation (\d+)/.exec(queued.stdout)?.[1]);
    // the slow one is running on the machine
    await waitFor('slow running', async () => (await unitStatus('act/1')).agent_status === 'executing');
    const running = await cli('cancel-operation', String(slowId));
    assert.notEqual(running.code, 0);
    assert.match(running.stderr, /already running on act\/1: it runs to its end/);
    const cancel = await cli('cancel-operation', String(queuedId));
    assert.equal(cancel.code, 0, cancel.stderr);
    const done = await c.waitOperation(slowId, 30_000);
    assert.equal(done.state, 'succeeded');
    assert.deepEqual(done.action.results, { slept: '4' });
    const cancelled = (await c.api('GET', `/v1/operations/${queuedId}`)).body;
    assert.equal(cancelled.state, 'cancelled');
    assert.equal(cancelled.action.status, 'cancelled');
    // the cancelled action never ran
    const runs = await c.store.db.selectFrom('hook_runs').select('hook').where('unit', '=', 'act/1').execute();
    assert.equal(runs.filter((h) => h.hook === 'echo').length, 1, 'only the earlier echo ran on act/1');
    const again = await cli('cancel-operation', String(queuedId));
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /already ended/);
  });
});
