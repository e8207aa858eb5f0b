// The guard the embedded dev server runs under, with a stand-in server: each way it
// learns the controller is gone, or is told to stop, ends the server.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { GUARD, python } from '../controller/temporal-server.ts';
import { waitFor } from './helpers/wait.ts';

const py = python();

/** Running: a zombie (ended, not yet reaped by whoever inherited it) is not. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

describe('the dev server guard', { skip: py ? undefined : 'no python3' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'cf-guard-'));
  const children: ChildProcess[] = [];
  after(() => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  /** A guard over `server`, its pid file, and its exit. */
  async function guard(name: string, server: string[]) {
    const pidFile = join(dir, `${name}.pid`);
    const child = spawn(py!, ['-c', GUARD, String(process.pid), pidFile, ...server], {
      stdio: ['pipe', 'ignore', 'inherit'],
      detached: true,
    });
    children.push(child);
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    await waitFor(`${name}'s pid file`, async () => existsSync(pidFile));
    const serverPid = Number(readFileSync(pidFile, 'utf8'));
    assert.ok(alive(serverPid));
    assert.notEqual(serverPid, child.pid);
    return { child, serverPid, exited };
  }

  test('the pipe from the controller reaching EOF ends the server, as when the controller died', async () => {
    const g = await guard('eof', ['/bin/sleep', '600']);
    g.child.stdin!.end();
    assert.equal(await g.exited, 128 + 15, 'the server was ended by SIGTERM; the guard exits with its status');
    assert.ok(!alive(g.serverPid));
  });

  test('SIGTERM to the guard ends the server; one that ignores SIGTERM is killed 5 s later', async () => {
    const stubborn = [py!, '-c', 'import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)'];
    const g = await guard('stubborn', stubborn);
    // let it install its handler
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    g.child.kill('SIGTERM');
    assert.equal(await g.exited, 128 + 9);
    const ms = Date.now() - t0;
    assert.ok(ms >= 4500 && ms < 10_000, `killed after ${ms} ms`);
    assert.ok(!alive(g.serverPid));
  });

  test('a guard killed outright takes its server with it (parent-death signal)', async () => {
    const g = await guard('killed', ['/bin/sleep', '600']);
    g.child.kill('SIGKILL');
    await g.exited;
    await waitFor('the server to end', async () => !alive(g.serverPid), 5000);
  });
});
