// Commands of controller backups (issue 11): create-backup, backups,
// download-backup ID [-o FILE], restore-backup FILE.
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, readFile, rename, rm, stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Command } from 'commander';
import type { ControllerBackup, RestoreSummary } from '../../api/routes/controller-backup-routes.ts';
import type { Operation } from '../../api/schemas.ts';
import { ApiClient, CliError, resolveEndpoint } from '../api-client.ts';
import { parseFormat, printStructured, since, table } from '../output.ts';
import { waitForOperation } from '../wait.ts';

function humanSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KiB', 'MiB', 'GiB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

function modelsOf(b: ControllerBackup): string {
  return (b.models ?? []).map((m) => `${m.name} (${m.applications} app, ${m.units} unit)`).join(', ');
}

function printRestore(r: RestoreSummary, dryRun: boolean): void {
  const lines: string[] = [];
  const verb = dryRun ? 'would restore' : 'restoring';
  lines.push(
    `backup ${r.backup.id} (made ${since(r.backup.createdAt)} by charmflow ${r.backup.controllerVersion}): ${verb} ` +
      (r.models.length > 0
        ? `model(s) ${r.models.map((m) => m.name + (m.replaces ? ' (replacing the empty one here)' : '')).join(', ')}`
        : 'no model'),
  );
  for (const k of r.kept) lines.push(`  model ${k.model} left as it is: ${k.reason}`);
  if (r.charms.length > 0) lines.push(`  charm revisions added: ${r.charms.join(', ')}`);
  for (const c of r.charmsKept) lines.push(`  charm ${c.charm} not added: ${c.reason}`);
  for (const i of r.integrationsKept) lines.push(`  relation ${i.id} not restored: ${i.reason}`);
  for (const t of r.notRestored) lines.push(`  table ${t.table} (${t.rows} rows) is in the file but not restored`);
  if (r.resealed) lines.push("  secrets sealed again with this controller's key");
  process.stdout.write(`${lines.join('\n')}\n`);
}

export function registerControllerBackups(program: Command): void {
  program
    .command('create-backup')
    .description(
      "Back up the controller: every model, machine, application, unit and relation, the charm store, credentials and tokens, to <data dir>/backups/controller/<id>.cfbackup (it holds the controller's secret key: keep it as safe as the data dir)",
    )
    .option('--no-wait', 'return at once with the operation id')
    .option('--format <format>', 'json or yaml: print the backup record when done')
    .action(async (opts: { wait: boolean; format?: string }) => {
      const format = parseFormat(opts.format);
      const api = new ApiClient();
      const { operation, backup } = await api.post<{ operation: Operation; backup: ControllerBackup }>(
        '/v1/controller/backups',
      );
      if (!opts.wait) {
        if (printStructured(format, { operation, backup })) return;
        process.stdout.write(
          `backup ${backup.id}: operation ${operation.id} started; follow it with: charmflow show-operation ${operation.id}\n`,
        );
        return;
      }
      await waitForOperation(api, operation, { quiet: format !== 'tabular' });
      const done = await api.get<ControllerBackup>(`/v1/controller/backups/${backup.id}`);
      if (printStructured(format, done)) return;
      process.stdout.write(
        `Backup ${done.id} created: ${humanSize(done.size)}, sha256 ${done.sha256}\n` +
          `  models: ${modelsOf(done) || 'none'}\n` +
          `  download it with: charmflow download-backup ${done.id}\n`,
      );
    });

  program
    .command('backups')
    .description("List the controller's backups, newest first")
    .option('--format <format>', 'json, yaml or tabular')
    .action(async (opts: { format?: string }) => {
      const format = parseFormat(opts.format);
      const { backups } = await new ApiClient().get<{ backups: ControllerBackup[] }>('/v1/controller/backups');
      if (printStructured(format, { backups })) return;
      if (backups.length === 0) {
        process.stdout.write('No backups. Make one with: charmflow create-backup\n');
        return;
      }
      process.stdout.write(
        `${table(
          ['ID', 'State', 'Size', 'Created', 'SHA256', 'Models'],
          backups.map((b) => [
            b.id,
            b.state === 'failed' ? `failed: ${b.error ?? ''}` : b.state,
            b.state === 'ready' ? humanSize(b.size) : '',
            since(b.createdAt),
            b.sha256.slice(0, 12),
            modelsOf(b),
          ]),
        )}\n`,
      );
    });

  program
    .command('download-backup <id>')
    .description('Download a backup file (readable by you only); its sha256 is checked')
    .option('-o, --output <file>', 'where to write it (default: charmflow-backup-<id>.cfbackup here)')
    .action(async (id: string, opts: { output?: string }) => {
      const endpoint = resolveEndpoint();
      const out = resolve(opts.output ?? `charmflow-backup-${id}.cfbackup`);
      let res: Response;
      try {
        res = await fetch(`${endpoint.url}/v1/controller/backups/${encodeURIComponent(id)}/download`, {
          headers: { authorization: `Bearer ${endpoint.token}` },
        });
      } catch (err) {
        const cause = (err as { cause?: { code?: string } }).cause?.code ?? String(err);
        throw new CliError(`cannot reach the controller at ${endpoint.url} (${cause}); is \`charmflow up\` running?`);
      }
      if (!res.ok || !res.body) {
        const text = await res.text();
        let message = `HTTP ${res.status}`;
        try {
          message = (JSON.parse(text) as { message?: string }).message ?? message;
        } catch {
          // not JSON
        }
        throw new CliError(message);
      }
      const expected = res.headers.get('x-charmflow-sha256');
      const hash = createHash('sha256');
      let size = 0;
      const tmp = `${out}.part-${process.pid}`;
      try {
        await pipeline(
          Readable.fromWeb(res.body as import('node:stream/web').ReadableStream<Uint8Array>),
          new Transform({
            transform(chunk: Buffer, _enc, cb) {
              hash.update(chunk);
              size += chunk.length;
              cb(null, chunk);
            },
          }),
          createWriteStream(tmp, { mode: 0o600 }),
        );
        await chmod(tmp, 0o600);
        const sha = hash.digest('hex');
        if (expected && sha !== expected) {
          throw new CliError(`the download of backup ${id} is damaged: sha256 ${sha}, the controller has ${expected}`);
        }
        await rename(tmp, out);
        process.stdout.write(`${out}\n${humanSize(size)}, sha256 ${sha}\n`);
      } finally {
        await rm(tmp, { force: true });
      }
    });

  program
    .command('restore-backup <file>')
    .description(
      'Restore a backup file: it is checked whole first; then the models this controller lacks come back (machines, applications, units, relations, history) with the charm revisions, credentials and tokens it lacks, and their unit agents start again without rerunning install or start',
    )
    .option('--model <names>', 'restore only these models (comma-separated, or repeat the option)', collect, [])
    .option('--dry-run', 'check the file and print what would be restored; change nothing')
    .option('--no-wait', 'return at once with the operation id')
    .option('--format <format>', 'json or yaml: print the restore summary')
    .action(async (file: string, opts: { model: string[]; dryRun?: boolean; wait: boolean; format?: string }) => {
      const format = parseFormat(opts.format);
      const info = await stat(file).catch(() => null);
      if (!info?.isFile()) throw new CliError(`no backup file at ${file}`);
      const body = await readFile(file);
      const q = new URLSearchParams();
      const models = opts.model
        .flatMap((m) => m.split(','))
        .map((m) => m.trim())
        .filter(Boolean);
      if (models.length > 0) q.set('models', models.join(','));
      if (opts.dryRun) q.set('dryRun', 'true');
      const api = new ApiClient();
      const answer = await api.request<{ operation?: Operation; restore: RestoreSummary }>(
        'POST',
        `/v1/controller/restore${q.size > 0 ? `?${q}` : ''}`,
        body,
      );
      if (opts.dryRun || !answer.operation) {
        if (!printStructured(format, answer)) printRestore(answer.restore, true);
        return;
      }
      if (!opts.wait) {
        if (printStructured(format, answer)) return;
        printRestore(answer.restore, false);
        process.stdout.write(
          `operation ${answer.operation.id} (restore-backup) started; follow it with: charmflow show-operation ${answer.operation.id}\n`,
        );
        return;
      }
      if (format === 'tabular') printRestore(answer.restore, false);
      const done = await waitForOperation(api, answer.operation, { quiet: format !== 'tabular' });
      if (printStructured(format, { ...answer, operation: done })) return;
      process.stdout.write(`Restored backup ${answer.restore.backup.id}.\n`);
    });
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}
