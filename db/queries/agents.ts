/**
 * Agents and their immutable versions. Every read is scoped by team: another team's agent does not exist.
 */
import { and, asc, desc, eq, isNull, lt } from 'drizzle-orm';
import type { Db } from '../client';
import { newId } from '../ids';
import { agents, agentVersions } from '../schema/index';

export type AgentRow = typeof agents.$inferSelect;

export async function createAgent(db: Db, params: { teamId: string; name: string; definition: Record<string, unknown>; keyId: string }) {
  return db.transaction(async (tx) => {
    const [agent] = await tx.insert(agents).values({ id: newId('agent'), teamId: params.teamId, name: params.name, currentVersion: 1 }).returning();
    const [version] = await tx
      .insert(agentVersions)
      .values({ agentId: agent!.id, version: 1, definition: params.definition, createdByKeyId: params.keyId })
      .returning();
    return { agent: agent!, version: version! };
  });
}

/** Writes version N+1; `expectedVersion` (optimistic concurrency) refuses an update based on a stale read. */
export async function updateAgent(
  db: Db,
  params: { teamId: string; agentId: string; name: string; definition: Record<string, unknown>; keyId: string; expectedVersion?: number },
) {
  return db.transaction(async (tx) => {
    const [agent] = await tx
      .select()
      .from(agents)
      .where(and(eq(agents.id, params.agentId), eq(agents.teamId, params.teamId)))
      .for('update');
    if (!agent) return { kind: 'not_found' as const };
    if (agent.archivedAt) return { kind: 'archived' as const };
    if (params.expectedVersion !== undefined && params.expectedVersion !== agent.currentVersion) {
      return { kind: 'version_conflict' as const, current: agent.currentVersion };
    }
    const next = agent.currentVersion + 1;
    const [version] = await tx
      .insert(agentVersions)
      .values({ agentId: agent.id, version: next, definition: params.definition, createdByKeyId: params.keyId })
      .returning();
    const [updated] = await tx
      .update(agents)
      .set({ currentVersion: next, name: params.name, updatedAt: new Date() })
      .where(eq(agents.id, agent.id))
      .returning();
    return { kind: 'ok' as const, agent: updated!, version: version! };
  });
}

export async function getAgent(db: Db, params: { teamId: string; agentId: string; version?: number }) {
  const [agent] = await db
    .select()
    .from(agents)
    .where(and(eq(agents.id, params.agentId), eq(agents.teamId, params.teamId)));
  if (!agent) return null;
  const [version] = await db
    .select()
    .from(agentVersions)
    .where(and(eq(agentVersions.agentId, agent.id), eq(agentVersions.version, params.version ?? agent.currentVersion)));
  if (!version) return null;
  return { agent, version };
}

export async function listAgents(db: Db, params: { teamId: string; limit: number; before?: string; includeArchived: boolean }) {
  const where = [eq(agents.teamId, params.teamId)];
  if (!params.includeArchived) where.push(isNull(agents.archivedAt));
  if (params.before) where.push(lt(agents.id, params.before));
  const rows = await db
    .select({ agent: agents, version: agentVersions })
    .from(agents)
    .innerJoin(agentVersions, and(eq(agentVersions.agentId, agents.id), eq(agentVersions.version, agents.currentVersion)))
    .where(and(...where))
    .orderBy(desc(agents.id))
    .limit(params.limit);
  return rows;
}

export async function listAgentVersions(db: Db, params: { teamId: string; agentId: string }) {
  const found = await getAgent(db, params);
  if (!found) return null;
  const versions = await db.select().from(agentVersions).where(eq(agentVersions.agentId, params.agentId)).orderBy(asc(agentVersions.version));
  return { agent: found.agent, versions };
}

export async function archiveAgent(db: Db, params: { teamId: string; agentId: string }) {
  const [agent] = await db
    .update(agents)
    .set({ archivedAt: new Date(), updatedAt: new Date() })
    .where(and(eq(agents.id, params.agentId), eq(agents.teamId, params.teamId)))
    .returning();
  return agent ?? null;
}
