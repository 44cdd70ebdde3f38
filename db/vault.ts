/**
 * The credential vault's cryptography: envelope encryption with AES-256-GCM.
 *
 * Each secret gets its own random data key; the data key is sealed with a master key named by a key id. Master
 * keys come from AGENTPLANE_MASTER_KEY as `kid:base64[,kid:base64…]`; the first is current, the others can still
 * open what they sealed, so a master key rotates without downtime (re-wrap with `rewrap`).
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

export interface SealedSecret {
  masterKeyId: string;
  /** the data key, sealed by the master key: `v2.iv.tag.ciphertext` (base64 parts), or `iv.tag.ciphertext` before v2 */
  wrappedKey: string;
  /** the secret, sealed by the data key, in the same format */
  ciphertext: string;
}

/**
 * What a sealed value belongs to, authenticated with it (AES-GCM additional data): a ciphertext copied onto another
 * record, or into another team, does not open there. Sealed values written before contexts existed (no `v2.` prefix)
 * still open without one until `reseal` rewrites them (POST /v1/credentials/rewrap).
 */
export const sealContext = {
  credential: (teamId: string, credentialId: string) => `agentplane:credential:${teamId}:${credentialId}`,
  webhook: (teamId: string, webhookId: string) => `agentplane:webhook:${teamId}:${webhookId}`,
};

export interface Vault {
  currentKeyId: string;
  seal(plaintext: string, context: string): SealedSecret;
  open(sealed: SealedSecret, context: string): string;
  /** false when `reseal` would rewrite it: sealed under an older master key, or without a context */
  isCurrent(sealed: SealedSecret): boolean;
  /** the same secret sealed under the current master key and bound to `context` */
  reseal(sealed: SealedSecret, context: string): SealedSecret;
  /**
   * 32 bytes for one purpose (`agentplane:gateway-token:v1`), derived (HKDF-SHA256) from each master key, the current
   * one first: a key for something that is not stored, so that rotation keeps what older keys made verifiable
   */
  deriveKeys(purpose: string): Buffer[];
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
  const seal = (plaintext: Buffer, context: string): SealedSecret => {
    const dataKey = randomBytes(32);
    return { masterKeyId: current, wrappedKey: encrypt(masterKey(current), dataKey, context), ciphertext: encrypt(dataKey, plaintext, context) };
  };
  const open = (sealed: SealedSecret, context: string): Buffer => {
    const dataKey = decrypt(masterKey(sealed.masterKeyId), sealed.wrappedKey, context);
    return decrypt(dataKey, sealed.ciphertext, context);
  };
  return {
    currentKeyId: current,
    seal: (plaintext, context) => seal(Buffer.from(plaintext, 'utf8'), context),
    open: (sealed, context) => open(sealed, context).toString('utf8'),
    isCurrent: (sealed) => sealed.masterKeyId === current && isBound(sealed.wrappedKey) && isBound(sealed.ciphertext),
    // a new data key too: the old one was wrapped without a context, so the record is sealed afresh
    reseal: (sealed, context) => seal(open(sealed, context), context),
    deriveKeys: (purpose) => [...keys.values()].map((key) => Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), purpose, 32))),
  };
}

/** A fresh master key spec for dev mode and tests. */
export function generateMasterKeySpec(kid = 'k1'): string {
  return `${kid}:${randomBytes(32).toString('base64')}`;
}

const BOUND = 'v2';
const isBound = (sealed: string) => sealed.startsWith(`${BOUND}.`);

function encrypt(key: Buffer, plaintext: Buffer, context: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', key, iv);
  cipher.setAAD(Buffer.from(context, 'utf8'));
  const body = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return [BOUND, ...[iv, cipher.getAuthTag(), body].map((b) => b.toString('base64'))].join('.');
}

function decrypt(key: Buffer, sealed: string, context: string): Buffer {
  const bound = isBound(sealed);
  const [iv, tag, body] = (bound ? sealed.slice(BOUND.length + 1) : sealed).split('.').map((part) => Buffer.from(part, 'base64'));
  if (!iv || !tag || !body) throw new VaultError('sealed value is malformed');
  const decipher = createDecipheriv('aes-256-gcm', key, iv);
  if (bound) decipher.setAAD(Buffer.from(context, 'utf8'));
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([decipher.update(body), decipher.final()]);
  } catch {
    // GCM says only "unsupported state": the value was changed, sealed by another key, or belongs to another record
    throw new VaultError('sealed value does not open: it was altered, or it belongs to another record');
  }
}
