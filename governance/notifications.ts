/**
 * Notification payloads: what a team's webhooks receive. Pure builders, no I/O, so the activity that records a
 * cause and the tests build the same body.
 *
 * What must stay true:
 * - no secret ever rides along: a payload carries ids, the tool input exactly as the runtime reported it, and
 *   numbers; never a credential, a key or the webhook's signing secret;
 * - the same cause always gives the same `id`, so a retried activity enqueues nothing twice and a receiver can
 *   drop a repeat;
 * - an approval payload's `actions` are ordinary API calls: a chat bot POSTs `body` to `url` with the approver's
 *   own key, so the decision is authorised, audited and checked like any other.
 */
import { toolSubject } from './policy';

export const NOTIFICATION_TYPES = ['approval.requested', 'budget.threshold'] as const;
export type NotificationType = (typeof NOTIFICATION_TYPES)[number];

export interface NotificationAction {
  id: 'approve' | 'deny';
  label: string;
  method: 'POST';
  url: string;
  body: { events: [{ type: 'user.tool_confirmation'; tool_use_id: string; result: 'allow' | 'deny' }] };
}

export interface ApprovalRequestedPayload {
  type: 'approval.requested';
  id: string;
  created_at: string;
  team_id: string;
  session_id: string;
  tool_use_id: string;
  tool: string;
  input: Record<string, unknown>;
  agent: { id: string; name: string };
  expires_at: string;
  actions: [NotificationAction, NotificationAction];
  /** one line a person can read in a chat message */
  text: string;
}

export interface BudgetThresholdPayload {
  type: 'budget.threshold';
  id: string;
  created_at: string;
  team_id: string;
  budget_id: string;
  /** 'team' | 'agent' */
  scope: string;
  /** the agent for an agent budget; null for the team's */
  agent_id: string | null;
  /** the threshold crossed, in percent of the limit */
  percent: number;
  spent_usd: number;
  limit_usd: number;
  period_start: string;
  text: string;
}

export type NotificationPayload = ApprovalRequestedPayload | BudgetThresholdPayload;

export function approvalRequested(params: {
  publicUrl: string;
  teamId: string;
  sessionId: string;
  toolUseId: string;
  tool: string;
  input: Record<string, unknown>;
  agent: { id: string; name: string };
  expiresAt: Date;
  createdAt?: Date;
}): ApprovalRequestedPayload {
  const url = `${params.publicUrl.replace(/\/+$/, '')}/v1/sessions/${encodeURIComponent(params.sessionId)}/events`;
  const action = (id: 'approve' | 'deny', label: string, result: 'allow' | 'deny'): NotificationAction => ({
    id,
    label,
    method: 'POST',
    url,
    body: { events: [{ type: 'user.tool_confirmation', tool_use_id: params.toolUseId, result }] },
  });
  const subject = toolSubject(params.input) || JSON.stringify(params.input);
  const expiresAt = params.expiresAt.toISOString();
  return {
    type: 'approval.requested',
    id: `approval.requested:${params.sessionId}:${params.toolUseId}`,
    created_at: (params.createdAt ?? new Date()).toISOString(),
    team_id: params.teamId,
    session_id: params.sessionId,
    tool_use_id: params.toolUseId,
    tool: params.tool,
    input: params.input,
    agent: { id: params.agent.id, name: params.agent.name },
    expires_at: expiresAt,
    actions: [action('approve', 'Approve', 'allow'), action('deny', 'Deny', 'deny')],
    text: oneLine(`${params.agent.name} wants to run ${params.tool} ${clip(subject, 120)} in session ${params.sessionId} (approve or deny before ${expiresAt})`),
  };
}

export function budgetThreshold(params: {
  teamId: string;
  budgetId: string;
  scope: string;
  agentId: string | null;
  percent: number;
  spentUsd: number;
  limitUsd: number;
  periodStart: Date;
  createdAt?: Date;
}): BudgetThresholdPayload {
  const periodStart = params.periodStart.toISOString();
  const owner = params.scope === 'agent' && params.agentId ? `agent ${params.agentId}` : 'the team';
  return {
    type: 'budget.threshold',
    id: `budget.threshold:${params.budgetId}:${periodStart}:${params.percent}`,
    created_at: (params.createdAt ?? new Date()).toISOString(),
    team_id: params.teamId,
    budget_id: params.budgetId,
    scope: params.scope,
    agent_id: params.agentId || null,
    percent: params.percent,
    spent_usd: params.spentUsd,
    limit_usd: params.limitUsd,
    period_start: periodStart,
    text: `Budget ${params.budgetId} of ${owner} crossed ${params.percent}%: $${usd(params.spentUsd)} of $${usd(params.limitUsd)} spent since ${periodStart}`,
  };
}

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

function oneLine(text: string): string {
  return text.replace(/\s+/g, ' ').trim();
}

function usd(amount: number): string {
  return amount.toFixed(2);
}
