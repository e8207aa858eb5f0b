// The unit agent's queue rules, as plain functions: Juju's coalescing, and which
// queued hooks go to the machine in one go, under which context ids.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { UnitEvent } from '../workflows/messages.ts';
import { enqueueCoalescing, MAX_BATCH, nextBatch, type UnitAgentState } from '../workflows/unit-agent.ts';

const ref = { model: 'm', modelUuid: '6f0c5a2e-0000-4000-8000-000000000001', unit: 'app/3' };
const state = (hooks: string[], seq = 0): UnitAgentState => ({
  ref,
  queue: hooks.map((hook) => ({ hook })),
  seq,
  prepared: true,
});

describe('unit agent queue', () => {
  test('config-changed coalesces into a pending one, never into one handed to the machine', () => {
    const s = state(['install', 'config-changed']);
    enqueueCoalescing(s.queue, { hook: 'config-changed' });
    assert.deepEqual(
      s.queue.map((e) => e.hook),
      ['install', 'config-changed'],
    );
    // both queued events went to the machine (and keep their context ids, even
    // between batches): the new one must run after them, with the new state
    nextBatch(s);
    enqueueCoalescing(s.queue, { hook: 'config-changed' });
    assert.deepEqual(
      s.queue.map((e) => e.hook),
      ['install', 'config-changed', 'config-changed'],
    );
    // a new requester of a coalesced event is still told
    enqueueCoalescing(s.queue, { hook: 'config-changed', notify: 'op:2' });
    assert.equal(s.queue.length, 4);
    assert.equal(s.queue[3].notify, 'op:2');
  });

  test('relation-changed coalesces per remote unit; install never does', () => {
    const queue: UnitEvent[] = [];
    const rc = (remoteUnit: string): UnitEvent => ({ hook: 'db-relation-changed', relationId: 1, remoteUnit });
    for (const ev of [rc('pg/0'), rc('pg/1'), rc('pg/0'), { hook: 'install' }, { hook: 'install' }])
      enqueueCoalescing(queue, ev);
    assert.deepEqual(
      queue.map((e) => `${e.hook}${e.remoteUnit ? `:${e.remoteUnit}` : ''}`),
      ['db-relation-changed:pg/0', 'db-relation-changed:pg/1', 'install', 'install'],
    );
  });

  test('a batch is the head of the queue, ends at remove, and holds at most MAX_BATCH hooks', () => {
    const deploy = state(['install', 'leader-elected', 'config-changed', 'start']);
    assert.deepEqual(
      nextBatch(deploy).map((r) => r.event.hook),
      ['install', 'leader-elected', 'config-changed', 'start'],
    );
    const teardown = state(['stop', 'remove', 'config-changed']);
    assert.deepEqual(
      nextBatch(teardown).map((r) => r.event.hook),
      ['stop', 'remove'],
    );
    const many = state(Array.from({ length: MAX_BATCH + 3 }, (_, i) => `h${i}-relation-changed`));
    assert.equal(nextBatch(many).length, MAX_BATCH);
  });

  test('an event keeps its context id until it ends, so a retry attaches to the run it began', () => {
    const s = state(['install', 'start'], 7);
    const first = nextBatch(s);
    assert.deepEqual(
      first.map((r) => r.contextId),
      ['6f0c5a2e-app-3-7', '6f0c5a2e-app-3-8'],
    );
    // an agent that drew its incarnation puts it in every id: a later agent of the
    // same unit name (a redeploy, seq from 0 again) never meets an earlier one's runs
    const later = { ...state(['install']), incarnation: 'c0ffee01' };
    assert.deepEqual(
      nextBatch(later).map((r) => r.contextId),
      ['6f0c5a2e-app-3-c0ffee01-0'],
    );
    assert.equal(s.seq, 9);
    // install committed, start was not reached: the next batch reuses start's id
    s.queue.shift();
    assert.deepEqual(
      nextBatch(s).map((r) => r.contextId),
      ['6f0c5a2e-app-3-8'],
    );
    // start failed: its retry is a new execution
    s.queue[0].contextId = undefined;
    assert.deepEqual(
      nextBatch(s).map((r) => r.contextId),
      ['6f0c5a2e-app-3-9'],
    );
    // the event sent to the machine carries no agent bookkeeping
    assert.deepEqual(nextBatch(s)[0].event, { hook: 'start' });
  });
});

describe('bookkeeping activities', () => {
  test('store writes and clean-up retry without limit, with backoff', async () => {
    const { BOOKKEEPING_ACTIVITY, BOOKKEEPING_RETRY } = await import('../workflows/activity-options.ts');
    assert.equal(BOOKKEEPING_RETRY.maximumAttempts, undefined);
    assert.ok((BOOKKEEPING_RETRY.backoffCoefficient ?? 2) > 1);
    assert.equal(BOOKKEEPING_ACTIVITY.retry, BOOKKEEPING_RETRY);
    // the proxies that call them take these options, not a limited copy
    const { readFileSync } = await import('node:fs');
    for (const file of ['unit-agent', 'application-workflows', 'machine-workflows', 'model-workflows', 'operation']) {
      const src = readFileSync(new URL(`../workflows/${file}.ts`, import.meta.url), 'utf8');
      assert.match(src, /BOOKKEEPING_(ACTIVITY|RETRY)/, file);
    }
  });
});
