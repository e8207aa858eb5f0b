// The controller's SSH key: made once, even by processes starting at once on one data
// dir (the API and workers), its public half derived from the private key.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import ssh2 from 'ssh2';
import { loadOrCreateControllerKey, newControllerKey } from '../controller/ssh-identity.ts';
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

  test('every key made is one ssh2 can read (its generator alone gets 1 in 256 wrong)', () => {
    for (let i = 0; i < 1500; i++) {
      const key = newControllerKey();
      assert.ok(!(ssh2.utils.parseKey(key) instanceof Error), key);
    }
  });

  test('a key the faulty generator made is moved aside and made again', () => {
    // made by ssh2.utils.generateKeyPairSync: its public key has 31 bytes, not 32
    const unusable = [
      '-----BEGIN OPENSSH PRIVATE KEY-----',
      'b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMgAAAAtz',
      'c2gtZWQyNTUxOQAAAB/w9q3JjZlq+LFqtRaog7rir9tI1YBNmB/jHPf9BNwGAAAA',
      'mDsD1w87A9cPAAAAC3NzaC1lZDI1NTE5AAAAH/D2rcmNmWr4sWq1FqiDuuKv20jV',
      'gE2YH+Mc9/0E3AYAAAA/sFQdj77xzlXgsNksTZV6TNs6lq6S2rNYRbp1QVUbdNTw',
      '9q3JjZlq+LFqtRaog7rir9tI1YBNmB/jHPf9BNwGAAAAFGNoYXJtZmxvdy1jb250',
      'cm9sbGVyAQID',
      '-----END OPENSSH PRIVATE KEY-----',
      '',
    ].join('\n');
    assert.ok(ssh2.utils.parseKey(unusable) instanceof Error);
    const keyDir = join(dir, 'unusable');
    mkdirSync(keyDir);
    const file = join(keyDir, 'controller-key');
    writeFileSync(file, unusable, { mode: 0o600 });
    const key = loadOrCreateControllerKey(file);
    assert.ok(!(ssh2.utils.parseKey(key.privateKey) instanceof Error));
    assert.notEqual(key.privateKey, unusable);
    assert.equal(readFileSync(file, 'utf8'), key.privateKey);
    const aside = readdirSync(keyDir).filter((f) => f.startsWith('controller-key.unusable-'));
    assert.equal(aside.length, 1);
    assert.equal(readFileSync(join(keyDir, aside[0]), 'utf8'), unusable);
  });
});
