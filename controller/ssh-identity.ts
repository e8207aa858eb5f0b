// The controller's SSH key pair, made once and kept in the data dir (owner-only).
import { randomBytes } from 'node:crypto';
import { chmodSync, linkSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import ssh2 from 'ssh2';
import type { ControllerKey } from '../activities/deps.ts';

/** The `type base64 comment` line of a private key's public half. */
function publicLine(privateKey: string, file: string): string {
  const parsed = ssh2.utils.parseKey(privateKey);
  const key = Array.isArray(parsed) ? parsed[0] : parsed;
  if (key instanceof Error || !key) {
    throw new Error(`the controller's SSH key ${file} cannot be read: ${key?.message ?? 'no key in it'}`);
  }
  return `${key.type} ${key.getPublicSSH().toString('base64')}${key.comment ? ` ${key.comment}` : ''}`;
}

/**
 * The key in `file`, made on first use. The API and the worker may start at once on one
 * data dir: the key is written whole under another name and linked into place, so only
 * one creation wins and no process reads a half-written key. The public half is derived
 * from the private key (the `.pub` file beside it is for people).
 */
export function loadOrCreateControllerKey(file: string): ControllerKey {
  let privateKey: string;
  try {
    privateKey = readFileSync(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'charmflow-controller' });
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}`;
    writeFileSync(tmp, pair.private, { mode: 0o600 });
    chmodSync(tmp, 0o600);
    try {
      linkSync(tmp, file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    } finally {
      unlinkSync(tmp);
    }
    privateKey = readFileSync(file, 'utf8');
  }
  const publicKey = publicLine(privateKey, file);
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
