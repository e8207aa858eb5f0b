// Local machines on a controller run as root: each has a uid of its own, and its
// hooks cannot read the controller's secrets or another machine's files.
import assert from 'node:assert/strict';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { LOCAL_UID_BASE } from '../activities/substrates/local-isolation.ts';
import { type CliResult, projectRoot, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';

const snoop = join(projectRoot, 'test', 'fixtures', 'charms', 'snoop');
const asRoot = process.getuid?.() === 0;

describe('local machine isolation', {
  skip: asRoot ? false : 'needs root: only root can run units as other uids',
}, () => {
  let c: TestController;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, { CHARMFLOW_DATA_DIR: c.dataDir });
  const unitMessage = async (unit: string) => {
    const s = JSON.parse((await cli('status', '--format', 'json')).stdout);
    return s.applications[unit.split('/')[0]].units[unit]['workload-status'].message as string;
  };
  const machineOf = async (unit: string) =>
    c.store.db
      .selectFrom('units as u')
      .innerJoin('machines as m', (j) =>
        j.onRef('m.model_uuid', '=', 'u.model_uuid').onRef('m.id', '=', 'u.machine_id'),
      )
      .select(['m.root_dir', 'm.address'])
      .where('u.name', '=', unit)
      .executeTakeFirstOrThrow();

  before(async () => {
    c = await startTestController();
  });
  after(async () => {
    await c?.stop();
  });

  test('a hook runs as its machine uid, in its own home, and cannot read the admin token', async () => {
    const d = await cli('deploy', snoop, 'a', '--config', `probe=${join(c.dataDir, 'admin-token')}`);
    assert.equal(d.code, 0, d.stderr);
    const m = await machineOf('a/0');
    const msg = await unitMessage('a/0');
    const uid = Number(/uid=(\d+)/.exec(msg)?.[1]);
    assert.ok(uid >= LOCAL_UID_BASE, `hook ran as uid ${uid}: ${msg}`);
    assert.match(msg, new RegExp(`home=${m.root_dir} `));
    assert.match(msg, /probe=denied/, msg);
    // the machine's directory is its own, and closed to others
    const st = statSync(m.root_dir);
    assert.equal(st.uid, uid);
    assert.equal(st.mode & 0o077, 0);
    // the controller's secrets stay its own
    for (const f of ['admin-token', 'controller-ssh-key'])
      assert.equal(statSync(join(c.dataDir, f)).mode & 0o077, 0, f);
  });

  test("another machine's files and the controller's key are closed; a world-readable file is not", async () => {
    const a = await machineOf('a/0');
    const other = join(a.root_dir, 'units', 'a-0', 'charm', 'metadata.yaml');
    statSync(other); // exists: only the uid stops the read
    const d = await cli('deploy', snoop, 'b', '--config', `probe=${other}`);
    assert.equal(d.code, 0, d.stderr);
    const b = await machineOf('b/0');
    assert.notEqual(b.address, a.address);
    assert.match(await unitMessage('b/0'), /probe=denied/);
    // the probe itself works: a file anyone may read is read
    const cfg = await cli('config', 'b', 'probe=/etc/passwd');
    assert.equal(cfg.code, 0, cfg.stderr);
    assert.match(await unitMessage('b/0'), /probe=read/);
    const key = await cli('config', 'b', `probe=${join(c.dataDir, 'controller-ssh-key')}`);
    assert.equal(key.code, 0, key.stderr);
    assert.match(await unitMessage('b/0'), /probe=denied/);
  });
});
