/**
 * A tool decision, the hot path of governance: the session's current policy (the newest revision wins, so a policy
 * changed mid-turn governs the next call), the `agent.tool_use` event with its verdict, the audit row and, for `ask`,
 * the pending approval and its notification, all in one transaction. Called by the runTurn activity's sink; the
 * governance benchmark calls it directly.
 */
import { log } from '@temporalio/activity';
import { stableId } from '../db/ids';
import { appendAudit } from '../db/queries/audit';
import { appendEvents, findEvent } from '../db/queries/events';
import { livePolicyFor } from '../db/queries/policies';
import { canonicalJson } from '../db/queries/audit';
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
 */
export async function decideToolCall(deps: Pick<ActivityDeps, 'db' | 'publicUrl' | 'metrics'>, input: RunTurnInput, request: PermissionRequest): Promise<Decision> {
  const { db } = deps;
  const sourceId = `tool:${request.callId}`;
  const toolUseId = toolUseEventId(input.sessionId, request.callId);
  // a policy changed after this leg started still governs its next call: the newest revision wins. Read before the
  // transaction, not beside it: a transaction waiting on another pooled connection can starve the pool.
  const [live, approval] = await Promise.all([
    livePolicyFor(db, { teamId: input.agent.teamId, agentId: input.agent.agentId }),
    request.approvedAs ? getApproval(db, { teamId: input.agent.teamId, sessionId: input.sessionId, toolUseId: request.approvedAs }) : null,
  ]);
  const { verdict, recorded } = await db.transaction(async (tx) => {
    const current = live.revision > input.policyVersion ? { policy: live.policy, version: live.revision } : { policy: input.policy, version: input.policyVersion };
    const verdict = carriedApproval(evaluatePolicy(current.policy, request.tool, request.input), request, approval);
    const written = await appendEvents(tx, {
      sessionId: input.sessionId,
      events: [
        {
          id: toolUseId,
          sourceId,
          type: 'agent.tool_use',
          payload: { name: request.tool, input: request.input, evaluated_permission: verdict.action, evaluation: { rule: verdict.reason, policy_version: current.version } },
        },
      ],
    });
    // a replayed request (after a reattach) was decided the first time: that decision stands, and nothing is written again
    if (written.appended === 0) {
      const first = await findEvent(tx, input.sessionId, toolUseId);
      return { verdict, recorded: (first?.payload as { evaluated_permission?: 'allow' | 'ask' | 'deny' } | undefined)?.evaluated_permission ?? verdict.action };
    }
    if (verdict.action === 'ask') {
      const expiresAt = new Date(Date.now() + input.agent.approvalTimeoutSeconds * 1000);
      await insertApproval(tx, { sessionId: input.sessionId, toolUseId, teamId: input.agent.teamId, tool: request.tool, input: request.input, status: 'pending', expiresAt });
      // the approvers hear of it iff the pending approval committed
      await enqueueNotification(tx, {
        teamId: input.agent.teamId,
        type: 'approval.requested',
        payload: approvalRequested({
          publicUrl: deps.publicUrl ?? 'http://127.0.0.1:8080',
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
    // last in the transaction: the audit chain's lock is held until the commit
    await appendAudit(tx, {
      ...sessionActor(input),
      action: 'tool.evaluate',
      target: `${input.sessionId}/${toolUseId}`,
      decision: verdict.action,
      reason: verdict.reason,
      data: { tool: request.tool, policy_version: current.version, session_id: input.sessionId },
    });
    return { verdict, recorded: null };
  });
  const action = recorded ?? verdict.action;
  if (!recorded) {
    deps.metrics?.toolDecisions.inc({ runtime: input.agent.runtime.type, source: 'policy', outcome: action });
    log.info('tool decision', { sessionId: input.sessionId, tool: request.tool, action, rule: verdict.reason });
  }
  if (action === 'ask') return { action, toolUseId };
  return { action, message: action === 'deny' ? `denied by agentplane policy (${verdict.reason})` : undefined };
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
