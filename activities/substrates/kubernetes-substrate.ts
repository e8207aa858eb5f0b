// Machines that are pods on a Kubernetes cluster (a kubernetes cloud's units).
//
// Every call is one exec into the pod's charm container through the API server
// (client-node's Exec: the Kubernetes websocket channel protocol): stdin in,
// stdout and stderr streamed as they come, the exit code from the status channel.
// Nothing runs in the pod but what hooks start; the pod's own processes are the
// charm container's idle loop and the workload containers.

import { PassThrough, Writable } from 'node:stream';
import { Exec, type KubeConfig, type V1Status } from '@kubernetes/client-node';
import { Cluster, isNotFound, podProblem } from '../kubernetes-cluster.ts';
import { ExecStream } from './exec-stream.ts';
import { atomicWriteCommand, PROBE_SCRIPT, parseProbeOutput, shellQuote } from './machine-shell.ts';
import {
  acceptStdin,
  type ExecRequest,
  type ExecResult,
  feedStdin,
  MachineFailedError,
  type MachineTarget,
  MachineUnreachableError,
  type ProbeResult,
  type Substrate,
} from './substrate.ts';

export interface KubernetesSubstrateOptions {
  /** The opened kubeconfig of a kubernetes cloud (its credentials live sealed in the store). */
  kubeconfigFor?: (cloud: string) => Promise<KubeConfig>;
  /** How long probe waits for a pod to run. Default 5 minutes. */
  podReadyTimeoutMs?: number;
  /** After a kill, how long to wait for the exec to close before answering anyway. Default 2 s. */
  killGraceMs?: number;
}

/** First line the wrapper writes to stderr: the pid of the command (after exec, the command itself). */
const PID_MARKER = '__charmflow_pid__=';

/** Kills a process and everything under it (no process groups to rely on in an exec'd shell). */
function killTreeCommand(pid: number): string {
  return [
    `new=${pid}; all=$new`,
    // children found by walking /proc/<pid>/stat's ppid field, a generation at a time
    'while [ -n "$new" ]; do',
    '  next=""',
    '  for s in /proc/[0-9]*/stat; do',
    '    read -r p _ _ pp _ < "$s" 2>/dev/null || continue',
    '    for n in $new; do [ "$pp" = "$n" ] && next="$next $p"; done',
    '  done',
    '  all="$all $next"; new=$next',
    'done',
    'kill -KILL $all 2>/dev/null; true',
  ].join('\n');
}

function podName(target: MachineTarget): string {
  return `pod ${target.namespace}/${target.pod}`;
}

function exitCodeOf(status: V1Status | undefined): number | null {
  if (!status) return null;
  if (status.status === 'Success') return 0;
  const cause = status.details?.causes?.find((c) => c.reason === 'ExitCode');
  if (cause?.message !== undefined && /^\d+$/.test(cause.message)) return Number(cause.message);
  return null;
}

function wsError(err: unknown): string {
  const e = err as { message?: string; error?: { message?: string } };
  return e?.error?.message ?? e?.message ?? String(err);
}

export class KubernetesSubstrate implements Substrate {
  readonly kind = 'pod' as const;
  private readonly kubeconfigFor?: (cloud: string) => Promise<KubeConfig>;
  private readonly podReadyTimeoutMs: number;
  private readonly killGraceMs: number;

  constructor(opts: KubernetesSubstrateOptions = {}) {
    this.kubeconfigFor = opts.kubeconfigFor;
    this.podReadyTimeoutMs = opts.podReadyTimeoutMs ?? 300_000;
    this.killGraceMs = opts.killGraceMs ?? 2_000;
  }

  /** A kubernetes cloud's opened kubeconfig. */
  async kubeconfig(cloud: string): Promise<KubeConfig> {
    if (!this.kubeconfigFor) throw new Error('this worker has no Kubernetes credentials source');
    return this.kubeconfigFor(cloud);
  }

  private async kc(target: MachineTarget): Promise<KubeConfig> {
    if (!target.cloud || !target.namespace || !target.pod) {
      throw new Error(`machine ${target.key} is not a pod (no cloud, namespace or pod)`);
    }
    return this.kubeconfig(target.cloud);
  }

  /** Waits until the pod runs its charm container; a pod that cannot (its image cannot be pulled) fails at once. */
  async probe(target: MachineTarget): Promise<ProbeResult> {
    const pod = await this.waitRunning(target);
    const res = await this.exec(target, { command: PROBE_SCRIPT, timeoutMs: 30_000 });
    if (res.code !== 0) {
      throw new MachineUnreachableError(podName(target), `probe failed: ${res.stderr.trim() || `exit ${res.code}`}`);
    }
    const parsed = parseProbeOutput(res.stdout);
    return {
      hostKeyFingerprint: `pod:${pod.uid}`,
      address: pod.ip,
      hostname: parsed.hostname,
      missing: parsed.missing,
    };
  }

  async incarnation(target: MachineTarget): Promise<string> {
    return `pod:${(await this.waitRunning(target)).uid}`;
  }

  private async waitRunning(target: MachineTarget): Promise<{ uid: string; ip: string }> {
    const cluster = new Cluster(await this.kc(target));
    const deadline = Date.now() + this.podReadyTimeoutMs;
    let last = 'not there yet';
    while (true) {
      let pod: Awaited<ReturnType<Cluster['readPod']>>;
      try {
        pod = await cluster.readPod(target.namespace!, target.pod!);
      } catch (err) {
        throw new MachineUnreachableError(podName(target), wsError(err));
      }
      if (pod && !pod.metadata?.deletionTimestamp) {
        const problem = podProblem(pod);
        if (problem?.fatal) throw new MachineFailedError(podName(target), problem.message);
        const charm = pod.status?.containerStatuses?.find((c) => c.name === (target.container ?? 'charm'));
        if (pod.status?.phase === 'Running' && charm?.state?.running && pod.status.podIP) {
          return { uid: pod.metadata!.uid!, ip: pod.status.podIP };
        }
        last = problem?.message ?? `phase ${pod.status?.phase ?? 'unknown'}`;
      } else if (pod) {
        last = 'being deleted';
      }
      if (Date.now() > deadline) {
        throw new MachineUnreachableError(
          podName(target),
          `not running after ${this.podReadyTimeoutMs / 1000} s (${last})`,
        );
      }
      await new Promise((r) => setTimeout(r, 300));
    }
  }

  async exec(target: MachineTarget, req: ExecRequest): Promise<ExecResult> {
    acceptStdin(req);
    const killed = { code: null, stdout: '', stderr: '' };
    if (req.signal?.aborted) return killed;
    const kc = await this.kc(target);
    const wrapper = [
      `printf '${PID_MARKER}%s\\n' "$$" >&2`,
      `cd ${shellQuote(target.rootDir)} 2>/dev/null || cd /`,
      `exec sh -c ${shellQuote(req.command)}`,
    ].join('; ');

    return new Promise<ExecResult>((resolve, reject) => {
      let status: V1Status | undefined;
      let done = false;
      let ws: { close(): void; readyState: number } | undefined;
      let timer: NodeJS.Timeout | undefined;

      const finish = (code: number | null) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        req.signal?.removeEventListener('abort', kill);
        try {
          ws?.close();
        } catch {
          // closed already
        }
        stream.settle(code, resolve, reject);
      };
      const stream: ExecStream = new ExecStream(req, {
        marker: PID_MARKER,
        graceMs: this.killGraceMs,
        giveUp: () => finish(null),
        killTree: (pid) => {
          if (pid === undefined) return;
          // a separate exec: closing our websocket does not end the command on every runtime
          void this.exec(target, { command: killTreeCommand(pid), timeoutMs: this.killGraceMs }).catch(() => {});
        },
      });
      const kill = () => {
        if (!done) stream.kill();
      };
      const stdout = new Writable({
        write(chunk: Buffer, _enc, cb) {
          stream.stdout(chunk);
          cb();
        },
      });
      const stderr = new Writable({
        write(chunk: Buffer, _enc, cb) {
          stream.stderr(chunk);
          cb();
        },
      });
      const stdin = req.stdin === undefined ? null : new PassThrough();

      req.signal?.addEventListener('abort', kill, { once: true });
      if (req.timeoutMs !== undefined) timer = setTimeout(kill, req.timeoutMs);

      new Exec(kc)
        .exec(
          target.namespace!,
          target.pod!,
          target.container ?? 'charm',
          ['sh', '-c', wrapper],
          stdout,
          stderr,
          stdin,
          false,
          (s) => {
            status = s;
          },
        )
        .then(
          (socket) => {
            ws = socket;
            req.onStarted?.();
            if (stdin) feedStdin(req.stdin, stdin);
            socket.on('close', () => {
              stream.ended();
              // a lost connection answers without a status: code null
              finish(stream.killing ? null : exitCodeOf(status));
            });
            stream.killIfAsked();
            if (done) socket.close();
          },
          (e) => {
            if (done) return;
            done = true;
            clearTimeout(timer);
            req.signal?.removeEventListener('abort', kill);
            if (stream.killing) return resolve(killed);
            const text = wsError(e);
            reject(
              isNotFound(e) || /404/.test(text)
                ? new MachineUnreachableError(podName(target), `the pod is not there (${text})`)
                : new MachineUnreachableError(podName(target), text),
            );
          },
        );
    });
  }

  async putFile(target: MachineTarget, path: string, content: string | Buffer, mode = 0o644): Promise<void> {
    const res = await this.exec(target, {
      command: atomicWriteCommand(path, mode),
      stdin: content,
      timeoutMs: 120_000,
    });
    if (res.code !== 0) {
      const why = res.code === null ? 'killed' : `exit ${res.code}`;
      throw new Error(`putFile ${path} on ${podName(target)} failed (${why}): ${res.stderr.trim()}`);
    }
  }

  async release(): Promise<void> {
    // nothing pooled: every exec is its own websocket
  }

  async close(): Promise<void> {}
}
