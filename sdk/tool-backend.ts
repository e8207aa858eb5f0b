// The ModelBackend of a real hook: every call is one hook tool, run by name
// through PATH with Juju's syntax (see ../../shared/HOOK-TOOLS.md), so an SDK
// charm runs the same under charmflow and under Juju.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type ConfigValue,
  HookToolError,
  type LogLevel,
  type ModelBackend,
  RelationNotFoundError,
  type SecretAddOptions,
  type SecretInfo,
  SecretNotFoundError,
  type SecretRef,
  type SettableStatus,
  type StatusInfo,
} from './backend.ts';

/** Runs one hook tool; returns its stdout. */
export type ToolRunner = (tool: string, args: string[], input?: string) => string;

function runTool(tool: string, args: string[], input?: string): string {
  try {
    return execFileSync(tool, args, {
      encoding: 'utf8',
      input: input ?? '',
      stdio: ['pipe', 'pipe', 'pipe'],
      maxBuffer: 64 * 1024 * 1024,
    });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { status?: number | null; stderr?: string };
    if (e.code === 'ENOENT') throw new HookToolError(tool, 127, 'not found on PATH (is this running in a hook?)');
    const stderr = String(e.stderr ?? '').trim();
    const message = stderr.replace(/^ERROR\s+/m, '') || `exit code ${e.status}`;
    if (/relation not found|relation .* not found/i.test(stderr)) {
      throw new RelationNotFoundError(tool, e.status ?? 1, message);
    }
    if (tool.startsWith('secret-') && /not found|not granted|permission denied/i.test(stderr)) {
      throw new SecretNotFoundError(tool, e.status ?? 1, message);
    }
    throw new HookToolError(tool, e.status ?? 1, message);
  }
}

const json = <T>(out: string): T => JSON.parse(out.trim() === '' ? 'null' : out) as T;

function secretRefArgs(ref: SecretRef): string[] {
  const args: string[] = [];
  if (ref.id) args.push(ref.id);
  if (ref.label) args.push('--label', ref.label);
  if (args.length === 0) throw new TypeError('a secret needs an id or a label');
  return args;
}

/** Builds the backend that talks to the hook tools (`run` is replaceable for tests). */
export function createToolBackend(run: ToolRunner = runTool): ModelBackend {
  /** Secret content goes through files (`key#file=PATH`), never argv, where ps would show it. */
  const withContentFiles = <T>(content: Record<string, string>, fn: (args: string[]) => T): T => {
    const dir = mkdtempSync(join(tmpdir(), 'charm-secret-'));
    try {
      const args = Object.entries(content).map(([k, v]) => {
        const file = join(dir, k);
        writeFileSync(file, v, { mode: 0o600 });
        return `${k}#file=${file}`;
      });
      return fn(args);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };

  return {
    configGet: () => json<Record<string, ConfigValue>>(run('config-get', ['--format=json'])) ?? {},
    isLeader: () => json<boolean>(run('is-leader', ['--format=json'])) === true,
    relationIds: (endpoint) => json<string[]>(run('relation-ids', [endpoint, '--format=json'])) ?? [],
    relationList: (rid) => json<string[]>(run('relation-list', ['-r', rid, '--format=json'])) ?? [],
    relationRemoteApp: (rid) => {
      const app = json<string | null>(run('relation-list', ['-r', rid, '--app', '--format=json']));
      return app ? app : null;
    },
    relationGet: (rid, owner, app) =>
      json<Record<string, string>>(
        run('relation-get', ['-r', rid, ...(app ? ['--app'] : []), '--format=json', '-', owner]),
      ) ?? {},
    relationSet: (rid, data, app) => {
      run('relation-set', ['-r', rid, ...(app ? ['--app'] : []), '--file', '-'], JSON.stringify(data));
    },
    statusGet: (app) => {
      const out = json<{ status?: string; message?: string; 'application-status'?: StatusInfo }>(
        run('status-get', ['--include-data', '--format=json', `--application=${app ? 'True' : 'False'}`]),
      );
      const s = app ? (out?.['application-status'] ?? out) : out;
      return { status: s?.status ?? 'unknown', message: s?.message ?? '' };
    },
    statusSet: (status: SettableStatus, message: string, app: boolean) => {
      run('status-set', [`--application=${app ? 'True' : 'False'}`, status, '--', message]);
    },
    applicationVersionSet: (version) => {
      run('application-version-set', ['--', version]);
    },
    leaderGet: () => json<Record<string, string>>(run('leader-get', ['--format=json'])) ?? {},
    leaderSet: (data) => {
      run(
        'leader-set',
        Object.entries(data).map(([k, v]) => `${k}=${v}`),
      );
    },
    actionGet: () => json<Record<string, unknown>>(run('action-get', ['--format=json'])) ?? {},
    actionSet: (results) => {
      const pairs = Object.entries(results).map(([k, v]) => `${k}=${v}`);
      if (pairs.length > 0) run('action-set', pairs);
    },
    actionFail: (message) => {
      run('action-fail', ['--', message]);
    },
    actionLog: (message) => {
      run('action-log', ['--', message]);
    },
    openPort: (spec) => {
      run('open-port', [spec]);
    },
    closePort: (spec) => {
      run('close-port', [spec]);
    },
    openedPorts: () => json<string[]>(run('opened-ports', ['--format=json'])) ?? [],
    unitAddress: (kind) => run('unit-get', [`${kind}-address`]).trim(),
    stateGet: () => json<Record<string, string>>(run('state-get', ['--format=json'])) ?? {},
    stateSet: (data) => {
      run('state-set', ['--file', '-'], JSON.stringify(data));
    },
    log: (level: LogLevel, message: string) => {
      run('juju-log', ['--log-level', level, '--', message]);
    },
    secretGet: (ref, opts) =>
      json<Record<string, string>>(
        run('secret-get', [
          ...secretRefArgs(ref),
          ...(opts.refresh ? ['--refresh'] : []),
          ...(opts.peek ? ['--peek'] : []),
          '--format=json',
        ]),
      ) ?? {},
    secretInfoGet: (ref) => {
      const out = json<Record<string, Omit<SecretInfo, 'id'>>>(
        // secret-info-get takes an id or a label, not both (Juju refuses both)
        run('secret-info-get', [...secretRefArgs(ref.id ? { id: ref.id } : ref), '--format=json']),
      );
      const [id, info] = Object.entries(out ?? {})[0] ?? [];
      if (!id) throw new SecretNotFoundError('secret-info-get', 1, 'secret not found');
      return { id, ...info };
    },
    secretAdd: (content, opts: SecretAddOptions) =>
      withContentFiles(content, (args) =>
        run('secret-add', [
          ...(opts.label ? ['--label', opts.label] : []),
          ...(opts.description ? ['--description', opts.description] : []),
          '--owner',
          opts.owner ?? 'application',
          ...args,
        ]).trim(),
      ),
    secretSet: (id, content, opts) => {
      withContentFiles(content, (args) =>
        run('secret-set', [
          id,
          ...(opts.label ? ['--label', opts.label] : []),
          ...(opts.description ? ['--description', opts.description] : []),
          ...args,
        ]),
      );
    },
    secretGrant: (id, rid, unit) => {
      run('secret-grant', [id, '-r', rid, ...(unit ? ['--unit', unit] : [])]);
    },
    secretRevoke: (id, rid, unit) => {
      run('secret-revoke', [id, '-r', rid, ...(unit ? ['--unit', unit] : [])]);
    },
    secretRemove: (id, revision) => {
      run('secret-remove', [id, ...(revision !== undefined ? ['--revision', String(revision)] : [])]);
    },
    secretIds: () => json<string[]>(run('secret-ids', ['--format=json'])) ?? [],
  };
}
