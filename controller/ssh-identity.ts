// The controller's SSH key pair, made once and kept in the data dir (owner-only).
import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import ssh2 from 'ssh2';
import type { ControllerKey } from '../activities/deps.ts';
import { readOrCreateKeyFile } from '../store/key-file.ts';

/** The `type base64 comment` line of a private key's public half; undefined when ssh2 cannot read the key. */
function publicLine(privateKey: string): string | undefined {
  const parsed = ssh2.utils.parseKey(privateKey);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (key instanceof Error || !key) return undefined;
  return `${key.type} ${key.getPublicSSH().toString('base64')}${key.comment ? ` ${key.comment}` : ''}`;
}

/**
 * A new ed25519 key, in OpenSSH format. ssh2's generator drops a leading zero byte of
 * the public key (about 1 key in 256), which gives a key that ssh2 itself then refuses
 * ("Malformed OpenSSH private key"), so a controller could never log in to a machine
 * with it: such a key is made again.
 */
export function newControllerKey(): string {
  for (let attempt = 0; attempt < 32; attempt++) {
    const key = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'charmflow-controller' }).private;
    if (publicLine(key) !== undefined) return key;
  }
  throw new Error('could not make a usable ed25519 key');
}

/**
 * The key in `file`, made on first use (readOrCreateKeyFile: processes starting at once
 * agree on it). A key that cannot be read (one made by the faulty generator before
 * newControllerKey, which no machine could ever have been reached with) is moved aside
 * to `<file>.unusable-<time>` and made again. The public half is derived from the
 * private key; the `.pub` file beside it is for people.
 */
export function loadOrCreateControllerKey(file: string): ControllerKey {
  let privateKey = readOrCreateKeyFile(file, newControllerKey);
  let publicKey = publicLine(privateKey);
  if (publicKey === undefined) {
    try {
      renameSync(file, `${file}.unusable-${Date.now()}`);
    } catch (err) {
      // another process moved it first
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    privateKey = readOrCreateKeyFile(file, newControllerKey);
    publicKey = publicLine(privateKey);
    if (publicKey === undefined) throw new Error(`the controller's SSH key ${file} cannot be read`);
  }
  try {
    if (readFileSync(`${file}.pub`, 'utf8').trim() === publicKey) return { privateKey, publicKey };
  } catch {
    // not there yet: written below
  }
  const tmpPub = `${file}.pub.${process.pid}.${randomBytes(4).toString('hex')}`;
  writeFileSync(tmpPub, `${publicKey}\n`);
  renameSync(tmpPub, `${file}.pub`);
  return { privateKey, publicKey };
}
