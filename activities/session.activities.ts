/**
 * Session activities: the worker's only contact with the world. Built by `createActivities(deps)`.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ApplicationFailure, Context, log } from '@temporalio/activity';
import type { Db } from '../db/client';
import { openCredential } from '../db/queries/credentials';
import { appendAudit } from '../db/queries/audit';
import { appendEvents, findEvent, type NewCharge, type NewEvent } from '../db/queries/events';
import { decideApproval, getRuntimeRef, getSession, insertApproval, putRuntimeRef } from '../db/queries/sessions';
import { stableId } from '../db/ids';
import type { Vault } from '../db/vault';
import { usdToMicros } from '../governance/budget';
import { evaluatePolicy } from '../governance/policy';
import { DEFAULT_PRICES, priceUsageMicros, type ModelPrice } from '../governance/pricing';
import type { Decision, PermissionRequest, RuntimeEvent, RuntimeRegistry, RuntimeSessionRef, TurnContext, TurnSink } from '../runtimes/runtime-adapter';
import type { RecordDecisionInput, RecordEventsInput, RunTurnInput, SessionActivities, TurnOutcome } from './types';

export interface ActivityDeps {
  db: Db;
  vault: Vault;
  runtimes: RuntimeRegistry;
  /** sessions get their own folder below this */
  dataDir: string;
  prices?: Record<string, ModelPrice>;
  /** how often a running turn heartbeats */
  heartbeatMs?: number;
}

export function createSessionActivities(deps: ActivityDeps): SessionActivities {
  const { db } = deps;
  const prices = deps.prices ?? DEFAULT_PRICES;

  async function recordEvents(input: RecordEventsInput): Promise<void> {
    await appendEvents(db, { sessionId: input.sessionId, events: input.events, status: input.status });
  }

  async function runTurn(input: RunTurnInput): Promise<TurnOutcome> {
    const activity = Context.current();
    const adapter = deps.runtimes[input.agent.runtime.type];
    if (!adapter) {
      throw ApplicationFailure.create({ type: 'runtime.unavailable', message: `no ${input.agent.runtime.type} runtime on this worker`, nonRetryable: true });
    }
    const ctx: TurnContext = { sessionId: input.sessionId, agent: input.agent, workdir: join(deps.dataDir, 'sessions', input.sessionId), secrets: {} };
    await mkdir(ctx.workdir, { recursive: true });
    const credentialId = input.agent.modelProvider?.credentialId;
    if (credentialId) {
      try {
        ctx.secrets.modelApiKey = await openCredential(db, deps.vault, { teamId: input.agent.teamId, credentialId });
      } catch (err) {
        throw ApplicationFailure.create({ type: 'credential.unavailable', message: (err as Error).message, nonRetryable: true });
      }
    }

    const stored = await getRuntimeRef(db, input.sessionId);
    const previous: RuntimeSessionRef | null = stored ? { sessionId: input.sessionId, runtimeSessionId: stored.runtimeSessionId, state: stored.state as Record<string, unknown> } : null;
    const ref = await adapter.open(ctx, previous);
    const saveRef = () => putRuntimeRef(db, { sessionId: input.sessionId, runtime: adapter.kind, runtimeSessionId: ref.runtimeSessionId, state: ref.state });
    await saveRef();

    const abort = new AbortController();
    let budgetReached = false;
    const capMicros = input.budget.max_cost_usd === undefined ? null : usdToMicros(input.budget.max_cost_usd);
    const beat = setInterval(() => activity.heartbeat(), deps.heartbeatMs ?? 1000);
    activity.cancelled.catch(() => abort.abort(new Error('turn cancelled')));

    const sink: TurnSink = {
      signal: abort.signal,
      async emit(events) {
        const result = await appendEvents(db, { sessionId: input.sessionId, events: events.map((e) => toLogEvent(input.sessionId, e)), charges: events.flatMap((e) => toCharge(e, prices)) });
        if (capMicros !== null && result.costMicros >= capMicros && !abort.signal.aborted) {
          budgetReached = true;
          abort.abort(new Error('budget reached'));
        }
      },
      async checkpoint(state) {
        ref.state = state;
        await saveRef();
        activity.heartbeat();
      },
      decide: (request) => decide(input, request),
    };

    try {
      const result = await adapter.runTurn(ctx, ref, input.input, sink);
      if (result.status === 'error' && result.retryable) {
        throw ApplicationFailure.create({ type: 'runtime.error', message: result.message, nonRetryable: false });
      }
      const session = await getSession(db, { teamId: input.agent.teamId, sessionId: input.sessionId });
      return { result, spentMicros: session?.costMicros ?? 0, budgetReached };
    } finally {
      clearInterval(beat);
    }
  }

  /**
   * The fast path of a tool decision. `allow` and `deny` are answered here from the session's current policy;
   * `ask` is recorded as pending and goes back to the workflow, which waits for a person. A replayed request
   * (after a reattach) gets the decision recorded the first time.
   */
  async function decide(input: RunTurnInput, request: PermissionRequest): Promise<Decision> {
    const sourceId = `tool:${request.callId}`;
    const toolUseId = toolUseEventId(input.sessionId, request.callId);
    const recorded = await findEvent(db, input.sessionId, toolUseId);
    const verdict = evaluatePolicy(input.policy, request.tool, request.input);
    const action = (recorded?.payload as { evaluated_permission?: 'allow' | 'ask' | 'deny' } | undefined)?.evaluated_permission ?? verdict.action;
    if (!recorded) {
      await db.transaction(async (tx) => {
        await appendEvents(tx, {
          sessionId: input.sessionId,
          events: [
            {
              id: toolUseId,
              sourceId,
              type: 'agent.tool_use',
              payload: { name: request.tool, input: request.input, evaluated_permission: action, evaluation: { rule: verdict.reason, policy_version: input.policyVersion } },
            },
          ],
        });
        if (action === 'ask') {
          await insertApproval(tx, {
            sessionId: input.sessionId,
            toolUseId,
            teamId: input.agent.teamId,
            tool: request.tool,
            input: request.input,
            status: 'pending',
            expiresAt: new Date(Date.now() + input.agent.approvalTimeoutSeconds * 1000),
          });
        }
        await appendAudit(tx, {
          teamId: input.agent.teamId,
          actorKeyId: input.initiator.keyId,
          actorRole: input.initiator.role,
          action: 'tool.evaluate',
          target: `${input.sessionId}/${toolUseId}`,
          decision: action,
          reason: verdict.reason,
          data: { tool: request.tool, policy_version: input.policyVersion, session_id: input.sessionId },
        });
      });
      log.info('tool decision', { sessionId: input.sessionId, tool: request.tool, action, rule: verdict.reason });
    }
    if (action === 'ask') return { action, toolUseId };
    return { action, message: action === 'deny' ? `denied by agentplane policy (${verdict.reason})` : undefined };
  }

  async function recordDecision(input: RecordDecisionInput): Promise<void> {
    const session = await db.query.sessions.findFirst({ where: (s, { eq }) => eq(s.id, input.sessionId) });
    if (!session) throw ApplicationFailure.create({ type: 'session.not_found', message: `session ${input.sessionId} is gone`, nonRetryable: true });
    await db.transaction(async (tx) => {
      const status = input.actor ? (input.result === 'allow' ? 'allowed' : 'denied') : 'expired';
      const changed = await decideApproval(tx, { sessionId: input.sessionId, toolUseId: input.toolUseId, status, keyId: input.actor?.keyId ?? null, reason: input.reason });
      await appendEvents(tx, {
        sessionId: input.sessionId,
        events: [
          {
            sourceId: `confirm:${input.toolUseId}`,
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
    });
  }

  async function closeRuntime(input: { sessionId: string; runtime: string }): Promise<void> {
    const adapter = deps.runtimes[input.runtime as keyof RuntimeRegistry];
    const stored = await getRuntimeRef(db, input.sessionId);
    if (!adapter || !stored) return;
    await adapter.close({ sessionId: input.sessionId, runtimeSessionId: stored.runtimeSessionId, state: stored.state as Record<string, unknown> });
  }

  return { recordEvents, runTurn, recordDecision, closeRuntime };
}

/** Runtime events go to the log without their native payload's secrets; `raw` is dropped (it can echo env). */
function toLogEvent(sessionId: string, event: RuntimeEvent): NewEvent {
  const { sourceId, raw: _raw, type, ...body } = event;
  if (event.type === 'agent.tool_use') {
    // a call the runtime ran without asking: same source id as a decided one, so it is logged once
    const toolSource = `tool:${event.tool_use_id}`;
    const { tool_use_id: _callId, ...rest } = body as typeof body & { tool_use_id: string };
    return { sourceId: toolSource, id: toolUseEventId(sessionId, event.tool_use_id), type, payload: { evaluated_permission: 'allow', ...rest } };
  }
  if (event.type === 'agent.tool_result') {
    return { sourceId, type, payload: { ...body, tool_use_id: toolUseEventId(sessionId, event.tool_use_id) } };
  }
  return { sourceId, type, payload: body };
}

/** The public id of the `agent.tool_use` event for a runtime's tool call. */
export function toolUseEventId(sessionId: string, callId: string): string {
  return stableId('sevt', sessionId, `tool:${callId}`);
}

function toCharge(event: RuntimeEvent, prices: Record<string, ModelPrice>): NewCharge[] {
  if (event.type !== 'span.model_request_end') return [];
  const usage = event.model_usage;
  const reported = event.cost_usd !== undefined;
  return [
    {
      sourceId: event.sourceId,
      model: event.model,
      inputTokens: usage.input_tokens,
      outputTokens: usage.output_tokens,
      cacheReadTokens: usage.cache_read_input_tokens,
      cacheCreationTokens: usage.cache_creation_input_tokens,
      amountMicros: reported ? usdToMicros(event.cost_usd as number) : priceUsageMicros(usage, prices[event.model]),
      costSource: reported ? 'reported' : 'priced',
    },
  ];
}
