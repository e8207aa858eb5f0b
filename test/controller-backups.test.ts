// Controller backups (issue 11): create-backup writes the model store and the charm
// store to one file; restore-backup brings back what a controller lacks, on the same
// controller after destroy-model or on a fresh one, with identical status, and its
// units keep working; a corrupt or truncated file is refused with a 400 and nothing
// changes.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { gunzipSync, gzipSync } from 'node:zlib';
import { sql } from 'kysely';
import { paths } from '../controller/config.ts';
import { applyRestore, BackupError, fileSha256, planRestore, readBackup, writeBackup } from '../store/backup.ts';
import type { SecretBox } from '../store/secret-box.ts';
import type { Store } from '../store/store.ts';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { storeBackends } from './helpers/postgres.ts';

const counter = join(projectRoot, 'test', 'fixtures', 'charms', 'counter');
const relator = join(projectRoot, 'test', 'fixtures', 'charms', 'relator');
const LIMITS = { maxUnpackedBytes: 256 * 1024 * 1024 };
const SECRET = 'hunter2-backup-s3cret';

/** The raw key of a store's box, as the backup carries it (the box keeps its key private). */
function keyOf(box: SecretBox): Buffer {
  return (box as unknown as { key: Buffer }).key;
}

function backupError(fn: () => unknown): BackupError {
  try {
    fn();
  } catch (err) {
    if (err instanceof BackupError) return err;
    throw err;
  }
  assert.fail('expected a BackupError');
}

for (const backend of storeBackends)
  describe(`store/backup: write, read, plan and restore between two stores (${backend.name})`, {
    skip: backend.skip,
  }, () => {
    let a: Store;
    let b: Store;
    const drops: (() => Promise<void>)[] = [];
    const open = async () => {
      const { store, drop } = await backend.open();
      drops.push(drop);
      return store;
    };
    let dir: string;
    let file: string;
    const archive = Buffer.from([0, 1, 2, 255, 254, 0x5c, 0x78, 10, 13, 0x22]);

    before(async () => {
      dir = mkdtempSync(join(tmpdir(), 'cf-backup-unit-'));
      file = join(dir, 'x.cfbackup');
      // two in-memory stores, each with a key of its own
      a = await open();
      b = await open();
      const db = a.db;
      await db.insertInto('clouds').values({ name: 'local', type: 'local', endpoint: null }).execute();
      await db
        .insertInto('credentials')
        .values({
          cloud: 'local',
          name: 'c',
          auth_type: 'userpass',
          attributes: JSON.stringify(a.secrets.sealAttributes({ password: SECRET })),
        })
        .execute();
      await db
        .insertInto('models')
        .values({ uuid: 'aaaaaaaa-0000-0000-0000-000000000001', name: 'm1', cloud: 'local', config: '{}' })
        .execute();
      await db
        .insertInto('charms')
        .values({
          name: 'ch',
          revision: 3,
          sha256: 'f'.repeat(64),
          metadata: JSON.stringify({ name: 'ch', config: { options: { tok: { type: 'secret' } } } }),
          archive,
          size: archive.length,
          created_at: '2026-01-02T03:04:05.123456Z',
        })
        .execute();
      const uuid = 'aaaaaaaa-0000-0000-0000-000000000001';
      await db
        .insertInto('machines')
        .values([
          { model_uuid: uuid, id: '0', kind: 'local', address: '127.7.1.20', root_dir: '/elsewhere/machines/0' },
          { model_uuid: uuid, id: '1', kind: 'ssh', address: '10.0.0.5', host: '10.0.0.5', port: 22, ssh_user: 'root' },
        ] as never)
        .execute();
      await db
        .insertInto('applications')
        .values({
          model_uuid: uuid,
          name: 'app',
          charm_name: 'ch',
          charm_revision: 3,
          config: JSON.stringify({ tok: a.secrets.seal(SECRET), plain: 'x' }),
        })
        .execute();
      await db
        .insertInto('units')
        .values({ model_uuid: uuid, name: 'app/0', application: 'app', number: 0, machine_id: '0', installed: true })
        .execute();
      await db.insertInto('integrations').values({ id: 7, model_uuid: uuid, key: 'k7', interface: 'i' }).execute();
      await db
        .insertInto('integration_endpoints')
        .values({ integration_id: 7, model_uuid: uuid, application: 'app', endpoint: 'peers', role: 'peer' })
        .execute();
      await db
        .insertInto('relation_data')
        .values({ integration_id: 7, model_uuid: uuid, owner: 'app/0', settings: '{"k":"v"}', version: 4 })
        .execute();
      // a charm's own secret (secret-add), granted on relation 7, tracked by app/0
      await db
        .insertInto('charm_secrets')
        .values({ id: 'cs1', model_uuid: uuid, owner_kind: 'application', owner: 'app', latest_revision: 2 })
        .execute();
      await db
        .insertInto('charm_secret_revisions')
        .values([
          { secret_id: 'cs1', revision: 1, content: a.secrets.seal('{"pw":"one"}') },
          { secret_id: 'cs1', revision: 2, content: a.secrets.seal(`{"pw":"${SECRET}"}`) },
        ])
        .execute();
      await db
        .insertInto('charm_secret_grants')
        .values({ secret_id: 'cs1', integration_id: 7, model_uuid: uuid, application: 'app' })
        .execute();
      await db
        .insertInto('charm_secret_consumers')
        .values({ secret_id: 'cs1', model_uuid: uuid, unit: 'app/0', revision: 1 })
        .execute();
      for (const s of ['one', 'two', 'three']) {
        await db
          .insertInto('status_history')
          .values({ model_uuid: uuid, entity: 'app/0', kind: 'workload', status: s, message: `m ${s}` })
          .execute();
      }
      const written = await writeBackup(a.db, {
        file,
        id: '20260102-030405-abcd',
        controllerVersion: '9.9.9',
        storeKind: a.kind,
        keys: {
          secretKey: { version: 1, key: keyOf(a.secrets) },
          sshKey: { privateKey: 'PRIVATE-KEY-TEXT', publicKey: 'ssh-ed25519 AAAA test' },
        },
      });
      assert.equal(written.size, statSync(file).size);
      assert.equal(written.sha256, await fileSha256(file));
      assert.equal(statSync(file).mode & 0o777, 0o600);
    });
    after(async () => {
      await a?.close();
      await b?.close();
      for (const drop of drops) await drop();
      rmSync(dir, { recursive: true, force: true });
    });

    test('the manifest names the format, the models and every table with its row count', () => {
      const parsed = readBackup(readFileSync(file), LIMITS);
      const m = parsed.manifest;
      assert.equal(m.format, 'charmflow-controller-backup');
      assert.equal(m.formatVersion, 1);
      assert.equal(m.controllerVersion, '9.9.9');
      assert.deepEqual(
        m.models.map((x) => [x.name, x.applications, x.units, x.machines]),
        [['m1', 1, 1, 2]],
      );
      const count = (t: string) => m.tables.find((x) => x.name === t)?.rows;
      assert.equal(count('charms'), 1);
      assert.equal(count('status_history'), 3);
      assert.equal(count('controller_backups'), undefined, "backups' own records are not in a backup");
      assert.ok(m.migrations.includes('013_controller_backups'));
      // the file holds no secret in the clear, only sealed values (and the key)
      const text = readFileSync(file);
      assert.ok(!text.includes(Buffer.from(SECRET)));
    });

    test('restored into another store: every row as it was, secrets sealed with that store key', async () => {
      const parsed = readBackup(readFileSync(file), LIMITS);
      const plan = await planRestore(b.db, parsed, b.secrets);
      assert.deepEqual(
        plan.models.map((m) => m.name),
        ['m1'],
      );
      assert.equal(plan.resealed, true);
      assert.deepEqual(plan.integrations, [7]);
      await b.db.transaction().execute((tx) => applyRestore(tx, parsed, plan, b.secrets));

      const charm = await b.db.selectFrom('charms').selectAll().executeTakeFirstOrThrow();
      assert.deepEqual(Buffer.from(charm.archive), archive);
      assert.equal(new Date(charm.created_at).toISOString(), '2026-01-02T03:04:05.123Z');
      const micro = await sql<{
        us: number;
      }>`SELECT extract(microseconds FROM created_at)::int AS us FROM charms`.execute(b.db);
      assert.equal(micro.rows[0].us, 5_123_456, 'microseconds come back too');

      const app = await b.db.selectFrom('applications').selectAll().executeTakeFirstOrThrow();
      assert.equal(app.config.plain, 'x');
      assert.notEqual(app.config.tok, SECRET);
      assert.equal(b.secrets.open(String(app.config.tok)), SECRET, "opens with the restoring store's key");
      assert.throws(() => a.secrets.open(String(app.config.tok)), 'no longer sealed with the old key');
      const cred = await b.db.selectFrom('credentials').selectAll().executeTakeFirstOrThrow();
      assert.equal(b.secrets.openAttributes(cred.attributes).password, SECRET);

      const ssh = await b.db.selectFrom('machines').selectAll().where('id', '=', '1').executeTakeFirstOrThrow();
      assert.equal(b.secrets.open(String(ssh.bootstrap_key)), 'PRIVATE-KEY-TEXT', 'the backup SSH key lets it in once');
      const local = await b.db.selectFrom('machines').selectAll().where('id', '=', '0').executeTakeFirstOrThrow();
      assert.equal(local.bootstrap_key, null);

      const bag = await b.db.selectFrom('relation_data').selectAll().executeTakeFirstOrThrow();
      assert.deepEqual([bag.settings, bag.version], [{ k: 'v' }, 4]);
      const revs = await b.db.selectFrom('charm_secret_revisions').selectAll().orderBy('revision').execute();
      assert.deepEqual(
        revs.map((r) => b.secrets.open(r.content)),
        ['{"pw":"one"}', `{"pw":"${SECRET}"}`],
        "charm secrets come back, sealed with the restoring store's key",
      );
      const grant = await b.db.selectFrom('charm_secret_grants').selectAll().executeTakeFirstOrThrow();
      assert.deepEqual([grant.secret_id, grant.integration_id], ['cs1', 7]);
      const consumer = await b.db.selectFrom('charm_secret_consumers').selectAll().executeTakeFirstOrThrow();
      assert.deepEqual([consumer.unit, consumer.revision], ['app/0', 1]);
      const history = await b.db.selectFrom('status_history').select('status').orderBy('id').execute();
      assert.deepEqual(
        history.map((h) => h.status),
        ['one', 'two', 'three'],
      );
      // sequences go past what was restored
      const next = await sql<{ n: number }>`SELECT nextval('integration_ids')::int AS n`.execute(b.db);
      assert.equal(next.rows[0].n, 8);
      const seq = await sql<{ n: number }>`SELECT nextval('local_machine_seq')::int AS n`.execute(b.db);
      assert.equal(seq.rows[0].n, 1 * 256 + 20 + 1);
    });

    test('a second restore finds the model here: nothing to do, or a 409 when the model is asked for', async () => {
      const parsed = readBackup(readFileSync(file), LIMITS);
      const plan = await planRestore(b.db, parsed, b.secrets);
      assert.deepEqual(plan.models, []);
      assert.deepEqual(plan.kept, [{ model: 'm1', reason: 'it is still here' }]);
      await assert.rejects(planRestore(b.db, parsed, b.secrets, { models: ['m1'] }), (err: BackupError) => {
        assert.equal(err.statusCode, 409);
        assert.match(err.message, /model "m1" exists here; destroy it first/);
        return true;
      });
      await assert.rejects(
        planRestore(b.db, parsed, b.secrets, { models: ['nope'] }),
        /model "nope" is not in the backup/,
      );
    });

    test('what stands in the way is a 409 naming it; an empty model of the same name is replaced', async () => {
      const parsed = readBackup(readFileSync(file), LIMITS);
      const c = await open();
      try {
        await c.db.insertInto('clouds').values({ name: 'local', type: 'local', endpoint: null }).execute();
        await c.db
          .insertInto('models')
          .values({ uuid: 'other-uuid', name: 'm1', cloud: 'local', config: '{}' })
          .execute();
        // an empty m1 here (a fresh controller's default, say) is replaced
        const plan = await planRestore(c.db, parsed, c.secrets);
        assert.deepEqual(plan.models, [
          { name: 'm1', uuid: 'aaaaaaaa-0000-0000-0000-000000000001', cloud: 'local', replaces: 'other-uuid' },
        ]);
        // one with a machine is another model: refused, named
        await c.db.insertInto('machines').values({ model_uuid: 'other-uuid', id: '0', kind: 'local' }).execute();
        await assert.rejects(planRestore(c.db, parsed, c.secrets), (err: BackupError) => {
          assert.equal(err.statusCode, 409);
          assert.match(err.message, /model "m1" exists here and is another model .*destroy-model m1/);
          return true;
        });
        await c.db.deleteFrom('models').execute();
        // the revision the restored application needs holds other content here
        await c.db
          .insertInto('charms')
          .values({
            name: 'ch',
            revision: 3,
            sha256: 'e'.repeat(64),
            metadata: '{}',
            archive: Buffer.from('z'),
            size: 1,
          })
          .execute();
        await assert.rejects(planRestore(c.db, parsed, c.secrets), /charm ch revision 3 is other content here/);
        await c.db.deleteFrom('charms').execute();
        // a relation id in use here
        await c.db.insertInto('models').values({ uuid: 'u2', name: 'm2', cloud: 'local', config: '{}' }).execute();
        await c.db.insertInto('integrations').values({ id: 7, model_uuid: 'u2', key: 'kx', interface: 'i' }).execute();
        await assert.rejects(planRestore(c.db, parsed, c.secrets), /relation id 7 \(k7\) of the backup is in use here/);
        assert.equal((await c.db.selectFrom('models').select('name').execute()).length, 1, 'planning changes nothing');
      } finally {
        await c.close();
      }
    });

    test('bad files are refused with a 400 that names the problem', () => {
      const good = readFileSync(file);
      const truncated = backupError(() => readBackup(good.subarray(0, Math.floor(good.length / 2)), LIMITS));
      assert.equal(truncated.statusCode, 400);
      assert.match(truncated.message, /truncated/);
      const flipped = Buffer.from(good);
      for (let i = 40; i < flipped.length - 20; i += 97) flipped[i] ^= 0xff;
      const corrupt = backupError(() => readBackup(flipped, LIMITS));
      assert.equal(corrupt.statusCode, 400);
      assert.match(corrupt.message, /corrupt|truncated/);
      assert.match(backupError(() => readBackup(Buffer.from('hello'), LIMITS)).message, /not gzip data/);
      assert.match(backupError(() => readBackup(Buffer.alloc(0), LIMITS)).message, /empty/);

      // a well-formed gzip whose content is wrong in one way each
      const [manifestLine, ...rest] = gunzipText(good).split('\n');
      const manifest = JSON.parse(manifestLine);
      const payload = rest.join('\n');
      const remake = (m: object, p = payload) => gzipSync(`${JSON.stringify(m)}\n${p}`);
      const cases: [Buffer, RegExp][] = [
        [gzipSync('not json\n'), /first line is not a JSON manifest/],
        [remake({ ...manifest, format: 'tarball' }), /not a charmflow controller backup: .*format "tarball"/],
        [remake({ ...manifest, formatVersion: 2 }), /format version 2; this controller reads version 1/],
        [remake({ ...manifest, migrations: [...manifest.migrations, '099_future'] }), /newer charmflow: .*099_future/],
        [remake(manifest, payload.replace('"ch"', '"cx"')), /payload's sha256 is .*, the manifest says/],
        [remake(manifest, payload.slice(0, -10)), /payload is \d+ bytes, the manifest says/],
        [remake({ ...manifest, payload: 'x' }), /manifest is invalid: payload/],
      ];
      for (const [buf, why] of cases) {
        const err = backupError(() => readBackup(buf, LIMITS));
        assert.equal(err.statusCode, 400, err.message);
        assert.match(err.message, why);
      }
      const big = backupError(() => readBackup(good, { maxUnpackedBytes: 100 }));
      assert.equal(big.statusCode, 413);
    });
  });

function gunzipText(buf: Buffer): string {
  return gunzipSync(buf).toString('utf8');
}

/** status --format json of a model, without what a status read may legitimately vary in (none expected). */
function statusJson(r: CliResult): unknown {
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout);
}

describe('controller backups through whole controllers', () => {
  let c1: TestController;
  let c2: TestController | undefined;
  let work: string;
  let file: string;
  let backupId: string;
  let before1: { bk: unknown; default: unknown };
  const on =
    (c: TestController) =>
    (...args: string[]) =>
      runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir }, 300_000);
  const ok = async (c: TestController, ...args: string[]) => {
    const r = await on(c)(...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const modelNames = async (c: TestController) =>
    (JSON.parse((await ok(c, 'models', '--format', 'json')).stdout).models as { name: string; uuid: string }[])
      .map((m) => `${m.name}:${m.uuid}`)
      .sort();
  const hooksSince = async (c: TestController, since: Date) =>
    (
      await c.store.db
        .selectFrom('hook_runs')
        .select(['unit', 'hook'])
        .where('started_at', '>', since)
        .orderBy('started_at')
        .execute()
    ).map((h) => `${h.unit} ${h.hook}`);
  const hooksLog = async (c: TestController, unit: string) => {
    const m = await c.store.db
      .selectFrom('units as u')
      .innerJoin('machines as m', (j) =>
        j.onRef('m.model_uuid', '=', 'u.model_uuid').onRef('m.id', '=', 'u.machine_id'),
      )
      .innerJoin('models as x', 'x.uuid', 'u.model_uuid')
      .select('m.root_dir')
      .where('x.name', '=', 'bk')
      .where('u.name', '=', unit)
      .executeTakeFirstOrThrow();
    return readFileSync(join(m.root_dir, 'units', unit.replace('/', '-'), 'counter', 'hooks.log'), 'utf8')
      .trim()
      .split('\n');
  };

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'cf-backup-files-'));
    file = join(work, 'backup.cfbackup');
    c1 = await startTestController();
    await ok(c1, 'add-model', 'bk');
    await ok(c1, 'deploy', counter, 'cnt', '-m', 'bk', '-n', '2', '--config', `secret-token=${SECRET}`);
    await ok(c1, 'deploy', relator, 'prov', '-m', 'bk', '-n', '2');
    await ok(c1, 'deploy', relator, 'req', '-m', 'bk');
    await ok(c1, 'integrate', '-m', 'bk', 'prov:data', 'req:source');
    await ok(c1, 'wait', '-m', 'bk', '--timeout', '3m');
    before1 = {
      bk: statusJson(await on(c1)('status', '-m', 'bk', '--format', 'json')),
      default: statusJson(await on(c1)('status', '-m', 'default', '--format', 'json')),
    };
  });
  after(async () => {
    await c2?.stop();
    await c1?.stop();
    rmSync(work, { recursive: true, force: true });
  });

  test('create-backup writes a 0600 file and records it; backups lists it; download-backup gets the same bytes', async () => {
    const r = await ok(c1, 'create-backup', '--format', 'json');
    const made = JSON.parse(r.stdout);
    backupId = made.id;
    assert.match(backupId, /^\d{8}-\d{6}-[0-9a-f]{4}$/);
    assert.equal(made.state, 'ready');
    assert.deepEqual(
      made.models.map((m: { name: string }) => m.name),
      ['bk', 'default'],
    );
    assert.equal(made.models.find((m: { name: string }) => m.name === 'bk').units, 5);
    const row = await c1.store.db
      .selectFrom('controller_backups')
      .selectAll()
      .where('id', '=', backupId)
      .executeTakeFirstOrThrow();
    assert.equal(row.path, join(c1.dataDir, 'backups', 'controller', `${backupId}.cfbackup`));
    assert.equal(statSync(row.path).mode & 0o777, 0o600);
    assert.equal(Number(row.size), statSync(row.path).size);
    assert.equal(row.sha256, await fileSha256(row.path));

    const list = JSON.parse((await ok(c1, 'backups', '--format', 'json')).stdout).backups;
    assert.deepEqual(
      list.map((b: { id: string; state: string }) => [b.id, b.state]),
      [[backupId, 'ready']],
    );
    const table = (await ok(c1, 'backups')).stdout;
    assert.match(table, new RegExp(`^${backupId}\\s+ready\\s+`, 'm'));

    const d = await ok(c1, 'download-backup', backupId, '-o', file);
    assert.match(d.stdout, new RegExp(`sha256 ${row.sha256}`));
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(createHash('sha256').update(readFileSync(file)).digest('hex'), row.sha256);

    // the API answers octet-stream, and only to admin tokens (a backup holds the secret key)
    const res = await fetch(`${c1.apiUrl}/v1/controller/backups/${backupId}/download`, {
      headers: { authorization: `Bearer ${c1.adminToken}` },
    });
    assert.equal(res.headers.get('content-type'), 'application/octet-stream');
    assert.equal(Buffer.from(await res.arrayBuffer()).length, Number(row.size));
    const ro = await c1.api('POST', '/v1/tokens', { name: 'reader', role: 'read-only' });
    assert.equal(ro.status, 201, JSON.stringify(ro.body));
    const denied = await c1.api('GET', `/v1/controller/backups/${backupId}/download`, undefined, ro.body.token);
    assert.equal(denied.status, 403);
    assert.match(denied.body.message, /admin token/);
    assert.equal((await c1.api('GET', '/v1/controller/backups/20200101-000000-0000')).status, 404);
  });

  test('a corrupt or truncated file is refused with a 400 naming the problem; nothing changes', async () => {
    const models = await modelNames(c1);
    const ops = (await c1.store.db.selectFrom('operations').select('id').execute()).length;
    const good = readFileSync(file);
    const truncated = join(work, 'truncated.cfbackup');
    writeFileSync(truncated, good.subarray(0, Math.floor(good.length * 0.7)));
    const corrupt = join(work, 'corrupt.cfbackup');
    const flipped = Buffer.from(good);
    for (let i = Math.floor(flipped.length / 3); i < flipped.length - 100; i += 1009) flipped[i] ^= 0x5a;
    writeFileSync(corrupt, flipped);
    const notBackup = join(work, 'not.cfbackup');
    writeFileSync(notBackup, 'just some text\n');

    for (const [f, why] of [
      [truncated, /the backup is truncated: its gzip stream ends early/],
      [corrupt, /the backup is corrupt/],
      [notBackup, /not a charmflow controller backup: the file is not gzip data/],
    ] as const) {
      const r = await on(c1)('restore-backup', f);
      assert.notEqual(r.code, 0, f);
      assert.match(r.stderr, why);
      const res = await fetch(`${c1.apiUrl}/v1/controller/restore`, {
        method: 'POST',
        headers: { authorization: `Bearer ${c1.adminToken}`, 'content-type': 'application/octet-stream' },
        body: readFileSync(f),
      });
      assert.equal(res.status, 400);
      const body = (await res.json()) as { message: string; details: { field: string }[] };
      assert.match(body.message, why);
      assert.ok(body.details.length > 0);
    }
    // on this controller every model is still here: nothing to restore
    const same = await on(c1)('restore-backup', file);
    assert.notEqual(same.code, 0);
    assert.match(same.stderr, /nothing to restore: this controller has every model of the backup/);
    assert.deepEqual(await modelNames(c1), models);
    assert.equal((await c1.store.db.selectFrom('operations').select('id').execute()).length, ops);
  });

  test('back up, destroy the model, restore: identical status, and the units keep working', async () => {
    const uuid = (
      await c1.store.db.selectFrom('models').select('uuid').where('name', '=', 'bk').executeTakeFirstOrThrow()
    ).uuid;
    await ok(c1, 'destroy-model', 'bk');
    assert.ok(!(await modelNames(c1)).some((m) => m.startsWith('bk:')));

    const dry = await ok(c1, 'restore-backup', file, '--dry-run', '--format', 'json');
    const plan = JSON.parse(dry.stdout).restore;
    assert.deepEqual(
      plan.models.map((m: { name: string }) => m.name),
      ['bk'],
    );
    assert.deepEqual(plan.kept, [{ model: 'default', reason: 'it is still here' }]);
    assert.equal(plan.resealed, false);
    assert.ok(!(await modelNames(c1)).some((m) => m.startsWith('bk:')), 'a dry run changes nothing');

    const restoredAt = new Date();
    const r = await ok(c1, 'restore-backup', file);
    assert.match(r.stdout, /restoring model\(s\) bk/);
    assert.match(r.stdout, /Restored backup/);
    assert.ok((await modelNames(c1)).includes(`bk:${uuid}`), 'the model comes back with its uuid');
    assert.deepEqual(statusJson(await on(c1)('status', '-m', 'bk', '--format', 'json')), before1.bk);
    assert.deepEqual(statusJson(await on(c1)('status', '-m', 'default', '--format', 'json')), before1.default);
    await ok(c1, 'wait', '-m', 'bk', '--timeout', '2m');
    assert.deepEqual(await hooksSince(c1, restoredAt), [], 'restored agents run no hook by themselves');

    // config-changed runs on the restored agents (the charm shipped again first); no install or start
    await ok(c1, 'config', 'cnt', '-m', 'bk', 'fail-hook=none');
    assert.deepEqual(await hooksLog(c1, 'cnt/0'), ['config-changed']);
    // relation data still flows: a new suffix rewrites prov's tokens, req sees them in relation-changed
    await ok(c1, 'config', 'prov', '-m', 'bk', 'suffix=v2');
    await ok(c1, 'wait', '-m', 'bk', '--timeout', '2m');
    const ran = await hooksSince(c1, restoredAt);
    assert.ok(
      !ran.some((h) => / (install|start|leader-elected|.*-relation-(created|joined))$/.test(h)),
      ran.join('\n'),
    );
    assert.ok(ran.includes('req/0 source-relation-changed'), ran.join('\n'));
    const seen = await c1.store.db
      .selectFrom('log_entries')
      .select('message')
      .where('entity', '=', 'req/0')
      .where('at', '>', restoredAt)
      .execute();
    assert.ok(
      seen.some((l) => /REL source-relation-changed .*seen=prov\/\d-v2/.test(l.message)),
      seen.map((l) => l.message).join('\n'),
    );
    const statusNow = statusJson(await on(c1)('status', '-m', 'bk', '--format', 'json')) as {
      applications: Record<string, { units: Record<string, { 'workload-status': { message?: string } }> }>;
    };
    assert.equal(statusNow.applications.cnt.units['cnt/0']['workload-status'].message, 'ran 1 hooks');
  });

  test('a fresh controller restores the backup: identical status, tokens, secrets opened with its own key', async () => {
    c2 = await startTestController();
    const fresh = c2;
    // isolateDataDir (activities/substrates/local-isolation.ts) opens the first data dir a
    // process isolates and remembers it: this second controller in the same process must
    // have its data dir passable (0711) for its local machines' uids as a process of its own would
    if (process.getuid?.() === 0) chmodSync(fresh.dataDir, 0o711);
    const r = await ok(fresh, 'restore-backup', file);
    assert.match(r.stdout, /default \(replacing the empty one here\)/);
    assert.match(r.stdout, /secrets sealed again/);
    assert.deepEqual(statusJson(await on(fresh)('status', '-m', 'bk', '--format', 'json')), before1.bk);
    assert.deepEqual(statusJson(await on(fresh)('status', '-m', 'default', '--format', 'json')), before1.default);
    // its own admin token still works, and so does the first controller's (tokens come back)
    assert.equal((await fresh.api('GET', '/v1/models')).status, 200);
    assert.equal((await fresh.api('GET', '/v1/models', undefined, c1.adminToken)).status, 200);
    // its key file did not change; the secret opens with it
    const app = await fresh.store.db
      .selectFrom('applications')
      .select('config')
      .where('name', '=', 'cnt')
      .executeTakeFirstOrThrow();
    assert.equal(fresh.store.secrets.open(String(app.config['secret-token'])), SECRET);
    // the machines are this controller's now, and the units work there
    const roots = await fresh.store.db.selectFrom('machines').select('root_dir').execute();
    assert.ok(
      roots.every((m) => m.root_dir.startsWith(join(fresh.dataDir, 'machines'))),
      JSON.stringify(roots),
    );
    await ok(fresh, 'config', 'cnt', '-m', 'bk', 'fail-hook=none');
    assert.deepEqual(await hooksLog(fresh, 'cnt/1'), ['config-changed']);
    // a new unit gets a machine address no restored machine has
    await ok(fresh, 'add-unit', 'cnt', '-m', 'bk');
    const addrs = (await fresh.store.db.selectFrom('machines').select('address').execute()).map((m) => m.address);
    assert.equal(new Set(addrs).size, addrs.length, addrs.join(' '));
  });
});

describe('controller backups of SSH machines', { skip: fleetUnsupportedReason() }, () => {
  let fleet: Fleet;
  let c1: TestController;
  let c2: TestController | undefined;
  let work: string;
  let file: string;
  let before1: unknown;
  const on =
    (c: TestController) =>
    (...args: string[]) =>
      runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir }, 300_000);
  const ok = async (c: TestController, ...args: string[]) => {
    const r = await on(c)(...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const hostLog = () =>
    readFileSync(join(fleet.hosts[0].rootFs, 'units', 'cnt-0', 'counter', 'hooks.log'), 'utf8')
      .trim()
      .split('\n');
  const authorized = () => readFileSync(join(fleet.hosts[0].homeDir, '.ssh', 'authorized_keys'), 'utf8');
  const publicKey = (c: TestController) => readFileSync(`${paths(c.dataDir).controllerKey}.pub`, 'utf8').trim();

  before(async () => {
    work = mkdtempSync(join(tmpdir(), 'cf-backup-ssh-'));
    file = join(work, 'ssh.cfbackup');
    [fleet, c1] = await Promise.all([createFleet(1), startTestController()]);
    const h = fleet.hosts[0];
    await ok(c1, 'add-model', 'fl', '--cloud', 'manual');
    await ok(c1, 'add-machine', `ssh:root@${h.address}`, '--private-key', h.privateKeyPath, '-m', 'fl');
    await ok(c1, 'deploy', counter, 'cnt', '-m', 'fl', '--config', `secret-token=${SECRET}`);
    await ok(c1, 'wait', '-m', 'fl', '--timeout', '2m');
    before1 = statusJson(await on(c1)('status', '-m', 'fl', '--format', 'json'));
    const made = JSON.parse((await ok(c1, 'create-backup', '--format', 'json')).stdout);
    await ok(c1, 'download-backup', made.id, '-o', file);
  });
  after(async () => {
    await c2?.stop();
    await c1?.stop();
    await fleet?.destroy();
    rmSync(work, { recursive: true, force: true });
  });

  test('destroy-model cleans the host; restore provisions it again and the unit works there', async () => {
    await ok(c1, 'destroy-model', 'fl');
    assert.throws(() => hostLog(), 'the unit files went with the model');
    await ok(c1, 'restore-backup', file);
    assert.deepEqual(statusJson(await on(c1)('status', '-m', 'fl', '--format', 'json')), before1);
    const m = await c1.store.db.selectFrom('machines').selectAll().executeTakeFirstOrThrow();
    assert.equal(m.bootstrap_key, null, 'the backup key let provisioning in once, then went');
    await ok(c1, 'config', 'cnt', '-m', 'fl', 'fail-hook=none');
    assert.deepEqual(hostLog(), ['config-changed']);
    // the model leaves the host again for the next controller
    await ok(c1, 'destroy-model', 'fl');
  });

  test('a fresh controller (another SSH key) restores it: its key is installed with the backup key', async () => {
    c2 = await startTestController();
    const fresh = c2;
    if (process.getuid?.() === 0) chmodSync(fresh.dataDir, 0o711);
    assert.ok(!authorized().includes(publicKey(fresh).split(' ')[1]));
    const r = await ok(fresh, 'restore-backup', file, '--model', 'fl');
    assert.match(r.stdout, /model default left as it is: not asked for/);
    assert.deepEqual(statusJson(await on(fresh)('status', '-m', 'fl', '--format', 'json')), before1);
    assert.ok(authorized().includes(publicKey(fresh).split(' ')[1]), "the fresh controller's key is on the host");
    const m = await fresh.store.db.selectFrom('machines').selectAll().executeTakeFirstOrThrow();
    assert.equal(m.bootstrap_key, null);
    await ok(fresh, 'config', 'cnt', '-m', 'fl', 'fail-hook=none');
    assert.deepEqual(hostLog(), ['config-changed']);
  });
});
