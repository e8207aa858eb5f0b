// Kill the worker in the middle of a migration over real sshd hosts and start a
// new one (issue 11): the migration must resume (or roll back cleanly), leave one
// kv-store unit on the expected machine, run every hook of the move once, and
// kv-web must end up reading from the right host. The API and the worker are
// separate processes on a shared Postgres store, as in production.
//
// The charms are copies of the kv examples with two additions: every hook appends
// its name to /tmp/ran-<unit>.log on its machine (the machine's own record of what
// ran), and kv-store's install sleeps while /tmp/slow-install exists on the host,
// kv-web's kv-relation-departed while /tmp/slow-departed does (so the worker can be
// killed while they run). A first migration, with no crash, is the reference.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { cpSync, createWriteStream, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, type TestContext, test } from 'node:test';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { type CliResult, cliPath, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { KV_STORE_CHARM, KV_WEB_CHARM, pollKvWeb, waitForKvWebConnected } from './helpers/kv-charms.ts';
import { createTestDatabase, postgresUrl } from './helpers/postgres.ts';
import { settle } from './helpers/relations.ts';
import { waitFor } from './helpers/wait.ts';

const M = 'mcrash';
const SLOW_SECONDS = 8;

/** A copy of a kv charm whose hooks record themselves on the machine and can be slowed by a marker file. */
function instrumented(src: string, dest: string, slowHook: string, marker: string): string {
  cpSync(src, dest, { recursive: true, verbatimSymlinks: true });
  const common = join(dest, 'hooks', 'common.sh');
  const text = readFileSync(common, 'utf8');
  const anchor = 'mkdir -p "$STATE_DIR"\n';
  assert.equal(text.split(anchor).length, 2, `${common} has one ${JSON.stringify(anchor)}`);
  writeFileSync(
    common,
    text.replace(
      anchor,
      `${anchor}echo "$hook" >>"/tmp/ran-$unit_slug.log"\n` +
        `if [ "$hook" = ${slowHook} ] && [ -f /tmp/${marker} ]; then juju-log -- "SLOW ${slowHook}"; sleep ${SLOW_SECONDS}; fi\n`,
    ),
  );
  return dest;
}

/** Hooks whose number of runs depends on timing (bag changes, periodic status): not counted exactly. */
const variable = (hook: string) => hook.endsWith('-relation-changed') || hook === 'update-status';

type Counts = Record<string, number>;

function count(hooks: string[]): Counts {
  const out: Counts = {};
  for (const h of hooks) out[h] = (out[h] ?? 0) + 1;
  return out;
}

/** The counts of the hooks that must run a fixed number of times. */
function fixed(c: Counts): Counts {
  return Object.fromEntries(
    Object.entries(c)
      .filter(([h]) => !variable(h))
      .sort(([a], [b]) => a.localeCompare(b)),
  );
}

const unsupported =
  fleetUnsupportedReason() ?? (postgresUrl ? undefined : 'CHARMFLOW_TEST_DATABASE_URL not set (CI sets it)');

describe('a worker killed mid-migration over SSH machines', { skip: unsupported }, () => {
  let c: TestController;
  let fleet: Fleet;
  let dir: string;
  let uuid: string;
  let web: string;
  let dropDb: () => Promise<void>;
  const workers: ChildProcess[] = [];
  /** What a migration that no worker died in ran: the reference for the others. */
  let baseline: { fresh: Counts; old: Counts; web: Counts } | undefined;

  const cli = (args: string[]): Promise<CliResult> =>
    runCli([...args, '-m', M], { CHARMFLOW_DATA_DIR: c.dataDir }, 240_000);
  const ok = async (...args: string[]) => {
    const r = await cli(args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const status = async () => JSON.parse((await ok('status', '--format', 'json')).stdout);

  function startWorker(): ChildProcess {
    const n = workers.length;
    const child = spawn(process.execPath, [cliPath, 'worker'], {
      env: {
        ...process.env,
        TEMPORAL_ADDRESS: c.temporalAddress,
        DATABASE_URL: c.config.databaseUrl,
        CHARMFLOW_DATA_DIR: c.dataDir,
        CHARMFLOW_TASK_QUEUE: c.config.taskQueue,
        CHARMFLOW_LOCAL_NET: String(c.config.localAddressBase),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const log = createWriteStream(join(dir, `worker-${n}.log`));
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    workers.push(child);
    return child;
  }

  async function killWorker(child: ChildProcess): Promise<void> {
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
  }

  const hostOf = (machine: string) => fleet.hosts[Number(machine)];
  /** The hooks a unit's machine saw it run, in order. */
  const ranOn = (machine: string, unit: string): string[] => {
    const f = join(hostOf(machine).tmpDir, `ran-${unit.replace('/', '-')}.log`);
    return existsSync(f) ? readFileSync(f, 'utf8').trim().split('\n').filter(Boolean) : [];
  };

  const aliveStoreUnits = () =>
    c.store.db
      .selectFrom('units')
      .select(['name', 'machine_id', 'life'])
      .where('model_uuid', '=', uuid)
      .where('application', '=', 'kv-store')
      .orderBy('number')
      .execute();

  /** The controller's record of a unit's hook runs (since a time). */
  const runsOf = (unit: string, since?: Date) => {
    let q = c.store.db
      .selectFrom('hook_runs')
      .select(['hook', 'context_id', 'exit_code', 'committed', 'finished_at'])
      .where('model_uuid', '=', uuid)
      .where('unit', '=', unit);
    if (since) q = q.where('started_at', '>=', since);
    return q.orderBy('started_at').execute();
  };

  const poller = (address: string) => pollKvWeb(address);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cf-migrate-crash-'));
    const store = instrumented(KV_STORE_CHARM, join(dir, 'kv-store'), 'install', 'slow-install');
    const webCharm = instrumented(KV_WEB_CHARM, join(dir, 'kv-web'), 'kv-relation-departed', 'slow-departed');
    const db = await createTestDatabase();
    dropDb = db.drop;
    [fleet, c] = await Promise.all([createFleet(4), startTestController({ databaseUrl: db.url, worker: false })]);
    startWorker();
    const add = await runCli(['add-model', M, '--cloud', 'manual'], { CHARMFLOW_DATA_DIR: c.dataDir });
    assert.equal(add.code, 0, add.stderr);
    for (const h of fleet.hosts) {
      await ok('add-machine', `ssh:root@${h.address}:${h.port}`, '--private-key', h.privateKeyPath);
    }
    uuid = (await c.store.db.selectFrom('models').select('uuid').where('name', '=', M).executeTakeFirstOrThrow()).uuid;
    await ok('deploy', store, 'kv-store', '--to', '0');
    await ok('deploy', webCharm, 'kv-web', '--to', '1');
    await ok('integrate', 'kv-web', 'kv-store');
    await settle(c, [M], 240_000);
    web = fleet.hosts[1].address;
    const page = await waitForKvWebConnected(web, 8080, { database: 'web' });
    assert.equal(page.host, fleet.hosts[0].address);
  });
  after(async () => {
    for (const w of workers) if (w.exitCode === null && w.signalCode === null) w.kill('SIGKILL');
    await c?.stop();
    await fleet?.destroy();
    await dropDb?.();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /**
   * Migrates kv-store (one unit) to `to`; `crash`, when given, waits for its moment
   * and kills the worker, then a new one starts. Checks the model is clean after
   * and returns what the units ran.
   */
  async function migrate(
    t: TestContext,
    to: string,
    crash?: { moment: (opId: number, fresh: string) => Promise<string> },
  ) {
    const [old] = await aliveStoreUnits();
    assert.equal(old.life, 'alive');
    const from = old.machine_id ?? '';
    const oldRanBefore = ranOn(from, old.name).length;
    const webRanBefore = ranOn('1', 'kv-web/0').length;
    const webRunsBefore = (await runsOf('kv-web/0')).length;
    const poll = poller(web);
    let opId = 0;
    let fresh = '';
    let op: any;
    let killedAt = 'not killed';
    let killTime = 0;
    try {
      const d = await ok('migrate', 'kv-store', '--to', to, '--no-wait');
      opId = Number(/operation (\d+)/.exec(d.stdout)?.[1]);
      assert.ok(opId > 0, d.stdout);
      fresh = (await aliveStoreUnits()).find((u) => u.name !== old.name)?.name ?? '';
      assert.ok(fresh, 'the new unit is recorded at once');

      if (crash) {
        killedAt = await crash.moment(opId, fresh);
        const open = await c.store.db
          .selectFrom('hook_runs')
          .select(['unit', 'hook'])
          .where('model_uuid', '=', uuid)
          .where('finished_at', 'is', null)
          .execute();
        killTime = Date.now();
        await killWorker(workers[workers.length - 1]);
        t.diagnostic(
          `hooks running when the worker died: ${open.map((r) => `${r.unit} ${r.hook}`).join(', ') || 'none'}`,
        );
        await new Promise((r) => setTimeout(r, 1000));
        startWorker();
      }

      op = await c.waitOperation(opId, 480_000);
      if (crash) {
        t.diagnostic(`the operation ended ${((Date.now() - killTime) / 1000).toFixed(1)} s after the kill`);
        // which activities the dead worker left behind, and how long each took to be tried again
        const wf = await c.store.db
          .selectFrom('operations')
          .select('workflow_id')
          .where('id', '=', opId)
          .executeTakeFirstOrThrow();
        const events = (await c.client.workflow.getHandle(wf.workflow_id ?? '').fetchHistory()).events ?? [];
        const scheduled = new Map<string, string>();
        for (const e of events) {
          const a = e.activityTaskScheduledEventAttributes;
          if (a)
            scheduled.set(
              String(e.eventId),
              `${a.activityType?.name} (start-to-close ${a.startToCloseTimeout?.seconds ?? '?'} s)`,
            );
          const to = e.activityTaskTimedOutEventAttributes;
          if (to)
            t.diagnostic(`activity timed out in the migration workflow: ${scheduled.get(String(to.scheduledEventId))}`);
          const st = e.activityTaskStartedEventAttributes;
          if (st && (st.attempt ?? 1) > 1)
            t.diagnostic(`activity retried (attempt ${st.attempt}): ${scheduled.get(String(st.scheduledEventId))}`);
        }
      }
    } catch (err) {
      await poll.end();
      throw err;
    }
    const { requests, failures } = await poll.end();
    const summary =
      `migrate ${old.name} (machine ${from}) -> ${fresh} (machine ${to}), worker killed ${killedAt}: ` +
      `operation ${op.state}${op.error ? ` (${op.error})` : ''}; kv-web polled ${requests} times, ` +
      `${failures.length} failed${failures.length ? `: ${[...new Set(failures)].slice(0, 5).join(' | ')}` : ''}`;
    console.log(summary);
    t.diagnostic(summary);
    assert.ok(requests > 20, `the client polled the whole time (${requests} requests)`);

    await settle(c, [M], 240_000);
    const rolledBack = op.state === 'failed';
    if (rolledBack) {
      assert.match(
        op.error,
        new RegExp(
          `migration of kv-store failed: .*; rolled back: ${fresh.replace('/', '\\/')} removed, ${old.name.replace('/', '\\/')} untouched`,
        ),
      );
    } else {
      assert.equal(op.state, 'succeeded', op.error);
    }
    const keep = rolledBack ? { unit: old.name, machine: from } : { unit: fresh, machine: to };
    const gone = rolledBack ? fresh : old.name;

    // one kv-store unit, alive, on the expected machine; nothing left of the other
    const rows = await aliveStoreUnits();
    assert.deepEqual(
      rows.map((u) => ({ unit: u.name, machine: u.machine_id, life: u.life })),
      [{ ...keep, life: 'alive' }],
      'exactly one kv-store unit is left',
    );
    const s = await status();
    assert.deepEqual(Object.keys(s.applications['kv-store'].units), [keep.unit]);
    assert.equal(s.applications['kv-store'].units[keep.unit].machine, keep.machine);
    assert.equal(s.applications['kv-store'].units[keep.unit].leader, true, `${keep.unit} leads kv-store`);
    for (const [app, view] of Object.entries(s.applications as Record<string, any>)) {
      for (const [u, uv] of Object.entries(view.units as Record<string, any>)) {
        assert.notEqual(uv['workload-status']?.current, 'error', `${app}: ${u} ${JSON.stringify(uv)}`);
        assert.notEqual(uv['agent-status']?.current, 'error', `${app}: ${u} ${JSON.stringify(uv)}`);
        assert.equal(uv['workload-status']?.current, 'active', `${u}: ${JSON.stringify(uv['workload-status'])}`);
      }
    }
    assert.deepEqual(await runsOf(gone), [], `${gone}'s hook runs went with it`);

    // kv-web reads from the kept unit's host
    const page = await waitForKvWebConnected(web, 8080, { database: 'web', host: hostOf(keep.machine).address });
    assert.equal(page.unit, 'kv-web/0');

    // every hook of the new unit ran once: as the controller recorded it, and as its machine saw it
    const runs = await runsOf(fresh);
    for (const r of runs) {
      assert.ok(r.finished_at, `${fresh} ${r.hook} finished: ${JSON.stringify(r)}`);
      assert.equal(r.exit_code, 0, `${fresh} ${r.hook}: ${JSON.stringify(r)}`);
      assert.equal(r.committed, true, `${fresh} ${r.hook}: ${JSON.stringify(r)}`);
    }
    const freshDb = count(runs.map((r) => r.hook));
    const freshMachine = count(ranOn(to, fresh));
    t.diagnostic(`${fresh} hook runs (controller): ${JSON.stringify(freshDb)}`);
    t.diagnostic(`${fresh} hook runs (machine): ${JSON.stringify(freshMachine)}`);
    assert.deepEqual(fixed(freshMachine), fixed(freshDb), `${fresh}: the machine ran what the controller recorded`);
    for (const h of ['install', 'config-changed', 'start']) {
      assert.equal(freshDb[h], 1, `${fresh} ran ${h} once: ${JSON.stringify(freshDb)}`);
    }
    for (const [h, n] of Object.entries(fixed(freshDb))) {
      assert.ok(n === 1 || h === 'leader-settings-changed', `${fresh} ran ${h} ${n} times: ${JSON.stringify(freshDb)}`);
    }

    // the unit that left: what its machine ran since the migration began
    const oldRan = count(ranOn(from, old.name).slice(oldRanBefore));
    t.diagnostic(`${old.name} hooks since the migration began (machine): ${JSON.stringify(oldRan)}`);
    // kv-web: what it ran for the move
    const webRuns = (await runsOf('kv-web/0')).slice(webRunsBefore);
    for (const r of webRuns) assert.equal(r.exit_code, 0, `kv-web/0 ${r.hook}: ${JSON.stringify(r)}`);
    const webDb = count(webRuns.map((r) => r.hook));
    const webMachine = count(ranOn('1', 'kv-web/0').slice(webRanBefore));
    t.diagnostic(`kv-web/0 hooks for the migration (controller): ${JSON.stringify(webDb)}`);
    t.diagnostic(`kv-web/0 hooks for the migration (machine): ${JSON.stringify(webMachine)}`);
    assert.deepEqual(fixed(webMachine), fixed(webDb), 'kv-web/0: the machine ran what the controller recorded');

    if (!rolledBack) {
      for (const h of ['stop', 'remove'])
        assert.equal(oldRan[h], 1, `${old.name} ran ${h} once: ${JSON.stringify(oldRan)}`);
      assert.equal(webDb['kv-relation-joined'], 1, `kv-web/0 joined ${fresh} once: ${JSON.stringify(webDb)}`);
      assert.equal(webDb['kv-relation-departed'], 1, `kv-web/0 saw ${old.name} depart once: ${JSON.stringify(webDb)}`);
    }
    return { rolledBack, fresh: fixed(freshDb), old: fixed(oldRan), web: fixed(webDb) };
  }

  test('reference: a migration no worker dies in', async (t) => {
    const r = await migrate(t, '3');
    assert.equal(r.rolledBack, false);
    baseline = r;
  });

  test('SIGKILL while the new unit runs install: a new worker finishes the migration, every hook ran once', async (t) => {
    assert.ok(baseline, 'the reference migration ran');
    const marker = join(hostOf('2').tmpDir, 'slow-install');
    writeFileSync(marker, '');
    try {
      const r = await migrate(t, '2', {
        moment: async (_opId, fresh) => {
          await waitFor(
            `${fresh} running install`,
            async () => {
              const running = (await runsOf(fresh)).filter((x) => x.hook === 'install' && x.finished_at === null);
              const slow = await c.store.db
                .selectFrom('log_entries')
                .select('id')
                .where('model_uuid', '=', uuid)
                .where('entity', '=', fresh)
                .where('message', '=', 'SLOW install')
                .execute();
              return running.length === 1 && slow.length > 0;
            },
            240_000,
          );
          return `while ${fresh} ran install (hook_runs row open, the hook sleeping on its machine)`;
        },
      });
      if (!r.rolledBack) {
        assert.deepEqual(r.fresh, baseline.fresh, 'the new unit ran the same hooks as in the reference migration');
        assert.deepEqual(r.old, baseline.old, 'the old unit ran the same hooks as in the reference migration');
        assert.deepEqual(r.web, baseline.web, 'kv-web ran the same hooks as in the reference migration');
      }
    } finally {
      rmSync(marker, { force: true });
    }
  });

  test('SIGKILL while the old unit drains: a new worker finishes the migration, every hook ran once', async (t) => {
    assert.ok(baseline, 'the reference migration ran');
    const r = await migrate(t, '0', {
      moment: async (opId) => {
        // looked at every 25 ms: the draining step may not last long
        const deadline = Date.now() + 240_000;
        let seen = '';
        while (!seen) {
          const op = await c.store.db
            .selectFrom('operations')
            .select(['progress', 'state'])
            .where('id', '=', opId)
            .executeTakeFirstOrThrow();
          const step = String((op.progress as { step?: string }).step ?? '');
          if (/^draining /.test(step) || /^the related units departing from /.test(step)) seen = step;
          else if (/^(removing|running stop|kv-store: )/.test(step) || op.state !== 'running')
            assert.fail(`missed the drain: the operation is ${op.state} at "${step}"`);
          else if (Date.now() > deadline) assert.fail(`no drain within 240 s; the operation is at "${step}"`);
          else await new Promise((res) => setTimeout(res, 25));
        }
        return `at step "${seen}"`;
      },
    });
    if (!r.rolledBack) {
      assert.deepEqual(r.fresh, baseline.fresh, 'the new unit ran the same hooks as in the reference migration');
      assert.deepEqual(r.old, baseline.old, 'the old unit ran the same hooks as in the reference migration');
      assert.deepEqual(r.web, baseline.web, 'kv-web ran the same hooks as in the reference migration');
    }
  });

  test('SIGKILL while kv-web runs relation-departed for the old unit: the migration finishes, departed ran once', async (t) => {
    assert.ok(baseline, 'the reference migration ran');
    const marker = join(hostOf('1').tmpDir, 'slow-departed');
    writeFileSync(marker, '');
    try {
      const r = await migrate(t, '3', {
        moment: async () => {
          await waitFor(
            'kv-web/0 running kv-relation-departed',
            async () => {
              const running = (await runsOf('kv-web/0')).filter(
                (x) => x.hook === 'kv-relation-departed' && x.finished_at === null,
              );
              const slow = await c.store.db
                .selectFrom('log_entries')
                .select('id')
                .where('model_uuid', '=', uuid)
                .where('entity', '=', 'kv-web/0')
                // juju-log in a relation hook prefixes the relation id (`kv:3: `)
                .where('message', 'like', '%SLOW kv-relation-departed')
                .execute();
              return running.length === 1 && slow.length > 0;
            },
            240_000,
          );
          return 'while kv-web/0 ran kv-relation-departed (hook_runs row open, the hook sleeping on its machine)';
        },
      });
      if (!r.rolledBack) {
        assert.deepEqual(r.fresh, baseline.fresh, 'the new unit ran the same hooks as in the reference migration');
        assert.deepEqual(r.old, baseline.old, 'the old unit ran the same hooks as in the reference migration');
        assert.deepEqual(r.web, baseline.web, 'kv-web ran the same hooks as in the reference migration');
      }
    } finally {
      rmSync(marker, { force: true });
    }
  });
});
