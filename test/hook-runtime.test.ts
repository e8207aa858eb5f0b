// The machine-side hook runtime (charm/runtime/: runner.py + hook_tool.py, thin
// launchers of cf_runner.py + cf_hook_tool.py), run
// locally the way a substrate runs it: `python3 -S runner.py` with one
// HookContext on stdin, HookEvent JSON lines back on stdout.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  copyFileSync,
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { HookContext, type HookContextInput, HookEvent, type HookResult } from '../charm/hook-protocol.ts';

const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const fixtures = path.join(repo, 'test', 'fixtures', 'charms');
const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The python3 a hook gets through its PATH: the runner and pip must use the same one. */
function hookPython(): string {
  for (const dir of SYSTEM_PATH.split(':')) {
    const p = path.join(dir, 'python3');
    if (existsSync(p)) return p;
  }
  return 'python3';
}
const PY = hookPython();

let root: string; // a fake <rootDir> holding runtime/{*.py,bin/}
let runner: string;
let toolsDir: string;
let seq = 0;

before(() => {
  root = mkdtempSync(path.join(tmpdir(), 'charmflow-hook-runtime-'));
  mkdirSync(path.join(root, 'runtime'));
  for (const f of readdirSync(path.join(repo, 'charm', 'runtime')).filter((n) => n.endsWith('.py'))) {
    copyFileSync(path.join(repo, 'charm', 'runtime', f), path.join(root, 'runtime', f));
  }
  runner = path.join(root, 'runtime', 'runner.py');
  toolsDir = path.join(root, 'runtime', 'bin');
  const r = spawnSync(PY, ['-S', runner, 'install-tools', toolsDir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
});

after(() => {
  rmSync(root, { recursive: true, force: true });
});

/** A private, writable copy of a fixture charm, plus a unit state dir. */
function deploy(fixture: string): { charmDir: string; unitDir: string } {
  const base = path.join(root, `u${++seq}`);
  const charmDir = path.join(base, 'charm');
  cpSync(path.join(fixtures, fixture), charmDir, { recursive: true });
  for (const sub of ['hooks', 'actions', 'bin', 'src']) {
    const d = path.join(charmDir, sub);
    if (existsSync(d)) for (const f of readdirSync(d)) chmodSync(path.join(d, f), 0o755);
  }
  if (existsSync(path.join(charmDir, 'dispatch'))) chmodSync(path.join(charmDir, 'dispatch'), 0o755);
  const unitDir = path.join(base, 'state');
  mkdirSync(unitDir);
  return { charmDir, unitDir };
}

const dbRelation = {
  id: 1,
  endpoint: 'db',
  interface: 'pgsql',
  role: 'requires' as const,
  remoteApplication: 'pg',
  data: {
    'pg/0': { host: '10.0.0.9', port: '5432' },
    'pg/1': { host: '10.0.0.10', port: '5432' },
    pg: { version: '16' },
    'tools/0': { mine: 'yes' },
    tools: { shared: '1' },
  },
  units: ['pg/1', 'pg/0'],
};

function context(
  where: { charmDir: string; unitDir: string },
  overrides: Partial<HookContextInput> = {},
): HookContextInput {
  return {
    contextId: `ctx-${++seq}-${process.pid}`,
    kind: 'hook',
    name: 'install',
    unit: 'tools/0',
    application: 'tools',
    model: { name: 'm1', uuid: '6f0c5a2e-0000-4000-8000-000000000001' },
    machineId: '3',
    availabilityZone: 'zone-a',
    charmDir: where.charmDir,
    unitDir: where.unitDir,
    toolsDir,
    config: { name: 'x', port: 8080 },
    isLeader: true,
    leaderSettings: { existing: 'old' },
    relations: [dbRelation],
    privateAddress: '10.1.2.3',
    publicAddress: '203.0.113.7',
    ports: ['22/tcp'],
    unitStatus: { status: 'maintenance', message: 'installing' },
    applicationStatus: { status: 'unknown', message: '' },
    ...overrides,
  };
}

interface Run {
  events: HookEvent[];
  /** ms since spawn at which each event's line arrived */
  arrivals: number[];
  result: HookResult | undefined;
  code: number | null;
  stderr: string;
  elapsed: number;
}

/** The runner on a Python without os.posix_spawn: hooks start through fork + exec. */
const FORK_EXEC_RUNNER = [
  'import os, sys',
  'del os.posix_spawn',
  'sys.path.insert(0, os.path.dirname(sys.argv[1]))',
  'import cf_runner',
  "sys.exit(cf_runner.main(['runner.py']))",
].join('\n');

/** Runs the runner once; every stdout line must parse as a HookEvent. */
function runHook(
  ctx: HookContextInput,
  opts: { killWhen?: (ev: HookEvent) => boolean; forkExec?: boolean } = {},
): Promise<Run> {
  const started = Date.now();
  const args = opts.forkExec ? ['-S', '-c', FORK_EXEC_RUNNER, runner] : ['-S', runner];
  const child: ChildProcess = spawn(PY, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const events: HookEvent[] = [];
  const arrivals: number[] = [];
  let stderr = '';
  let buf = '';
  let killed = false;
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (chunk: string) => {
    buf += chunk;
    let k = buf.indexOf('\n');
    while (k >= 0) {
      const line = buf.slice(0, k);
      buf = buf.slice(k + 1);
      const ev = HookEvent.parse(JSON.parse(line));
      events.push(ev);
      arrivals.push(Date.now() - started);
      if (!killed && opts.killWhen?.(ev)) {
        killed = true;
        child.kill('SIGKILL');
      }
      k = buf.indexOf('\n');
    }
  });
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (c: string) => {
    stderr += c;
  });
  child.stdin!.end(JSON.stringify(HookContext.parse(ctx)));
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => {
      if (!killed) {
        assert.equal(buf, '', 'a partial line was left on stdout');
        const results = events.filter((e) => e.type === 'result');
        assert.equal(results.length, 1, `exactly one result expected, got ${JSON.stringify(events)}; ${stderr}`);
        assert.equal(events[events.length - 1].type, 'result', 'the result comes last');
        assert.equal(code, 0, `runner exit code; stderr: ${stderr}`);
      }
      const result = events.find((e): e is HookResult => e.type === 'result');
      resolve({ events, arrivals, result, code, stderr, elapsed: Date.now() - started });
    });
  });
}

function outputs(run: Run, stream?: 'stdout' | 'stderr'): string[] {
  return run.events.flatMap((e) => (e.type === 'output' && (!stream || e.stream === stream) ? [e.line] : []));
}

const read = (...p: string[]) => readFileSync(path.join(...p), 'utf8');
const readJson = (...p: string[]) => JSON.parse(read(...p));

describe('hook runtime', () => {
  for (const forkExec of [false, true])
    test(`a hook gets exactly Juju’s environment, built from scratch (${forkExec ? 'fork + exec' : 'posix_spawn'})`, async () => {
      const where = deploy('tools-charm');
      const ctx = context(where);
      const run = await runHook(ctx, { forkExec });
      assert.equal(run.result?.exitCode, 0, run.result?.tail.join('\n'));
      const hookDir = path.join(where.unitDir, '.hooks', ctx.contextId);
      const base = {
        PATH: `${toolsDir}:${SYSTEM_PATH}`,
        HOME: userInfo().homedir,
        LANG: 'C.UTF-8',
        JUJU_UNIT_NAME: 'tools/0',
        JUJU_MODEL_NAME: 'm1',
        JUJU_MODEL_UUID: '6f0c5a2e-0000-4000-8000-000000000001',
        JUJU_VERSION: '3.6.4',
        JUJU_CHARM_DIR: where.charmDir,
        CHARM_DIR: where.charmDir,
        JUJU_MACHINE_ID: '3',
        JUJU_AVAILABILITY_ZONE: 'zone-a',
        JUJU_PRINCIPAL_UNIT: '',
        CHARMFLOW_HOOK_DIR: hookDir,
      };
      assert.deepEqual(readJson(where.charmDir, 'env-hooks-install.json'), {
        ...base,
        JUJU_DISPATCH_PATH: 'hooks/install',
        JUJU_HOOK_NAME: 'install',
        JUJU_CONTEXT_ID: ctx.contextId,
      });
      assert.deepEqual(outputs(run, 'stdout'), ['env recorded']);
      assert.deepEqual(outputs(run, 'stderr'), ['to stderr']);

      // a relation hook adds the relation variables
      const rctx = context(where, {
        name: 'db-relation-departed',
        relation: { id: 1, remoteUnit: 'pg/1', remoteApp: 'pg', departingUnit: 'pg/1' },
      });
      const rrun = await runHook(rctx, { forkExec });
      assert.equal(rrun.result?.exitCode, 0);
      assert.deepEqual(readJson(where.charmDir, 'env-hooks-db-relation-departed.json'), {
        ...base,
        CHARMFLOW_HOOK_DIR: path.join(where.unitDir, '.hooks', rctx.contextId),
        JUJU_DISPATCH_PATH: 'hooks/db-relation-departed',
        JUJU_HOOK_NAME: 'db-relation-departed',
        JUJU_CONTEXT_ID: rctx.contextId,
        JUJU_RELATION: 'db',
        JUJU_RELATION_ID: 'db:1',
        JUJU_REMOTE_UNIT: 'pg/1',
        JUJU_REMOTE_APP: 'pg',
        JUJU_DEPARTING_UNIT: 'pg/1',
      });

      // an action: no JUJU_HOOK_NAME, action variables, action tools work
      const actx = context(where, {
        kind: 'action',
        name: 'do-thing',
        action: { id: '42', params: { target: 'db', nested: { a: 1 } } },
      });
      const arun = await runHook(actx, { forkExec });
      assert.equal(arun.result?.exitCode, 0, arun.result?.tail.join('\n'));
      const aenv = readJson(where.charmDir, 'env-actions-do-thing.json');
      delete aenv.PWD; // exported by the action's /bin/sh, not by the runner
      assert.deepEqual(aenv, {
        ...base,
        CHARMFLOW_HOOK_DIR: path.join(where.unitDir, '.hooks', actx.contextId),
        JUJU_DISPATCH_PATH: 'actions/do-thing',
        JUJU_CONTEXT_ID: actx.contextId,
        JUJU_ACTION_NAME: 'do-thing',
        JUJU_ACTION_UUID: '42',
      });
      assert.deepEqual(readJson(where.charmDir, 'action-params.json'), { nested: { a: 1 }, target: 'db' });
      assert.equal(read(where.charmDir, 'action-target.txt'), 'db\n');
      assert.ok(arun.events.some((e) => e.type === 'action-log' && e.message === 'working on db'));
      assert.deepEqual(arun.result?.changes.actionResults, { result: { count: '3', unit: 'tools/0' }, outcome: 'ok' });
      assert.equal(arun.result?.changes.actionFailed, 'partly failed');
    });

  test('a missing hook is skipped: nothing runs', async () => {
    const where = deploy('tools-charm');
    const run = await runHook(context(where, { name: 'remove' }));
    assert.equal(run.events.length, 1);
    assert.equal(run.result?.skipped, true);
    assert.equal(run.result?.exitCode, 0);
    assert.equal(run.result?.replayed, false);
    assert.deepEqual(run.result?.changes.ports, ['22/tcp']);
  });

  test('dispatch is preferred over hooks/', async () => {
    const where = deploy('dispatch-charm');
    const run = await runHook(context(where, { name: 'install' }));
    assert.equal(run.result?.exitCode, 0);
    assert.equal(read(where.charmDir, 'calls.txt'), 'dispatch hooks/install\n');
  });

  test('a hook using every tool family, as leader in a relation hook', async () => {
    const where = deploy('tools-charm');
    const ctx = context(where, {
      name: 'config-changed',
      relation: { id: 1, remoteUnit: 'pg/0', remoteApp: 'pg' },
    });
    const run = await runHook(ctx);
    assert.equal(run.result?.exitCode, 0, run.result?.tail.join('\n'));
    const out = (f: string) => read(where.charmDir, 'out', f);
    assert.equal(out('config.json'), '{"name":"x","port":8080}\n');
    assert.equal(out('config-name.txt'), 'x\n');
    assert.equal(out('config-smart.txt'), 'name: x\nport: 8080\n');
    assert.equal(out('config-missing.txt'), '');
    assert.equal(out('config-missing.json'), 'null\n');
    assert.equal(out('is-leader.json'), 'true\n');
    assert.equal(out('is-leader.txt'), 'True\n');
    assert.equal(out('relation-ids.json'), '["db:1"]\n');
    assert.equal(out('relation-list.json'), '["pg/0","pg/1"]\n');
    assert.equal(out('relation-list-app.txt'), 'pg\n');
    assert.equal(out('rg-remote-unit.json'), '{"host":"10.0.0.9","port":"5432"}\n');
    assert.equal(out('rg-host.txt'), '10.0.0.9\n');
    assert.equal(out('rg-remote-app.json'), '{"version":"16"}\n');
    // reading your own bags reflects the writes made earlier in this hook
    assert.equal(out('rg-own-unit.json'), '{"answer":"42","mine":"yes"}\n');
    assert.equal(out('rg-own-app.json'), '{"app-key":"app-value","shared":"1"}\n');
    assert.equal(out('leader-get.json'), '{"existing":"old","lk":"lv"}\n');
    assert.equal(out('opened-ports.json'), '["8080/tcp","1000-1010/udp"]\n');
    assert.equal(out('status-get.json'), '{"message":"all good","status":"active","status-data":{}}\n');
    assert.equal(out('unit-get.txt'), '10.1.2.3\n');
    assert.deepEqual(JSON.parse(out('network-get.json')), {
      'bind-addresses': [
        {
          'mac-address': '',
          'interface-name': '',
          addresses: [{ hostname: '', value: '10.1.2.3', cidr: '10.1.2.3/32' }],
        },
      ],
      'egress-subnets': ['10.1.2.3/32'],
      'ingress-addresses': ['10.1.2.3'],
    });
    assert.equal(out('state-get.json'), '{"k1":"v1"}\n');
    // errors: exit codes and the wording ops relies on
    assert.equal(out('rg-notfound.code'), '2\n');
    assert.match(out('rg-notfound.err'), /^ERROR invalid value "db:99" for option -r: relation not found\n$/);
    assert.equal(out('secret.code'), '2\n');
    assert.equal(out('secret.err'), 'ERROR secret URI "foo" not valid\n');
    assert.equal(out('action-get.code'), '1\n');
    assert.match(out('action-get.err'), /^ERROR /);
    assert.equal(out('bogus.code'), '2\n');
    assert.equal(out('bogus.err'), 'ERROR option provided but not defined: --bogus\n');
    assert.equal(out('bad-status.code'), '2\n');
    assert.match(out('bad-status.err'), /^ERROR invalid status "exploded"/);

    // live events, in order, before the result
    const types = run.events.map((e) => e.type);
    const logs = run.events.filter((e) => e.type === 'log');
    assert.deepEqual(
      logs.map((e) => [e.level, e.message]),
      [
        ['WARNING', 'db:1: -dash message'],
        ['INFO', 'db:1: plain message'],
      ],
    );
    const statusAt = types.indexOf('status');
    assert.ok(statusAt >= 0 && statusAt < types.indexOf('result'));
    assert.deepEqual(run.events[statusAt], {
      ...run.events[statusAt],
      scope: 'unit',
      status: 'active',
      message: 'all good',
    });
    assert.ok(run.events.some((e) => e.type === 'app-version' && e.version === '1.2.3'));
    assert.deepEqual(outputs(run, 'stdout'), ['config-changed done']);

    assert.deepEqual(run.result?.changes, {
      relationSettings: { '1': { unit: { answer: '42', gone: null }, app: { 'app-key': 'app-value' } } },
      leaderSettings: { lk: 'lv' },
      charmState: { k1: 'v1' },
      ports: ['8080/tcp', '1000-1010/udp'],
      actionResults: {},
      actionFailed: null,
      secretOps: [],
    });
    // the per-execution dir is private
    const hookDir = path.join(where.unitDir, '.hooks', ctx.contextId);
    const mode = (p: string) => spawnSync('stat', ['-c', '%a', p], { encoding: 'utf8' }).stdout.trim();
    assert.equal(mode(hookDir), '700');
    // the context (it holds the config) is emptied once the result is recorded
    assert.equal(statSync(path.join(hookDir, 'ctx.json')).size, 0);
    assert.ok(existsSync(path.join(hookDir, 'result.json')));
  });

  test('the context is readable by its owner only while the hook runs, and no copy of a secret outlives the hook', async () => {
    const where = deploy('tools-charm');
    const secret = `s3cret-${process.pid}-${Date.now()}`;
    // The hook checks its own context file, then uses config-get (which reads it).
    writeFileSync(
      path.join(where.charmDir, 'script.sh'),
      [
        'stat -c %a "$CHARMFLOW_HOOK_DIR/ctx.json" > ctx-mode',
        'stat -c %a "$CHARMFLOW_HOOK_DIR" > dir-mode',
        'config-get password > /dev/null && echo "got it"',
        'exit "$(cat exit-code 2>/dev/null || echo 0)"',
        '',
      ].join('\n'),
    );
    const ok = await runHook(context(where, { name: 'start', config: { password: secret } }));
    assert.equal(ok.result?.exitCode, 0, ok.result?.tail.join('\n'));
    assert.deepEqual(outputs(ok, 'stdout'), ['got it']);
    assert.equal(read(where.charmDir, 'ctx-mode'), '600\n');
    assert.equal(read(where.charmDir, 'dir-mode'), '700\n');
    writeFileSync(path.join(where.charmDir, 'exit-code'), '4');
    const failed = await runHook(context(where, { name: 'start', config: { password: secret } }));
    assert.equal(failed.result?.exitCode, 4);
    // A run whose supervisor died (no result) is recovered by the next call, which records the failure.
    const where2 = deploy('tools-charm');
    const ctx = context(where2, { name: 'upgrade-charm', config: { password: secret } });
    const first = await runHook(ctx, { killWhen: (e) => e.type === 'output' && e.line === 'started' });
    assert.equal(first.result, undefined);
    const attached = await runHook(ctx);
    assert.equal(attached.result?.exitCode, 0);
    assert.equal((await runHook(ctx)).result?.replayed, true);
    // Nothing under the machine's root still holds the secret.
    for (const base of [path.dirname(where.unitDir), path.dirname(where2.unitDir)]) {
      const grep = spawnSync('grep', ['-rl', '--', secret, base], { encoding: 'utf8' });
      assert.equal(grep.stdout, '', `files still holding the secret:\n${grep.stdout}`);
      assert.equal(grep.status, 1, grep.stderr);
    }
  });

  test('invalid UTF-8, NaN and Infinity in tool input get an ERROR line and exit 2 or 1, never a traceback', async () => {
    const where = deploy('tools-charm');
    // Each case: a shell command whose stderr and exit code the hook records.
    const cases: Record<string, [string, number]> = {
      'juju-log-arg': [`juju-log "$(printf 'bad \\377 byte')"`, 2],
      'status-set-msg': [`status-set active "$(printf 'bad \\377')"`, 2],
      'relation-set-kv': [`relation-set -r db:1 "k=$(printf '\\377')"`, 2],
      'relation-set-key': [`relation-set -r db:1 "$(printf 'k\\377')=v"`, 2],
      'leader-set-kv': [`leader-set "k=$(printf '\\377\\376')"`, 2],
      'config-get-key': [`config-get "$(printf '\\377')"`, 2],
      'application-version-set': [`application-version-set "$(printf '\\377')"`, 2],
      'relation-set-stdin-utf8': [`printf 'k: "\\377"\\n' | relation-set -r db:1 --file -`, 1],
      'relation-set-stdin-nan': [`printf '{"k": NaN}' | relation-set -r db:1 --file -`, 1],
      'relation-set-stdin-inf': [`printf '{"k": Infinity}' | relation-set -r db:1 --file -`, 1],
      'relation-set-stdin-overflow': [`printf '{"k": 1e999}' | relation-set -r db:1 --file -`, 1],
      'relation-set-file-nan': [`printf '{"k": -Infinity}' > nan.json; relation-set -r db:1 --file nan.json`, 1],
      'state-set-stdin-nan': [`printf '{"k": NaN}' | state-set --file -`, 1],
      'relation-set-yaml-nan': [`printf 'k: .nan\\n' | relation-set -r db:1 --file -`, 0],
    };
    writeFileSync(
      path.join(where.charmDir, 'script.sh'),
      `${Object.entries(cases)
        .map(([name, [cmd]]) => `${cmd} 2> ${name}.err; echo $? > ${name}.code`)
        .join('\n')}\n`,
    );
    const run = await runHook(context(where, { name: 'start' }));
    assert.equal(run.result?.exitCode, 0, run.result?.tail.join('\n'));
    const wrong: string[] = [];
    for (const [name, [, code]] of Object.entries(cases)) {
      const err = readFileSync(path.join(where.charmDir, `${name}.err`), 'latin1');
      const got = Number(read(where.charmDir, `${name}.code`));
      const ok = got === code && !/Traceback|Error:|Exception/.test(err) && (code === 0 || /^ERROR \S.*\n$/.test(err));
      if (!ok) wrong.push(`${name}: exit ${got} (want ${code}): ${err}`);
    }
    assert.deepEqual(wrong, []);
    assert.match(read(where.charmDir, 'juju-log-arg.err'), /not valid UTF-8/);
    assert.match(read(where.charmDir, 'relation-set-stdin-nan.err'), /NaN/);
    // Nothing bad was recorded: the one accepted value is YAML's ".nan" as a plain string.
    assert.deepEqual(run.result?.changes.relationSettings, { '1': { unit: { k: '.nan' } } });
    assert.deepEqual(run.result?.changes.leaderSettings, {});
    assert.deepEqual(run.result?.changes.charmState, {});
    assert.ok(!run.events.some((e) => e.type === 'status' || e.type === 'app-version'));
  });

  test('a hook printing 50 MB in one line streams all of it; the result keeps a bounded tail', async () => {
    const where = deploy('tools-charm');
    writeFileSync(path.join(where.charmDir, 'script.sh'), "head -c 50000000 /dev/zero | tr '\\0' x\necho\necho LAST\n");
    const run = await runHook(context(where, { name: 'start' }));
    assert.equal(run.result?.exitCode, 0);
    const lines = outputs(run, 'stdout');
    assert.equal(
      lines.reduce((n, l) => n + (l === 'LAST' ? 0 : l.length), 0),
      50_000_000,
    );
    const longest = lines.reduce((m, l) => Math.max(m, l.length), 0);
    assert.ok(longest <= 16384, `longest line ${longest}`);
    const tail = run.result!.tail;
    assert.ok(tail.length <= 20, `${tail.length} lines kept`);
    assert.equal(tail[tail.length - 1], 'LAST');
    assert.ok(Buffer.byteLength(tail.join('\n')) <= 20 * 16384);
  });

  test('a non-leader may not write application data', async () => {
    const where = deploy('tools-charm');
    writeFileSync(
      path.join(where.charmDir, 'script.sh'),
      [
        'relation-set -r db:1 --app k=v 2> e1; echo $? > c1',
        'leader-set k=v 2> e2; echo $? > c2',
        'status-set --application=True active 2> e3; echo $? > c3',
        'relation-get -r db:1 --app - tools 2> e4; echo $? > c4',
        'relation-set -r db:1 k=v; echo $? > c5',
        '',
      ].join('\n'),
    );
    const run = await runHook(context(where, { name: 'start', isLeader: false }));
    assert.equal(run.result?.exitCode, 0, run.result?.tail.join('\n'));
    const f = (n: string) => read(where.charmDir, n);
    assert.equal(f('c1'), '1\n');
    assert.equal(f('e1'), 'ERROR cannot write relation settings\n');
    assert.equal(f('c2'), '1\n');
    assert.match(f('e2'), /^ERROR cannot write leadership settings: .*not the leader\n$/);
    assert.equal(f('c3'), '1\n');
    assert.match(f('e3'), /not the leader/);
    assert.equal(f('c4'), '1\n');
    assert.equal(f('e4'), 'ERROR permission denied\n');
    assert.equal(f('c5'), '0\n');
    assert.deepEqual(run.result?.changes.relationSettings, { '1': { unit: { k: 'v' } } });
    assert.deepEqual(run.result?.changes.leaderSettings, {});
  });

  test('siblings: the leader sees their statuses, another unit only their names (goal-state)', async () => {
    const where = deploy('tools-charm');
    writeFileSync(
      path.join(where.charmDir, 'script.sh'),
      [
        'status-get --application --include-data --format=json > app.json',
        'goal-state --format=json > goal.json',
        '',
      ].join('\n'),
    );
    const leader = await runHook(
      context(where, {
        name: 'start',
        isLeader: true,
        unitStatuses: { 'tools/1': { status: 'waiting', message: 'for db' } },
      }),
    );
    assert.equal(leader.result?.exitCode, 0, leader.result?.tail.join('\n'));
    const app = JSON.parse(read(where.charmDir, 'app.json'));
    assert.equal(app['application-status'].units['tools/1'].status, 'waiting');
    assert.equal(app['application-status'].units['tools/1'].message, 'for db');
    assert.deepEqual(Object.keys(JSON.parse(read(where.charmDir, 'goal.json')).units).sort(), ['tools/0', 'tools/1']);

    const other = await runHook(
      context(where, { name: 'start', isLeader: false, applicationUnits: ['tools/0', 'tools/1', 'tools/2'] }),
    );
    assert.equal(other.result?.exitCode, 0, other.result?.tail.join('\n'));
    assert.deepEqual(Object.keys(JSON.parse(read(where.charmDir, 'goal.json')).units).sort(), [
      'tools/0',
      'tools/1',
      'tools/2',
    ]);
  });

  test('output formats match Juju’s (yaml.v2, Go JSON, smart)', async () => {
    const where = deploy('tools-charm');
    writeFileSync(
      path.join(where.charmDir, 'script.sh'),
      [
        'mkdir -p fmt',
        'config-get --format=yaml > fmt/config.yaml',
        'config-get --format json > fmt/config.json',
        'config-get flag > fmt/flag.smart',
        'config-get port > fmt/port.smart',
        'config-get ratio > fmt/ratio.smart',
        'config-get empty > fmt/empty.smart',
        'config-get empty --format=json > fmt/empty.json',
        'config-get multiline > fmt/multiline.smart',
        'is-leader --format=yaml > fmt/leader.yaml',
        'relation-get -r db:1 - pg/0 > fmt/pg0.smart',
        'relation-get -r db:1 --format=yaml - pg/0 > fmt/pg0.yaml',
        'relation-get -r db:1 --format=json - pg/0 > fmt/pg0.json',
        'relation-get -r 1 nothing pg/0 > fmt/nothing.smart',
        'relation-get -r 1 nothing pg/0 --format=json > fmt/nothing.json',
        'relation-list -r db:1 > fmt/units.smart',
        'relation-ids db > fmt/ids.smart',
        'relation-ids cluster --format=json > fmt/no-ids.json',
        'opened-ports > fmt/ports.smart',
        'status-get > fmt/status.smart',
        'status-get --include-data > fmt/status-data.smart',
        'status-get --application --format=json --include-data > fmt/app-status.json',
        'leader-get > fmt/leader-get.smart',
        'leader-get existing > fmt/leader-get-key.smart',
        'unit-get public-address > fmt/public.smart',
        'network-get db --ingress-address > fmt/ingress.smart',
        'network-get db --format=yaml > fmt/network.yaml',
        'juju-log --help > fmt/help.txt; echo $? >> fmt/help.txt',
        '',
      ].join('\n'),
    );
    const run = await runHook(
      context(where, {
        name: 'start',
        config: {
          name: 'x',
          port: 8080,
          flag: true,
          ratio: 0.5,
          empty: '',
          multiline: 'a\nb',
          'yes-str': 'yes',
          'num-str': '123',
        },
        relations: [
          {
            ...dbRelation,
            data: {
              ...dbRelation.data,
              'pg/0': {
                host: '10.0.0.9',
                port: '5432',
                html: '<b>&</b>',
                motd: 'Welcome: please read the notes that follow, they are long enough to be folded by yaml',
              },
            },
          },
        ],
        unitStatuses: { 'tools/1': { status: 'waiting', message: 'for db' } },
      }),
    );
    assert.equal(run.result?.exitCode, 0, run.result?.tail.join('\n'));
    const f = (n: string) => read(where.charmDir, 'fmt', n);
    assert.equal(
      f('config.yaml'),
      'empty: ""\nflag: true\nmultiline: |-\n  a\n  b\nname: x\nnum-str: "123"\nport: 8080\nratio: 0.5\nyes-str: "yes"\n',
    );
    assert.equal(
      f('config.json'),
      '{"empty":"","flag":true,"multiline":"a\\nb","name":"x","num-str":"123","port":8080,"ratio":0.5,"yes-str":"yes"}\n',
    );
    assert.equal(f('flag.smart'), 'True\n');
    assert.equal(f('port.smart'), '8080\n');
    assert.equal(f('ratio.smart'), '0.5\n');
    assert.equal(f('empty.smart'), '');
    assert.equal(f('empty.json'), '""\n');
    assert.equal(f('multiline.smart'), 'a\nb\n');
    assert.equal(f('leader.yaml'), 'true\n');
    const pg0Yaml =
      'host: 10.0.0.9\nhtml: <b>&</b>\nmotd: \'Welcome: please read the notes that follow, they are long enough to be folded\n  by yaml\'\nport: "5432"\n';
    assert.equal(f('pg0.smart'), pg0Yaml);
    assert.equal(f('pg0.yaml'), pg0Yaml);
    assert.equal(
      f('pg0.json'),
      '{"host":"10.0.0.9","html":"\\u003cb\\u003e\\u0026\\u003c/b\\u003e","motd":"Welcome: please read the notes that follow, they are long enough to be folded by yaml","port":"5432"}\n',
    );
    assert.equal(f('nothing.smart'), '');
    assert.equal(f('nothing.json'), 'null\n');
    assert.equal(f('units.smart'), 'pg/0\npg/1\n');
    assert.equal(f('ids.smart'), 'db:1\n');
    assert.equal(f('no-ids.json'), '[]\n');
    assert.equal(f('ports.smart'), '22/tcp\n');
    assert.equal(f('status.smart'), 'maintenance\n');
    assert.equal(f('status-data.smart'), 'message: installing\nstatus: maintenance\nstatus-data: {}\n');
    assert.deepEqual(JSON.parse(f('app-status.json')), {
      'application-status': {
        status: 'unknown',
        message: '',
        'status-data': {},
        units: {
          'tools/0': { status: 'maintenance', message: 'installing', 'status-data': {} },
          'tools/1': { status: 'waiting', message: 'for db', 'status-data': {} },
        },
      },
    });
    assert.equal(f('leader-get.smart'), 'existing: old\n');
    assert.equal(f('leader-get-key.smart'), 'old\n');
    assert.equal(f('public.smart'), '203.0.113.7\n');
    assert.equal(f('ingress.smart'), '10.1.2.3\n');
    assert.equal(
      f('network.yaml'),
      'bind-addresses:\n- mac-address: ""\n  interface-name: ""\n  addresses:\n  - hostname: ""\n    value: 10.1.2.3\n    cidr: 10.1.2.3/32\negress-subnets:\n- 10.1.2.3/32\ningress-addresses:\n- 10.1.2.3\n',
    );
    assert.match(f('help.txt'), /^Usage: juju-log .*\n[\s\S]*\n0\n$/);
  });

  test('status-set reaches the controller while the hook runs', async () => {
    const where = deploy('tools-charm');
    const run = await runHook(context(where, { name: 'leader-elected' }));
    assert.equal(run.result?.exitCode, 0);
    const idx = run.events.flatMap((e, i) => (e.type === 'status' ? [i] : []));
    assert.equal(idx.length, 2);
    const [first, second] = idx.map((i) => run.events[i]);
    assert.ok(first.type === 'status' && first.status === 'maintenance' && first.message === 'step one');
    assert.ok(second.type === 'status' && second.status === 'active' && second.message === 'ready');
    const resultAt = run.arrivals[run.events.length - 1];
    // the first status arrived while the hook was still sleeping
    assert.ok(resultAt - run.arrivals[idx[0]] >= 300, `first status at ${run.arrivals[idx[0]]}, result at ${resultAt}`);
  });

  test('a failing hook reports its exit code, tail and (uncommitted) changes', async () => {
    const where = deploy('tools-charm');
    const run = await runHook(context(where, { name: 'update-status' }));
    assert.equal(run.result?.exitCode, 3);
    assert.equal(run.result?.timedOut, false);
    // stdout and stderr are separate pipes: their relative order is not kept
    assert.deepEqual(run.result?.tail.slice().sort(), ['about to fail', 'boom: something broke']);
    assert.deepEqual(run.result?.changes.relationSettings, { '1': { unit: { half: 'done' } } });
  });

  test('a timeout kills the whole process group', async () => {
    const where = deploy('tools-charm');
    const started = Date.now();
    const run = await runHook(context(where, { name: 'stop', timeoutSeconds: 1 }));
    assert.equal(run.result?.timedOut, true);
    assert.equal(run.result?.exitCode, null);
    assert.ok(run.elapsed < 4000, `took ${run.elapsed} ms`);
    assert.ok(run.result?.tail.includes('stopping forever'));
    // the background child would have touched the file 2 s after the start
    await new Promise((r) => setTimeout(r, Math.max(0, 2600 - (Date.now() - started))));
    assert.equal(existsSync(path.join(where.charmDir, 'survivor')), false);
  });

  test('exactly once: the hook survives its runner, a retry attaches, a third call replays', async () => {
    const where = deploy('tools-charm');
    const ctx = context(where, { name: 'upgrade-charm' });
    // 1. the channel dies mid-hook
    const first = await runHook(ctx, { killWhen: (e) => e.type === 'output' && e.line === 'started' });
    assert.equal(first.result, undefined);
    assert.notEqual(first.code, 0);
    // 2. the retry attaches: all events from the start, then the single result
    const second = await runHook(ctx);
    assert.equal(second.result?.exitCode, 0);
    assert.equal(second.result?.replayed, false);
    assert.deepEqual(outputs(second), ['started', 'finished']);
    // it attached to the running hook rather than starting another one
    assert.equal(read(where.charmDir, 'runs.txt'), 'run\n');
    // 3. once finished, a call replays the stored result and prints nothing else
    const third = await runHook(ctx);
    assert.equal(third.events.length, 1);
    assert.equal(third.result?.replayed, true);
    assert.equal(third.result?.exitCode, 0);
    assert.deepEqual(third.result?.tail, second.result?.tail);
    assert.equal(read(where.charmDir, 'runs.txt'), 'run\n');
  });

  test('two hooks never run at once on one unit', async () => {
    const where = deploy('tools-charm');
    writeFileSync(
      path.join(where.charmDir, 'script.sh'),
      'if [ -e upgrade-finished ]; then echo after > order.txt; else echo during > order.txt; fi\n',
    );
    let second: Promise<Run> | undefined;
    const first = runHook(context(where, { name: 'upgrade-charm' }), {
      killWhen: (e) => {
        if (e.type === 'output' && e.line === 'started') second = runHook(context(where, { name: 'start' }));
        return false;
      },
    });
    assert.equal((await first).result?.exitCode, 0);
    assert.ok(second);
    assert.equal((await second).result?.exitCode, 0);
    assert.equal(read(where.charmDir, 'order.txt'), 'after\n');
  });

  test('a daemon the hook leaves behind neither delays the result nor dies of SIGPIPE; its hook tools say the hook ended', async () => {
    const where = deploy('tools-charm');
    writeFileSync(
      path.join(where.charmDir, 'script.sh'),
      '(sleep 1; echo late; echo late >&2; config-get > tool-out 2> tool-err; echo $? > tool-rc; touch daemon-alive) &\necho hook done\n',
    );
    const started = Date.now();
    const run = await runHook(context(where, { name: 'start' }));
    assert.equal(run.result?.exitCode, 0);
    assert.ok(run.elapsed < 900, `result after ${run.elapsed} ms`);
    assert.deepEqual(outputs(run), ['hook done']);
    await new Promise((r) => setTimeout(r, Math.max(0, 1500 - (Date.now() - started))));
    assert.equal(existsSync(path.join(where.charmDir, 'daemon-alive')), true);
    // the context was emptied with the result: a tool run later fails, saying why
    assert.notEqual(read(where.charmDir, 'tool-rc'), '0\n');
    assert.match(read(where.charmDir, 'tool-err'), /^ERROR cannot read hook context: the hook has ended$/m);
    assert.equal(read(where.charmDir, 'tool-out'), '');
  });

  test('old execution dirs are pruned to the newest 20', async () => {
    const where = deploy('tools-charm');
    const ids: string[] = [];
    for (let i = 0; i < 23; i++) {
      const ctx = context(where, { name: 'remove' });
      ids.push(ctx.contextId);
      await runHook(ctx);
    }
    // the supervisor prunes after it reports; give the last one a moment
    await new Promise((r) => setTimeout(r, 200));
    const dirs = readdirSync(path.join(where.unitDir, '.hooks')).filter((n) => n.startsWith('ctx-'));
    assert.ok(dirs.length <= 20, `${dirs.length} dirs left`);
    assert.ok(dirs.includes(ids[ids.length - 1]));
    assert.ok(!dirs.includes(ids[0]));
  });

  test('an empty stdin withdraws the run: no output, no error', () => {
    for (const input of ['', '\n']) {
      const r = spawnSync(PY, ['-S', runner], { input, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, '');
    }
  });

  test('one runner runs several hooks in turn: a context per line, an empty line ends it', async () => {
    const where = deploy('tools-charm');
    const first = context(where, { name: 'install' });
    const second = context(where, {
      name: 'db-relation-departed',
      relation: { id: 1, remoteUnit: 'pg/1', remoteApp: 'pg', departingUnit: 'pg/1' },
    });
    const child = spawn(PY, ['-S', runner], { stdio: ['pipe', 'pipe', 'pipe'] });
    const events: HookEvent[] = [];
    let buf = '';
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => {
      stderr += c.toString();
    });
    // the second context goes only once the first hook's result is out, as the controller sends it
    const gotResults = (n: number) =>
      new Promise<void>((resolve) => {
        const check = () => {
          if (events.filter((e) => e.type === 'result').length >= n) resolve();
        };
        child.stdout!.on('data', check);
        check();
      });
    child.stdout!.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      let k = buf.indexOf('\n');
      while (k >= 0) {
        events.push(HookEvent.parse(JSON.parse(buf.slice(0, k))));
        buf = buf.slice(k + 1);
        k = buf.indexOf('\n');
      }
    });
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    child.stdin!.write(`${JSON.stringify(HookContext.parse(first))}\n`);
    await gotResults(1);
    // the runner waits for more: it has not exited
    assert.equal(child.exitCode, null);
    child.stdin!.write(`${JSON.stringify(HookContext.parse(second))}\n`);
    await gotResults(2);
    // an empty line ends it, with stdin still open (a channel that cannot half-close)
    child.stdin!.write('\n');
    assert.equal(await closed, 0, stderr);
    child.stdin!.end();
    const results = events.filter((e): e is HookResult => e.type === 'result');
    assert.deepEqual(
      results.map((r) => r.exitCode),
      [0, 0],
    );
    // each hook ran once, in its own execution dir, with its own context
    assert.equal(readJson(where.charmDir, 'env-hooks-install.json').JUJU_CONTEXT_ID, first.contextId);
    assert.equal(readJson(where.charmDir, 'env-hooks-db-relation-departed.json').JUJU_CONTEXT_ID, second.contextId);
    for (const c of [first, second]) {
      assert.ok(existsSync(path.join(where.unitDir, '.hooks', c.contextId, 'result.json')), c.contextId);
    }
    // each hook's output came before its own result: one line before the first, one between
    const at = events.findIndex((e) => e.type === 'result');
    const recorded = (list: HookEvent[]) => list.filter((e) => e.type === 'output' && e.line === 'env recorded').length;
    assert.equal(recorded(events.slice(0, at)), 1);
    assert.equal(recorded(events.slice(at + 1)), 1);
  });

  test('bad input is a runner error, not a result', () => {
    const r = spawnSync(PY, ['-S', runner], { input: '{"contextId": "../x"}', encoding: 'utf8' });
    assert.equal(r.status, 2);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /charmflow runner: /);
  });

  for (const [label, spec] of [
    ['ops 3', 'ops>=3'],
    ['ops 2 (YAML relation-set, shutil.which)', 'ops>=2.15,<3'],
  ] as const) {
    test(`a Python ${label} charm runs unmodified`, async (t) => {
      const venv = installOps(spec);
      if (typeof venv !== 'string') {
        t.skip(`${spec} is not installable here: ${venv.reason}`);
        return;
      }
      const where = deploy('ops-charm');
      symlinkSync(venv, path.join(where.charmDir, 'venv'));
      const run = await runHook(context(where, { name: 'config-changed', config: { greeting: 'hi there' } }));
      assert.equal(run.result?.exitCode, 0, run.result?.tail.join('\n'));
      assert.ok(
        run.events.some(
          (e) => e.type === 'status' && e.scope === 'unit' && e.status === 'active' && e.message === 'hi there',
        ),
        JSON.stringify(run.events),
      );
      assert.ok(run.events.some((e) => e.type === 'log' && e.message.includes('greeting is hi there')));

      const rel = await runHook(
        context(where, { name: 'db-relation-changed', relation: { id: 1, remoteUnit: 'pg/0', remoteApp: 'pg' } }),
      );
      assert.equal(rel.result?.exitCode, 0, rel.result?.tail.join('\n'));
      assert.deepEqual(rel.result?.changes.relationSettings, {
        '1': { unit: { seen: '10.0.0.9' }, app: { 'db-host': '10.0.0.9' } },
      });
    });
  }
});

/** `spec` (ops) installed with pip into a cache dir shared by runs, keyed by spec and Python version. */
function installOps(spec: string): string | { reason: string } {
  const ver = spawnSync(PY, ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])'], { encoding: 'utf8' });
  if (ver.status !== 0) return { reason: `${PY} does not run` };
  const key = spec.replace(/[^A-Za-z0-9.]+/g, '_');
  const cache = path.join(tmpdir(), `charmflow-test-${key}-py${ver.stdout.trim()}`);
  if (existsSync(path.join(cache, 'ops', '__init__.py'))) return cache;
  const pip = spawnSync(PY, ['-m', 'pip', '--version'], { encoding: 'utf8' });
  if (pip.status !== 0) return { reason: `no pip for ${PY}` };
  const tmp = `${cache}.tmp-${process.pid}`;
  const r = spawnSync(
    PY,
    ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '--no-compile', '--target', tmp, spec],
    { encoding: 'utf8', timeout: 120_000 },
  );
  if (r.status !== 0) {
    rmSync(tmp, { recursive: true, force: true });
    return { reason: `pip install failed: ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}` };
  }
  try {
    renameSync(tmp, cache);
  } catch {
    rmSync(tmp, { recursive: true, force: true }); // a concurrent run won
  }
  return cache;
}
