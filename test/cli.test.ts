// The `charmflow` command against a real controller.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { parse } from 'yaml';
import { type CliResult, runCli } from './helpers/cli.ts';
import { startTestController, type TestController } from './helpers/controller.ts';

describe('charmflow CLI', () => {
  let c: TestController;
  let env: Record<string, string>;
  const cli = (...args: string[]): Promise<CliResult> => runCli(args, env);

  before(async () => {
    c = await startTestController();
    // on the controller's host the CLI finds the API and the admin token through the data dir
    env = { CHARMFLOW_DATA_DIR: c.dataDir };
  });
  after(async () => {
    await c?.stop();
  });

  test('--help everywhere', async () => {
    const top = await cli('--help');
    assert.equal(top.code, 0);
    for (const cmd of ['up', 'models', 'add-model', 'destroy-model', 'status', 'operations', 'show-operation']) {
      assert.match(top.stdout, new RegExp(`\\b${cmd}\\b`), `${cmd} listed`);
      const sub = await cli(cmd, '--help');
      assert.equal(sub.code, 0, `${cmd} --help`);
      assert.match(sub.stdout, /Usage: charmflow/);
    }
  });

  test('add-model waits and shows progress; models lists it in every format', async () => {
    const add = await cli('add-model', 'web');
    assert.equal(add.code, 0, add.stderr);
    assert.match(add.stdout, /Added model "web"/);
    assert.match(add.stderr, /operation \d+ \(create-model\) started/);
    const table = await cli('models');
    assert.match(table.stdout, /^Model\s+Cloud\s+Status/m);
    assert.match(table.stdout, /^web\s+local\s+available/m);
    const json = JSON.parse((await cli('models', '--format', 'json')).stdout);
    assert.ok(json.models.some((m: { name: string }) => m.name === 'web'));
    const yaml = parse((await cli('models', '--format', 'yaml')).stdout);
    assert.ok(yaml.models.some((m: { name: string }) => m.name === 'web'));
  });

  test('--no-wait returns the operation id at once; show-operation shows it', async () => {
    const add = await cli('add-model', 'later', '--no-wait');
    assert.equal(add.code, 0, add.stderr);
    const id = add.stdout.match(/operation (\d+)/)?.[1];
    assert.ok(id, add.stdout);
    const op = await c.waitOperation(Number(id));
    assert.equal(op.state, 'succeeded');
    const shown = await cli('show-operation', id!, '--format', 'json');
    assert.equal(JSON.parse(shown.stdout).kind, 'create-model');
    const yaml = parse((await cli('show-operation', id!)).stdout);
    assert.equal(yaml.id, Number(id));
  });

  test('status of an empty model, in tabular and JSON form', async () => {
    const s = await cli('status', '-m', 'web');
    assert.equal(s.code, 0, s.stderr);
    assert.match(s.stdout, /^Model\s+Cloud\s+Status/m);
    assert.match(s.stdout, /empty/);
    const j = JSON.parse((await cli('status', '-m', 'web', '--format', 'json')).stdout);
    assert.equal(j.model.name, 'web');
    assert.deepEqual(j.applications, {});
    assert.deepEqual(j.machines, {});
  });

  test('operations listing', async () => {
    const t = await cli('operations', '-m', 'web');
    assert.match(t.stdout, /create-model\s+web\s+web\s+succeeded/);
    const j = JSON.parse((await cli('operations', '--format', 'json')).stdout);
    assert.ok(j.operations.length >= 2);
  });

  test('errors: non-zero exit with a readable message', async () => {
    const dup = await cli('add-model', 'web');
    assert.equal(dup.code, 1);
    assert.match(dup.stderr, /^ERROR model "web" already exists/m);
    const bad = await cli('add-model', 'Web_1');
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /name: must be lower-case/);
    const missing = await cli('destroy-model', 'ghost');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /model "ghost" not found/);
    const usage = await cli('add-model');
    assert.equal(usage.code, 2);
    assert.match(usage.stderr, /missing required argument 'name'/);
    const fmt = await cli('models', '--format', 'xml');
    assert.equal(fmt.code, 2);
    assert.match(fmt.stderr, /invalid --format "xml"/);
    const unreachable = await runCli(['models'], { CHARMFLOW_URL: 'http://127.0.0.1:1', CHARMFLOW_TOKEN: 'x' });
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, /cannot reach the controller/);
    const badToken = await runCli(['models'], { CHARMFLOW_URL: c.apiUrl, CHARMFLOW_TOKEN: 'cf_wrong' });
    assert.equal(badToken.code, 1);
    assert.match(badToken.stderr, /invalid or revoked token/);
  });

  test('CHARMFLOW_URL and CHARMFLOW_TOKEN point the CLI elsewhere; tokens commands', async () => {
    const made = await cli('add-token', 'reader', '--role', 'read-only', '--format', 'json');
    assert.equal(made.code, 0, made.stderr);
    const { token, id } = JSON.parse(made.stdout);
    const remote = { CHARMFLOW_URL: c.apiUrl, CHARMFLOW_TOKEN: token, CHARMFLOW_DATA_DIR: '/nonexistent' };
    assert.equal((await runCli(['models'], remote)).code, 0);
    const denied = await runCli(['add-model', 'x'], remote);
    assert.equal(denied.code, 1);
    assert.match(denied.stderr, /read-only/);
    const listed = await cli('tokens', '--format', 'json');
    assert.ok(!listed.stdout.includes(token), 'token secret never listed');
    assert.equal((await cli('revoke-token', id)).code, 0);
    assert.equal((await runCli(['models'], remote)).code, 1);
  });

  test('destroy-model waits for the operation', async () => {
    const d = await cli('destroy-model', 'later');
    assert.equal(d.code, 0, d.stderr);
    assert.match(d.stdout, /Destroyed model "later"/);
    assert.doesNotMatch((await cli('models')).stdout, /^later/m);
  });
});
