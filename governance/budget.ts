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
