import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { LocalSubstrate } from '../activities/substrates/local-substrate.ts';
import { HostKeyNotPinnedError } from '../activities/substrates/ssh-pool.ts';
import { SshSubstrate } from '../activities/substrates/ssh-substrate.ts';
import {
  type ExecRequest,
  HostKeyMismatchError,
  type MachineTarget,
  MachineUnreachableError,
  type Substrate,
} from '../activities/substrates/substrate.ts';
import { createFleet, type Fleet, fleetUnsupportedReason } from './fleet.ts';
import { waitFor } from './helpers/wait.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha256 = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
// A killed process whose parent died too may stay a zombie until init reaps it: that is gone.
const processState = `s=$(cut -d' ' -f3 "/proc/$(cat /tmp/bg.pid)/stat" 2>/dev/null); [ -z "$s" ] || [ "$s" = Z ] && echo gone || echo alive`;

// Short keepalives so a dead link is noticed within a few seconds.
const poolOptions = { keepaliveIntervalMs: 1_000, keepaliveCountMax: 2, readyTimeoutMs: 3_000 };

describe('ssh substrate on a test fleet', { skip: fleetUnsupportedReason() }, () => {
  let fleet: Fleet;
  let ssh: SshSubstrate;

  before(async () => {
    fleet = await createFleet(3);
    ssh = new SshSubstrate(poolOptions);
  });

  after(async () => {
    await ssh?.close();
    await fleet?.destroy();
  });

  test('probe learns the host key ssh-keygen prints, the hostname and the missing commands', async () => {
    for (let i = 0; i < fleet.hosts.length; i++) {
      const host = fleet.hosts[i];
      const expected = execFileSync('ssh-keygen', ['-lf', host.hostKeyPubPath], { encoding: 'utf8' }).split(' ')[1];
      const probe = await ssh.probe(fleet.target(i, { pinned: false, key: `probe/${i}` }));
      assert.equal(probe.hostKeyFingerprint, expected);
      assert.equal(probe.hostname, host.hostname);
      assert.equal(probe.address, host.address);
      // The hosts share this machine's binaries.
      const missingHere = ['python3', 'tar', 'sh'].filter((c) => {
        try {
          execFileSync('sh', ['-c', `command -v ${c}`]);
          return false;
        } catch {
          return true;
        }
      });
      assert.deepEqual(probe.missing, missingHere);
    }
  });

  test('exec refuses a machine whose host key is not pinned', async () => {
    await assert.rejects(ssh.exec(fleet.target(0, { pinned: false }), { command: 'true' }), HostKeyNotPinnedError);
  });

  test('exec streams output live, passes stdin and returns exit codes', async () => {
    const t = fleet.target(0);
    const started = Date.now();
    const seen: Array<{ at: number; stream: string; text: string }> = [];
    const result = await ssh.exec(t, {
      command: 'echo one; sleep 0.4; echo two >&2; sleep 0.4; echo three; exit 3',
      onStdout: (c) => seen.push({ at: Date.now() - started, stream: 'out', text: c.toString() }),
      onStderr: (c) => seen.push({ at: Date.now() - started, stream: 'err', text: c.toString() }),
    });
    const elapsed = Date.now() - started;
    assert.deepEqual(result, { code: 3, stdout: 'one\nthree\n', stderr: 'two\n' });
    assert.deepEqual(
      seen.map((s) => `${s.stream}:${s.text}`),
      ['out:one\n', 'err:two\n', 'out:three\n'],
    );
    assert.ok(seen[0].at < elapsed - 600, `first chunk at ${seen[0].at} ms of ${elapsed} ms: not live`);

    assert.deepEqual(await ssh.exec(t, { command: 'cat', stdin: 'hello\n' }), {
      code: 0,
      stdout: 'hello\n',
      stderr: '',
    });
    // No stdin: the command sees end of file at once instead of hanging.
    assert.equal((await ssh.exec(t, { command: 'wc -c' })).stdout.trim(), '0');
    const big = randomBytes(3 * 1024 * 1024);
    assert.equal((await ssh.exec(t, { command: 'sha256sum', stdin: big })).stdout.split(' ')[0], sha256(big));
    assert.equal((await ssh.exec(t, { command: 'exit 0' })).code, 0);
    assert.equal((await ssh.exec(t, { command: 'kill -9 $$' })).code, null);
    assert.equal((await ssh.exec(t, { command: 'pwd' })).stdout, '/var/lib/charmflow\n');
  });

  test('abort and timeout kill the remote command', async () => {
    const t = fleet.target(0);
    const ac = new AbortController();
    const running = ssh.exec(t, {
      command: 'sleep 300 & echo $! > /tmp/bg.pid; echo started; sleep 300',
      signal: ac.signal,
      onStdout: () => ac.abort(),
    });
    const started = Date.now();
    const result = await running;
    assert.equal(result.code, null);
    assert.equal(result.stdout, 'started\n');
    assert.ok(Date.now() - started < 3_000);
    // The whole process group went, the background sleep included.
    let alive = '';
    for (let i = 0; i < 20; i++) {
      alive = (await ssh.exec(t, { command: processState })).stdout;
      if (alive === 'gone\n') break;
      await sleep(50);
    }
    assert.equal(alive, 'gone\n');

    const t0 = Date.now();
    const timedOut = await ssh.exec(t, { command: 'echo before; sleep 30', timeoutMs: 300 });
    assert.deepEqual(timedOut, { code: null, stdout: 'before\n', stderr: '' });
    assert.ok(Date.now() - t0 < 3_000);

    const pre = new AbortController();
    pre.abort();
    assert.deepEqual(await ssh.exec(t, { command: 'touch /tmp/never', signal: pre.signal }), {
      code: null,
      stdout: '',
      stderr: '',
    });
    assert.equal((await ssh.exec(t, { command: 'test -e /tmp/never' })).code, 1);
  });

  test('50 parallel execs share one handshake and never exceed the channel bound', async () => {
    const pooled = new SshSubstrate({ ...poolOptions, maxChannelsPerHost: 8 });
    try {
      const t = fleet.target(1, { key: 'parallel/1' });
      // Each command counts, on the host itself, the commands running beside it.
      const command = 'd=/tmp/concurrency; mkdir -p $d; touch $d/$$; ls $d | wc -l; sleep 0.2; rm $d/$$';
      const busy = () => pooled.stats().byKey['parallel/1']?.active ?? 0;
      assert.equal(busy(), 0);
      const running = Promise.all(Array.from({ length: 50 }, () => pooled.exec(t, { command })));
      // all channels busy, the other commands waiting
      await waitFor('the channels to fill', async () => busy() === 8);
      const results = await running;
      assert.equal(busy(), 0);
      const seenOnHost = Math.max(...results.map((r) => Number(r.stdout.trim())));
      assert.ok(results.every((r) => r.code === 0));
      assert.ok(seenOnHost <= 8, `${seenOnHost} commands ran at once on the host`);
      const stats = pooled.stats();
      assert.equal(stats.byKey['parallel/1'].handshakes, 1);
      assert.equal(stats.byKey['parallel/1'].execs, 50);
      assert.equal(stats.byKey['parallel/1'].peakActive, 8);
      assert.equal(stats.byKey['parallel/1'].active, 0);
      assert.equal(stats.total.open, 1);
    } finally {
      await pooled.close();
    }
  });

  test('exec overhead on an open connection is a few milliseconds', async (t) => {
    const target = fleet.target(1);
    await ssh.exec(target, { command: 'true' });
    const times: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t0 = process.hrtime.bigint();
      await ssh.exec(target, { command: 'true' });
      times.push(Number(process.hrtime.bigint() - t0) / 1e6);
    }
    times.sort((a, b) => a - b);
    const median = times[100];
    const p99 = times[197];
    t.diagnostic(`exec overhead over 200 'true' execs: median ${median.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`);
    assert.ok(median < 25, `median ${median} ms`);
  });

  test('a host cut off fails in bounded time while the others keep working', async () => {
    const cut = fleet.target(1);
    assert.equal((await ssh.exec(cut, { command: 'true' })).code, 0);
    await fleet.linkDown(1);
    try {
      const t0 = Date.now();
      // Either the channel never opens (timeout before start) or keepalive declares the
      // connection dead and the reconnect times out: both are MachineUnreachableError.
      await assert.rejects(ssh.exec(cut, { command: 'true', timeoutMs: 5_000 }), MachineUnreachableError);
      assert.ok(Date.now() - t0 < 9_000, `took ${Date.now() - t0} ms`);

      const others = await Promise.all([0, 2].map((i) => ssh.exec(fleet.target(i), { command: 'uname -n' })));
      assert.deepEqual(
        others.map((r) => r.stdout.trim()),
        [fleet.hosts[0].hostname, fleet.hosts[2].hostname],
      );

      // A new connection attempt gives up after readyTimeout.
      const t1 = Date.now();
      await assert.rejects(
        ssh.exec(fleet.target(1, { key: 'cut/fresh' }), { command: 'true' }),
        (err: Error) => err instanceof MachineUnreachableError && /handshake/.test(err.message),
      );
      assert.ok(Date.now() - t1 < 5_000);
    } finally {
      await fleet.linkUp(1);
    }
    assert.equal((await ssh.exec(cut, { command: 'true', timeoutMs: 10_000 })).code, 0);
  });

  test('a killed sshd is reported unreachable; once restarted the next exec reconnects', async () => {
    const t = fleet.target(2);
    const handshakes = () => ssh.stats().byKey[t.key]?.handshakes ?? 0;
    assert.equal((await ssh.exec(t, { command: 'true' })).code, 0);
    const before = handshakes();

    await fleet.killHost(2);
    await assert.rejects(
      ssh.exec(t, { command: 'true' }),
      (err: Error) => err instanceof MachineUnreachableError && /refused/.test(err.message),
    );
    await fleet.restartHost(2);
    assert.equal((await ssh.exec(t, { command: 'true' })).code, 0);
    assert.equal(handshakes(), before + 1);

    // Dropped and back before the next exec: reconnects transparently, no error seen.
    await fleet.restartHost(2);
    assert.equal((await ssh.exec(t, { command: 'echo ok' })).stdout, 'ok\n');
    assert.equal(handshakes(), before + 2);
  });

  test('a rejected key is reported unreachable without quoting the key', async () => {
    const keyPath = join(fleet.dir, 'stranger_key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', keyPath]);
    const privateKey = readFileSync(keyPath, 'utf8');
    await assert.rejects(
      ssh.exec({ ...fleet.target(0), key: 'stranger/0', privateKey }, { command: 'true' }),
      (err: Error) => {
        assert.ok(err instanceof MachineUnreachableError);
        assert.match(err.message, /authentication failed/);
        assert.ok(!err.message.includes(privateKey.split('\n')[1]));
        return true;
      },
    );
  });

  test('a rotated host key is refused before logging in; other hosts are unaffected', async () => {
    const t = fleet.target(0);
    assert.equal((await ssh.exec(t, { command: 'true' })).code, 0);
    const oldKey = t.hostKeyFingerprint!;
    const logBefore = readFileSync(fleet.hosts[0].logPath, 'utf8').length;

    const newKey = await fleet.rotateHostKey(0);
    assert.notEqual(newKey, oldKey);
    await assert.rejects(ssh.exec(t, { command: 'true' }), (err: Error) => {
      assert.ok(err instanceof HostKeyMismatchError);
      assert.equal(err.expected, oldKey);
      assert.equal(err.actual, newKey);
      return true;
    });
    assert.doesNotMatch(readFileSync(fleet.hosts[0].logPath, 'utf8').slice(logBefore), /Accepted publickey/);
    assert.equal((await ssh.exec(fleet.target(1), { command: 'true' })).code, 0);

    // Re-pinned after a fresh probe, the machine works again.
    const probe = await ssh.probe(fleet.target(0, { pinned: false }));
    assert.equal(probe.hostKeyFingerprint, newKey);
    assert.equal((await ssh.exec(fleet.target(0), { command: 'true' })).code, 0);
  });

  test('putFile writes atomically with the given mode', async () => {
    const t = fleet.target(2);
    const path = '/var/lib/charmflow/put/deep/file.bin';
    const a = Buffer.alloc(1024 * 1024, 'a');
    const b = randomBytes(1024 * 1024);
    await ssh.putFile(t, path, a, 0o600);
    const stat = await ssh.exec(t, { command: `stat -c '%a %s' ${path}; sha256sum ${path}` });
    assert.equal(stat.stdout.split('\n')[0], `600 ${a.length}`);
    assert.equal(stat.stdout.split('\n')[1].split(' ')[0], sha256(a));

    // A reader never sees a partial file while writers replace it.
    const reader = ssh.exec(t, { command: `for i in $(seq 60); do sha256sum ${path}; done` });
    for (let i = 0; i < 6; i++) await ssh.putFile(t, path, i % 2 ? a : b, 0o640);
    const hashes = new Set(
      (await reader).stdout
        .trim()
        .split('\n')
        .map((l) => l.split(' ')[0]),
    );
    for (const h of hashes) assert.ok(h === sha256(a) || h === sha256(b), 'reader saw a torn file');

    assert.equal(
      (await ssh.exec(t, { command: `stat -c %a ${path}; ls -A $(dirname ${path})` })).stdout,
      '640\nfile.bin\n',
    );
    await ssh.putFile(t, '/var/lib/charmflow/put/text', 'héllo\n');
    assert.equal((await ssh.exec(t, { command: 'stat -c %a /var/lib/charmflow/put/text' })).stdout, '644\n');
    // The file is readable by this machine's owner only through the fleet's backing dir.
    assert.equal(readFileSync(join(fleet.hosts[2].rootFs, 'put/text'), 'utf8'), 'héllo\n');

    await assert.rejects(ssh.putFile(t, `${path}/below-a-file`, 'x'), /putFile/);
    assert.equal((await ssh.exec(t, { command: `ls -A $(dirname ${path})` })).stdout, 'file.bin\n');
    await assert.rejects(ssh.putFile(t, 'relative/path', 'x'), /absolute/);
  });

  test('each host has its own /var/lib/charmflow and /tmp', async () => {
    await Promise.all(
      fleet.hosts.map((h, i) => ssh.putFile(fleet.target(i), '/var/lib/charmflow/iso/who', `${h.name}\n`)),
    );
    await Promise.all(fleet.hosts.map((h, i) => ssh.exec(fleet.target(i), { command: `echo ${h.name} > /tmp/who` })));
    for (let i = 0; i < fleet.hosts.length; i++) {
      const r = await ssh.exec(fleet.target(i), { command: 'cat /var/lib/charmflow/iso/who /tmp/who' });
      assert.equal(r.stdout, `${fleet.hosts[i].name}\n${fleet.hosts[i].name}\n`);
      assert.equal(readFileSync(join(fleet.hosts[i].rootFs, 'iso/who'), 'utf8'), `${fleet.hosts[i].name}\n`);
    }
  });

  test('stdin may follow the start: the command runs at once and reads it when it comes', async () => {
    const localRoot = mkdtempSync('/var/tmp/cf-local-late-');
    const local = new LocalSubstrate();
    const targets: Array<[Substrate, MachineTarget]> = [
      [ssh, fleet.target(1)],
      [local, { key: 'late/local', kind: 'local', address: '127.0.0.2', rootDir: localRoot }],
    ];
    try {
      for (const [substrate, target] of targets) {
        let give: (v: string | undefined) => void = () => {};
        const input = new Promise<string | undefined>((r) => {
          give = r;
        });
        const events: string[] = [];
        const run = substrate.exec(target, {
          command: 'echo started; cat',
          stdin: input,
          onStarted: () => events.push('started'),
          onStdout: (c) => events.push(`out:${c}`),
        });
        // the command is running and printing before its input exists
        const deadline = Date.now() + 10_000;
        while (!events.includes('out:started\n') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
        assert.deepEqual(events, ['started', 'out:started\n'], target.kind);
        give('late\n');
        assert.deepEqual(await run, { code: 0, stdout: 'started\nlate\n', stderr: '' }, target.kind);

        // nothing (or a failed promise) closes stdin empty
        const none = await substrate.exec(target, { command: 'wc -c', stdin: Promise.resolve(undefined) });
        assert.equal(none.stdout.trim(), '0', target.kind);
        const failed = await substrate.exec(target, { command: 'wc -c', stdin: Promise.reject(new Error('no')) });
        assert.equal(failed.stdout.trim(), '0', target.kind);
      }
    } finally {
      rmSync(localRoot, { recursive: true, force: true });
    }
  });

  test('exec over ssh and on a local machine answer alike', async () => {
    const localRoot = mkdtempSync('/var/tmp/cf-local-parity-');
    const local = new LocalSubstrate();
    const localTarget: MachineTarget = { key: 'parity/local', kind: 'local', address: '127.0.0.2', rootDir: localRoot };
    const sshTarget = fleet.target(1);
    try {
      const cases: ExecRequest[] = [
        { command: 'echo out; echo err >&2; exit 7' },
        { command: 'cat; echo', stdin: Buffer.from([0x68, 0x69, 0x0a, 0xc3, 0xa9]) },
        { command: 'wc -c' },
        { command: 'kill -TERM $$' },
        { command: 'echo $0 "$HOME" "$USER" "$LOGNAME"; [ -n "$PATH" ] && echo path' },
        { command: 'echo partial; sleep 10', timeoutMs: 200 },
        { command: 'exec 0<&-; echo closed-stdin', stdin: 'ignored' },
        { command: 'pwd' },
      ];
      for (const req of cases) {
        const [viaSsh, viaLocal] = await Promise.all([ssh.exec(sshTarget, req), local.exec(localTarget, req)]);
        if (req.command === 'pwd') {
          assert.equal(viaSsh.stdout, `${sshTarget.rootDir}\n`);
          assert.equal(viaLocal.stdout, `${localRoot}\n`);
        } else {
          assert.deepEqual(viaLocal, viaSsh, req.command);
        }
      }
    } finally {
      rmSync(localRoot, { recursive: true, force: true });
    }
  });
});

describe('test fleet', { skip: fleetUnsupportedReason() }, () => {
  test('what a crashed run left behind is removed by the next fleet', async () => {
    const script = [
      "import { createFleet } from './test/fleet.ts';",
      'const f = await createFleet(1);',
      "console.log('ID ' + f.id);",
      'setInterval(() => {}, 1000);',
    ].join(' ');
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      cwd: fileURLToPath(new URL('..', import.meta.url)),
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let output = '';
    for await (const chunk of child.stdout) {
      output += chunk;
      if (/ID \d+\n/.test(output)) break;
    }
    const id = Number(/ID (\d+)/.exec(output)?.[1]);
    child.kill('SIGKILL');
    await once(child, 'exit');
    const leftovers = () =>
      execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).includes(`charmflow-fleet-${id}-0`) ||
      execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' }).includes(`cfbr${id}:`);
    assert.ok(leftovers(), 'the crashed run should have left its namespace behind');

    const next = await createFleet(1);
    try {
      assert.ok(!leftovers(), `fleet ${id} was not cleaned up`);
    } finally {
      await next.destroy();
    }
  });
});
