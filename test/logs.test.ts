// debug-log and show-status-log against a real controller. Rows are written straight
// into the store; the end-to-end hook tests cover real hooks writing them.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { type CliResult, cliPath, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';

const MODEL = 'logs';

describe('debug-log and show-status-log', () => {
  let c: TestController;
  let env: Record<string, string>;
  let uuid: string;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, env);
  const logs = async (query: string) => {
    const res = await c.api('GET', `/v1/models/${MODEL}/logs${query ? `?${query}` : ''}`);
    assert.equal(res.status, 200, JSON.stringify(res.body));
    return res.body as { entries: { id: number; entity: string; level: string; message: string }[]; last: number };
  };
  const messages = (page: { entries: { message: string }[] }) => page.entries.map((e) => e.message);
  const addLog = (entity: string, level: string, message: string, at?: string) =>
    c.store.db
      .insertInto('log_entries')
      .values({ model_uuid: uuid, entity, level, message, ...(at ? { at } : {}) })
      .returning('id')
      .executeTakeFirstOrThrow();

  before(async () => {
    c = await startTestController();
    env = { CHARMFLOW_DATA_DIR: c.dataDir };
    const created = await c.api('POST', '/v1/models', { name: MODEL });
    assert.equal(created.status, 202, JSON.stringify(created.body));
    assert.equal((await c.waitOperation(created.body.operation.id)).state, 'succeeded');
    uuid = (await c.api('GET', `/v1/models/${MODEL}`)).body.uuid;
    const rows: [string, string, string][] = [
      ['web/0', 'INFO', 'web0 installing'],
      ['web/1', 'DEBUG', 'install: web1 stdout'],
      ['db/0', 'INFO', 'db0 installing'],
      ['web/0', 'WARNING', 'install: web0 stderr'],
      ['machine/0', 'INFO', 'machine 0 started'],
      ['web/10', 'ERROR', 'web10 broke'],
      ['application/web', 'INFO', 'web application status'],
      ['db/0', 'TRACE', 'db0 trace'],
      ['web/1', 'ERROR', 'web1 failed'],
      ['model/logs', 'INFO', 'model available'],
      ['web/0', 'INFO', 'web0 started'],
      ['db/0', 'DEBUG', 'db0 debug'],
    ];
    let second = 0;
    for (const [entity, level, message] of rows) {
      await addLog(entity, level, message, `2024-05-01T12:34:${String(second++).padStart(2, '0')}Z`);
    }
    // another model's lines never show up here
    const other = await c.store.db.selectFrom('models').select('uuid').where('name', '=', 'default').executeTakeFirst();
    if (other) {
      await c.store.db
        .insertInto('log_entries')
        .values({ model_uuid: other.uuid, entity: 'web/0', level: 'INFO', message: 'other model' })
        .execute();
    }
  });
  after(async () => {
    await c?.stop();
  });

  test('all lines of the model, oldest first, and nothing of other models', async () => {
    const page = await logs('');
    assert.equal(page.entries.length, 12);
    assert.equal(page.entries[0].message, 'web0 installing');
    assert.equal(page.entries.at(-1)!.message, 'db0 debug');
    assert.ok(!messages(page).includes('other model'));
    const ids = page.entries.map((e) => e.id);
    assert.deepEqual(
      ids,
      [...ids].sort((a, b) => a - b),
    );
    assert.equal(page.last, ids.at(-1));
    assert.deepEqual(Object.keys(page.entries[0]).sort(), ['at', 'entity', 'id', 'level', 'message']);
    assert.equal((page.entries[0] as unknown as { at: string }).at, '2024-05-01T12:34:00.000Z');
  });

  test('include: a unit, an application, repeated and comma-separated, Juju tags', async () => {
    assert.deepEqual(messages(await logs('include=web/0')), [
      'web0 installing',
      'install: web0 stderr',
      'web0 started',
    ]);
    // an application means its units: web/0, web/1 and web/10, not application/web
    const web = await logs('include=web');
    assert.deepEqual([...new Set(web.entries.map((e) => e.entity))].sort(), ['web/0', 'web/1', 'web/10']);
    const both = await logs('include=web/1&include=db');
    assert.deepEqual(
      both.entries.map((e) => e.entity),
      ['web/1', 'db/0', 'db/0', 'web/1', 'db/0'],
    );
    assert.deepEqual(await logs('include=web/1,db'), both);
    assert.deepEqual(await logs('include=unit-web-1&include=db'), both);
    assert.deepEqual(messages(await logs('include=machine-0')), ['machine 0 started']);
    assert.deepEqual(messages(await logs('include=model/logs')), ['model available']);
    assert.deepEqual((await logs('include=ghost')).entries, []);
  });

  test('exclude, and exclude with include', async () => {
    const noWeb = await logs('exclude=web');
    assert.ok(noWeb.entries.every((e) => !/^web\/\d+$/.test(e.entity)));
    assert.equal(noWeb.entries.length, 6);
    assert.deepEqual(
      (await logs('include=web&exclude=web/0,web/10')).entries.map((e) => e.entity),
      ['web/1', 'web/1'],
    );
  });

  test('level is a minimum, read case-insensitively', async () => {
    const warn = await logs('level=WARNING');
    assert.deepEqual(messages(warn), ['install: web0 stderr', 'web10 broke', 'web1 failed']);
    assert.deepEqual(await logs('level=warning'), warn);
    assert.deepEqual(await logs('level=warn'), warn);
    assert.deepEqual(messages(await logs('level=ERROR&include=web')), ['web10 broke', 'web1 failed']);
    assert.equal((await logs('level=TRACE')).entries.length, 12);
    assert.equal((await logs('level=DEBUG')).entries.length, 11);
  });

  test('after/last page through the lines; limit bounds a page', async () => {
    const seen: string[] = [];
    let after = 0;
    let pages = 0;
    for (;;) {
      const page = await logs(`after=${after}&limit=5`);
      assert.ok(page.entries.length <= 5);
      if (page.entries.length === 0) {
        assert.equal(page.last, after, 'an empty page gives back the after it was given');
        break;
      }
      assert.ok(page.entries.every((e) => e.id > after));
      seen.push(...messages(page));
      after = page.last;
      pages++;
    }
    assert.equal(pages, 3);
    assert.deepEqual(seen, messages(await logs('')));
    // filtered paging: last is the highest id returned, not the highest in the model
    const first = await logs('include=db&limit=2');
    assert.deepEqual(messages(first), ['db0 installing', 'db0 trace']);
    assert.equal(first.last, first.entries[1].id);
    assert.deepEqual(messages(await logs(`include=db&after=${first.last}`)), ['db0 debug']);
  });

  test('tail gives the newest lines, still oldest first, and combines with filters', async () => {
    assert.deepEqual(messages(await logs('tail=3')), ['model available', 'web0 started', 'db0 debug']);
    const t = await logs('tail=2&include=web/0');
    assert.deepEqual(messages(t), ['install: web0 stderr', 'web0 started']);
    assert.equal(t.last, t.entries[1].id);
    assert.equal((await logs('tail=100')).entries.length, 12);
    assert.deepEqual(await logs('tail=5&include=ghost'), { entries: [], last: 0 });
  });

  test('errors: unknown model 404, bad level and bad numbers 400 naming the field', async () => {
    const missing = await c.api('GET', '/v1/models/ghost/logs');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.message, 'model "ghost" not found');
    const level = await c.api('GET', `/v1/models/${MODEL}/logs?level=LOUD`);
    assert.equal(level.status, 400);
    assert.ok(level.body.details.some((d: { field: string }) => d.field === 'querystring.level'));
    assert.match(level.body.message, /querystring\.level/);
    for (const q of ['limit=0', 'limit=1001', 'tail=0', 'after=-1', 'after=x']) {
      const res = await c.api('GET', `/v1/models/${MODEL}/logs?${q}`);
      assert.equal(res.status, 400, q);
      assert.match(res.body.message, new RegExp(`querystring\\.${q.split('=')[0]}`), q);
    }
    const entity = await c.api('GET', `/v1/models/${MODEL}/logs?include=${encodeURIComponent("web'; --")}`);
    assert.equal(entity.status, 400);
    assert.match(entity.body.message, /querystring\.include/);
    const unknown = await c.api('GET', `/v1/models/${MODEL}/logs?colour=red`);
    assert.equal(unknown.status, 400);
  });

  test('the routes are in the OpenAPI document', async () => {
    const doc = await c.api('GET', '/openapi.json', undefined, '');
    assert.ok(doc.body.paths['/v1/models/{model}/logs']);
    assert.ok(doc.body.paths['/v1/models/{model}/units/{app}/{n}/status-log']);
  });

  test('debug-log --no-tail: the last 10 lines in Juju style', async () => {
    const r = await cli('debug-log', '-m', MODEL, '--no-tail', '--utc');
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 10);
    assert.deepEqual(lines.slice(0, 5), [
      'unit-db-0: 12:34:02 INFO unit.db/0.juju-log db0 installing',
      'unit-web-0: 12:34:03 WARNING unit.web/0.juju-log install: web0 stderr',
      'machine/0: 12:34:04 INFO machine 0 started',
      'unit-web-10: 12:34:05 ERROR unit.web/10.juju-log web10 broke',
      'application/web: 12:34:06 INFO web application status',
    ]);
    assert.equal(lines[9], 'unit-db-0: 12:34:11 DEBUG unit.db/0.juju-log db0 debug');
    // local time by default
    const local = await runCli(['debug-log', '-m', MODEL, '--no-tail', '-n', '1'], { ...env, TZ: 'Asia/Kolkata' });
    assert.equal(local.stdout, 'unit-db-0: 18:04:11 DEBUG unit.db/0.juju-log db0 debug\n');
  });

  test('debug-log --replay, --lines, filters and --format json', async () => {
    const all = await cli('debug-log', '-m', MODEL, '--no-tail', '--replay');
    assert.equal(all.code, 0, all.stderr);
    const lines = all.stdout.trimEnd().split('\n');
    assert.equal(lines.length, 12);
    assert.match(lines[0], /^unit-web-0: \d\d:\d\d:\d\d INFO unit\.web\/0\.juju-log web0 installing$/);
    const three = await cli('debug-log', '-m', MODEL, '--no-tail', '--lines', '3');
    assert.equal(three.stdout.trimEnd().split('\n').length, 3);
    const none = await cli('debug-log', '-m', MODEL, '--no-tail', '--lines', '0');
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout, '');
    const filtered = await cli(
      'debug-log',
      '-m',
      MODEL,
      '--no-tail',
      '--replay',
      '--include',
      'web',
      '--exclude',
      'web/10',
      '--level',
      'warning',
    );
    assert.equal(filtered.code, 0, filtered.stderr);
    assert.deepEqual(
      filtered.stdout
        .trimEnd()
        .split('\n')
        .map((l) => l.replace(/ \d\d:\d\d:\d\d /, ' T ')),
      [
        'unit-web-0: T WARNING unit.web/0.juju-log install: web0 stderr',
        'unit-web-1: T ERROR unit.web/1.juju-log web1 failed',
      ],
    );
    const json = await cli('debug-log', '-m', MODEL, '--no-tail', '--replay', '-i', 'db/0', '--format', 'json');
    assert.equal(json.code, 0, json.stderr);
    const objects = json.stdout
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    assert.deepEqual(
      objects.map((o) => [o.entity, o.level, o.message]),
      [
        ['db/0', 'INFO', 'db0 installing'],
        ['db/0', 'TRACE', 'db0 trace'],
        ['db/0', 'DEBUG', 'db0 debug'],
      ],
    );
    assert.equal(typeof objects[0].id, 'number');
    assert.equal(objects[0].at, '2024-05-01T12:34:02.000Z');
  });

  test('debug-log errors', async () => {
    const model = await cli('debug-log', '-m', 'ghost', '--no-tail');
    assert.equal(model.code, 1);
    assert.match(model.stderr, /^ERROR model "ghost" not found/m);
    const level = await cli('debug-log', '-m', MODEL, '--no-tail', '--level', 'LOUD');
    assert.equal(level.code, 1);
    assert.match(level.stderr, /querystring\.level/);
    const lines = await cli('debug-log', '-m', MODEL, '--no-tail', '--lines', 'many');
    assert.equal(lines.code, 2);
    assert.match(lines.stderr, /invalid --lines "many"/);
    const format = await cli('debug-log', '-m', MODEL, '--no-tail', '--format', 'xml');
    assert.equal(format.code, 2);
  });

  test('debug-log follows new lines until SIGINT, then exits 0', async () => {
    const child = spawn(process.execPath, [cliPath, 'debug-log', '-m', MODEL, '--include', 'web/0', '-n', '1'], {
      env: { ...process.env, CHARMFLOW_URL: undefined, CHARMFLOW_TOKEN: undefined, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => {
      stdout += d;
    });
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    const waitFor = async (re: RegExp, ms: number) => {
      const deadline = Date.now() + ms;
      while (!re.test(stdout)) {
        if (Date.now() > deadline) throw new Error(`no ${re} within ${ms} ms; stdout: ${stdout}; stderr: ${stderr}`);
        await new Promise((r) => setTimeout(r, 25));
      }
      return Date.now();
    };
    try {
      await waitFor(/web0 started\n/, 30_000);
      assert.doesNotMatch(stdout, /web0 installing/, 'only the last -n lines to start with');
      await addLog('db/0', 'INFO', 'not followed: filtered out');
      const t0 = Date.now();
      await addLog('web/0', 'INFO', 'live line one');
      await addLog('web/0', 'ERROR', 'live line two');
      const seenAt = await waitFor(/live line two\n/, 5_000);
      assert.ok(seenAt - t0 < 2_000, `followed within ${seenAt - t0} ms`);
      assert.match(stdout, /^unit-web-0: \d\d:\d\d:\d\d INFO unit\.web\/0\.juju-log live line one$/m);
      assert.doesNotMatch(stdout, /filtered out/);
      // each line once, even though polls re-read ids behind the cursor
      assert.equal(stdout.match(/live line one/g)?.length, 1);
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(stdout.match(/web0 started/g)?.length, 1);
    } finally {
      child.kill('SIGINT');
    }
    const code = await Promise.race([exited, new Promise((r) => setTimeout(() => r('timeout'), 5_000))]);
    if (code === 'timeout') child.kill('SIGKILL');
    assert.equal(code, 0, stderr);
    assert.equal(stderr, '');
  });

  test('debug-log exits 0 on SIGTERM too', async () => {
    const child = spawn(process.execPath, [cliPath, 'debug-log', '-m', MODEL], {
      env: { ...process.env, CHARMFLOW_URL: undefined, CHARMFLOW_TOKEN: undefined, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d) => {
      stderr += d;
    });
    const exited = new Promise<[number | null, string | null]>((r) => child.on('close', (code, sig) => r([code, sig])));
    await new Promise<void>((r) => child.stdout.once('data', () => r()));
    child.kill('SIGTERM');
    assert.deepEqual(await exited, [0, null], stderr);
  });

  describe('show-status-log', () => {
    before(async () => {
      const h = (kind: 'workload' | 'agent', status: string, message: string, second: number, data?: object) =>
        c.store.db
          .insertInto('status_history')
          .values({
            model_uuid: uuid,
            entity: 'web/0',
            kind,
            status,
            message,
            data: data ? JSON.stringify(data) : null,
            at: `2024-05-01T13:00:${String(second).padStart(2, '0')}Z`,
          })
          .execute();
      await h('agent', 'allocating', '', 0);
      await h('workload', 'waiting', 'waiting for machine', 1);
      await h('agent', 'executing', 'running install hook', 2);
      await h('workload', 'maintenance', 'installing', 3);
      await h('workload', 'error', 'hook failed: "install"', 4, {
        hook: 'install',
        tail: ['Traceback (most recent call last):', 'RuntimeError: boom'],
      });
      await h('agent', 'idle', '', 5);
      // another unit's history and the application's stay out
      await c.store.db
        .insertInto('status_history')
        .values([
          { model_uuid: uuid, entity: 'web/1', kind: 'workload', status: 'active', message: 'other unit', data: null },
          { model_uuid: uuid, entity: 'application/web', kind: 'application', status: 'active', data: null },
        ])
        .execute();
    });

    test('API: oldest first, the newest `limit`, kinds filter, data of a failed hook', async () => {
      const all = await c.api('GET', `/v1/models/${MODEL}/units/web/0/status-log`);
      assert.equal(all.status, 200, JSON.stringify(all.body));
      assert.equal(all.body.unit, 'web/0');
      assert.deepEqual(
        all.body.entries.map((e: { kind: string; status: string }) => `${e.kind}:${e.status}`),
        [
          'agent:allocating',
          'workload:waiting',
          'agent:executing',
          'workload:maintenance',
          'workload:error',
          'agent:idle',
        ],
      );
      assert.equal(all.body.entries[0].at, '2024-05-01T13:00:00.000Z');
      assert.ok(!('data' in all.body.entries[0]));
      assert.deepEqual(all.body.entries[4].data, {
        hook: 'install',
        tail: ['Traceback (most recent call last):', 'RuntimeError: boom'],
      });
      const newest = await c.api('GET', `/v1/models/${MODEL}/units/web/0/status-log?limit=2`);
      assert.deepEqual(
        newest.body.entries.map((e: { status: string }) => e.status),
        ['error', 'idle'],
      );
      const workload = await c.api('GET', `/v1/models/${MODEL}/units/web/0/status-log?kinds=workload`);
      assert.deepEqual(
        workload.body.entries.map((e: { status: string }) => e.status),
        ['waiting', 'maintenance', 'error'],
      );
    });

    test('API: 404 for a unit never heard of; a unit without history is fine; 400s', async () => {
      const ghost = await c.api('GET', `/v1/models/${MODEL}/units/ghost/0/status-log`);
      assert.equal(ghost.status, 404);
      assert.equal(ghost.body.message, 'unit "ghost/0" not found');
      const model = await c.api('GET', '/v1/models/nope/units/web/0/status-log');
      assert.equal(model.status, 404);
      assert.equal(model.body.message, 'model "nope" not found');
      // a unit row without any history yet
      await c.store.db
        .insertInto('charms')
        .values({
          name: 'quiet',
          revision: 1,
          sha256: '0'.repeat(64),
          metadata: JSON.stringify({ name: 'quiet' }),
          archive: Buffer.from(''),
          size: 0,
        })
        .execute();
      await c.store.db
        .insertInto('applications')
        .values({ model_uuid: uuid, name: 'quiet', charm_name: 'quiet', charm_revision: 1 })
        .execute();
      await c.store.db
        .insertInto('units')
        .values({ model_uuid: uuid, name: 'quiet/0', application: 'quiet', number: 0 })
        .execute();
      const quiet = await c.api('GET', `/v1/models/${MODEL}/units/quiet/0/status-log`);
      assert.equal(quiet.status, 200);
      assert.deepEqual(quiet.body, { unit: 'quiet/0', entries: [] });
      const kinds = await c.api('GET', `/v1/models/${MODEL}/units/web/0/status-log?kinds=workload,bogus`);
      assert.equal(kinds.status, 400);
      assert.match(kinds.body.message, /querystring\.kinds/);
      const n = await c.api('GET', `/v1/models/${MODEL}/units/web/x/status-log`);
      assert.equal(n.status, 400);
      assert.match(n.body.message, /params\.n/);
    });

    test('CLI: Juju-style table, failed hook output under its row', async () => {
      const r = await cli('show-status-log', 'web/0', '-m', MODEL);
      assert.equal(r.code, 0, r.stderr);
      const lines = r.stdout.trimEnd().split('\n');
      assert.match(lines[0], /^Time\s+Type\s+Status\s+Message$/);
      assert.match(lines[1], /^2024-05-01 13:00:00Z\s+juju-unit\s+allocating$/);
      assert.match(lines[2], /^2024-05-01 13:00:01Z\s+workload\s+waiting\s+waiting for machine$/);
      assert.match(lines[5], /^2024-05-01 13:00:04Z\s+workload\s+error\s+hook failed: "install"$/);
      assert.equal(lines[6], '    Traceback (most recent call last):');
      assert.equal(lines[7], '    RuntimeError: boom');
      assert.match(lines[8], /^2024-05-01 13:00:05Z\s+juju-unit\s+idle$/);
      assert.equal(lines.length, 9);
      const two = await cli('show-status-log', 'web/0', '-m', MODEL, '--limit', '2');
      assert.equal(two.stdout.trimEnd().split('\n').length, 5);
      const agent = await cli('show-status-log', 'web/0', '-m', MODEL, '--type', 'juju-unit');
      assert.doesNotMatch(agent.stdout, /workload/);
      assert.match(agent.stdout, /executing\s+running install hook/);
      const quiet = await cli('show-status-log', 'quiet/0', '-m', MODEL);
      assert.equal(quiet.stdout, 'No status history for unit quiet/0.\n');
    });

    test('CLI: json and yaml', async () => {
      const json = JSON.parse((await cli('show-status-log', 'web/0', '-m', MODEL, '--format', 'json')).stdout);
      assert.equal(json.unit, 'web/0');
      assert.equal(json.entries.length, 6);
      assert.deepEqual(json.entries[4].data.tail, ['Traceback (most recent call last):', 'RuntimeError: boom']);
      const yaml = parse((await cli('show-status-log', 'web/0', '-m', MODEL, '--format', 'yaml')).stdout);
      assert.deepEqual(yaml, json);
    });

    test('CLI errors: bad unit name exits 2, unknown unit 1', async () => {
      for (const bad of ['web', 'web/x', 'Web/0', 'unit-web-0']) {
        const r = await cli('show-status-log', bad, '-m', MODEL);
        assert.equal(r.code, 2, bad);
        assert.match(r.stderr, new RegExp(`invalid unit name "${bad}"`));
      }
      const ghost = await cli('show-status-log', 'ghost/3', '-m', MODEL);
      assert.equal(ghost.code, 1);
      assert.match(ghost.stderr, /^ERROR unit "ghost\/3" not found/m);
      const type = await cli('show-status-log', 'web/0', '-m', MODEL, '--type', 'machine');
      assert.equal(type.code, 2);
      const limit = await cli('show-status-log', 'web/0', '-m', MODEL, '--limit', '0');
      assert.equal(limit.code, 2);
    });
  });
});
