import { createHash, randomBytes } from 'node:crypto';
import { and, asc, desc, eq, isNull, lt, sql } from 'drizzle-orm';
import type { Role } from '../../governance/types';
import { rowsOf, type Db } from '../client';
import { CHANNELS, notifiedCache, type Notifications } from '../notifications';
import { newId } from '../ids';
import { appendAudit } from './audit';
import { apiKeys, teams } from '../schema/index';

export function hashKey(plain: string): string {
  return createHash('sha256').update(plain).digest('hex');
}

export function generateApiKey(): string {
  return `ap_${randomBytes(24).toString('base64url')}`;
}

export async function createTeam(db: Db, params: { name: string; id?: string }) {
  const [team] = await db.insert(teams).values({ id: params.id ?? newId('team'), name: params.name }).returning();
  return team!;
}

/** Creates the team unless the name is taken (null then): the unique index decides, not a read before the write. */
export async function createTeamIfNameFree(db: Db, params: { name: string }) {
  const [team] = await db.insert(teams).values({ id: newId('team'), name: params.name }).onConflictDoNothing({ target: teams.name }).returning();
  return team ?? null;
}

export async function getTeam(db: Db, params: { teamId: string }) {
  const [team] = await db.select().from(teams).where(eq(teams.id, params.teamId));
  return team ?? null;
}

export async function findTeamByName(db: Db, name: string) {
  const [team] = await db.select().from(teams).where(eq(teams.name, name));
  return team ?? null;
}

/** Stores the hash; returns the plain key, which is never stored or shown again. */
export async function createApiKey(db: Db, params: { teamId: string; name: string; role: Role; plain?: string }) {
  const plain = params.plain ?? generateApiKey();
  const [row] = await db
    .insert(apiKeys)
    .values({ id: newId('key'), teamId: params.teamId, name: params.name, role: params.role, hash: hashKey(plain), prefix: plain.slice(0, 7) })
    .onConflictDoNothing({ target: apiKeys.hash })
    .returning();
  if (row) return { key: row, plain };
  // the same plain key was registered before (a bootstrap key on restart): hand back the existing row
  const [existing] = await db.select().from(apiKeys).where(eq(apiKeys.hash, hashKey(plain)));
  return { key: existing!, plain };
}

/** What may be shown of a key: never the hash (columns are named, so a new secret column cannot ride along). */
const keyMetadata = {
  id: apiKeys.id,
  teamId: apiKeys.teamId,
  name: apiKeys.name,
  role: apiKeys.role,
  prefix: apiKeys.prefix,
  createdAt: apiKeys.createdAt,
  revokedAt: apiKeys.revokedAt,
};
export type ApiKeyMetadata = { id: string; teamId: string; name: string; role: string; prefix: string; createdAt: Date; revokedAt: Date | null };

/** A team's keys, revoked ones included, newest first, paged by id (`before` is the last id of the previous page). */
export async function listApiKeys(db: Db, params: { teamId: string; limit: number; before?: string }): Promise<ApiKeyMetadata[]> {
  const where = [eq(apiKeys.teamId, params.teamId)];
  if (params.before) where.push(lt(apiKeys.id, params.before));
  return db.select(keyMetadata).from(apiKeys).where(and(...where)).orderBy(desc(apiKeys.id)).limit(params.limit);
}

export async function getApiKey(db: Db, params: { teamId: string; keyId: string }): Promise<ApiKeyMetadata | null> {
  const [row] = await db.select(keyMetadata).from(apiKeys).where(and(eq(apiKeys.id, params.keyId), eq(apiKeys.teamId, params.teamId)));
  return row ?? null;
}

/**
 * Revokes an active key of the team; null when there is none (unknown, another team's, or already revoked). Every API
 * process that holds the key as verified hears of it when the caller's transaction commits (`CHANNELS.keys`, sent by
 * a trigger on api_keys, so a revocation made with psql is heard too).
 */
export async function revokeApiKey(db: Db, params: { teamId: string; keyId: string }): Promise<ApiKeyMetadata | null> {
  const [row] = await db
    .update(apiKeys)
    .set({ revokedAt: new Date() })
    .where(and(eq(apiKeys.id, params.keyId), eq(apiKeys.teamId, params.teamId), isNull(apiKeys.revokedAt)))
    .returning(keyMetadata);
  return row ?? null;
}

type ApiKeyRow = typeof apiKeys.$inferSelect;

/**
 * Keys verified by this process, by hash: with `changes` (its LISTEN connection) a key is read once, not on every
 * request, and forgotten when its row changes (revoked, its role raised: a trigger notifies, db/migrations/0011).
 * Trusted only while notifications are heard and
 * in the epoch it was read in (db/notifications.ts); unknown and revoked keys are never kept.
 */
const verifiedKeys = notifiedCache<ApiKeyRow>(CHANNELS.keys);

/** Forgets a verified key (it was revoked or changed): the next request with it is checked in the database. */
export function forgetVerifiedKey(keyId: string): void {
  verifiedKeys.forget(keyId);
}

export async function findActiveKey(db: Db, plain: string, changes?: Notifications): Promise<ApiKeyRow | null> {
  const hash = hashKey(plain);
  const read = async () => {
    const [row] = await db
      .select()
      .from(apiKeys)
      .where(and(eq(apiKeys.hash, hash), isNull(apiKeys.revokedAt)));
    return row ?? null;
  };
  return verifiedKeys.get(changes, hash, read, (key) => key.id);
}

/** The name the bootstrap gives the installation's first key; how a restart recognises it. */
export const BOOTSTRAP_KEY_NAME = 'bootstrap admin';

/**
 * Which of the keys are still active (not revoked), each in its own team: an API process asks this for every key that
 * holds an event stream open, in one read.
 */
export async function activeKeyIds(db: Db, params: { keys: Array<{ teamId: string; keyId: string }> }): Promise<Set<string>> {
  if (params.keys.length === 0) return new Set();
  const wanted = JSON.stringify(params.keys.map((k) => ({ team_id: k.teamId, key_id: k.keyId })));
  const rows = rowsOf<{ id: string }>(
    await db.execute(sql`
      select k.id from api_keys k
      join jsonb_to_recordset(${wanted}::jsonb) as w(team_id text, key_id text) on k.id = w.key_id and k.team_id = w.team_id
      where k.revoked_at is null`),
  );
  return new Set(rows.map((r) => r.id));
}

/**
 * First start: a `default` team and the installation's platform admin key. With `plain` (AGENTPLANE_ADMIN_KEY) that
 * key is registered (idempotent across restarts); without it a key is generated only when no platform admin key is
 * active, and returned once.
 *
 * Installations bootstrapped before the platform_admin role have their bootstrap key as a team `admin`; it is raised
 * at start, and only it: the key given again in AGENTPLANE_ADMIN_KEY (whoever holds it set up the installation), or,
 * without one, the default team's first key named "bootstrap admin". "First" matters: a team admin can name a new
 * key "bootstrap admin" too, but never before the key the first start made.
 */
export async function bootstrapAdmin(db: Db, plain: string | undefined): Promise<{ teamId: string; keyId: string; plain: string | null }> {
  // two API replicas starting at once on a fresh database both get here: the second finds the team the first made
  const team = (await findTeamByName(db, 'default')) ?? (await createTeamIfNameFree(db, { name: 'default' })) ?? (await findTeamByName(db, 'default'))!;
  if (plain) {
    const { key } = await createApiKey(db, { teamId: team.id, name: BOOTSTRAP_KEY_NAME, role: 'platform_admin', plain });
    if (key.teamId === team.id) await raiseToPlatformAdmin(db, key.id);
    return { teamId: team.id, keyId: key.id, plain: null };
  }
  const [platform] = await db
    .select({ id: apiKeys.id })
    .from(apiKeys)
    .where(and(eq(apiKeys.teamId, team.id), eq(apiKeys.role, 'platform_admin'), isNull(apiKeys.revokedAt)))
    .limit(1);
  if (platform) return { teamId: team.id, keyId: platform.id, plain: null };
  const [first] = await db
    .select({ id: apiKeys.id })
    .from(apiKeys)
    .where(and(eq(apiKeys.teamId, team.id), eq(apiKeys.name, BOOTSTRAP_KEY_NAME)))
    .orderBy(asc(apiKeys.createdAt), asc(apiKeys.id))
    .limit(1);
  if (first && (await raiseToPlatformAdmin(db, first.id))) return { teamId: team.id, keyId: first.id, plain: null };
  const created = await createApiKey(db, { teamId: team.id, name: BOOTSTRAP_KEY_NAME, role: 'platform_admin' });
  return { teamId: team.id, keyId: created.key.id, plain: created.plain };
}

/** Makes an active `admin` key the platform admin, with its audit row; false when the key is not one. */
async function raiseToPlatformAdmin(db: Db, keyId: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [raised] = await tx
      .update(apiKeys)
      .set({ role: 'platform_admin' })
      .where(and(eq(apiKeys.id, keyId), eq(apiKeys.role, 'admin'), isNull(apiKeys.revokedAt)))
      .returning({ id: apiKeys.id, teamId: apiKeys.teamId });
    if (!raised) return false;
    await appendAudit(tx, {
      teamId: raised.teamId,
      actorKeyId: 'system',
      actorRole: 'system',
      action: 'key.role',
      target: raised.id,
      decision: 'ok',
      reason: 'bootstrap: the installation\'s first key holds platform_admin',
      data: { from: 'admin', to: 'platform_admin' },
    });
    return true;
  });
}
