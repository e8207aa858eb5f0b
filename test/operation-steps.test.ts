// An operation's step log: every step it went through is kept (the latest 50) and the CLI
// prints each once, including steps that came and went between two of its polls.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { KEPT_STEPS, withStepLog } from '../activities/operation-activities.ts';
import type { Operation } from '../api/schemas.ts';
import { ProgressPrinter, UNIT_LINES_UP_TO } from '../cli/wait.ts';

const at = new Date('2026-12-02T10:00:00Z');

describe('operation step log', () => {
  test('a new step is appended with the next number; a retried update of the same step adds nothing', () => {
    let p = withStepLog({}, { step: 'provisioning' }, at);
    p = withStepLog(p, { step: 'provisioning', units: { 'a/0': 'waiting' } }, at);
    p = withStepLog(p, { step: 'running hooks' }, at);
    assert.deepEqual(p.steps, [
      { n: 1, step: 'provisioning', at: at.toISOString() },
      { n: 2, step: 'running hooks', at: at.toISOString() },
    ]);
    assert.equal(p.step, 'running hooks');
    assert.equal(p.units, undefined, 'progress other than the log is replaced, as before');
  });

  test(`only the latest ${KEPT_STEPS} steps are kept, numbered on`, () => {
    let p: Record<string, unknown> = {};
    for (let i = 1; i <= KEPT_STEPS + 10; i++) p = withStepLog(p, { step: `step ${i}` }, at);
    const steps = p.steps as { n: number; step: string }[];
    assert.equal(steps.length, KEPT_STEPS);
    assert.deepEqual(steps[0], { n: 11, step: 'step 11', at: at.toISOString() });
    assert.equal(steps.at(-1)?.n, KEPT_STEPS + 10);
  });

  test('the CLI prints every step once, also those it did not poll in time, and units when they change', () => {
    const lines: string[] = [];
    const printer = new ProgressPrinter((l) => lines.push(l));
    const op = (progress: Record<string, unknown>) => ({ progress }) as unknown as Operation;
    let p = withStepLog({}, { step: 'one', units: { 'a/0': 'installing' } }, at);
    printer.show(op(p));
    printer.show(op(p));
    p = withStepLog(p, { step: 'two' }, at);
    p = withStepLog(p, { step: 'three', units: { 'a/0': 'done' } }, at);
    printer.show(op(p));
    printer.show(op(p));
    assert.deepEqual(lines, ['- one', '  a/0: installing', '- two', '- three', '  a/0: done']);
  });

  test('the CLI shows the units whose state changed, not all of them again', () => {
    const lines: string[] = [];
    const printer = new ProgressPrinter((l) => lines.push(l));
    const op = (progress: Record<string, unknown>) => ({ progress }) as unknown as Operation;
    printer.show(op({ step: 's', units: { 'a/0': 'queued install', 'a/1': 'queued install' } }));
    printer.show(op({ step: 's', units: { 'a/0': 'running install hook', 'a/1': 'queued install' } }));
    printer.show(op({ step: 's', units: { 'a/0': 'running install hook', 'a/1': 'queued install' } }));
    assert.deepEqual(lines, ['- s', '  a/0: queued install\n  a/1: queued install', '  a/0: running install hook']);
  });

  test('with many units the CLI counts them per state, and names each unit that fails', () => {
    const lines: string[] = [];
    const printer = new ProgressPrinter((l) => lines.push(l));
    const op = (units: Record<string, string>) => ({ progress: { step: 's', units } }) as unknown as Operation;
    const n = UNIT_LINES_UP_TO + 10;
    const units: Record<string, string> = {};
    for (let i = 0; i < n; i++) units[`a/${i}`] = `waiting for machine ${i} (pending)`;
    printer.show(op(units));
    for (let i = 0; i < 10; i++) units[`a/${i}`] = 'done';
    units['a/10'] = 'error: hook "install" exited 1';
    units['a/11'] = 'error: machine unreachable';
    units['a/12'] = 'running start hook';
    printer.show(op(units));
    printer.show(op(units));
    assert.deepEqual(lines, [
      '- s',
      `  ${n} units: ${n} waiting for machine (pending)`,
      '  a/10: error: hook "install" exited 1\n  a/11: error: machine unreachable',
      `  ${n} units: ${n - 13} waiting for machine (pending), 10 done, 2 error, 1 running start hook`,
    ]);
    assert.ok(
      lines.every((l) => l.split('\n').length <= 2),
      'no line per unit beyond the failed ones',
    );
  });

  test('an operation recorded before the log was kept shows its current step when it changes', () => {
    const lines: string[] = [];
    const printer = new ProgressPrinter((l) => lines.push(l));
    const op = (progress: Record<string, unknown>) => ({ progress }) as unknown as Operation;
    printer.show(op({ step: 'old one' }));
    printer.show(op({ step: 'old one' }));
    printer.show(op({ step: 'old two' }));
    assert.deepEqual(lines, ['- old one', '- old two']);
  });
});
