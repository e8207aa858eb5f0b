// The controller's SSH key pair, made once and kept in the data dir (owner-only).
import { randomBytes } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import ssh2 from 'ssh2';
import type { ControllerKey } from '../activities/deps.ts';
import { readOrCreateKeyFile } from '../store/key-file.ts';

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
 * The key in `file`, made on first use (readOrCreateKeyFile: processes starting at once
 * agree on it). The public half is derived from the private key; the `.pub` file beside
 * it is for people.
 */
export function loadOrCreateControllerKey(file: string): ControllerKey {
  const privateKey = readOrCreateKeyFile(
    file,
    () => ssh2.utils.generateKeyPairSync('ed25519', { comment: 'charmflow-controller' }).private,
  );
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
