// The controller's SSH key: made once, even by processes starting at once on one data
// dir (the API and workers), its public half derived from the private key.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { loadOrCreateControllerKey } from '../controller/ssh-identity.ts';
import { projectRoot } from './helpers/cli.ts';

describe("the controller's SSH key", () => {
  const dir = mkdtempSync(join(tmpdir(), 'cf-ssh-identity-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  test('six processes creating it at once all get the same key; it is owner-only and its .pub matches', async () => {
    const file = join(dir, 'ssh', 'controller-key');
    const script = `import { loadOrCreateControllerKey } from ${JSON.stringify(join(projectRoot, 'controller', 'ssh-identity.ts'))};
process.stdout.write(loadOrCreateControllerKey(${JSON.stringify(file)}).publicKey);`;
    const one = () =>
      new Promise<string>((resolve, reject) => {
        const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
          cwd: projectRoot,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let out = '';
        let err = '';
        child.stdout.on('data', (d) => {
          out += d;
        });
        child.stderr.on('data', (d) => {
          err += d;
        });
        child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(err))));
      });
    const keys = await Promise.all(Array.from({ length: 6 }, one));
    assert.equal(new Set(keys).size, 1, keys.join('\n'));
    assert.match(keys[0], /^ssh-ed25519 \S+ charmflow-controller$/);
    assert.equal(statSync(file).mode & 0o777, 0o600);
    assert.equal(readFileSync(`${file}.pub`, 'utf8'), `${keys[0]}\n`);
    const again = loadOrCreateControllerKey(file);
    assert.equal(again.publicKey, keys[0]);
    assert.equal(again.privateKey, readFileSync(file, 'utf8'));
  });
});
