/**
 * Schedules. Every read is scoped by team; a deleted schedule is gone for callers (its runs stay sessions).
 */
import { and, desc, eq, isNull, lt } from 'drizzle-orm';
import type { Db } from '../client';
import { schedules } from '../schema/index';

export type ScheduleRow = typeof schedules.$inferSelect;
export type NewSchedule = typeof schedules.$inferInsert;

export async function insertSchedule(db: Db, row: NewSchedule): Promise<ScheduleRow> {
  const [inserted] = await db.insert(schedules).values(row).returning();
  return inserted!;
}

export async function getSchedule(db: Db, params: { teamId: string; scheduleId: string }): Promise<ScheduleRow | null> {
  const [row] = await db
    .select()
    .from(schedules)
    .where(and(eq(schedules.id, params.scheduleId), eq(schedules.teamId, params.teamId), isNull(schedules.deletedAt)));
  return row ?? null;
}

/** Newest first, paged by id (`after` is the last id of the previous page). */
export async function listSchedules(db: Db, params: { teamId: string; agentId?: string; after?: string; limit: number }): Promise<ScheduleRow[]> {
  const where = [eq(schedules.teamId, params.teamId), isNull(schedules.deletedAt)];
  if (params.agentId) where.push(eq(schedules.agentId, params.agentId));
  if (params.after) where.push(lt(schedules.id, params.after));
  return db.select().from(schedules).where(and(...where)).orderBy(desc(schedules.id)).limit(params.limit);
}

export type ScheduleChanges = Partial<Pick<NewSchedule, 'agentId' | 'agentVersion' | 'environmentId' | 'prompt' | 'title' | 'metadata' | 'budget' | 'spec' | 'policies' | 'state' | 'note' | 'runAsKeyId'>>;

export async function updateSchedule(db: Db, params: { teamId: string; scheduleId: string; changes: ScheduleChanges }): Promise<ScheduleRow | null> {
  const [row] = await db
    .update(schedules)
    .set({ ...params.changes, updatedAt: new Date() })
    .where(and(eq(schedules.id, params.scheduleId), eq(schedules.teamId, params.teamId), isNull(schedules.deletedAt)))
    .returning();
  return row ?? null;
}

export async function markScheduleDeleted(db: Db, params: { teamId: string; scheduleId: string }): Promise<ScheduleRow | null> {
  const now = new Date();
  const [row] = await db
    .update(schedules)
    .set({ deletedAt: now, updatedAt: now })
    .where(and(eq(schedules.id, params.scheduleId), eq(schedules.teamId, params.teamId), isNull(schedules.deletedAt)))
    .returning();
  return row ?? null;
}
