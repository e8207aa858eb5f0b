// Build a Python `ops` charm the way charmcraft lays it out, without charmcraft:
// the source files, metadata/config/actions generated from charmcraft.yaml, a
// manifest.yaml, and the Python dependencies installed into `venv/` (which
// charmcraft's dispatch puts on PYTHONPATH). The pip install is cached by
// requirements hash, so rebuilding is cheap.
import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { access, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { type CharmFile, contentHash, packCharm, readCharmDir } from './charm-archive.ts';
import {
  CHARMCRAFT_METADATA_KEYS,
  CharmcraftYaml,
  type CharmMeta,
  CharmValidationError,
  loadCharmYaml,
  parseCharm,
  validateCharmFile,
} from './metadata.ts';

const run = promisify(execFile);

export interface BuiltCharm {
  outFile: string;
  meta: CharmMeta;
  hash: string;
}

export interface BuildOpsCharmOptions {
  /** Where pip installs are cached; default `<repo>/node_modules/.cache/charmflow/pip`, or $CHARMFLOW_CACHE_DIR/pip. */
  cacheDir?: string;
  python?: string;
}

/** Pack the ops charm in srcDir, with its requirements installed under venv/, into outFile (a `.charm`). */
export async function buildOpsCharm(
  srcDir: string,
  outFile: string,
  opts: BuildOpsCharmOptions = {},
): Promise<BuiltCharm> {
  const python = opts.python ?? 'python3';
  // A stale in-tree venv/ (from a manual build) must not shadow the fresh one.
  const source = (await readCharmDir(srcDir)).filter((f) => !f.path.startsWith('venv/') && f.path !== 'build.sh');
  const byPath = new Map(source.map((f) => [f.path, f]));
  if (!byPath.has('dispatch'))
    throw new CharmValidationError('dispatch', '', 'missing: an ops charm needs a dispatch script');

  const files: CharmFile[] = [...source, ...generatedFiles(byPath)];
  const requirements = byPath.get('requirements.txt');
  if (requirements && requirements.data.toString('utf8').trim() !== '') {
    const venvDir = await installRequirements(requirements.data, python, opts.cacheDir ?? defaultCacheDir());
    for (const f of await readCharmDir(venvDir)) files.push({ ...f, path: `venv/${f.path}` });
  }

  const meta = parseCharm(files);
  const zip = await packCharm(files);
  await mkdir(path.dirname(path.resolve(outFile)), { recursive: true });
  await writeFile(outFile, zip);
  return { outFile, meta, hash: contentHash(files) };
}

/** metadata.yaml, config.yaml, actions.yaml from charmcraft.yaml's inline sections, and manifest.yaml, as charmcraft packs them. */
function generatedFiles(byPath: ReadonlyMap<string, CharmFile>): CharmFile[] {
  const out: CharmFile[] = [];
  const add = (p: string, doc: unknown) => {
    if (!byPath.has(p)) out.push({ path: p, mode: 0o644, data: Buffer.from(stringify(doc), 'utf8') });
  };
  const ccFile = byPath.get('charmcraft.yaml');
  if (ccFile) {
    const cc = validateCharmFile(
      'charmcraft.yaml',
      CharmcraftYaml,
      loadCharmYaml('charmcraft.yaml', ccFile.data.toString('utf8')),
    );
    if (cc.name !== undefined) {
      const metadata: Record<string, unknown> = {};
      for (const key of CHARMCRAFT_METADATA_KEYS) {
        if (cc[key] === undefined) continue;
        metadata[key === 'title' ? 'display-name' : key] = cc[key];
      }
      add('metadata.yaml', metadata);
    }
    if (cc.config != null) add('config.yaml', cc.config);
    if (cc.actions != null) add('actions.yaml', cc.actions);
  }
  add('manifest.yaml', {
    'charmcraft-version': 'charmflow',
    analysis: {
      attributes: [
        { name: 'language', result: 'python' },
        { name: 'framework', result: 'operator' },
      ],
    },
    bases: [{ name: 'ubuntu', channel: '22.04', architectures: [debianArch()] }],
  });
  return out;
}

async function installRequirements(requirements: Buffer, python: string, cacheDir: string): Promise<string> {
  // The interpreter's version and platform pick the wheels, so they are part of the key.
  const { stdout: pyTag } = await run(python, [
    '-c',
    'import sys,platform;print(sys.version_info[:2],platform.machine())',
  ]);
  const key = createHash('sha256').update(requirements).update(pyTag).digest('hex').slice(0, 24);
  const dir = path.join(cacheDir, key);
  if (await exists(path.join(dir, '.complete'))) return path.join(dir, 'venv');

  await mkdir(cacheDir, { recursive: true });
  const tmp = path.join(cacheDir, `.tmp-${randomUUID()}`);
  try {
    await mkdir(tmp, { recursive: true });
    await writeFile(path.join(tmp, 'requirements.txt'), requirements);
    await run(
      python,
      [
        '-m',
        'pip',
        'install',
        '--quiet',
        '--disable-pip-version-check',
        '--no-compile',
        '--target',
        path.join(tmp, 'venv'),
        '-r',
        path.join(tmp, 'requirements.txt'),
      ],
      { maxBuffer: 16 * 1024 * 1024, env: { ...process.env, PIP_NO_INPUT: '1' } },
    );
    await writeFile(path.join(tmp, '.complete'), '');
    // rename is atomic: a concurrent build either wins or finds the finished one.
    await rename(tmp, dir).catch(async (err: NodeJS.ErrnoException) => {
      if (!(await exists(path.join(dir, '.complete')))) throw err;
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return path.join(dir, 'venv');
}

function defaultCacheDir(): string {
  if (process.env.CHARMFLOW_CACHE_DIR) return path.join(process.env.CHARMFLOW_CACHE_DIR, 'pip');
  const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  return path.join(repoRoot, 'node_modules', '.cache', 'charmflow', 'pip');
}

function debianArch(): string {
  const map: Record<string, string> = {
    x64: 'amd64',
    arm64: 'arm64',
    ppc64: 'ppc64el',
    s390x: 's390x',
    riscv64: 'riscv64',
  };
  return map[process.arch] ?? process.arch;
}

async function exists(p: string): Promise<boolean> {
  return access(p).then(
    () => true,
    () => false,
  );
}
