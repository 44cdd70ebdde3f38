/**
 * The worker's side of metering through the model gateway (gateway/): every model request of a session whose runtime
 * goes through the gateway is held before it leaves and charged when it ends, from the provider's own usage.
 *
 * - `admit` (before the gateway forwards a request): holds the request's estimate on the session's team and agent
 *   budgets (the guarded update of db/queries/budgets.ts, reservation `gateway:<request id>`), and checks the session's
 *   own cap. The estimate is the request's input (its body's bytes / 4 tokens) and its output ceiling (its
 *   max_tokens, at most 4096) at the table price, never more than the agent's `turn_reserve_usd`. A request that
 *   cannot be covered is refused (402, which no vendor SDK retries), with a `budget.exceeded` event and an audit row
 *   naming the budget, once per turn leg.
 * - `record` (when the exchange ended, however): one `span.model_request_end` event and one ledger row (source
 *   `gateway:<request id>`: a record delivered twice is charged once), priced from the table like every `priced`
 *   runtime; the charge is drawn on the request's hold, which is then settled. Events, ledger and windows commit
 *   together (./charges.ts).
 * - `finish` (the turn leg's end): waits for the records of the requests it admitted, and answers what they used and
 *   whether a request was refused, so the activity can end the turn `budget_reached` and cross-check the runtime's
 *   own figures.
 *
 * A session is known here from `open` (each turn leg, with its team, agent and prices) to `close` (its runtime was
 * closed); a record that arrives after `close` is still charged with what `open` said.
 */
import type { Db } from '../db/client';
import { appendAudit } from '../db/queries/audit';
import { reserveBudget, settleReservation } from '../db/queries/budgets';
import { appendEvents, type NewEvent } from '../db/queries/events';
import { getSessionCost } from '../db/queries/sessions';
import type { Admission, ModelRequestAsked, ModelRequestRecord } from '../gateway/gateway';
import { microsToUsd } from '../governance/budget';
import { decideCharge, resolvePrice, type ModelPrice, type PriceTable, type TokenUsage } from '../governance/pricing';
import type { WorkerMetrics } from '../observability/metrics';
import { commitCharges, ledgerCharge } from './charges';

export interface MeteredSession {
  /** the session's runtime (the spend metric's label) */
  runtime: string;
  teamId: string;
  agentId: string;
  /** the agent's model: the price of a request whose model has none */
  agentModel: string;
  /** who started the session: budget refusals are audited as theirs */
  actor: { teamId: string; actorKeyId: string; actorRole: string };
  /** the session's own cap (max_cost_usd), or null */
  capMicros: number | null;
  /** the most one request holds (the agent's turn_reserve_usd) */
  holdCapMicros: number;
  /** the team's price overrides as the leg began */
  overrides: PriceTable;
}

/** What a budget refused, as the `budget.exceeded` event says it. */
export type BudgetRefusal = Record<string, unknown> & { budget_id: string | null; scope: string };

export interface LegUsage {
  requests: number;
  usage: TokenUsage;
  /** the first refusal of the leg, or null */
  refused: BudgetRefusal | null;
}

export interface ModelMeter {
  /** a turn leg of the session begins here: its totals and refusal start again */
  open(sessionId: string, session: MeteredSession): void;
  close(sessionId: string): void;
  admit(request: ModelRequestAsked): Promise<Admission>;
  record(record: ModelRequestRecord): Promise<void>;
  /** the leg's end: waits (up to `timeoutMs`) until every request it admitted is charged; answers the leg's totals */
  finish(sessionId: string, timeoutMs?: number): Promise<LegUsage>;
}

/** the output a request without max_tokens is held for, and the most any request is held for */
const OUTPUT_CEILING = 4096;
const ZERO: TokenUsage = { input_tokens: 0, output_tokens: 0, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 };

interface Leg extends LegUsage {
  session: MeteredSession;
  /** admitted here, not charged yet */
  open: Set<string>;
  /** the price of each model asked for in this leg (a catalogue lookup once, not per request) */
  prices: Map<string, ModelPrice | null>;
  closed: boolean;
  wake: Set<() => void>;
}

export function createModelMeter(deps: { db: Db; metrics?: Pick<WorkerMetrics, 'spend'>; warn?(msg: string, fields: Record<string, unknown>): void }): ModelMeter {
  const { db } = deps;
  const legs = new Map<string, Leg>();

  const forget = (sessionId: string, leg: Leg) => {
    if (leg.closed && leg.open.size === 0 && legs.get(sessionId) === leg) legs.delete(sessionId);
  };

  async function refuse(request: ModelRequestAsked, leg: Leg, refusal: BudgetRefusal, reason: string): Promise<Admission> {
    if (!leg.refused) {
      leg.refused = refusal;
      const sourceId = `budget:gateway:${request.id}`;
      await db.transaction(async (tx) => {
        await appendEvents(tx, { sessionId: request.sessionId, events: [{ sourceId, type: 'budget.exceeded', payload: refusal }] });
        await appendAudit(tx, { ...leg.session.actor, action: 'budget.reserve', target: refusal.budget_id ?? request.sessionId, decision: 'deny', reason, data: { ...refusal, session_id: request.sessionId, request: request.id } });
      });
    }
    return { ok: false, status: 402, message: reason };
  }

  return {
    open(sessionId, session) {
      const previous = legs.get(sessionId);
      legs.set(sessionId, { session, requests: 0, usage: { ...ZERO }, refused: null, open: previous?.open ?? new Set(), prices: new Map(), closed: false, wake: previous?.wake ?? new Set() });
    },

    close(sessionId) {
      const leg = legs.get(sessionId);
      if (!leg) return;
      leg.closed = true;
      forget(sessionId, leg);
    },

    async admit(request) {
      const leg = legs.get(request.sessionId);
      // a request of a session no turn of this worker is running: not held, not sent (the runtime may retry)
      if (!leg || leg.closed) return { ok: false, status: 429, message: 'no turn of this session is running on this worker' };
      const { session } = leg;
      const asked = request.model ?? '';
      let price = leg.prices.get(asked);
      if (price === undefined) leg.prices.set(asked, (price = resolvePrice([asked, session.agentModel].filter((m) => m !== ''), session.overrides)?.price ?? null));
      const estimate = price ? Math.ceil(Math.ceil(request.bytes / 4) * price.input + Math.min(request.maxOutputTokens ?? OUTPUT_CEILING, OUTPUT_CEILING) * price.output) : session.holdCapMicros;
      const hold = Math.min(estimate, session.holdCapMicros);

      if (session.capMicros !== null) {
        const spent = await getSessionCost(db, request.sessionId);
        if (spent + hold > session.capMicros) {
          const refusal = { budget_id: null, scope: 'session', limit_usd: microsToUsd(session.capMicros), spent_usd: microsToUsd(spent), requested_usd: microsToUsd(hold) };
          return refuse(request, leg, refusal, `the session's max_cost_usd ($${microsToUsd(session.capMicros)}) cannot cover this model request: $${microsToUsd(spent)} spent`);
        }
      }
      const held = await reserveBudget(db, { reservationId: `gateway:${request.id}`, teamId: session.teamId, agentId: session.agentId, sessionId: request.sessionId, amountMicros: hold, now: new Date() });
      if (!held.ok) {
        const { budget } = held;
        const refusal = { budget_id: budget.id, scope: budget.scope, period: budget.period, limit_usd: microsToUsd(budget.limitMicros), spent_usd: microsToUsd(held.spentMicros), reserved_usd: microsToUsd(held.reservedMicros), requested_usd: microsToUsd(hold) };
        return refuse(request, leg, refusal, `the ${budget.scope} budget ${budget.id} (${budget.period}, $${microsToUsd(budget.limitMicros)}) cannot cover this model request: $${microsToUsd(held.spentMicros)} spent, $${microsToUsd(held.reservedMicros)} held`);
      }
      leg.open.add(request.id);
      return { ok: true };
    },

    async record(record) {
      const leg = legs.get(record.sessionId);
      if (!leg) throw new Error(`no metered session ${record.sessionId} on this worker`);
      const { session } = leg;
      const usage = record.usage ?? ZERO;
      const model = record.model ?? session.agentModel;
      const decision = decideCharge({ costSource: 'priced', usage, models: [model, session.agentModel], overrides: session.overrides });
      const sourceId = `gateway:${record.id}`;
      const events: NewEvent[] = [
        {
          sourceId,
          type: 'span.model_request_end',
          payload: {
            model,
            model_usage: usage,
            cost_usd: microsToUsd(decision.amountMicros),
            metered_by: 'gateway',
            protocol: record.protocol,
            streaming: record.streaming,
            status: record.status,
            latency_ms: Math.round(record.latencyMs),
            ttfb_ms: record.ttfbMs === null ? null : Math.round(record.ttfbMs),
            ...(record.failure ? { failure: record.failure } : {}),
          },
        },
      ];
      if (decision.refusal) events.push({ sourceId: `charge_refused:${sourceId}`, type: 'budget.charge_refused', payload: { reason: decision.refusal, model, charged_usd: 0, model_usage: usage } });
      // the charge and the hold's release in one transaction: the budget window's row is every request's
      const { result } = await db.transaction(async (tx) => {
        const committed = await commitCharges(tx, { sessionId: record.sessionId, teamId: session.teamId, events, charges: [ledgerCharge(sourceId, model, usage, decision)], reservationId: sourceId });
        await settleReservation(tx, { reservationId: sourceId });
        return committed;
      });
      if (result.chargedMicros > 0) deps.metrics?.spend.inc({ runtime: session.runtime }, microsToUsd(result.chargedMicros));
      leg.open.delete(record.id);
      leg.requests++;
      for (const key of Object.keys(ZERO) as Array<keyof TokenUsage>) leg.usage[key] += usage[key] > 0 ? usage[key] : 0;
      for (const wake of leg.wake) wake();
      forget(record.sessionId, leg);
    },

    async finish(sessionId, timeoutMs = 5000) {
      const leg = legs.get(sessionId);
      if (!leg) return { requests: 0, usage: { ...ZERO }, refused: null };
      const deadline = Date.now() + timeoutMs;
      while (leg.open.size > 0 && Date.now() < deadline) {
        await new Promise<void>((resolve) => {
          const wake = () => {
            clearTimeout(timer);
            leg.wake.delete(wake);
            resolve();
          };
          const timer = setTimeout(wake, deadline - Date.now());
          leg.wake.add(wake);
        });
      }
      if (leg.open.size > 0) deps.warn?.('model requests of the turn were not charged yet when it ended', { sessionId, uncharged: leg.open.size });
      return { requests: leg.requests, usage: { ...leg.usage }, refused: leg.refused };
    },
  };
}
