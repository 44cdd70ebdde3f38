/**
 * Credentials: the sealed secret never leaves this module except through `openCredential`, which only the
 * worker's activities call. Reads for the API select metadata columns by name, never `*`.
 */
import { and, desc, eq, isNull, ne, sql } from 'drizzle-orm';
import type { Db } from '../client';
import { newId } from '../ids';
import { credentials } from '../schema/index';
import type { Vault } from '../vault';

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
  const sealed = vault.seal(params.secret);
  const [row] = await db
    .insert(credentials)
    .values({ id: newId('cred'), teamId: params.teamId, name: params.name, kind: params.kind, ...sealed })
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
  return vault.open(row);
}

/** A new secret under the same id; the next turn that opens the credential uses it. */
export async function rotateCredential(db: Db, vault: Vault, params: { teamId: string; credentialId: string; secret: string }): Promise<CredentialMetadata | null> {
  const sealed = vault.seal(params.secret);
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

/**
 * Master-key rotation: re-seals every data key sealed by an older master key under the current one. The secrets
 * themselves are not touched, and both keys stay configured until this has run, so nothing is ever unreadable.
 */
export async function rewrapCredentials(db: Db, vault: Vault, params: { teamId?: string } = {}): Promise<number> {
  const where = [ne(credentials.masterKeyId, vault.currentKeyId)];
  if (params.teamId) where.push(eq(credentials.teamId, params.teamId));
  const stale = await db.select().from(credentials).where(and(...where));
  for (const row of stale) {
    const rewrapped = vault.rewrap(row);
    await db
      .update(credentials)
      .set({ masterKeyId: rewrapped.masterKeyId, wrappedKey: rewrapped.wrappedKey })
      .where(and(eq(credentials.id, row.id), eq(credentials.masterKeyId, row.masterKeyId)));
  }
  return stale.length;
}
