import { createHash, randomBytes } from 'node:crypto';
import { and, eq, isNull } from 'drizzle-orm';
import type { Role } from '../../governance/types';
import type { Db } from '../client';
import { newId } from '../ids';
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

export async function findActiveKey(db: Db, plain: string) {
  const [row] = await db
    .select()
    .from(apiKeys)
    .where(and(eq(apiKeys.hash, hashKey(plain)), isNull(apiKeys.revokedAt)));
  return row ?? null;
}

/**
 * First start: a `default` team and an admin key. With `plain` (AGENTPLANE_ADMIN_KEY) that key is registered
 * (idempotent across restarts); without it a key is generated only when the team has none, and returned once.
 */
export async function bootstrapAdmin(db: Db, plain: string | undefined): Promise<{ teamId: string; keyId: string; plain: string | null }> {
  const team = (await findTeamByName(db, 'default')) ?? (await createTeam(db, { name: 'default' }));
  if (plain) {
    const { key } = await createApiKey(db, { teamId: team.id, name: 'bootstrap admin', role: 'admin', plain });
    return { teamId: team.id, keyId: key.id, plain: null };
  }
  const [existing] = await db.select().from(apiKeys).where(and(eq(apiKeys.teamId, team.id), eq(apiKeys.role, 'admin'), isNull(apiKeys.revokedAt))).limit(1);
  if (existing) return { teamId: team.id, keyId: existing.id, plain: null };
  const created = await createApiKey(db, { teamId: team.id, name: 'bootstrap admin', role: 'admin' });
  return { teamId: team.id, keyId: created.key.id, plain: created.plain };
}
