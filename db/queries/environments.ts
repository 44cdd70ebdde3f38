/**
 * Environments: where a team's sessions run, and what they may reach (`config.networking`). Every read is scoped by
 * team: another team's environment does not exist. Not versioned (Managed Agents' environments are not): an update
 * changes the row in place, and its audit row records what it was and what it became.
 */
import { and, desc, eq, isNull, lt } from 'drizzle-orm';
import type { Db } from '../client';
import { newId } from '../ids';
import { environments, sessions } from '../schema/index';

export type EnvironmentRow = typeof environments.$inferSelect;
export type EnvironmentChanges = Partial<Pick<EnvironmentRow, 'name' | 'description' | 'config' | 'metadata'>>;

export async function createEnvironment(
  db: Db,
  params: { teamId: string; name: string; description: string | null; config: Record<string, unknown>; metadata: Record<string, string> },
): Promise<EnvironmentRow> {
  const [row] = await db.insert(environments).values({ id: newId('env'), ...params }).returning();
  return row!;
}

/** Newest first; `before` is the last id of the previous page. */
export async function listEnvironments(db: Db, params: { teamId: string; limit: number; before?: string; includeArchived?: boolean }): Promise<EnvironmentRow[]> {
  const where = [eq(environments.teamId, params.teamId)];
  if (!params.includeArchived) where.push(isNull(environments.archivedAt));
  if (params.before) where.push(lt(environments.id, params.before));
  return db.select().from(environments).where(and(...where)).orderBy(desc(environments.id)).limit(params.limit);
}

export async function getEnvironment(db: Db, params: { teamId: string; environmentId: string }): Promise<EnvironmentRow | null> {
  const [row] = await db
    .select()
    .from(environments)
    .where(and(eq(environments.id, params.environmentId), eq(environments.teamId, params.teamId)));
  return row ?? null;
}

/**
 * Locks the row and writes what `change` makes of it. `change` sees the row as locked, so of two updates at once the
 * second builds on the first: neither loses a field the other set. A change that changes nothing writes nothing
 * (`changed` is empty). Run it in the transaction that writes the audit row.
 */
export async function updateEnvironment(
  db: Db,
  params: { teamId: string; environmentId: string; change: (row: EnvironmentRow) => EnvironmentChanges },
): Promise<{ kind: 'not_found' } | { kind: 'archived' } | { kind: 'ok'; before: EnvironmentRow; after: EnvironmentRow; changed: Array<keyof EnvironmentChanges> }> {
  const [row] = await db
    .select()
    .from(environments)
    .where(and(eq(environments.id, params.environmentId), eq(environments.teamId, params.teamId)))
    .for('update');
  if (!row) return { kind: 'not_found' };
  if (row.archivedAt) return { kind: 'archived' };
  const changes = params.change(row);
  const changed = (Object.keys(changes) as Array<keyof EnvironmentChanges>).filter((k) => JSON.stringify(changes[k]) !== JSON.stringify(row[k]));
  if (changed.length === 0) return { kind: 'ok', before: row, after: row, changed };
  const [after] = await db
    .update(environments)
    .set({ ...Object.fromEntries(changed.map((k) => [k, changes[k]])), updatedAt: new Date() })
    .where(eq(environments.id, row.id))
    .returning();
  return { kind: 'ok', before: row, after: after!, changed };
}

/**
 * The stored config of a session's environment, as the worker reads it at every turn: `none` when the session has no
 * environment (it runs in the default one), `missing` when it or its environment cannot be found (the caller fails
 * closed).
 */
export async function sessionEnvironmentConfig(
  db: Db,
  params: { teamId: string; sessionId: string },
): Promise<{ kind: 'none' } | { kind: 'missing'; environmentId: string | null } | { kind: 'found'; environmentId: string; config: unknown }> {
  const [row] = await db
    .select({ environmentId: sessions.environmentId, config: environments.config })
    .from(sessions)
    // the environment of the session's own team only
    .leftJoin(environments, and(eq(environments.id, sessions.environmentId), eq(environments.teamId, sessions.teamId)))
    .where(and(eq(sessions.id, params.sessionId), eq(sessions.teamId, params.teamId)));
  if (!row) return { kind: 'missing', environmentId: null };
  if (!row.environmentId) return { kind: 'none' };
  if (row.config === null) return { kind: 'missing', environmentId: row.environmentId };
  return { kind: 'found', environmentId: row.environmentId, config: row.config };
}
