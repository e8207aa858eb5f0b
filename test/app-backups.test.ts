// Application backups end to end on the local cloud: the charm's backup action names
// an artifact, which is fetched into the controller's backup store with its size and
// sha256; restoring it (copied back to a unit, the restore action given its path)
// brings back data with the same checksum. Misbehaving backup actions, a too-large
// artifact and bad requests fail clearly and leave nothing behind.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';

const backupable = join(projectRoot, 'test', 'fixtures', 'charms', 'backupable');
const actor = join(projectRoot, 'test', 'fixtures', 'charms', 'actor');

describe('application backups', () => {
  let c: TestController;
  let modelUuid: string;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const checksum = async (unit: string) =>
    JSON.parse((await ok('run', unit, 'checksum', '--format', 'json')).stdout).results as {
      sha256: string;
      size: string;
    };
  const operationCount = async () => (await c.api('GET', '/v1/operations?limit=1000')).body.operations.length;
  const backupRows = () => c.store.db.selectFrom('app_backups').selectAll().execute();
  const storeDir = () => join(c.dataDir, 'backups', 'apps', modelUuid);
  const sha256File = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

  before(async () => {
    // restores go to the unit in several execs
    process.env.CHARMFLOW_APP_BACKUP_CHUNK_BYTES = String(64 * 1024);
    c = await startTestController();
    await ok('deploy', backupable, 'db', '-n', '2');
    await ok('deploy', actor, 'plain');
    modelUuid = (
      await c.store.db.selectFrom('models').select('uuid').where('name', '=', 'default').executeTakeFirstOrThrow()
    ).uuid;
  });
  after(async () => {
    delete process.env.CHARMFLOW_APP_BACKUP_CHUNK_BYTES;
    delete process.env.CHARMFLOW_APP_BACKUP_MAX_BYTES;
    await c?.stop();
  });

  test('a backup is fetched with its size and sha256; restored, the data has the same checksum', async () => {
    await ok('run', 'db/0', 'write', 'bytes=300000');
    const original = await checksum('db/0');
    assert.equal(original.size, '300000');

    const b = await ok('backup-application', 'db/0', 'label=before', '--format', 'json');
    const backup = JSON.parse(b.stdout);
    assert.equal(backup.size, 300000);
    assert.equal(backup.sha256, original.sha256);
    assert.match(backup.path, /\/units\/db-0\/backups\/before-.*\.bin$/);
    // in the controller's backup store, readable by the controller only
    const file = join(storeDir(), String(backup.id));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(statSync(file).size, 300000);
    assert.equal(sha256File(file), original.sha256);
    assert.deepEqual(
      readdirSync(storeDir()).filter((f) => f.startsWith('.partial')),
      [],
      'no partial file is left',
    );

    // listed, with its operation (whose action results name the artifact)
    const listed = JSON.parse((await ok('app-backups', 'db', '--format', 'json')).stdout).backups;
    const row = listed.find((x: { id: number }) => x.id === backup.id);
    assert.equal(row.unit, 'db/0');
    assert.equal(row.charm, 'backupable');
    assert.equal(row.sha256, original.sha256);
    assert.equal(row.size, 300000);
    const op = (await c.api('GET', `/v1/operations/${row.operationId}`)).body;
    assert.equal(op.kind, 'backup-application');
    assert.equal(op.state, 'succeeded');
    assert.equal(op.action.results.path, backup.path);
    assert.match((await ok('app-backups')).stdout, new RegExp(`${original.sha256.slice(0, 16)}`));

    // the data changes, then the backup comes back
    await ok('run', 'db/0', 'write', 'text=changed');
    assert.notEqual((await checksum('db/0')).sha256, original.sha256);
    const r = await ok('restore-application', 'db/0', String(backup.id));
    assert.match(r.stdout, new RegExp(`Backup ${backup.id} restored on db/0`));
    assert.deepEqual(await checksum('db/0'), original);

    // the restore action got the copy's path; the copy went afterwards
    const restoreOp = (await c.api('GET', '/v1/operations?limit=20')).body.operations.find(
      (o: { kind: string }) => o.kind === 'restore-application',
    );
    assert.equal(restoreOp.state, 'succeeded');
    assert.equal(restoreOp.action.results.sha256, original.sha256);
    const params = (
      await c.store.db
        .selectFrom('operations')
        .select('params')
        .where('id', '=', restoreOp.id)
        .executeTakeFirstOrThrow()
    ).params as { params: { path: string } };
    assert.match(params.params.path, new RegExp(`/units/db-0/restore/${backup.id}/before-.*\\.bin$`));
    assert.equal(existsSync(params.params.path), false, 'the copy on the unit is removed after the restore');

    // and onto another unit of the application (its leader by default here: db/0 is the leader)
    assert.notEqual((await checksum('db/1')).sha256, original.sha256);
    await ok('restore-application', 'db/1', String(backup.id));
    assert.deepEqual(await checksum('db/1'), original);
  });

  test('APP backs up the leader; a relative artifact path is read from the charm dir', async () => {
    const b = JSON.parse((await ok('backup-application', 'db', 'mode=relative', '--format', 'json')).stdout);
    const leader = await c.store.db
      .selectFrom('units')
      .select('name')
      .where('application', '=', 'db')
      .where('leader', '=', true)
      .executeTakeFirstOrThrow();
    const row = (await c.api('GET', `/v1/models/default/backups/${b.id}`)).body.backup;
    assert.equal(row.unit, leader.name);
    assert.match(row.path, /\/units\/db-0\/backups\/nightly-.*\.bin$/);
    assert.equal(row.sha256, (await checksum(leader.name)).sha256);
  });

  test('a backup action that misbehaves fails its operation clearly, and no backup is listed', async () => {
    const before = (await backupRows()).length;
    const cases: [string, RegExp][] = [
      ['no-path', /returned no artifact: it must action-set path=<file>/],
      ['missing', /no readable file at .*\.gone/],
      ['bad-sha', /has sha256 [0-9a-f]{64}, the backup action said 0000/],
    ];
    for (const [mode, why] of cases) {
      const r = await cli('backup-application', 'db/1', `mode=${mode}`);
      assert.notEqual(r.code, 0, mode);
      assert.match(r.stderr, why, mode);
    }
    assert.equal((await backupRows()).length, before);
    assert.deepEqual(
      readdirSync(storeDir()).filter((f) => f.startsWith('.partial')),
      [],
    );
    // the units are not put in error for it
    const units = await c.store.db
      .selectFrom('units')
      .select(['name', 'workload_status'])
      .where('application', '=', 'db')
      .execute();
    assert.ok(
      units.every((u) => u.workload_status === 'active'),
      JSON.stringify(units),
    );
  });

  test('an artifact over the size bound is refused and nothing of it is kept', async () => {
    process.env.CHARMFLOW_APP_BACKUP_MAX_BYTES = '100000';
    try {
      const before = (await backupRows()).length;
      await ok('run', 'db/1', 'write', 'bytes=250000');
      const r = await cli('backup-application', 'db/1');
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /larger than 100000 bytes/);
      assert.equal((await backupRows()).length, before);
      assert.deepEqual(
        readdirSync(storeDir()).filter((f) => f.startsWith('.partial')),
        [],
      );
    } finally {
      delete process.env.CHARMFLOW_APP_BACKUP_MAX_BYTES;
    }
  });

  test('bad requests are refused with 4xx naming the problem, and nothing is recorded', async () => {
    const [backup] = await backupRows();
    const before = await operationCount();
    const cases: [string, string, Record<string, unknown>, number, RegExp, string][] = [
      [
        'POST',
        '/v1/models/default/applications/plain/backups',
        {},
        400,
        /has no "backup" action \(its actions: crash, echo/,
        'action',
      ],
      ['POST', '/v1/models/default/applications/nope/backups', {}, 404, /application "nope" not found/, ''],
      ['POST', '/v1/models/nope/applications/db/backups', {}, 404, /model "nope" not found/, ''],
      ['POST', '/v1/models/default/applications/db/backups', { unit: 'db/9' }, 404, /unit "db\/9" not found/, ''],
      [
        'POST',
        '/v1/models/default/applications/db/backups',
        { unit: 'plain/0' },
        400,
        /not of application "db"/,
        'body.unit',
      ],
      [
        'POST',
        '/v1/models/default/applications/db/backups',
        { params: { label: 5 } },
        400,
        /parameter "label" must be string/,
        'body.params.label',
      ],
      [
        'POST',
        '/v1/models/default/applications/db/backups',
        { params: { mode: 'odd' } },
        400,
        /mode/,
        'body.params.mode',
      ],
      ['POST', '/v1/models/default/applications/db/restore', { backup: 999 }, 404, /backup "999" not found/, ''],
      [
        'POST',
        '/v1/models/default/applications/db/restore',
        { backup: backup.id, params: { path: '/etc/passwd' } },
        400,
        /"path" is the artifact's/,
        'body.params.path',
      ],
      [
        'POST',
        '/v1/models/default/applications/plain/restore',
        { backup: backup.id },
        400,
        /is of charm backupable/,
        'body.backup',
      ],
      ['POST', '/v1/models/default/applications/db/restore', {}, 400, /invalid request/, 'body.backup'],
      ['DELETE', '/v1/models/default/backups/999', {}, 404, /backup "999" not found/, ''],
    ];
    for (const [method, path, body, code, why, field] of cases) {
      const res = await c.api(method, path, method === 'DELETE' ? undefined : body);
      assert.equal(res.status, code, JSON.stringify([path, body, res.body]));
      assert.match(res.body.message, why);
      if (field) assert.ok(JSON.stringify(res.body.details).includes(field), JSON.stringify(res.body));
    }
    const r = await cli('backup-application', 'plain/0');
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /has no "backup" action/);
    assert.equal(await operationCount(), before, 'no operation was recorded');
  });

  test('remove-application-backup removes the artifact and its record', async () => {
    const [first] = await backupRows();
    const file = join(storeDir(), String(first.id));
    assert.ok(existsSync(file));
    await ok('remove-application-backup', String(first.id));
    assert.equal(existsSync(file), false);
    assert.equal((await c.api('GET', `/v1/models/default/backups/${first.id}`)).status, 404);
    const r = await cli('restore-application', 'db/0', String(first.id));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not found/);
  });
});
