/**
 * The session index, approvals and runtime references. Every read that serves a caller is scoped by team.
 */
import { and, desc, eq, gte, inArray, isNull, lt, lte, ne, sql, type SQL } from 'drizzle-orm';
import { preparedQuery, type Db } from '../client';
import { approvals, runtimeSessions, sessions } from '../schema/index';

export type SessionRow = typeof sessions.$inferSelect;
export type NewSession = typeof sessions.$inferInsert;

/** Inserts the row unless its id is taken (a retry, or a concurrent request with the same idempotency key): null then. */
export async function insertSessionIfAbsent(db: Db, row: NewSession): Promise<SessionRow | null> {
  const [inserted] = await db.insert(sessions).values(row).onConflictDoNothing({ target: sessions.id }).returning();
  return inserted ?? null;
}

export async function getSession(db: Db, params: { teamId: string; sessionId: string }): Promise<SessionRow | null> {
  const [row] = await db
    .select()
    .from(sessions)
    .where(and(eq(sessions.id, params.sessionId), eq(sessions.teamId, params.teamId)));
  return row ?? null;
}

/** What a session's response shows of each call waiting for a person. */
export type PendingApproval = Pick<typeof approvals.$inferSelect, 'toolUseId' | 'tool' | 'input' | 'requestedAt' | 'expiresAt'>;

/**
 * A session of the team with its pending approvals (newest first, at most `limit`), in one query and one round trip:
 * what `GET /v1/sessions/{id}` answers.
 */
export async function getSessionWithApprovals(db: Db, params: { teamId: string; sessionId: string; limit: number }): Promise<{ session: SessionRow; pending: PendingApproval[] } | null> {
  const query = preparedQuery(db, 'session_with_approvals', (db) =>
    db
      .select({
        session: sessions,
        pending: sql<Array<{ tool_use_id: string; tool: string; input: unknown; requested_at: string; expires_at: string }>>`coalesce((
          select json_agg(p) from (
            select a.tool_use_id, a.tool, a.input, a.requested_at, a.expires_at from approvals a
            where a.session_id = ${sessions.id} and a.team_id = ${sessions.teamId} and a.status = 'pending'
            order by a.requested_at desc limit ${sql.placeholder('limit')}
          ) p), '[]'::json)`,
      })
      .from(sessions)
      .where(and(eq(sessions.id, sql.placeholder('sessionId')), eq(sessions.teamId, sql.placeholder('teamId'))))
      .prepare('session_with_approvals'),
  );
  const [row] = await query.execute(params);
  if (!row) return null;
  const pending = row.pending.map((a) => ({ toolUseId: a.tool_use_id, tool: a.tool, input: a.input, requestedAt: new Date(a.requested_at), expiresAt: new Date(a.expires_at) }));
  return { session: row.session, pending: pending as PendingApproval[] };
}

/** What the session has spent so far, in micro-dollars (0 when it does not exist). */
export async function getSessionCost(db: Db, sessionId: string): Promise<number> {
  const [row] = await db.select({ cost: sessions.costMicros }).from(sessions).where(eq(sessions.id, sessionId));
  return row?.cost ?? 0;
}

/** A session one of whose turns ran without a sandbox says so from then on (it is never set back). */
export async function markSessionUnsandboxed(db: Db, sessionId: string): Promise<void> {
  await db.update(sessions).set({ sandbox: 'none' }).where(and(eq(sessions.id, sessionId), ne(sessions.sandbox, 'none')));
}

/** For the worker, which knows the session only by id. */
export async function getSessionById(db: Db, sessionId: string): Promise<SessionRow | null> {
  const [row] = await db.select().from(sessions).where(eq(sessions.id, sessionId));
  return row ?? null;
}

export interface SessionFilter {
  teamId: string;
  agentId?: string;
  runtime?: string;
  status?: string;
  initiatorKeyId?: string;
  scheduleId?: string;
  createdAfter?: Date;
  createdBefore?: Date;
  /** the last id of the previous page */
  after?: string;
  limit: number;
  includeArchived: boolean;
}

/** Newest first, paged by id (ulids sort by creation time). */
export async function listSessions(db: Db, filter: SessionFilter): Promise<SessionRow[]> {
  // one prepared statement per combination of filters given: the default page is always the same one
  const given = LIST_FILTERS.filter((f) => filter[f] !== undefined && filter[f] !== '');
  const shape = `${given.join(',')}${filter.includeArchived ? '+archived' : ''}`;
  const values = Object.fromEntries(given.map((f) => [f, filter[f]]));
  const query = preparedQuery(db, `list_sessions:${shape}`, (db) => listSessionsQuery(db, { ...placeholders(given), teamId: filter.teamId, includeArchived: filter.includeArchived, limit: filter.limit }, true).prepare(`list_sessions:${shape}`));
  return query.execute({ ...values, teamId: filter.teamId, limit: filter.limit });
}

/** the optional filters of the fleet list, each a column condition when given */
const LIST_FILTERS = ['agentId', 'runtime', 'status', 'initiatorKeyId', 'scheduleId', 'createdAfter', 'createdBefore', 'after'] as const;

function placeholders(given: ReadonlyArray<(typeof LIST_FILTERS)[number]>): Partial<SessionFilter> {
  return Object.fromEntries(given.map((f) => [f, sql.placeholder(f)]));
}

/**
 * The fleet query itself, not yet run: bench/scale.ts explains exactly what listSessions sends. `prepared`: the
 * filter's values, team and limit are placeholders (`listSessions` binds them).
 */
export function listSessionsQuery(db: Db, filter: SessionFilter, prepared = false) {
  const value = <T>(v: T, name: string) => (prepared ? (sql.placeholder(name) as unknown as T) : v);
  const where: SQL[] = [eq(sessions.teamId, value(filter.teamId, 'teamId'))];
  if (filter.agentId) where.push(eq(sessions.agentId, filter.agentId));
  if (filter.runtime) where.push(eq(sessions.runtime, filter.runtime));
  if (filter.status) where.push(eq(sessions.status, filter.status));
  if (filter.initiatorKeyId) where.push(eq(sessions.initiatorKeyId, filter.initiatorKeyId));
  if (filter.scheduleId) where.push(eq(sessions.scheduleId, filter.scheduleId));
  if (filter.createdAfter) where.push(gte(sessions.createdAt, filter.createdAfter));
  if (filter.createdBefore) where.push(lte(sessions.createdAt, filter.createdBefore));
  if (filter.after) where.push(lt(sessions.id, filter.after));
  if (!filter.includeArchived) where.push(isNull(sessions.archivedAt));
  return db
    .select()
    .from(sessions)
    .where(and(...where))
    .orderBy(desc(sessions.id))
    .limit(value(filter.limit, 'limit'));
}

export async function markSessionArchived(db: Db, params: { teamId: string; sessionId: string }) {
  const [row] = await db
    .update(sessions)
    .set({ archivedAt: new Date(), updatedAt: new Date() })
    .where(and(eq(sessions.id, params.sessionId), eq(sessions.teamId, params.teamId)))
    .returning();
  return row ?? null;
}

export async function setSessionStatus(db: Db, params: { sessionId: string; status: string; stopReason: unknown }) {
  await db.update(sessions).set({ status: params.status, stopReason: params.stopReason, updatedAt: new Date() }).where(eq(sessions.id, params.sessionId));
}

// ---- approvals ---------------------------------------------------------------------------------------------

export type ApprovalRow = typeof approvals.$inferSelect;

export async function insertApproval(db: Db, row: typeof approvals.$inferInsert) {
  await db.insert(approvals).values(row).onConflictDoNothing();
}

export async function getApproval(db: Db, params: { teamId: string; sessionId: string; toolUseId: string }) {
  const [row] = await db
    .select()
    .from(approvals)
    .where(and(eq(approvals.teamId, params.teamId), eq(approvals.sessionId, params.sessionId), eq(approvals.toolUseId, params.toolUseId)));
  return row ?? null;
}

/** Moves a pending approval to its outcome; a second decision for the same call changes nothing. */
export async function decideApproval(db: Db, params: { sessionId: string; toolUseId: string; status: 'allowed' | 'denied' | 'expired'; keyId: string | null; reason: string }) {
  const [row] = await db
    .update(approvals)
    .set({ status: params.status, decidedAt: new Date(), decidedByKeyId: params.keyId, reason: params.reason })
    .where(and(eq(approvals.sessionId, params.sessionId), eq(approvals.toolUseId, params.toolUseId), eq(approvals.status, 'pending')))
    .returning();
  return row ?? null;
}

export async function listPendingApprovals(db: Db, params: { teamId: string; sessionId?: string; limit: number }) {
  const where = [eq(approvals.teamId, params.teamId), eq(approvals.status, 'pending')];
  if (params.sessionId) where.push(eq(approvals.sessionId, params.sessionId));
  return db.select().from(approvals).where(and(...where)).orderBy(desc(approvals.requestedAt)).limit(params.limit);
}

// ---- runtime references -------------------------------------------------------------------------------------

export async function getRuntimeRef(db: Db, sessionId: string) {
  const [row] = await db.select().from(runtimeSessions).where(eq(runtimeSessions.sessionId, sessionId));
  return row ?? null;
}

export async function putRuntimeRef(db: Db, row: { sessionId: string; runtime: string; runtimeSessionId: string; state: Record<string, unknown> }) {
  await db
    .insert(runtimeSessions)
    .values({ ...row, updatedAt: new Date() })
    .onConflictDoUpdate({ target: runtimeSessions.sessionId, set: { runtimeSessionId: row.runtimeSessionId, state: row.state, updatedAt: new Date() } });
}

/**
 * Which of these sessions may still run a turn (not terminated), whatever their team: for an operator's process
 * cleanup, which finds runtime processes by session id on disk and must leave those alone.
 */
export async function unterminatedSessionIds(db: Db, sessionIds: string[]): Promise<Set<string>> {
  if (sessionIds.length === 0) return new Set();
  const rows = await db.select({ id: sessions.id }).from(sessions).where(and(inArray(sessions.id, sessionIds), ne(sessions.status, 'terminated')));
  return new Set(rows.map((r) => r.id));
}

/** Which of these sessions are idle (a turn over, none running or parked), whatever their team: for a worker restarted on the disk that holds them. */
export async function idleSessionIds(db: Db, sessionIds: string[]): Promise<Set<string>> {
  if (sessionIds.length === 0) return new Set();
  const rows = await db.select({ id: sessions.id }).from(sessions).where(and(inArray(sessions.id, sessionIds), eq(sessions.status, 'idle')));
  return new Set(rows.map((r) => r.id));
}

// ---- fleet gauges -------------------------------------------------------------------------------------------

/**
 * Sessions not archived, counted by status and runtime across every team: an operator's gauge for /metrics,
 * which is served on the metrics port only and never to an API key.
 */
export async function countSessionsByState(db: Db): Promise<Array<{ state: string; runtime: string; count: number }>> {
  return db
    .select({ state: sessions.status, runtime: sessions.runtime, count: sql<number>`count(*)::int` })
    .from(sessions)
    .where(isNull(sessions.archivedAt))
    .groupBy(sessions.status, sessions.runtime);
}
