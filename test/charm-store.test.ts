// The charm store, through a real controller's API and the `charmflow` command.
import assert from 'node:assert/strict';
import { appendFileSync, cpSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import yazl from 'yazl';
import { contentHash, loadCharm, readCharmDir } from '../charm/charm-archive.ts';
import { ApiClient } from '../cli/api-client.ts';
import { uploadCharm } from '../cli/charm-upload.ts';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';

const HTTP_HOOKS = path.join(projectRoot, 'examples/charms/http-hooks');
const BAD = path.join(projectRoot, 'test/fixtures/bad-charms');

/** What each broken fixture must be refused for: file and field. */
const BAD_CHARMS: Record<string, string> = {
  'bad-name': 'metadata.yaml:name',
  'bad-option-default': 'config.yaml:options.port.default',
  'bad-option-type': 'config.yaml:options.port.type',
  'bad-option-name': 'config.yaml:options.1st port',
  'endpoint-without-interface': 'metadata.yaml:requires.db.interface',
  'missing-name': 'metadata.yaml:name',
  'symlink-escape': 'hooks/install:symlink',
  'symlink-chain-escape': 'hooks/install:symlink',
};

/** A zip of a directory as it is, symlinks included (no validation: the controller must do it). */
async function rawZip(dir: string): Promise<Buffer> {
  const zip = new yazl.ZipFile();
  const walk = (rel: string) => {
    for (const e of readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      const abs = path.join(dir, r);
      if (e.isDirectory()) walk(r);
      else if (e.isSymbolicLink()) zip.addBuffer(Buffer.from(readlinkSync(abs)), r, { mode: 0o120777 });
      else zip.addBuffer(readFileSync(abs), r, { mode: 0o100644 });
    }
  };
  walk('');
  zip.end();
  const chunks: Buffer[] = [];
  for await (const c of zip.outputStream as Readable) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('charm store', () => {
  let c: TestController;
  let env: Record<string, string>;
  let tmp: string;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, env);

  async function upload(bytes: Buffer) {
    const res = await fetch(`${c.apiUrl}/v1/charms`, {
      method: 'POST',
      headers: { authorization: `Bearer ${c.adminToken}`, 'content-type': 'application/octet-stream' },
      body: new Uint8Array(bytes),
    });
    return { status: res.status, body: (await res.json()) as any };
  }

  before(async () => {
    c = await startTestController();
    env = { CHARMFLOW_DATA_DIR: c.dataDir };
    tmp = mkdtempSync(path.join(tmpdir(), 'charmflow-charm-store-'));
  });
  after(async () => {
    await c?.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  test('a directory uploads as revision 1, and again as the same revision', async () => {
    const first = await cli('upload', HTTP_HOOKS);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /uploaded charm "http-hooks" revision 1\n/);
    const again = await cli('upload', HTTP_HOOKS);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /uploaded charm "http-hooks" revision 1 \(unchanged\)/);

    const ops = (await c.api('GET', '/v1/operations')).body.operations.filter((o: any) => o.kind === 'upload-charm');
    assert.equal(ops.length, 2);
    for (const op of ops) {
      assert.equal(op.state, 'succeeded');
      assert.equal(op.target, 'http-hooks:1');
      assert.equal(op.model, null);
      assert.ok(op.finishedAt);
    }
  });

  test('changed content gets the next revision; the same content as a .charm keeps its revision', async () => {
    const copy = path.join(tmp, 'http-hooks-copy');
    cpSync(HTTP_HOOKS, copy, { recursive: true, verbatimSymlinks: true });
    appendFileSync(path.join(copy, 'config.yaml'), '# changed\n');
    const changed = await cli('upload', copy);
    assert.equal(changed.code, 0, changed.stderr);
    assert.match(changed.stdout, /revision 2\n/);

    const charmFile = path.join(tmp, 'original.charm');
    const packed = await cli('pack', HTTP_HOOKS, '-o', charmFile);
    assert.equal(packed.code, 0, packed.stderr);
    const [printedPath, shaLine] = packed.stdout.trim().split('\n');
    assert.equal(printedPath, charmFile);
    const loaded = await loadCharm(charmFile);
    assert.equal(loaded.meta.name, 'http-hooks');
    // the archive holds exactly the directory's content
    assert.equal(loaded.hash, contentHash(await readCharmDir(HTTP_HOOKS)));
    assert.equal(shaLine, `sha256 ${loaded.hash}`);

    const zipped = await cli('upload', charmFile);
    assert.equal(zipped.code, 0, zipped.stderr);
    assert.match(zipped.stdout, /uploaded charm "http-hooks" revision 1 \(unchanged\)/);

    // the controller reports the same content hash for the revision
    const info = await c.api('GET', '/v1/charms/http-hooks?revision=1');
    assert.equal(info.status, 200);
    assert.equal(info.body.sha256, loaded.hash);
    assert.equal(info.body.meta.name, 'http-hooks');
    assert.ok(info.body.size > 0);
    const latest = await c.api('GET', '/v1/charms/http-hooks');
    assert.equal(latest.body.revision, 2);
  });

  test('invalid charms are refused with file and field, and nothing is stored', async () => {
    const before = (await c.api('GET', '/v1/charms')).body;
    const opsBefore = (await c.api('GET', '/v1/operations?limit=1000')).body.operations.length;
    for (const [dir, field] of Object.entries(BAD_CHARMS)) {
      const res = await upload(await rawZip(path.join(BAD, dir)));
      assert.equal(res.status, 400, `${dir}: ${JSON.stringify(res.body)}`);
      const [file, key] = field.split(':');
      assert.ok(res.body.message.includes(`${file}: ${key}`), `${dir}: ${res.body.message}`);
      assert.deepEqual(
        res.body.details.map((d: any) => d.field),
        [field],
        dir,
      );
    }
    const notZip = await upload(Buffer.from('not a zip'));
    assert.equal(notZip.status, 400);
    assert.match(notZip.body.message, /not a valid zip/);
    const json = await c.api('POST', '/v1/charms', { name: 'x' });
    assert.equal(json.status, 415);

    assert.deepEqual((await c.api('GET', '/v1/charms')).body, before);
    assert.equal((await c.api('GET', '/v1/operations?limit=1000')).body.operations.length, opsBefore);

    // The CLI refuses the same charm before sending it.
    const local = await cli('upload', path.join(BAD, 'bad-option-type'));
    assert.equal(local.code, 1);
    assert.match(local.stderr, /config\.yaml: options\.port\.type: expected one of/);
  });

  test('charms lists names and revisions, never archives', async () => {
    const list = await c.api('GET', '/v1/charms');
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.charms, [
      { name: 'http-hooks', revisions: [1, 2], latest: 2, summary: list.body.charms[0].summary },
    ]);
    assert.match(list.body.charms[0].summary, /classic hooks charm/);
    assert.ok(!JSON.stringify(list.body).includes('archive'));

    const json = await cli('charms', '--format', 'json');
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), list.body);
    const yaml = parse((await cli('charms', '--format', 'yaml')).stdout);
    assert.deepEqual(yaml, list.body);
    const table = await cli('charms');
    assert.match(table.stdout, /^Charm\s+Latest\s+Revisions\s+Summary/m);
    assert.match(table.stdout, /^http-hooks\s+2\s+1,2\s+/m);
  });

  test('unknown charms and revisions are 404s naming them', async () => {
    const missing = await c.api('GET', '/v1/charms/nope');
    assert.equal(missing.status, 404);
    assert.equal(missing.body.message, 'charm "nope" not found');
    const rev = await c.api('GET', '/v1/charms/http-hooks?revision=9');
    assert.equal(rev.status, 404);
    assert.equal(rev.body.message, 'charm "http-hooks" revision 9 not found');
  });

  test('uploadCharm takes a path or the name of an uploaded charm', async () => {
    const api = new ApiClient({ url: c.apiUrl, token: c.adminToken });
    assert.deepEqual(await uploadCharm(api, 'http-hooks'), { name: 'http-hooks', revision: 2 });
    assert.deepEqual(await uploadCharm(api, 'http-hooks:1'), { name: 'http-hooks', revision: 1 });
    assert.deepEqual(await uploadCharm(api, HTTP_HOOKS), { name: 'http-hooks', revision: 1, created: false });
    await assert.rejects(uploadCharm(api, 'nope'), /charm "nope" not found/);
    await assert.rejects(uploadCharm(api, 'http-hooks:7'), /charm "http-hooks" revision 7 not found/);
    await assert.rejects(uploadCharm(api, './no/such/dir'), /neither a charm directory/);
  });
});
