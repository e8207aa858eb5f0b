// Kill the worker in the middle of a refresh over real sshd hosts and start a new
// one: the refresh finishes (every unit on the new revision and active) and no unit
// runs upgrade-charm twice for it. The API and the worker are separate processes on
// a shared Postgres store, as in production; the hosts are the test fleet.
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { createTestDatabase, postgresUrl } from './helpers/postgres.ts';
import { settle } from './helpers/relations.ts';
import { waitFor } from './helpers/wait.ts';
import { spawnWorker } from './helpers/worker.ts';

const versioned = join(projectRoot, 'test', 'fixtures', 'charms', 'versioned');
const M = 'crash';

/**
 * A copy of the versioned fixture as another revision. Every hook of it also
 * appends `<hook> <version>` to ran.log in the unit's directory on the machine
 * (the machine's own record of what ran), and upgrade-charm sleeps `slow` seconds.
 */
function versionedRevision(dir: string, version: string, slow = 0): string {
  const d = join(dir, version);
  cpSync(versioned, d, { recursive: true, verbatimSymlinks: true });
  writeFileSync(join(d, 'VERSION'), `${version}\n`);
  writeFileSync(join(d, 'behaviour'), 'good\n');
  const common = join(d, 'hooks', 'common.sh');
  const text = readFileSync(common, 'utf8');
  const marker = 'juju-log -- "HOOK $hook $version"\n';
  assert.ok(text.includes(marker), 'the fixture logs HOOK <hook> <version>');
  writeFileSync(
    common,
    text.replace(
      marker,
      `${marker}echo "$hook $version" >>"$dir/../ran.log"\nif [ "$hook" = upgrade-charm ]; then sleep ${slow}; fi\n`,
    ),
  );
  return d;
}

const unsupported =
  fleetUnsupportedReason() ?? (postgresUrl ? undefined : 'CHARMFLOW_TEST_DATABASE_URL not set (CI sets it)');

describe('a worker killed mid-refresh over SSH machines', { skip: unsupported }, () => {
  let c: TestController;
  let fleet: Fleet;
  let dir: string;
  let uuid: string;
  let dropDb: () => Promise<void>;
  const workers: ChildProcess[] = [];
  const cli = (args: string[]): Promise<CliResult> =>
    runCli([...args, '-m', M], { CHARMFLOW_DATA_DIR: c.dataDir }, 240_000);
  const ok = async (...args: string[]) => {
    const r = await cli(args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };

  function startWorker(): ChildProcess {
    const child = spawnWorker(c);
    workers.push(child);
    return child;
  }

  const logged = (unit: string, message: string) =>
    c.store.db
      .selectFrom('log_entries')
      .select('id')
      .where('model_uuid', '=', uuid)
      .where('entity', '=', unit)
      .where('message', '=', message)
      .execute();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'cf-refresh-crash-'));
    const db = await createTestDatabase();
    dropDb = db.drop;
    [fleet, c] = await Promise.all([createFleet(3), startTestController({ databaseUrl: db.url, worker: false })]);
    startWorker();
    const add = await runCli(['add-model', M, '--cloud', 'manual'], { CHARMFLOW_DATA_DIR: c.dataDir });
    assert.equal(add.code, 0, add.stderr);
    for (const h of fleet.hosts) {
      await ok('add-machine', `ssh:root@${h.address}:${h.port}`, '--private-key', h.privateKeyPath);
    }
    uuid = (await c.store.db.selectFrom('models').select('uuid').where('name', '=', M).executeTakeFirstOrThrow()).uuid;
    await ok('deploy', versionedRevision(dir, 'v1'), 'app', '-n', '3', '--to', '0,1,2');
    await settle(c, [M], 240_000);
  });
  after(async () => {
    for (const w of workers) w.kill('SIGKILL');
    await c?.stop();
    await fleet?.destroy();
    await dropDb?.();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test('SIGKILL while a batch runs upgrade-charm: a new worker finishes the refresh, each upgrade-charm ran once', async () => {
    const s0 = JSON.parse((await ok('status', '--format', 'json')).stdout).applications.app;
    const from: number = s0['charm-rev'];
    const since = new Date();
    // batches of one, the leader last: app/1, app/2, app/0; upgrade-charm takes 6 s
    const d = await ok('refresh', 'app', '--path', versionedRevision(dir, 'v2', 6), '--no-wait');
    const opId = Number(/operation (\d+)/.exec(d.stdout)?.[1]);
    assert.ok(opId > 0, d.stdout);
    // the second batch's upgrade-charm is running on its machine (it logged, then sleeps): kill the worker hard
    await waitFor(
      'app/2 running upgrade-charm v2',
      async () => (await logged('app/2', 'HOOK upgrade-charm v2')).length > 0,
      120_000,
    );
    const running = await c.store.db
      .selectFrom('hook_runs')
      .select('context_id')
      .where('model_uuid', '=', uuid)
      .where('unit', '=', 'app/2')
      .where('hook', '=', 'upgrade-charm')
      .where('finished_at', 'is', null)
      .execute();
    assert.equal(running.length, 1, 'app/2 is in the middle of upgrade-charm when the worker dies');
    workers[0].kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 1000));
    startWorker();

    const op = await c.waitOperation(opId, 240_000);
    assert.equal(op.state, 'succeeded', op.error);
    const s = JSON.parse((await ok('status', '--format', 'json')).stdout).applications.app;
    assert.equal(s['charm-rev'], from + 1, 'the application is on the new revision');
    for (const u of ['app/0', 'app/1', 'app/2']) {
      const view = s.units[u];
      assert.equal(view['workload-status'].current, 'active', u);
      assert.equal(view['workload-status'].message, 'running v2', u);
      const row = await c.store.db
        .selectFrom('units')
        .select(['charm_revision', 'workload_status'])
        .where('model_uuid', '=', uuid)
        .where('name', '=', u)
        .executeTakeFirstOrThrow();
      assert.equal(row.charm_revision, null, `${u} follows the application again`);

      // exactly once: as the controller recorded it, as the charm logged it, and as the machine saw it
      const runs = await c.store.db
        .selectFrom('hook_runs')
        .select(['context_id', 'exit_code', 'committed'])
        .where('model_uuid', '=', uuid)
        .where('unit', '=', u)
        .where('hook', '=', 'upgrade-charm')
        .where('started_at', '>=', since)
        .execute();
      assert.equal(runs.length, 1, `${u} has one upgrade-charm run for the refresh: ${JSON.stringify(runs)}`);
      assert.equal(runs[0].exit_code, 0, u);
      assert.equal(runs[0].committed, true, u);
      assert.equal((await logged(u, 'HOOK upgrade-charm v2')).length, 1, `${u} logged HOOK upgrade-charm v2 once`);
      const host = fleet.hosts.find((h) => h.address === view['public-address']);
      assert.ok(host, `${u} is on a fleet host`);
      const unitDir = join(host.rootFs, 'units', u.replace('/', '-'));
      const ran = readFileSync(join(unitDir, 'ran.log'), 'utf8').trim().split('\n');
      assert.equal(ran.filter((l) => l === 'upgrade-charm v2').length, 1, `${u} on its machine: ${ran.join(' | ')}`);
      assert.ok(
        ran.lastIndexOf('config-changed v2') > ran.indexOf('upgrade-charm v2'),
        `${u} ran config-changed after upgrade-charm: ${ran.join(' | ')}`,
      );
      assert.equal(readFileSync(join(unitDir, 'charm', 'VERSION'), 'utf8'), 'v2\n', `${u} has the new charm`);
      assert.equal(readFileSync(join(unitDir, `workload-${u.replace('/', '-')}`), 'utf8'), 'v2\n', u);
    }
    await settle(c, [M], 120_000);
  });
});
