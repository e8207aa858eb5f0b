// Records the histories the replay test (test/replay.test.ts) replays against the
// current workflow code: one run of each operation workflow and of a unit agent,
// driven through the API of a real controller on the local cloud.
//
//   node --import tsx scripts/record-histories.ts   (writes test/fixtures/histories/*.json)
//   node --import tsx scripts/record-histories.ts deploy   (only those named)
//
// Re-record only when a change is meant to break replay of the old histories
// (which running workflows would then fail): see "Versioning workflows" in README.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import proto from '@temporalio/proto';

const { temporal } = proto;

import { projectRoot, runCli } from '../test/helpers/cli.ts';
import { startTestController } from '../test/helpers/controller.ts';
import { waitFor } from '../test/helpers/wait.ts';
import { unitAgentWorkflowId } from '../workflows/messages.ts';

const out = join(projectRoot, 'test', 'fixtures', 'histories');
const counter = join(projectRoot, 'test', 'fixtures', 'charms', 'counter');

const c = await startTestController();
try {
  const cli = (...args: string[]) => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const op = async (res: { status: number; body: { operation: { id: number } } }, state: string) => {
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const done = await c.waitOperation(res.body.operation.id, 120_000);
    assert.equal(done.state, state, JSON.stringify(done));
    return done.workflowId as string;
  };
  const uuid = async (model: string) => (await c.api('GET', `/v1/models/${model}`)).body.uuid as string;
  assert.equal((await cli('upload', counter)).code, 0);

  // deploy with a config-changed that fails: the deploy fails, the unit is in error
  const deploy = await op(
    await c.api('POST', '/v1/models/default/applications', {
      charm: 'counter',
      application: 'rec',
      config: { 'fail-hook': 'config-changed' },
    }),
    'failed',
  );
  // resolve --no-retry skips it; the unit goes on to start
  const resolve = await op(
    await c.api('POST', '/v1/models/default/units/rec/0/resolve', { retry: false }),
    'succeeded',
  );
  await waitFor('rec/0 active', async () => {
    const u = await c.store.db
      .selectFrom('units')
      .select('workload_status')
      .where('name', '=', 'rec/0')
      .executeTakeFirst();
    return u?.workload_status === 'active';
  });
  const config = await op(
    await c.api('PUT', '/v1/models/default/applications/rec/config', { set: { 'fail-hook': '' } }),
    'succeeded',
  );
  const agent = unitAgentWorkflowId('default', await uuid('default'), 'rec/0');
  const remove = await op(await c.api('DELETE', '/v1/models/default/applications/rec'), 'succeeded');
  await c.client.workflow.getHandle(agent).result();

  // destroy-model of a model with a running unit
  await op(await c.api('POST', '/v1/models', { name: 'rec-model', cloud: 'local' }), 'succeeded');
  await op(
    await c.api('POST', '/v1/models/rec-model/applications', { charm: 'counter', application: 'doomed' }),
    'succeeded',
  );
  const destroy = await op(await c.api('DELETE', '/v1/models/rec-model'), 'succeeded');

  mkdirSync(out, { recursive: true });
  const runs = { deploy, resolve, config, remove, 'destroy-model': destroy, 'unit-agent': agent };
  const only = process.argv.slice(2);
  for (const [name, workflowId] of Object.entries(runs)) {
    if (only.length > 0 && !only.includes(name)) continue;
    const history = await c.client.workflow.getHandle(workflowId).fetchHistory();
    // protobuf's own object form (enums by name, bytes in base64): History.fromObject reads it back
    const json = temporal.api.history.v1.History.toObject(history as proto.temporal.api.history.v1.History, {
      longs: String,
      enums: String,
      bytes: String,
    });
    writeFileSync(join(out, `${name}.json`), `${JSON.stringify(json, null, 2)}\n`);
    process.stdout.write(`${name}: ${workflowId} (${history.events?.length} events)\n`);
  }
  // in the repository's own JSON style, so `npm run lint` passes them
  execFileSync(join(projectRoot, 'node_modules', '.bin', 'biome'), ['format', '--write', out], { stdio: 'inherit' });
} finally {
  await c.stop();
}
