// Charm packages: metadata parsing and its errors, archives (dir, zip, tar),
// content hashes, config values, building the ops example, and the two example
// charms' workloads run by hand with fake hook tools.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { chmod, lstat, mkdir, mkdtemp, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import {
  buildOpsCharm,
  type CharmFile,
  CharmValidationError,
  ConfigValueError,
  charmTarball,
  contentHash,
  effectiveConfig,
  extractCharm,
  loadCharm,
  packCharm,
  parseCharm,
  parseConfigAssignments,
  readCharmDir,
  readCharmZip,
  validateConfigObject,
} from '../charm/index.ts';
import { fileEntry, writeRawZip } from './helpers/zip-bomb.ts';

const run = promisify(execFile);
const repo = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const HTTP_HOOKS = path.join(repo, 'examples/charms/http-hooks');
const OPS_HTTP = path.join(repo, 'examples/charms/ops-http');
const BAD = path.join(repo, 'test/fixtures/bad-charms');

let tmp: string;
before(async () => {
  tmp = await mkdtemp(path.join(os.tmpdir(), 'charmflow-charm-test-'));
});
after(async () => {
  await rm(tmp, { recursive: true, force: true });
});

function file(p: string, data: string, mode = 0o644): CharmFile {
  return { path: p, mode, data: Buffer.from(data) };
}

/** Assert that fn throws a CharmValidationError for this file and field, whose message names both. */
async function rejectsCharm(fn: () => unknown, fileName: string, field: string, message?: RegExp): Promise<void> {
  await assert.rejects(
    async () => fn(),
    (err: unknown) => {
      assert.ok(err instanceof CharmValidationError, `expected CharmValidationError, got ${String(err)}`);
      assert.equal(err.file, fileName);
      assert.equal(err.field, field);
      assert.ok(err.message.startsWith(field ? `${fileName}: ${field}: ` : `${fileName}: `), err.message);
      if (message) assert.match(err.message, message);
      return true;
    },
  );
}

describe('metadata', () => {
  test('parses the classic hooks example (metadata.yaml + config.yaml + actions.yaml)', async () => {
    const { meta } = await loadCharm(HTTP_HOOKS);
    assert.equal(meta.name, 'http-hooks');
    assert.match(meta.summary, /classic hooks charm/);
    assert.deepEqual(meta.endpoints, [
      { name: 'website', role: 'provides', interface: 'http', scope: 'global' },
      { name: 'juju-info', role: 'provides', interface: 'juju-info', scope: 'global', implicit: true },
    ]);
    assert.deepEqual(meta.config.options.port, {
      type: 'int',
      default: 8080,
      description: "The TCP port the server listens on (bound to the unit's private address).",
    });
    assert.equal(meta.config.options.content!.default, 'hello from charmflow');
    assert.equal(meta.hasDispatch, false);
    for (const hook of ['install', 'config-changed', 'start', 'stop', 'remove', 'leader-elected', 'update-status']) {
      assert.ok(meta.hooks.includes(hook), `hook ${hook}`);
    }
    assert.ok(meta.hooks.includes('upgrade-charm'));
    assert.deepEqual(meta.actions.fetch!.required, []);
    assert.equal(meta.actions.fetch!.additionalProperties, false);
    assert.equal(meta.subordinate, false);
  });

  test('parses the ops example (everything inline in charmcraft.yaml)', async () => {
    const { meta } = await loadCharm(OPS_HTTP);
    assert.equal(meta.name, 'ops-http');
    assert.equal(meta.hasDispatch, true);
    assert.deepEqual(meta.hooks, []);
    assert.equal(meta.config.options.port!.type, 'int');
    assert.equal(meta.config.options.content!.default, 'hello from charmflow');
    assert.deepEqual(meta.actions.fetch!.params.path, {
      type: 'string',
      description: 'The URL path to fetch.',
      default: '/',
    });
    assert.equal(meta.endpoints[0]!.name, 'website');
  });

  test('tolerates unknown keys, the interface shorthand and Juju-era fields', () => {
    const meta = parseCharm({
      'metadata.yaml': [
        'name: db-client',
        'summary: s',
        'description: d',
        'maintainer: someone',
        'tags: [misc]',
        'series: [jammy]',
        'min-juju-version: 2.9.0',
        'requires:',
        '  db: mysql',
        '  cache: {interface: redis, limit: 1, optional: true}',
        'peers:',
        '  cluster: {interface: db-peers}',
        'storage:',
        '  data: {type: filesystem, location: /srv}',
      ].join('\n'),
      'config.yaml':
        'options:\n  verbose: {type: boolean, default: no}\n  ratio: {type: float, default: 1}\n  name: {}\n  n: {default: on}\n',
    });
    assert.deepEqual(
      meta.endpoints.map((e) => [e.name, e.role, e.interface, e.limit, e.optional]),
      [
        ['db', 'requires', 'mysql', undefined, undefined],
        ['cache', 'requires', 'redis', 1, true],
        ['cluster', 'peer', 'db-peers', undefined, undefined],
        ['juju-info', 'provides', 'juju-info', undefined, undefined],
      ],
    );
    // YAML 1.1's `no` is a boolean where one is expected; a missing type is string.
    assert.deepEqual(meta.config.options, {
      verbose: { type: 'boolean', default: false },
      ratio: { type: 'float', default: 1 },
      name: { type: 'string' },
      // A key that YAML 1.1 would turn into `false`, and a string default that stays a string.
      n: { type: 'string', default: 'on' },
    });
    assert.deepEqual(meta.series, ['jammy']);
    assert.equal(meta.minJujuVersion, '2.9.0');
    assert.deepEqual(meta.storage.data, { type: 'filesystem', location: '/srv' });
  });

  test('bad YAML names the file and the line', async () => {
    const dir = path.join(tmp, 'bad-yaml');
    await mkdir(dir, { recursive: true });
    // Written here, not kept as a fixture: the repo's linter parses YAML files.
    await writeFile(path.join(dir, 'metadata.yaml'), 'name: bad-yaml\nsummary: [unclosed\ndescription: oops\n');
    await rejectsCharm(() => loadCharm(dir), 'metadata.yaml', '', /invalid YAML: .*line \d+, column \d+/);
    await rejectsCharm(
      () => parseCharm({ 'metadata.yaml': 'name: x\nname: y\n' }),
      'metadata.yaml',
      '',
      /Map keys must be unique/,
    );
  });

  test('a missing name is reported as metadata.yaml: name', async () => {
    await rejectsCharm(() => loadCharm(path.join(BAD, 'missing-name')), 'metadata.yaml', 'name', /required/);
    await rejectsCharm(() => parseCharm({}), 'metadata.yaml', '', /needs metadata.yaml or charmcraft.yaml/);
    await rejectsCharm(() => parseCharm({ 'charmcraft.yaml': 'type: charm\n' }), 'charmcraft.yaml', 'name');
  });

  test('a bad option type names config.yaml and the option', async () => {
    await rejectsCharm(
      () => loadCharm(path.join(BAD, 'bad-option-type')),
      'config.yaml',
      'options.port.type',
      /^config\.yaml: options\.port\.type: expected one of string, int, float, boolean, secret$/,
    );
    await rejectsCharm(
      () => loadCharm(path.join(BAD, 'bad-option-default')),
      'config.yaml',
      'options.port.default',
      /expected int, got "eighty"/,
    );
    await rejectsCharm(
      () => parseCharm({ 'charmcraft.yaml': 'name: x\nconfig:\n  options:\n    n: {type: int, default: 1.5}\n' }),
      'charmcraft.yaml',
      'config.options.n.default',
      /expected int, got 1.5/,
    );
  });

  test("charm names follow Juju's rules", async () => {
    await rejectsCharm(() => loadCharm(path.join(BAD, 'bad-name')), 'metadata.yaml', 'name', /invalid charm name/);
    for (const bad of ['1abc', 'abc-', 'abc-42', 'a--b', 'ABC', 'a_b', '']) {
      await rejectsCharm(() => parseCharm({ 'metadata.yaml': `name: "${bad}"\n` }), 'metadata.yaml', 'name');
    }
    for (const good of ['a', 'abc-42x', 'mysql-k8s', 'a1-b2']) {
      assert.equal(parseCharm({ 'metadata.yaml': `name: ${good}\n` }).name, good);
    }
  });

  test('endpoint errors name the section and endpoint', async () => {
    await rejectsCharm(
      () => loadCharm(path.join(BAD, 'endpoint-without-interface')),
      'metadata.yaml',
      'requires.db.interface',
      /required/,
    );
    const meta = (body: string) => () => parseCharm({ 'metadata.yaml': `name: x\n${body}` });
    await rejectsCharm(
      meta('provides:\n  db: mysql\nrequires:\n  db: mysql\n'),
      'metadata.yaml',
      'requires.db',
      /already used in provides/,
    );
    await rejectsCharm(meta('provides:\n  juju-x: foo\n'), 'metadata.yaml', 'provides.juju-x', /reserved/);
    await rejectsCharm(meta('provides:\n  info: juju-info\n'), 'metadata.yaml', 'provides.info.interface', /reserved/);
    await rejectsCharm(
      meta('requires:\n  db: {interface: mysql, scope: local}\n'),
      'metadata.yaml',
      'requires.db.scope',
    );
    await rejectsCharm(
      meta('provides:\n  Bad Name: http\n'),
      'metadata.yaml',
      'provides.Bad Name',
      /invalid endpoint name/,
    );
    await rejectsCharm(meta('subordinate: true\nrequires:\n  host: juju-info\n'), 'metadata.yaml', 'subordinate');
    const sub = parseCharm({
      'metadata.yaml': 'name: x\nsubordinate: true\nrequires:\n  host: {interface: juju-info, scope: container}\n',
    });
    assert.equal(sub.subordinate, true);
  });

  test('action errors name actions.yaml and the action', async () => {
    const charm = (actions: string) => () => parseCharm({ 'metadata.yaml': 'name: x\n', 'actions.yaml': actions });
    await rejectsCharm(charm('Backup: {}\n'), 'actions.yaml', 'Backup', /invalid action name/);
    await rejectsCharm(
      charm('backup:\n  params: [a]\n'),
      'actions.yaml',
      'backup.params',
      /expected record, got a list/,
    );
    await rejectsCharm(charm('juju-run: {}\n'), 'actions.yaml', 'juju-run', /reserved/);
    const meta = parseCharm({
      'metadata.yaml': 'name: x\n',
      'actions.yaml': 'snapshot:\nrestore:\n  required: [id]\n',
    });
    assert.deepEqual(meta.actions.snapshot, { description: '', params: {}, required: [], additionalProperties: false });
    assert.deepEqual(meta.actions.restore!.required, ['id']);
  });

  test('names are bounded: charm names to 50 characters, options, actions and endpoints to their alphabets', async () => {
    const meta = 'name: x\n';
    assert.equal(parseCharm({ 'metadata.yaml': `name: ${'a'.repeat(50)}\n` }).name, 'a'.repeat(50));
    await rejectsCharm(
      () => parseCharm({ 'metadata.yaml': `name: ${'a'.repeat(51)}\n` }),
      'metadata.yaml',
      'name',
      /longer than 50 characters/,
    );
    for (const bad of ['1port', 'has space', 'dollar$', '-x', 'x.y']) {
      await rejectsCharm(
        () => parseCharm({ 'metadata.yaml': meta, 'config.yaml': `options:\n  "${bad}": {type: string}\n` }),
        'config.yaml',
        `options.${bad}`,
        /invalid option name: use letters, digits, hyphens and underscores, starting with a letter/,
      );
    }
    const ok = parseCharm({ 'metadata.yaml': meta, 'config.yaml': 'options:\n  Max_conns-2: {type: int}\n' });
    assert.deepEqual(Object.keys(ok.config.options), ['Max_conns-2']);
    await rejectsCharm(
      () => parseCharm({ 'charmcraft.yaml': 'name: x\nconfig:\n  options:\n    "a b": {type: string}\n' }),
      'charmcraft.yaml',
      'config.options.a b',
      /invalid option name/,
    );
    await rejectsCharm(
      () => parseCharm({ 'metadata.yaml': meta, 'actions.yaml': '"do it": {}\n' }),
      'actions.yaml',
      'do it',
      /invalid action name/,
    );
    await rejectsCharm(
      () => parseCharm({ 'metadata.yaml': meta, 'actions.yaml': `${'a'.repeat(101)}: {}\n` }),
      'actions.yaml',
      'a'.repeat(101),
      /longer than 100/,
    );
    await rejectsCharm(
      () => parseCharm({ 'metadata.yaml': 'name: x\nprovides:\n  "Web!": http\n' }),
      'metadata.yaml',
      'provides.Web!',
      /invalid endpoint name/,
    );
  });
});

describe('archives', () => {
  test('a symlink escaping the charm is refused with the link named', async () => {
    await rejectsCharm(
      () => readCharmDir(path.join(BAD, 'symlink-escape')),
      'hooks/install',
      'symlink',
      /points outside the charm/,
    );
    await rejectsCharm(
      () => packCharm([{ path: 'hooks/x', mode: 0o777, data: Buffer.alloc(0), symlinkTarget: '/etc/passwd' }]),
      'hooks/x',
      'symlink',
    );
  });

  const link = (p: string, target: string): CharmFile => ({
    path: p,
    mode: 0o777,
    data: Buffer.alloc(0),
    symlinkTarget: target,
  });

  test('a chain of symlinks that climbs out of the charm is refused, however innocent each link looks', async () => {
    const meta = file('metadata.yaml', 'name: chains\n');
    // hooks/up -> .. is the charm root; hooks/install -> up/.. then climbs above it,
    // though counted as text ("hooks" + "up" - 1) it never leaves.
    const chain = [meta, link('hooks/up', '..'), link('hooks/install', 'up/../etc/passwd')];
    await rejectsCharm(() => packCharm(chain), 'hooks/install', 'symlink', /"up\/\.\.\/etc\/passwd" points outside/);
    // A link that leads into the escaping one is named, with the link it goes through.
    await rejectsCharm(
      () => packCharm([meta, link('a/b', '..'), link('c', 'a/b/..'), link('d', 'c/x')]),
      'c',
      'symlink',
      /points outside the charm$/,
    );
    await rejectsCharm(
      () => packCharm([meta, link('a/up', '..'), link('a/esc', 'up/..'), link('z', 'a/esc/etc')]),
      'a/esc',
      'symlink',
    );
    await rejectsCharm(
      () => packCharm([meta, link('a/up', '..'), link('a/esc', 'up/..'), link('0', 'a/esc/etc')]),
      '0',
      'symlink',
      /through the symlink "a\/esc"/,
    );
    // a -> b/.. with b -> ../..: the first link met is named, with the one that leaves.
    await rejectsCharm(
      () => packCharm([meta, link('a', 'b/..'), link('b', '../..')]),
      'a',
      'symlink',
      /through the symlink "b"/,
    );

    // The same refusals from a .charm (written by hand: packCharm would refuse it) and a real directory.
    const zip = writeRawZip([
      fileEntry('metadata.yaml', 'name: chains\n'),
      { ...fileEntry('hooks/up', '..'), mode: 0o120777 },
      { ...fileEntry('hooks/install', 'up/../etc/passwd'), mode: 0o120777 },
    ]);
    await rejectsCharm(() => readCharmZip(zip), 'hooks/install', 'symlink', /points outside/);
    const dir = await mkdtemp(path.join(tmp, 'chain-'));
    await mkdir(path.join(dir, 'hooks'));
    await writeFile(path.join(dir, 'metadata.yaml'), 'name: chains\n');
    await symlink('..', path.join(dir, 'hooks/up'));
    await symlink('up/../etc/passwd', path.join(dir, 'hooks/install'));
    await rejectsCharm(() => readCharmDir(dir), 'hooks/install', 'symlink', /points outside/);
  });

  test('symlink loops and chains deeper than the kernel follows are refused', async () => {
    const meta = file('metadata.yaml', 'name: loops\n');
    await rejectsCharm(() => packCharm([meta, link('a', 'b'), link('b', 'a')]), 'a', 'symlink', /symlink loop/);
    await rejectsCharm(() => packCharm([meta, link('self', 'self')]), 'self', 'symlink', /symlink loop/);
    await rejectsCharm(() => packCharm([meta, link('x/in', '../x/in/deeper')]), 'x/in', 'symlink', /symlink loop/);
    // 41 links in a row: Linux gives up (ELOOP) after 40.
    const deep = [
      meta,
      file('end', 'x'),
      ...Array.from({ length: 41 }, (_, i) => link(`l${i}`, i === 40 ? 'end' : `l${i + 1}`)),
    ];
    await rejectsCharm(() => packCharm(deep), 'l0', 'symlink', /more than 40 symlinks/);
    await assert.doesNotReject(() => packCharm(deep.filter((f) => f.path !== 'l0')));
  });

  test('links that stay inside the charm through other links are kept, and read as the kernel reads them', async () => {
    const files = [
      file('meta/sub/placeholder', ''),
      file('meta/real.yaml', 'name: kernel-way\n'),
      // Read as text, x/.. would be the root and pick this decoy.
      file('real.yaml', 'name: textual-way\n'),
      link('x', 'meta/sub'),
      link('metadata.yaml', 'x/../real.yaml'),
      file('lib/v1/run.sh', '#!/bin/sh\necho ran\n', 0o755),
      link('lib/current', 'v1'),
      link('hooks/up', '..'),
      link('hooks/install', '../lib/current/run.sh'),
      link('hooks/start', 'up/lib/current/run.sh'),
    ];
    const back = await readCharmZip(await packCharm(files));
    assert.equal(parseCharm(back).name, 'kernel-way');
    const out = path.join(tmp, 'inside-links');
    await extractCharm(back, out);
    assert.equal(await readFile(path.join(out, 'metadata.yaml'), 'utf8'), 'name: kernel-way\n');
    for (const hook of ['install', 'start']) {
      const { stdout } = await run(path.join(out, 'hooks', hook));
      assert.equal(stdout, 'ran\n');
    }
  });

  test('readCharmDir keeps symlinks and exec bits, skips debris', async () => {
    const dir = path.join(tmp, 'debris');
    await extractCharm(await readCharmDir(HTTP_HOOKS), dir);
    await mkdir(path.join(dir, '.git'), { recursive: true });
    await writeFile(path.join(dir, '.git', 'HEAD'), 'x');
    await mkdir(path.join(dir, 'src/__pycache__'), { recursive: true });
    await writeFile(path.join(dir, 'src/__pycache__/a.pyc'), 'x');
    await writeFile(path.join(dir, 'old.charm'), 'x');
    await writeFile(path.join(dir, '.unit-state.db'), 'x');
    const files = await readCharmDir(dir);
    const byPath = new Map(files.map((f) => [f.path, f]));
    assert.equal(byPath.get('hooks/install')!.symlinkTarget, 'common.sh');
    assert.equal(byPath.get('hooks/common.sh')!.mode, 0o755);
    assert.equal(byPath.get('metadata.yaml')!.mode, 0o644);
    assert.deepEqual(
      files.filter((f) => /\.git|pycache|\.charm$|unit-state/.test(f.path)),
      [],
    );
    assert.equal(contentHash(files), contentHash(await readCharmDir(HTTP_HOOKS)));
  });

  test('the same charm as a dir and as a packed zip has the same hash; packing is deterministic', async () => {
    const fromDir = await loadCharm(HTTP_HOOKS);
    const zip1 = await packCharm(fromDir.files);
    const zip2 = await packCharm([...fromDir.files].reverse());
    assert.ok(zip1.equals(zip2), 'same content packs to identical bytes');
    const zipPath = path.join(tmp, 'http-hooks.charm');
    await writeFile(zipPath, zip1);
    const fromZip = await loadCharm(zipPath);
    const fromBuffer = await loadCharm(zip1);
    assert.equal(fromZip.hash, fromDir.hash);
    assert.equal(fromBuffer.hash, fromDir.hash);
    assert.deepEqual(fromZip.meta, fromDir.meta);
    assert.match(fromDir.hash, /^[0-9a-f]{64}$/);

    // What the hash covers: content, mode and link targets.
    const changed = (fn: (f: CharmFile) => CharmFile) => contentHash(fromDir.files.map(fn));
    assert.notEqual(
      changed((f) => (f.path === 'config.yaml' ? { ...f, data: Buffer.from('x') } : f)),
      fromDir.hash,
    );
    assert.notEqual(
      changed((f) => (f.path === 'hooks/common.sh' ? { ...f, mode: 0o644 } : f)),
      fromDir.hash,
    );
    assert.notEqual(
      changed((f) => (f.path === 'hooks/start' ? { ...f, symlinkTarget: 'install' } : f)),
      fromDir.hash,
    );
  });

  test('pack → read round trip keeps symlinks and modes; zip tools see them too', async () => {
    const files = [
      file('metadata.yaml', 'name: round-trip\n'),
      file('hooks/common.sh', '#!/bin/sh\necho "$0"\n', 0o755),
      { path: 'hooks/install', mode: 0o777, data: Buffer.alloc(0), symlinkTarget: 'common.sh' },
      { path: 'lib/link-up', mode: 0o777, data: Buffer.alloc(0), symlinkTarget: '../metadata.yaml' },
      file('bin/tool', 'x', 0o700),
      file('empty', ''),
    ];
    const zip = await packCharm(files);
    const back = await readCharmZip(zip);
    assert.deepEqual(
      back.map((f) => [f.path, f.mode.toString(8), f.symlinkTarget ?? f.data.toString()]),
      [
        ['bin/tool', '700', 'x'],
        ['empty', '644', ''],
        ['hooks/common.sh', '755', '#!/bin/sh\necho "$0"\n'],
        ['hooks/install', '777', 'common.sh'],
        ['lib/link-up', '777', '../metadata.yaml'],
        ['metadata.yaml', '644', 'name: round-trip\n'],
      ],
    );
    assert.equal(contentHash(back), contentHash(files));

    const zipPath = path.join(tmp, 'round-trip.charm');
    await writeFile(zipPath, zip);
    const { stdout } = await run('python3', [
      '-c',
      'import sys,zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist(): print(i.filename, oct(i.external_attr >> 16))',
      zipPath,
    ]);
    assert.match(stdout, /hooks\/install 0o120777/);
    assert.match(stdout, /hooks\/common\.sh 0o100755/);

    const out = path.join(tmp, 'round-trip');
    await extractCharm(back, out);
    assert.equal(await readlink(path.join(out, 'hooks/install')), 'common.sh');
    assert.equal((await stat(path.join(out, 'hooks/common.sh'))).mode & 0o777, 0o755);
    assert.equal((await stat(path.join(out, 'bin/tool'))).mode & 0o777, 0o700);
    const { stdout: hookOut } = await run(path.join(out, 'hooks/install'));
    assert.equal(path.basename(hookOut.trim()), 'install');
    // Extracting again over the same tree is fine (a refresh does that).
    await extractCharm(back, out);
  });

  test('a zip entry that escapes the charm is refused', async () => {
    const zip = await packCharm([file('zz/evil', 'x'), file('metadata.yaml', 'name: x\n')]);
    // Same length, so the zip stays well-formed: "zz/evil" becomes "../evil".
    const evil = Buffer.from(zip.toString('latin1').replaceAll('zz/evil', '../evil'), 'latin1');
    await rejectsCharm(() => readCharmZip(evil), '(archive)', '', /\.\.\/evil/);
    await rejectsCharm(() => readCharmZip(Buffer.from('not a zip')), '(archive)', '', /not a valid zip/);
  });

  test('the tarball extracts with GNU tar, symlinks and modes intact', async () => {
    const longDir = `venv/${'d'.repeat(90)}/${'e'.repeat(90)}`;
    const files: CharmFile[] = [
      ...(await readCharmDir(HTTP_HOOKS)),
      file(`${longDir}/module.py`, 'print(1)\n'), // > 100 bytes: ustar prefix
      file(`venv/${'x'.repeat(200)}/${'y'.repeat(120)}.py`, 'pax\n'), // does not fit ustar: PAX header
      { path: 'hooks/long-link', mode: 0o777, data: Buffer.alloc(0), symlinkTarget: `../${longDir}/module.py` },
      file('bin/secret-tool', 'x', 0o700),
    ];
    const tarball = charmTarball(files);
    assert.equal(tarball.length % 512, 0);
    const dest = path.join(tmp, 'untarred');
    await mkdir(dest);
    await new Promise<void>((resolve, reject) => {
      const tar = spawn('tar', ['-x', '-p', '-f', '-', '-C', dest], { stdio: ['pipe', 'inherit', 'pipe'] });
      let stderr = '';
      tar.stderr.on('data', (d) => {
        stderr += d;
      });
      tar.on('error', reject);
      tar.on('close', (code) =>
        code === 0 && stderr === '' ? resolve() : reject(new Error(`tar ${code}: ${stderr}`)),
      );
      tar.stdin.end(tarball);
    });
    assert.equal(await readlink(path.join(dest, 'hooks/install')), 'common.sh');
    assert.equal(await readlink(path.join(dest, 'hooks/long-link')), `../${longDir}/module.py`);
    assert.equal((await stat(path.join(dest, 'hooks/common.sh'))).mode & 0o777, 0o755);
    assert.equal((await stat(path.join(dest, 'bin/secret-tool'))).mode & 0o777, 0o700);
    assert.equal((await stat(path.join(dest, 'metadata.yaml'))).mode & 0o777, 0o644);
    assert.equal(await readFile(path.join(dest, 'hooks/long-link'), 'utf8'), 'print(1)\n');
    assert.equal(await readFile(path.join(dest, `venv/${'x'.repeat(200)}/${'y'.repeat(120)}.py`), 'utf8'), 'pax\n');
    // What tar unpacked is the same charm.
    assert.equal(contentHash(await readCharmDir(dest)), contentHash(files));
  });
});

describe('config values', () => {
  const options = parseCharm({
    'metadata.yaml': 'name: x\n',
    'config.yaml': [
      'options:',
      '  port: {type: int, default: 8080}',
      '  ratio: {type: float}',
      '  debug: {type: boolean, default: false}',
      '  content: {type: string, default: hello}',
      '  password: {type: secret}',
      '  empty: {type: string, default: ""}',
    ].join('\n'),
  }).config.options;

  test('k=v assignments are coerced by type', () => {
    assert.deepEqual(
      parseConfigAssignments(['port=9090', 'ratio=0.5', 'debug=true', 'content=a=b c', 'password=secret:abc'], options),
      { port: 9090, ratio: 0.5, debug: true, content: 'a=b c', password: 'secret:abc' },
    );
    assert.deepEqual(parseConfigAssignments(['ratio=3', 'ratio=-1e3'], options), { ratio: -1000 });
    assert.deepEqual(parseConfigAssignments(['content='], options), { content: '' });
  });

  test("booleans take Juju's spellings", () => {
    for (const word of ['true', 'True', 'TRUE', 't', '1', 'yes', 'Yes', 'y', 'on']) {
      assert.equal(parseConfigAssignments([`debug=${word}`], options).debug, true, word);
    }
    for (const word of ['false', 'False', 'f', '0', 'no', 'NO', 'n', 'off']) {
      assert.equal(parseConfigAssignments([`debug=${word}`], options).debug, false, word);
    }
  });

  test('bad values and unknown keys name the key and the expected type', () => {
    const fails = (assignment: string, key: string, message: RegExp) =>
      assert.throws(
        () => parseConfigAssignments([assignment], options),
        (err: unknown) => err instanceof ConfigValueError && err.key === key && message.test(err.message),
        assignment,
      );
    fails('port=abc', 'port', /^config option "port": expected int, got "abc"$/);
    fails('port=8080.5', 'port', /expected int, got "8080.5"/);
    fails('port=', 'port', /expected int/);
    fails('port=0x10', 'port', /expected int/);
    fails('ratio=fast', 'ratio', /^config option "ratio": expected float, got "fast"$/);
    fails('debug=maybe', 'debug', /^config option "debug": expected boolean, got "maybe"$/);
    fails('nope=1', 'nope', /config option "nope": unknown option/);
    fails('no-equals', 'no-equals', /expected key=value/);
  });

  test('typed JSON values are checked as they are', () => {
    assert.deepEqual(validateConfigObject({ port: 1, ratio: 2, debug: true, content: 'x' }, options), {
      port: 1,
      ratio: 2,
      debug: true,
      content: 'x',
    });
    assert.throws(() => validateConfigObject({ port: '1' }, options), /config option "port": expected int, got "1"/);
    assert.throws(() => validateConfigObject({ port: 1.5 }, options), /expected int, got 1.5/);
    assert.throws(() => validateConfigObject({ debug: 'yes' }, options), /expected boolean, got "yes"/);
    assert.throws(() => validateConfigObject({ content: 5 }, options), /expected string, got 5/);
    assert.throws(
      () => validateConfigObject({ bogus: 5 }, options),
      (e: unknown) => e instanceof ConfigValueError && e.key === 'bogus',
    );
    assert.throws(() => validateConfigObject([1], options), /expected an object/);
  });

  test('effective config is defaults overlaid with set values, unset options without default left out', () => {
    assert.deepEqual(effectiveConfig(options, {}), { port: 8080, debug: false, content: 'hello', empty: '' });
    assert.deepEqual(effectiveConfig(options, { port: 1, ratio: 0.5, gone: 'x' }), {
      port: 1,
      ratio: 0.5,
      debug: false,
      content: 'hello',
      empty: '',
    });
  });
});

describe('ops charm build', () => {
  let built: Awaited<ReturnType<typeof buildOpsCharm>>;
  before(async () => {
    built = await buildOpsCharm(OPS_HTTP, path.join(tmp, 'ops-http.charm'));
  });

  test('the .charm holds ops under venv/, a runnable dispatch and generated metadata', async () => {
    const files = await readCharmZip(await readFile(built.outFile));
    const byPath = new Map(files.map((f) => [f.path, f]));
    assert.ok(byPath.has('venv/ops/__init__.py'), 'venv/ops is packed');
    assert.ok(byPath.has('venv/yaml/__init__.py'), "ops' own dependencies are packed");
    assert.equal(byPath.get('dispatch')!.mode, 0o755);
    assert.match(byPath.get('dispatch')!.data.toString(), /PYTHONPATH=lib:venv .*\.\/src\/charm\.py/);
    assert.ok(byPath.has('src/charm.py'));
    assert.ok(![...byPath.keys()].some((p) => p.endsWith('.pyc')), 'no byte code');
    // Juju reads metadata.yaml, not charmcraft.yaml: the build writes it (and config/actions) as charmcraft does.
    const generated = parseCharm({
      'metadata.yaml': byPath.get('metadata.yaml')!.data,
      'config.yaml': byPath.get('config.yaml')!.data,
      'actions.yaml': byPath.get('actions.yaml')!.data,
    });
    assert.equal(generated.name, 'ops-http');
    assert.deepEqual(generated.config, built.meta.config);
    assert.deepEqual(generated.actions, built.meta.actions);
    assert.ok(byPath.has('manifest.yaml'));
    assert.equal(contentHash(files), built.hash);
    // Building again (from the pip cache) gives the same bytes.
    const again = await buildOpsCharm(OPS_HTTP, path.join(tmp, 'ops-http-2.charm'));
    assert.ok((await readFile(again.outFile)).equals(await readFile(built.outFile)));
  });

  test('the ops charm serves its page when its hooks are run by hand', async () => {
    const charmDir = path.join(tmp, 'ops-unit', 'charm');
    await extractCharm(await readCharmZip(await readFile(built.outFile)), charmDir);
    const tools = await fakeHookTools(path.join(tmp, 'ops-tools'));
    const port = await freePort();
    await tools.setConfig({ content: 'hello from ops', port });
    const hook = (name: string, extra: Record<string, string> = {}) =>
      runHook(charmDir, path.join(charmDir, 'dispatch'), tools, 'ops-http/0', {
        JUJU_DISPATCH_PATH: name.startsWith('actions/') ? name : `hooks/${name}`,
        JUJU_HOOK_NAME: name.startsWith('actions/') ? '' : name,
        ...extra,
      });
    const pidfile = path.join(tmp, 'ops-unit', 'workload-ops-http-0', 'server.pid');
    try {
      for (const name of ['install', 'leader-elected', 'config-changed', 'start']) await hook(name);
      assert.equal(await httpGet(port), 'hello from ops\n');
      assert.ok((await tools.calls()).some((c) => c[0] === 'open-port' && c.includes(`${port}/tcp`)));
      assert.ok(
        (await tools.calls()).some(
          (c) => c[0] === 'status-set' && c.includes('active') && c.includes(`serving on :${port}`),
        ),
      );

      await tools.setConfig({ content: 'changed by ops', port });
      await hook('config-changed');
      assert.equal(await httpGet(port), 'changed by ops\n');

      await tools.setAction({ path: '/' });
      await hook('actions/fetch', { JUJU_ACTION_NAME: 'fetch', JUJU_ACTION_UUID: '1' });
      assert.ok((await tools.calls()).some((c) => c[0] === 'action-set' && c.includes('body=changed by ops\n')));

      await hook('stop');
      await assert.rejects(httpGet(port));
      assert.ok((await tools.calls()).some((c) => c[0] === 'close-port' && c.includes(`${port}/tcp`)));
      await hook('remove');
      await assert.rejects(lstat(path.dirname(pidfile)));
    } finally {
      await killFromPidfile(pidfile);
    }
  });
});

describe('http-hooks charm workload', () => {
  test('start serves the page, config changes update it, stop closes the port', async () => {
    const unitDir = path.join(tmp, 'hooks-unit');
    const charmDir = path.join(unitDir, 'charm');
    // Run from a packed-and-extracted copy: the hooks are symlinks and must survive that.
    await extractCharm(await readCharmZip(await packCharm(await readCharmDir(HTTP_HOOKS))), charmDir);
    const tools = await fakeHookTools(path.join(tmp, 'hooks-tools'));
    const [port, port2] = [await freePort(), await freePort()];
    await tools.setConfig({ content: 'first page', port });
    const hook = (name: string) =>
      runHook(charmDir, path.join(charmDir, 'hooks', name), tools, 'http-hooks/0', { JUJU_HOOK_NAME: name });
    const stateDir = path.join(unitDir, 'workload-http-hooks-0');
    const pidfile = path.join(stateDir, 'server.pid');
    try {
      for (const name of ['install', 'leader-elected', 'config-changed']) await hook(name);
      await assert.rejects(httpGet(port), 'nothing serves before start');
      await hook('start');
      assert.equal(await httpGet(port), 'first page\n');
      const pid = Number((await readFile(pidfile, 'utf8')).trim());

      await tools.setConfig({ content: 'second page', port });
      await hook('config-changed');
      assert.equal(await httpGet(port), 'second page\n');
      assert.equal(Number((await readFile(pidfile, 'utf8')).trim()), pid, 'same port: the server is not restarted');

      await tools.setConfig({ content: 'moved', port: port2 });
      await hook('config-changed');
      assert.equal(await httpGet(port2), 'moved\n');
      await assert.rejects(httpGet(port), 'the old port is closed');

      await hook('update-status');
      await tools.setAction({ path: '/' });
      await runHook(charmDir, path.join(charmDir, 'actions', 'fetch'), tools, 'http-hooks/0', {
        JUJU_ACTION_NAME: 'fetch',
      });

      await hook('stop');
      await assert.rejects(httpGet(port2), 'stopped: nothing listens');

      const calls = await tools.calls();
      const find = (tool: string, ...args: string[]) =>
        calls.some((c) => c[0] === tool && args.every((a) => c.includes(a)));
      assert.ok(find('open-port', `${port}/tcp`));
      assert.ok(find('close-port', `${port}/tcp`));
      assert.ok(find('open-port', `${port2}/tcp`));
      assert.ok(find('close-port', `${port2}/tcp`));
      assert.ok(find('status-set', 'active', `serving on :${port2}`));
      assert.ok(find('action-set', 'status=200', 'body=moved'));

      await hook('remove');
      await assert.rejects(lstat(stateDir), 'remove cleans up the unit state');
    } finally {
      await killFromPidfile(pidfile);
    }
  });
});

// ---- helpers: fake hook tools and a hook runner --------------------------------

interface FakeTools {
  bin: string;
  statePath: string;
  logPath: string;
  setConfig(config: Record<string, string | number | boolean>): Promise<void>;
  setAction(params: Record<string, unknown>): Promise<void>;
  calls(): Promise<string[][]>;
}

// One Python script answering as each hook tool (by the name it is called by),
// from a JSON state file, logging every call. Enough of Juju's formats for
// these two charms and ops; the real tools are tested with the hook runtime.
const FAKE_TOOL = `#!/usr/bin/env python3
import json, os, sys
name = os.path.basename(sys.argv[0])
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as f:
    f.write(json.dumps([name] + args) + "\\n")
with open(os.environ["FAKE_STATE"]) as f:
    state = json.load(f)
as_json = "--format=json" in args or ("--format" in args and args[args.index("--format") + 1] == "json")
keys = [a for a in args if not a.startswith("-") and a != "json"]

def out(v):
    if as_json:
        print(json.dumps(v))
    elif isinstance(v, bool):
        print("True" if v else "False")
    elif isinstance(v, (dict, list)):
        print(json.dumps(v))
    elif v is not None:
        print(v)

addr = "127.0.0.1"
if name == "config-get":
    out(state["config"].get(keys[0]) if keys else state["config"])
elif name == "action-get":
    out(state["action"].get(keys[0]) if keys else state["action"])
elif name == "unit-get":
    out(addr)
elif name == "is-leader":
    out(True)
elif name == "network-get":
    out({"bind-addresses": [{"mac-address": "", "interface-name": "lo",
         "addresses": [{"hostname": "", "value": addr, "cidr": "127.0.0.0/8"}]}],
         "egress-subnets": ["127.0.0.1/32"], "ingress-addresses": [addr]})
elif name in ("relation-ids", "opened-ports"):
    out([]) if as_json else None
elif name == "status-get":
    out({"status": "unknown", "message": "", "status-data": {}})
`;

const TOOL_NAMES = [
  'config-get',
  'action-get',
  'action-set',
  'action-log',
  'action-fail',
  'unit-get',
  'is-leader',
  'network-get',
  'relation-ids',
  'relation-set',
  'opened-ports',
  'open-port',
  'close-port',
  'status-get',
  'status-set',
  'juju-log',
  'application-version-set',
];

async function fakeHookTools(dir: string): Promise<FakeTools> {
  const bin = path.join(dir, 'bin');
  await mkdir(bin, { recursive: true });
  await writeFile(path.join(bin, 'fake-tool'), FAKE_TOOL);
  await chmod(path.join(bin, 'fake-tool'), 0o755);
  for (const name of TOOL_NAMES) await symlink('fake-tool', path.join(bin, name));
  const statePath = path.join(dir, 'state.json');
  const logPath = path.join(dir, 'calls.jsonl');
  let state: { config: Record<string, unknown>; action: Record<string, unknown> } = { config: {}, action: {} };
  const save = () => writeFile(statePath, JSON.stringify(state));
  await save();
  await writeFile(logPath, '');
  return {
    bin,
    statePath,
    logPath,
    async setConfig(config) {
      state = { ...state, config };
      await save();
    },
    async setAction(params) {
      state = { ...state, action: params };
      await save();
    },
    async calls() {
      const text = await readFile(logPath, 'utf8');
      return text
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as string[]);
    },
  };
}

/** Run one hook as the runner would: cwd = charm dir, a fresh Juju environment, tools first on PATH. */
async function runHook(
  charmDir: string,
  executable: string,
  tools: FakeTools,
  unit: string,
  extra: Record<string, string>,
): Promise<void> {
  const env = {
    PATH: `${tools.bin}:/usr/local/bin:/usr/bin:/bin:${path.dirname(process.execPath)}`,
    HOME: process.env.HOME ?? '/root',
    LANG: 'C.UTF-8',
    FAKE_STATE: tools.statePath,
    FAKE_LOG: tools.logPath,
    CHARM_DIR: charmDir,
    JUJU_CHARM_DIR: charmDir,
    JUJU_UNIT_NAME: unit,
    JUJU_MODEL_NAME: 'test',
    JUJU_MODEL_UUID: '00000000-0000-4000-8000-000000000000',
    JUJU_VERSION: '3.6.4',
    JUJU_CONTEXT_ID: `${unit}-${Date.now()}`,
    JUJU_MACHINE_ID: '0',
    ...extra,
  };
  // We wait for the hook's stdout and stderr to close, as a runner does: a server
  // that kept them open would hang here (and fail on the timeout). The hook gets
  // its own process group, killed afterwards as a runner cleans up: the server
  // must have left it.
  const child = spawn(executable, [], { cwd: charmDir, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  let output = '';
  child.stdout.on('data', (d) => {
    output += d;
  });
  child.stderr.on('data', (d) => {
    output += d;
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.on('error', reject);
    child.on('close', resolve);
  }).finally(() => clearTimeout(timer));
  try {
    process.kill(-child.pid!, 'SIGKILL');
  } catch {
    // the group is already empty
  }
  if (code !== 0) {
    throw new Error(`hook ${path.basename(executable)} ${JSON.stringify(extra)} exited ${code}:\n${output}`);
  }
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function httpGet(port: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(5000) });
  assert.equal(res.status, 200);
  return res.text();
}

async function killFromPidfile(pidfile: string): Promise<void> {
  const pid = Number((await readFile(pidfile, 'utf8').catch(() => '')).trim());
  if (pid > 0) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}
