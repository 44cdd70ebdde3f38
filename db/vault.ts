/**
 * The credential vault's cryptography: envelope encryption with AES-256-GCM.
 *
 * Each secret gets its own random data key; the data key is sealed with a master key named by a key id. Master
 * keys come from AGENTPLANE_MASTER_KEY as `kid:base64[,kid:base64…]`; the first is current, the others can still
 * open what they sealed, so a master key rotates without downtime (re-wrap with `rewrap`).
 */
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

export interface SealedSecret {
  masterKeyId: string;
  /** iv.tag.ciphertext of the data key, base64 parts joined by '.' */
  wrappedKey: string;
  /** iv.tag.ciphertext of the secret */
  ciphertext: string;
}

export interface Vault {
  currentKeyId: string;
  seal(plaintext: string): SealedSecret;
  open(sealed: SealedSecret): string;
  /** re-seal the data key under the current master key; the secret itself is untouched */
  rewrap(sealed: SealedSecret): SealedSecret;
}

export class VaultError extends Error {
  readonly code = 'vault.unavailable';
}

export function parseMasterKeys(spec: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  for (const entry of spec.split(',').map((s) => s.trim()).filter(Boolean)) {
    const separator = entry.indexOf(':');
    if (separator <= 0) throw new VaultError('AGENTPLANE_MASTER_KEY entries must look like kid:base64key');
    const key = Buffer.from(entry.slice(separator + 1), 'base64');
    if (key.length !== 32) throw new VaultError(`master key "${entry.slice(0, separator)}" must be 32 bytes of base64`);
    keys.set(entry.slice(0, separator), key);
  }
  if (keys.size === 0) throw new VaultError('AGENTPLANE_MASTER_KEY holds no key');
  return keys;
}

export function createVault(masterKeySpec: string): Vault {
  const keys = parseMasterKeys(masterKeySpec);
  const [currentKeyId] = keys.keys() as IterableIterator<string>;
  const masterKey = (kid: string) => {
    const key = keys.get(kid);
    if (!key) throw new VaultError(`master key "${kid}" is not configured`);
    return key;
  };
  const current = currentKeyId as string;
  return {
    currentKeyId: current,
    seal(plaintext) {
      const dataKey = randomBytes(32);
      return {
        masterKeyId: current,
        wrappedKey: encrypt(masterKey(current), dataKey),
        ciphertext: encrypt(dataKey, Buffer.from(plaintext, 'utf8')),
      };
    },
    open(sealed) {
      const dataKey = decrypt(masterKey(sealed.masterKeyId), sealed.wrappedKey);
      return decrypt(dataKey, sealed.ciphertext).toString('utf8');
    },
    rewrap(sealed) {
      const dataKey = decrypt(masterKey(sealed.masterKeyId), sealed.wrappedKey);
      return { masterKeyId: current, wrappedKey: encrypt(masterKey(current), dataKey), ciphertext: sealed.ciphertext };
    },
  };
}

/** A fresh master key spec for dev mode and tests. */
export function generateMasterKeySpec(kid = 'k1'): string {
  return `${kid}:${randomBytes(32).toString('base64')}`;
}

function encrypt(key: Buffer, plaintext: Buffer): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return [iv, cipher.getAuthTag(), body].map((b) => b.toString('base64')).join('.');
}

function decrypt(key: Buffer, sealed: string): Buffer {
  const [iv, tag, body] = sealed.split('.').map((part) => Buffer.from(part, 'base64'));
  if (!iv || !tag || !body) throw new VaultError('sealed value is malformed');
  const decipher = createDecipheriv('aes-256-gcm', key, iv);
  decipher.setAuthTag(tag);
  return Buffer.concat([decipher.update(body), decipher.final()]);
}
