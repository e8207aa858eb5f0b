// Charm development: `charmflow init` scaffolds a charm (TypeScript on
// @charmflow/ops, plain shell hooks, or Python ops) with a test, and
// `charmflow pack` turns a charm directory into a `.charm`: a TypeScript charm is
// bundled with esbuild into one JS file per entry and gets a `dispatch` that runs
// it with Node.js; any other charm is packed as it is.
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Command } from 'commander';
import { type CharmFile, contentHash, packCharm } from '../../charm/charm-archive.ts';
import { CharmValidationError, parseCharm } from '../../charm/metadata.ts';
import { generateCharmTypes } from '../../sdk/codegen.ts';
import { CliError } from '../api-client.ts';
import { packCharmPath } from '../charm-upload.ts';

/** The line in a packed TypeScript charm's dispatch that tells charmflow it needs Node.js on the machine. */
export const NODE_RUNTIME_MARKER = '# charmflow-runtime: node';

/** The oldest Node.js the bundles run on (Ubuntu 22.04's distro nodejs is 12). */
const NODE_TARGET = 'node12';

/** The SDK's directory: found from here whether charmflow runs from its sources or from dist/. */
export function sdkDir(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(path.join(dir, 'sdk', 'package.json'))) return path.join(dir, 'sdk');
    const up = path.dirname(dir);
    if (up === dir) throw new CliError('cannot find the @charmflow/ops SDK (sdk/) beside charmflow');
    dir = up;
  }
}

const YAML_FILES = ['metadata.yaml', 'config.yaml', 'actions.yaml', 'charmcraft.yaml', 'manifest.yaml'];
const EXTRA_FILES = ['README.md', 'LICENSE', 'icon.svg', 'CONTRIBUTING.md'];

/** A TypeScript charm: one whose entry is src/charm.ts. */
export function isTsCharm(dir: string): boolean {
  return existsSync(path.join(dir, 'src', 'charm.ts'));
}

function dispatchScript(): string {
  return `#!/bin/sh
${NODE_RUNTIME_MARKER}
# Written by charmflow pack: runs the charm's bundle with Node.js. charmflow makes sure
# node is on the machine (the distro's nodejs) before the first hook of this charm.
if ! command -v node >/dev/null 2>&1; then
  echo "ERROR this charm is written in TypeScript and needs Node.js, but node is not on PATH" >&2
  exit 1
fi
JUJU_DISPATCH_PATH="\${JUJU_DISPATCH_PATH:-$0}" exec node "$(dirname "$0")/dist/charm.cjs"
`;
}

export interface PackedCharm {
  name: string;
  archive: Buffer;
  sha256: string;
  /** True when the charm's types were written again from its YAML. */
  typesUpdated: boolean;
}

/**
 * Packs a TypeScript charm: refreshes src/charm-types.ts from its YAML, bundles
 * src/charm.ts (and the entries listed in package.json `charmflow.bundle`) into
 * dist/<name>.cjs, and zips them with the YAML, extra docs and a `dispatch`.
 */
export async function packTsCharm(dir: string): Promise<PackedCharm> {
  const typesPath = path.join(dir, 'src', 'charm-types.ts');
  const types = generateCharmTypes(dir);
  const typesUpdated = !existsSync(typesPath) || readFileSync(typesPath, 'utf8') !== types;
  if (typesUpdated) writeFileSync(typesPath, types);

  let extra: string[] = [];
  const pkgPath = path.join(dir, 'package.json');
  if (existsSync(pkgPath)) {
    const pkg = JSON.parse(readFileSync(pkgPath, 'utf8')) as { charmflow?: { bundle?: unknown } };
    const listed = pkg.charmflow?.bundle;
    if (listed !== undefined && (!Array.isArray(listed) || !listed.every((e) => typeof e === 'string'))) {
      throw new CliError(`${pkgPath}: charmflow.bundle must be a list of entry files`);
    }
    extra = (listed as string[] | undefined) ?? [];
  }
  const entries = ['src/charm.ts', ...extra];
  const names = new Set<string>();
  for (const e of entries) {
    if (!existsSync(path.join(dir, e))) throw new CliError(`no ${e} in ${dir}`);
    const stem = path.basename(e).replace(/\.[cm]?[tj]s$/, '');
    if (names.has(stem)) throw new CliError(`two bundle entries would both be dist/${stem}.cjs`);
    names.add(stem);
  }

  const { build } = await import('esbuild');
  const sdk = sdkDir();
  const result = await build({
    absWorkingDir: path.resolve(dir),
    entryPoints: Object.fromEntries(entries.map((e) => [path.basename(e).replace(/\.[cm]?[tj]s$/, ''), e])),
    outdir: 'dist',
    outExtension: { '.js': '.cjs' },
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: NODE_TARGET,
    alias: { '@charmflow/ops': path.join(sdk, 'index.ts') },
    write: false,
    logLevel: 'silent',
    legalComments: 'none',
  }).catch((err: Error & { errors?: { text: string; location?: { file: string; line: number } | null }[] }) => {
    const first = err.errors?.[0];
    const where = first?.location ? `${first.location.file}:${first.location.line}: ` : '';
    throw new CliError(`cannot bundle ${dir}: ${where}${first?.text ?? err.message}`);
  });

  const files: CharmFile[] = [];
  for (const name of [...YAML_FILES, ...EXTRA_FILES]) {
    const p = path.join(dir, name);
    if (existsSync(p)) files.push({ path: name, mode: 0o644, data: readFileSync(p) });
  }
  files.push({ path: 'dispatch', mode: 0o755, data: Buffer.from(dispatchScript()) });
  for (const out of result.outputFiles) {
    files.push({ path: `dist/${path.basename(out.path)}`, mode: 0o644, data: Buffer.from(out.contents) });
  }
  let meta: { name: string };
  try {
    meta = parseCharm(files);
  } catch (err) {
    if (err instanceof CharmValidationError) throw new CliError(`invalid charm ${dir}: ${err.message}`);
    throw err;
  }
  return { name: meta.name, archive: await packCharm(files), sha256: contentHash(files), typesUpdated };
}

// ---- init -------------------------------------------------------------------

export type CharmLang = 'ts' | 'bash' | 'python';

const NAME_RE = /^[a-z][a-z0-9]*(-[a-z0-9]+)*$/;

function className(name: string): string {
  return `${name.replace(/(^|-)([a-z0-9])/g, (_m, _d, c: string) => c.toUpperCase())}Charm`;
}

function metadataYaml(name: string, lang: CharmLang): string {
  return `name: ${name}
summary: ${name}, a charm (${lang === 'ts' ? 'TypeScript, @charmflow/ops' : lang === 'bash' ? 'shell hooks' : 'Python ops'}).
description: |
  Describe what ${name} runs and how to use it.
`;
}

const CONFIG_YAML = `options:
  greeting:
    type: string
    default: hello
    description: What the unit says in its status.
`;

const ACTIONS_YAML = `greet:
  description: Answers a greeting for someone.
  params:
    name:
      type: string
      description: Who to greet.
  required: [name]
`;

function tsFiles(name: string, sdk: string): Record<string, string> {
  const cls = className(name);
  return {
    'metadata.yaml': metadataYaml(name, 'ts'),
    'config.yaml': CONFIG_YAML,
    'actions.yaml': ACTIONS_YAML,
    'package.json': `${JSON.stringify(
      {
        name,
        private: true,
        type: 'module',
        scripts: { test: 'node --import tsx --test test/*.test.ts', pack: 'charmflow pack .' },
        dependencies: { '@charmflow/ops': `file:${sdk}` },
        devDependencies: { tsx: '^4.0.0', typescript: '^5.0.0', '@types/node': '^20.0.0', yaml: '^2.0.0' },
      },
      null,
      2,
    )}\n`,
    'tsconfig.json': `${JSON.stringify(
      {
        compilerOptions: {
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          strict: true,
          noEmit: true,
          allowImportingTsExtensions: true,
          skipLibCheck: true,
          types: ['node'],
          paths: { '@charmflow/ops': [`${sdk}/index.ts`], '@charmflow/ops/*': [`${sdk}/*.ts`] },
        },
        include: ['src', 'test'],
      },
      null,
      2,
    )}\n`,
    '.gitignore': 'node_modules/\ndist/\n*.charm\n',
    'src/charm.ts': `// ${name}: handlers for the events it cares about. \`charmflow pack\` bundles this file.
import { Charm, type Framework, run, Status } from '@charmflow/ops';
import type { Types } from './charm-types.ts';

export class ${cls} extends Charm<Types> {
  /** Kept for this unit across hooks; saved only when a hook succeeds. */
  readonly stored = this.storedState({ greetings: 0 });

  constructor(framework: Framework) {
    super(framework);
    this.on('install', () => this.log.info('installing ${name}'));
    this.on('config-changed', () => {
      // this.config is typed from config.yaml: a key it does not have is a compile error.
      this.unit.setStatus(Status.active(\`\${this.config.greeting} from \${this.unit.name}\`));
    });
    this.on('greet-action', (event) => {
      this.stored.greetings += 1;
      return { message: \`\${this.config.greeting}, \${event.params.name}\`, count: this.stored.greetings };
    });
  }
}

run(${cls});
`,
    'test/charm.test.ts': `// ${name}'s tests: the harness runs each event against an in-memory state.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { Harness } from '@charmflow/ops/testing';
import { ${cls} } from '../src/charm.ts';

const charmDir = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const harness = new Harness(${cls}, { charmDir });

test('config-changed: active with the greeting', async () => {
  const out = await harness.run('config-changed', { config: { greeting: 'hi' } });
  assert.equal(out.error, null);
  assert.deepEqual(out.unitStatus, { status: 'active', message: 'hi from ${name}/0' });
});

test('the greet action answers and counts', async () => {
  const out = await harness.runAction('greet', { stored: { stored: { greetings: 2 } } }, { name: 'Ada' });
  assert.deepEqual(out.actionResults, { message: 'hello, Ada', count: '3' });
  assert.deepEqual(out.stored.stored, { greetings: 3 });
});
`,
  };
}

function bashFiles(name: string): Record<string, string> {
  const common = `#!/bin/sh
# Every hook of ${name}: hooks/<name> run this script, which acts on the name it was called by.
set -eu
hook="$(basename "$0")"
case "$hook" in
  install)
    juju-log --log-level INFO -- "installing ${name}"
    ;;
  config-changed | start | update-status)
    status-set active "$(config-get greeting) from $JUJU_UNIT_NAME"
    ;;
  *)
    juju-log --log-level DEBUG -- "$hook: nothing to do"
    ;;
esac
`;
  return {
    'metadata.yaml': metadataYaml(name, 'bash'),
    'config.yaml': CONFIG_YAML,
    'hooks/common.sh': common,
    'test/hooks.test.sh': `#!/bin/sh
# Runs hooks/config-changed with stand-in hook tools and checks the status it sets.
set -eu
here="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/config-get" <<'TOOL'
#!/bin/sh
echo howdy
TOOL
printf '#!/bin/sh\\necho "$*" >>"%s/status"\\n' "$tmp" >"$tmp/status-set"
printf '#!/bin/sh\\nexit 0\\n' >"$tmp/juju-log"
chmod +x "$tmp"/*
PATH="$tmp:$PATH" JUJU_UNIT_NAME=${name}/0 "$here/hooks/config-changed"
want="active howdy from ${name}/0"
got="$(cat "$tmp/status")"
[ "$got" = "$want" ] || { echo "FAIL: status-set $got, want $want" >&2; exit 1; }
echo "ok: config-changed sets \\"$want\\""
`,
  };
}

function pythonFiles(name: string): Record<string, string> {
  const cls = className(name);
  return {
    'charmcraft.yaml': `type: charm
name: ${name}
summary: ${name}, a charm (Python ops).
description: |
  Describe what ${name} runs and how to use it.
base: ubuntu@22.04
platforms:
  amd64:
parts:
  charm:
    plugin: charm
config:
  options:
    greeting:
      type: string
      default: hello
      description: What the unit says in its status.
`,
    'requirements.txt': 'ops>=2.15\n',
    dispatch:
      '#!/bin/sh\nJUJU_DISPATCH_PATH="$' +
      '{JUJU_DISPATCH_PATH:-$0}" PYTHONPATH=lib:venv /usr/bin/env python3 ./src/charm.py\n',
    'src/charm.py': `#!/usr/bin/env python3
"""${name}: an ops charm."""

import ops


class ${cls}(ops.CharmBase):
    def __init__(self, framework: ops.Framework):
        super().__init__(framework)
        framework.observe(self.on.config_changed, self._on_config_changed)

    def _on_config_changed(self, _: ops.ConfigChangedEvent):
        self.unit.status = ops.ActiveStatus(f"{self.config['greeting']} from {self.unit.name}")


if __name__ == "__main__":
    ops.main(${cls})
`,
    'tests/test_charm.py': `"""${name}'s tests with ops.testing (pip install ops[testing]; run with pytest)."""

import ops
from ops import testing

from charm import ${cls}


def test_config_changed_sets_active():
    ctx = testing.Context(${cls})
    out = ctx.run(ctx.on.config_changed(), testing.State(config={"greeting": "hi"}))
    assert out.unit_status == ops.ActiveStatus("hi from ${name}/0")
`,
  };
}

const HOOKS = ['install', 'config-changed', 'start', 'update-status', 'upgrade-charm', 'stop', 'remove'];

/** Writes a new charm into `dir` (which must not exist or be empty). Returns the files written. */
export function initCharm(name: string, lang: CharmLang, dir: string): string[] {
  if (!NAME_RE.test(name)) throw new CliError(`"${name}" is not a charm name (lower-case letters, digits, dashes)`);
  if (existsSync(dir) && readdirSync(dir).length > 0) throw new CliError(`${dir} exists and is not empty`);
  const sdk = sdkDir();
  const files = lang === 'ts' ? tsFiles(name, sdk) : lang === 'bash' ? bashFiles(name) : pythonFiles(name);
  if (lang === 'ts') files['src/charm-types.ts'] = '';
  for (const [rel, text] of Object.entries(files)) {
    const p = path.join(dir, rel);
    mkdirSync(path.dirname(p), { recursive: true });
    writeFileSync(p, text);
    if (rel === 'dispatch' || rel.startsWith('hooks/') || rel.endsWith('.sh')) chmodSync(p, 0o755);
  }
  if (lang === 'ts') {
    writeFileSync(path.join(dir, 'src', 'charm-types.ts'), generateCharmTypes(dir));
    // Resolvable before any npm install: the SDK beside this charmflow.
    mkdirSync(path.join(dir, 'node_modules', '@charmflow'), { recursive: true });
    symlinkSync(sdk, path.join(dir, 'node_modules', '@charmflow', 'ops'));
  }
  if (lang === 'bash') {
    for (const h of HOOKS) symlinkSync('common.sh', path.join(dir, 'hooks', h));
  }
  return Object.keys(files).sort();
}

export function registerCharmDev(program: Command): void {
  program
    .command('init <name>')
    .description('Scaffold a new charm with a test: TypeScript on @charmflow/ops (default), shell hooks, or Python ops')
    .option('--lang <lang>', 'ts, bash or python', 'ts')
    .option('--dir <dir>', 'where to write it (default: ./<name>)')
    .action((name: string, opts: { lang: string; dir?: string }) => {
      if (!['ts', 'bash', 'python'].includes(opts.lang)) {
        throw new CliError(`unknown --lang ${opts.lang}: expected ts, bash or python`);
      }
      const dir = path.resolve(opts.dir ?? name);
      const files = initCharm(name, opts.lang as CharmLang, dir);
      const next =
        opts.lang === 'ts'
          ? `cd ${dir} && node --import tsx --test test/*.test.ts && charmflow pack .`
          : opts.lang === 'bash'
            ? `${dir}/test/hooks.test.sh && charmflow pack ${dir}`
            : `cd ${dir} && python3 -m pytest tests (with ops[testing] installed)`;
      process.stdout.write(`Created charm ${name} (${opts.lang}) in ${dir}:\n  ${files.join('\n  ')}\nNext: ${next}\n`);
    });

  program
    .command('pack [dir]')
    .description(
      'Pack a charm directory into a .charm (validated, deterministic); a TypeScript charm (src/charm.ts) is bundled with esbuild and gets a dispatch that runs it with Node.js',
    )
    .option('-o, --out <file>', 'where to write it (default: <name>.charm in the current directory)')
    .option('--output <file>', 'the same as --out')
    .action(async (dir: string | undefined, opts: { out?: string; output?: string }) => {
      const src = path.resolve(dir ?? '.');
      if (!existsSync(src)) throw new CliError(`no charm directory at ${src}`);
      const packed = isTsCharm(src) ? await packTsCharm(src) : await packCharmPath(src);
      const out = path.resolve(opts.out ?? opts.output ?? `${packed.name}.charm`);
      await writeFile(out, packed.archive);
      if ('typesUpdated' in packed && packed.typesUpdated) {
        process.stderr.write(`wrote ${path.join(src, 'src', 'charm-types.ts')} from the charm's YAML\n`);
      }
      // The content hash, which the controller reports for the revision holding this content.
      process.stdout.write(`${out}\nsha256 ${packed.sha256}\n`);
    });
}
