/**
 * Team and agent budgets, enforced in SQL. Before a turn leaves, `reserveBudget` holds an estimate on every
 * budget window that applies, with `UPDATE … WHERE spent + reserved + hold <= limit`: concurrent sessions cannot
 * together pass a limit because each hold is granted by one row update under the row's lock. Charges consume the
 * hold as usage arrives (`chargeReservation`), and `settleReservation` returns what is left.
 */
import { and, eq, inArray, isNull, lt, ne, or, sql } from 'drizzle-orm';
import type { Db } from '../client';
import { rowsOf } from '../client';
import { newId } from '../ids';
import { budgets, budgetWindows, reservations, sessions } from '../schema/index';
import { crossedThresholds, periodStart, type BudgetPeriod } from '../../governance/budget';

export type BudgetRow = typeof budgets.$inferSelect;

interface WindowRef {
  budgetId: string;
  periodStart: string;
}

export async function upsertBudget(
  db: Db,
  params: { teamId: string; scope: 'team' | 'agent'; agentId: string; period: BudgetPeriod; limitMicros: number; thresholds: number[] },
): Promise<BudgetRow> {
  const [row] = await db
    .insert(budgets)
    .values({ id: newId('bud'), ...params })
    .onConflictDoUpdate({
      target: [budgets.teamId, budgets.scope, budgets.agentId, budgets.period],
      set: { limitMicros: params.limitMicros, thresholds: params.thresholds, updatedAt: new Date() },
    })
    .returning();
  return row!;
}

export async function listBudgets(db: Db, params: { teamId: string; now: Date }) {
  const rows = await db.select().from(budgets).where(eq(budgets.teamId, params.teamId));
  const result = [];
  for (const budget of rows) {
    const start = periodStart(budget.period as BudgetPeriod, params.now);
    const [window] = await db
      .select()
      .from(budgetWindows)
      .where(and(eq(budgetWindows.budgetId, budget.id), eq(budgetWindows.periodStart, start)));
    result.push({ budget, periodStart: start, spentMicros: window?.spentMicros ?? 0, reservedMicros: window?.reservedMicros ?? 0 });
  }
  return result;
}

export async function deleteBudget(db: Db, params: { teamId: string; budgetId: string }): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [found] = await tx.select().from(budgets).where(and(eq(budgets.id, params.budgetId), eq(budgets.teamId, params.teamId))).for('update');
    if (!found) return false;
    await tx.delete(budgetWindows).where(eq(budgetWindows.budgetId, found.id));
    await tx.delete(budgets).where(eq(budgets.id, found.id));
    return true;
  });
}

export type ReserveResult =
  /** `fresh`: this call took the hold (false when a retry found it, or no budget applies) */
  | { ok: true; reservationId: string | null; fresh: boolean; amountMicros: number; budgetIds: string[] }
  | { ok: false; budget: BudgetRow; spentMicros: number; reservedMicros: number };

/**
 * Holds `amountMicros` on every budget of the team and of the agent, or on none. Idempotent by reservation id: a
 * retried turn finds its hold. With no budget configured nothing is held (`reservationId: null`). `force` grants
 * the hold without the limit check: for the rest of a turn that was already admitted (after an approval), whose
 * charges must still be counted.
 */
export async function reserveBudget(
  db: Db,
  params: { reservationId: string; teamId: string; agentId: string; sessionId: string; amountMicros: number; now: Date; force?: boolean },
): Promise<ReserveResult> {
  const [existing] = await db.select().from(reservations).where(eq(reservations.id, params.reservationId));
  if (existing) return { ok: true, reservationId: existing.id, fresh: false, amountMicros: existing.amountMicros, budgetIds: (existing.windows as WindowRef[]).map((w) => w.budgetId) };
  const applies = and(eq(budgets.teamId, params.teamId), sql`(${budgets.scope} = 'team' or (${budgets.scope} = 'agent' and ${budgets.agentId} = ${params.agentId}))`);
  if ((await db.select({ id: budgets.id }).from(budgets).where(applies)).length === 0) {
    return { ok: true, reservationId: null, fresh: false, amountMicros: 0, budgetIds: [] };
  }

  class Refused extends Error {
    constructor(readonly result: ReserveResult) {
      super('budget refused');
    }
  }
  try {
    return await db.transaction(async (tx) => {
      // FOR SHARE: a budget cannot be deleted under a hold being taken on it
      const applicable = await tx.select().from(budgets).where(applies).for('share');
      const windows: WindowRef[] = [];
      // a stable order so two reservations never wait on each other's rows
      for (const budget of [...applicable].sort((a, b) => a.id.localeCompare(b.id))) {
        const start = periodStart(budget.period as BudgetPeriod, params.now);
        await tx.insert(budgetWindows).values({ budgetId: budget.id, periodStart: start }).onConflictDoNothing();
        const granted = await tx
          .update(budgetWindows)
          .set({ reservedMicros: sql`${budgetWindows.reservedMicros} + ${params.amountMicros}` })
          .where(
            and(
              eq(budgetWindows.budgetId, budget.id),
              eq(budgetWindows.periodStart, start),
              params.force ? sql`true` : sql`${budgetWindows.spentMicros} + ${budgetWindows.reservedMicros} + ${params.amountMicros} <= ${budget.limitMicros}`,
            ),
          )
          .returning();
        if (granted.length === 0) {
          const [window] = await tx.select().from(budgetWindows).where(and(eq(budgetWindows.budgetId, budget.id), eq(budgetWindows.periodStart, start)));
          throw new Refused({ ok: false, budget, spentMicros: window?.spentMicros ?? 0, reservedMicros: window?.reservedMicros ?? 0 });
        }
        windows.push({ budgetId: budget.id, periodStart: start.toISOString() });
      }
      await tx.insert(reservations).values({
        id: params.reservationId,
        teamId: params.teamId,
        sessionId: params.sessionId,
        windows,
        amountMicros: params.amountMicros,
        remainingMicros: params.amountMicros,
        status: 'held',
      });
      return { ok: true as const, reservationId: params.reservationId, fresh: true, amountMicros: params.amountMicros, budgetIds: windows.map((w) => w.budgetId) };
    });
  } catch (err) {
    if (err instanceof Refused) return err.result;
    throw err;
  }
}

export interface ThresholdCrossing {
  budget: BudgetRow;
  periodStart: Date;
  percent: number;
  spentMicros: number;
}

/**
 * Applies charges (already written to the ledger in this transaction) to the reservation's windows: spent grows by
 * the charge, the hold shrinks by what it covers. Returns whether every window is still within its limit, and
 * the thresholds that were crossed for the first time in their window.
 */
export async function chargeReservation(db: Db, params: { reservationId: string; amountMicros: number }): Promise<{ withinLimits: boolean; crossings: ThresholdCrossing[] }> {
  const [reservation] = await db.select().from(reservations).where(eq(reservations.id, params.reservationId)).for('update');
  if (!reservation || params.amountMicros === 0) return { withinLimits: true, crossings: [] };
  const covered = Math.min(reservation.remainingMicros, params.amountMicros);
  await db
    .update(reservations)
    .set({ remainingMicros: reservation.remainingMicros - covered, chargedMicros: reservation.chargedMicros + params.amountMicros })
    .where(eq(reservations.id, reservation.id));
  return applyToWindows(db, reservation.windows as WindowRef[], params.amountMicros, -covered);
}

/** Returns the unused hold to the windows. Idempotent. Answers what it returned, or null when it was not held. */
export async function settleReservation(db: Db, params: { reservationId: string }): Promise<{ releasedMicros: number; teamId: string; sessionId: string } | null> {
  return db.transaction(async (tx) => {
    const [reservation] = await tx.select().from(reservations).where(eq(reservations.id, params.reservationId)).for('update');
    if (!reservation || reservation.status !== 'held') return null;
    await applyToWindows(tx, reservation.windows as WindowRef[], 0, -reservation.remainingMicros);
    await tx.update(reservations).set({ status: 'settled', remainingMicros: 0, settledAt: new Date() }).where(eq(reservations.id, reservation.id));
    return { releasedMicros: reservation.remainingMicros, teamId: reservation.teamId, sessionId: reservation.sessionId };
  });
}

/**
 * Releases the holds no turn will settle: still held, taken before `olderThan`, on a session that is not running. A
 * turn settles its hold when it ends (`finally` in the activity), and a retried turn finds and settles the same one;
 * a hold outlives its turn only when the turn's activity never ran to its end: the worker was killed and the session
 * was then terminated, or the activity's retries ran out. A hold of a running session is its turn's, however old.
 * Each release is idempotent and takes the reservation's row lock, so workers may sweep at once. Answers what it
 * released.
 */
export interface ReleasedHold {
  reservationId: string;
  teamId: string;
  sessionId: string;
  releasedMicros: number;
}

export async function releaseOrphanedHolds(
  db: Db,
  params: { olderThan: Date; limit?: number; /** in the release's transaction (its audit row) */ record?(tx: Db, hold: ReleasedHold): Promise<void> },
): Promise<ReleasedHold[]> {
  const stale = await db
    .select({ id: reservations.id })
    .from(reservations)
    .leftJoin(sessions, eq(sessions.id, reservations.sessionId))
    .where(and(eq(reservations.status, 'held'), lt(reservations.createdAt, params.olderThan), or(isNull(sessions.status), ne(sessions.status, 'running'))))
    .limit(params.limit ?? 500);
  const released: ReleasedHold[] = [];
  for (const { id } of stale) {
    const hold = await db.transaction(async (tx) => {
      const done = await settleReservation(tx, { reservationId: id });
      if (!done) return null;
      const found = { reservationId: id, ...done };
      await params.record?.(tx, found);
      return found;
    });
    if (hold) released.push(hold);
  }
  return released;
}

async function applyToWindows(db: Db, windows: WindowRef[], spentDelta: number, reservedDelta: number) {
  let withinLimits = true;
  const crossings: ThresholdCrossing[] = [];
  const ids = windows.map((w) => w.budgetId);
  const rows = ids.length ? await db.select().from(budgets).where(inArray(budgets.id, ids)) : [];
  for (const ref of windows) {
    const budget = rows.find((b) => b.id === ref.budgetId);
    if (!budget) continue; // deleted while the turn ran
    const start = new Date(ref.periodStart);
    const [window] = await db
      .update(budgetWindows)
      .set({ spentMicros: sql`${budgetWindows.spentMicros} + ${spentDelta}`, reservedMicros: sql`greatest(${budgetWindows.reservedMicros} + ${reservedDelta}, 0)` })
      .where(and(eq(budgetWindows.budgetId, ref.budgetId), eq(budgetWindows.periodStart, start)))
      .returning();
    if (!window) continue;
    if (window.spentMicros >= budget.limitMicros) withinLimits = false;
    const crossed = crossedThresholds(budget.thresholds as number[], window.notifiedPercent, window.spentMicros, budget.limitMicros);
    if (crossed.length > 0) {
      const top = crossed.at(-1)!;
      // only the writer that moves notified_percent up reports the crossing: one notification per threshold
      const moved = rowsOf(
        await db.execute(
          sql`update budget_windows set notified_percent = ${top} where budget_id = ${ref.budgetId} and period_start = ${start} and notified_percent < ${top} returning notified_percent`,
        ),
      );
      if (moved.length > 0) for (const percent of crossed) crossings.push({ budget, periodStart: start, percent, spentMicros: window.spentMicros });
    }
  }
  return { withinLimits, crossings };
}
