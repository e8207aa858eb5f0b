import assert from 'node:assert/strict';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createSubstrates } from '../activities/substrates/index.ts';
import { LocalSubstrate } from '../activities/substrates/local-substrate.ts';
import type { MachineTarget } from '../activities/substrates/substrate.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// A killed process whose parent died too may stay a zombie until init reaps it: that is gone.
function processGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).startsWith('Z');
  } catch {
    return true;
  }
}

async function waitGone(pid: number): Promise<boolean> {
  for (let i = 0; i < 40; i++) {
    if (processGone(pid)) return true;
    await sleep(25);
  }
  return false;
}

describe('local substrate', () => {
  let root: string;
  let target: MachineTarget;
  const local = new LocalSubstrate();

  before(() => {
    root = mkdtempSync('/var/tmp/cf-local-');
    target = { key: 'model/0', kind: 'local', address: '127.0.0.5', rootDir: join(root, 'machine-0') };
  });

  after(() => {
    rmSync(root, { recursive: true, force: true });
  });

  test('createSubstrates keys substrates by machine kind', async () => {
    const substrates = createSubstrates();
    assert.equal(substrates.local.kind, 'local');
    assert.equal(substrates.ssh.kind, 'ssh');
    await substrates.ssh.close();
  });

  test('probe answers local, the machine address and what is missing', async () => {
    const probe = await local.probe(target);
    assert.equal(probe.hostKeyFingerprint, 'local');
    assert.equal(probe.address, '127.0.0.5');
    assert.equal(probe.hostname, hostname());
    assert.ok(Array.isArray(probe.missing));
    assert.ok(!probe.missing.includes('sh'));
  });

  test('exec streams output live, passes stdin and returns exit codes', async () => {
    const started = Date.now();
    const seen: string[] = [];
    let firstAt = -1;
    const result = await local.exec(target, {
      command: 'echo one; sleep 0.4; echo two >&2; exit 4',
      onStdout: (c) => {
        if (firstAt < 0) firstAt = Date.now() - started;
        seen.push(`out:${c}`);
      },
      onStderr: (c) => seen.push(`err:${c}`),
    });
    assert.deepEqual(result, { code: 4, stdout: 'one\n', stderr: 'two\n' });
    assert.deepEqual(seen, ['out:one\n', 'err:two\n']);
    assert.ok(firstAt < Date.now() - started - 300, 'first chunk was not delivered live');

    assert.deepEqual(await local.exec(target, { command: 'cat', stdin: Buffer.from('bytes\n') }), {
      code: 0,
      stdout: 'bytes\n',
      stderr: '',
    });
    assert.equal((await local.exec(target, { command: 'wc -c' })).stdout.trim(), '0');
    assert.equal((await local.exec(target, { command: 'kill -9 $$' })).code, null);
  });

  test("the command gets a login environment, not the controller's", async () => {
    process.env.CHARMFLOW_TEST_SECRET = 'do-not-leak';
    try {
      const r = await local.exec(target, { command: 'echo "$' + '{CHARMFLOW_TEST_SECRET:-unset}|$HOME|$PATH"' });
      const [secret, home, path] = r.stdout.trim().split('|');
      assert.equal(secret, 'unset');
      assert.equal(home, homedir());
      assert.match(path, /\/usr\/bin/);
    } finally {
      delete process.env.CHARMFLOW_TEST_SECRET;
    }
  });

  test('the command starts in the machine directory when it exists, else in home', async () => {
    const missing: MachineTarget = { ...target, rootDir: join(root, 'not-yet') };
    assert.equal((await local.exec(missing, { command: 'pwd' })).stdout, `${homedir()}\n`);
    await local.putFile(target, join(target.rootDir, 'marker'), 'x');
    assert.equal((await local.exec(target, { command: 'pwd' })).stdout, `${target.rootDir}\n`);
  });

  test('abort kills the whole process group', async () => {
    const ac = new AbortController();
    const pidFile = join(root, 'bg.pid');
    const t0 = Date.now();
    const result = await local.exec(target, {
      command: `sleep 300 & echo $! > ${pidFile}; echo started; sleep 300`,
      signal: ac.signal,
      onStdout: () => ac.abort(),
    });
    assert.deepEqual(result, { code: null, stdout: 'started\n', stderr: '' });
    assert.ok(Date.now() - t0 < 3_000);
    assert.ok(await waitGone(Number(readFileSync(pidFile, 'utf8'))), 'background child survived the abort');

    const pre = new AbortController();
    pre.abort();
    const never = join(root, 'never');
    assert.deepEqual(await local.exec(target, { command: `touch ${never}`, signal: pre.signal }), {
      code: null,
      stdout: '',
      stderr: '',
    });
    assert.throws(() => statSync(never));
  });

  test('timeout kills the whole process group', async () => {
    const pidFile = join(root, 'bg2.pid');
    const t0 = Date.now();
    const result = await local.exec(target, {
      command: `sleep 300 & echo $! > ${pidFile}; echo before; sleep 300`,
      timeoutMs: 300,
    });
    assert.deepEqual(result, { code: null, stdout: 'before\n', stderr: '' });
    assert.ok(Date.now() - t0 < 3_000);
    assert.ok(await waitGone(Number(readFileSync(pidFile, 'utf8'))), 'background child survived the timeout');
  });

  test('a throwing output callback stops the command and rejects', async () => {
    const pidFile = join(root, 'cb.pid');
    await assert.rejects(
      local.exec(target, {
        command: `echo $$ > ${pidFile}; echo hi; sleep 300`,
        onStdout: () => {
          throw new Error('callback bug');
        },
      }),
      /callback bug/,
    );
    assert.ok(await waitGone(Number(readFileSync(pidFile, 'utf8'))));
  });

  test('putFile is atomic, creates parents and sets modes', async () => {
    const path = join(target.rootDir, 'a', 'b', 'config.json');
    await local.putFile(target, path, '{"x":1}', 0o600);
    assert.equal(readFileSync(path, 'utf8'), '{"x":1}');
    assert.equal(statSync(path).mode & 0o777, 0o600);
    await local.putFile(target, path, Buffer.from([0, 1, 2, 255]));
    assert.deepEqual([...readFileSync(path)], [0, 1, 2, 255]);
    assert.equal(statSync(path).mode & 0o777, 0o644);
    await local.putFile(target, join(target.rootDir, 'bin', 'tool'), '#!/bin/sh\necho tool\n', 0o755);
    assert.equal((await local.exec(target, { command: './bin/tool' })).stdout, 'tool\n');

    // A reader never sees a torn file while it is being replaced.
    const big = join(target.rootDir, 'big');
    const a = Buffer.alloc(2 * 1024 * 1024, 'a');
    const b = Buffer.alloc(2 * 1024 * 1024, 'b');
    await local.putFile(target, big, a);
    const reader = local.exec(target, {
      // Bytes that are not 'b': all of them (file a) or none (file b), never a mix or a short file.
      command: `for i in $(seq 40); do tr -d b < ${big} | wc -c; done`,
    });
    for (let i = 0; i < 6; i++) await local.putFile(target, big, i % 2 ? a : b);
    for (const n of (await reader).stdout.trim().split('\n')) assert.ok(n === '0' || n === String(a.length), n);
    assert.deepEqual(readdirSync(join(target.rootDir, 'a', 'b')), ['config.json']);

    await assert.rejects(local.putFile(target, join(path, 'below-a-file'), 'x'), /putFile/);
    assert.deepEqual(readdirSync(join(target.rootDir, 'a', 'b')), ['config.json']);
    await assert.rejects(local.putFile(target, 'relative/path', 'x'), /absolute/);
  });

  test('release and close are harmless', async () => {
    await local.release(target);
    await local.close();
    assert.equal((await local.exec(target, { command: 'echo still' })).stdout, 'still\n');
  });
});
