// Juju 3 secrets in charms: the secret-* hook tools through the real runner, and
// end to end on the local cloud, an owner handing a secret to a consumer over
// their relation (test/fixtures/charms/secret-owner, secret-consumer).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  copyFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { hookSecretKey, openHookContent } from '../activities/charm-secrets.ts';
import { HookContext, type HookContextInput, HookEvent, type HookResult } from '../charm/hook-protocol.ts';
import { SecretBox } from '../store/secret-box.ts';
import { type CliResult, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';
import { settle } from './helpers/relations.ts';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fixtures = path.join(repo, 'test', 'fixtures', 'charms');
const box = SecretBox.ephemeral();

let root: string;
let runner: string;
let toolsDir: string;
let seq = 0;

function deploy(): { charmDir: string; unitDir: string } {
  const base = path.join(root, `u${++seq}`);
  const charmDir = path.join(base, 'charm');
  cpSync(path.join(fixtures, 'tools-charm'), charmDir, { recursive: true });
  for (const f of readdirSync(path.join(charmDir, 'hooks'))) chmodSync(path.join(charmDir, 'hooks', f), 0o755);
  const unitDir = path.join(base, 'state');
  mkdirSync(unitDir);
  return { charmDir, unitDir };
}

const XID_A = 'cn0a1b2c3d4e5f6g7h8i';
const XID_G = 'dn0a1b2c3d4e5f6g7h8j';

function context(
  where: { charmDir: string; unitDir: string },
  script: string[],
  overrides: Partial<HookContextInput> = {},
): HookContextInput {
  writeFileSync(path.join(where.charmDir, 'script.sh'), `${script.join('\n')}\n`);
  const contextId = `sec-${++seq}-${process.pid}`;
  return {
    contextId,
    kind: 'hook',
    name: 'start',
    unit: 'tools/0',
    application: 'tools',
    model: { name: 'm1', uuid: '6f0c5a2e-0000-4000-8000-000000000001' },
    machineId: '3',
    charmDir: where.charmDir,
    unitDir: where.unitDir,
    toolsDir,
    config: {},
    isLeader: true,
    leaderSettings: {},
    relations: [
      {
        id: 4,
        endpoint: 'db',
        interface: 'pgsql',
        role: 'requires',
        remoteApplication: 'pg',
        data: {},
        units: ['pg/0', 'pg/1'],
      },
    ],
    privateAddress: '10.1.2.3',
    publicAddress: '10.1.2.3',
    ports: [],
    unitStatus: { status: 'active', message: '' },
    applicationStatus: { status: 'active', message: '' },
    secretKey: hookSecretKey(box, contextId).toString('base64'),
    secrets: {
      owned: [
        {
          id: XID_A,
          owner: 'application',
          label: 'mine',
          description: 'kept',
          revision: 2,
          revisions: [1, 2],
          content: { password: 'owned-two' },
          access: [],
        },
      ],
      granted: [
        {
          id: XID_G,
          label: 'theirs',
          revision: 1,
          content: { token: 'granted-one' },
          latestRevision: 3,
          latestContent: { token: 'granted-three' },
        },
      ],
    },
    ...overrides,
  };
}

async function runHook(ctx: HookContextInput): Promise<HookResult> {
  const child = spawn('python3', ['-S', runner], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c) => {
    out += c;
  });
  child.stderr.on('data', (c) => {
    err += c;
  });
  child.stdin.end(JSON.stringify(HookContext.parse(ctx)));
  const code = await new Promise<number | null>((r) => child.on('close', r));
  assert.equal(code, 0, err);
  const events = out
    .trim()
    .split('\n')
    .map((l) => HookEvent.parse(JSON.parse(l)));
  const result = events.find((e): e is HookResult => e.type === 'result');
  assert.ok(result, out);
  return result;
}

const read = (where: { charmDir: string }, f: string) => readFileSync(path.join(where.charmDir, f), 'utf8');
const files = (base: string, text: string) => spawnSync('grep', ['-rl', '--', text, base], { encoding: 'utf8' }).stdout;

describe('secret hook tools', () => {
  before(() => {
    root = mkdtempSync(path.join(tmpdir(), 'charmflow-secrets-'));
    mkdirSync(path.join(root, 'runtime'));
    for (const f of readdirSync(path.join(repo, 'charm', 'runtime')).filter((n) => n.endsWith('.py'))) {
      copyFileSync(path.join(repo, 'charm', 'runtime', f), path.join(root, 'runtime', f));
    }
    runner = path.join(root, 'runtime', 'runner.py');
    toolsDir = path.join(root, 'runtime', 'bin');
    const r = spawnSync('python3', ['-S', runner, 'install-tools', toolsDir], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  });
  after(() => rmSync(root, { recursive: true, force: true }));

  test('an owner adds, reads, sets, grants and lists; content leaves the machine sealed only', async () => {
    const where = deploy();
    const value = `new-${randomBytes(8).toString('hex')}`;
    const ctx = context(where, [
      'set -e',
      `printf %s '${value}' > v1`,
      'id=$(secret-add --label fresh --description "made here" user=admin "pass#file=v1")',
      'rm v1',
      'echo "$id" > out-id',
      'secret-get "$id" --format json > out-get.json',
      'secret-get "$id" user > out-user.txt',
      'secret-get --label fresh --format json > out-label.json',
      'secret-get "$id" pass#base64 > out-b64.txt',
      'secret-set "$id" user=root',
      'secret-set "$id" user=root2',
      'secret-info-get "$id" --format json > out-info.json',
      `secret-set ${XID_A} password=owned-three`,
      `secret-set ${XID_A} password=owned-four`,
      `secret-get secret:${XID_A} > out-a.yaml`,
      `secret-grant secret:${XID_A} -r db:4 --unit pg/1`,
      `secret-info-get --label mine --format json > out-info-a.json`,
      'secret-ids --format json > out-ids.json',
      `secret-remove ${XID_A} --revision 1`,
      'secret-get nonsense 2> out-bad.err || echo $? > out-bad.code',
      'secret-info-get --label nope 2> out-nope.err || echo $? > out-nope.code',
      'secret-add 2> out-empty.err || echo $? > out-empty.code',
      'secret-add AB=1 2> out-key.err || echo $? > out-key.code',
      `secret-grant ${XID_A} -r db:4 --unit other/0 2> out-gu.err || echo $? > out-gu.code`,
    ]);
    const result = await runHook(ctx);
    assert.equal(result.exitCode, 0, result.tail.join('\n'));
    const id = read(where, 'out-id').trim();
    assert.match(id, /^secret:[0-9a-v]{20}$/);
    const xid = id.slice('secret:'.length);
    assert.equal(read(where, 'out-get.json'), `{"pass":"${value}","user":"admin"}\n`);
    assert.equal(read(where, 'out-user.txt'), 'admin\n');
    assert.equal(read(where, 'out-label.json'), read(where, 'out-get.json'));
    assert.equal(read(where, 'out-b64.txt'), `${Buffer.from(value).toString('base64')}\n`);
    // two sets of a secret added in this hook stay its revision 1, with the last content
    assert.deepEqual(JSON.parse(read(where, 'out-info.json')), {
      [xid]: { revision: 1, label: 'fresh', owner: 'application', description: 'made here' },
    });
    // two sets of an existing secret in one hook make one new revision
    assert.equal(read(where, 'out-a.yaml'), 'password: owned-four\n');
    assert.deepEqual(JSON.parse(read(where, 'out-info-a.json')), {
      [XID_A]: {
        revision: 3,
        label: 'mine',
        owner: 'application',
        description: 'kept',
        access: [{ target: 'unit-pg-1', scope: 'relation-4', role: 'view' }],
      },
    });
    assert.deepEqual(JSON.parse(read(where, 'out-ids.json')), [XID_A, xid].sort());
    assert.equal(read(where, 'out-bad.code'), '2\n');
    assert.equal(read(where, 'out-bad.err'), 'ERROR secret URI "nonsense" not valid\n');
    assert.equal(read(where, 'out-nope.code'), '1\n');
    assert.match(read(where, 'out-nope.err'), /^ERROR secret "nope" not found\n$/);
    assert.equal(read(where, 'out-empty.code'), '2\n');
    assert.equal(read(where, 'out-key.code'), '2\n');
    assert.equal(read(where, 'out-key.err'), 'ERROR key "AB" not valid\n');
    assert.equal(read(where, 'out-gu.code'), '2\n');

    const ops = result.changes.secretOps;
    assert.deepEqual(
      ops.map((o) => o.op),
      ['add', 'set', 'set', 'set', 'set', 'grant', 'remove'],
    );
    const add = ops[0];
    assert.ok(add.op === 'add');
    assert.equal(add.id, xid);
    const key = hookSecretKey(box, ctx.contextId);
    assert.deepEqual(openHookContent(key, add.content), { user: 'admin', pass: value });
    assert.deepEqual(ops[5], { op: 'grant', id: XID_A, relationId: 4, app: 'pg', unit: 'pg/1' });
    assert.deepEqual(ops[6], { op: 'remove', id: XID_A, revision: 1 });
    // another hook's key opens nothing
    assert.throws(() => openHookContent(hookSecretKey(box, 'another'), add.content), /does not verify/);
    // nothing the hook left on the machine holds the value (its files in the charm dir aside)
    rmSync(path.join(where.charmDir, 'out-get.json'));
    rmSync(path.join(where.charmDir, 'out-label.json'));
    rmSync(path.join(where.charmDir, 'out-a.yaml'));
    rmSync(path.join(where.charmDir, 'script.sh'));
    assert.equal(files(path.dirname(where.unitDir), value), '');
    assert.equal(files(path.dirname(where.unitDir), 'owned-four'), '');
  });

  test('a unit that is not the leader cannot add or change its application’s secrets; its own it can', async () => {
    const where = deploy();
    const result = await runHook(
      context(
        where,
        [
          'secret-add token=abc 2> out-add.err || echo $? > out-add.code',
          `secret-set ${XID_A} password=x 2> out-set.err || echo $? > out-set.code`,
          `secret-info-get ${XID_A} 2> out-info.err || echo $? > out-info.code`,
          'secret-add --owner unit --label own token=abc > out-own',
        ],
        { isLeader: false },
      ),
    );
    assert.equal(result.exitCode, 0, result.tail.join('\n'));
    assert.equal(read(where, 'out-add.code'), '1\n');
    assert.match(read(where, 'out-add.err'), /^ERROR cannot add an application-owned secret: permission denied/);
    assert.equal(read(where, 'out-set.code'), '1\n');
    assert.match(read(where, 'out-set.err'), /permission denied/);
    assert.equal(read(where, 'out-info.code'), '1\n');
    assert.deepEqual(
      result.changes.secretOps.map((o) => [o.op, o.op === 'add' ? o.owner : '']),
      [['add', 'unit']],
    );
  });

  test('a consumer reads the revision it tracks; --peek reads the latest, --refresh moves to it', async () => {
    const where = deploy();
    const result = await runHook(
      context(
        where,
        [
          'set -e',
          `secret-get ${XID_G} token > out-1`,
          `secret-get ${XID_G} token --peek > out-peek`,
          `secret-get ${XID_G} token > out-2`,
          `secret-get ${XID_G} token --refresh > out-refresh`,
          `secret-get ${XID_G} token > out-3`,
          'secret-get --label theirs --format json > out-label.json',
          `secret-get ${XID_G} --peek --refresh 2> out-both.err || echo $? > out-both.code`,
          'secret-get secret:vvvvvvvvvvvvvvvvvvvv 2> out-missing.err || echo $? > out-missing.code',
          `secret-set ${XID_G} token=x 2> out-set.err || echo $? > out-set.code`,
          'secret-ids > out-ids',
          'env | grep ^JUJU_SECRET_ | sort > out-env',
        ],
        { name: 'start', secretEvent: { id: `secret:${XID_G}`, label: 'theirs', revision: 3 } },
      ),
    );
    assert.equal(result.exitCode, 0, result.tail.join('\n'));
    assert.equal(read(where, 'out-1'), 'granted-one\n');
    assert.equal(read(where, 'out-peek'), 'granted-three\n');
    assert.equal(read(where, 'out-2'), 'granted-one\n');
    assert.equal(read(where, 'out-refresh'), 'granted-three\n');
    assert.equal(read(where, 'out-3'), 'granted-three\n');
    assert.equal(read(where, 'out-label.json'), '{"token":"granted-three"}\n');
    assert.equal(read(where, 'out-both.code'), '2\n');
    assert.equal(read(where, 'out-missing.code'), '1\n');
    assert.match(read(where, 'out-missing.err'), /not found/);
    assert.equal(read(where, 'out-set.code'), '1\n');
    assert.match(read(where, 'out-set.err'), /permission denied/);
    assert.equal(read(where, 'out-ids'), `${XID_A}\n`);
    assert.equal(
      read(where, 'out-env'),
      `JUJU_SECRET_ID=secret:${XID_G}\nJUJU_SECRET_LABEL=theirs\nJUJU_SECRET_REVISION=3\n`,
    );
    assert.deepEqual(result.changes.secretOps, [{ op: 'track', id: XID_G, revision: 3 }]);
  });

  test('a consumer’s first read tracks the latest revision and keeps the label it gives', async () => {
    const where = deploy();
    const ctx = context(where, [
      'set -e',
      `secret-get ${XID_G} token --label named > out-1`,
      'secret-get --label named > out-2',
    ]);
    ctx.secrets = {
      owned: [],
      granted: [
        { id: XID_G, label: '', revision: null, content: null, latestRevision: 2, latestContent: { token: 't2' } },
      ],
    };
    const result = await runHook(ctx);
    assert.equal(result.exitCode, 0, result.tail.join('\n'));
    assert.equal(read(where, 'out-1'), 't2\n');
    assert.equal(read(where, 'out-2'), 'token: t2\n');
    assert.deepEqual(result.changes.secretOps, [{ op: 'track', id: XID_G, revision: 2, label: 'named' }]);
  });
});

const owner = path.join(fixtures, 'secret-owner');
const consumer = path.join(fixtures, 'secret-consumer');
/** What the consumer logs of a password: sha256 of `secret-get --format json` output, 16 hex. */
const digest = (v: string) =>
  createHash('sha256')
    .update(`${JSON.stringify(v)}\n`)
    .digest('hex')
    .slice(0, 16);

describe('secrets between two applications on the local cloud', () => {
  let c: TestController;
  let uuid: string;
  const pw = [1, 2, 3].map((n) => `pw${n}-${randomBytes(10).toString('hex')}`);
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const ok = async (...args: string[]) => {
    const r = await cli(...args);
    assert.equal(r.code, 0, `charmflow ${args.join(' ')}: ${r.stderr}`);
    return r;
  };
  const sec = async (unit: string) =>
    (
      await c.store.db
        .selectFrom('log_entries')
        .select('message')
        .where('model_uuid', '=', uuid)
        .where('entity', '=', unit)
        .where('message', 'like', '%SEC %')
        .orderBy('id')
        .execute()
    ).map((r) => r.message.replace(/^\S+: /, ''));
  const secretRow = () => c.store.db.selectFrom('charm_secrets').selectAll().executeTakeFirstOrThrow();

  before(async () => {
    c = await startTestController();
    await ok('deploy', owner, 'owner', '-n', '2', '--config', `password=${pw[0]}`);
    await ok('deploy', consumer, 'consumer');
    await ok('integrate', 'owner:creds', 'consumer:creds');
    uuid = (
      await c.store.db.selectFrom('models').select('uuid').where('name', '=', 'default').executeTakeFirstOrThrow()
    ).uuid;
    await settle(c, ['default']);
  });
  after(async () => {
    await c?.stop();
  });

  test('the leader adds and grants; the consumer reads it; a unit that is not the leader is refused', async () => {
    const s = await secretRow();
    assert.equal(s.owner_kind, 'application');
    assert.equal(s.owner, 'owner');
    assert.equal(s.label, 'creds');
    assert.equal(s.latest_revision, 1);
    const rev = await c.store.db.selectFrom('charm_secret_revisions').selectAll().executeTakeFirstOrThrow();
    assert.ok(SecretBox.isSealed(rev.content), 'content is sealed at rest');
    assert.ok(!rev.content.includes(pw[0]));
    const leader = await sec('owner/0');
    assert.ok(
      leader.some((l) => l === `SEC added secret:${s.id}`),
      leader.join('\n'),
    );
    const follower = await sec('owner/1');
    assert.ok(
      follower.some((l) =>
        /^SEC nonleader-add refused: ERROR cannot add an application-owned secret: permission denied/.test(l),
      ),
      follower.join('\n'),
    );
    const seen = await sec('consumer/0');
    assert.ok(seen.includes(`SEC read state=granted digest=${digest(pw[0])}`), seen.join('\n'));
    const consumerRow = await c.store.db.selectFrom('charm_secret_consumers').selectAll().executeTakeFirstOrThrow();
    assert.deepEqual([consumerRow.unit, consumerRow.revision, consumerRow.label], ['consumer/0', 1, 'handed']);
  });

  test('a new revision: the consumer gets secret-changed and --refresh reads it; the owner removes the old one', async () => {
    await ok('config', 'owner', `password=${pw[1]}`);
    await settle(c, ['default']);
    const s = await secretRow();
    assert.equal(s.latest_revision, 2);
    const changed = (await sec('consumer/0')).filter((l) => l.startsWith('SEC changed'));
    assert.deepEqual(changed, [
      `SEC changed id=secret:${s.id} label=handed old=${digest(pw[0])} peek=${digest(pw[1])} new=${digest(pw[1])} after=${digest(pw[1])}`,
    ]);
    // nobody tracks revision 1 now: the owner's leader was told, and removed it
    const removed = (await sec('owner/0')).filter((l) => l.startsWith('SEC secret-remove'));
    assert.deepEqual(removed, [`SEC secret-remove id=secret:${s.id} label=creds revision=1`]);
    const revisions = await c.store.db.selectFrom('charm_secret_revisions').select('revision').execute();
    assert.deepEqual(
      revisions.map((r) => r.revision),
      [2],
    );
  });

  test('a failed hook commits nothing', async () => {
    // the operation reports the unit's failed hook
    const failed = await cli('config', 'owner', `password=${pw[2]}`, 'fail-after-set=true');
    assert.notEqual(failed.code, 0);
    assert.match(failed.stderr, /owner\/0: hook failed: "config-changed"/);
    const deadline = Date.now() + 60_000;
    for (;;) {
      const u = await c.store.db
        .selectFrom('units')
        .selectAll()
        .where('name', '=', 'owner/0')
        .executeTakeFirstOrThrow();
      if (u.workload_status === 'error') break;
      assert.ok(Date.now() < deadline, 'owner/0 never failed');
      await new Promise((r) => setTimeout(r, 300));
    }
    assert.equal((await secretRow()).latest_revision, 2);
    assert.equal((await sec('owner/0')).filter((l) => l.startsWith('SEC failing')).length >= 1, true);
    // the retry, now allowed to succeed, makes revision 3
    await ok('config', 'owner', 'fail-after-set=false');
    await settle(c, ['default']);
    assert.equal((await secretRow()).latest_revision, 3);
    const changed = (await sec('consumer/0')).filter((l) => l.startsWith('SEC changed'));
    assert.equal(changed.length, 2, changed.join('\n'));
    assert.match(changed[1], new RegExp(`new=${digest(pw[2])}`));
  });

  test('revoked, the consumer is refused', async () => {
    await ok('config', 'owner', 'revoked=true');
    await settle(c, ['default']);
    const refused = (await sec('consumer/0')).filter((l) => l.startsWith('SEC refused state=revoked'));
    assert.equal(refused.length, 1, (await sec('consumer/0')).join('\n'));
    assert.match(refused[0], /not found \(or not granted to consumer\/0\)/);
    assert.equal(await c.store.db.selectFrom('charm_secret_grants').selectAll().executeTakeFirst(), undefined);
  });

  test('no value ever shows in logs, operations, hook output, or any file of the controller or the machines', async () => {
    const texts: string[] = [];
    const debug = await ok('debug-log', '--replay', '--no-tail', '--level', 'DEBUG', '--format', 'json');
    assert.match(debug.stdout, /SEC changed/, 'the debug log holds the hooks’ lines');
    texts.push(debug.stdout);
    const { operations: ops } = JSON.parse((await ok('operations', '--format', 'json')).stdout) as {
      operations: { id: number }[];
    };
    assert.ok(ops.length > 0);
    for (const op of ops) texts.push((await ok('show-operation', String(op.id), '--format', 'json')).stdout);
    for (const unit of ['owner/0', 'owner/1', 'consumer/0']) {
      texts.push((await ok('show-status-log', unit, '--format', 'json')).stdout);
    }
    texts.push((await ok('status', '--format', 'json')).stdout);
    texts.push(JSON.stringify(await c.store.db.selectFrom('hook_runs').selectAll().execute()));
    const roots = await c.store.db.selectFrom('machines').select('root_dir').execute();
    for (const v of pw) {
      for (const t of texts) assert.ok(!t.includes(v), 'a secret value is in a log or listing');
      // the store's files (sealed at rest), the controller's and Temporal's logs
      assert.equal(files(c.dataDir, v), '', `files under ${c.dataDir} hold a value`);
      for (const { root_dir } of roots) assert.equal(files(root_dir, v), '', `files under ${root_dir} hold a value`);
    }
  });
});
