/**
 * What a model request costs, as the ledger and the budgets record it: shared by the runtime's own reports (the turn's
 * sink, activities/session.activities.ts) and the gateway's records (./model-meter.ts).
 */
import type { Db } from '../db/client';
import { chargeReservation, type ThresholdCrossing } from '../db/queries/budgets';
import { appendEvents, type AppendResult, type NewCharge, type NewEvent } from '../db/queries/events';
import { enqueueNotification } from '../db/queries/webhooks';
import { microsToUsd } from '../governance/budget';
import { budgetThreshold } from '../governance/notifications';
import type { ChargeDecision, TokenUsage } from '../governance/pricing';

/** One model request's ledger row. */
export function ledgerCharge(sourceId: string, model: string, usage: TokenUsage, decision: Pick<ChargeDecision, 'amountMicros' | 'costSource'>): NewCharge {
  return {
    sourceId,
    model,
    // the ledger's token columns are sums: a count a hostile server made negative must not lower them
    inputTokens: tokenCount(usage.input_tokens),
    outputTokens: tokenCount(usage.output_tokens),
    cacheReadTokens: tokenCount(usage.cache_read_input_tokens),
    cacheCreationTokens: tokenCount(usage.cache_creation_input_tokens),
    amountMicros: decision.amountMicros,
    costSource: decision.costSource,
  };
}

/**
 * Writes events with their charges, draws the charges on the budget hold `reservationId` (null: no budget applies),
 * and records each threshold crossed (an event in the session, a notification): in the caller's transaction, so that
 * the events, the ledger and the budget windows commit together.
 */
export async function commitCharges(
  tx: Db,
  params: { sessionId: string; teamId: string; events: NewEvent[]; charges: NewCharge[]; reservationId: string | null },
): Promise<{ result: AppendResult; charged: { withinLimits: boolean; crossings: ThresholdCrossing[] } }> {
  const result = await appendEvents(tx, { sessionId: params.sessionId, events: params.events, charges: params.charges });
  const charged = params.reservationId ? await chargeReservation(tx, { reservationId: params.reservationId, amountMicros: result.chargedMicros }) : { withinLimits: true, crossings: [] };
  if (charged.crossings.length > 0) {
    await appendEvents(tx, { sessionId: params.sessionId, events: charged.crossings.map(thresholdEvent) });
    for (const crossing of charged.crossings) await enqueueNotification(tx, { teamId: params.teamId, type: 'budget.threshold', payload: thresholdNotification(crossing) });
  }
  return { result, charged };
}

/** A threshold crossing as its webhook notification says it. */
function thresholdNotification(crossing: ThresholdCrossing) {
  const { budget } = crossing;
  return budgetThreshold({
    teamId: budget.teamId,
    budgetId: budget.id,
    scope: budget.scope,
    agentId: budget.agentId || null,
    percent: crossing.percent,
    spentUsd: microsToUsd(crossing.spentMicros),
    limitUsd: microsToUsd(budget.limitMicros),
    periodStart: crossing.periodStart,
  });
}

function thresholdEvent(crossing: ThresholdCrossing): NewEvent {
  const { budget } = crossing;
  return {
    sourceId: `threshold:${budget.id}:${crossing.periodStart.toISOString()}:${crossing.percent}`,
    type: 'budget.threshold',
    payload: { budget_id: budget.id, scope: budget.scope, period: budget.period, percent: crossing.percent, spent_usd: microsToUsd(crossing.spentMicros), limit_usd: microsToUsd(budget.limitMicros) },
  };
}

function tokenCount(n: number): number {
  return Number.isFinite(n) && n > 0 ? Math.min(Math.floor(n), Number.MAX_SAFE_INTEGER) : 0;
}
