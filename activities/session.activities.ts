/**
 * Session activities: the worker's only contact with the world. Built by `createActivities(deps)`.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ApplicationFailure, Context, log } from '@temporalio/activity';
import type { Db } from '../db/client';
import { openCredential } from '../db/queries/credentials';
import { appendAudit, canonicalJson } from '../db/queries/audit';
import { appendEvents, type NewCharge, type NewEvent } from '../db/queries/events';
import { reserveBudget, settleReservation } from '../db/queries/budgets';
import { loadPriceOverrides } from '../db/queries/pricing';
import { decideApproval, getRuntimeRef, getSession, markSessionUnsandboxed, putRuntimeRef } from '../db/queries/sessions';
import { sessionEnvironmentConfig } from '../db/queries/environments';
import { readNetworking, readSnapshotIgnore } from '../api/schemas/environment.schema';
import { DEFAULT_NETWORKING, NO_NETWORK, type Networking } from '../governance/networking';
import type { SandboxKind } from '../governance/types';
import { livePolicyFor } from '../db/queries/policies';
import type { Notifications } from '../db/notifications';
import { describeUnenforceable, unenforceableDenies } from '../governance/enforceability';
import type { Vault } from '../db/vault';
import type { GatewayClient } from '../gateway/client';
import { createWorkerMetrics, type WorkerMetrics } from '../observability/metrics';
import { inSpan } from '../observability/tracing';
import { DEFAULT_TURN_RESERVE_USD, microsToUsd, usdToMicros } from '../governance/budget';
import { decideCharge, type ChargeDecision, type CostSource, type PriceTable } from '../governance/pricing';
import { createEgressGuard, egressRefusal, EgressRefusedError, type EgressGuard } from '../runtimes/kit/egress';
import { RuntimeRefusedError, type AdapterLogger, type RuntimeAdapter, type RuntimeEvent, type RuntimeRegistry, type RuntimeSessionRef, type TurnContext, type TurnSink } from '../runtimes/runtime-adapter';
import type { RecordDecisionInput, RecordEventsInput, RunTurnInput, SessionActivities, TurnOutcome } from './types';
import { decideToolCall, sessionActor, toolUseEventId } from './tool-decision';
import { commitCharges, ledgerCharge } from './charges';
import type { ModelMeter } from './model-meter';
import { createHibernation, type Hibernation } from './hibernation';
import { SnapshotTooLargeError, type SnapshotRoot, type Snapshotter } from '../snapshots/snapshotter';
import { SnapshotConflictError } from '../snapshots/store';

export interface ActivityDeps {
  db: Db;
  vault: Vault;
  runtimes: RuntimeRegistry;
  /** sessions get their own folder below this */
  dataDir: string;
  /** how often a running turn heartbeats */
  heartbeatMs?: number;
  /** the API's address as people reach it, for the action links in notifications */
  publicUrl?: string;
  /** the worker's Prometheus counters; a private registry when absent */
  metrics?: WorkerMetrics;
  /** which tenant URLs the worker may connect to (AGENTPLANE_EGRESS_ALLOW_PRIVATE); every private range refused when absent */
  egress?: EgressGuard;
  /** the sandbox this worker runs sessions in (AGENTPLANE_SANDBOX; default bubblewrap): `none` marks each session it runs */
  sandboxKind?: SandboxKind;
  /**
   * the model gateway (gateway/client.ts): a runtime with the `gateway` capability gets its session token in place of
   * the provider key, which the gateway daemon alone holds
   */
  gateway?: Pick<GatewayClient, 'register' | 'revoke'>;
  /** charges and holds each model request that goes through the gateway (./model-meter.ts) */
  meter?: ModelMeter;
  /**
   * a session's state as data (snapshots/): for a runtime with `portable: 'snapshot'`, written at every point a turn
   * stops and restored before a leg this worker's copy is not current for (another worker ran the last one)
   */
  snapshots?: Snapshotter;
  /**
   * hibernation: a session of a `portable: 'snapshot'` runtime whose turn ended holds no process once it has been idle
   * this long on this worker (its runtime is stopped; its files stay, and the next leg starts it again on them);
   * 0 or absent: runtimes stay up until the session ends
   */
  hibernateAfterMs?: number;
  /** the hibernation timers (./hibernation.ts), shared with the worker's start-up work; made from `hibernateAfterMs` when absent */
  hibernation?: Hibernation;
  /** what the worker logs outside any activity (hibernation's timers); silent when absent */
  logger?: AdapterLogger;
  /**
   * this process's LISTEN connection (db/notifications.ts): with it, each team's live policy is read once per policy
   * change instead of once per tool decision
   */
  policyChanges?: Notifications;
  /**
   * this worker's own task queue (worker/create-worker.ts `hostQueueFor`): a leg that leaves a runtime running here
   * says so in its outcome, and the workflow sends the session's next legs there (affinity)
   */
  hostQueue?: string;
}

export const DEFAULT_SANDBOX: SandboxKind = 'bubblewrap';

export function createSessionActivities(deps: ActivityDeps): SessionActivities {
  const { db } = deps;
  const metrics = deps.metrics ?? createWorkerMetrics();
  const egress = deps.egress ?? createEgressGuard({ allowPrivate: [] });
  const hibernation = deps.hibernation ?? createHibernation(deps);

  async function recordEvents(input: RecordEventsInput): Promise<void> {
    await appendEvents(db, { sessionId: input.sessionId, events: input.events, status: input.status });
  }

  async function runTurn(input: RunTurnInput): Promise<TurnOutcome> {
    const activity = Context.current();
    const adapter = deps.runtimes[input.agent.runtime.type];
    if (!adapter) {
      throw ApplicationFailure.create({ type: 'runtime.unavailable', message: `no ${input.agent.runtime.type} runtime on this worker`, nonRetryable: true });
    }
    // a session with a leg running is not idle
    await hibernation.wake(input.sessionId);
    await checkModelProvider(egress, input);
    // a turn without a sandbox leaves the session marked for good, whatever the API that started it was set to
    // so does a runtime whose processes this worker runs outside any sandbox
    if ((deps.sandboxKind ?? DEFAULT_SANDBOX) === 'none' || adapter.capabilities.sandbox === 'none') await markSessionUnsandboxed(db, input.sessionId);
    // the session's current policy: a change the workflow has not heard of yet wins (the newest revision, as for each
    // tool decision). A team deny added since the session started that this runtime would ignore stops the turn before
    // it leaves; the adapter gets the current policy for what it compiles into the runtime (OpenClaw's tools.deny).
    const [live, { networking, snapshotIgnore }] = await Promise.all([livePolicyFor(db, { teamId: input.agent.teamId, agentId: input.agent.agentId }, deps.policyChanges), sessionEnvironment(db, input)]);
    const policy = live.revision > input.policyVersion ? live.policy : input.policy;
    if (input.input.kind === 'message') {
      const unenforceable = unenforceableDenies(adapter.capabilities, policy.rules.filter((r) => r.source === 'team'));
      if (unenforceable.length > 0) {
        throw ApplicationFailure.create({ type: 'policy.unenforceable', message: describeUnenforceable(adapter.kind, unenforceable), nonRetryable: true });
      }
    }
    const ctx: TurnContext = { sessionId: input.sessionId, agent: { ...input.agent, toolPolicy: policy }, workdir: join(deps.dataDir, 'sessions', input.sessionId), secrets: {}, networking };
    await mkdir(ctx.workdir, { recursive: true });
    const credentialId = input.agent.modelProvider?.credentialId;
    if (credentialId) {
      try {
        ctx.secrets.modelApiKey = await openCredential(db, deps.vault, { teamId: input.agent.teamId, credentialId });
      } catch (err) {
        throw ApplicationFailure.create({ type: 'credential.unavailable', message: (err as Error).message, nonRetryable: true });
      }
      if (activity.info.attempt === 1) {
        await appendAudit(db, {
          ...sessionActor(input),
          action: 'credential.use',
          target: credentialId,
          decision: 'ok',
          reason: `model credential of agent ${input.agent.agentId} v${input.agent.version}`,
          data: { session_id: input.sessionId, turn: input.turnId, leg: input.leg },
        });
      }
    }

    // through the gateway, each model request is held and charged by itself (./model-meter.ts): the turn's own hold is
    // then only the admission check (nothing held), and the runtime's own figures are a cross-check
    const metered = deps.gateway && deps.meter && adapter.capabilities.gateway ? { gateway: deps.gateway, meter: deps.meter } : null;

    // team and agent budgets: hold an estimate before anything is sent; a turn that cannot be covered does not leave
    const reservationId = `${input.sessionId}:${input.turnId}:${input.leg}`;
    // the rest of an admitted turn (after an approval) is not refused: the runtime is waiting mid-turn
    const resuming = input.input.kind === 'resume';
    const turnReserve = usdToMicros(input.agent.budget.turn_reserve_usd ?? DEFAULT_TURN_RESERVE_USD);
    const reserve = resuming || metered ? 0 : turnReserve;
    // the reads the turn needs go out together with the reservation (each on its own pooled connection)
    const [held, overrides, stored] = await Promise.all([
      reserveBudget(db, { reservationId, teamId: input.agent.teamId, agentId: input.agent.agentId, sessionId: input.sessionId, amountMicros: reserve, now: new Date(), force: resuming }),
      loadPriceOverrides(db, { teamId: input.agent.teamId }),
      getRuntimeRef(db, input.sessionId),
    ]);
    if (!held.ok) {
      const { budget } = held;
      const detail = { budget_id: budget.id, scope: budget.scope, period: budget.period, limit_usd: microsToUsd(budget.limitMicros), spent_usd: microsToUsd(held.spentMicros), reserved_usd: microsToUsd(held.reservedMicros), requested_usd: microsToUsd(reserve) };
      await db.transaction(async (tx) => {
        await appendEvents(tx, { sessionId: input.sessionId, events: [{ sourceId: `budget:${reservationId}`, type: 'budget.exceeded', payload: detail }] });
        await appendAudit(tx, { ...sessionActor(input), action: 'budget.reserve', target: budget.id, decision: 'deny', reason: `${budget.scope} budget (${budget.period}) cannot cover the turn`, data: { ...detail, session_id: input.sessionId } });
      });
      const session = await getSession(db, { teamId: input.agent.teamId, sessionId: input.sessionId });
      return { result: { status: 'interrupted' }, spentMicros: session?.costMicros ?? 0, budgetReached: true };
    }
    if (held.fresh) {
      await appendAudit(db, { ...sessionActor(input), action: 'budget.reserve', target: held.budgetIds.join(','), decision: 'allow', reason: `held $${microsToUsd(held.amountMicros)} for the turn`, data: { session_id: input.sessionId, reservation: reservationId } });
    }

    if (metered) {
      metered.meter.open(input.sessionId, {
        runtime: adapter.kind,
        teamId: input.agent.teamId,
        agentId: input.agent.agentId,
        agentModel: input.agent.model,
        actor: sessionActor(input),
        capMicros: input.budget.max_cost_usd === undefined ? null : usdToMicros(input.budget.max_cost_usd),
        holdCapMicros: turnReserve,
        overrides,
      });
      // the runtime holds a session token; the key goes to the gateway daemon's memory only
      ctx.secrets.modelApiKey = metered.gateway.register({ sessionId: input.sessionId, credentialId: credentialId ?? '', apiKey: ctx.secrets.modelApiKey ?? '' });
    }
    /** what the runtime itself reported of its model requests (through the gateway: the cross-check) */
    const reported = { requests: 0, input: 0, output: 0 };

    const previous: RuntimeSessionRef | null = stored ? { sessionId: input.sessionId, runtimeSessionId: stored.runtimeSessionId, state: stored.state as Record<string, unknown> } : null;
    const runtime = adapter.kind;
    const snapshot: SessionSnapshot | null =
      deps.snapshots && adapter.capabilities.portable === 'snapshot' && adapter.sessionState
        ? { sessionId: input.sessionId, snapshots: deps.snapshots, roots: snapshotRoots(ctx, snapshotIgnore, adapter.sessionState(ctx.sessionId)) }
        : null;
    if (snapshot) await restoreIfBehind(snapshot, adapter, previous);
    // every charge of the turn is decided by the runtime's declared cost source and the team's prices as the turn began
    const pricing: Pricing = { costSource: adapter.capabilities.cost, agentModel: input.agent.model, overrides };
    const spanAttributes = { 'agentplane.session_id': input.sessionId, 'agentplane.runtime': runtime, 'agentplane.turn': input.turnId, 'agentplane.leg': input.leg };
    const ref = await inSpan(`runtime.open ${runtime}`, spanAttributes, () => adapter.open(ctx, previous)).catch(failIfFinal);
    const saveRef = () => putRuntimeRef(db, { sessionId: input.sessionId, runtime: adapter.kind, runtimeSessionId: ref.runtimeSessionId, state: ref.state });
    // a reopened runtime session that is still the stored one need not be written again
    if (!stored || stored.runtimeSessionId !== ref.runtimeSessionId || canonicalJson(stored.state) !== canonicalJson(ref.state)) await saveRef();

    const abort = new AbortController();
    let budgetReached = false;
    const capMicros = input.budget.max_cost_usd === undefined ? null : usdToMicros(input.budget.max_cost_usd);
    const beat = setInterval(() => activity.heartbeat(), deps.heartbeatMs ?? 1000);
    activity.cancelled.catch(() => abort.abort(new Error('turn cancelled')));

    const sink: TurnSink = {
      signal: abort.signal,
      async emit(events) {
        // events, their ledger charges and the budget windows they draw on commit together
        if (metered) {
          // the gateway's records are the charges; the runtime's own are counted for the cross-check only
          for (const e of events) {
            if (e.type !== 'span.model_request_end') continue;
            reported.requests++;
            reported.input += e.model_usage.input_tokens + e.model_usage.cache_read_input_tokens + e.model_usage.cache_creation_input_tokens;
            reported.output += e.model_usage.output_tokens;
          }
          events = events.filter((e) => e.type !== 'span.model_request_end');
        }
        const { result, charged } = await db.transaction(async (tx) => {
          const priced = events.map((e) => toCharge(e, pricing));
          const logged = events.flatMap((e, i) => toLogEvents(input.sessionId, e, priced[i] ?? null));
          return commitCharges(tx, { sessionId: input.sessionId, teamId: input.agent.teamId, events: logged, charges: priced.flatMap((c) => (c ? [c.charge] : [])), reservationId: held.reservationId });
        });
        if (result.chargedMicros > 0) metrics.spend.inc({ runtime }, microsToUsd(result.chargedMicros));
        const overSession = capMicros !== null && result.costMicros >= capMicros;
        if ((overSession || !charged.withinLimits) && !abort.signal.aborted) {
          budgetReached = true;
          abort.abort(new Error('budget reached'));
        }
      },
      async checkpoint(state) {
        ref.state = state;
        await saveRef();
        activity.heartbeat();
      },
      decide: (request) => decideToolCall({ db, publicUrl: deps.publicUrl, metrics, policyChanges: deps.policyChanges }, input, request),
    };

    /**
     * Through the gateway: waits for the leg's requests to be charged, cross-checks the runtime's own figures, and
     * answers the turn's end when the gateway refused a request for budget (the runtime then stopped, or failed).
     */
    const meteredEnd = async (): Promise<TurnOutcome | null> => {
      if (!metered) return null;
      const leg = await metered.meter.finish(input.sessionId);
      const inputTokens = leg.usage.input_tokens + leg.usage.cache_read_input_tokens + leg.usage.cache_creation_input_tokens;
      const off = (a: number, b: number) => Math.abs(a - b) > Math.max(1, Math.max(a, b) / 100);
      if (reported.requests > 0 && (reported.requests !== leg.requests || off(reported.input, inputTokens) || off(reported.output, leg.usage.output_tokens))) {
        log.warn('the runtime\'s own figures differ from the gateway\'s', { runtime, reported, metered: { requests: leg.requests, input: inputTokens, output: leg.usage.output_tokens } });
      }
      if (!leg.refused) return null;
      const session = await getSession(db, { teamId: input.agent.teamId, sessionId: input.sessionId });
      return { result: { status: 'interrupted' }, spentMicros: session?.costMicros ?? 0, budgetReached: true };
    };

    if (input.input.kind === 'message' && activity.info.attempt === 1) metrics.turns.inc({ runtime });
    /** the leg, from the runtime's turn to what the workflow is told; a retryable failure throws */
    const runLeg = async (): Promise<TurnOutcome> => {
      const result = await inSpan(`runtime.turn ${runtime}`, { ...spanAttributes, 'agentplane.input': input.input.kind }, () => adapter.runTurn(ctx, ref, input.input, sink)).catch(async (err: unknown) => {
        metrics.runtimeErrors.inc({ runtime });
        // a runtime that failed on the gateway's budget refusal stopped for the budget
        const stopped = await meteredEnd();
        if (stopped) return stopped;
        return failIfFinal(err);
      });
      if ('budgetReached' in result) return result;
      const stopped = await meteredEnd();
      if (stopped) return stopped;
      metrics.turnLegs.inc({ runtime, status: result.status });
      if (result.status === 'error') metrics.runtimeErrors.inc({ runtime });
      if (result.status === 'error' && result.retryable) {
        throw ApplicationFailure.create({ type: 'runtime.error', message: result.message, nonRetryable: false });
      }
      const session = await getSession(db, { teamId: input.agent.teamId, sessionId: input.sessionId });
      // a turn that finished as its spend reached a limit ended normally; the next turn is refused before it leaves
      return { result, spentMicros: session?.costMicros ?? 0, budgetReached: budgetReached && result.status !== 'end_turn' };
    };
    try {
      const outcome: TurnOutcome = { ...(await runLeg()), ...(deps.hostQueue && holdsProcesses(adapter) ? { heldBy: deps.hostQueue } : {}) };
      // the turn stopped (ended, parked for a person, interrupted, failed): what the session needs to continue is written
      // before the workflow hears of it, so any worker can take the next leg
      if (snapshot) await saveSnapshot(snapshot, runtime, reservationId);
      // a runtime parked on a call for a person holds that call: only a session whose turn is over hibernates
      if (snapshot && outcome.result.status !== 'requires_action') hibernation.later(input.sessionId, adapter);
      return outcome;
    } finally {
      clearInterval(beat);
      if (held.reservationId) await settleReservation(db, { reservationId: held.reservationId });
    }
  }

  /**
   * Before a leg: when another worker wrote the session's newest snapshot (this worker never ran it, or ran it before
   * that worker did), this worker's runtime for the session is stopped and the snapshot restored in place of its files.
   */
  async function restoreIfBehind(snapshot: SessionSnapshot, adapter: RuntimeAdapter, previous: RuntimeSessionRef | null): Promise<void> {
    const started = performance.now();
    const restored = await snapshot.snapshots.ensureCurrent(snapshot.sessionId, snapshot.roots, async () => {
      if (previous) await adapter.close(previous);
    });
    if (!restored) return;
    const ms = Math.round(performance.now() - started);
    log.info('session restored from its snapshot', { sessionId: snapshot.sessionId, seq: restored.seq, writer: restored.writer, bytes: restored.bytes, ms });
    metrics.snapshotRestores.inc({ runtime: adapter.kind });
    await appendEvents(db, { sessionId: snapshot.sessionId, events: [{ sourceId: `restore:${restored.seq}:${deps.dataDir}`, type: 'session.restored', payload: { snapshot: restored.seq, bytes: restored.bytes, restore_ms: ms } }] });
  }

  /**
   * After a leg that stopped: the session's snapshot. One past the size limit, or one another worker got in before
   * (it restored the session while this worker still ran it), is not written: the session goes on, and a
   * `session.snapshot_failed` event says why it cannot move. A store that cannot be reached fails the leg, which is
   * retried: the runtime reattaches to the stopped turn and the snapshot is tried again.
   */
  async function saveSnapshot(snapshot: SessionSnapshot, runtime: string, legId: string): Promise<void> {
    const started = performance.now();
    try {
      const saved = await snapshot.snapshots.save(snapshot.sessionId, runtime, snapshot.roots);
      metrics.snapshotSeconds.observe({ runtime }, (performance.now() - started) / 1000);
      log.info('session snapshot written', { sessionId: snapshot.sessionId, seq: saved.manifest.seq, bytes: saved.manifest.bytes, filesRead: saved.filesRead, chunksStored: saved.chunksStored, bytesStored: saved.bytesStored });
    } catch (err) {
      if (!(err instanceof SnapshotTooLargeError || err instanceof SnapshotConflictError)) throw err;
      const reason = err instanceof SnapshotTooLargeError ? 'too_large' : 'conflict';
      log.warn('session snapshot not written', { sessionId: snapshot.sessionId, reason, error: err.message });
      await appendEvents(db, { sessionId: snapshot.sessionId, events: [{ sourceId: `snapshot:${legId}`, type: 'session.snapshot_failed', payload: { reason, message: err.message } }] });
    }
  }

  async function recordDecision(input: RecordDecisionInput): Promise<void> {
    const session = await db.query.sessions.findFirst({ where: (s, { eq }) => eq(s.id, input.sessionId) });
    if (!session) throw ApplicationFailure.create({ type: 'session.not_found', message: `session ${input.sessionId} is gone`, nonRetryable: true });
    const decided = await db.transaction(async (tx) => {
      const status = input.actor ? (input.result === 'allow' ? 'allowed' : 'denied') : 'expired';
      const changed = await decideApproval(tx, { sessionId: input.sessionId, toolUseId: input.toolUseId, status, keyId: input.actor?.keyId ?? null, reason: input.reason });
      await appendEvents(tx, {
        sessionId: input.sessionId,
        events: [
          {
            sourceId: `confirm:${input.toolUseId}`,
            ...(input.eventId ? { id: input.eventId } : {}),
            type: 'user.tool_confirmation',
            payload: { tool_use_id: input.toolUseId, result: input.result, deny_message: input.denyMessage, decided_by: input.actor?.keyId ?? null, reason: input.reason },
          },
        ],
      });
      if (changed) {
        await appendAudit(tx, {
          teamId: session.teamId,
          actorKeyId: input.actor?.keyId ?? 'system',
          actorRole: input.actor?.role ?? 'system',
          action: 'tool.approval',
          target: `${input.sessionId}/${input.toolUseId}`,
          decision: input.result,
          reason: input.reason,
          data: { status },
        });
      }
      return changed;
    });
    // counted once: a retried activity finds the approval already decided
    if (decided?.decidedAt) {
      metrics.toolDecisions.inc({ runtime: session.runtime, source: 'approval', outcome: decided.status });
      metrics.approvalWait.observe({ outcome: decided.status }, Math.max(0, (decided.decidedAt.getTime() - decided.requestedAt.getTime()) / 1000));
    }
  }

  async function closeRuntime(input: { sessionId: string; runtime: string }): Promise<void> {
    await hibernation.wake(input.sessionId);
    const adapter = deps.runtimes[input.runtime as keyof RuntimeRegistry];
    // the session's token is refused from now on
    if (adapter?.capabilities.gateway) await deps.gateway?.revoke(input.sessionId);
    deps.meter?.close(input.sessionId);
    const stored = await getRuntimeRef(db, input.sessionId);
    if (adapter && stored) {
      await inSpan(`runtime.close ${adapter.kind}`, { 'agentplane.session_id': input.sessionId, 'agentplane.runtime': adapter.kind }, () => adapter.close({ sessionId: input.sessionId, runtimeSessionId: stored.runtimeSessionId, state: stored.state as Record<string, unknown> }));
    }
    // the session has ended: nothing will restore it
    if (adapter?.capabilities.portable === 'snapshot') await deps.snapshots?.drop(input.sessionId);
  }

  return { recordEvents, runTurn, recordDecision, closeRuntime };
}

/**
 * The model provider's URL, checked again before every turn leg: the name may resolve elsewhere than when the agent
 * was saved (DNS rebinding), or the operator's allowance may have changed. The adapters that connect from this process
 * (Managed Agents, Cursor, Hermes, DeepAgents) check every connection too; runtimes whose own process calls the model
 * (OpenCode, Claude Code, OpenClaw, ACP agents) get only this check until their egress goes through the sandbox's proxy.
 * A refused address fails the turn for good; a name that does not resolve now may resolve on a retry.
 */
async function checkModelProvider(egress: EgressGuard, input: RunTurnInput): Promise<void> {
  const baseUrl = input.agent.modelProvider?.baseUrl;
  if (!baseUrl) return;
  try {
    await egress.checkUrl(baseUrl, 'model_provider.base_url');
  } catch (err) {
    if (!(err instanceof EgressRefusedError)) throw err;
    if (err.unresolved) throw ApplicationFailure.create({ type: 'egress.unresolved', message: err.message, nonRetryable: false });
    throw ApplicationFailure.create({ type: 'egress.refused', message: `egress refused: ${err.message}`, nonRetryable: true });
  }
}

/**
 * What no retry can help fails the turn for good: an adapter's refusal, or a connection the egress guard refused (an
 * adapter let it through as a fetch failure). Anything else is Temporal's to retry.
 */
function failIfFinal(err: unknown): never {
  if (err instanceof RuntimeRefusedError) throw ApplicationFailure.create({ type: err.code, message: err.message, nonRetryable: true });
  const refused = egressRefusal(err);
  if (refused) throw ApplicationFailure.create({ type: 'egress.refused', message: `egress refused: ${refused.reason}`, nonRetryable: true });
  throw err;
}

/**
 * Runtime events go to the log without their native payload's secrets; `raw` is dropped (it can echo env). A model
 * request's event says what was charged (`cost_usd`) and, when that is not the runtime's own figure, the figure
 * (`reported_cost_usd`); a refused charge adds a `budget.charge_refused` event in the same append.
 */
function toLogEvents(sessionId: string, event: RuntimeEvent, priced: PricedRequest | null): NewEvent[] {
  const { sourceId, raw: _raw, type, ...body } = event;
  if (event.type === 'agent.tool_use') {
    // a call the runtime ran without asking: same source id as a decided one, so it is logged once
    const toolSource = `tool:${event.tool_use_id}`;
    const { tool_use_id: _callId, ...rest } = body as typeof body & { tool_use_id: string };
    return [{ sourceId: toolSource, id: toolUseEventId(sessionId, event.tool_use_id), type, payload: { evaluated_permission: 'allow', ...rest } }];
  }
  if (event.type === 'agent.tool_result') {
    return [{ sourceId, type, payload: { ...body, tool_use_id: toolUseEventId(sessionId, event.tool_use_id) } }];
  }
  if (priced) {
    const { cost_usd: reported, ...rest } = body as typeof body & { cost_usd?: number };
    const { decision } = priced;
    const differs = reported !== undefined && decision.reportedMicros !== decision.amountMicros;
    return [{ sourceId, type, payload: { ...rest, cost_usd: microsToUsd(decision.amountMicros), ...(differs ? { reported_cost_usd: reported } : {}) } }, ...(priced.refused ? [priced.refused] : [])];
  }
  return [{ sourceId, type, payload: body }];
}

interface Pricing {
  costSource: CostSource;
  agentModel: string;
  overrides: PriceTable;
}

interface PricedRequest {
  charge: NewCharge;
  decision: ChargeDecision;
  /** the event that records a refused charge */
  refused: NewEvent | null;
}

/** A model request's ledger charge, priced by governance/pricing.ts `decideCharge`. */
function toCharge(event: RuntimeEvent, pricing: Pricing): PricedRequest | null {
  if (event.type !== 'span.model_request_end') return null;
  const usage = event.model_usage;
  const decision = decideCharge({ costSource: pricing.costSource, usage, models: [event.model, pricing.agentModel], reportedUsd: event.cost_usd, overrides: pricing.overrides });
  if (decision.mismatch) {
    log.warn('runtime-reported cost differs from the priced charge', { model: event.model, reportedUsd: event.cost_usd, chargedUsd: microsToUsd(decision.amountMicros), costSource: pricing.costSource });
  }
  const refused: NewEvent | null = decision.refusal
    ? {
        sourceId: `charge_refused:${event.sourceId}`,
        type: 'budget.charge_refused',
        payload: { reason: decision.refusal, model: event.model, ...(event.cost_usd === undefined ? {} : { reported_cost_usd: event.cost_usd }), charged_usd: 0, model_usage: usage },
      }
    : null;
  return {
    charge: ledgerCharge(event.sourceId, event.model, usage, decision),
    decision,
    refused,
  };
}


/**
 * The session's environment as it is this turn: what its sandbox may reach (`config.networking`), so a change to the
 * environment applies from the session's next turn (or leg), like a policy change, and what its snapshots leave out of
 * the workspace (`config.workspace.snapshot_ignore`). No environment: the default one's. An environment that cannot be
 * found, or whose stored policy does not read, gets no network (fails closed).
 */
async function sessionEnvironment(db: Db, input: RunTurnInput): Promise<{ networking: Networking; snapshotIgnore: string[] }> {
  const found = await sessionEnvironmentConfig(db, { teamId: input.agent.teamId, sessionId: input.sessionId });
  if (found.kind === 'none') return { networking: DEFAULT_NETWORKING, snapshotIgnore: [] };
  const networking = found.kind === 'found' ? readNetworking(found.config) : null;
  const snapshotIgnore = found.kind === 'found' ? readSnapshotIgnore(found.config) : [];
  if (networking) return { networking, snapshotIgnore };
  log.warn('the session\'s environment has no readable networking policy: the turn runs without network', { sessionId: input.sessionId, environmentId: found.environmentId });
  return { networking: NO_NETWORK, snapshotIgnore };
}

/** A session whose state is snapshotted: the snapshotter, and the session's trees (its workspace, its runtime's state). */
interface SessionSnapshot {
  sessionId: string;
  snapshots: Snapshotter;
  roots: SnapshotRoot[];
}

function snapshotRoots(ctx: TurnContext, workspaceIgnore: readonly string[], runtime: { path: string; ignore: readonly string[] }): SnapshotRoot[] {
  return [
    { name: 'workspace', path: ctx.workdir, ignore: workspaceIgnore },
    { name: 'runtime', path: runtime.path, ignore: runtime.ignore },
  ];
}

/** A runtime whose session keeps processes on the worker that ran it (a sandbox, or none): its legs have affinity. */
function holdsProcesses(adapter: RuntimeAdapter): boolean {
  return adapter.capabilities.sandbox === 'session' || adapter.capabilities.sandbox === 'none';
}
