/**
 * Credentials: the sealed secret never leaves this module except through `openCredential`, which only the
 * worker's activities call. Reads for the API select metadata columns by name, never `*`.
 */
import { and, desc, eq, isNull, ne, notLike, or, sql } from 'drizzle-orm';
import type { Db } from '../client';
import { newId } from '../ids';
import { credentials } from '../schema/index';
import { sealContext, VaultError, type SealedSecret, type Vault } from '../vault';

const metadataColumns = {
  id: credentials.id,
  teamId: credentials.teamId,
  name: credentials.name,
  kind: credentials.kind,
  secretVersion: credentials.secretVersion,
  createdAt: credentials.createdAt,
  rotatedAt: credentials.rotatedAt,
  revokedAt: credentials.revokedAt,
};

export type CredentialMetadata = { id: string; teamId: string; name: string; kind: string; secretVersion: number; createdAt: Date; rotatedAt: Date | null; revokedAt: Date | null };

export async function createCredential(db: Db, vault: Vault, params: { teamId: string; name: string; kind: string; secret: string }): Promise<CredentialMetadata> {
  const id = newId('cred');
  const sealed = vault.seal(params.secret, sealContext.credential(params.teamId, id));
  const [row] = await db
    .insert(credentials)
    .values({ id, teamId: params.teamId, name: params.name, kind: params.kind, ...sealed })
    .returning(metadataColumns);
  return row!;
}

export async function listCredentials(db: Db, params: { teamId: string; limit: number }): Promise<CredentialMetadata[]> {
  return db.select(metadataColumns).from(credentials).where(eq(credentials.teamId, params.teamId)).orderBy(desc(credentials.id)).limit(params.limit);
}

export async function getCredential(db: Db, params: { teamId: string; credentialId: string }): Promise<CredentialMetadata | null> {
  const [row] = await db
    .select(metadataColumns)
    .from(credentials)
    .where(and(eq(credentials.id, params.credentialId), eq(credentials.teamId, params.teamId)));
  return row ?? null;
}

export class CredentialUnavailableError extends Error {
  readonly code = 'credential.unavailable';
}

/** Decrypts for use in one turn. A revoked or missing credential is an error that names the id, never the value. */
export async function openCredential(db: Db, vault: Vault, params: { teamId: string; credentialId: string }): Promise<string> {
  const [row] = await db
    .select()
    .from(credentials)
    .where(and(eq(credentials.id, params.credentialId), eq(credentials.teamId, params.teamId), isNull(credentials.revokedAt)));
  if (!row) throw new CredentialUnavailableError(`credential ${params.credentialId} is missing or revoked`);
  return vault.open(row, sealContext.credential(row.teamId, row.id));
}

/** A new secret under the same id; the next turn that opens the credential uses it. */
export async function rotateCredential(db: Db, vault: Vault, params: { teamId: string; credentialId: string; secret: string }): Promise<CredentialMetadata | null> {
  const sealed = vault.seal(params.secret, sealContext.credential(params.teamId, params.credentialId));
  const [row] = await db
    .update(credentials)
    .set({ ...sealed, secretVersion: sql`${credentials.secretVersion} + 1`, rotatedAt: new Date() })
    .where(and(eq(credentials.id, params.credentialId), eq(credentials.teamId, params.teamId), isNull(credentials.revokedAt)))
    .returning(metadataColumns);
  return row ?? null;
}

export async function revokeCredential(db: Db, params: { teamId: string; credentialId: string }): Promise<CredentialMetadata | null> {
  const [row] = await db
    .update(credentials)
    .set({ revokedAt: new Date() })
    .where(and(eq(credentials.id, params.credentialId), eq(credentials.teamId, params.teamId), isNull(credentials.revokedAt)))
    .returning(metadataColumns);
  return row ?? null;
}

/** What a re-seal did: how many records it re-sealed, and the ids of those it could not open. */
export interface RewrapResult {
  rewrapped: number;
  unreadable: string[];
}

/**
 * Master-key rotation: re-seals every secret sealed by an older master key (or before records were bound to their
 * id and team) under the current one. Both keys stay configured until this has run, so nothing is ever unreadable.
 * Without `teamId`, every team's.
 */
export async function rewrapCredentials(db: Db, vault: Vault, params: { teamId?: string } = {}): Promise<RewrapResult> {
  const where = [or(ne(credentials.masterKeyId, vault.currentKeyId), notLike(credentials.wrappedKey, 'v2.%'), notLike(credentials.ciphertext, 'v2.%'))];
  if (params.teamId) where.push(eq(credentials.teamId, params.teamId));
  const stale = await db.select().from(credentials).where(and(...where));
  const result: RewrapResult = { rewrapped: 0, unreadable: [] };
  for (const row of stale) {
    let resealed: SealedSecret;
    try {
      resealed = vault.reseal(row, sealContext.credential(row.teamId, row.id));
    } catch (err) {
      if (!(err instanceof VaultError)) throw err;
      // already unreadable (altered, or sealed by a key no longer configured): named, so an operator can act on it
      result.unreadable.push(row.id);
      continue;
    }
    // only if nobody rotated it meanwhile: a rotation wrote a current seal of its own
    await db
      .update(credentials)
      .set(resealed)
      .where(and(eq(credentials.id, row.id), eq(credentials.ciphertext, row.ciphertext)));
    result.rewrapped += 1;
  }
  return result;
}
