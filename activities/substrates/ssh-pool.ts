// One SSH connection per machine, opened on first use and shared by every exec.
//
// A handshake costs tens of milliseconds and a login on the host; a channel on an
// open connection costs a few. So the pool keeps one `ssh2` Client per target key,
// bounds the channels open on it at once (further execs wait their turn, FIFO),
// and drops a connection as soon as it errors, ends or misses its keepalives: the
// next exec reopens it. The host key is checked against the pinned fingerprint
// before any credential is sent.

import { createHash } from 'node:crypto';
import { Client, type ClientChannel } from 'ssh2';
import { HostKeyMismatchError, type MachineTarget, MachineUnreachableError } from './substrate.ts';

export interface SshPoolOptions {
  /** Channels open at once on one connection; more execs queue. Default 8 (OpenSSH allows 10 by default). */
  maxChannelsPerHost?: number;
  /** Default 10 s. */
  keepaliveIntervalMs?: number;
  /** Missed keepalives before the connection is declared dead. Default 3. */
  keepaliveCountMax?: number;
  /** Time allowed for TCP connect + handshake + login. Default 10 s. */
  readyTimeoutMs?: number;
}

export interface SshConnectionStats {
  /** Successful logins (new connections). */
  handshakes: number;
  /** Channels opened (commands started). */
  execs: number;
  /** Connections currently open (0 or 1 per key). */
  open: number;
  /** Channels open right now. */
  active: number;
  /** Most channels ever open at once (per key; for the total, the highest of any key). */
  peakActive: number;
  /** Execs waiting for a free channel. */
  queued: number;
}

export interface SshPoolStats {
  total: SshConnectionStats;
  byKey: Record<string, SshConnectionStats>;
}

/** Raised when a command is sent to a machine whose host key was never pinned (probe it first). */
export class HostKeyNotPinnedError extends Error {
  readonly type = 'HostKeyNotPinned';
  constructor(readonly host: string) {
    super(`host key of ${host} is not pinned; probe the machine first`);
  }
}

/** A command started on a pooled connection. Call `release` once the channel has closed. */
export interface OpenedExec {
  channel: ClientChannel;
  /** Fingerprint of the host key the connection saw. */
  hostKeyFingerprint: string;
  release(): void;
}

export interface OpenExecOptions {
  /** Allow connecting without a pinned host key (probe only). */
  allowUnpinned?: boolean;
  /** Aborting gives up waiting for a slot, the connection or the channel. */
  signal?: AbortSignal;
  /**
   * Skip the channel bound. Only for short control commands (killing another
   * command) that must not queue behind the very channels they act on.
   */
  unbounded?: boolean;
  /**
   * The channel opened after the abort: the caller disposes of it (and calls release
   * once it closes). By default it is killed and closed.
   */
  onLate?: (late: OpenedExec) => void;
}

/** `SHA256:<base64, no padding>` of a raw SSH public key blob, as `ssh-keygen -l` prints it. */
export function fingerprintOf(key: Buffer): string {
  return `SHA256:${createHash('sha256').update(key).digest('base64').replace(/=+$/, '')}`;
}

function abortError(signal: AbortSignal): Error {
  return signal.reason instanceof Error ? signal.reason : new DOMException('aborted', 'AbortError');
}

/** FIFO counting semaphore. */
class Slots {
  private used = 0;
  private readonly waiters: Array<() => void> = [];
  constructor(private readonly size: number) {}

  get active(): number {
    return this.used;
  }

  get queued(): number {
    return this.waiters.length;
  }

  acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(abortError(signal));
    if (this.used < this.size && this.waiters.length === 0) {
      this.used++;
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      const grant = () => {
        signal?.removeEventListener('abort', onAbort);
        this.used++;
        resolve();
      };
      const onAbort = () => {
        const i = this.waiters.indexOf(grant);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(abortError(signal!));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(grant);
    });
  }

  release(): void {
    this.used--;
    const next = this.waiters.shift();
    if (next) next();
  }
}

interface Connection {
  client: Client;
  /** Which login this connection is: a target with different credentials gets a new one. */
  identity: string;
  ready: Promise<void>;
  seenFingerprint?: string;
  dead: boolean;
  /** Superseded by a connection with new credentials: close once its channels are done. */
  retired: boolean;
  active: number;
}

interface HostEntry {
  key: string;
  slots: Slots;
  conn?: Connection;
  handshakes: number;
  execs: number;
  peakActive: number;
}

function hostOf(target: MachineTarget): string {
  return `${target.user ?? 'root'}@${target.host ?? target.address}:${target.port ?? 22}`;
}

function describeConnectError(err: Error & { level?: string; code?: string }, readyTimeoutMs: number): string {
  if (err.level === 'client-authentication') return 'authentication failed (public key rejected)';
  if (err.level === 'client-timeout') {
    return err.message === 'Keepalive timeout' ? 'no keepalive answer' : `no SSH handshake within ${readyTimeoutMs} ms`;
  }
  switch (err.code) {
    case 'ECONNREFUSED':
      return 'connection refused';
    case 'ETIMEDOUT':
      return 'connection timed out';
    case 'EHOSTUNREACH':
      return 'host unreachable';
    case 'ENETUNREACH':
      return 'network unreachable';
    case 'ECONNRESET':
      return 'connection reset';
    case 'ENOTFOUND':
      return 'unknown host name';
  }
  return err.message;
}

export class SshPool {
  private readonly entries = new Map<string, HostEntry>();
  private readonly totals = { handshakes: 0, execs: 0 };
  private readonly maxChannels: number;
  private readonly keepaliveIntervalMs: number;
  private readonly keepaliveCountMax: number;
  private readonly readyTimeoutMs: number;

  constructor(opts: SshPoolOptions = {}) {
    this.maxChannels = opts.maxChannelsPerHost ?? 8;
    this.keepaliveIntervalMs = opts.keepaliveIntervalMs ?? 10_000;
    this.keepaliveCountMax = opts.keepaliveCountMax ?? 3;
    this.readyTimeoutMs = opts.readyTimeoutMs ?? 10_000;
    if (this.maxChannels < 1) throw new Error('maxChannelsPerHost must be at least 1');
  }

  /**
   * Start `command` on the target's pooled connection, opening the connection if needed.
   * Waits for a free channel slot first. If the connection turns out to have died
   * just now, tries once more on a fresh one.
   */
  async openExec(target: MachineTarget, command: string, opts: OpenExecOptions = {}): Promise<OpenedExec> {
    const entry = this.entry(target.key);
    const { signal } = opts;
    const bounded = opts.unbounded !== true;
    if (bounded) await entry.slots.acquire(signal);
    let slotHeld = bounded;
    try {
      for (let attempt = 0; ; attempt++) {
        const conn = await this.connection(entry, target, opts.allowUnpinned === true, signal);
        const started = this.startChannel(conn, command);
        try {
          return this.opened(entry, conn, await withAbort(started, signal), bounded);
        } catch (err) {
          if (signal?.aborted) {
            // The channel may still open. It keeps the slot until it is closed again, so the bound holds.
            slotHeld = false;
            started.then(
              (channel) => {
                const late = this.opened(entry, conn, channel, bounded);
                if (opts.onLate) return opts.onLate(late);
                channel.on('error', () => {});
                channel.once('close', late.release);
                killChannel(channel);
              },
              () => {
                if (bounded) entry.slots.release();
              },
            );
            throw abortError(signal);
          }
          if (conn.dead && attempt === 0) continue;
          const reason = (err as Error).message;
          throw new MachineUnreachableError(
            hostOf(target),
            conn.dead ? `connection lost: ${reason}` : `channel refused: ${reason}`,
          );
        }
      }
    } catch (err) {
      if (slotHeld) entry.slots.release();
      throw err;
    }
  }

  stats(): SshPoolStats {
    const byKey: Record<string, SshConnectionStats> = {};
    const total: SshConnectionStats = { ...this.totals, open: 0, active: 0, peakActive: 0, queued: 0 };
    for (const e of this.entries.values()) {
      const s: SshConnectionStats = {
        handshakes: e.handshakes,
        execs: e.execs,
        open: e.conn && !e.conn.dead ? 1 : 0,
        active: e.slots.active,
        peakActive: e.peakActive,
        queued: e.slots.queued,
      };
      byKey[e.key] = s;
      total.open += s.open;
      total.active += s.active;
      total.queued += s.queued;
      total.peakActive = Math.max(total.peakActive, s.peakActive);
    }
    return { total, byKey };
  }

  /** Close the target's connection and forget it. */
  async release(target: MachineTarget): Promise<void> {
    const entry = this.entries.get(target.key);
    if (!entry) return;
    this.entries.delete(target.key);
    if (entry.conn) this.drop(entry, entry.conn);
  }

  async close(): Promise<void> {
    for (const entry of this.entries.values()) if (entry.conn) this.drop(entry, entry.conn);
    this.entries.clear();
  }

  private entry(key: string): HostEntry {
    let e = this.entries.get(key);
    if (!e) {
      e = { key, slots: new Slots(this.maxChannels), handshakes: 0, execs: 0, peakActive: 0 };
      this.entries.set(key, e);
    }
    return e;
  }

  private opened(entry: HostEntry, conn: Connection, channel: ClientChannel, bounded: boolean): OpenedExec {
    entry.execs++;
    this.totals.execs++;
    entry.peakActive = Math.max(entry.peakActive, entry.slots.active);
    conn.active++;
    let released = false;
    return {
      channel,
      hostKeyFingerprint: conn.seenFingerprint ?? '',
      release: () => {
        if (released) return;
        released = true;
        conn.active--;
        if (bounded) entry.slots.release();
        if (conn.retired && conn.active === 0) conn.client.end();
      },
    };
  }

  private async connection(
    entry: HostEntry,
    target: MachineTarget,
    allowUnpinned: boolean,
    signal?: AbortSignal,
  ): Promise<Connection> {
    const host = hostOf(target);
    const pinned = target.hostKeyFingerprint;
    if (!pinned && !allowUnpinned) throw new HostKeyNotPinnedError(host);
    if (!target.privateKey) throw new MachineUnreachableError(host, 'no private key to log in with');
    const identity = `${host}#${createHash('sha256').update(target.privateKey).digest('hex')}`;

    let conn = entry.conn;
    if (conn && !conn.dead && conn.identity !== identity) {
      this.retire(entry, conn);
      conn = undefined;
    }
    const fresh = !conn || conn.dead;
    if (!conn || conn.dead) {
      conn = this.connect(entry, target, identity, pinned);
      entry.conn = conn;
    }
    await withAbort(conn.ready, signal);
    if (pinned && conn.seenFingerprint !== pinned) {
      // An older connection saw another key (opened by an unpinned probe, or before the
      // machine was re-pinned): only a fresh handshake, checked against this pin, may decide.
      this.retire(entry, conn);
      if (fresh) throw new HostKeyMismatchError(host, pinned, conn.seenFingerprint ?? 'unknown');
      return this.connection(entry, target, allowUnpinned, signal);
    }
    return conn;
  }

  /** Stop handing out a connection; close it once its running channels are done. */
  private retire(entry: HostEntry, conn: Connection): void {
    conn.retired = true;
    if (entry.conn === conn) entry.conn = undefined;
    if (conn.active === 0) conn.client.end();
  }

  private connect(entry: HostEntry, target: MachineTarget, identity: string, pinned: string | undefined): Connection {
    const host = hostOf(target);
    const client = new Client();
    const conn: Connection = {
      client,
      identity,
      ready: Promise.resolve(),
      dead: false,
      retired: false,
      active: 0,
    };
    let mismatch: HostKeyMismatchError | undefined;
    conn.ready = new Promise<void>((resolve, reject) => {
      let settled = false;
      const fail = (reason: Error) => {
        conn.dead = true;
        if (entry.conn === conn) entry.conn = undefined;
        if (!settled) {
          settled = true;
          reject(reason);
        }
      };
      // Commands are small request/answer exchanges: Nagle's algorithm against delayed ACKs costs ~40 ms each.
      client.once('connect', () => client.setNoDelay(true));
      client.once('ready', () => {
        settled = true;
        entry.handshakes++;
        this.totals.handshakes++;
        resolve();
      });
      client.on('error', (err: Error & { level?: string; code?: string }) => {
        fail(mismatch ?? new MachineUnreachableError(host, describeConnectError(err, this.readyTimeoutMs)));
      });
      const lost = () => fail(mismatch ?? new MachineUnreachableError(host, 'connection closed during handshake'));
      client.once('end', lost);
      client.once('close', lost);
      try {
        client.connect({
          host: target.host ?? target.address,
          port: target.port ?? 22,
          username: target.user ?? 'root',
          privateKey: target.privateKey,
          readyTimeout: this.readyTimeoutMs,
          keepaliveInterval: this.keepaliveIntervalMs,
          keepaliveCountMax: this.keepaliveCountMax,
          // Runs during key exchange, before any credential is sent.
          hostVerifier: (key: Buffer) => {
            conn.seenFingerprint = fingerprintOf(key);
            if (pinned && conn.seenFingerprint !== pinned) {
              mismatch = new HostKeyMismatchError(host, pinned, conn.seenFingerprint);
              return false;
            }
            return true;
          },
        });
      } catch (err) {
        // ssh2 throws synchronously for an unparsable key; its message never quotes the key.
        fail(new MachineUnreachableError(host, (err as Error).message));
      }
    });
    // Callers that gave up (aborted) leave this promise unobserved.
    conn.ready.catch(() => {});
    return conn;
  }

  private startChannel(conn: Connection, command: string): Promise<ClientChannel> {
    return new Promise<ClientChannel>((resolve, reject) => {
      try {
        conn.client.exec(command, (err, channel) => (err ? reject(err) : resolve(channel)));
      } catch (err) {
        // "Not connected": the socket closed before ssh2 told us.
        conn.dead = true;
        reject(err);
      }
    });
  }

  private drop(entry: HostEntry, conn: Connection): void {
    conn.dead = true;
    if (entry.conn === conn) entry.conn = undefined;
    conn.client.end();
  }
}

/** The parts of ssh2's Channel that signalling after end of input needs. */
interface ChannelInternals {
  outgoing?: { id: number; state: string };
  _client?: { _protocol?: { signal(id: number, signal: string): void } };
}

/**
 * Signal a command and close its channel. OpenSSH refuses signal requests on root
 * sessions (they run without privilege separation), so the SSH substrate kills
 * process groups with a separate command; this is the fallback for channels it
 * never saw. ssh2's Channel.signal() stays silent once our side has sent EOF (we
 * always end stdin), so the request goes through the protocol directly.
 */
export function killChannel(channel: ClientChannel): void {
  const internals = channel as unknown as ChannelInternals;
  const state = internals.outgoing?.state;
  try {
    if ((state === 'open' || state === 'eof') && internals._client?._protocol) {
      internals._client._protocol.signal(internals.outgoing!.id, 'KILL');
    }
  } catch {
    // connection already gone
  }
  channel.close();
}

/** Race `p` against `signal`; the caller disposes of a value that arrives too late. */
function withAbort<T>(p: Promise<T>, signal?: AbortSignal): Promise<T> {
  if (!signal) return p;
  if (signal.aborted) {
    p.catch(() => {});
    return Promise.reject(abortError(signal));
  }
  return new Promise<T>((resolve, reject) => {
    let aborted = false;
    const onAbort = () => {
      aborted = true;
      reject(abortError(signal));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        if (!aborted) resolve(v);
      },
      (err) => {
        signal.removeEventListener('abort', onAbort);
        if (!aborted) reject(err);
      },
    );
  });
}
