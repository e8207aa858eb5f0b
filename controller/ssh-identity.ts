// The controller's SSH key pair, made once and kept in the data dir (owner-only).
import { chmodSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import ssh2 from 'ssh2';
import type { ControllerKey } from '../activities/deps.ts';

export function loadOrCreateControllerKey(file: string): ControllerKey {
  if (existsSync(file) && existsSync(`${file}.pub`)) {
    return { privateKey: readFileSync(file, 'utf8'), publicKey: readFileSync(`${file}.pub`, 'utf8').trim() };
  }
  const pair = ssh2.utils.generateKeyPairSync('ed25519', { comment: 'charmflow-controller' });
  writeFileSync(file, pair.private, { mode: 0o600 });
  chmodSync(file, 0o600);
  writeFileSync(`${file}.pub`, `${pair.public.trim()}\n`);
  return { privateKey: pair.private, publicKey: pair.public.trim() };
}
