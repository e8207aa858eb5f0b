// Schedules end to end on the local cloud: real Temporal Schedules (readable id, memo,
// search attributes) whose runs record operations; an interval schedule fires, a
// paused one does not, resume/trigger/delete; the default overlap policy skips a run
// due while the last still runs; a scheduled refresh refreshes once and then has
// nothing to do; bad input is a 4xx that makes nothing.
import assert from 'node:assert/strict';
import { cpSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { cronProblem, parseIntervalSeconds } from '../api/routes/app-backup-routes.ts';
import { ApplicationKey, ModelKey, OperationKindKey } from '../workflows/search-attributes.ts';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { waitFor } from './helpers/wait.ts';

const backupable = join(projectRoot, 'test', 'fixtures', 'charms', 'backupable');
const actor = join(projectRoot, 'test', 'fixtures', 'charms', 'actor');

interface Run {
  id: number;
  state: string;
  operationId: number | null;
  message: string;
  startedAt: string;
}

describe('cron expressions', () => {
  test('the usual forms pass; the rest is refused with the reason', () => {
    for (const ok of [
      '0 3 * * *',
      '*/15 * * * *',
      '0 9-17/2 * * mon-fri',
      '0 0 1,15 * *',
      '0 3 * jan-mar 0',
      '0 3 * * 7',
      '0 3 * * 1#2',
      '30 0 3 * * * 2030',
      '0 3 * * * 2031',
      '@daily',
      '@hourly',
    ]) {
      assert.equal(cronProblem(ok), null, ok);
    }
    const bad: [string, RegExp][] = [
      ['nope', /expected 5 fields/],
      ['0 3 * *', /expected 5 fields/],
      ['60 * * * *', /minute 60 is out of range 0-59/],
      ['0 24 * * *', /hour 24 is out of range/],
      ['0 3 0 * *', /day of month 0 is out of range 1-31/],
      ['0 3 * 13 *', /month 13/],
      ['0 3 * * 8', /day of week 8/],
      ['*/0 * * * *', /step "0"/],
      ['5-2 * * * *', /ends before it starts/],
      ['0 3 L * *', /"L" is not a number/],
      ['0 3 * foo *', /month "foo" is not a number or a name/],
      ['@every 10s', /use interval/],
      ['@sometimes', /unknown macro/],
      ['CRON_TZ=Europe/Paris 0 3 * * *', /timezone/],
      ['1,,2 * * * *', /empty minute/],
    ];
    for (const [expr, why] of bad) assert.match(cronProblem(expr) ?? 'accepted', why, expr);
  });

  test('intervals', () => {
    assert.equal(parseIntervalSeconds('10s'), 10);
    assert.equal(parseIntervalSeconds('1h30m'), 5400);
    assert.equal(parseIntervalSeconds('1d'), 86_400);
    assert.equal(parseIntervalSeconds('90'), 90);
    assert.equal(parseIntervalSeconds('10x'), null);
    assert.equal(parseIntervalSeconds('s'), null);
  });
});

describe('schedules', () => {
  let c: TestController;
  let dir: string;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const add = async (...args: string[]) =>
    JSON.parse((await ok('schedule', 'add', ...args, '--format', 'json')).stdout) as { id: number; scheduleId: string };
  const show = async (id: number) =>
    JSON.parse((await ok('schedule', 'show', String(id), '--format', 'json', '--limit', '100')).stdout) as {
      schedule: { paused: boolean; temporal: { skippedOverlap: number; actionsTaken: number } };
      runs: Run[];
    };
  const ourSchedules = async () => {
    const ids: string[] = [];
    for await (const s of c.client.schedule.list()) if (s.scheduleId.startsWith('schedule:')) ids.push(s.scheduleId);
    return ids;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cf-schedules-'));
    c = await startTestController();
    await ok('deploy', backupable, 'db');
    await ok('deploy', actor, 'plain');
  });
  after(async () => {
    await c?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('bad input is a 4xx naming the field, and makes no schedule', async () => {
    const base = { kind: 'backup', application: 'db' };
    const cases: [Record<string, unknown>, number, RegExp, string][] = [
      [{ ...base, cron: 'nope' }, 400, /invalid cron expression: expected 5 fields/, 'body.cron'],
      [{ ...base, cron: '61 3 * * *' }, 400, /minute 61 is out of range/, 'body.cron'],
      [{ ...base, cron: '@every 10s' }, 400, /use interval/, 'body.cron'],
      [{ ...base, cron: '0 3 * * *', timezone: 'Mars/Olympus_Mons' }, 400, /unknown time zone/, 'body.timezone'],
      [{ ...base, interval: '10s', timezone: 'UTC' }, 400, /timezone goes with cron/, 'body.timezone'],
      [{ ...base }, 400, /either cron or interval/, 'body.cron'],
      [{ ...base, cron: '0 3 * * *', interval: '10s' }, 400, /either cron or interval/, 'body.interval'],
      [{ ...base, interval: '0s' }, 400, /invalid interval/, 'body.interval'],
      [{ ...base, interval: 'soon' }, 400, /invalid interval/, 'body.interval'],
      [{ ...base, interval: '10s', overlap: 'sometimes' }, 400, /invalid request/, 'body.overlap'],
      [{ ...base, interval: '10s', revision: 2 }, 400, /revision does not apply to a backup schedule/, 'body.revision'],
      [
        { ...base, interval: '10s', params: { label: 3 } },
        400,
        /parameter "label" must be string/,
        'body.params.label',
      ],
      [{ ...base, interval: '10s', unit: '7' }, 404, /unit "db\/7" not found/, ''],
      [{ ...base, application: 'plain', interval: '10s' }, 400, /has no "backup" action/, 'body.kind'],
      [{ ...base, application: 'nope', interval: '10s' }, 404, /application "nope" not found/, ''],
      [{ kind: 'refresh', application: 'db', interval: '10s', revision: 99 }, 404, /backupable:99/, ''],
      [{ kind: 'refresh', application: 'db', interval: '10s', charm: 'actor' }, 400, /keeps the charm/, 'body.charm'],
      [{ kind: 'restart', application: 'db', interval: '10s' }, 400, /invalid request/, 'body.kind'],
    ];
    for (const [body, code, why, field] of cases) {
      const res = await c.api('POST', '/v1/models/default/schedules', body);
      assert.equal(res.status, code, JSON.stringify([body, res.body]));
      assert.match(res.body.message, why, JSON.stringify(body));
      if (field) assert.ok(JSON.stringify(res.body.details).includes(field), JSON.stringify([body, res.body]));
    }
    assert.equal((await c.api('POST', '/v1/models/nope/schedules', { ...base, interval: '1m' })).status, 404);
    const r = await cli('schedule', 'add', 'backup', 'db', '--cron', '0 25 * * *');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /hour 25 is out of range/);
    const none = await cli('schedule', 'add', 'backup', 'plain', '--interval', '10s');
    assert.notEqual(none.code, 0);
    assert.match(none.stderr, /application "plain" \(actor revision \d+\) has no "backup" action/);
    assert.deepEqual(JSON.parse((await ok('schedules', '--format', 'json')).stdout).schedules, []);
    assert.deepEqual(await ourSchedules(), []);
    assert.equal((await c.store.db.selectFrom('app_schedules').selectAll().execute()).length, 0);
    for (const path of ['/v1/schedules/99', '/v1/schedules/99/pause']) {
      const res = await c.api(path.endsWith('pause') ? 'POST' : 'GET', path);
      assert.equal(res.status, 404, path);
    }
  });

  test('a cron schedule is a Temporal Schedule with a readable id, memo, search attributes and its time zone', async () => {
    const s = await add('backup', 'db', '--cron', '0 3 * * *', '--timezone', 'europe/paris', '--overlap', 'buffer-one');
    assert.equal(s.scheduleId, `schedule:default:db:backup:${s.id}`);
    const d = await c.client.schedule.getHandle(s.scheduleId).describe();
    assert.equal(d.spec.timezone, 'Europe/Paris');
    assert.equal(d.policies.overlap, 'BUFFER_ONE');
    assert.equal(d.state.paused, false);
    assert.match(d.state.note ?? '', /back up db \(the leader\), cron "0 3 \* \* \*" Europe\/Paris/);
    assert.equal(d.action.type, 'startWorkflow');
    assert.equal(d.action.workflowType, 'appScheduleRunWorkflow');
    assert.equal((await d.memo)?.application, 'db');
    assert.equal(d.typedSearchAttributes.get(ModelKey), 'default');
    assert.equal(d.typedSearchAttributes.get(ApplicationKey), 'db');
    assert.equal(d.typedSearchAttributes.get(OperationKindKey), 'schedule-backup');
    // the next run is 03:00 in Paris
    const next = d.info.nextActionTimes[0];
    const paris = new Intl.DateTimeFormat('en-GB', { timeZone: 'Europe/Paris', hour: '2-digit', minute: '2-digit' });
    assert.equal(paris.format(next), '03:00');

    const listed = await ok('schedules');
    assert.match(
      listed.stdout,
      new RegExp(`${s.id}\\s+backup\\s+db/leader\\s+cron 0 3 \\* \\* \\* \\(Europe/Paris\\)\\s+buffer-one\\s+active`),
    );
    const gone = await ok('schedule', 'delete', String(s.id));
    assert.match(gone.stdout, new RegExp(`Schedule ${s.id} \\(backup db/leader\\) deleted`));
    assert.deepEqual(await ourSchedules(), []);
    assert.equal((await c.api('GET', `/v1/schedules/${s.id}`)).status, 404);
  });

  test('an interval schedule fires and records operations; paused it does not; resumed it does again', async () => {
    const s = await add('backup', 'db', '--interval', '3s', '--keep', '2', 'label=sched');
    const runs = await waitFor(
      'three successful runs',
      async () => {
        const r = (await show(s.id)).runs.filter((x) => x.state === 'succeeded');
        return r.length >= 3 ? r : null;
      },
      90_000,
    );
    // each run made a backup-application operation, by the schedule, and a backup that names it
    for (const run of runs) {
      const op = (await c.api('GET', `/v1/operations/${run.operationId}`)).body;
      assert.equal(op.kind, 'backup-application');
      assert.equal(op.state, 'succeeded');
      assert.equal(op.createdBy, `schedule ${s.id}`);
      assert.match(op.workflowId, /^op:default:backup-application:\d+$/);
    }
    const backups = await c.store.db.selectFrom('app_backups').selectAll().where('schedule_id', '=', s.id).execute();
    assert.ok(backups.length >= 2);
    assert.ok(backups.every((b) => /sched-/.test(b.path)));
    // the backup the first run made (its operation's progress names it)
    const first = runs[runs.length - 1];
    const oldest = (await c.api('GET', `/v1/operations/${first.operationId}`)).body.progress.backup.id as number;
    const ops = (await c.api('GET', '/v1/operations?limit=1000')).body.operations;
    assert.ok(
      ops.some((o: { id: number }) => o.id === runs[0].operationId),
      'the runs show in operations',
    );

    // paused: nothing starts any more
    const p = await ok('schedule', 'pause', `schedule:default:db:backup:${s.id}`);
    assert.match(p.stdout, /paused/);
    const pausedAt = Date.now();
    // a run that began just before the pause may still finish
    await new Promise((r) => setTimeout(r, 10_000));
    const afterPause = (await show(s.id)).runs.filter((r) => Date.parse(r.startedAt) > pausedAt + 1000);
    assert.deepEqual(afterPause, [], 'no run started while paused');
    const view = await show(s.id);
    assert.equal(view.schedule.paused, true);
    // --keep 2: the schedule's older backups went, artifacts and records
    const kept = await c.store.db.selectFrom('app_backups').selectAll().where('schedule_id', '=', s.id).execute();
    assert.equal(kept.length, 2, JSON.stringify(kept.map((b) => b.id)));
    assert.ok(!kept.some((b) => b.id === oldest));
    const modelUuid = kept[0].model_uuid;
    assert.equal(existsSync(join(c.dataDir, 'backups', 'apps', modelUuid, String(oldest))), false);
    for (const b of kept) assert.ok(existsSync(join(c.dataDir, 'backups', 'apps', modelUuid, String(b.id))));
    assert.match((await ok('schedules')).stdout, new RegExp(`${s.id}\\s+backup.*paused`));

    // resumed: it fires again
    await ok('schedule', 'resume', String(s.id));
    const resumedAt = Date.now();
    await waitFor(
      'a run after resume',
      async () => (await show(s.id)).runs.some((r) => Date.parse(r.startedAt) > resumedAt && r.state === 'succeeded'),
      60_000,
    );
    await ok('schedule', 'delete', String(s.id));
    const shown = await cli('schedule', 'show', String(s.id));
    assert.notEqual(shown.code, 0);
  });

  test('a schedule made paused never fires; trigger runs it once', async () => {
    const s = await add('backup', 'db', '--interval', '2s', '--paused');
    await new Promise((r) => setTimeout(r, 7_000));
    assert.deepEqual((await show(s.id)).runs, [], 'a paused schedule does not fire');
    assert.equal((await c.client.schedule.getHandle(s.scheduleId).describe()).info.numActionsTaken, 0);
    await ok('schedule', 'trigger', String(s.id));
    const run = await waitFor(
      'the triggered run',
      async () => (await show(s.id)).runs.find((r) => r.state === 'succeeded'),
      60_000,
    );
    assert.ok(run.operationId);
    await new Promise((r) => setTimeout(r, 4_000));
    assert.equal((await show(s.id)).runs.length, 1, 'still paused after the trigger');
    await ok('schedule', 'delete', String(s.id));
  });

  test('by default a run due while the last one runs is skipped', async () => {
    // each backup takes 6 s; one is due every 2 s
    const s = await add('backup', 'db', '--interval', '2s', 'sleep=6');
    const d = await waitFor(
      'overlapping runs skipped',
      async () => {
        const v = await show(s.id);
        return v.schedule.temporal.skippedOverlap >= 2 && v.runs.some((r) => r.state === 'succeeded') ? v : null;
      },
      90_000,
    );
    await ok('schedule', 'pause', String(s.id));
    // never two operations of the schedule running at once
    const ops = await c.store.db
      .selectFrom('operations')
      .select(['id', 'created_at', 'finished_at'])
      .where('created_by', '=', `schedule ${s.id}`)
      .orderBy('id')
      .execute();
    for (let i = 1; i < ops.length; i++) {
      const prevEnd = ops[i - 1].finished_at;
      assert.ok(
        prevEnd && prevEnd <= ops[i].created_at,
        `operation ${ops[i].id} started before ${ops[i - 1].id} ended`,
      );
    }
    assert.ok(d.schedule.temporal.skippedOverlap >= 2);
    await waitFor(
      'the last run to end',
      async () => (await show(s.id)).runs.every((r) => r.state !== 'running'),
      30_000,
    );
    await ok('schedule', 'delete', String(s.id));
  });

  test('a scheduled refresh uploads the charm at schedule time, refreshes once, then has nothing to do', async () => {
    const v2 = join(dir, 'backupable-v2');
    cpSync(backupable, v2, { recursive: true });
    writeFileSync(join(v2, 'VERSION'), 'v2\n');
    const before = (
      await c.store.db
        .selectFrom('applications')
        .select('charm_revision')
        .where('name', '=', 'db')
        .executeTakeFirstOrThrow()
    ).charm_revision;
    const s = await add('refresh', 'db', '--path', v2, '--interval', '3s', '--gate-timeout', '60');
    const created = (await c.api('GET', `/v1/schedules/${s.id}`)).body.schedule;
    assert.equal(created.params.revision, before + 1, 'the revision uploaded when the schedule was made');
    const runs = await waitFor(
      'a refresh, then a run with nothing to do',
      async () => {
        const r = (await show(s.id)).runs;
        return r.some((x) => x.state === 'succeeded') && r.some((x) => x.state === 'skipped') ? r : null;
      },
      120_000,
    );
    await ok('schedule', 'delete', String(s.id));
    const done = runs.find((r) => r.state === 'succeeded')!;
    const op = (await c.api('GET', `/v1/operations/${done.operationId}`)).body;
    assert.equal(op.kind, 'refresh');
    assert.equal(op.state, 'succeeded');
    assert.match(runs.find((r) => r.state === 'skipped')!.message, /already runs backupable revision/);
    const app = await c.store.db
      .selectFrom('applications')
      .select('charm_revision')
      .where('name', '=', 'db')
      .executeTakeFirstOrThrow();
    assert.equal(app.charm_revision, before + 1);
  });

  test('a schedule whose application is gone pauses itself, saying why', async () => {
    await ok('deploy', backupable, 'temp');
    const s = await add('backup', 'temp', '--interval', '1h');
    await ok('remove-application', 'temp');
    await ok('schedule', 'trigger', String(s.id));
    const run = await waitFor(
      'the skipped run',
      async () => (await show(s.id)).runs.find((r) => r.state === 'skipped'),
      60_000,
    );
    assert.match(run.message, /application temp is gone: schedule paused/);
    const d = await c.client.schedule.getHandle(s.scheduleId).describe();
    assert.equal(d.state.paused, true);
    assert.match(d.state.note ?? '', /application temp is gone/);
    await ok('schedule', 'delete', String(s.id));
  });
});
