/**
 * A tool decision, the hot path of governance: the session's current policy (the newest revision wins, so a policy
 * changed mid-turn governs the next call), the `agent.tool_use` event with its verdict, the audit row and, for `ask`,
 * the pending approval and its notification, all in one transaction. Called by the runTurn activity's sink; the
 * governance benchmark calls it directly.
 */
import { log } from '@temporalio/activity';
import { sql } from 'drizzle-orm';
import { stableId } from '../db/ids';
import { rowsOf, type Db } from '../db/client';
import { GroupCommit } from '../db/group-commit';
import { activeTraceId } from '../observability/tracing';
import { AUDIT_CHAIN_LOCK, auditRecords, canonicalJson, chainRows, guessedTip, rememberTip, type AuditEntry } from '../db/queries/audit';
import { findEvent } from '../db/queries/events';
import { livePolicyFor } from '../db/queries/policies';
import { getApproval, insertApproval, type ApprovalRow } from '../db/queries/sessions';
import { enqueueNotification } from '../db/queries/webhooks';
import { approvalRequested } from '../governance/notifications';
import { evaluatePolicy, type PolicyDecision } from '../governance/policy';
import type { Decision, PermissionRequest } from '../runtimes/runtime-adapter';
import type { ActivityDeps } from './session.activities';
import type { RunTurnInput } from './types';

/**
 * The fast path of a tool decision. `allow` and `deny` are answered here from the session's current policy;
 * `ask` is recorded as pending and goes back to the workflow, which waits for a person. A replayed request
 * (after a reattach) gets the decision recorded the first time.
 *
 * Decisions are group-committed: every decision waiting while a commit is in flight goes into the next transaction
 * together (`db/group-commit.ts`), with one audit-chain lock and one WAL flush for all of them. Each one's event,
 * approval and audit row still commit together, and none is answered before that commit.
 */
export async function decideToolCall(deps: Pick<ActivityDeps, 'db' | 'publicUrl' | 'metrics' | 'policyChanges'>, input: RunTurnInput, request: PermissionRequest): Promise<Decision> {
  const { db } = deps;
  // a policy changed after this leg started still governs its next call: the newest revision wins. Read before the
  // transaction, not beside it: a transaction waiting on another pooled connection can starve the pool.
  const [live, approval] = await Promise.all([
    livePolicyFor(db, { teamId: input.agent.teamId, agentId: input.agent.agentId }, deps.policyChanges),
    request.approvedAs ? getApproval(db, { teamId: input.agent.teamId, sessionId: input.sessionId, toolUseId: request.approvedAs }) : null,
  ]);
  const current = live.revision > input.policyVersion ? { policy: live.policy, version: live.revision } : { policy: input.policy, version: input.policyVersion };
  const verdict = carriedApproval(evaluatePolicy(current.policy, request.tool, request.input), request, approval);
  let committer = committers.get(db);
  if (!committer) committers.set(db, (committer = new GroupCommit((decisions) => commitDecisions(db, decisions))));
  // the trace is this call's: the commit that carries it may run in another call's context
  const recorded = await committer.submit({ input, request, verdict, policyVersion: current.version, publicUrl: deps.publicUrl, traceId: activeTraceId() });
  const action = recorded ?? verdict.action;
  if (!recorded) {
    deps.metrics?.toolDecisions.inc({ runtime: input.agent.runtime.type, source: 'policy', outcome: action });
    log.info('tool decision', { sessionId: input.sessionId, tool: request.tool, action, rule: verdict.reason });
  }
  const toolUseId = toolUseEventId(input.sessionId, request.callId);
  if (action === 'ask') return { action, toolUseId };
  return { action, message: action === 'deny' ? `denied by agentplane policy (${verdict.reason})` : undefined };
}

/** A decision made, waiting for its commit. */
interface DecisionToWrite {
  input: RunTurnInput;
  request: PermissionRequest;
  verdict: PolicyDecision;
  policyVersion: number;
  publicUrl?: string;
  traceId: string | null;
}

/** one group commit per database */
const committers = new WeakMap<Db, GroupCommit<DecisionToWrite, Recorded>>();

/** what was recorded for a replayed request the first time, or null when this decision is the first */
type Recorded = 'allow' | 'ask' | 'deny' | null;

/**
 * Writes a batch of decisions: every event and audit row in one statement (`agentplane_record_decisions`, migration
 * 0012), so a batch of any size is one round trip and, without an `ask`, one transaction of its own. An `ask`'s pending
 * approval and notification join it in a transaction. The statement writes nothing when the caller must first learn
 * something, and the batch is sent again: a replayed request (after a reattach) answers what was recorded the first
 * time and is dropped from it; a chain that moved since this process last wrote it is hashed again from its tip.
 */
async function commitDecisions(db: Db, decisions: DecisionToWrite[]): Promise<Recorded[]> {
  const recorded = new Map<number, Recorded>();
  let tip = guessedTip();
  for (;;) {
    const pending = decisions.map((decision, i) => ({ decision, i, toolUseId: toolUseEventId(decision.input.sessionId, decision.request.callId) })).filter(({ i }) => !recorded.has(i));
    if (pending.length === 0) return decisions.map((_, i) => recorded.get(i)!);
    const audits = chainRows(pending.map(({ decision }) => auditOf(decision)), tip, new Date());
    const write = async (tx: Db) => {
      const outcome = await recordDecisions(tx, pending, audits, tip);
      if ('written' in outcome) for (const { decision, toolUseId } of pending) if (decision.verdict.action === 'ask') await writePendingApproval(tx, decision, toolUseId);
      return outcome;
    };
    const outcome = pending.some(({ decision }) => decision.verdict.action === 'ask') ? await db.transaction(write) : await write(db);
    if ('written' in outcome) {
      // every one left was written now: the next pass finds none pending and answers
      if (audits.length > 0) rememberTip(audits.at(-1)!.hash);
      for (const { i } of pending) recorded.set(i, null);
    } else if ('tip' in outcome) tip = outcome.tip;
    else for (const { i, decision, toolUseId } of pending) if (outcome.replayed.includes(toolUseId)) recorded.set(i, await firstDecision(db, decision.input.sessionId, toolUseId));
  }
}

type RecordOutcome = { written: number } | { tip: string } | { replayed: string[] };

async function recordDecisions(db: Db, pending: Array<{ decision: DecisionToWrite; toolUseId: string }>, audits: ReturnType<typeof chainRows>, tip: string): Promise<RecordOutcome> {
  const events = pending.map(({ decision: { input, request, verdict, policyVersion, traceId }, toolUseId }, ord) => ({
    ord,
    session_id: input.sessionId,
    id: toolUseId,
    source_id: `tool:${request.callId}`,
    type: 'agent.tool_use',
    payload: { name: request.tool, input: request.input, evaluated_permission: verdict.action, evaluation: { rule: verdict.reason, policy_version: policyVersion } },
    trace_id: traceId,
  }));
  const [row] = rowsOf<{ outcome: RecordOutcome }>(
    await db.execute(sql`select agentplane_record_decisions(${JSON.stringify(events)}::jsonb, ${JSON.stringify(auditRecords(audits))}::jsonb, ${tip}, ${AUDIT_CHAIN_LOCK}) as outcome`),
  );
  return row!.outcome;
}

/** a replayed request (after a reattach) was decided the first time: that decision stands, and nothing is written again */
async function firstDecision(tx: Db, sessionId: string, toolUseId: string): Promise<Recorded> {
  const first = await findEvent(tx, sessionId, toolUseId);
  if (!first) throw new Error(`session ${sessionId} does not exist`);
  return (first.payload as { evaluated_permission?: 'allow' | 'ask' | 'deny' }).evaluated_permission ?? null;
}

/** an `ask`: the pending approval, and the approvers hear of it iff it commits */
async function writePendingApproval(tx: Db, { input, request, publicUrl }: DecisionToWrite, toolUseId: string): Promise<void> {
  const expiresAt = new Date(Date.now() + input.agent.approvalTimeoutSeconds * 1000);
  await insertApproval(tx, { sessionId: input.sessionId, toolUseId, teamId: input.agent.teamId, tool: request.tool, input: request.input, status: 'pending', expiresAt });
  await enqueueNotification(tx, {
    teamId: input.agent.teamId,
    type: 'approval.requested',
    payload: approvalRequested({
      publicUrl: publicUrl ?? 'http://127.0.0.1:8080',
      teamId: input.agent.teamId,
      sessionId: input.sessionId,
      toolUseId,
      tool: request.tool,
      input: request.input,
      agent: { id: input.agent.agentId, name: input.agent.name },
      expiresAt,
    }),
  });
}

function auditOf({ input, request, verdict, policyVersion, traceId }: DecisionToWrite): AuditEntry {
  return {
    ...sessionActor(input),
    traceId,
    action: 'tool.evaluate',
    target: `${input.sessionId}/${toolUseEventId(input.sessionId, request.callId)}`,
    decision: verdict.action,
    reason: verdict.reason,
    data: { tool: request.tool, policy_version: policyVersion, session_id: input.sessionId },
  };
}

/**
 * A call made again after its runtime was lost while it waited for a person (`approvedAs`): what the policy would ask
 * is allowed on that person's approval, if it was the same call (tool and input) and was approved. A deny stands.
 */
function carriedApproval(verdict: PolicyDecision, request: PermissionRequest, approval: ApprovalRow | null): PolicyDecision {
  if (!request.approvedAs || verdict.action !== 'ask') return verdict;
  const same = approval?.status === 'allowed' && approval.tool === request.tool && canonicalJson(approval.input) === canonicalJson(request.input);
  if (!same) return verdict;
  return { ...verdict, action: 'allow', reason: `approved as ${request.approvedAs} by ${approval.decidedByKeyId ?? 'a person'}; its runtime was lost before it ran` };
}

/** The public id of a tool call's `agent.tool_use` event: the same for every replay of the runtime's call. */
export function toolUseEventId(sessionId: string, callId: string): string {
  return stableId('sevt', sessionId, `tool:${callId}`);
}

export function sessionActor(input: RunTurnInput) {
  return { teamId: input.agent.teamId, actorKeyId: input.initiator.keyId, actorRole: input.initiator.role };
}
