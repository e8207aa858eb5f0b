// A charm as an in-memory list of files, and the ways it comes and goes: a
// directory, a `.charm` zip, a tarball for shipping to a machine, a content
// hash that names it in the store.
import { createHash } from 'node:crypto';
import {
  chmod,
  lstat,
  mkdir,
  readdir,
  readFile,
  readlink,
  realpath,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import yauzl from 'yauzl';
import yazl from 'yazl';
import { CharmSymlinks } from './charm-symlinks.ts';
import { type CharmMeta, CharmValidationError, parseCharm } from './metadata.ts';

/** One file of a charm. `mode` holds permission bits only; a symlink has `symlinkTarget` and empty data. */
export interface CharmFile {
  /** Charm-relative POSIX path, no `.` or `..` segments. */
  path: string;
  mode: number;
  data: Buffer;
  symlinkTarget?: string;
}

export interface LoadedCharm {
  files: CharmFile[];
  meta: CharmMeta;
  /** contentHash(files): the store's identity for a charm revision. */
  hash: string;
}

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFLNK = 0o120000;

// Fixed so that identical content always packs to identical bytes. Built from
// local-time parts because zip's DOS timestamp is local time; the UTC extra
// field is left out (forceDosTimestamp) so the bytes don't depend on the zone.
const ZIP_MTIME = new Date(2000, 0, 1, 0, 0, 0);
const TAR_MTIME = 946684800; // 2000-01-01T00:00:00Z

// Build debris and per-unit state that must never become part of a charm.
function skipped(name: string): boolean {
  return (
    name === '.git' ||
    name === '__pycache__' ||
    name === '.unit-state.db' ||
    name.endsWith('.charm') ||
    // Byte code differs per build and would change the content hash.
    name.endsWith('.pyc')
  );
}

/** Read a charm directory: symlinks stay symlinks (refused if they leave the charm), exec bits are kept. */
export async function readCharmDir(dir: string): Promise<CharmFile[]> {
  const root = await realpath(dir);
  const files: CharmFile[] = [];
  async function walk(rel: string): Promise<void> {
    const entries = await readdir(path.join(root, rel), { withFileTypes: true });
    for (const entry of entries) {
      if (skipped(entry.name)) continue;
      const relPath = rel ? `${rel}/${entry.name}` : entry.name;
      const abs = path.join(root, relPath);
      const st = await lstat(abs);
      if (st.isSymbolicLink()) {
        const target = await readlink(abs);
        checkSymlinkTarget(relPath, target);
        files.push({ path: relPath, mode: 0o777, data: Buffer.alloc(0), symlinkTarget: target });
      } else if (st.isDirectory()) {
        await walk(relPath);
      } else if (st.isFile()) {
        files.push({ path: relPath, mode: st.mode & 0o777, data: await readFile(abs) });
      } else {
        throw new CharmValidationError(relPath, '', 'not a regular file, directory or symlink');
      }
    }
  }
  await walk('');
  const sorted = sortFiles(files);
  checkFileList(sorted);
  return sorted;
}

/**
 * How much a `.charm` may unpack to. A zip's declared sizes are not trusted:
 * bytes are counted as they inflate, and reading stops at the first byte past a
 * limit, so a small archive that inflates to gigabytes costs at most the limit.
 */
export interface ZipLimits {
  /** Uncompressed bytes of all entries together. */
  totalBytes: number;
  /** Uncompressed bytes of one entry. */
  entryBytes: number;
  /** Entries in the archive (directories included). */
  entries: number;
}

export const DEFAULT_ZIP_LIMITS: Readonly<ZipLimits> = {
  totalBytes: 256 * 1024 * 1024,
  entryBytes: 64 * 1024 * 1024,
  entries: 10_000,
};

/** No bounds: for archives the controller packed itself (the store's), already checked when uploaded. */
export const UNBOUNDED_ZIP_LIMITS: Readonly<ZipLimits> = {
  totalBytes: Number.POSITIVE_INFINITY,
  entryBytes: Number.POSITIVE_INFINITY,
  entries: Number.POSITIVE_INFINITY,
};

/**
 * The limits for uploaded charms: the defaults, each overridable by
 * CHARMFLOW_CHARM_MAX_BYTES, CHARMFLOW_CHARM_MAX_ENTRY_BYTES and
 * CHARMFLOW_CHARM_MAX_ENTRIES (read at each call, so a running controller's
 * environment is what counts).
 */
export function zipLimitsFromEnv(env: NodeJS.ProcessEnv = process.env): ZipLimits {
  const read = (name: string, fallback: number): number => {
    const raw = env[name];
    if (raw === undefined || raw === '') return fallback;
    const n = Number(raw);
    if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name} must be a positive whole number, got "${raw}"`);
    return n;
  };
  return {
    totalBytes: read('CHARMFLOW_CHARM_MAX_BYTES', DEFAULT_ZIP_LIMITS.totalBytes),
    entryBytes: read('CHARMFLOW_CHARM_MAX_ENTRY_BYTES', DEFAULT_ZIP_LIMITS.entryBytes),
    entries: read('CHARMFLOW_CHARM_MAX_ENTRIES', DEFAULT_ZIP_LIMITS.entries),
  };
}

/** A `.charm` unpacks to more than a ZipLimits allows. `file` is the entry at fault ('(archive)' for the count). */
export class CharmTooLargeError extends CharmValidationError {
  constructor(
    file: string,
    readonly limit: keyof ZipLimits,
    readonly max: number,
    problem: string,
  ) {
    super(file, '', problem);
  }
}

/** Read a `.charm` (zip). Unix modes come from the external attributes; S_IFLNK entries are symlinks. */
export async function readCharmZip(
  bytes: Uint8Array,
  limits: Readonly<ZipLimits> = zipLimitsFromEnv(),
): Promise<CharmFile[]> {
  // database drivers hand bytea back as a plain Uint8Array; yauzl needs a Buffer
  const buffer = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let zip: yauzl.ZipFile;
  try {
    zip = await yauzl.fromBufferPromise(buffer, { strictFileNames: false, validateEntrySizes: true });
  } catch (err) {
    throw new CharmValidationError('(archive)', '', `not a valid zip file: ${(err as Error).message}`);
  }
  const files: CharmFile[] = [];
  let total = 0;
  try {
    // The central directory's count is known before any entry is read.
    if (zip.entryCount > limits.entries) {
      throw new CharmTooLargeError(
        '(archive)',
        'entries',
        limits.entries,
        `${zip.entryCount} entries, more than the limit of ${limits.entries}`,
      );
    }
    for await (const entry of zip.eachEntry()) {
      const name = entry.fileName.replace(/\\/g, '/');
      if (name.endsWith('/')) continue; // directories are implied by their files
      const relPath = normalizeArchivePath(name);
      const madeByUnix = entry.versionMadeBy >> 8 === 3;
      const attr = entry.externalFileAttributes >>> 16;
      // A declared size over a limit is refused before inflating anything; one
      // under it is not believed, the bytes are counted as they come.
      checkUnpackedSize(relPath, entry.uncompressedSize, total, limits);
      const data = await readEntry(await zip.openReadStreamPromise(entry), relPath, total, limits);
      total += data.length;
      if (madeByUnix && (attr & S_IFMT) === S_IFLNK) {
        const target = data.toString('utf8');
        checkSymlinkTarget(relPath, target);
        files.push({ path: relPath, mode: 0o777, data: Buffer.alloc(0), symlinkTarget: target });
      } else {
        const mode = madeByUnix && attr !== 0 ? attr & 0o777 : defaultMode(relPath);
        files.push({ path: relPath, mode, data });
      }
    }
  } catch (err) {
    if (err instanceof CharmValidationError) throw err;
    // yauzl refuses unsafe entry names (absolute, `..`) and corrupt entries itself.
    throw new CharmValidationError('(archive)', '', `invalid zip entry: ${(err as Error).message}`);
  } finally {
    zip.close();
  }
  const sorted = sortFiles(files);
  checkFileList(sorted);
  return sorted;
}

const MiB = 1024 * 1024;
function bytesText(n: number): string {
  return n % MiB === 0 ? `${n / MiB} MiB` : `${n} bytes`;
}

/** Throws CharmTooLargeError if an entry of `size` bytes, after `before` bytes of earlier entries, breaks a limit. */
function checkUnpackedSize(relPath: string, size: number, before: number, limits: Readonly<ZipLimits>): void {
  if (size > limits.entryBytes) {
    throw new CharmTooLargeError(
      relPath,
      'entryBytes',
      limits.entryBytes,
      `unpacks to more than the limit of ${bytesText(limits.entryBytes)} per file`,
    );
  }
  if (before + size > limits.totalBytes) {
    throw new CharmTooLargeError(
      relPath,
      'totalBytes',
      limits.totalBytes,
      `the charm unpacks to more than the limit of ${bytesText(limits.totalBytes)} in all`,
    );
  }
}

/** An entry's bytes, counted as they inflate: the stream is dropped at the first chunk past a limit. */
async function readEntry(
  stream: Readable,
  relPath: string,
  before: number,
  limits: Readonly<ZipLimits>,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of stream) {
      size += (chunk as Buffer).length;
      checkUnpackedSize(relPath, size, before, limits);
      chunks.push(chunk as Buffer);
    }
  } finally {
    stream.destroy();
  }
  return Buffer.concat(chunks, size);
}

/** Pack files into a `.charm` zip. Sorted entries and a fixed mtime: the same content gives the same bytes. */
export async function packCharm(files: readonly CharmFile[]): Promise<Buffer> {
  const sorted = sortFiles(files);
  checkFileList(sorted);
  const zip = new yazl.ZipFile();
  for (const f of sorted) {
    if (f.symlinkTarget !== undefined) {
      zip.addBuffer(Buffer.from(f.symlinkTarget, 'utf8'), f.path, {
        mtime: ZIP_MTIME,
        mode: S_IFLNK | 0o777,
        compress: false,
        forceDosTimestamp: true,
      });
    } else {
      zip.addBuffer(f.data, f.path, {
        mtime: ZIP_MTIME,
        mode: S_IFREG | (f.mode & 0o777),
        compress: true,
        forceDosTimestamp: true,
      });
    }
  }
  zip.end();
  return readStream(zip.outputStream as Readable);
}

/**
 * sha256 over the sorted (path, type, permission bits, content or link target).
 * Independent of packing, so a charm uploaded as a dir or as a zip hashes the same.
 */
export function contentHash(files: readonly CharmFile[]): string {
  const h = createHash('sha256');
  for (const f of sortFiles(files)) {
    const isLink = f.symlinkTarget !== undefined;
    const body = isLink ? Buffer.from(f.symlinkTarget!, 'utf8') : f.data;
    // Length-prefixed fields: no two different file lists can produce the same stream.
    const header = `${f.path}\0${isLink ? 'l' : 'f'}\0${(isLink ? 0o777 : f.mode & 0o777).toString(8)}\0${body.length}\0`;
    h.update(`${Buffer.byteLength(header)}:`);
    h.update(header);
    h.update(body);
  }
  return h.digest('hex');
}

/** A charm directory or `.charm` file (path or bytes) → its files, merged metadata and content hash. */
export async function loadCharm(source: string | Buffer): Promise<LoadedCharm> {
  let files: CharmFile[];
  if (typeof source === 'string') {
    const st = await stat(source);
    files = st.isDirectory() ? await readCharmDir(source) : await readCharmZip(await readFile(source));
  } else {
    files = await readCharmZip(source);
  }
  return { files, meta: parseCharm(files), hash: contentHash(files) };
}

/** Write a charm into destDir with its symlinks and modes. Existing files are replaced; others are left alone. */
export async function extractCharm(files: readonly CharmFile[], destDir: string): Promise<void> {
  const sorted = sortFiles(files);
  checkFileList(sorted);
  await mkdir(destDir, { recursive: true });
  for (const f of sorted) {
    const dest = path.join(destDir, ...f.path.split('/'));
    await mkdir(path.dirname(dest), { recursive: true });
    // Replace whatever is there (a refresh may turn a file into a link or back).
    await rm(dest, { force: true, recursive: false }).catch(() => rm(dest, { force: true, recursive: true }));
    if (f.symlinkTarget !== undefined) {
      await symlink(f.symlinkTarget, dest);
    } else {
      await writeFile(dest, f.data, { mode: f.mode & 0o777 });
      // writeFile's mode is filtered by the umask; the charm's bits must survive as packed.
      await chmod(dest, f.mode & 0o777);
    }
  }
}

/**
 * A POSIX ustar tarball of the charm (modes and symlinks kept), so a charm can
 * reach a machine over one exec: `tar -x -p -f - -C <dir>` reading stdin.
 * Paths that don't fit ustar's 100+155 bytes get a PAX header.
 */
export function charmTarball(files: readonly CharmFile[]): Buffer {
  const sorted = sortFiles(files);
  checkFileList(sorted);
  const blocks: Buffer[] = [];
  const dirs = new Set<string>();
  for (const f of sorted) {
    const parts = f.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const dir = parts.slice(0, i).join('/');
      if (dirs.has(dir)) continue;
      dirs.add(dir);
      blocks.push(...tarEntry({ path: `${dir}/`, type: '5', mode: 0o755, size: 0 }));
    }
    if (f.symlinkTarget !== undefined) {
      blocks.push(...tarEntry({ path: f.path, type: '2', mode: 0o777, size: 0, linkTarget: f.symlinkTarget }));
    } else {
      blocks.push(...tarEntry({ path: f.path, type: '0', mode: f.mode & 0o777, size: f.data.length }));
      blocks.push(f.data, Buffer.alloc(padTo512(f.data.length)));
    }
  }
  blocks.push(Buffer.alloc(1024)); // end of archive: two zero blocks
  return Buffer.concat(blocks);
}

// ---- checks -----------------------------------------------------------------

function normalizeArchivePath(name: string): string {
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name) || parts.includes('..') || parts.length === 0) {
    throw new CharmValidationError(name, '', 'archive entry path escapes the charm');
  }
  return parts.join('/');
}

function checkSymlinkTarget(linkPath: string, target: string): void {
  // One link alone: a cheap first refusal; chains are resolved by checkFileList.
  new CharmSymlinks([{ path: linkPath, symlinkTarget: target }]).checkAll();
}

/** Paths unique and safe, symlinks inside the charm, and nothing stored beneath a symlink (it would be written through it). */
function checkFileList(files: readonly CharmFile[]): void {
  const seen = new Set<string>();
  const links = new Set<string>();
  for (const f of files) {
    if (normalizeArchivePath(f.path) !== f.path) throw new CharmValidationError(f.path, '', 'path is not normalized');
    if (seen.has(f.path)) throw new CharmValidationError(f.path, '', 'duplicate path');
    seen.add(f.path);
    if (f.symlinkTarget !== undefined) links.add(f.path);
  }
  for (const f of files) {
    const parts = f.path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/');
      if (links.has(parent)) throw new CharmValidationError(f.path, '', `lies beneath the symlink "${parent}"`);
      if (seen.has(parent)) throw new CharmValidationError(f.path, '', `lies beneath the file "${parent}"`);
    }
  }
  // Each link alone may stay inside while a chain of them climbs out (`c -> a/b/..`
  // with `a/b -> ..`): resolve them all against the charm's own tree.
  if (links.size > 0) new CharmSymlinks(files).checkAll();
}

// Zips made without unix attributes (Windows tools) still need runnable hooks.
function defaultMode(relPath: string): number {
  return relPath === 'dispatch' || /^(hooks|actions)\/[^/]+$/.test(relPath) ? 0o755 : 0o644;
}

function sortFiles(files: readonly CharmFile[]): CharmFile[] {
  return [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

async function readStream(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

// ---- tar ----------------------------------------------------------------------

interface TarHeader {
  path: string;
  type: '0' | '2' | '5';
  mode: number;
  size: number;
  linkTarget?: string;
}

function padTo512(n: number): number {
  return (512 - (n % 512)) % 512;
}

function tarEntry(h: TarHeader): Buffer[] {
  const out: Buffer[] = [];
  const split = splitUstarPath(h.path);
  const linkFits = h.linkTarget === undefined || Buffer.byteLength(h.linkTarget) <= 100;
  if (!split || !linkFits) {
    const records: string[] = [];
    if (!split) records.push(paxRecord('path', h.path));
    if (!linkFits) records.push(paxRecord('linkpath', h.linkTarget!));
    const body = Buffer.from(records.join(''), 'utf8');
    out.push(ustarHeader({ name: 'PaxHeader', prefix: '', type: 'x', mode: 0o644, size: body.length }));
    out.push(body, Buffer.alloc(padTo512(body.length)));
  }
  const names = split ?? { prefix: '', name: truncateBytes(h.path, 100) };
  out.push(
    ustarHeader({
      ...names,
      type: h.type,
      mode: h.mode,
      size: h.size,
      linkTarget: h.linkTarget === undefined ? undefined : truncateBytes(h.linkTarget, 100),
    }),
  );
  return out;
}

// A PAX record is "<len> key=value\n" where len counts the whole record, itself included.
function paxRecord(key: string, value: string): string {
  const rest = ` ${key}=${value}\n`;
  let len = Buffer.byteLength(rest);
  let total = len + String(len).length;
  if (String(total).length !== String(len).length) total = len + String(total).length;
  len = total;
  return `${len}${rest}`;
}

function splitUstarPath(p: string): { prefix: string; name: string } | undefined {
  if (Buffer.byteLength(p) <= 100) return { prefix: '', name: p };
  // Split at a slash so that prefix fits 155 bytes and name 100.
  for (let i = p.length - 1; i > 0; i--) {
    if (p[i] !== '/') continue;
    const prefix = p.slice(0, i);
    const name = p.slice(i + 1);
    if (Buffer.byteLength(prefix) <= 155 && Buffer.byteLength(name) <= 100 && name !== '') return { prefix, name };
  }
  return undefined;
}

function truncateBytes(s: string, max: number): string {
  const b = Buffer.from(s, 'utf8');
  return b.length <= max ? s : b.subarray(0, max).toString('utf8');
}

function ustarHeader(h: {
  name: string;
  prefix: string;
  type: string;
  mode: number;
  size: number;
  linkTarget?: string;
}): Buffer {
  const buf = Buffer.alloc(512);
  const put = (s: string, offset: number, len: number) => {
    buf.write(s, offset, Math.min(len, Buffer.byteLength(s)), 'utf8');
  };
  const octal = (n: number, offset: number, len: number) =>
    put(`${n.toString(8).padStart(len - 1, '0')}\0`, offset, len);
  put(h.name, 0, 100);
  octal(h.mode, 100, 8);
  octal(0, 108, 8); // uid
  octal(0, 116, 8); // gid
  octal(h.size, 124, 12);
  octal(TAR_MTIME, 136, 12);
  buf.fill(0x20, 148, 156); // checksum is computed with its own field as spaces
  put(h.type, 156, 1);
  if (h.linkTarget !== undefined) put(h.linkTarget, 157, 100);
  put('ustar\0', 257, 6);
  put('00', 263, 2);
  put('root', 265, 32);
  put('root', 297, 32);
  put(h.prefix, 345, 155);
  let sum = 0;
  for (const byte of buf) sum += byte;
  put(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8);
  return buf;
}
