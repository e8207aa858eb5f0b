// Integrations on the local cloud, end to end: a real controller and real hooks of
// the relator fixture charm, which logs every relation hook with what it saw.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { hookNames, type RelLine, relLines, settle } from './helpers/relations.ts';

const relator = join(projectRoot, 'test', 'fixtures', 'charms', 'relator');

describe('integrations on the local cloud', () => {
  let c: TestController;
  let uuid: string;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const integrations = async () => JSON.parse((await ok('integrations', '--format', 'json')).stdout);
  const lines = (unit: string) => relLines(c, uuid, unit);
  const only = (ls: RelLine[], hook: string) => ls.filter((l) => l.hook === hook);

  before(async () => {
    c = await startTestController();
    await ok('deploy', relator, 'prov', '-n', '2');
    await ok('deploy', relator, 'req');
    await ok('deploy', relator, 'third');
    uuid = (
      await c.store.db.selectFrom('models').select('uuid').where('name', '=', 'default').executeTakeFirstOrThrow()
    ).uuid;
    await settle(c, ['default']);
  });
  after(async () => {
    await c?.stop();
  });

  test('peer relations are made on deploy; relation-created runs right after install', async () => {
    const list = await integrations();
    const peers = list.filter((i: { type: string }) => i.type === 'peer');
    assert.deepEqual(peers.map((i: { provider: { application: string } }) => i.provider.application).sort(), [
      'prov',
      'req',
      'third',
    ]);
    const hooks = await hookNames(c, uuid, 'prov/1');
    assert.deepEqual(hooks.slice(0, 3), ['install', 'peers-relation-created', 'leader-settings-changed']);
    // prov/0 and prov/1 joined each other as peers, after start
    const joined = only(await lines('prov/1'), 'peers-relation-joined');
    assert.deepEqual(
      joined.map((l) => l.fields.remote),
      ['prov/0'],
    );
    assert.ok(hooks.indexOf('peers-relation-joined') > hooks.indexOf('start'));
    // the leader's leader-set reached the other unit as leader-settings-changed
    const logs = await c.store.db
      .selectFrom('log_entries')
      .select('message')
      .where('entity', '=', 'prov/1')
      .where('message', 'like', 'HOOK leader-settings-changed%')
      .execute();
    assert.ok(
      logs.some((l) => l.message.includes('leader-token=prov/0')),
      JSON.stringify(logs),
    );
  });

  test('what cannot be integrated is refused with 400 and the reason, and nothing changes', async () => {
    const before = await integrations();
    const cases: [string, string, RegExp][] = [
      ['prov:data', 'req:solo', /mismatched interfaces: prov:data is "relator", req:solo is "single"/],
      ['prov:source', 'req:source', /both "requires" endpoints/],
      ['prov', 'req', /ambiguous integration of prov with req: .*prov:data req:source.*req:data prov:source|ambiguous/],
      ['prov:nope', 'req', /application "prov" has no endpoint "nope"/],
      ['prov', 'prov', /cannot integrate "prov" with itself/],
    ];
    for (const [a, b, why] of cases) {
      const res = await c.api('POST', '/v1/models/default/integrations', { a, b });
      assert.equal(res.status, 400, `${a} ${b}: ${JSON.stringify(res.body)}`);
      assert.match(res.body.message, why);
    }
    // the CLI says why and exits non-zero
    const r = await cli('integrate', 'prov:data', 'req:solo');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /mismatched interfaces/);
    // limit: solo takes one integration
    await ok('integrate', 'req:solo', 'third:single-out');
    const over = await c.api('POST', '/v1/models/default/integrations', { a: 'req:solo', b: 'prov:single-out' });
    assert.equal(over.status, 400);
    assert.match(over.body.message, /req:solo allows at most 1 integration\(s\) \(its limit\) and has 1/);
    const again = await c.api('POST', '/v1/models/default/integrations', { a: 'third:single-out', b: 'req:solo' });
    assert.equal(again.status, 400);
    assert.match(again.body.message, /already integrated/);
    const afterList = await integrations();
    assert.equal(afterList.length, before.length + 1, 'only the one valid integration was added');
    await ok('remove-relation', 'req:solo', 'third');
    assert.equal((await integrations()).length, before.length);
    await settle(c, ['default']);
  });

  test('integrate: created, then joined and changed per remote unit, with the remote data and address', async () => {
    const r = await ok('integrate', 'prov:data', 'req:source');
    assert.match(r.stdout, /Integrated prov:data with req:source/);
    await settle(c, ['default']);
    const status = JSON.parse((await ok('status', '--format', 'json')).stdout);
    assert.deepEqual(status.applications.req.relations.source, [
      { 'related-application': 'prov', interface: 'relator', scope: 'global' },
    ]);
    assert.match((await ok('status', '--relations')).stdout, /^prov:data\s+req:source\s+relator\s+regular/m);

    const req = await lines('req/0');
    const mine = req.filter((l) => l.hook.startsWith('source-'));
    assert.equal(mine[0].hook, 'source-relation-created');
    for (const remote of ['prov/0', 'prov/1']) {
      const joined = mine.findIndex((l) => l.hook === 'source-relation-joined' && l.fields.remote === remote);
      const changed = mine.findIndex((l) => l.hook === 'source-relation-changed' && l.fields.remote === remote);
      assert.ok(joined > 0 && changed > joined, `${remote}: joined then changed in ${JSON.stringify(mine)}`);
      const addr = status.applications.prov.units[remote]['public-address'];
      // the remote unit's address is filled in; its token arrives by the last relation-changed for it
      assert.equal(mine[changed].fields.addr, addr);
      const last = mine.filter((l) => l.hook === 'source-relation-changed' && l.fields.remote === remote).at(-1);
      assert.equal(last?.fields.seen, `${remote}-v1`);
    }
    // the provider's application data (written by its leader) reached the requirer
    assert.ok(
      mine.some((l) => l.fields.apptoken === 'prov-v1'),
      JSON.stringify(mine),
    );
    for (const p of ['prov/0', 'prov/1']) {
      const seen = (await lines(p)).filter((l) => l.hook.startsWith('data-'));
      assert.deepEqual(
        seen.slice(0, 2).map((l) => l.hook),
        ['data-relation-created', 'data-relation-joined'],
      );
      assert.equal(
        seen.filter((l) => l.hook === 'data-relation-changed' && l.fields.remote === 'req/0').at(-1)?.fields.seen,
        'req/0-v1',
        `${p}: ${JSON.stringify(seen)} ${JSON.stringify(req)}`,
      );
    }
  });

  test('a commit of remote data runs relation-changed again; rewriting the same values does not', async () => {
    const before = only(await lines('req/0'), 'source-relation-changed').length;
    await ok('config', 'prov', 'suffix=v2');
    await settle(c, ['default']);
    const changed = only(await lines('req/0'), 'source-relation-changed').slice(before);
    for (const remote of ['prov/0', 'prov/1']) {
      assert.ok(
        changed.some((l) => l.fields.remote === remote && l.fields.seen === `${remote}-v2`),
        `${remote}: ${JSON.stringify(changed)}`,
      );
    }
    // the application bag's change came as relation-changed with no remote unit
    assert.ok(
      changed.some((l) => l.fields.remote === '' && l.fields.apptoken === 'prov-v2'),
      JSON.stringify(changed),
    );
    // config-changed on req rewrites its tokens with the same values: prov runs nothing new
    const provBefore = (await lines('prov/0')).length;
    await ok('config', 'req', 'suffix=v1');
    await settle(c, ['default']);
    assert.equal((await lines('prov/0')).length, provBefore);
  });

  test('a unit added joins every integration; the remote units see it join', async () => {
    await ok('add-unit', 'req');
    await settle(c, ['default']);
    const hooks = await hookNames(c, uuid, 'req/1');
    assert.deepEqual(hooks.slice(0, 3), ['install', 'peers-relation-created', 'source-relation-created']);
    const joined = only(await lines('req/1'), 'source-relation-joined').map((l) => l.fields.remote);
    assert.deepEqual(joined.sort(), ['prov/0', 'prov/1']);
    assert.ok(only(await lines('req/0'), 'peers-relation-joined').some((l) => l.fields.remote === 'req/1'));
    for (const p of ['prov/0', 'prov/1']) {
      const pl = await lines(p);
      const j = pl.findIndex((l) => l.hook === 'data-relation-joined' && l.fields.remote === 'req/1');
      const ch = pl.findIndex((l) => l.hook === 'data-relation-changed' && l.fields.remote === 'req/1');
      assert.ok(j >= 0 && ch > j, `${p}: ${JSON.stringify(pl.slice(-6))}`);
    }
  });

  test('a unit removed departs from every relation; its data stays readable in relation-departed', async () => {
    await ok('remove-unit', 'prov/1');
    await settle(c, ['default']);
    for (const r of ['req/0', 'req/1']) {
      const departed = only(await lines(r), 'source-relation-departed');
      assert.equal(departed.length, 1, `${r}: ${JSON.stringify(departed)}`);
      assert.equal(departed[0].fields.departing, 'prov/1');
      assert.equal(departed[0].fields.seen, 'prov/1-v2', 'the departing unit’s data is readable');
      assert.ok(!departed[0].fields.list.includes('prov/1'), 'relation-list no longer has it');
    }
    const peer = only(await lines('prov/0'), 'peers-relation-departed');
    assert.deepEqual(
      peer.map((l) => l.fields.departing),
      ['prov/1'],
    );
    // the leaving unit ran departed for each remote unit and broken once, between stop and remove
    const gone = await hookNames(c, uuid, 'prov/1');
    const stop = gone.lastIndexOf('stop');
    const tail = gone.slice(stop);
    assert.equal(tail.at(-1), 'remove');
    assert.deepEqual(tail.filter((h) => h === 'data-relation-departed').length, 2);
    assert.deepEqual(tail.filter((h) => h === 'data-relation-broken').length, 1);
    assert.ok(tail.indexOf('data-relation-broken') > tail.lastIndexOf('data-relation-departed'));
  });

  test('remove-integration: departed per remote unit, broken once, then the data goes', async () => {
    const id = (await integrations()).find(
      (i: { type: string; interface: string }) => i.interface === 'relator' && i.type === 'regular',
    ).id;
    await ok('remove-integration', 'req', 'prov');
    await settle(c, ['default']);
    for (const r of ['req/0', 'req/1']) {
      const ls = await lines(r);
      const broken = only(ls, 'source-relation-broken');
      assert.equal(broken.length, 1, r);
      assert.ok(
        only(ls, 'source-relation-departed').some((l) => l.fields.remote === 'prov/0'),
        r,
      );
    }
    assert.equal(only(await lines('prov/0'), 'data-relation-broken').length, 1);
    assert.ok(!(await integrations()).some((i: { id: number }) => i.id === id));
    const bags = await c.store.db.selectFrom('relation_data').selectAll().where('integration_id', '=', id).execute();
    assert.deepEqual(bags, []);
    const gone = await c.api('DELETE', '/v1/models/default/integrations?a=req&b=prov');
    assert.equal(gone.status, 404);
  });

  test('remove-application breaks its integrations: the remote units depart and run broken, the data goes', async () => {
    await ok('integrate', 'prov:data', 'third:source');
    await settle(c, ['default']);
    const id = (await integrations()).find(
      (i: { requirer: { application: string }; type: string }) =>
        i.requirer.application === 'third' && i.type === 'regular',
    ).id;
    const before = only(await lines('prov/0'), 'data-relation-broken').length;
    await ok('remove-application', 'third');
    await settle(c, ['default']);
    const pl = await lines('prov/0');
    assert.ok(
      only(pl, 'data-relation-departed').some((l) => l.fields.departing === 'third/0'),
      'prov/0 ran departed for third/0',
    );
    assert.equal(only(pl, 'data-relation-broken').length, before + 1, 'and broken once');
    assert.ok(!(await integrations()).some((i: { id: number }) => i.id === id));
    const bags = await c.store.db.selectFrom('relation_data').selectAll().where('integration_id', '=', id).execute();
    assert.deepEqual(bags, []);
  });
});
