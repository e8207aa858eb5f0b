// migrate-model: the checks before a model moves to another controller, what would
// move (dryRun), what stops a move now, and the target's import refusing what is not
// a model's export. The move itself, between two real controllers over sshd hosts,
// is test/model-migration-ssh.test.ts.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../api/app.ts';
import type { TemporalDeps } from '../api/operation-starter.ts';
import { issueToken } from '../api/tokens.ts';
import { openStore, type Store } from '../store/store.ts';
import { runCli } from './helpers/cli.ts';

const SECRET_TOKEN = 'cf_target-token-Sh0uldNeverShow';

describe('migrate-model: checks and plan', () => {
  let store: Store;
  let app: FastifyInstance;
  let admin: string;
  let viewer: string;
  const lines: string[] = [];

  const post = async (model: string, body: unknown, token = admin) => {
    const res = await app.inject({
      method: 'POST',
      url: `/v1/models/${encodeURIComponent(model)}/migrate`,
      headers: { authorization: `Bearer ${token}` },
      payload: body as object,
    });
    return { status: res.statusCode, body: res.json(), raw: res.body };
  };

  before(async () => {
    store = await openStore({});
    const db = store.db;
    // the API never reaches Temporal in these checks
    app = await buildApp({
      store,
      temporal: {} as TemporalDeps,
      logger: { stream: { write: (line: string) => lines.push(line) } },
    });
    admin = (await issueToken(db, { user: 'admin', name: 'admin', role: 'admin' })).token;
    viewer = (await issueToken(db, { user: 'admin', name: 'viewer', role: 'read-only' })).token;
    await db
      .insertInto('clouds')
      .values([
        { name: 'local', type: 'local', endpoint: null },
        { name: 'manual', type: 'manual', endpoint: null },
      ])
      .onConflict((oc) => oc.doNothing())
      .execute();
    await db
      .insertInto('models')
      .values([
        { uuid: 'u-fleet', name: 'fleet', cloud: 'manual' },
        { uuid: 'u-other', name: 'other', cloud: 'manual' },
        { uuid: 'u-here', name: 'here', cloud: 'local' },
      ])
      .execute();
    const charm = (name: string) => ({
      name,
      revision: 3,
      sha256: name.padEnd(64, '0'),
      metadata: JSON.stringify({ name }),
      archive: Buffer.from('zip'),
      size: 3,
    });
    await db
      .insertInto('charms')
      .values([charm('kv-store'), charm('kv-web')])
      .execute();
    await db
      .insertInto('machines')
      .values([
        {
          model_uuid: 'u-fleet',
          id: '0',
          kind: 'ssh',
          address: '10.9.0.1',
          host: '10.9.0.1',
          port: 22,
          ssh_user: 'root',
        },
        {
          model_uuid: 'u-fleet',
          id: '1',
          kind: 'ssh',
          address: '10.9.0.2',
          host: '10.9.0.2',
          port: 22,
          ssh_user: 'root',
        },
      ])
      .execute();
    await db
      .insertInto('applications')
      .values([
        { model_uuid: 'u-fleet', name: 'kv-store', charm_name: 'kv-store', charm_revision: 3 },
        { model_uuid: 'u-fleet', name: 'kv-web', charm_name: 'kv-web', charm_revision: 3 },
        { model_uuid: 'u-other', name: 'web2', charm_name: 'kv-web', charm_revision: 3 },
      ])
      .execute();
    await db
      .insertInto('units')
      .values([
        { model_uuid: 'u-fleet', name: 'kv-store/0', application: 'kv-store', number: 0, machine_id: '0' },
        { model_uuid: 'u-fleet', name: 'kv-web/0', application: 'kv-web', number: 0, machine_id: '1' },
        { model_uuid: 'u-other', name: 'web2/0', application: 'web2', number: 0 },
      ])
      .execute();
    await db
      .insertInto('endpoints')
      .values([
        { model_uuid: 'u-fleet', application: 'kv-store', name: 'kv', role: 'provides', interface: 'kv' },
        { model_uuid: 'u-fleet', application: 'kv-web', name: 'kv', role: 'requires', interface: 'kv' },
        { model_uuid: 'u-other', application: 'web2', name: 'kv', role: 'requires', interface: 'kv' },
      ])
      .execute();
    await db
      .insertInto('integrations')
      .values({ id: 7, model_uuid: 'u-fleet', key: 'kv-web:kv kv-store:kv', interface: 'kv' })
      .execute();
    await db
      .insertInto('integration_endpoints')
      .values([
        { integration_id: 7, model_uuid: 'u-fleet', application: 'kv-web', endpoint: 'kv', role: 'requires' },
        { integration_id: 7, model_uuid: 'u-fleet', application: 'kv-store', endpoint: 'kv', role: 'provides' },
      ])
      .execute();
  });
  after(async () => {
    await app?.close();
    await store?.close();
  });

  test('dryRun: what would move, and the token is nowhere in the answer or the log', async () => {
    const r = await post('fleet', { to: 'http://10.9.0.100:17070/', token: SECRET_TOKEN, dryRun: true });
    assert.equal(r.status, 200, r.raw);
    assert.deepEqual(r.body.migration, {
      model: 'fleet',
      uuid: 'u-fleet',
      cloud: 'manual',
      to: 'http://10.9.0.100:17070',
      applications: [
        { name: 'kv-store', charm: 'kv-store:3', units: ['kv-store/0'] },
        { name: 'kv-web', charm: 'kv-web:3', units: ['kv-web/0'] },
      ],
      machines: [
        { id: '0', address: '10.9.0.1' },
        { id: '1', address: '10.9.0.2' },
      ],
      charms: ['kv-store:3', 'kv-web:3'],
      integrations: [7],
    });
    for (const text of [r.raw, lines.join('')]) assert.ok(!text.includes('Sh0uldNeverShow'), text);
  });

  test('schedules: 400 naming them; an operation running on the model: 409; the model untouched', async () => {
    const db = store.db;
    await db
      .insertInto('app_schedules')
      .values({
        id: 41,
        schedule_id: 'schedule:fleet:kv-store:backup:41',
        model_uuid: 'u-fleet',
        model_name: 'fleet',
        application: 'kv-store',
        kind: 'backup',
        cron: '0 3 * * *',
        interval_seconds: null,
        timezone: null,
        overlap: 'skip',
        params: JSON.stringify({}),
      })
      .execute();
    const sched = await post('fleet', { to: 'http://10.9.0.100:17070', token: SECRET_TOKEN, dryRun: true });
    assert.equal(sched.status, 400, sched.raw);
    assert.match(sched.body.message, /schedule\(s\) 41 \(backup kv-store\).*delete them first/);
    await db.deleteFrom('app_schedules').where('id', '=', 41).execute();
    const op = await db
      .insertInto('operations')
      .values({ model_name: 'fleet', kind: 'config', target: 'kv-web', summary: 'configure kv-web', state: 'running' })
      .returning('id')
      .executeTakeFirstOrThrow();
    const busy = await post('fleet', { to: 'http://10.9.0.100:17070', token: SECRET_TOKEN });
    assert.equal(busy.status, 409, busy.raw);
    assert.match(
      busy.body.message,
      new RegExp(`operation ${op.id} \\(configure kv-web\\) on model "fleet" is running`),
    );
    assert.ok(!busy.raw.includes('Sh0uldNeverShow'));
    await db.updateTable('operations').set({ state: 'succeeded' }).where('id', '=', op.id).execute();
    const model = await db
      .selectFrom('models')
      .select('status')
      .where('uuid', '=', 'u-fleet')
      .executeTakeFirstOrThrow();
    assert.notEqual(model.status, 'migrating');
    assert.equal((await db.selectFrom('model_migrations').selectAll().execute()).length, 0);
  });

  test('a model moving: every change to it is refused (409), reads go on', async () => {
    const db = store.db;
    await db
      .updateTable('models')
      .set({ status: 'migrating', message: 'moving to x' })
      .where('uuid', '=', 'u-other')
      .execute();
    try {
      const res = await app.inject({
        method: 'PUT',
        url: '/v1/models/other/applications/web2/scale',
        headers: { authorization: `Bearer ${admin}` },
        payload: { scale: 2 },
      });
      assert.equal(res.statusCode, 409, res.body);
      assert.match(res.json().message, /model "other" is moving between controllers \(migrating: moving to x\)/);
      const read = await app.inject({
        method: 'GET',
        url: '/v1/models/other/status',
        headers: { authorization: `Bearer ${admin}` },
      });
      assert.equal(read.statusCode, 200, read.body);
    } finally {
      await db.updateTable('models').set({ status: 'available', message: '' }).where('uuid', '=', 'u-other').execute();
    }
  });

  test('the target refuses what is not a model export: garbage, an empty body, a JSON body', async () => {
    const send = (payload: Buffer | string, type = 'application/octet-stream') =>
      app.inject({
        method: 'POST',
        url: '/v1/migrations/import',
        headers: { authorization: `Bearer ${admin}`, 'content-type': type },
        payload,
      });
    const garbage = await send(Buffer.from('not a backup at all'));
    assert.equal(garbage.statusCode, 400, garbage.body);
    assert.match(garbage.json().message, /not gzip data/);
    const empty = await send(Buffer.alloc(0));
    assert.equal(empty.statusCode, 400, empty.body);
    const json = await send(JSON.stringify({ a: 1 }), 'application/json');
    assert.equal(json.statusCode, 415, json.body);
    const unknown = await app.inject({
      method: 'DELETE',
      url: '/v1/migrations/no-such-uuid',
      headers: { authorization: `Bearer ${admin}` },
    });
    assert.equal(unknown.statusCode, 404, unknown.body);
    const live = await app.inject({
      method: 'DELETE',
      url: '/v1/migrations/u-fleet',
      headers: { authorization: `Bearer ${admin}` },
    });
    assert.equal(live.statusCode, 409, live.body);
    assert.match(live.json().message, /is live here/);
    const check = await app.inject({
      method: 'GET',
      url: '/v1/migrations?model=fleet',
      headers: { authorization: `Bearer ${admin}` },
    });
    assert.equal(check.statusCode, 200, check.body);
    assert.deepEqual(check.json().migrations.models, [{ name: 'fleet', uuid: 'u-fleet', status: 'pending' }]);
  });

  test('unknown model: 404', async () => {
    const r = await post('nope', { to: 'http://10.9.0.100:17070', token: SECRET_TOKEN, dryRun: true });
    assert.equal(r.status, 404, r.raw);
    assert.match(r.body.message, /model "nope" not found/);
  });

  test('a local-cloud model: 400 naming the cloud', async () => {
    const r = await post('here', { to: 'http://10.9.0.100:17070', token: SECRET_TOKEN, dryRun: true });
    assert.equal(r.status, 400, r.raw);
    assert.match(r.body.message, /cloud "local" \(local\): only models on SSH \(manual\) clouds can move/);
  });

  test('cross-model integrations: 400 naming them; gone, the model can move', async () => {
    await store.db
      .insertInto('integrations')
      .values({ id: 8, model_uuid: 'u-other', key: 'web2:kv kv-store:kv', interface: 'kv' })
      .execute();
    await store.db
      .insertInto('integration_endpoints')
      .values([
        { integration_id: 8, model_uuid: 'u-other', application: 'web2', endpoint: 'kv', role: 'requires' },
        { integration_id: 8, model_uuid: 'u-fleet', application: 'kv-store', endpoint: 'kv', role: 'provides' },
      ])
      .execute();
    for (const model of ['fleet', 'other']) {
      const r = await post(model, { to: 'http://10.9.0.100:17070', token: SECRET_TOKEN, dryRun: true });
      assert.equal(r.status, 400, `${model}: ${r.raw}`);
      assert.match(r.body.message, /cross-model integration\(s\): web2:kv kv-store:kv \(relation 8\)/);
    }
    await store.db.deleteFrom('integrations').where('id', '=', 8).execute();
    const ok = await post('fleet', { to: 'http://10.9.0.100:17070', token: SECRET_TOKEN, dryRun: true });
    assert.equal(ok.status, 200, ok.raw);
  });

  test('bad input: a URL that is not http(s), no token; a read-only token: 403', async () => {
    const bad = await post('fleet', { to: 'ftp://x', token: SECRET_TOKEN, dryRun: true });
    assert.equal(bad.status, 400, bad.raw);
    assert.match(bad.body.message, /body\.to/);
    const noToken = await post('fleet', { to: 'http://10.9.0.100:17070' });
    assert.equal(noToken.status, 400, noToken.raw);
    assert.match(noToken.body.message, /body\.token/);
    const ro = await post('fleet', { to: 'http://10.9.0.100:17070', token: SECRET_TOKEN, dryRun: true }, viewer);
    assert.equal(ro.status, 403, ro.raw);
  });

  test('the CLI: migrate-model --dry-run prints the plan; refusals are reported; the token comes from the env too', async () => {
    const url = await app.listen({ host: '127.0.0.1', port: 0 });
    const env = { CHARMFLOW_URL: url, CHARMFLOW_TOKEN: admin };
    const dry = await runCli(
      ['migrate-model', 'fleet', '--to', 'http://10.9.0.100:17070', '--token', SECRET_TOKEN, '--dry-run'],
      env,
    );
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /Model "fleet" \(cloud manual\) can move to http:\/\/10\.9\.0\.100:17070/);
    assert.match(dry.stdout, /kv-web \(kv-web:3\): kv-web\/0/);
    const json = await runCli(
      ['migrate-model', 'fleet', '--to', 'http://10.9.0.100:17070', '--dry-run', '--format', 'json'],
      { ...env, CHARMFLOW_MIGRATE_TOKEN: SECRET_TOKEN },
    );
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout).integrations, [7]);
    const local = await runCli(
      ['migrate-model', 'here', '--to', 'http://10.9.0.100:17070', '--token', SECRET_TOKEN, '--dry-run'],
      env,
    );
    assert.notEqual(local.code, 0);
    assert.match(local.stderr, /cloud "local"/);
    const noToken = await runCli(['migrate-model', 'fleet', '--to', 'http://10.9.0.100:17070'], env);
    assert.equal(noToken.code, 2, noToken.stderr);
    assert.match(noToken.stderr, /--token/);
    const op = await store.db
      .insertInto('operations')
      .values({ model_name: 'fleet', kind: 'config', target: 'kv-web', summary: 'configure kv-web', state: 'running' })
      .returning('id')
      .executeTakeFirstOrThrow();
    const move = await runCli(
      ['migrate-model', 'fleet', '--to', 'http://10.9.0.100:17070', '--token', SECRET_TOKEN],
      env,
    );
    await store.db.updateTable('operations').set({ state: 'succeeded' }).where('id', '=', op.id).execute();
    assert.notEqual(move.code, 0);
    assert.match(move.stderr, /is running: wait for it/);
    const list = await runCli(['migrations', '--format', 'json'], env);
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(JSON.parse(list.stdout), { migrations: [] });
    for (const r of [dry, json, local, noToken, move, list])
      assert.ok(!(r.stdout + r.stderr).includes('Sh0uldNeverShow'));
  });
});
