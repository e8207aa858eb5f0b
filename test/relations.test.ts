// Which relation hooks a unit runs (workflows/relations.ts), checked against
// Juju's uniter semantics, and how those hooks go through the unit agent's queue
// (enqueueCoalescing / nextBatch in workflows/unit-agent.ts).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { UnitEvent } from '../workflows/messages.ts';
import {
  introduce,
  type RelationSeen,
  type RelationsSeen,
  type RelationView,
  relationDelta,
  teardown,
} from '../workflows/relations.ts';
import { enqueueCoalescing, heard, nextBatch, type QueuedEvent, type UnitAgentState } from '../workflows/unit-agent.ts';

/** A `db` relation (id 7) of this application with the `pg` application, unless told otherwise. */
function view(units: Record<string, number>, extra: Partial<RelationView> = {}): RelationView {
  return { id: 7, endpoint: 'db', remoteApp: 'pg', dying: false, units, appVersion: 0, ...extra };
}

/** One line per event: `hook remoteUnit [members]`, for sequences. */
function lines(events: UnitEvent[]): string[] {
  return events.map(
    (e) =>
      `${e.hook}${e.remoteUnit ? ` ${e.remoteUnit}` : ''}${e.departingUnit ? ` departing=${e.departingUnit}` : ''}` +
      ` [${(e.members ?? ['?']).join(',')}]`,
  );
}

/** A started unit that has been told of `units` in relation 7 (created, joined, changed). */
function knowing(units: Record<string, number>, appVersion = 0): RelationsSeen {
  const seen: RelationsSeen = {};
  relationDelta(seen, [view(units, { appVersion })], true);
  assert.deepEqual(seen['7']?.units, units);
  return seen;
}

describe('introduce', () => {
  test('tells a unit of each new relation as created, with no members, and records it as seen', () => {
    const seen: RelationsSeen = {};
    const events = introduce(seen, [
      { id: 1, endpoint: 'db', remoteApp: 'pg' },
      { id: 2, endpoint: 'cluster', remoteApp: 'kv' },
    ]);
    assert.deepEqual(events, [
      { hook: 'db-relation-created', relationId: 1, remoteApp: 'pg', members: [] },
      { hook: 'cluster-relation-created', relationId: 2, remoteApp: 'kv', members: [] },
    ]);
    assert.deepEqual(seen, {
      1: { endpoint: 'db', remoteApp: 'pg', units: {}, appVersion: 0 },
      2: { endpoint: 'cluster', remoteApp: 'kv', units: {}, appVersion: 0 },
    });
  });

  test('a relation already seen is not created again', () => {
    const known: RelationSeen = { endpoint: 'db', remoteApp: 'pg', units: { 'pg/0': 3 }, appVersion: 2 };
    const seen: RelationsSeen = { 1: known };
    const events = introduce(seen, [
      { id: 1, endpoint: 'db', remoteApp: 'pg' },
      { id: 4, endpoint: 'web', remoteApp: 'haproxy' },
    ]);
    assert.deepEqual(lines(events), ['web-relation-created []']);
    assert.equal(seen['1'], known, 'what the unit knows of relation 1 is kept as it was');
    assert.deepEqual(seen['1'].units, { 'pg/0': 3 });
    assert.deepEqual(introduce(seen, [{ id: 4, endpoint: 'web', remoteApp: 'haproxy' }]), []);
  });

  test('a relation introduced at install is not created again by relationDelta; its units join', () => {
    const seen: RelationsSeen = {};
    introduce(seen, [{ id: 7, endpoint: 'db', remoteApp: 'pg' }]);
    assert.deepEqual(lines(relationDelta(seen, [view({ 'pg/0': 1 })], true)), [
      'db-relation-joined pg/0 [pg/0]',
      'db-relation-changed pg/0 [pg/0]',
    ]);
  });
});

describe('relationDelta', () => {
  test('a new relation with two remote units: created, then joined and changed per unit, with members', () => {
    const seen: RelationsSeen = {};
    const events = relationDelta(seen, [view({ 'pg/1': 0, 'pg/0': 2 }, { appVersion: 1 })], true);
    assert.deepEqual(events, [
      { hook: 'db-relation-created', relationId: 7, remoteApp: 'pg', members: [] },
      { hook: 'db-relation-joined', relationId: 7, remoteUnit: 'pg/0', remoteApp: 'pg', members: ['pg/0'] },
      { hook: 'db-relation-changed', relationId: 7, remoteUnit: 'pg/0', remoteApp: 'pg', members: ['pg/0'] },
      { hook: 'db-relation-joined', relationId: 7, remoteUnit: 'pg/1', remoteApp: 'pg', members: ['pg/0', 'pg/1'] },
      { hook: 'db-relation-changed', relationId: 7, remoteUnit: 'pg/1', remoteApp: 'pg', members: ['pg/0', 'pg/1'] },
    ]);
    assert.deepEqual(seen, { 7: { endpoint: 'db', remoteApp: 'pg', units: { 'pg/0': 2, 'pg/1': 0 }, appVersion: 1 } });
    // each event is a fresh object: members of one hook are not shared with another's
    assert.notEqual(events[1].members, events[3].members);
  });

  test('every relation-created first (in the order of the views), then each relation in turn, by id', () => {
    const seen: RelationsSeen = {};
    const events = relationDelta(
      seen,
      [view({ 'pg/0': 0 }, { id: 3 }), view({ 'haproxy/0': 0 }, { id: 1, endpoint: 'web', remoteApp: 'haproxy' })],
      true,
    );
    // every created first (relation-created goes before the rest), then per relation
    assert.deepEqual(
      events.map((e) => `${e.relationId} ${e.hook}`),
      [
        '3 db-relation-created',
        '1 web-relation-created',
        '1 web-relation-joined',
        '1 web-relation-changed',
        '3 db-relation-joined',
        '3 db-relation-changed',
      ],
    );
  });

  test("a unit's data bag version going up: relation-changed for that unit only", () => {
    const seen = knowing({ 'pg/0': 1, 'pg/1': 1 });
    const events = relationDelta(seen, [view({ 'pg/0': 1, 'pg/1': 2 })], true);
    assert.deepEqual(events, [
      { hook: 'db-relation-changed', relationId: 7, remoteUnit: 'pg/1', remoteApp: 'pg', members: ['pg/0', 'pg/1'] },
    ]);
    assert.equal(seen['7'].units['pg/1'], 2);
    // two units at once: one changed each, in unit order
    assert.deepEqual(lines(relationDelta(seen, [view({ 'pg/0': 5, 'pg/1': 3 })], true)), [
      'db-relation-changed pg/0 [pg/0,pg/1]',
      'db-relation-changed pg/1 [pg/0,pg/1]',
    ]);
  });

  test('a version that did not go up (same or lower) brings no hook', () => {
    const seen = knowing({ 'pg/0': 4 });
    assert.deepEqual(relationDelta(seen, [view({ 'pg/0': 4 })], true), []);
    assert.deepEqual(relationDelta(seen, [view({ 'pg/0': 3 })], true), []);
  });

  test("the remote application's bag version going up: one relation-changed with no remote unit", () => {
    const seen = knowing({ 'pg/0': 1, 'pg/1': 1 }, 1);
    const events = relationDelta(seen, [view({ 'pg/0': 1, 'pg/1': 1 }, { appVersion: 2 })], true);
    assert.deepEqual(events, [
      { hook: 'db-relation-changed', relationId: 7, remoteApp: 'pg', members: ['pg/0', 'pg/1'] },
    ]);
    assert.equal('remoteUnit' in events[0], false, 'no JUJU_REMOTE_UNIT for application data');
    assert.equal(seen['7'].appVersion, 2);
    assert.deepEqual(relationDelta(seen, [view({ 'pg/0': 1, 'pg/1': 1 }, { appVersion: 2 })], true), []);
  });

  test('a unit bag and the app bag changing together: the unit changed, then the app changed', () => {
    const seen = knowing({ 'pg/0': 1 }, 1);
    assert.deepEqual(lines(relationDelta(seen, [view({ 'pg/0': 2 }, { appVersion: 2 })], true)), [
      'db-relation-changed pg/0 [pg/0]',
      'db-relation-changed [pg/0]',
    ]);
  });

  test('the app bag changing in the same delta as the first join: no extra app relation-changed', () => {
    const seen: RelationsSeen = {};
    const events = relationDelta(seen, [view({ 'pg/0': 1 }, { appVersion: 3 })], true);
    assert.deepEqual(lines(events), [
      'db-relation-created []',
      'db-relation-joined pg/0 [pg/0]',
      'db-relation-changed pg/0 [pg/0]',
    ]);
    assert.equal(events.filter((e) => e.hook === 'db-relation-changed' && !e.remoteUnit).length, 0);
    assert.equal(seen['7'].appVersion, 3, 'the joining unit read the app data in its own relation-changed');
    // a later bump does bring the app changed
    assert.deepEqual(lines(relationDelta(seen, [view({ 'pg/0': 1 }, { appVersion: 4 })], true)), [
      'db-relation-changed [pg/0]',
    ]);
  });

  test('the app bag changing while another unit joins an established relation: no extra app changed', () => {
    const seen = knowing({ 'pg/0': 1 }, 1);
    assert.deepEqual(lines(relationDelta(seen, [view({ 'pg/0': 1, 'pg/1': 1 }, { appVersion: 2 })], true)), [
      'db-relation-joined pg/1 [pg/0,pg/1]',
      'db-relation-changed pg/1 [pg/0,pg/1]',
    ]);
    assert.equal(seen['7'].appVersion, 2);
  });

  test('a join in another relation does not hold back the app changed of this one', () => {
    const seen: RelationsSeen = {};
    relationDelta(seen, [view({ 'pg/0': 1 }, { appVersion: 1 })], true);
    const events = relationDelta(
      seen,
      [
        view({ 'pg/0': 1 }, { appVersion: 2 }),
        view({ 'haproxy/0': 0 }, { id: 2, endpoint: 'web', remoteApp: 'haproxy' }),
      ],
      true,
    );
    assert.deepEqual(
      events.map((e) => `${e.relationId} ${e.hook} ${e.remoteUnit ?? '-'}`),
      [
        '2 web-relation-created -',
        '2 web-relation-joined haproxy/0',
        '2 web-relation-changed haproxy/0',
        '7 db-relation-changed -',
      ],
    );
  });

  test('the app bag changing while the remote application has no units: one app relation-changed', {}, () => {
    const seen: RelationsSeen = {};
    relationDelta(seen, [view({})], true);
    assert.deepEqual(relationDelta(seen, [view({}, { appVersion: 1 })], true), [
      { hook: 'db-relation-changed', relationId: 7, remoteApp: 'pg', members: [] },
    ]);
  });

  test('a unit leaving: relation-departed for it, with the relation-list after it left', () => {
    const seen = knowing({ 'pg/0': 1, 'pg/1': 1, 'pg/2': 1 });
    const events = relationDelta(seen, [view({ 'pg/0': 1, 'pg/2': 1 })], true);
    assert.deepEqual(events, [
      {
        hook: 'db-relation-departed',
        relationId: 7,
        remoteUnit: 'pg/1',
        remoteApp: 'pg',
        departingUnit: 'pg/1',
        members: ['pg/0', 'pg/2'],
      },
    ]);
    assert.deepEqual(seen['7'].units, { 'pg/0': 1, 'pg/2': 1 });
    assert.deepEqual(relationDelta(seen, [view({ 'pg/0': 1, 'pg/2': 1 })], true), []);
  });

  test('a unit replaced by another in one delta: departed first, then the new unit joins', () => {
    const seen = knowing({ 'pg/0': 1 });
    assert.deepEqual(lines(relationDelta(seen, [view({ 'pg/1': 0 })], true)), [
      'db-relation-departed pg/0 departing=pg/0 []',
      'db-relation-joined pg/1 [pg/1]',
      'db-relation-changed pg/1 [pg/1]',
    ]);
  });

  test('a unit that left and came back joins again', () => {
    const seen = knowing({ 'pg/0': 1 });
    relationDelta(seen, [view({})], true);
    assert.deepEqual(lines(relationDelta(seen, [view({ 'pg/0': 1 })], true)), [
      'db-relation-joined pg/0 [pg/0]',
      'db-relation-changed pg/0 [pg/0]',
    ]);
  });

  test('a dying relation: departed for every unit, then broken once; nothing after', () => {
    const seen = knowing({ 'pg/0': 1, 'pg/1': 1 }, 1);
    // pending data changes of a dying relation bring no relation-changed
    const events = relationDelta(seen, [view({ 'pg/0': 9, 'pg/1': 9 }, { dying: true, appVersion: 9 })], true);
    assert.deepEqual(events, [
      {
        hook: 'db-relation-departed',
        relationId: 7,
        remoteUnit: 'pg/0',
        remoteApp: 'pg',
        departingUnit: 'pg/0',
        members: ['pg/1'],
      },
      {
        hook: 'db-relation-departed',
        relationId: 7,
        remoteUnit: 'pg/1',
        remoteApp: 'pg',
        departingUnit: 'pg/1',
        members: [],
      },
      { hook: 'db-relation-broken', relationId: 7, remoteApp: 'pg', members: [] },
    ]);
    assert.deepEqual(seen, {});
    // still dying, then gone: broken is not run again, nor is the relation created again
    assert.deepEqual(relationDelta(seen, [view({ 'pg/0': 9, 'pg/1': 9 }, { dying: true })], true), []);
    assert.deepEqual(relationDelta(seen, [], true), []);
  });

  test('a relation missing from the views: the same as dying', () => {
    const dying = knowing({ 'pg/0': 1, 'pg/1': 1 });
    const missing = knowing({ 'pg/0': 1, 'pg/1': 1 });
    const expected = relationDelta(dying, [view({ 'pg/0': 1, 'pg/1': 1 }, { dying: true })], true);
    const events = relationDelta(missing, [], true);
    assert.deepEqual(events, expected);
    assert.deepEqual(lines(events), [
      'db-relation-departed pg/0 departing=pg/0 [pg/1]',
      'db-relation-departed pg/1 departing=pg/1 []',
      'db-relation-broken []',
    ]);
    assert.deepEqual(missing, {});
    assert.deepEqual(relationDelta(missing, [], true), []);
  });

  test('a relation with no units going: broken only', () => {
    const seen = knowing({});
    assert.deepEqual(lines(relationDelta(seen, [], true)), ['db-relation-broken []']);
  });

  test('one relation going leaves the others alone', () => {
    const seen: RelationsSeen = {};
    const web = view({ 'haproxy/0': 1 }, { id: 2, endpoint: 'web', remoteApp: 'haproxy' });
    relationDelta(seen, [view({ 'pg/0': 1 }), web], true);
    const events = relationDelta(seen, [web], true);
    assert.deepEqual(
      events.map((e) => `${e.relationId} ${e.hook}`),
      ['7 db-relation-departed', '7 db-relation-broken'],
    );
    assert.deepEqual(Object.keys(seen), ['2']);
    assert.deepEqual(seen['2'].units, { 'haproxy/0': 1 });
  });

  test('a relation already dying when the unit first hears of it brings no hooks', () => {
    const seen: RelationsSeen = {};
    assert.deepEqual(relationDelta(seen, [view({ 'pg/0': 1 }, { dying: true })], true), []);
    assert.deepEqual(relationDelta(seen, [view({ 'pg/0': 1 }, { dying: true })], false), []);
    assert.deepEqual(seen, {});
  });

  test('before start: created only; joined and changed come once started, with the latest data', () => {
    const seen: RelationsSeen = {};
    assert.deepEqual(lines(relationDelta(seen, [view({ 'pg/1': 1, 'pg/0': 1 }, { appVersion: 1 })], false)), [
      'db-relation-created []',
    ]);
    assert.deepEqual(seen['7'], { endpoint: 'db', remoteApp: 'pg', units: {}, appVersion: 0 });
    // data changes and leaving units before start bring nothing either
    assert.deepEqual(relationDelta(seen, [view({ 'pg/0': 2 }, { appVersion: 2 })], false), []);
    assert.deepEqual(seen['7'].units, {});
    // started: the units there now join, with no separate app changed (nor a second created)
    assert.deepEqual(lines(relationDelta(seen, [view({ 'pg/0': 3, 'pg/2': 1 }, { appVersion: 3 })], true)), [
      'db-relation-joined pg/0 [pg/0]',
      'db-relation-changed pg/0 [pg/0]',
      'db-relation-joined pg/2 [pg/0,pg/2]',
      'db-relation-changed pg/2 [pg/0,pg/2]',
    ]);
    assert.deepEqual(seen['7'], {
      endpoint: 'db',
      remoteApp: 'pg',
      units: { 'pg/0': 3, 'pg/2': 1 },
      appVersion: 3,
    });
    assert.deepEqual(relationDelta(seen, [view({ 'pg/0': 3, 'pg/2': 1 }, { appVersion: 3 })], true), []);
  });

  test('before start: a relation that went (missing or dying) is broken, with no departed', () => {
    const seen: RelationsSeen = {};
    const web = view({ 'haproxy/0': 1 }, { id: 2, endpoint: 'web', remoteApp: 'haproxy' });
    const cache = view({ 'redis/0': 1 }, { id: 5, endpoint: 'cache', remoteApp: 'redis' });
    relationDelta(seen, [view({ 'pg/0': 1 }), web, cache], false);
    assert.deepEqual(Object.keys(seen), ['2', '5', '7']);
    const events = relationDelta(seen, [view({ 'pg/0': 1 }, { dying: true }), cache], false);
    assert.deepEqual(events, [
      { hook: 'web-relation-broken', relationId: 2, remoteApp: 'haproxy', members: [] },
      { hook: 'db-relation-broken', relationId: 7, remoteApp: 'pg', members: [] },
    ]);
    assert.deepEqual(Object.keys(seen), ['5']);
    // not broken twice, before or after start
    assert.deepEqual(relationDelta(seen, [view({ 'pg/0': 1 }, { dying: true }), cache], false), []);
    assert.deepEqual(lines(relationDelta(seen, [cache], true)), [
      'cache-relation-joined redis/0 [redis/0]',
      'cache-relation-changed redis/0 [redis/0]',
    ]);
  });

  test('before start: a relation created and gone in the same delta is created and broken', () => {
    const seen: RelationsSeen = {};
    relationDelta(seen, [view({})], false);
    assert.deepEqual(lines(relationDelta(seen, [view({}, { id: 8 })], false)), [
      'db-relation-created []',
      'db-relation-broken []',
    ]);
    assert.deepEqual(Object.keys(seen), ['8']);
  });

  test('idempotent: the same views a second time bring no hooks, in every state', () => {
    const steps: [RelationView[], boolean][] = [
      [[view({ 'pg/0': 1 })], false],
      [[view({ 'pg/0': 1, 'pg/1': 0 }, { appVersion: 1 })], true],
      [[view({ 'pg/0': 2, 'pg/1': 0 }, { appVersion: 2 })], true],
      [[view({ 'pg/1': 0 }, { appVersion: 2 })], true],
      [[view({ 'pg/1': 0 }, { dying: true })], true],
      [[view({ 'pg/3': 0 }, { id: 9 })], true],
      [[], true],
    ];
    const seen: RelationsSeen = {};
    for (const [i, [views, started]] of steps.entries()) {
      const first = relationDelta(seen, views, started);
      assert.ok(first.length > 0, `step ${i} brings hooks`);
      const before = structuredClone(seen);
      assert.deepEqual(relationDelta(seen, views, started), [], `step ${i} again`);
      assert.deepEqual(seen, before, `step ${i} again leaves seen alone`);
    }
  });

  test('seen survives a JSON round trip (continue-as-new) with the same outcome', () => {
    const seen = knowing({ 'pg/0': 1, 'pg/1': 1 }, 1);
    const copy: RelationsSeen = JSON.parse(JSON.stringify(seen));
    const next = [view({ 'pg/1': 2, 'pg/3': 0 }, { appVersion: 2 })];
    assert.deepEqual(relationDelta(copy, next, true), relationDelta(seen, next, true));
    assert.deepEqual(copy, seen);
  });

  test('peers: the other units of this application, and app data under its own name', () => {
    // kv/0's view of its peer relation
    const peer = (units: Record<string, number>, appVersion = 0): RelationView[] => [
      { id: 0, endpoint: 'cluster', remoteApp: 'kv', dying: false, units, appVersion },
    ];
    const seen: RelationsSeen = {};
    assert.deepEqual(relationDelta(seen, peer({}), false), [
      { hook: 'cluster-relation-created', relationId: 0, remoteApp: 'kv', members: [] },
    ]);
    // alone after start: nothing to join
    assert.deepEqual(relationDelta(seen, peer({}), true), []);
    assert.deepEqual(relationDelta(seen, peer({ 'kv/2': 0, 'kv/1': 0 }), true), [
      { hook: 'cluster-relation-joined', relationId: 0, remoteUnit: 'kv/1', remoteApp: 'kv', members: ['kv/1'] },
      { hook: 'cluster-relation-changed', relationId: 0, remoteUnit: 'kv/1', remoteApp: 'kv', members: ['kv/1'] },
      {
        hook: 'cluster-relation-joined',
        relationId: 0,
        remoteUnit: 'kv/2',
        remoteApp: 'kv',
        members: ['kv/1', 'kv/2'],
      },
      {
        hook: 'cluster-relation-changed',
        relationId: 0,
        remoteUnit: 'kv/2',
        remoteApp: 'kv',
        members: ['kv/1', 'kv/2'],
      },
    ]);
    assert.deepEqual(relationDelta(seen, peer({ 'kv/1': 0, 'kv/2': 0 }, 1), true), [
      { hook: 'cluster-relation-changed', relationId: 0, remoteApp: 'kv', members: ['kv/1', 'kv/2'] },
    ]);
    assert.deepEqual(lines(relationDelta(seen, peer({ 'kv/2': 1 }, 1), true)), [
      'cluster-relation-departed kv/1 departing=kv/1 [kv/2]',
      'cluster-relation-changed kv/2 [kv/2]',
    ]);
    assert.deepEqual(lines(teardown(seen, 'kv/0')), [
      'cluster-relation-departed kv/2 departing=kv/0 []',
      'cluster-relation-broken []',
    ]);
  });

  test('unit order: app/2 before app/10, numerically, for joins, changes and members', () => {
    const seen: RelationsSeen = {};
    const units = { 'pg/10': 0, 'pg/2': 0, 'pg/1': 0 };
    assert.deepEqual(lines(relationDelta(seen, [view(units)], true)), [
      'db-relation-created []',
      'db-relation-joined pg/1 [pg/1]',
      'db-relation-changed pg/1 [pg/1]',
      'db-relation-joined pg/2 [pg/1,pg/2]',
      'db-relation-changed pg/2 [pg/1,pg/2]',
      'db-relation-joined pg/10 [pg/1,pg/2,pg/10]',
      'db-relation-changed pg/10 [pg/1,pg/2,pg/10]',
    ]);
    assert.deepEqual(lines(relationDelta(seen, [view({ 'pg/10': 1, 'pg/2': 1, 'pg/1': 0 })], true)), [
      'db-relation-changed pg/2 [pg/1,pg/2,pg/10]',
      'db-relation-changed pg/10 [pg/1,pg/2,pg/10]',
    ]);
    assert.deepEqual(lines(relationDelta(seen, [view({})], true)), [
      'db-relation-departed pg/1 departing=pg/1 [pg/2,pg/10]',
      'db-relation-departed pg/2 departing=pg/2 [pg/10]',
      'db-relation-departed pg/10 departing=pg/10 []',
    ]);
  });

  test('unit order holds for departures of units that joined in different deltas', {}, () => {
    const seen = knowing({ 'pg/10': 0 });
    relationDelta(seen, [view({ 'pg/10': 0, 'pg/2': 0 })], true);
    assert.deepEqual(lines(relationDelta(seen, [view({}, { dying: true })], true)), [
      'db-relation-departed pg/2 departing=pg/2 [pg/10]',
      'db-relation-departed pg/10 departing=pg/10 []',
      'db-relation-broken []',
    ]);
  });
});

describe('teardown', () => {
  test('per relation: departed for each remote unit it knows (departing: itself), then broken; seen emptied', () => {
    const seen: RelationsSeen = {};
    relationDelta(
      seen,
      [
        view({ 'pg/10': 1, 'pg/2': 1 }, { id: 7 }),
        view({}, { id: 3, endpoint: 'web', remoteApp: 'haproxy' }),
        view({ 'app/1': 0 }, { id: 12, endpoint: 'cluster', remoteApp: 'app' }),
      ],
      true,
    );
    const events = teardown(seen, 'app/0');
    assert.deepEqual(events, [
      { hook: 'web-relation-broken', relationId: 3, remoteApp: 'haproxy', members: [] },
      {
        hook: 'db-relation-departed',
        relationId: 7,
        remoteUnit: 'pg/2',
        remoteApp: 'pg',
        departingUnit: 'app/0',
        members: ['pg/10'],
      },
      {
        hook: 'db-relation-departed',
        relationId: 7,
        remoteUnit: 'pg/10',
        remoteApp: 'pg',
        departingUnit: 'app/0',
        members: [],
      },
      { hook: 'db-relation-broken', relationId: 7, remoteApp: 'pg', members: [] },
      {
        hook: 'cluster-relation-departed',
        relationId: 12,
        remoteUnit: 'app/1',
        remoteApp: 'app',
        departingUnit: 'app/0',
        members: [],
      },
      { hook: 'cluster-relation-broken', relationId: 12, remoteApp: 'app', members: [] },
    ]);
    assert.deepEqual(seen, {});
    assert.deepEqual(teardown(seen, 'app/0'), []);
    // and a later look at the store brings nothing for those relations' departures
    assert.deepEqual(
      relationDelta(seen, [view({ 'pg/10': 1 }, { dying: true })], true),
      [],
      'no second departed/broken after teardown',
    );
  });

  test('units it was never told of (before start) bring no departed', () => {
    const seen: RelationsSeen = {};
    relationDelta(seen, [view({ 'pg/0': 1, 'pg/1': 1 })], false);
    assert.deepEqual(lines(teardown(seen, 'app/0')), ['db-relation-broken []']);
  });

  test('unit order in teardown even when units joined in different deltas', () => {
    const seen = knowing({ 'pg/10': 0 });
    relationDelta(seen, [view({ 'pg/10': 0, 'pg/2': 0 })], true);
    assert.deepEqual(lines(teardown(seen, 'app/0')), [
      'db-relation-departed pg/2 departing=app/0 [pg/10]',
      'db-relation-departed pg/10 departing=app/0 []',
      'db-relation-broken []',
    ]);
  });
});

describe('relation hooks through the unit agent queue', () => {
  const ref = { model: 'm', modelUuid: '6f0c5a2e-0000-4000-8000-000000000001', unit: 'app/0' };
  const agent = (queue: QueuedEvent[] = []): UnitAgentState => ({ ref, queue, seq: 0, prepared: true });
  /** What the agent does with a delta's hooks that are not relation-created (see relationHooks). */
  const enqueue = (queue: QueuedEvent[], events: UnitEvent[]) => {
    for (const e of events) enqueueCoalescing(queue, e);
  };
  const queued = (queue: QueuedEvent[]) => queue.map((e) => `${e.hook}${e.remoteUnit ? ` ${e.remoteUnit}` : ''}`);

  test('relation-changed for the same remote unit coalesces into the pending one', () => {
    const seen = knowing({ 'pg/0': 1, 'pg/1': 1 }, 1);
    const queue: QueuedEvent[] = [];
    enqueue(queue, relationDelta(seen, [view({ 'pg/0': 2, 'pg/1': 1 })], true));
    enqueue(queue, relationDelta(seen, [view({ 'pg/0': 3, 'pg/1': 2 })], true));
    enqueue(queue, relationDelta(seen, [view({ 'pg/0': 4, 'pg/1': 2 }, { appVersion: 2 })], true));
    enqueue(queue, relationDelta(seen, [view({ 'pg/0': 4, 'pg/1': 2 }, { appVersion: 3 })], true));
    // one per remote unit, one for the app (no remote unit), in first-come order
    assert.deepEqual(queued(queue), ['db-relation-changed pg/0', 'db-relation-changed pg/1', 'db-relation-changed']);
  });

  test('relation-changed of different relations, or of units of different relations, does not coalesce', () => {
    const queue: QueuedEvent[] = [];
    enqueue(queue, [
      { hook: 'db-relation-changed', relationId: 7, remoteUnit: 'pg/0' },
      { hook: 'db-relation-changed', relationId: 8, remoteUnit: 'pg/0' },
      { hook: 'db-relation-changed', relationId: 7 },
      { hook: 'db-relation-changed', relationId: 8 },
      { hook: 'db-relation-changed', relationId: 7, remoteUnit: 'pg/0' },
    ]);
    assert.deepEqual(
      queue.map((e) => `${e.relationId} ${e.remoteUnit ?? '-'}`),
      ['7 pg/0', '8 pg/0', '7 -', '8 -'],
    );
  });

  test('joined never coalesces; departed and broken neither', () => {
    const queue: QueuedEvent[] = [];
    const joined: UnitEvent = { hook: 'db-relation-joined', relationId: 7, remoteUnit: 'pg/0', members: ['pg/0'] };
    const departed: UnitEvent = { hook: 'db-relation-departed', relationId: 7, remoteUnit: 'pg/0', members: [] };
    const broken: UnitEvent = { hook: 'db-relation-broken', relationId: 7, members: [] };
    enqueue(queue, [joined, { ...joined }, departed, { ...departed }, broken, { ...broken }]);
    assert.deepEqual(queued(queue), [
      'db-relation-joined pg/0',
      'db-relation-joined pg/0',
      'db-relation-departed pg/0',
      'db-relation-departed pg/0',
      'db-relation-broken',
      'db-relation-broken',
    ]);
  });

  test('a relation-changed already handed to the machine takes nothing in; the new one runs after it', () => {
    const seen = knowing({ 'pg/0': 1 });
    const s = agent();
    enqueue(s.queue, relationDelta(seen, [view({ 'pg/0': 2 })], true));
    const runs = nextBatch(s);
    assert.equal(runs.length, 1);
    assert.deepEqual(runs[0].event, {
      hook: 'db-relation-changed',
      relationId: 7,
      remoteUnit: 'pg/0',
      remoteApp: 'pg',
      members: ['pg/0'],
    });
    assert.ok(runs[0].contextId);
    enqueue(s.queue, relationDelta(seen, [view({ 'pg/0': 3 })], true));
    assert.deepEqual(queued(s.queue), ['db-relation-changed pg/0', 'db-relation-changed pg/0']);
    assert.equal(s.queue[0].contextId, runs[0].contextId);
    assert.equal(s.queue[1].contextId, undefined);
    // a third change coalesces into the second (pending) one
    enqueue(s.queue, relationDelta(seen, [view({ 'pg/0': 4 })], true));
    assert.equal(s.queue.length, 2);
  });

  test("nextBatch hands relation hooks over with their relation, units and members, in the queue's order", () => {
    const seen: RelationsSeen = {};
    const s = agent();
    const events = relationDelta(seen, [view({ 'pg/0': 0, 'pg/1': 0 })], true);
    const handed = structuredClone(events);
    enqueue(s.queue, events);
    enqueue(s.queue, relationDelta(seen, [view({ 'pg/1': 0 })], true));
    const runs = nextBatch(s);
    assert.deepEqual(
      runs.slice(0, handed.length).map((r) => r.event),
      handed,
    );
    assert.deepEqual(lines(runs.map((r) => r.event)), [
      'db-relation-created []',
      'db-relation-joined pg/0 [pg/0]',
      'db-relation-changed pg/0 [pg/0]',
      'db-relation-joined pg/1 [pg/0,pg/1]',
      'db-relation-changed pg/1 [pg/0,pg/1]',
      'db-relation-departed pg/0 departing=pg/0 [pg/1]',
    ]);
    assert.equal(new Set(runs.map((r) => r.contextId)).size, runs.length, 'one context id per hook');
    for (const r of runs) assert.equal('contextId' in r.event, false);
  });

  test('a unit joining while its relation-changed is still pending: changed follows joined', () => {
    // pg/0 is known and has a pending changed; pg/1 joins: its changed is its own
    const seen = knowing({ 'pg/0': 1 });
    const queue: QueuedEvent[] = [];
    enqueue(queue, relationDelta(seen, [view({ 'pg/0': 2 })], true));
    enqueue(queue, relationDelta(seen, [view({ 'pg/0': 3, 'pg/1': 0 })], true));
    assert.deepEqual(queued(queue), [
      'db-relation-changed pg/0',
      'db-relation-joined pg/1',
      'db-relation-changed pg/1',
    ]);
  });

  test('a unit that leaves and comes back while its hooks are pending runs joined then changed again', {}, () => {
    const seen: RelationsSeen = {};
    const queue: QueuedEvent[] = [];
    const steps: Record<string, number>[] = [{ 'pg/0': 0 }, {}, { 'pg/0': 0 }];
    for (const units of steps) enqueue(queue, relationDelta(seen, [view(units)], true));
    assert.deepEqual(queued(queue), [
      'db-relation-created',
      'db-relation-joined pg/0',
      'db-relation-changed pg/0',
      'db-relation-departed pg/0',
      'db-relation-joined pg/0',
      'db-relation-changed pg/0',
    ]);
  });
});

describe('heard: what a relation hook read counts as told', () => {
  const seen = (): UnitAgentState => ({
    ref: { model: 'm', modelUuid: 'u', unit: 'prov/0' },
    queue: [],
    seq: 0,
    prepared: true,
    relations: { 1: { endpoint: 'data', remoteApp: 'req', units: { 'req/1': 0, 'req/2': 0 }, appVersion: 0 } },
  });
  const view = (units: Record<string, number>, appVersion = 0): RelationView[] => [
    { id: 1, endpoint: 'data', remoteApp: 'req', dying: false, units, appVersion },
  ];

  test("a hook for one remote unit never swallows another unit's change", () => {
    const state = seen();
    // relation-changed for req/2 ran after req/1 had committed (version 3): it read req/1's bag too
    heard(state, { hook: 'data-relation-changed', relationId: 1, remoteUnit: 'req/2' }, { 'req/1': 3, 'req/2': 2 });
    assert.deepEqual(state.relations?.[1].units, { 'req/1': 0, 'req/2': 2 });
    const events = relationDelta(state.relations ?? {}, view({ 'req/1': 3, 'req/2': 2 }), true);
    assert.deepEqual(
      events.map((e) => [e.hook, e.remoteUnit]),
      [['data-relation-changed', 'req/1']],
    );
  });

  test('the app bag counts as told only from an application-level relation-changed', () => {
    const state = seen();
    heard(state, { hook: 'data-relation-changed', relationId: 1, remoteUnit: 'req/1' }, { req: 5, 'req/1': 1 });
    assert.equal(state.relations?.[1].appVersion, 0);
    heard(state, { hook: 'data-relation-changed', relationId: 1, remoteApp: 'req' }, { req: 5 });
    assert.equal(state.relations?.[1].appVersion, 5);
    assert.deepEqual(relationDelta(state.relations ?? {}, view({ 'req/1': 1, 'req/2': 0 }, 5), true), []);
  });
});
