/**
 * Budget math in integer micro-dollars, so sums never drift and compare exactly in SQL and in the workflow.
 */
import type { SessionBudget } from './types';

export const MICROS_PER_USD = 1_000_000;

export function usdToMicros(usd: number): number {
  return Math.round(usd * MICROS_PER_USD);
}

export function microsToUsd(micros: number): number {
  return micros / MICROS_PER_USD;
}

export type BudgetCheck = { ok: true } | { ok: false; reason: string };

/** Checked before a turn leaves: a session that has reached its cap sends nothing more. */
export function checkSessionBudget(budget: SessionBudget, spentMicros: number): BudgetCheck {
  if (budget.max_cost_usd === undefined) return { ok: true };
  const cap = usdToMicros(budget.max_cost_usd);
  if (spentMicros >= cap) {
    return { ok: false, reason: `session spent $${microsToUsd(spentMicros).toFixed(6)} of its $${budget.max_cost_usd} cap` };
  }
  return { ok: true };
}

export type BudgetPeriod = 'day' | 'month' | 'total';
export const BUDGET_PERIODS: BudgetPeriod[] = ['day', 'month', 'total'];
export const DEFAULT_THRESHOLDS = [50, 80, 100];
/** held before a turn when the agent names no estimate: enough for a typical coding turn on a mid-size model */
export const DEFAULT_TURN_RESERVE_USD = 0.1;

/** The start (UTC) of the calendar period `now` falls in; 'total' has one window for all time. */
export function periodStart(period: BudgetPeriod, now: Date): Date {
  if (period === 'total') return new Date(0);
  if (period === 'day') return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1));
}

/** The thresholds (percent) crossed by going from `notifiedPercent` to `spent` of `limit`, ascending. */
export function crossedThresholds(thresholds: number[], notifiedPercent: number, spentMicros: number, limitMicros: number): number[] {
  if (limitMicros <= 0) return [];
  const percent = (spentMicros * 100) / limitMicros;
  return thresholds.filter((t) => t > notifiedPercent && percent >= t).sort((a, b) => a - b);
}
