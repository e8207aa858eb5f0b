// Shell snippets every substrate runs the same way on its machines, so a
// machine answers probe and putFile alike whether it is local or over SSH.

import { randomBytes } from 'node:crypto';
import { posix } from 'node:path';

/** Quote one word for POSIX sh. */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

/** What a machine must offer the hook runtime. */
export const RUNTIME_COMMANDS = ['python3', 'tar', 'sh'] as const;

/**
 * One round trip for probe: hostname, the address the client reached (from
 * SSH_CONNECTION; empty locally), then one `missing <cmd>` line per absent command.
 */
export const PROBE_SCRIPT = [
  'uname -n',
  `printf '%s\\n' "\${SSH_CONNECTION:-}"`,
  `for c in ${RUNTIME_COMMANDS.join(' ')}; do command -v "$c" >/dev/null 2>&1 || printf 'missing %s\\n' "$c"; done`,
].join('; ');

export function parseProbeOutput(stdout: string): { hostname: string; serverAddress?: string; missing: string[] } {
  const lines = stdout.split('\n');
  const serverAddress = lines[1]?.trim().split(/\s+/)[2];
  return {
    hostname: lines[0]?.trim() ?? '',
    serverAddress: serverAddress || undefined,
    missing: lines
      .slice(2)
      .filter((l) => l.startsWith('missing '))
      .map((l) => l.slice('missing '.length).trim()),
  };
}

/** A shell command that writes its stdin to `path` atomically (temp file + rename) with `mode`. */
export function atomicWriteCommand(path: string, mode: number): string {
  if (!posix.isAbsolute(path)) throw new Error(`putFile needs an absolute path, got ${path}`);
  const dir = posix.dirname(path);
  const tmp = posix.join(dir, `.${posix.basename(path)}.cf-tmp-${randomBytes(6).toString('hex')}`);
  // umask 077: the content is never readable by others before the final chmod.
  return [
    'set -e',
    'umask 077',
    `mkdir -p ${shellQuote(dir)}`,
    `trap ${shellQuote(`rm -f ${shellQuote(tmp)}`)} EXIT`,
    `cat > ${shellQuote(tmp)}`,
    `chmod ${(mode & 0o7777).toString(8)} ${shellQuote(tmp)}`,
    `mv -f ${shellQuote(tmp)} ${shellQuote(path)}`,
    'trap - EXIT',
  ].join('\n');
}
