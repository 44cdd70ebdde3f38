/**
 * Starting a session, as POST /v1/sessions and a schedule's runs both do it: resolve the agent version (its
 * governance from the current version), check the budget against the agent's cap, that the model has a price and
 * that the runtime enforces the team's deny rules, compose the team's policy, then write the session row and its
 * audit row in one transaction. The row's id is the caller's: a retry with the same id lands on the row it wrote
 * before.
 */
import { governanceOf, toSnapshot, type AgentDefinition } from '../../api/schemas/agent.schema';
import { describeUnenforceable, unenforceableDenies, type DenyCapability } from '../../governance/enforceability';
import { composePolicy } from '../../governance/policy';
import { resolvePrice, type CostSource } from '../../governance/pricing';
import type { Actor, AgentSnapshot, SandboxKind, SessionBudget } from '../../governance/types';
import type { SessionTrigger, SessionWorkflowInput } from '../../workflows/definitions';
import type { Db } from '../client';
import { getAgent } from './agents';
import { getEnvironment } from './environments';
import { appendAudit } from './audit';
import { getTeamPolicy } from './policies';
import { loadPriceOverrides } from './pricing';
import { getSession, insertSessionIfAbsent, type SessionRow } from './sessions';

/** Why a session cannot start; the API answers with `status`, an activity fails without retrying. */
export class SessionStartError extends Error {
  constructor(
    readonly status: 400 | 404 | 409,
    readonly code: 'request.invalid' | 'resource.not_found' | 'resource.conflict',
    message: string,
    /** the request field at fault, when there is one */
    readonly field?: string,
  ) {
    super(message);
  }
}

export interface SessionPlan {
  snapshot: AgentSnapshot;
  budget: SessionBudget;
  /** the team's policy revision the snapshot's tool policy was composed at */
  policyVersion: number;
}

export async function planSession(
  db: Db,
  params: {
    teamId: string;
    agentId: string;
    agentVersion?: number;
    environmentId?: string | null;
    budget?: { max_cost_usd: number };
    fieldPrefix?: string;
    /**
     * the runtimes' capabilities: where each one's charges come from (a runtime missing here counts as priced), and
     * which deny rules it enforces (a team deny rule the agent's runtime would ignore refuses the start)
     */
    capabilities: Partial<Record<string, { cost: CostSource } & DenyCapability>>;
  },
): Promise<SessionPlan> {
  const field = (name: string) => `${params.fieldPrefix ?? 'body'}.${name}`;
  const found = await getAgent(db, { teamId: params.teamId, agentId: params.agentId, version: params.agentVersion });
  if (!found) {
    throw new SessionStartError(404, 'resource.not_found', `agent ${params.agentId}${params.agentVersion ? ` version ${params.agentVersion}` : ''} was not found`, field('agent'));
  }
  if (found.agent.archivedAt) throw new SessionStartError(409, 'resource.conflict', `agent ${found.agent.id} is archived`, field('agent'));
  if (params.environmentId && !(await getEnvironment(db, { teamId: params.teamId, environmentId: params.environmentId }))) {
    throw new SessionStartError(404, 'resource.not_found', `environment ${params.environmentId} was not found`, field('environment_id'));
  }
  const snapshot = toSnapshot({ agentId: found.agent.id, version: found.version.version, teamId: params.teamId, def: found.version.definition as AgentDefinition });
  // a pinned version fixes what the agent is (runtime, model, prompt, timeouts); what governs it (policy, separation
  // of duties, budget) is always the current version's, so pinning an old version never brings back an old policy
  if (found.version.version !== found.agent.currentVersion) {
    const current = await getAgent(db, { teamId: params.teamId, agentId: params.agentId });
    if (!current) throw new SessionStartError(404, 'resource.not_found', `agent ${params.agentId} was not found`, field('agent'));
    Object.assign(snapshot, governanceOf(current.version.definition as AgentDefinition));
  }
  const agentCap = snapshot.budget.max_cost_usd;
  if (params.budget && agentCap !== undefined && params.budget.max_cost_usd > agentCap) {
    throw new SessionStartError(400, 'request.invalid', `${field('budget.max_cost_usd')}: ${params.budget.max_cost_usd} exceeds the agent's cap of ${agentCap}`, field('budget.max_cost_usd'));
  }
  if ((params.capabilities[snapshot.runtime.type]?.cost ?? 'priced') === 'priced') await requirePrice(db, { teamId: params.teamId, model: snapshot.model, field: field('agent') });
  // the team's deny rules go on top of the agent's own; the revision orders later policy changes
  const team = await getTeamPolicy(db, params.teamId);
  checkTeamDeniesEnforceable(snapshot.runtime.type, params.capabilities?.[snapshot.runtime.type], team.rules, field('agent'));
  snapshot.toolPolicy = composePolicy(team.rules, snapshot.toolPolicy);
  return { snapshot, budget: { ...snapshot.budget, ...params.budget }, policyVersion: team.revision };
}

/** A team deny rule that the runtime would silently ignore must stop the session, not the rule. */
function checkTeamDeniesEnforceable(runtime: string, caps: DenyCapability | undefined, rules: Parameters<typeof unenforceableDenies>[1], field: string): void {
  if (!caps) return;
  const found = unenforceableDenies(caps, rules);
  if (found.length > 0) throw new SessionStartError(400, 'request.invalid', `${field}: ${describeUnenforceable(runtime, found)}`, field);
}

/** A session whose tokens would be priced at $0 for want of a price is refused: its budgets could never trip. */
async function requirePrice(db: Db, params: { teamId: string; model: string; field: string }): Promise<void> {
  const overrides = await loadPriceOverrides(db, { teamId: params.teamId, models: [params.model] });
  if (resolvePrice(params.model, overrides)) return;
  throw new SessionStartError(
    400,
    'request.invalid',
    `${params.field}: model ${params.model} has no price: set one with PUT /v1/pricing/${encodeURIComponent(params.model)} (0 is allowed)`,
    params.field,
  );
}

export interface SessionRecord {
  id: string;
  actor: Actor;
  plan: SessionPlan;
  environmentId: string | null;
  /** the sandbox the starting process is set to run sessions in (AGENTPLANE_SANDBOX); a worker without one lowers it */
  sandbox: SandboxKind;
  title: string | null;
  metadata: Record<string, string>;
  trigger: SessionTrigger;
  scheduleId?: string;
  scheduledAt?: Date;
  requestId?: string;
}

/** Writes the session row and its audit row once; `created` is false when the id was already taken. */
export async function recordSession(db: Db, record: SessionRecord): Promise<{ row: SessionRow; created: boolean }> {
  const { snapshot, budget } = record.plan;
  const inserted = await db.transaction(async (tx) => {
    const row = await insertSessionIfAbsent(tx, {
      id: record.id,
      teamId: record.actor.teamId,
      agentId: snapshot.agentId,
      agentVersion: snapshot.version,
      runtime: snapshot.runtime.type,
      environmentId: record.environmentId,
      sandbox: record.sandbox,
      title: record.title,
      metadata: record.metadata,
      status: 'idle',
      initiatorKeyId: record.actor.keyId,
      trigger: record.trigger,
      scheduleId: record.scheduleId ?? null,
      scheduledAt: record.scheduledAt ?? null,
      budget,
    });
    if (!row) return null;
    await appendAudit(tx, {
      teamId: record.actor.teamId,
      actorKeyId: record.actor.keyId,
      actorRole: record.actor.role,
      requestId: record.requestId ?? null,
      action: 'session.create',
      target: record.id,
      decision: 'ok',
      reason: record.trigger === 'schedule' ? `schedule ${record.scheduleId}` : 'sessions:write',
      data: { agent_id: snapshot.agentId, agent_version: snapshot.version, runtime: snapshot.runtime.type, sandbox: record.sandbox, ...(record.scheduleId ? { schedule_id: record.scheduleId } : {}) },
    });
    return row;
  });
  if (inserted) return { row: inserted, created: true };
  const existing = await getSession(db, { teamId: record.actor.teamId, sessionId: record.id });
  if (!existing) throw new Error(`session ${record.id} exists in another team`);
  return { row: existing, created: false };
}

/** The session workflow's input for a recorded session. */
export function sessionWorkflowInput(
  record: Pick<SessionRecord, 'id' | 'actor' | 'plan' | 'trigger'>,
  initialMessages: SessionWorkflowInput['initialMessages'],
): SessionWorkflowInput {
  const { plan } = record;
  return { sessionId: record.id, agent: plan.snapshot, initiator: record.actor, trigger: record.trigger, budget: plan.budget, initialMessages, policyVersion: plan.policyVersion };
}
