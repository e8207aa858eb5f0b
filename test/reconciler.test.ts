// Start-up after a crash part way: an operation recorded but never started is
// started by the reconciler; the default model is made by a start after a first
// start that died before it; a start whose fate is unknown leaves the operation
// pending instead of undoing it.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { Client, Connection, ServiceError } from '@temporalio/client';
import { definitelyNotStarted, recordOperation, startOperation, workflowIdFor } from '../api/operation-starter.ts';
import { paths } from '../controller/config.ts';
import { type Db, openStore, type Tx } from '../store/store.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { freePort } from './helpers/ports.ts';
import { waitFor } from './helpers/wait.ts';

/** A model's create-model request exactly as POST /v1/models makes it. */
function createModelRequest(name: string) {
  const uuid = crypto.randomUUID();
  return {
    kind: 'create-model',
    model: name,
    target: name,
    createdBy: 'admin',
    workflow: 'createModelWorkflow',
    summary: `create model ${name} on cloud local`,
    params: { cloud: 'local' },
    args: (operationId: number) => [{ operationId, model: name, kind: 'create-model' }],
    intent: async (tx: Tx) => {
      await tx.insertInto('models').values({ uuid, name, cloud: 'local', status: 'pending', config: '{}' }).execute();
    },
    undo: async (db: Db) => {
      await db.deleteFrom('models').where('uuid', '=', uuid).execute();
    },
  };
}

/** A store as a controller's first start leaves it: migrated, with its clouds. */
async function firstStartStore(dir: string) {
  const store = await openStore({ dataDir: paths(dir).store });
  await store.db
    .insertInto('clouds')
    .values([
      { name: 'local', type: 'local', endpoint: null },
      { name: 'manual', type: 'manual', endpoint: null },
    ])
    .execute();
  return store;
}

function grpcError(code: number): ServiceError {
  return new ServiceError('call failed', {
    cause: Object.assign(new Error(`code ${code}`), { code, details: '', metadata: {} }),
  });
}

describe('start-up after a crash part way', () => {
  const dirs: string[] = [];
  let c: TestController | undefined;
  after(async () => {
    await c?.stop();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  function dataDir(prefix: string): string {
    const d = mkdtempSync(join(tmpdir(), prefix));
    dirs.push(d);
    return d;
  }

  test('only a refused start counts as not started; a timeout or an unavailable server may have started it', () => {
    assert.equal(definitelyNotStarted(grpcError(3)), true, 'INVALID_ARGUMENT');
    assert.equal(definitelyNotStarted(grpcError(5)), true, 'NOT_FOUND (namespace)');
    assert.equal(definitelyNotStarted(grpcError(7)), true, 'PERMISSION_DENIED');
    assert.equal(definitelyNotStarted(grpcError(14)), false, 'UNAVAILABLE');
    assert.equal(definitelyNotStarted(grpcError(4)), false, 'DEADLINE_EXCEEDED');
    assert.equal(definitelyNotStarted(grpcError(1)), false, 'CANCELLED');
    assert.equal(definitelyNotStarted(new ServiceError('connection closed')), false);
    assert.equal(definitelyNotStarted(new TypeError('bad argument, never sent')), true);
  });

  test('a start whose fate is unknown keeps the operation pending and its intent; a later pass of the reconciler starts it', async () => {
    c = await startTestController();
    const db = c.store.db;
    // an API whose Temporal is unreachable (nothing listens on this port) while the controller runs
    const connection = await Connection.lazy({ address: `127.0.0.1:${await freePort()}` });
    const client = new Client({ connection });
    let row: Awaited<ReturnType<typeof startOperation>>;
    try {
      row = await connection.withDeadline(Date.now() + 30_000, () =>
        startOperation(db, { client, taskQueue: 'nowhere' }, createModelRequest('unsure')),
      );
    } finally {
      await connection.close();
    }
    const kept = await db.selectFrom('operations').selectAll().where('id', '=', row.id).executeTakeFirstOrThrow();
    assert.equal(kept.state, 'pending', 'not failed: the start may have happened');
    assert.equal(kept.error, null);
    assert.deepEqual(kept.start, {
      workflow: 'createModelWorkflow',
      args: [{ operationId: row.id, model: 'unsure', kind: 'create-model' }],
    });
    const model = await db.selectFrom('models').select('name').where('name', '=', 'unsure').executeTakeFirst();
    assert.ok(model, 'the intent is not undone');

    // the pass at start-up is over; the periodic one (every 30 s) starts it
    const op = await c.waitOperation(row.id, 90_000);
    assert.equal(op.state, 'succeeded', JSON.stringify(op));
    const models = await c.api('GET', '/v1/models');
    assert.equal(models.body.models.find((m: { name: string }) => m.name === 'unsure')?.status, 'available');
    await c.stop();
    c = undefined;
  });

  test('an operation recorded with its intent but never started (crash in between) runs at the next start', async () => {
    const dir = dataDir('cf-recon-crash-');
    // what the API does up to the start, then the process dies
    const store = await firstStartStore(dir);
    const row = await recordOperation(store.db, createModelRequest('orphan'));
    assert.equal(row.state, 'pending');
    assert.equal(row.workflow_id, workflowIdFor('orphan', 'create-model', row.id));
    await store.close();

    c = await startTestController({ dataDir: dir });
    const op = await c.waitOperation(row.id, 90_000);
    assert.equal(op.state, 'succeeded', JSON.stringify(op));
    assert.equal(op.workflowId, row.workflow_id);
    // the model it created is usable
    const models = await c.api('GET', '/v1/models');
    assert.equal(models.body.models.find((m: { name: string }) => m.name === 'orphan')?.status, 'available');
    const status = await c.api('GET', '/v1/models/orphan/status');
    assert.equal(status.status, 200, JSON.stringify(status.body));
    // a second pass does not start it again: still one run of that workflow id
    const runs: string[] = [];
    for await (const w of c.client.workflow.list({ query: `WorkflowId = '${row.workflow_id}'` })) runs.push(w.runId);
    assert.equal(runs.length, 1);

    // a start Temporal refuses (no such namespace) undoes the intent and fails the operation
    const refusing = new Client({ connection: c.client.connection, namespace: 'no-such-namespace' });
    await assert.rejects(
      startOperation(c.store.db, { client: refusing, taskQueue: 'nowhere' }, createModelRequest('refused')),
      (err: Error & { statusCode?: number }) => err.statusCode === 503 && /refused/.test(err.message),
    );
    const refused = await c.store.db
      .selectFrom('operations')
      .selectAll()
      .where('model_name', '=', 'refused')
      .executeTakeFirstOrThrow();
    assert.equal(refused.state, 'failed');
    assert.match(refused.error ?? '', /could not start workflow: .*no-such-namespace/i);
    const gone = await c.store.db.selectFrom('models').select('name').where('name', '=', 'refused').executeTakeFirst();
    assert.equal(gone, undefined, 'the intent is undone');
    await c.stop();
    c = undefined;
  });

  test('a first start that died after creating the store and clouds makes the default model at the next start', async () => {
    const dir = dataDir('cf-recon-default-');
    // the first start got this far: store migrated, clouds in, no default model yet
    const store = await firstStartStore(dir);
    await store.close();

    c = await startTestController({ dataDir: dir });
    const ctl = c;
    const model = await waitFor(
      'the default model to be available',
      async () => {
        const r = await ctl.api('GET', '/v1/models');
        const m = r.body.models.find((x: { name: string }) => x.name === 'default');
        return m && m.status !== 'pending' ? m : null;
      },
      90_000,
    );
    assert.equal(model.cloud, 'local');
    // the model is available a moment before its operation records that it succeeded
    const create = await waitFor(
      'the create-model operation to end',
      async () => {
        const ops = await ctl.api('GET', '/v1/operations');
        const op = ops.body.operations.find(
          (o: { kind: string; model: string }) => o.kind === 'create-model' && o.model === 'default',
        );
        return op && op.state !== 'running' && op.state !== 'pending' ? op : null;
      },
      30_000,
    );
    assert.equal(create.state, 'succeeded');

    // destroyed by its user, it is not made again at the next start
    const destroy = await c.api('DELETE', '/v1/models/default');
    assert.equal(destroy.status, 202, JSON.stringify(destroy.body));
    assert.equal((await c.waitOperation(destroy.body.operation.id, 90_000)).state, 'succeeded');
    await c.stop();
    c = await startTestController({ dataDir: dir });
    const after = await c.api('GET', '/v1/models');
    assert.ok(!after.body.models.some((m: { name: string }) => m.name === 'default'));
    await c.stop();
    c = undefined;
  });
});
