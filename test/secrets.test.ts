// Secrets stay secret: sealed at rest in the store (its files hold no plaintext,
// the hook still reads the value), and a failing statement never carries its
// parameters into an error, a log line or an operation.
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { inspect } from 'node:util';
import { Kysely, Migrator, sql } from 'kysely';
import { buildApp } from '../api/app.ts';
import { StaticMigrationProvider } from '../store/migrations.ts';
import { PGliteDialect } from '../store/pglite-dialect.ts';
import type { Database } from '../store/schema.ts';
import { SecretBox } from '../store/secret-box.ts';
import { isUniqueViolation, openStore, type Store } from '../store/store.ts';
import { StoreError } from '../store/store-error.ts';
import { runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { storeBackends } from './helpers/postgres.ts';
import { waitFor } from './helpers/wait.ts';

const SECRET = 'hunter2-Sup3rS3cret-value';

/** Everything an error could show: message, stack, own properties, as a logger prints it. */
function everything(err: unknown): string {
  return [String(err), inspect(err, { depth: 10 }), JSON.stringify(err), (err as Error)?.stack ?? ''].join('\n');
}

async function failure(fn: () => Promise<unknown>): Promise<unknown> {
  try {
    await fn();
  } catch (err) {
    return err;
  }
  assert.fail('the statement should have failed');
}

for (const backend of storeBackends)
  describe(`store errors carry no statement parameters (${backend.name})`, { skip: backend.skip }, () => {
    let store: Store;
    let drop: () => Promise<void>;
    before(async () => {
      ({ store, drop } = await backend.open());
    });
    after(async () => {
      await store?.close();
      await drop?.();
    });

    test('a JSON value Postgres refuses: its text is not quoted back', async () => {
      const err = await failure(() =>
        store.db
          .insertInto('clouds')
          .values({ name: 'c1', type: 'manual', endpoint: null })
          .execute()
          .then(() =>
            store.db
              .insertInto('credentials')
              .values({
                cloud: 'c1',
                name: 'k',
                auth_type: 'userpass',
                attributes: JSON.stringify({ password: `${SECRET}\0` }),
              })
              .execute(),
          ),
      );
      assert.ok(err instanceof StoreError, inspect(err));
      assert.equal(err.code, '22P05');
      assert.ok(!everything(err).includes(SECRET), everything(err));
    });

    test('a value of the wrong type: the message names the type, not the value', async () => {
      const err = await failure(() =>
        store.db
          .selectFrom('operations')
          .selectAll()
          .where('id', '=', SECRET as unknown as number)
          .execute(),
      );
      assert.ok(err instanceof StoreError);
      assert.equal(err.code, '22P02');
      assert.match(err.message, /invalid input syntax for type integer/);
      assert.ok(!everything(err).includes(SECRET), everything(err));
    });

    test('the SQLSTATE and the constraint stay, so callers still tell a duplicate', async () => {
      const err = await failure(() =>
        store.db.insertInto('clouds').values({ name: 'c1', type: 'manual', endpoint: null }).execute(),
      );
      assert.ok(isUniqueViolation(err));
      assert.equal((err as StoreError).constraint, 'clouds_pkey');
    });
  });

/** Every file under `dir`, raw. */
function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...filesUnder(p));
    else if (e.isFile()) out.push(p);
  }
  return out;
}

/** The files of `dir` that hold `needle` (as UTF-8 bytes). */
function filesHolding(dir: string, needle: string): string[] {
  const bytes = Buffer.from(needle, 'utf8');
  return filesUnder(dir).filter((f) => readFileSync(f).includes(bytes));
}

const sha = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 16);

/** A charm whose config-changed reports a digest of its secret option, never the value. */
function secretReaderCharm(): string {
  const dir = mkdtempSync(join(tmpdir(), 'cf-secret-charm-'));
  writeFileSync(
    join(dir, 'metadata.yaml'),
    'name: secret-reader\nsummary: reads a secret\ndescription: reads a secret\n',
  );
  writeFileSync(
    join(dir, 'config.yaml'),
    'options:\n  token:\n    type: secret\n    description: a secret\n  label:\n    type: string\n    default: x\n',
  );
  mkdirSync(join(dir, 'hooks'));
  const hook = join(dir, 'hooks', 'config-changed');
  writeFileSync(
    hook,
    '#!/bin/sh\nset -e\nd=$(printf %s "$(config-get token)" | sha256sum | cut -c1-16)\nstatus-set active "token $d"\n',
  );
  chmodSync(hook, 0o755);
  return dir;
}

describe('secrets at rest and in logs, through a whole controller', () => {
  let c: TestController;
  let charmDir: string;
  const cli = (...args: string[]) => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const FIRST = 'first-S3cret-token-value-4b1d';
  const SECOND = 'second-S3cret-token-value-9f3e';
  const message = async () =>
    (await c.api('GET', '/v1/models/default/status')).body.applications.reader?.units['reader/0']?.['workload-status']
      ?.message;

  before(async () => {
    c = await startTestController();
    charmDir = secretReaderCharm();
  });
  after(async () => {
    await c?.stop();
    rmSync(charmDir, { recursive: true, force: true });
  });

  test('the key file is made on first start, readable by its owner only', () => {
    const key = join(c.dataDir, 'store', 'secret-key');
    assert.equal(statSync(key).mode & 0o777, 0o600);
    assert.equal(Buffer.from(readFileSync(key, 'utf8').trim(), 'base64').length, 32);
  });

  test('a secret config value: the hook reads it, the store holds it sealed, its files never in the clear', async () => {
    const d = await cli('deploy', charmDir, 'reader', '--config', `token=${FIRST}`);
    assert.equal(d.code, 0, d.stderr);
    await waitFor('config-changed to report the first token', async () => (await message()) === `token ${sha(FIRST)}`);

    const set = await c.api('PUT', '/v1/models/default/applications/reader/config', { set: { token: SECOND } });
    assert.equal(set.status, 202);
    assert.equal((await c.waitOperation(set.body.operation.id)).state, 'succeeded');
    await waitFor(
      'config-changed to report the second token',
      async () => (await message()) === `token ${sha(SECOND)}`,
    );

    const raw = await sql<{
      config: string;
    }>`select config::text as config from applications where name = 'reader'`.execute(c.store.db);
    const config = JSON.parse(raw.rows[0].config);
    assert.ok(SecretBox.isSealed(config.token), raw.rows[0].config);
    assert.equal(c.store.secrets.open(config.token), SECOND);
    // the API shows it masked
    const shown = await c.api('GET', '/v1/models/default/applications/reader/config');
    assert.equal(shown.body.settings.token.value, '*****');

    const store = join(c.dataDir, 'store');
    for (const secret of [FIRST, SECOND]) assert.deepEqual(filesHolding(store, secret), [], secret);
  });

  test("add-machine's private key is sealed, and after its deletion no file of the store holds it", async () => {
    const { privateKey } = generateKeyPairSync('rsa', {
      modulusLength: 2048,
      privateKeyEncoding: { type: 'pkcs1', format: 'pem' },
      publicKeyEncoding: { type: 'pkcs1', format: 'pem' },
    });
    // a line from the middle of the key's body: text no other file would hold
    const fragment = privateKey.split('\n')[10];
    assert.ok(fragment.length >= 60);
    // nothing listens on port 1: provisioning fails, and the key is deleted
    const r = await c.api('POST', '/v1/models/default/machines', {
      ssh: { host: '127.0.0.1', port: 1, user: 'root' },
      privateKey,
    });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const row = await c.store.db
      .selectFrom('machines')
      .select('bootstrap_key')
      .where('id', '=', r.body.machineId)
      .executeTakeFirstOrThrow();
    if (row.bootstrap_key !== null) {
      assert.ok(SecretBox.isSealed(row.bootstrap_key));
      assert.equal(c.store.secrets.open(row.bootstrap_key), privateKey);
    }
    await c.waitOperation(r.body.operation.id, 120_000);
    const after = await c.store.db
      .selectFrom('machines')
      .select('bootstrap_key')
      .where('id', '=', r.body.machineId)
      .executeTakeFirstOrThrow();
    assert.equal(after.bootstrap_key, null);
    assert.deepEqual(filesHolding(join(c.dataDir, 'store'), fragment), []);
  });

  test('a config write that fails: neither the answer nor the log line carries the value', async () => {
    const lines: string[] = [];
    const app = await buildApp({
      store: c.store,
      temporal: { client: c.client, taskQueue: c.config.taskQueue },
      logger: { stream: { write: (line: string) => lines.push(line) } },
    });
    const before = (await c.api('GET', '/v1/operations?limit=1000')).body.operations.length;
    await sql`alter table applications add constraint cf_test_short_config check (length(config::text) < 600)`.execute(
      c.store.db,
    );
    try {
      const THIRD = `third-S3cret-${'x'.repeat(600)}`;
      const res = await app.inject({
        method: 'PUT',
        url: '/v1/models/default/applications/reader/config',
        headers: { authorization: `Bearer ${c.adminToken}` },
        payload: { set: { token: THIRD, label: 'plain-label-value' } },
      });
      assert.equal(res.statusCode, 500);
      const log = lines.join('');
      assert.match(log, /StoreError/, 'the failure is logged');
      assert.match(log, /23514/, 'with its SQLSTATE');
      for (const text of [res.body, log]) {
        assert.ok(!text.includes('third-S3cret'), text);
        // nor the sealed value, nor the row Postgres quotes in its DETAIL
        assert.ok(!text.includes('cfsec:'), text);
        assert.ok(!text.includes('plain-label-value'), text);
      }
    } finally {
      await sql`alter table applications drop constraint cf_test_short_config`.execute(c.store.db);
      await app.close();
    }
    const after = (await c.api('GET', '/v1/operations?limit=1000')).body.operations;
    assert.equal(after.length, before, 'the refused write recorded no operation');
    assert.ok(!JSON.stringify(after).includes('third-S3cret'));
  });
});

describe('the secret key', () => {
  test('a sealed value differs each time, opens only under its key, and an altered one is refused', () => {
    const box = SecretBox.ephemeral();
    const a = box.seal('pa55word');
    const b = box.seal('pa55word');
    assert.notEqual(a, b);
    assert.match(a, /^cfsec:v1:/);
    assert.ok(!a.includes('pa55word'));
    assert.equal(box.open(a), 'pa55word');
    assert.throws(() => SecretBox.ephemeral().open(a), /does not open/);
    const raw = Buffer.from(a.slice('cfsec:v1:'.length), 'base64');
    raw[raw.length - 1] ^= 1;
    assert.throws(() => box.open(`cfsec:v1:${raw.toString('base64')}`), /does not open/);
    assert.equal(box.open('written before sealing'), 'written before sealing');
  });

  test('the key file is made once: a second opening reads the same key', () => {
    const dir = mkdtempSync(join(tmpdir(), 'cf-keyfile-'));
    try {
      const file = join(dir, 'sub', 'secret-key');
      const first = SecretBox.fromKeyFile(file);
      const sealed = first.seal('x-value');
      assert.equal(SecretBox.fromKeyFile(file).open(sealed), 'x-value');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.deepEqual(readdirSync(join(dir, 'sub')), ['secret-key'], 'no temporary file left behind');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a store refuses a key other than the one that sealed its secrets', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'cf-key-'));
    try {
      const first = await openStore({ dataDir: join(dir, 'store'), secretKeyFile: join(dir, 'key-a') });
      await first.close();
      await assert.rejects(
        openStore({ dataDir: join(dir, 'store'), secretKeyFile: join(dir, 'key-b') }),
        /not the one that sealed/,
      );
      const again = await openStore({ dataDir: join(dir, 'store'), secretKeyFile: join(dir, 'key-a') });
      await again.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('migration 005', () => {
  test('seals the secrets a store kept in the clear before it', async () => {
    const { PGlite } = await import('@electric-sql/pglite');
    const db = new Kysely<Database>({ dialect: new PGliteDialect(new PGlite()) });
    const secrets = SecretBox.ephemeral();
    const migrator = new Migrator({ db, provider: new StaticMigrationProvider({ secrets }) });
    try {
      const to004 = await migrator.migrateTo('004_hook_run_timings');
      assert.equal(to004.error, undefined);
      await db.insertInto('clouds').values({ name: 'local', type: 'local', endpoint: null }).execute();
      await db.insertInto('models').values({ uuid: 'm1', name: 'm', cloud: 'local', config: '{}' }).execute();
      const meta = { config: { options: { token: { type: 'secret' }, label: { type: 'string' } } } };
      await db
        .insertInto('charms')
        .values({
          name: 'c',
          revision: 1,
          sha256: 'x',
          metadata: JSON.stringify(meta),
          archive: Buffer.from(''),
          size: 0,
        })
        .execute();
      await db
        .insertInto('applications')
        .values({
          model_uuid: 'm1',
          name: 'a',
          charm_name: 'c',
          charm_revision: 1,
          config: JSON.stringify({ token: 'old-secret', label: 'plain' }),
        })
        .execute();
      await db
        .insertInto('machines')
        .values({
          model_uuid: 'm1',
          id: '0',
          kind: 'ssh',
          host: 'h',
          port: 22,
          ssh_user: 'root',
          host_key_fingerprint: null,
          bootstrap_key: 'old-private-key',
        })
        .execute();
      await db
        .insertInto('credentials')
        .values({
          cloud: 'local',
          name: 'cred',
          auth_type: 'userpass',
          attributes: JSON.stringify({ password: 'old-password' }),
        })
        .execute();

      const latest = await migrator.migrateToLatest();
      assert.equal(latest.error, undefined);
      const app = await db.selectFrom('applications').select('config').executeTakeFirstOrThrow();
      assert.ok(SecretBox.isSealed(app.config.token));
      assert.equal(secrets.open(app.config.token as string), 'old-secret');
      assert.equal(app.config.label, 'plain', 'a value of another type is left as it is');
      const machine = await db.selectFrom('machines').select('bootstrap_key').executeTakeFirstOrThrow();
      assert.ok(SecretBox.isSealed(machine.bootstrap_key));
      assert.equal(secrets.open(machine.bootstrap_key!), 'old-private-key');
      const cred = await db.selectFrom('credentials').select('attributes').executeTakeFirstOrThrow();
      assert.ok(SecretBox.isSealed(cred.attributes.password));
      assert.deepEqual(secrets.openAttributes(cred.attributes), { password: 'old-password' });
    } finally {
      await db.destroy();
    }
  });
});
