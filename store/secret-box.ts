// Secrets at rest: what the store keeps of a secret (a config value of type
// `secret`, a user's private key, a credential) is sealed with AES-256-GCM under the
// controller's secret key, so neither the store's files nor its WAL, nor a dump of
// the database, hold it in the clear. Values are opened only where they are used:
// building a hook's context, logging in to a machine.
//
// A sealed value reads `cfsec:v<version>:<base64 of iv | tag | ciphertext>`. The
// version names the key, so a later key can be added beside this one and values
// re-sealed under it one by one.
import { createCipheriv, createDecipheriv, createHmac, randomBytes } from 'node:crypto';
import { readOrCreateKeyFile } from './key-file.ts';

const PREFIX = 'cfsec:';
const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const SEALED_RE = /^cfsec:v(\d+):([A-Za-z0-9+/]+={0,2})$/;

/** A value could not be opened: another key sealed it, or it was altered. */
export class SecretKeyError extends Error {
  override readonly name = 'SecretKeyError';
}

export class SecretBox {
  private constructor(
    private readonly key: Buffer,
    /** The key's version, written into every value it seals. */
    readonly version: number,
  ) {}

  /** A box over a key that lives only as long as this process (a store in memory). */
  static ephemeral(): SecretBox {
    return new SecretBox(randomBytes(KEY_BYTES), 1);
  }

  /**
   * The key in `file`, made on first use: 32 random bytes, base64, mode 0600. Two
   * processes starting at once agree: only one creation wins, the other reads it.
   */
  static fromKeyFile(file: string): SecretBox {
    const text = readOrCreateKeyFile(file, () => `${randomBytes(KEY_BYTES).toString('base64')}\n`);
    const key = Buffer.from(text.trim(), 'base64');
    if (key.length !== KEY_BYTES) {
      throw new SecretKeyError(`the secret key file ${file} does not hold a ${KEY_BYTES}-byte key (base64)`);
    }
    return new SecretBox(key, 1);
  }

  /** True for a value sealed by some box (whatever its key). */
  static isSealed(value: unknown): value is string {
    return typeof value === 'string' && value.startsWith(PREFIX) && SEALED_RE.test(value);
  }

  seal(plaintext: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.key, iv);
    const body = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
    return `${PREFIX}v${this.version}:${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64')}`;
  }

  /** The plaintext of a sealed value; a value that is not sealed (written before sealing existed) as it is. */
  open(value: string): string {
    const m = SEALED_RE.exec(value);
    if (!m) return value;
    if (Number(m[1]) !== this.version) {
      throw new SecretKeyError(
        `a secret was sealed with key version ${m[1]}, this controller has version ${this.version}`,
      );
    }
    const raw = Buffer.from(m[2], 'base64');
    if (raw.length < IV_BYTES + TAG_BYTES) throw new SecretKeyError('a sealed secret is truncated');
    const decipher = createDecipheriv('aes-256-gcm', this.key, raw.subarray(0, IV_BYTES));
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    try {
      return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
    } catch {
      throw new SecretKeyError('a sealed secret does not open with this controller key (another key, or altered)');
    }
  }

  /** Sealed once: a value already sealed stays as it is. */
  sealOnce(value: string): string {
    return SecretBox.isSealed(value) ? value : this.seal(value);
  }

  /**
   * A key of its own for one purpose (HMAC of the purpose under this key): the same
   * for the same purpose, unrelated to this key for anyone who does not hold it.
   */
  derive(purpose: string): Buffer {
    return createHmac('sha256', this.key).update(`charmflow derived key: ${purpose}`).digest();
  }

  /** Names this key without revealing it: the store keeps it to refuse a different key. */
  keyCheck(): string {
    return createHmac('sha256', this.key).update('charmflow secret key check').digest('base64');
  }

  /** Each value of a credential's attributes sealed. */
  sealAttributes(attributes: Record<string, string>): Record<string, string> {
    return Object.fromEntries(Object.entries(attributes).map(([k, v]) => [k, this.sealOnce(v)]));
  }

  openAttributes(attributes: Record<string, string>): Record<string, string> {
    return Object.fromEntries(Object.entries(attributes).map(([k, v]) => [k, this.open(v)]));
  }

  /** A config with the values of `secret` options sealed; `types` maps each option to its type. */
  sealConfig<V>(config: Record<string, V>, types: Record<string, { type: string }>): Record<string, V | string> {
    const out: Record<string, V | string> = {};
    for (const [k, v] of Object.entries(config)) {
      out[k] = types[k]?.type === 'secret' && typeof v === 'string' ? this.seal(v) : v;
    }
    return out;
  }

  /** A config with the values of its `secret` options opened, for a hook to read. */
  openConfig<V>(config: Record<string, V>, types: Record<string, { type: string }>): Record<string, V | string> {
    const out: Record<string, V | string> = {};
    for (const [k, v] of Object.entries(config)) {
      out[k] = types[k]?.type === 'secret' && typeof v === 'string' ? this.open(v) : v;
    }
    return out;
  }
}
