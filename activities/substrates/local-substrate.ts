// Machines that are sandbox directories on the controller host (the `local` cloud).
//
// Each machine is its rootDir plus its own loopback address (127.0.0.N, chosen by
// the caller). Commands run as local `sh -c` processes that behave like the SSH
// substrate's: same environment shape, same starting directory, same stdin and
// result handling, same kill semantics. The hook runtime cannot tell them apart.

import { stat } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { LocalSpawner } from './local-spawner.ts';
import { atomicWriteCommand, PROBE_SCRIPT, parseProbeOutput } from './machine-shell.ts';
import { outputCollector } from './output-tail.ts';
import {
  acceptStdin,
  type ExecRequest,
  type ExecResult,
  feedStdin,
  type MachineTarget,
  type ProbeResult,
  type Substrate,
} from './substrate.ts';

export interface LocalSubstrateOptions {
  /** After a kill, how long to wait for the output pipes to close before answering anyway. Default 2 s. */
  killGraceMs?: number;
}

/** What sshd gives a command: a login environment, not the controller's (which holds its secrets). */
function loginEnvironment(): Record<string, string> {
  const user = userInfo();
  const root = process.getuid?.() === 0;
  return {
    PATH: root ? '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' : '/usr/local/bin:/usr/bin:/bin',
    HOME: user.homedir,
    USER: user.username,
    LOGNAME: user.username,
    SHELL: user.shell ?? '/bin/sh',
  };
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

export class LocalSubstrate implements Substrate {
  readonly kind = 'local' as const;
  private readonly killGraceMs: number;
  private readonly env = loginEnvironment();
  private readonly spawner = new LocalSpawner();

  constructor(opts: LocalSubstrateOptions = {}) {
    this.killGraceMs = opts.killGraceMs ?? 2_000;
  }

  /** Every local machine is this host: it is probed once (again after a failure). */
  private hostProbe: Promise<{ hostname: string; missing: string[] }> | undefined;

  async probe(target: MachineTarget): Promise<ProbeResult> {
    this.hostProbe ??= this.exec(target, { command: PROBE_SCRIPT, timeoutMs: 30_000 }).then((result) => {
      if (result.code !== 0) throw new Error(`probe of local machine ${target.key} failed: ${result.stderr.trim()}`);
      return parseProbeOutput(result.stdout);
    });
    const probing = this.hostProbe;
    const parsed = await probing.catch((err) => {
      if (this.hostProbe === probing) this.hostProbe = undefined;
      throw err;
    });
    return { hostKeyFingerprint: 'local', address: target.address, hostname: parsed.hostname, missing: parsed.missing };
  }

  /** Starts in target.rootDir when it exists, else in the user's home (as over SSH). */
  async exec(target: MachineTarget, req: ExecRequest): Promise<ExecResult> {
    acceptStdin(req);
    if (req.signal?.aborted) return { code: null, stdout: '', stderr: '' };
    const home = target.uid === undefined ? this.env.HOME : '/';
    const cwd = (await isDirectory(target.rootDir)) ? target.rootDir : home;
    return new Promise<ExecResult>((resolve, reject) => {
      // its own session and process group, so a kill reaches everything the command started
      const child = this.spawner.spawn(
        target.uid === undefined
          ? { command: req.command, cwd, env: this.env }
          : {
              command: req.command,
              cwd,
              // a machine of its own: its home is its directory, its user its uid
              env: {
                ...this.env,
                HOME: target.rootDir,
                USER: `machine-${target.uid}`,
                LOGNAME: `machine-${target.uid}`,
              },
              uid: target.uid,
              gid: target.uid,
              umask: 0o022,
            },
      );
      // The caller that streams a stream keeps it: only a tail of it stays here.
      const out = outputCollector(req.onStdout !== undefined);
      const err = outputCollector(req.onStderr !== undefined);
      let code: number | null = null;
      let failure: unknown;
      let timer: NodeJS.Timeout | undefined;
      let graceTimer: NodeJS.Timeout | undefined;
      let done = false;

      const finish = () => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        clearTimeout(graceTimer);
        req.signal?.removeEventListener('abort', kill);
        if (failure !== undefined) reject(failure);
        else resolve({ code, stdout: out.text(), stderr: err.text() });
      };
      const kill = () => {
        child.killGroup('SIGKILL');
        // Something that left the group may still hold the pipes: answer anyway.
        graceTimer ??= setTimeout(() => {
          child.stdout.destroy();
          child.stderr.destroy();
          finish();
        }, this.killGraceMs);
      };
      const deliver = (cb: ((chunk: Buffer) => void) | undefined, chunk: Buffer) => {
        if (!cb || failure !== undefined) return;
        try {
          cb(chunk);
        } catch (e) {
          failure = e;
          kill();
        }
      };

      child.stdout.on('data', (chunk: Buffer) => {
        out.push(chunk);
        deliver(req.onStdout, chunk);
      });
      child.stderr.on('data', (chunk: Buffer) => {
        err.push(chunk);
        deliver(req.onStderr, chunk);
      });
      if (req.onStarted) child.once('spawn', req.onStarted);
      child.on('exit', (exitCode) => {
        code = exitCode;
      });
      child.on('error', (e) => {
        failure ??= e;
        finish();
      });
      child.on('close', finish);

      if (req.timeoutMs !== undefined) timer = setTimeout(kill, req.timeoutMs);
      req.signal?.addEventListener('abort', kill, { once: true });
      // A command that ignores its stdin closes the pipe early: not an error (as over SSH).
      child.stdin.on('error', () => {});
      feedStdin(req.stdin, child.stdin);
    });
  }

  async putFile(target: MachineTarget, path: string, content: string | Buffer, mode = 0o644): Promise<void> {
    const result = await this.exec(target, { command: atomicWriteCommand(path, mode), stdin: content });
    if (result.code !== 0) {
      const why = result.code === null ? 'killed' : `exit ${result.code}`;
      throw new Error(`putFile ${path} on local machine ${target.key} failed (${why}): ${result.stderr.trim()}`);
    }
  }

  async release(_target: MachineTarget): Promise<void> {
    // Nothing pooled. The sandbox directory belongs to the machine, removed by its owner.
  }

  async close(): Promise<void> {
    this.spawner.close();
  }
}
