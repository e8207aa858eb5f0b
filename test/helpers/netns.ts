// What the test fleet (test/fleet.ts) and the Kubernetes test double's pod sandboxes
// (test/helpers/kube-apiserver/pod-sandbox.ts) share: running ip and friends, claim
// directories that name their owner process (so a later run removes what a crashed one
// left), and listing, emptying and unblocking network namespaces and links.
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export function run(cmd: string, args: string[]): string {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${(e.stderr || e.message).trim()}`);
  }
}

export function tryRun(cmd: string, args: string[]): string | undefined {
  try {
    return run(cmd, args);
  } catch {
    return undefined;
  }
}

export function has(cmd: string): boolean {
  return tryRun('sh', ['-c', `command -v ${cmd}`]) !== undefined;
}

/** Process start time in clock ticks: with the pid it names one process for good, even after pid reuse. */
export function startTimeOf(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** Who holds a claim directory: `owner.json` in it. */
export interface Owner {
  pid: number;
  start: string;
}

export function readOwner<T extends Owner>(dir: string): T | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, 'owner.json'), 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** True while the claim's owner runs (or the claim is being written right now). */
export function ownerAlive(dir: string): boolean {
  const owner = readOwner(dir);
  if (!owner) {
    // being created right now, or left half-made by a crash long ago
    try {
      return Date.now() - statSync(dir).mtimeMs < 60_000;
    } catch {
      return false;
    }
  }
  return startTimeOf(owner.pid) === owner.start;
}

/**
 * Claims the first free number k in 1..250 (from a start that depends on the pid, so
 * concurrent claimants rarely race) by making `<base>/<k>` (atomic), skipping `used`.
 * The directory then names this process, with `extra` beside.
 */
export function claimNumber(
  base: string,
  used: Set<number>,
  extra: object = {},
): { k: number; dir: string } | undefined {
  const start = process.pid % 250;
  for (let j = 0; j < 250; j++) {
    const k = 1 + ((start + j) % 250);
    if (used.has(k)) continue;
    const dir = join(base, String(k));
    try {
      mkdirSync(dir); // atomic: the claim
    } catch {
      continue;
    }
    const owner: Owner = { pid: process.pid, start: startTimeOf(process.pid) ?? '' };
    writeFileSync(join(dir, 'owner.json'), JSON.stringify({ ...owner, ...extra }));
    return { k, dir };
  }
  return undefined;
}

/** Numbers n of 10.<second>.<n>.0/24 networks already in use on this machine. */
export function subnetsInUse(second: number): Set<number> {
  const used = new Set<number>();
  const text = (tryRun('ip', ['-o', '-4', 'addr', 'show']) ?? '') + (tryRun('ip', ['-4', 'route', 'show']) ?? '');
  for (const m of text.matchAll(new RegExp(`\\b10\\.${second}\\.(\\d+)\\.`, 'g'))) used.add(Number(m[1]));
  return used;
}

export function netnsList(): string[] {
  return (tryRun('ip', ['netns', 'list']) ?? '')
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter(Boolean);
}

export function linkList(): string[] {
  return (tryRun('ip', ['-o', 'link', 'show']) ?? '')
    .split('\n')
    .map((l) => l.split(': ')[1]?.split('@')[0])
    .filter((n): n is string => Boolean(n));
}

/** Kills every process in the named network namespace. */
export function killNetns(ns: string): void {
  for (let attempt = 0; attempt < 50; attempt++) {
    const pids = (tryRun('ip', ['netns', 'pids', ns]) ?? '').split('\n').filter(Boolean).map(Number);
    if (pids.length === 0) return;
    for (const pid of pids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    execFileSync('sleep', ['0.02']);
  }
}

/**
 * Most machines have no firewall rules at all. Where iptables is present (Docker hosts
 * set FORWARD to DROP, and br_netfilter makes bridged traffic pass FORWARD), lets the
 * bridge's own traffic through and nothing else; the rules carry `comment`.
 */
export function allowBridge(bridge: string, comment: string, action: 'insert' | 'delete'): void {
  if (!has('iptables')) return;
  const rules = [
    ['INPUT', '-i', bridge],
    ['OUTPUT', '-o', bridge],
    ['FORWARD', '-i', bridge, '-o', bridge],
  ];
  for (const [chain, ...match] of rules) {
    const spec = [chain, ...match, '-m', 'comment', '--comment', comment, '-j', 'ACCEPT'];
    if (action === 'insert') {
      tryRun('iptables', ['-w', '-I', ...spec]);
    } else {
      while (tryRun('iptables', ['-w', '-D', ...spec]) !== undefined) {
        // delete every copy
      }
    }
  }
}

const atExit = new Set<() => void>();
let exitHooksInstalled = false;

/**
 * Runs `cleanup` when this process exits or is ended by SIGINT, SIGTERM or SIGHUP
 * (then the signal's own effect follows), unless `cancel()` came first.
 */
export function cleanUpAtExit(cleanup: () => void): { cancel(): void } {
  atExit.add(cleanup);
  if (!exitHooksInstalled) {
    exitHooksInstalled = true;
    process.on('exit', () => {
      for (const f of atExit) f();
    });
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      const onSignal = () => {
        for (const f of atExit) f();
        process.removeListener(sig, onSignal);
        process.kill(process.pid, sig);
      };
      process.on(sig, onSignal);
    }
  }
  return { cancel: () => atExit.delete(cleanup) };
}
