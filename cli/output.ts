// Rendering for people (tables) and for programs (--format json|yaml).
import { stringify } from 'yaml';
import { CliError } from './api-client.ts';

export type Format = 'tabular' | 'json' | 'yaml';

export function parseFormat(value: string | undefined, fallback: Format = 'tabular'): Format {
  if (value === undefined) return fallback;
  if (value === 'json' || value === 'yaml' || value === 'tabular') return value;
  throw new CliError(`invalid --format "${value}": expected json, yaml or tabular`, 2);
}

/** Prints structured data in the chosen machine format. Returns false for tabular. */
export function printStructured(format: Format, data: unknown): boolean {
  if (format === 'json') {
    process.stdout.write(`${JSON.stringify(data, null, 2)}\n`);
    return true;
  }
  if (format === 'yaml') {
    process.stdout.write(stringify(data));
    return true;
  }
  return false;
}

/** A plain aligned table, Juju style: header row, columns separated by two spaces. */
export function table(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const cells = [headers, ...rows.map((r) => r.map((c) => (c === null || c === undefined ? '' : String(c))))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return cells
    .map((r) =>
      r
        .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i])))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}

export function since(iso: string | null): string {
  if (!iso) return '';
  const d = new Date(iso);
  return d
    .toISOString()
    .replace('T', ' ')
    .replace(/\.\d+Z$/, 'Z');
}
