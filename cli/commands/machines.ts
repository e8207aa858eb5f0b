import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import type { Machine } from '../../api/routes/machines.ts';
import type { Operation } from '../../api/schemas.ts';
import { ApiClient, CliError } from '../api-client.ts';
import { parseFormat, printStructured, table } from '../output.ts';
import { finishMutation } from './models.ts';

export interface SshSpec {
  user?: string;
  host: string;
  port?: number;
}

/** `ssh:[user@]host[:port]`; IPv6 addresses in brackets when a port follows. Bad specs exit 2. */
export function parseSshSpec(spec: string): SshSpec {
  const bad = (why: string) => new CliError(`invalid machine "${spec}": ${why}; expected ssh:[user@]host[:port]`, 2);
  if (!spec.startsWith('ssh:')) throw bad('only ssh: machines can be added');
  let rest = spec.slice('ssh:'.length);
  let user: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    user = rest.slice(0, at);
    rest = rest.slice(at + 1);
    if (!user) throw bad('empty user before "@"');
  }
  let host = rest;
  let portText: string | undefined;
  if (rest.startsWith('[')) {
    const close = rest.indexOf(']');
    if (close < 0) throw bad('unclosed "[" around the host');
    host = rest.slice(1, close);
    const after = rest.slice(close + 1);
    if (after !== '') {
      if (!after.startsWith(':')) throw bad(`unexpected "${after}" after the host`);
      portText = after.slice(1);
    }
  } else if (rest.split(':').length === 2) {
    [host, portText] = rest.split(':') as [string, string];
  }
  if (!host) throw bad('missing host');
  let port: number | undefined;
  if (portText !== undefined) {
    port = /^\d{1,5}$/.test(portText) ? Number(portText) : Number.NaN;
    if (!(port >= 1 && port <= 65535)) throw bad(`bad port "${portText}"`);
  }
  return { host, ...(user !== undefined ? { user } : {}), ...(port !== undefined ? { port } : {}) };
}

const DEFAULT_KEYS = ['id_ed25519', 'id_ecdsa', 'id_rsa'];

/** The key to log in with first: the one given, else the user's usual ones. */
export function readPrivateKey(file?: string): string {
  if (file !== undefined) {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      throw new CliError(`cannot read the private key ${file}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  }
  const tried = DEFAULT_KEYS.map((k) => join(homedir(), '.ssh', k));
  const found = tried.find((f) => existsSync(f));
  if (!found) throw new CliError(`no private key found (tried ${tried.join(', ')}); pass one with --private-key FILE`);
  return readFileSync(found, 'utf8');
}

const modelOption = (cmd: Command) =>
  cmd.option('-m, --model <model>', 'model name', process.env.CHARMFLOW_MODEL ?? 'default');

const enc = encodeURIComponent;

export function registerMachines(program: Command): void {
  modelOption(
    program
      .command('add-machine <spec>')
      .description('Add an existing host as a machine, over SSH: ssh:[user@]host[:port]')
      .option('--private-key <file>', 'key that logs in now (default: ~/.ssh/id_ed25519, id_ecdsa, then id_rsa)')
      .option('--no-wait', 'return at once with the operation id'),
  ).action(async (spec: string, opts: { model: string; privateKey?: string; wait: boolean }) => {
    const ssh = parseSshSpec(spec);
    const privateKey = readPrivateKey(opts.privateKey);
    const api = new ApiClient();
    const { operation, machineId } = await api.post<{ operation: Operation; machineId: string }>(
      `/v1/models/${enc(opts.model)}/machines`,
      { ssh, privateKey },
    );
    if (opts.wait === false) process.stdout.write(`created machine ${machineId} (provisioning)\n`);
    await finishMutation(api, operation, opts, () => `created machine ${machineId}`);
  });

  modelOption(
    program
      .command('machines')
      .description("List a model's machines")
      .option('--format <format>', 'json, yaml or tabular'),
  ).action(async (opts: { model: string; format?: string }) => {
    const format = parseFormat(opts.format);
    const { machines } = await new ApiClient().get<{ machines: Machine[] }>(`/v1/models/${enc(opts.model)}/machines`);
    if (printStructured(format, { machines })) return;
    if (machines.length === 0) {
      process.stdout.write(`Model "${opts.model}" has no machines.\n`);
      return;
    }
    process.stdout.write(
      `${table(
        ['Machine', 'State', 'Address', 'Hostname', 'Units', 'Message'],
        machines.map((m) => [
          m.id,
          m.life === 'alive' ? m.state : `${m.state} (${m.life})`,
          m.address,
          m.hostname,
          m.units.join(','),
          m.message,
        ]),
      )}\n`,
    );
  });

  modelOption(
    program
      .command('remove-machine <id>')
      .description('Remove a machine; --force even with units on it or the host unreachable')
      .option('--force', 'remove it whatever state it is in')
      .option('--no-wait', 'return at once with the operation id'),
  ).action(async (id: string, opts: { model: string; force?: boolean; wait: boolean }) => {
    if (!/^\d+$/.test(id)) throw new CliError(`invalid machine "${id}": expected a machine number`, 2);
    const api = new ApiClient();
    const query = opts.force ? '?force=true' : '';
    const { operation } = await api.delete<{ operation: Operation }>(
      `/v1/models/${enc(opts.model)}/machines/${id}${query}`,
    );
    await finishMutation(api, operation, opts, () => `removed machine ${id}`);
  });
}
