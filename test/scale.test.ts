// scale-application: growing joins every new unit to the application's relations
// (peers too), shrinking removes the highest-numbered non-leaders and each remote
// unit departs from them; removing the leader elects the lowest unit left. On the
// local cloud (fast, with the API's answers and refusals) and over real sshd hosts.
import assert from 'node:assert/strict';
import { chmodSync, cpSync, mkdtempSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { shrinkVictims } from '../api/routes/applications.ts';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { hookNames, type RelLine, relLines, settle } from './helpers/relations.ts';

const relator = join(projectRoot, 'test', 'fixtures', 'charms', 'relator');

/**
 * The relator fixture with one action, `whoami` (sets unit= and leader=), so a test
 * can see which unit `run APP/leader` reached. Its dispatch runs the action and hands
 * every hook to relator's own dispatch.
 */
function relatorWithWhoami(): string {
  const dir = join(mkdtempSync(join(tmpdir(), 'cf-scale-charm-')), 'relator');
  cpSync(relator, dir, { recursive: true });
  renameSync(join(dir, 'dispatch'), join(dir, 'relator-dispatch'));
  writeFileSync(
    join(dir, 'dispatch'),
    [
      '#!/bin/sh',
      'set -eu',
      'case "$JUJU_DISPATCH_PATH" in',
      '  actions/whoami) action-set "unit=$JUJU_UNIT_NAME" "leader=$(is-leader)"; exit 0 ;;',
      'esac',
      'exec "$JUJU_CHARM_DIR/relator-dispatch"',
      '',
    ].join('\n'),
  );
  chmodSync(join(dir, 'dispatch'), 0o755);
  writeFileSync(join(dir, 'actions.yaml'), 'whoami:\n  description: Says which unit ran it and whether it leads.\n');
  // a name of its own: the worker caches charm tarballs per process by name and revision,
  // and the local suite's controller (same process) has relator at revision 1 too
  const meta = join(dir, 'metadata.yaml');
  writeFileSync(meta, readFileSync(meta, 'utf8').replace(/^name: relator$/m, 'name: relator-whoami'));
  return dir;
}

/** Shared by both suites: a controller, the CLI against it, and what the relator units logged. */
function harness() {
  const h = {
    c: undefined as unknown as TestController,
    uuids: {} as Record<string, string>,
    cli: (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: h.c.dataDir }),
    async ok(...args: string[]) {
      const r = await h.cli(...args);
      assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
      return r;
    },
    async status(model: string) {
      return JSON.parse((await h.ok('status', '-m', model, '--format', 'json')).stdout);
    },
    async uuid(model: string) {
      h.uuids[model] ??= (
        await h.c.store.db.selectFrom('models').select('uuid').where('name', '=', model).executeTakeFirstOrThrow()
      ).uuid;
      return h.uuids[model];
    },
    async lines(model: string, unit: string, hook: string): Promise<RelLine[]> {
      return (await relLines(h.c, await h.uuid(model), unit)).filter((l) => l.hook === hook);
    },
    /** The units an application has in `status`, sorted. */
    async unitsOf(model: string, app: string): Promise<string[]> {
      return Object.keys((await h.status(model)).applications[app]?.units ?? {}).sort();
    },
    async operations(model: string): Promise<number> {
      const r = await h.c.store.db
        .selectFrom('operations')
        .select((eb) => eb.fn.countAll<string>().as('n'))
        .where('model_name', '=', model)
        .executeTakeFirstOrThrow();
      return Number(r.n);
    },
  };
  return h;
}

const range = (from: number, to: number, app: string) =>
  Array.from({ length: to - from + 1 }, (_, i) => `${app}/${from + i}`);

test('shrinkVictims: the highest-numbered non-leaders first, the leader last', () => {
  const units = (leader: number, ...ns: number[]) =>
    ns.map((n) => ({ name: `a/${n}`, number: n, leader: n === leader }));
  assert.deepEqual(shrinkVictims(units(0, 0, 1, 2, 3, 4), 3), ['a/4', 'a/3', 'a/2']);
  // the leader is the highest: it stays while others can go
  assert.deepEqual(shrinkVictims(units(4, 0, 1, 2, 3, 4), 3), ['a/3', 'a/2', 'a/1']);
  assert.deepEqual(shrinkVictims(units(4, 1, 4, 7), 2), ['a/7', 'a/1']);
  // everything goes: the leader last
  assert.deepEqual(shrinkVictims(units(4, 1, 4, 7), 3), ['a/7', 'a/1', 'a/4']);
  assert.deepEqual(shrinkVictims(units(-1, 2, 5), 1), ['a/5']);
  assert.deepEqual(shrinkVictims(units(2, 2, 5), 0), []);
});

describe('scale-application on the local cloud', () => {
  const h = harness();

  before(async () => {
    h.c = await startTestController();
    await h.ok('deploy', relator, 'loc');
    await h.ok('deploy', relator, 'gone');
    await settle(h.c, ['default']);
  });
  after(async () => {
    await h.c?.stop();
  });

  test('bad input is refused naming the field; unknown app 404; app being removed 409', async () => {
    const put = (app: string, body: unknown) => h.c.api('PUT', `/v1/models/default/applications/${app}/scale`, body);
    for (const scale of [-1, 1.5, 1001, '3', null]) {
      const r = await put('loc', { scale });
      assert.equal(r.status, 400, `scale ${JSON.stringify(scale)}: ${JSON.stringify(r.body)}`);
      assert.ok(
        r.body.details.some((d: { field: string }) => d.field === 'body.scale'),
        JSON.stringify(r.body),
      );
    }
    const missing = await put('loc', {});
    assert.equal(missing.status, 400);
    assert.equal(missing.body.details[0].field, 'body.scale');
    const extra = await put('loc', { scale: 2, force: true });
    assert.equal(extra.status, 400);
    assert.equal(extra.body.details[0].field, 'body.force');
    const unknown = await put('nope', { scale: 2 });
    assert.equal(unknown.status, 404);
    assert.match(unknown.body.message, /application "nope" not found/);
    const noModel = await h.c.api('PUT', '/v1/models/nomodel/applications/loc/scale', { scale: 2 });
    assert.equal(noModel.status, 404);
    // --to only places new units: refused on a shrink or no change, and beyond the new units
    const toOnSame = await put('loc', { scale: 1, to: ['0'] });
    assert.equal(toOnSame.status, 400);
    assert.equal(toOnSame.body.details[0].field, 'body.to');
    const tooMany = await put('loc', { scale: 2, to: ['0', '1'] });
    assert.equal(tooMany.status, 400);
    assert.match(tooMany.body.message, /adds 1 unit\(s\), but --to names 2 machine\(s\)/);
    // the CLI refuses what is not a number of units itself, exit 2
    for (const bad of ['x', '1.5', '1001']) {
      const r = await h.cli('scale-application', 'loc', bad);
      assert.equal(r.code, 2, `${bad}: ${r.stderr}`);
      assert.match(r.stderr, /invalid scale/);
    }
    assert.deepEqual(await h.unitsOf('default', 'loc'), ['loc/0'], 'nothing changed');

    const removing = await h.c.api('DELETE', '/v1/models/default/applications/gone');
    assert.equal(removing.status, 202);
    const refused = await put('gone', { scale: 3 });
    assert.equal(refused.status, 409);
    assert.match(refused.body.message, /application "gone" is being removed/);
    await h.c.waitOperation(removing.body.operation.id);
  });

  test('the same number of units: 200, no operation, says so', async () => {
    const before = await h.operations('default');
    const r = await h.c.api('PUT', '/v1/models/default/applications/loc/scale', { scale: 1 });
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, {
      operation: null,
      application: 'loc',
      scale: 1,
      units: ['loc/0'],
      message: 'application "loc" already has 1 unit(s); nothing to do',
    });
    const out = await h.ok('scale-application', 'loc', '1');
    assert.equal(out.stdout, 'application "loc" already has 1 unit(s); nothing to do\n');
    assert.equal(await h.operations('default'), before, 'no operation was recorded');
  });

  test('grow then shrink: peers join and depart; scale 0 and back elects the new unit', async () => {
    const up = await h.ok('scale-application', 'loc', '4');
    assert.match(up.stdout, /Scaled "loc" from 1 to 4 unit\(s\): added loc\/1, loc\/2, loc\/3\./);
    await settle(h.c, ['default']);
    assert.deepEqual(await h.unitsOf('default', 'loc'), range(0, 3, 'loc'));
    const all = range(0, 3, 'loc');
    for (const u of all) {
      const joined = (await h.lines('default', u, 'peers-relation-joined')).map((l) => l.fields.remote).sort();
      assert.deepEqual(
        joined,
        all.filter((x) => x !== u),
        `${u} joined each peer once`,
      );
    }
    const op = await h.c.store.db
      .selectFrom('operations')
      .selectAll()
      .where('kind', '=', 'scale')
      .orderBy('id', 'desc')
      .executeTakeFirstOrThrow();
    assert.equal(op.state, 'succeeded');
    assert.equal(op.target, 'loc');
    assert.match(op.summary, /^scale loc from 1 to 4 unit\(s\): add 3$/);

    const down = await h.ok('scale-application', 'loc', '2');
    assert.match(down.stdout, /Scaled "loc" from 4 to 2 unit\(s\): removed loc\/3, loc\/2\./);
    await settle(h.c, ['default']);
    assert.deepEqual(await h.unitsOf('default', 'loc'), ['loc/0', 'loc/1']);
    for (const u of ['loc/0', 'loc/1']) {
      const departed = (await h.lines('default', u, 'peers-relation-departed')).map((l) => l.fields.departing).sort();
      assert.deepEqual(departed, ['loc/2', 'loc/3'], u);
    }
    const s = await h.status('default');
    assert.equal(s.applications.loc.units['loc/0'].leader, true, 'the leader stayed');

    // scale to 0: the leader goes last; back to 1: the new unit has no leader before it, and leads
    const zero = await h.ok('scale-application', 'loc', '0');
    assert.match(zero.stdout, /removed loc\/1, loc\/0\./);
    await settle(h.c, ['default']);
    assert.deepEqual(await h.unitsOf('default', 'loc'), []);
    await h.ok('scale-application', 'loc', '1');
    await settle(h.c, ['default']);
    assert.deepEqual(await h.unitsOf('default', 'loc'), ['loc/4'], 'unit numbers are never reused');
    assert.equal((await h.status('default')).applications.loc.units['loc/4'].leader, true);
    assert.ok((await hookNames(h.c, await h.uuid('default'), 'loc/4')).includes('leader-elected'));

    // add-unit shares the code path: the next number, not the leader, joins its peer
    const add = await h.ok('add-unit', 'loc');
    assert.match(add.stdout, /Added 1 unit\(s\) to "loc"/);
    await settle(h.c, ['default']);
    const added = await h.c.store.db
      .selectFrom('operations')
      .select(['kind', 'target'])
      .orderBy('id', 'desc')
      .executeTakeFirstOrThrow();
    assert.deepEqual(added, { kind: 'add-unit', target: 'loc' });
    const s2 = await h.status('default');
    assert.deepEqual(Object.keys(s2.applications.loc.units).sort(), ['loc/4', 'loc/5']);
    assert.notEqual(s2.applications.loc.units['loc/5'].leader, true);
    assert.deepEqual(
      (await h.lines('default', 'loc/5', 'peers-relation-joined')).map((l) => l.fields.remote),
      ['loc/4'],
    );
  });
});

const unsupported = fleetUnsupportedReason();

describe('scale-application over SSH machines', { skip: unsupported }, () => {
  const h = harness();
  let fleet: Fleet;
  let charm: string;
  const M = 'fleet';

  before(async () => {
    charm = relatorWithWhoami();
    [fleet, h.c] = await Promise.all([createFleet(5), startTestController()]);
    await h.ok('add-model', M, '--cloud', 'manual');
    for (const host of fleet.hosts) {
      await h.ok('add-machine', `ssh:root@${host.address}:${host.port}`, '--private-key', host.privateKeyPath, '-m', M);
    }
    await h.ok('deploy', charm, 'prov', '--to', '0', '-m', M);
    await h.ok('deploy', charm, 'req', '--to', '1', '-m', M);
    await h.ok('integrate', 'prov:data', 'req:source', '-m', M);
    await settle(h.c, [M]);
  });
  after(async () => {
    await h.c?.stop();
    await fleet?.destroy();
  });

  test('scale up across hosts: every new unit joins the provider and its peers', async () => {
    // four new units on three hosts: req/1 and req/4 share host 2
    const r = await h.ok('scale-application', 'req', '5', '--to', '2,3,4,2', '-m', M);
    assert.match(r.stdout, /Scaled "req" from 1 to 5 unit\(s\): added req\/1, req\/2, req\/3, req\/4\./);
    await settle(h.c, [M], 240_000);
    const s = await h.status(M);
    const reqUnits = range(0, 4, 'req');
    assert.deepEqual(Object.keys(s.applications.req.units).sort(), reqUnits);
    const machines = reqUnits.map((u) => s.applications.req.units[u].machine);
    assert.deepEqual(machines, ['1', '2', '3', '4', '2']);
    const addr = (u: string) => s.applications.req.units[u]['public-address'];
    assert.equal(addr('req/1'), addr('req/4'), 'req/1 and req/4 share a host');
    assert.equal(addr('req/1'), fleet.hosts[2].address);
    assert.equal(addr('req/3'), fleet.hosts[4].address);
    for (const u of reqUnits) assert.equal(s.applications.req.units[u]['workload-status'].current, 'active', u);

    for (const u of range(1, 4, 'req')) {
      const joined = await h.lines(M, u, 'source-relation-joined');
      assert.deepEqual(
        joined.map((l) => l.fields.remote),
        ['prov/0'],
        `${u} joined prov/0 once`,
      );
      // and read prov/0's data and address
      const changed = (await h.lines(M, u, 'source-relation-changed')).filter((l) => l.fields.remote === 'prov/0');
      assert.equal(changed.at(-1)?.fields.seen, 'prov/0-v1', u);
      assert.equal(changed.at(-1)?.fields.addr, s.applications.prov.units['prov/0']['public-address'], u);
    }
    const provJoined = (await h.lines(M, 'prov/0', 'data-relation-joined')).map((l) => l.fields.remote).sort();
    assert.deepEqual(provJoined, reqUnits, 'prov/0 joined req/0 (integrate) and req/1..4 (scale), each once');
    for (const u of range(1, 4, 'req')) {
      const last = (await h.lines(M, 'prov/0', 'data-relation-changed')).filter((l) => l.fields.remote === u).at(-1);
      assert.equal(last?.fields.seen, `${u}-v1`, `prov/0 read ${u}'s token`);
      assert.equal(last?.fields.addr, addr(u), `prov/0 saw ${u}'s address`);
    }
    for (const u of reqUnits) {
      const peers = (await h.lines(M, u, 'peers-relation-joined')).map((l) => l.fields.remote).sort();
      assert.deepEqual(
        peers,
        reqUnits.filter((x) => x !== u),
        `${u} joined each peer once`,
      );
    }
  });

  test('scale down: the highest units go; the provider and the peers left depart from each', async () => {
    const r = await h.ok('scale-application', 'req', '2', '-m', M);
    assert.match(r.stdout, /Scaled "req" from 5 to 2 unit\(s\): removed req\/4, req\/3, req\/2\./);
    await settle(h.c, [M], 240_000);
    const gone = ['req/2', 'req/3', 'req/4'];
    assert.deepEqual(await h.unitsOf(M, 'req'), ['req/0', 'req/1']);
    const departed = await h.lines(M, 'prov/0', 'data-relation-departed');
    assert.deepEqual(departed.map((l) => l.fields.departing).sort(), gone, 'prov/0 departed from each removed unit');
    for (const l of departed) assert.ok(!l.fields.list.split(',').includes(l.fields.departing), JSON.stringify(l));
    for (const u of ['req/0', 'req/1']) {
      const peers = await h.lines(M, u, 'peers-relation-departed');
      assert.deepEqual(peers.map((l) => l.fields.departing).sort(), gone, `${u} departed from each removed peer`);
    }
    // the removed units' own teardown ran
    for (const u of gone) {
      const hooks = await hookNames(h.c, await h.uuid(M), u);
      assert.ok(hooks.indexOf('stop') > hooks.indexOf('start'), `${u} ran stop after start: ${hooks.join(' ')}`);
      assert.equal(hooks.at(-1), 'remove', `${u} ran remove last: ${hooks.join(' ')}`);
    }
    const rows = await h.c.store.db.selectFrom('units').select('name').where('application', '=', 'req').execute();
    assert.deepEqual(rows.map((x) => x.name).sort(), ['req/0', 'req/1'], 'the removed units are gone from the store');
    // req/0 still leads
    assert.equal((await h.status(M)).applications.req.units['req/0'].leader, true);
    // scaling to what it has changes nothing
    const same = await h.ok('scale-application', 'req', '2', '-m', M);
    assert.match(same.stdout, /already has 2 unit\(s\); nothing to do/);
  });

  test('removing the leader: the lowest unit left is elected, the other told, actions on req/leader follow', async () => {
    await h.ok('scale-application', 'req', '3', '--to', '3', '-m', M);
    await settle(h.c, [M], 240_000);
    assert.deepEqual(await h.unitsOf(M, 'req'), ['req/0', 'req/1', 'req/5']);
    const before = JSON.parse((await h.ok('run', 'req/leader', 'whoami', '-m', M, '--format', 'json')).stdout);
    assert.equal(before.unit, 'req/0');
    assert.deepEqual(before.results, { unit: 'req/0', leader: 'True' });
    const uuid = await h.uuid(M);
    const mark = Number(
      (
        await h.c.store.db
          .selectFrom('log_entries')
          .select((eb) => eb.fn.max('id').as('id'))
          .where('model_uuid', '=', uuid)
          .executeTakeFirstOrThrow()
      ).id ?? 0,
    );

    await h.ok('remove-unit', 'req/0', '-m', M);
    await settle(h.c, [M], 240_000);
    const s = await h.status(M);
    assert.deepEqual(Object.keys(s.applications.req.units).sort(), ['req/1', 'req/5']);
    assert.equal(s.applications.req.units['req/1'].leader, true);
    assert.notEqual(s.applications.req.units['req/5'].leader, true);
    // what each ran since the removal, in the order the controller logged it
    const since = await h.c.store.db
      .selectFrom('log_entries')
      .select(['id', 'entity', 'message'])
      .where('model_uuid', '=', uuid)
      .where('id', '>', mark)
      .where('message', 'like', 'HOOK leader-%')
      .orderBy('id')
      .execute();
    const elected = since.filter((l) => l.entity === 'req/1' && l.message === 'HOOK leader-elected');
    assert.equal(elected.length, 1, JSON.stringify(since));
    assert.ok(!since.some((l) => l.entity === 'req/5' && l.message === 'HOOK leader-elected'));
    // req/5 is told, and its last leader-settings-changed (after the election) reads the new leader's data
    const told = since.filter((l) => l.entity === 'req/5' && l.message.startsWith('HOOK leader-settings-changed'));
    assert.ok(told.length > 0, JSON.stringify(since));
    assert.equal(told.at(-1)?.message, 'HOOK leader-settings-changed leader-token=req/1');
    assert.ok(told.at(-1)!.id > elected[0].id, 'after req/1 was elected');
    // the provider departed from req/0; req/1 and req/5 from their peer
    assert.ok((await h.lines(M, 'prov/0', 'data-relation-departed')).some((l) => l.fields.departing === 'req/0'));
    for (const u of ['req/1', 'req/5']) {
      assert.ok(
        (await h.lines(M, u, 'peers-relation-departed')).some((l) => l.fields.departing === 'req/0'),
        u,
      );
    }

    // actions on req/leader now reach req/1
    const after = JSON.parse((await h.ok('run', 'req/leader', 'whoami', '-m', M, '--format', 'json')).stdout);
    assert.equal(after.unit, 'req/1');
    assert.deepEqual(after.results, { unit: 'req/1', leader: 'True' });
    const other = JSON.parse((await h.ok('run', 'req/5', 'whoami', '-m', M, '--format', 'json')).stdout);
    assert.deepEqual(other.results, { unit: 'req/5', leader: 'False' });
  });
});
