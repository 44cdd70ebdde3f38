/**
 * Live policy: team deny rules, and the team's policy revision that orders every policy change (team or agent).
 * Running sessions compare revisions, so the newest policy wins wherever a change arrives first (signal or read).
 */
import { and, eq, ne, sql } from 'drizzle-orm';
import { composePolicy, policyFromDefinition } from '../../governance/policy';
import type { ToolPolicy } from '../../governance/types';
import type { Db } from '../client';
import { CHANNELS, notifiedCache, type Notifications } from '../notifications';
import { agents, agentVersions, sessions, teamPolicies, teams } from '../schema/index';

export type TeamDeny = { tool: string; pattern?: string };

export async function getTeamPolicy(db: Db, teamId: string): Promise<{ rules: TeamDeny[]; revision: number }> {
  const [team] = await db.select({ revision: teams.policyRevision }).from(teams).where(eq(teams.id, teamId));
  const [policy] = await db.select().from(teamPolicies).where(eq(teamPolicies.teamId, teamId));
  return { rules: (policy?.rules as TeamDeny[] | undefined) ?? [], revision: team?.revision ?? 0 };
}

/**
 * Bumps and returns the team's policy revision; call it in the transaction that changes a policy. Every process that
 * holds the team's live policy in memory hears of it when that transaction commits (`CHANNELS.policy`, sent by a
 * trigger on the revision, db/migrations/0011).
 */
export async function bumpPolicyRevision(db: Db, teamId: string): Promise<number> {
  const [row] = await db
    .update(teams)
    .set({ policyRevision: sql`${teams.policyRevision} + 1` })
    .where(eq(teams.id, teamId))
    .returning({ revision: teams.policyRevision });
  return row!.revision;
}

export async function setTeamRules(db: Db, params: { teamId: string; rules: TeamDeny[] }): Promise<number> {
  await db
    .insert(teamPolicies)
    .values({ teamId: params.teamId, rules: params.rules })
    .onConflictDoUpdate({ target: teamPolicies.teamId, set: { rules: params.rules, updatedAt: new Date() } });
  return bumpPolicyRevision(db, params.teamId);
}

/** The policy a session of this agent runs under now: team denies, then the agent's current version's rules. */
export async function effectivePolicyFor(db: Db, params: { teamId: string; agentId: string }): Promise<{ policy: ToolPolicy; revision: number }> {
  const team = await getTeamPolicy(db, params.teamId);
  const [current] = await db
    .select({ definition: agentVersions.definition })
    .from(agents)
    .innerJoin(agentVersions, and(eq(agentVersions.agentId, agents.id), eq(agentVersions.version, agents.currentVersion)))
    .where(and(eq(agents.id, params.agentId), eq(agents.teamId, params.teamId)));
  const agentPolicy = current ? policyFromDefinition(current.definition as Parameters<typeof policyFromDefinition>[0]) : { rules: [], default: 'deny' as const };
  return { policy: composePolicy(team.rules, agentPolicy), revision: team.revision };
}

/**
 * `effectivePolicyFor` on the hot path of every tool decision: the team's revision and the agent's current version (the
 * head), and the composed policy from memory when both are unchanged. That is safe because neither can change without
 * moving: team rules are only written with a revision bump, and an agent version is never edited.
 *
 * With `changes` (this process's LISTEN connection, db/notifications.ts) the head itself is kept in memory too, until
 * the team's next policy notification: no read at all per call. It is trusted only while notifications are heard, and
 * only in the connection's epoch it was read in, since a notification sent while the connection was down is lost.
 * Without it, or while not listening, the head is one indexed read per call.
 */
const composedPolicies = new Map<string, { policy: ToolPolicy; revision: number }>();
const COMPOSED_POLICIES_MAX = 10_000;

type Head = { revision: number; version: number };
/** heads by team and agent, forgotten when the team's policy notification names the team */
const heads = notifiedCache<Head>(CHANNELS.policy);

async function readHead(db: Db, params: { teamId: string; agentId: string }): Promise<Head> {
  const [head] = await db
    .select({ revision: teams.policyRevision, version: agents.currentVersion })
    .from(teams)
    .leftJoin(agents, and(eq(agents.id, params.agentId), eq(agents.teamId, teams.id)))
    .where(eq(teams.id, params.teamId));
  return { revision: head?.revision ?? 0, version: head?.version ?? 0 };
}

async function headOf(db: Db, params: { teamId: string; agentId: string }, changes?: Notifications): Promise<Head> {
  return (await heads.get(changes, `${params.teamId}/${params.agentId}`, () => readHead(db, params), () => params.teamId))!;
}

export async function livePolicyFor(db: Db, params: { teamId: string; agentId: string }, changes?: Notifications): Promise<{ policy: ToolPolicy; revision: number }> {
  const head = await headOf(db, params, changes);
  const key = `${params.teamId}/${params.agentId}@${head.revision}/${head.version}`;
  const cached = composedPolicies.get(key);
  if (cached) return cached;
  const live = await effectivePolicyFor(db, params);
  // a newer read can only repeat this one, so a racing read of another revision is not cached under this key
  if (live.revision === head.revision) {
    if (composedPolicies.size >= COMPOSED_POLICIES_MAX) composedPolicies.clear();
    composedPolicies.set(key, live);
  }
  return live;
}

/** Sessions whose workflow may still be running, for pushing a policy change to them. */
export async function liveSessions(db: Db, params: { teamId: string; agentId?: string }) {
  const where = [eq(sessions.teamId, params.teamId), ne(sessions.status, 'terminated')];
  if (params.agentId) where.push(eq(sessions.agentId, params.agentId));
  return db.select({ id: sessions.id, agentId: sessions.agentId }).from(sessions).where(and(...where));
}
