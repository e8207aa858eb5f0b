// Per-pod sandboxes on this host: what a container runtime gives a pod, made from Linux
// namespaces. Each pod has a network namespace (a veth on a bridge; its address is the pod IP),
// and one long-lived "pause" process that is pid 1 of the pod's own pid namespace, with a
// private mount namespace (the pod's own /var/lib/charmflow, /tmp, /root and /etc/hosts bound
// over the host's) and its own hostname. Exec enters those namespaces with nsenter; killing the
// pause process kills every process of the pod, background workloads included.
//
// Everything is named after a claim number k (netns cfkube-<k>-<n>, veths cfk<k>p<n>, bridge
// cfkbr<k>), claimed by a directory /var/tmp/charmflow-kube-apiserver/<k> that holds the owner's
// pid and start time, so concurrent servers never collide and a later run removes what a
// crashed one left behind.

import { execFile, spawn } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  allowBridge,
  claimNumber,
  cleanUpAtExit,
  has,
  killNetns,
  linkList,
  netnsList,
  type Owner,
  ownerAlive,
  readOwner,
  run,
  subnetsInUse,
  tryRun,
} from '../netns.ts';

const execFileAsync = promisify(execFile);

export const CHARM_ROOT = '/var/lib/charmflow';
const CLAIM_BASE = '/var/tmp/charmflow-kube-apiserver';
const NS_RE = /^cfkube-(\d+)-(\d+)$/;
const LINK_RE = /^(?:cfkbr(\d+)|cfk(\d+)p\d+)$/;
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

// The pause process is pid 1 of the pod: like Kubernetes' pause container it reaps the orphans
// re-parented to it (a nohup'd workload that exits), so none lingers as a zombie that pgrep
// or ps would still show.
const PAUSE_PY = [
  'import os, signal',
  'def reap(*_):',
  '    while True:',
  '        try:',
  '            pid, _ = os.waitpid(-1, os.WNOHANG)',
  '        except ChildProcessError:',
  '            return',
  '        if pid == 0:',
  '            return',
  'signal.signal(signal.SIGCHLD, reap)',
  'reap()',
  'while True:',
  '    signal.pause()',
].join('\n');

function pauseCommand(): string {
  const python = tryRun('sh', ['-c', `PATH=${DEFAULT_PATH} command -v python3`])?.trim();
  return python ? `exec ${python} -c "$6"` : 'exec sleep infinity';
}

export interface PodNetworkOptions {
  bridge: string;
  prefix: string;
  firstHost: number;
}

export interface Sandbox {
  readonly seq: number;
  readonly podUid: string;
  readonly netns: string;
  readonly veth: string;
  readonly ip: string;
  readonly dir: string;
  pausePid: number;
  /** The pause process's network namespace (its /proc/<pid>/ns/net link), to find the pod's processes. */
  netnsId: string;
  /** The pause process's pid namespace: the pod's processes proper (exec'd commands and their children). */
  pidnsId: string;
  dead: boolean;
}

export interface SandboxSpec {
  podUid: string;
  namespace: string;
  name: string;
  hostname: string;
  /** spec.subdomain: the pod's FQDN is <hostname>.<subdomain>.<namespace>.svc.cluster.local. */
  subdomain?: string;
}

async function runAsync(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileAsync(cmd, args, { encoding: 'utf8' });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${(e.stderr || e.message).trim()}`);
  }
}

/** Why pod sandboxes cannot be made here, or undefined when they can. Tests skip with this reason. */
export function sandboxUnsupportedReason(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux namespaces';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, bind mounts)';
  for (const cmd of ['ip', 'unshare', 'nsenter', 'mount', 'openssl']) {
    if (!has(cmd)) return `${cmd} missing (apt-get install iproute2 util-linux openssl)`;
  }
  return undefined;
}

interface Claim extends Owner {
  /** Where the claimant keeps its pods' directories, to remove them after a crash. */
  podsDir: string;
}

function pidsInNamespace(kind: 'net' | 'pid', nsId: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readlinkSync(`/proc/${entry}/ns/${kind}`) === nsId) out.push(Number(entry));
    } catch {
      // gone, or a kernel thread
    }
  }
  return out;
}

function teardownClaim(k: number, ownBridge: boolean): void {
  for (const ns of netnsList()) {
    const m = NS_RE.exec(ns);
    if (m && Number(m[1]) === k) {
      killNetns(ns);
      tryRun('ip', ['netns', 'delete', ns]);
    }
  }
  for (const link of linkList()) {
    const m = LINK_RE.exec(link);
    if (!m) continue;
    if (m[1] !== undefined && (!ownBridge || Number(m[1]) !== k)) continue;
    if (Number(m[1] ?? m[2]) === k) tryRun('ip', ['link', 'delete', link]);
  }
  firewall(`cfkbr${k}`, k, 'delete');
}

function reapStale(): void {
  const live = new Set<number>();
  for (const entry of readdirSync(CLAIM_BASE)) {
    if (!/^\d+$/.test(entry)) continue;
    const dir = join(CLAIM_BASE, entry);
    if (ownerAlive(dir)) {
      live.add(Number(entry));
      continue;
    }
    const claim = readOwner<Claim>(dir);
    teardownClaim(Number(entry), true);
    if (claim?.podsDir && existsSync(claim.podsDir)) rmSync(claim.podsDir, { recursive: true, force: true });
    rmSync(dir, { recursive: true, force: true });
  }
  for (const ns of netnsList()) {
    const m = NS_RE.exec(ns);
    if (m && !live.has(Number(m[1]))) teardownClaim(Number(m[1]), true);
  }
  for (const link of linkList()) {
    const m = LINK_RE.exec(link);
    if (m && !live.has(Number(m[1] ?? m[2]))) teardownClaim(Number(m[1] ?? m[2]), true);
  }
}

function claim(podsDir: string): { k: number; dir: string } {
  mkdirSync(CLAIM_BASE, { recursive: true, mode: 0o755 });
  reapStale();
  const claimed = claimNumber(CLAIM_BASE, subnetsInUse(232), { podsDir });
  if (!claimed) throw new Error('no free claim number (10.232.<k>.0/24) for a Kubernetes API server test double');
  return claimed;
}

function firewall(bridge: string, k: number, action: 'insert' | 'delete'): void {
  allowBridge(bridge, `charmflow-kube-${k}`, action);
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class SandboxHost {
  readonly bridge: string;
  /** The bridge's address: the node's IP as pods see it, and their default gateway. */
  readonly gateway: string | undefined;
  private readonly prefix: string;
  private readonly firstHost: number;
  private readonly ownBridge: boolean;
  private readonly sandboxes = new Map<string, Sandbox>();
  private readonly usedIps = new Set<string>();
  private nextHost: number;
  private seq = 0;
  private stopped = false;
  private readonly pause = pauseCommand();
  private readonly atExit: { cancel(): void };

  private constructor(
    readonly k: number,
    private readonly claimDir: string,
    readonly podsDir: string,
    network: PodNetworkOptions | undefined,
  ) {
    this.ownBridge = !network;
    this.bridge = network?.bridge ?? `cfkbr${k}`;
    this.prefix = network?.prefix ?? `10.232.${k}.`;
    this.firstHost = network?.firstHost ?? 10;
    this.nextHost = this.firstHost;
    if (network) {
      const addr = /inet (\d+\.\d+\.\d+\.\d+)\//.exec(
        tryRun('ip', ['-4', 'addr', 'show', 'dev', network.bridge]) ?? '',
      );
      this.gateway = addr?.[1];
    } else {
      this.gateway = `10.232.${k}.1`;
    }
    this.atExit = cleanUpAtExit(() => this.teardownSync());
  }

  static create(dir: string, network?: PodNetworkOptions): SandboxHost {
    const reason = sandboxUnsupportedReason();
    if (reason) throw new Error(`cannot run pod sandboxes: ${reason}`);
    if (dir === '/tmp' || dir.startsWith('/tmp/'))
      throw new Error('the pods directory must not be under /tmp (each pod gets its own /tmp)');
    if (network) {
      if (!linkList().includes(network.bridge)) throw new Error(`bridge ${network.bridge} does not exist`);
      if (!/^\d+\.\d+\.\d+\.$/.test(network.prefix))
        throw new Error(`network prefix ${network.prefix} must look like 10.231.7.`);
    }
    const podsDir = join(dir, 'pods');
    mkdirSync(podsDir, { recursive: true });
    mkdirSync(CHARM_ROOT, { recursive: true });
    const { k, dir: claimDir } = claim(podsDir);
    const host = new SandboxHost(k, claimDir, podsDir, network);
    try {
      if (!network) {
        run('ip', ['link', 'add', host.bridge, 'type', 'bridge']);
        run('ip', ['addr', 'add', `${host.gateway}/24`, 'dev', host.bridge]);
        run('ip', ['link', 'set', host.bridge, 'up']);
        firewall(host.bridge, k, 'insert');
      }
    } catch (err) {
      host.teardownSync();
      throw err;
    }
    return host;
  }

  /** The next free pod address, round robin so a recreated pod rarely reuses a stale neighbour entry. */
  private allocateIp(): string {
    const span = 255 - this.firstHost;
    for (let i = 0; i < span; i++) {
      const host = this.firstHost + ((this.nextHost - this.firstHost + i) % span);
      const ip = `${this.prefix}${host}`;
      if (ip === this.gateway || this.usedIps.has(ip)) continue;
      this.usedIps.add(ip);
      this.nextHost = host + 1 > 254 ? this.firstHost : host + 1;
      return ip;
    }
    throw new Error('no free pod address');
  }

  sandbox(podUid: string): Sandbox | undefined {
    return this.sandboxes.get(podUid);
  }

  async start(spec: SandboxSpec): Promise<Sandbox> {
    if (this.stopped) throw new Error('the sandbox host is stopped');
    const seq = ++this.seq;
    const netns = `cfkube-${this.k}-${seq}`;
    const veth = `cfk${this.k}p${seq}`;
    const ip = this.allocateIp();
    const dir = join(this.podsDir, `${spec.namespace}_${spec.name}_${spec.podUid}`);
    const sb: Sandbox = {
      seq,
      podUid: spec.podUid,
      netns,
      veth,
      ip,
      dir,
      pausePid: 0,
      netnsId: '',
      pidnsId: '',
      dead: false,
    };
    this.sandboxes.set(spec.podUid, sb);
    try {
      for (const sub of ['charmflow', 'root']) mkdirSync(join(dir, sub), { recursive: true, mode: 0o755 });
      chmodSync(join(dir, 'root'), 0o700);
      mkdirSync(join(dir, 'tmp'), { recursive: true });
      chmodSync(join(dir, 'tmp'), 0o1777);
      const fqdn = spec.subdomain ? `${spec.hostname}.${spec.subdomain}.${spec.namespace}.svc.cluster.local ` : '';
      writeFileSync(
        join(dir, 'hosts'),
        `# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n${ip}\t${fqdn}${spec.hostname}\n`,
      );

      await runAsync('ip', ['netns', 'add', netns]);
      await runAsync('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', netns]);
      await runAsync('ip', ['link', 'set', veth, 'master', this.bridge]);
      await runAsync('ip', ['link', 'set', veth, 'up']);
      await runAsync('ip', ['-n', netns, 'link', 'set', 'lo', 'up']);
      await runAsync('ip', ['-n', netns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
      await runAsync('ip', ['-n', netns, 'link', 'set', 'eth0', 'up']);
      if (this.gateway) await runAsync('ip', ['-n', netns, 'route', 'add', 'default', 'via', this.gateway]);
      // A previous pod with this address had another MAC: forget it on the host side.
      await runAsync('ip', ['neigh', 'flush', 'to', ip, 'dev', this.bridge]).catch(() => undefined);

      const script = [
        `mount --bind "$1" ${CHARM_ROOT}`,
        'mount --bind "$2" /tmp',
        'mount --bind "$3" /root',
        'mount --bind "$4" /etc/hosts',
        'echo "$5" > /proc/sys/kernel/hostname',
        this.pause,
      ].join(' && ');
      const child = spawn(
        'ip',
        [
          'netns',
          'exec',
          netns,
          'unshare',
          '--mount',
          '--uts',
          '--ipc',
          '--pid',
          '--fork',
          '--mount-proc',
          '--propagation',
          'private',
          'sh',
          '-c',
          script,
          'pause',
          join(dir, 'charmflow'),
          join(dir, 'tmp'),
          join(dir, 'root'),
          join(dir, 'hosts'),
          spec.hostname,
          PAUSE_PY,
        ],
        { stdio: ['ignore', 'ignore', 'pipe'], detached: true },
      );
      let stderr = '';
      child.stderr?.on('data', (d) => {
        stderr += d;
      });
      let exited: string | undefined;
      child.once('exit', (code, signal) => {
        exited = `exited with ${signal ?? code}`;
      });
      child.once('error', (err) => {
        exited = err.message;
      });
      child.unref();
      // The pause process is unshare's child once its sh has exec'd (mounts and hostname are done).
      const deadline = Date.now() + 10_000;
      for (;;) {
        if (exited) throw new Error(`pod sandbox ${netns}: ${exited}: ${stderr.trim()}`);
        if (Date.now() > deadline) throw new Error(`pod sandbox ${netns}: pause process did not start`);
        const children = tryReadFile(`/proc/${child.pid}/task/${child.pid}/children`)?.trim();
        const pid = children ? Number(children.split(' ')[0]) : 0;
        const comm = pid ? tryReadFile(`/proc/${pid}/comm`)?.trim() : undefined;
        if (pid && comm && comm !== 'sh' && comm !== 'unshare') {
          sb.pausePid = pid;
          sb.netnsId = readlinkSync(`/proc/${pid}/ns/net`);
          sb.pidnsId = readlinkSync(`/proc/${pid}/ns/pid`);
          break;
        }
        await sleep(10);
      }
      if (sb.dead || this.stopped) throw new Error('pod sandbox destroyed while starting');
      return sb;
    } catch (err) {
      await this.destroy(spec.podUid, 0);
      throw err;
    }
  }

  /** The argv that runs command inside the pod's namespaces. */
  execArgv(sb: Sandbox, command: string[], workingDir = '/'): string[] {
    return ['nsenter', '-t', String(sb.pausePid), '-n', '-m', '-u', '-i', '-p', `--wd=${workingDir}`, '--', ...command];
  }

  /** A process environment as a container's: a stock PATH, HOME, HOSTNAME, then the container's env. */
  execEnv(hostname: string, env: Record<string, string>): Record<string, string> {
    return { PATH: DEFAULT_PATH, HOSTNAME: hostname, HOME: '/root', ...env };
  }

  /** Processes of the pod's sandbox (pause included), by pid in this namespace. */
  processes(sb: Sandbox): number[] {
    return sb.netnsId ? pidsInNamespace('net', sb.netnsId) : [];
  }

  /**
   * Stop a pod: SIGTERM to its processes, up to graceMs for them to go, then SIGKILL to all;
   * then its network namespace and directory go.
   */
  async destroy(podUid: string, graceMs: number): Promise<void> {
    const sb = this.sandboxes.get(podUid);
    if (!sb) return;
    if (sb.dead) return;
    sb.dead = true;
    if (sb.netnsId && graceMs > 0) {
      // The pod's own processes; the helpers outside its pid namespace (unshare, nsenter) follow them.
      const workload = () => pidsInNamespace('pid', sb.pidnsId).filter((p) => p !== sb.pausePid && !isZombie(p));
      for (const pid of workload()) signal(pid, 'SIGTERM');
      const deadline = Date.now() + graceMs;
      while (Date.now() < deadline && workload().length > 0) await sleep(50);
    }
    // pid 1 of the pod's pid namespace: the kernel kills every other process in it.
    if (sb.pausePid) signal(sb.pausePid, 'SIGKILL');
    for (let i = 0; i < 100; i++) {
      const left = sb.netnsId ? this.processes(sb) : [];
      if (left.length === 0) break;
      for (const pid of left) signal(pid, 'SIGKILL');
      await sleep(20);
    }
    await runAsync('ip', ['netns', 'delete', sb.netns]).catch(() => undefined);
    await runAsync('ip', ['link', 'delete', sb.veth]).catch(() => undefined);
    rmSync(sb.dir, { recursive: true, force: true });
    this.usedIps.delete(sb.ip);
    this.sandboxes.delete(podUid);
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    await Promise.all([...this.sandboxes.keys()].map((uid) => this.destroy(uid, 0).catch(() => undefined)));
    this.teardownSync();
  }

  private teardownSync(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.atExit.cancel();
    for (const sb of this.sandboxes.values()) {
      sb.dead = true;
      if (sb.pausePid) signal(sb.pausePid, 'SIGKILL');
    }
    teardownClaim(this.k, this.ownBridge);
    rmSync(this.podsDir, { recursive: true, force: true });
    rmSync(this.claimDir, { recursive: true, force: true });
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

function isZombie(pid: number): boolean {
  const stat = tryReadFile(`/proc/${pid}/stat`);
  return !stat || stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
}

function tryReadFile(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}
