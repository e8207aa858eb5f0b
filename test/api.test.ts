// The API end to end: real Temporal dev server, real worker, PGlite store.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { since } from '../api/routes/status.ts';
import { startTestController, type TestController } from './helpers/controller.ts';

describe('API', () => {
  let c: TestController;
  before(async () => {
    c = await startTestController();
  });
  after(async () => {
    await c?.stop();
  });

  test('healthz needs no token; everything else does', async () => {
    const h = await c.api('GET', '/healthz', undefined, '');
    assert.equal(h.status, 200);
    assert.equal(h.body.status, 'ok');
    const none = await c.api('GET', '/v1/models', undefined, '');
    assert.equal(none.status, 401);
    assert.deepEqual(Object.keys(none.body).sort(), ['error', 'message', 'statusCode']);
    const bad = await c.api('GET', '/v1/models', undefined, 'cf_not-a-token');
    assert.equal(bad.status, 401);
  });

  test('the default model exists after the first start', async () => {
    const ops = await c.api('GET', '/v1/operations?model=default');
    assert.equal(ops.body.operations[0].kind, 'create-model');
    await c.waitOperation(ops.body.operations[0].id);
    const m = await c.api('GET', '/v1/models/default');
    assert.equal(m.status, 200);
    assert.equal(m.body.cloud, 'local');
    assert.equal(m.body.status, 'available');
  });

  test('OpenAPI document and docs page', async () => {
    const doc = await c.api('GET', '/openapi.json', undefined, '');
    assert.equal(doc.status, 200);
    assert.ok(doc.body.openapi.startsWith('3.'));
    assert.ok(doc.body.paths['/v1/models']);
    assert.ok(doc.body.paths['/v1/operations/{id}']);
    const page = await fetch(`${c.apiUrl}/docs/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /swagger/i);
  });

  test('create, list, show and destroy a model through operations', async () => {
    const created = await c.api('POST', '/v1/models', { name: 'prod-1' });
    assert.equal(created.status, 202);
    const op = created.body.operation;
    assert.equal(op.kind, 'create-model');
    assert.equal(op.workflowId, `op:prod-1:create-model:${op.id}`);
    const done = await c.waitOperation(op.id);
    assert.equal(done.state, 'succeeded', done.error);
    const shown = await c.api('GET', '/v1/models/prod-1');
    assert.equal(shown.body.status, 'available');
    const list = await c.api('GET', '/v1/models');
    assert.deepEqual(
      list.body.models.map((m: { name: string }) => m.name),
      ['default', 'prod-1'],
    );
    const status = await c.api('GET', '/v1/models/prod-1/status');
    assert.equal(status.status, 200);
    assert.deepEqual(status.body.applications, {});
    assert.equal(status.body.model.name, 'prod-1');

    // the workflow is visible in Temporal with its search attributes
    const handle = c.client.workflow.getHandle(op.workflowId);
    // the store says succeeded as the workflow's last step; the run closes just after
    await handle.result();
    const desc = await handle.describe();
    assert.equal(desc.status.name, 'COMPLETED');
    assert.deepEqual(desc.searchAttributes.CharmflowModel, ['prod-1']);
    assert.deepEqual(desc.searchAttributes.CharmflowOperationKind, ['create-model']);

    const destroyed = await c.api('DELETE', '/v1/models/prod-1');
    assert.equal(destroyed.status, 202);
    assert.equal((await c.waitOperation(destroyed.body.operation.id)).state, 'succeeded');
    assert.equal((await c.api('GET', '/v1/models/prod-1')).status, 404);
  });

  test('bad input is refused naming the field, and nothing is written', async () => {
    const before = (await c.api('GET', '/v1/operations?limit=1000')).body.operations.length;
    const cases: [unknown, string][] = [
      [{ name: 'Bad_Name' }, 'body.name'],
      [{ name: '9lives' }, 'body.name'],
      [{ name: 'ok', extra: true }, 'body.extra'],
      [{ name: 42 }, 'body.name'],
      [{}, 'body.name'],
    ];
    for (const [body, field] of cases) {
      const r = await c.api('POST', '/v1/models', body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(r.body.details[0].field, field, JSON.stringify(r.body));
      assert.match(r.body.message, new RegExp(field.replace('.', '\\.')));
    }
    const malformed = await c.api('POST', '/v1/models', '{"name":');
    assert.equal(malformed.status, 400);
    assert.match(malformed.body.message, /JSON/);
    const unknownCloud = await c.api('POST', '/v1/models', { name: 'x', cloud: 'nowhere' });
    assert.equal(unknownCloud.status, 404);
    assert.match(unknownCloud.body.message, /cloud "nowhere"/);
    const after = (await c.api('GET', '/v1/operations?limit=1000')).body.operations.length;
    assert.equal(after, before, 'no operation recorded for refused requests');
    assert.equal((await c.api('GET', '/v1/models/x')).status, 404);
  });

  test('integers beyond the store range and NUL bytes are 400s naming the field, on every kind of route', async () => {
    const before = (await c.api('GET', '/v1/operations?limit=1000')).body.operations.length;
    const big = '2147483648';
    const cases: [string, string, unknown, string][] = [
      // path parameters
      ['GET', `/v1/operations/${big}`, undefined, 'params.id'],
      ['GET', '/v1/models/de%00fault', undefined, 'params.name'],
      ['GET', '/v1/models/de%00fault/status', undefined, 'params.name'],
      ['DELETE', '/v1/models/de%00fault', undefined, 'params.name'],
      ['DELETE', '/v1/tokens/t%00k', undefined, 'params.id'],
      ['GET', '/v1/charms/x%00y', undefined, 'params.name'],
      ['GET', `/v1/models/default/units/web/${big}/status-log`, undefined, 'params.n'],
      ['DELETE', `/v1/models/default/units/web/${big}`, undefined, 'params.n'],
      ['POST', `/v1/models/default/units/web/${big}/resolve`, {}, 'params.n'],
      ['GET', '/v1/models/default/applications/w%00b/config', undefined, 'params.app'],
      ['GET', '/v1/models/d%00/machines', undefined, 'params.model'],
      // query strings
      ['GET', `/v1/models/default/logs?after=${big}`, undefined, 'querystring.after'],
      ['GET', '/v1/operations?model=de%00fault', undefined, 'querystring.model'],
      ['GET', `/v1/charms/trivial?revision=${big}`, undefined, 'querystring.revision'],
      ['GET', '/v1/models/default/units/web/0/status-log?kinds=work%00load', undefined, 'querystring.kinds'],
      // bodies
      ['POST', '/v1/models', { name: 'ok', cloud: 'lo\0cal' }, 'body.cloud'],
      ['POST', '/v1/models/default/applications', { charm: 'tri\0vial' }, 'body.charm'],
      ['POST', '/v1/models/default/applications', { charm: 'trivial', revision: 2 ** 31 }, 'body.revision'],
      ['POST', '/v1/models/default/applications', { charm: 'trivial', config: { k: 'v\0' } }, 'body.config.k'],
      ['PUT', '/v1/models/default/applications/web/config', { set: { token: 'a\0b' } }, 'body.set.token'],
      ['PUT', '/v1/models/default/applications/web/config', { reset: ['a\0'] }, 'body.reset.0'],
      ['POST', '/v1/models/default/machines', { ssh: { host: 'h1', port: 2 ** 31 } }, 'body.ssh.port'],
      ['POST', '/v1/models/default/machines', { ssh: { host: 'h1' }, privateKey: 'k\0' }, 'body.privateKey'],
      ['POST', '/v1/tokens', { name: 'a\0' }, 'body.name'],
    ];
    for (const [method, path, body, field] of cases) {
      const r = await c.api(method, path, body);
      const what = `${method} ${path} ${JSON.stringify(body)}`;
      assert.equal(r.status, 400, `${what}: ${JSON.stringify(r.body)}`);
      assert.ok(
        r.body.details?.some((d: { field: string }) => d.field === field),
        `${what}: expected ${field}, got ${JSON.stringify(r.body)}`,
      );
    }
    const after = (await c.api('GET', '/v1/operations?limit=1000')).body.operations.length;
    assert.equal(after, before, 'no operation recorded for refused requests');
  });

  test('a duplicate model is a 409 and the original is untouched', async () => {
    const first = await c.api('POST', '/v1/models', { name: 'dup' });
    await c.waitOperation(first.body.operation.id);
    const original = (await c.api('GET', '/v1/models/dup')).body;
    const again = await c.api('POST', '/v1/models', { name: 'dup' });
    assert.equal(again.status, 409);
    assert.match(again.body.message, /already exists/);
    assert.deepEqual((await c.api('GET', '/v1/models/dup')).body, original);
  });

  test('unknown model and operation are 404s naming them', async () => {
    const m = await c.api('DELETE', '/v1/models/ghost');
    assert.equal(m.status, 404);
    assert.match(m.body.message, /model "ghost" not found/);
    const o = await c.api('GET', '/v1/operations/99999');
    assert.equal(o.status, 404);
    assert.match(o.body.message, /operation "99999"/);
    const badId = await c.api('GET', '/v1/operations/abc');
    assert.equal(badId.status, 400);
    assert.equal(badId.body.details[0].field, 'params.id');
  });

  test('tokens: read-only tokens read but cannot mutate; revoked tokens stop working', async () => {
    const created = await c.api('POST', '/v1/tokens', { name: 'viewer', role: 'read-only' });
    assert.equal(created.status, 201);
    const ro = created.body.token as string;
    assert.match(ro, /^cf_/);
    assert.equal((await c.api('GET', '/v1/models', undefined, ro)).status, 200);
    const denied = await c.api('POST', '/v1/models', { name: 'nope' }, ro);
    assert.equal(denied.status, 403);
    assert.match(denied.body.message, /read-only/);
    const listed = await c.api('GET', '/v1/tokens');
    assert.ok(listed.body.tokens.every((t: Record<string, unknown>) => !('token' in t) && !('hash' in t)));
    assert.ok(!JSON.stringify(listed.body).includes(ro));
    const revoked = await c.api('DELETE', `/v1/tokens/${created.body.id}`);
    assert.equal(revoked.status, 200);
    assert.equal((await c.api('GET', '/v1/models', undefined, ro)).status, 401);
    const admin2 = await c.api('POST', '/v1/tokens', { name: 'ops', role: 'admin' });
    const made = await c.api('POST', '/v1/models', { name: 'by-ops' }, admin2.body.token);
    assert.equal(made.status, 202);
    await c.waitOperation(made.body.operation.id);
  });

  test('operations list filters by model and state', async () => {
    const all = await c.api('GET', '/v1/operations?model=dup');
    assert.ok(all.body.operations.length >= 1);
    assert.ok(all.body.operations.every((o: { model: string }) => o.model === 'dup'));
    const failed = await c.api('GET', '/v1/operations?state=failed');
    assert.deepEqual(failed.body.operations, []);
    const bad = await c.api('GET', '/v1/operations?state=weird');
    assert.equal(bad.status, 400);
    assert.equal(bad.body.details[0].field, 'querystring.state');
  });
});

test("status' machine since: the store's UTC timestamps in toISOString's form, any other through a Date", () => {
  for (const stored of [
    '2026-12-03T12:18:36.123456+00:00',
    '2026-12-03T12:18:36.12+00:00',
    '2026-12-03T12:18:36+00:00',
    '2026-12-03T14:18:36.5+02:00',
  ]) {
    assert.equal(since(stored), new Date(stored).toISOString(), stored);
  }
});
