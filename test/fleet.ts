// A fleet of real sshd hosts for tests and benchmarks.
//
// Each host is a network namespace with one veth in a bridge that lives in the
// root namespace, so the test process reaches every host on its own address
// (10.231.<k>.<10+i>) without routing or ip_forward, and a test can cut one
// host off (link down) or kill it. Namespaces share the filesystem, so each
// sshd runs in a private mount namespace with its own /var/lib/charmflow, /tmp
// and /root bind-mounted over the shared ones, and its own hostname.
//
// Everything a fleet creates is named after its subnet number k
// (bridge cfbr<k>, veths cfv<k>-<i>, namespaces charmflow-fleet-<k>-<i>) and
// claimed by a directory <baseDir>/<k> holding the owner's pid, so concurrent
// fleets never collide and a later run can remove what a crashed one left.

import { spawn, spawnSync } from 'node:child_process';
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import type { MachineTarget } from '../activities/substrates/substrate.ts';
import {
  allowBridge,
  claimNumber,
  cleanUpAtExit,
  has,
  killNetns,
  linkList,
  netnsList,
  ownerAlive,
  run,
  subnetsInUse,
  tryRun,
} from './helpers/netns.ts';

export interface FleetHost {
  name: string;
  /** The host's own hostname (each host has its own UTS namespace). */
  hostname: string;
  address: string;
  port: number;
  user: 'root';
  privateKey: string;
  privateKeyPath: string;
  /** `SHA256:<base64>` of the host's current host key, as `ssh-keygen -lf` prints it. */
  hostKeyFingerprint: string;
  /** The host's public host key file. */
  hostKeyPubPath: string;
  /** Directory on the test machine that backs the host's /var/lib/charmflow. */
  rootFs: string;
  /** Directory on the test machine that backs the host's /tmp. */
  tmpDir: string;
  /** Directory on the test machine that backs the host's /root (empty at start, like a fresh server). */
  homeDir: string;
  /** The host's sshd log (sshd -e). */
  logPath: string;
}

export interface FleetOptions {
  /** Where keys, configs and the per-host filesystems live. Must not be under /tmp (each host gets its own /tmp). */
  baseDir?: string;
  /** How long to wait for an sshd to accept connections. */
  startTimeoutMs?: number;
  /**
   * Hosts (by index) with a root filesystem of their own: a copy-on-write overlay of the
   * test machine's, in memory, so what a test installs or removes there (apt-get, dpkg)
   * never reaches the test machine or the other hosts. The script given for the host
   * runs as root chrooted into it (FLEET_GATEWAY set) each time its sshd starts.
   */
  ownRoot?: Record<number, string>;
}

export interface Fleet {
  /** Subnet number: hosts are 10.231.<id>.<10+i>, the bridge is 10.231.<id>.1. */
  readonly id: number;
  readonly dir: string;
  readonly bridge: string;
  readonly gateway: string;
  readonly hosts: FleetHost[];
  /** A machine target for host i, pinned to its current host key unless `pinned` is false. */
  target(i: number, opts?: { key?: string; pinned?: boolean; rootDir?: string }): MachineTarget;
  /** Cut host i off the network (its veth goes down; packets are dropped silently). */
  linkDown(i: number): Promise<void>;
  linkUp(i: number): Promise<void>;
  /** Kill every process in host i (sshd and all sessions): connections drop at once. */
  killHost(i: number): Promise<void>;
  /** Runs a shell command on host i as root over ssh (as a person at the host would). */
  sh(i: number, command: string): { code: number | null; stdout: string; stderr: string };
  restartHost(i: number): Promise<void>;
  /** Give host i a new host key and restart its sshd. Returns the new fingerprint. */
  rotateHostKey(i: number): Promise<string>;
  destroy(): Promise<void>;
}

const DEFAULT_BASE = '/var/tmp/charmflow-fleet';
const SSHD = '/usr/sbin/sshd';
const SFTP_SERVER = '/usr/lib/openssh/sftp-server';
/** Mount points the hosts get private copies of. */
const CHARMFLOW_DIR = '/var/lib/charmflow';

const nsName = (k: number, i: number) => `charmflow-fleet-${k}-${i}`;
const bridgeName = (k: number) => `cfbr${k}`;
const vethName = (k: number, i: number) => `cfv${k}-${i}`;
const NS_RE = /^charmflow-fleet-(\d+)-(\d+)$/;
const LINK_RE = /^(?:cfbr(\d+)|cfv(\d+)-\d+)$/;

/** Why a fleet cannot be made here, or undefined when it can. Tests skip with this reason. */
export function fleetUnsupportedReason(): string | undefined {
  if (process.platform !== 'linux') return 'needs Linux network namespaces';
  if (process.getuid?.() !== 0) return 'needs root (network namespaces, bind mounts, sshd)';
  if (!existsSync(SSHD)) return `${SSHD} missing (apt-get install openssh-server)`;
  for (const cmd of ['ip', 'unshare', 'ssh-keygen', 'mount']) {
    if (!has(cmd)) return `${cmd} missing (apt-get install iproute2 util-linux openssh-client)`;
  }
  return undefined;
}

// Remove everything named after subnet k. Only ever called for a k we own or whose owner is dead.
function teardownSubnet(k: number): void {
  for (const ns of netnsList()) {
    const m = NS_RE.exec(ns);
    if (m && Number(m[1]) === k) {
      killNetns(ns);
      tryRun('ip', ['netns', 'delete', ns]);
    }
  }
  for (const link of linkList()) {
    const m = LINK_RE.exec(link);
    if (m && Number(m[1] ?? m[2]) === k) tryRun('ip', ['link', 'delete', link]);
  }
  firewall(k, 'delete');
}

function reapStale(base: string): void {
  const live = new Set<number>();
  for (const entry of readdirSync(base)) {
    if (!/^\d+$/.test(entry)) continue;
    const dir = join(base, entry);
    if (ownerAlive(dir)) {
      live.add(Number(entry));
      continue;
    }
    teardownSubnet(Number(entry));
    rmSync(dir, { recursive: true, force: true });
  }
  // Namespaces or links whose claim directory is gone (e.g. the base dir was wiped).
  const orphans = new Set<number>();
  for (const ns of netnsList()) {
    const m = NS_RE.exec(ns);
    if (m && !live.has(Number(m[1]))) orphans.add(Number(m[1]));
  }
  for (const link of linkList()) {
    const m = LINK_RE.exec(link);
    if (m && !live.has(Number(m[1] ?? m[2]))) orphans.add(Number(m[1] ?? m[2]));
  }
  for (const k of orphans) if (!existsSync(join(base, String(k)))) teardownSubnet(k);
}

function claimSubnet(base: string): { k: number; dir: string } {
  const claimed = claimNumber(base, subnetsInUse(231));
  if (!claimed) throw new Error('no free 10.231.<k>.0/24 subnet for a test fleet');
  return claimed;
}

function firewall(k: number, action: 'insert' | 'delete'): void {
  allowBridge(bridgeName(k), `charmflow-fleet-${k}`, action);
}

function fingerprintOfFile(pubPath: string): string {
  // "256 SHA256:abc... comment (ED25519)"
  return run('ssh-keygen', ['-l', '-f', pubPath]).split(' ')[1];
}

function canConnect(address: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = connect({ host: address, port });
    const done = (ok: boolean) => {
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(timeoutMs, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface HostState {
  host: FleetHost;
  ns: string;
  veth: string;
  configPath: string;
  hostKeyPath: string;
  /** Where the host's own root filesystem is mounted, if it has one. */
  ownRoot?: { dir: string; prepare: string; gateway: string };
}

export async function createFleet(n: number, opts: FleetOptions = {}): Promise<Fleet> {
  const reason = fleetUnsupportedReason();
  if (reason) throw new Error(`cannot create a test fleet: ${reason}`);
  if (n < 1 || n > 200) throw new Error(`fleet size ${n} out of range 1..200`);
  const base = opts.baseDir ?? DEFAULT_BASE;
  if (base === '/tmp' || base.startsWith('/tmp/')) throw new Error('fleet baseDir must not be under /tmp');
  const startTimeoutMs = opts.startTimeoutMs ?? 10_000;

  mkdirSync(base, { recursive: true, mode: 0o755 });
  reapStale(base);
  const { k, dir } = claimSubnet(base);
  const gateway = `10.231.${k}.1`;
  const br = bridgeName(k);

  let destroyed = false;
  const destroySync = () => {
    if (destroyed) return;
    destroyed = true;
    atExit.cancel();
    teardownSubnet(k);
    rmSync(dir, { recursive: true, force: true });
  };
  const atExit = cleanUpAtExit(destroySync);

  const states: HostState[] = [];
  try {
    // Mount points for the per-host views, and sshd's privilege separation directory.
    mkdirSync(CHARMFLOW_DIR, { recursive: true });
    mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });

    const clientKeyPath = join(dir, 'client_key');
    run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `charmflow-fleet-${k}`, '-f', clientKeyPath]);
    const privateKey = readFileSync(clientKeyPath, 'utf8');

    run('ip', ['link', 'add', br, 'type', 'bridge']);
    run('ip', ['addr', 'add', `${gateway}/24`, 'dev', br]);
    run('ip', ['link', 'set', br, 'up']);
    firewall(k, 'insert');

    for (let i = 0; i < n; i++) {
      const ns = nsName(k, i);
      const veth = vethName(k, i);
      const address = `10.231.${k}.${10 + i}`;
      const hostDir = join(dir, `host${i}`);
      const rootFs = join(hostDir, 'charmflow');
      const tmpDir = join(hostDir, 'tmp');
      const homeDir = join(hostDir, 'root');
      mkdirSync(rootFs, { recursive: true, mode: 0o755 });
      mkdirSync(homeDir, { recursive: true, mode: 0o700 });
      mkdirSync(tmpDir, { recursive: true });
      chmodSync(tmpDir, 0o1777);
      const hostKeyPath = join(hostDir, 'ssh_host_ed25519_key');
      run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `host${i}`, '-f', hostKeyPath]);
      const configPath = join(hostDir, 'sshd_config');
      writeFileSync(
        configPath,
        [
          `ListenAddress ${address}`,
          'Port 22',
          `HostKey ${hostKeyPath}`,
          `PidFile ${join(hostDir, 'sshd.pid')}`,
          'PermitRootLogin prohibit-password',
          'PubkeyAuthentication yes',
          'PasswordAuthentication no',
          'KbdInteractiveAuthentication no',
          // the fleet's client key, plus keys installed on the host as on any server (the controller's)
          `AuthorizedKeysFile ${clientKeyPath}.pub .ssh/authorized_keys`,
          'StrictModes no',
          'UsePAM no',
          'UseDNS no',
          'PrintMotd no',
          'MaxSessions 64',
          'MaxStartups 100',
          'LogLevel INFO',
          `Subsystem sftp ${SFTP_SERVER}`,
          '',
        ].join('\n'),
      );

      run('ip', ['netns', 'add', ns]);
      run('ip', ['link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
      run('ip', ['link', 'set', veth, 'master', br]);
      run('ip', ['link', 'set', veth, 'up']);
      run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
      run('ip', ['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
      run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);

      const ownRootDir = join(hostDir, 'own-root');
      const prepare = opts.ownRoot?.[i];
      if (prepare !== undefined) mkdirSync(ownRootDir, { mode: 0o755 });
      states.push({
        ns,
        veth,
        configPath,
        hostKeyPath,
        ownRoot: prepare !== undefined ? { dir: ownRootDir, prepare, gateway } : undefined,
        host: {
          name: `host${i}`,
          hostname: `cf${k}-host${i}`,
          address,
          port: 22,
          user: 'root',
          privateKey,
          privateKeyPath: clientKeyPath,
          hostKeyFingerprint: fingerprintOfFile(`${hostKeyPath}.pub`),
          hostKeyPubPath: `${hostKeyPath}.pub`,
          rootFs,
          tmpDir,
          homeDir,
          logPath: join(hostDir, 'sshd.log'),
        },
      });
    }

    await Promise.all(states.map((s) => startSshd(s, startTimeoutMs)));
    if (n >= 2) checkHostToHost(states[0], states[1]);
  } catch (err) {
    destroySync();
    throw err;
  }

  const state = (i: number): HostState => {
    const s = states[i];
    if (!s) throw new Error(`fleet has no host ${i}`);
    return s;
  };

  return {
    id: k,
    dir,
    bridge: br,
    gateway,
    hosts: states.map((s) => s.host),
    target(i, o = {}) {
      const h = state(i).host;
      return {
        key: o.key ?? `fleet-${k}/${h.name}`,
        kind: 'ssh',
        address: h.address,
        rootDir: o.rootDir ?? CHARMFLOW_DIR,
        host: h.address,
        port: h.port,
        user: h.user,
        privateKey: h.privateKey,
        hostKeyFingerprint: o.pinned === false ? undefined : h.hostKeyFingerprint,
      };
    },
    async linkDown(i) {
      run('ip', ['link', 'set', state(i).veth, 'down']);
    },
    async linkUp(i) {
      run('ip', ['link', 'set', state(i).veth, 'up']);
    },
    async killHost(i) {
      killNetns(state(i).ns);
    },
    sh(i, command) {
      const h = state(i).host;
      const r = spawnSync(
        'ssh',
        [
          ...['-i', h.privateKeyPath, '-p', String(h.port), '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR'],
          ...['-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null'],
          `${h.user}@${h.address}`,
          command,
        ],
        { encoding: 'utf8', timeout: 60_000 },
      );
      return { code: r.status, stdout: r.stdout, stderr: r.stderr };
    },
    async restartHost(i) {
      const s = state(i);
      killNetns(s.ns);
      await startSshd(s, startTimeoutMs);
    },
    async rotateHostKey(i) {
      const s = state(i);
      killNetns(s.ns);
      rmSync(s.hostKeyPath, { force: true });
      rmSync(`${s.hostKeyPath}.pub`, { force: true });
      run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', s.host.name, '-f', s.hostKeyPath]);
      s.host.hostKeyFingerprint = fingerprintOfFile(`${s.hostKeyPath}.pub`);
      await startSshd(s, startTimeoutMs);
      return s.host.hostKeyFingerprint;
    },
    async destroy() {
      destroySync();
    },
  };
}

// sshd in the host's namespace, in a private mount namespace with the host's own
// /var/lib/charmflow, /tmp and /root (a stock home: the test machine's may hold
// credentials and slow shell start-up files), its own hostname, and its own pid
// namespace (sshd is its init), so a charm's `pkill` cannot reach other hosts or the
// test machine.
async function startSshd(s: HostState, timeoutMs: number): Promise<void> {
  const script = s.ownRoot
    ? [
        // a host with its own root: an overlay of / in memory, the host's own dirs bound
        // into it, then sshd chrooted there (the mounts die with the host's namespace)
        'R="$6"',
        'mount -t tmpfs -o size=4g,mode=0755 cf-own-root "$R"',
        'mkdir "$R/upper" "$R/work" "$R/root"',
        'mount -t overlay cf-own-root -o "lowerdir=/,upperdir=$R/upper,workdir=$R/work" "$R/root"',
        'mount --rbind /dev "$R/root/dev"',
        'mount -t proc proc "$R/root/proc"',
        'mount --rbind /sys "$R/root/sys"',
        `mount --bind "$1" "$R/root${CHARMFLOW_DIR}"`,
        'mount --bind "$2" "$R/root/tmp"',
        'mount --bind "$5" "$R/root/root"',
        'echo "$4" > /proc/sys/kernel/hostname',
        '{ [ -z "$7" ] || chroot "$R/root" env FLEET_GATEWAY="$8" sh -c "$7"; }',
        `exec chroot "$R/root" ${SSHD} -D -e -f "$3"`,
      ].join(' && ')
    : [
        `mount --bind "$1" ${CHARMFLOW_DIR}`,
        'mount --bind "$2" /tmp',
        'mount --bind "$5" /root',
        'echo "$4" > /proc/sys/kernel/hostname',
        `exec ${SSHD} -D -e -f "$3"`,
      ].join(' && ');
  const log = openSync(s.host.logPath, 'a');
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      s.ns,
      'unshare',
      '--mount',
      '--uts',
      '--pid',
      '--fork',
      '--mount-proc',
      '--propagation',
      'private',
      'sh',
      '-c',
      script,
      'sshd-host',
      s.host.rootFs,
      s.host.tmpDir,
      s.configPath,
      s.host.hostname,
      s.host.homeDir,
      ...(s.ownRoot ? [s.ownRoot.dir, s.ownRoot.prepare, s.ownRoot.gateway] : []),
    ],
    { stdio: ['ignore', log, log], detached: true },
  );
  closeSync(log);
  let exited: string | undefined;
  child.once('exit', (code, signal) => {
    exited = `exited with ${signal ?? code}`;
  });
  child.once('error', (err) => {
    exited = err.message;
  });
  child.unref();

  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited) break;
    if (await canConnect(s.host.address, s.host.port, 500)) return;
    await sleep(20);
  }
  const tail = existsSync(s.host.logPath) ? readFileSync(s.host.logPath, 'utf8').split('\n').slice(-10).join('\n') : '';
  throw new Error(
    `sshd for ${s.host.name} (${s.host.address}) ${exited ?? `not reachable from the root namespace within ${timeoutMs} ms (a firewall dropping bridge traffic?)`}\n${tail}`,
  );
}

// Units on different hosts talk to each other (relations); make sure the bridge forwards.
function checkHostToHost(a: HostState, b: HostState): void {
  const probe = `exec 3<>/dev/tcp/${b.host.address}/${b.host.port}`;
  if (!has('bash')) return;
  if (tryRun('ip', ['netns', 'exec', a.ns, 'timeout', '3', 'bash', '-c', probe]) === undefined) {
    throw new Error(
      `${a.host.name} cannot reach ${b.host.name} across the fleet bridge; is bridged traffic filtered (br_netfilter + FORWARD DROP)?`,
    );
  }
}
