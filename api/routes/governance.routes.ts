/**
 * Governance that changes without a redeploy: budgets, price overrides, spend reports, team deny rules, an agent's
 * policy pushed to its running sessions, and a dry run that says what a policy would decide.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { and, eq, gte, lt, sql } from 'drizzle-orm';
import { getAgent, updateAgent } from '../../db/queries/agents';
import { appendAudit } from '../../db/queries/audit';
import { deleteBudget, listBudgets, upsertBudget } from '../../db/queries/budgets';
import { bumpPolicyRevision, effectivePolicyFor, getTeamPolicy, setTeamRules } from '../../db/queries/policies';
import { loadPriceOverrides, setPrice } from '../../db/queries/pricing';
import { ledger } from '../../db/schema/index';
import { BUDGET_PERIODS, DEFAULT_THRESHOLDS, microsToUsd, usdToMicros } from '../../governance/budget';
import { composePolicy, evaluatePolicy, POLICY_LIMITS, subjectKey } from '../../governance/policy';
import { resolvePrice } from '../../governance/pricing';
import type { CanonicalTool } from '../../governance/types';
import { requires, type App, type AppDeps } from '../create-app';
import { ApiError, notFound } from '../errors';
import { AgentDefinitionSchema, AgentSchema, PolicyPattern, toAgentResponse, ToolGlob, ToolPolicySchema, type AgentDefinition } from '../schemas/agent.schema';
import { idParam, json, jsonBody, problemResponses } from '../schemas/common';
import { auditActor, checkEnforceable, pushPolicy as pushPolicyToSessions } from './agents.routes';

const BudgetCreate = z.object({
  scope: z.enum(['team', 'agent']),
  agent_id: z.string().min(1).max(100).optional().openapi({ description: 'required for scope "agent"' }),
  period: z.enum(BUDGET_PERIODS as [string, ...string[]]).openapi({ description: 'calendar period in UTC: day, month, or total' }),
  limit_usd: z.number().positive().max(100_000_000),
  thresholds: z.array(z.number().int().min(1).max(100)).max(10).optional().openapi({ description: 'percentages that notify (default 50, 80, 100)' }),
});

const BudgetSchema = z
  .object({
    id: z.string(),
    type: z.literal('budget'),
    scope: z.string(),
    agent_id: z.string().nullable(),
    period: z.string(),
    limit_usd: z.number(),
    thresholds: z.array(z.number()),
    current: z.object({ period_start: z.string(), spent_usd: z.number(), reserved_usd: z.number(), remaining_usd: z.number() }),
  })
  .openapi('Budget');

const TeamRules = z.object({
  rules: z.array(z.object({ tool: ToolGlob, pattern: PolicyPattern.optional() })).max(200).openapi({ description: 'tools (and optional patterns) denied to every agent of the team' }),
});

const Price = z
  .object({ input: z.number().min(0).max(10_000), output: z.number().min(0).max(10_000), cache_read: z.number().min(0).max(10_000).optional(), cache_write: z.number().min(0).max(10_000).optional() })
  .openapi('ModelPrice', { description: 'USD per million tokens; cache_read and cache_write default to input' });

const ModelParam = z.string().min(1).max(200);

const PricingQuery = z.object({ model: ModelParam.optional().openapi({ description: 'also say what this model is priced at, and from where' }) });

const ResolvedPrice = z
  .object({
    model: z.string(),
    source: z.enum(['override', 'catalogue', 'none']).openapi({ description: "the team's override, else the catalogue (@pydantic/genai-prices), else none: sessions of runtimes that price tokens are refused" }),
    price: Price.nullable(),
    catalogue: z
      .object({ provider: z.string(), model: z.string(), tiered: z.boolean().openapi({ description: 'rates rise above a prompt size; `price` holds the base rates' }) })
      .nullable()
      .openapi({ description: 'the catalogue entry the price comes from' }),
  })
  .openapi('ResolvedPrice');

const UsageQuery = z.object({
  group_by: z.enum(['team', 'agent', 'session', 'model']).default('agent'),
  from: z.iso.datetime({ offset: true }).optional(),
  to: z.iso.datetime({ offset: true }).optional(),
  bucket: z.enum(['none', 'day']).default('none').openapi({ description: 'split each group by UTC day (for charts)' }),
});

const UsageRow = z.object({ key: z.string(), day: z.string().nullable(), cost_usd: z.number(), input_tokens: z.number(), output_tokens: z.number(), requests: z.number() });

const Evaluate = z.object({
  agent_id: z.string().min(1).max(100).optional().openapi({ description: "evaluate the agent's policy as its sessions now see it (team rules included)" }),
  tool_policy: ToolPolicySchema.optional().openapi({ description: 'or evaluate this policy' }),
  tool: z.string().min(1).max(200),
  input: z
    .record(z.string(), z.unknown())
    .default({})
    .superRefine((input, ctx) => {
      // a dry run is for trying rules on real commands; a longer subject only buys matching work
      const key = subjectKey(input);
      if (key !== null && (input[key] as string).length > POLICY_LIMITS.subjectLength) {
        ctx.addIssue({ code: 'custom', path: [key], message: `at most ${POLICY_LIMITS.subjectLength} characters` });
      }
    }),
});

export function registerGovernanceRoutes(app: App, deps: AppDeps): void {
  const { db } = deps;

  const pushPolicy = (teamId: string, agentId?: string) => pushPolicyToSessions(deps, teamId, agentId);

  app.openapi(
    createRoute({ middleware: requires('budgets:write'), method: 'post', path: '/v1/budgets', tags: ['governance'], request: { body: jsonBody(BudgetCreate) }, responses: { 200: json(BudgetSchema, 'The budget (created, or updated for the same scope and period)'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const body = c.req.valid('json');
      if (body.scope === 'agent') {
        if (!body.agent_id) throw new ApiError(400, 'request.invalid', 'body.agent_id: required when scope is "agent"', [{ name: 'body.agent_id', reason: 'required when scope is "agent"' }]);
        if (!(await getAgent(db, { teamId: actor.teamId, agentId: body.agent_id }))) throw new ApiError(404, 'resource.not_found', `agent ${body.agent_id} was not found`);
      }
      const budget = await db.transaction(async (tx) => {
        const row = await upsertBudget(tx, {
          teamId: actor.teamId,
          scope: body.scope,
          agentId: body.scope === 'agent' ? (body.agent_id as string) : '',
          period: body.period as 'day' | 'month' | 'total',
          limitMicros: usdToMicros(body.limit_usd),
          thresholds: [...new Set(body.thresholds ?? DEFAULT_THRESHOLDS)].sort((a, b) => a - b),
        });
        await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'budget.set', target: row.id, decision: 'ok', reason: 'budgets:write', data: { scope: body.scope, agent_id: body.agent_id ?? null, period: body.period, limit_usd: body.limit_usd } });
        return row;
      });
      const view = (await listBudgets(db, { teamId: actor.teamId, now: new Date() })).find((b) => b.budget.id === budget.id)!;
      return c.json(toBudget(view), 200);
    },
  );

  app.openapi(
    createRoute({ middleware: requires('budgets:read'), method: 'get', path: '/v1/budgets', tags: ['governance'], responses: { 200: json(z.object({ data: z.array(BudgetSchema), next_page: z.null() }), 'Budgets with the current window'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const rows = await listBudgets(db, { teamId: actor.teamId, now: new Date() });
      return c.json({ data: rows.map(toBudget), next_page: null }, 200);
    },
  );

  app.openapi(
    createRoute({ middleware: requires('budgets:write'), method: 'delete', path: '/v1/budgets/{budget_id}', tags: ['governance'], request: { params: idParam('budget_id', 'bud') }, responses: { 200: json(z.object({ id: z.string(), deleted: z.literal(true) }), 'Deleted'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const budgetId = c.req.valid('param').budget_id;
      const deleted = await db.transaction(async (tx) => {
        const ok = await deleteBudget(tx, { teamId: actor.teamId, budgetId });
        if (ok) await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'budget.delete', target: budgetId, decision: 'ok', reason: 'budgets:write' });
        return ok;
      });
      if (!deleted) throw notFound('budget');
      return c.json({ id: budgetId, deleted: true as const }, 200);
    },
  );

  app.openapi(
    createRoute({ middleware: requires('budgets:read'), method: 'get', path: '/v1/usage', tags: ['governance'], request: { query: UsageQuery }, responses: { 200: json(z.object({ group_by: z.string(), from: z.string().nullable(), to: z.string().nullable(), data: z.array(UsageRow) }), 'Spend from the ledger'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const q = c.req.valid('query');
      const column = { team: ledger.teamId, agent: ledger.agentId, session: ledger.sessionId, model: ledger.model }[q.group_by];
      const where = [eq(ledger.teamId, actor.teamId)];
      if (q.from) where.push(gte(ledger.createdAt, new Date(q.from)));
      if (q.to) where.push(lt(ledger.createdAt, new Date(q.to)));
      // without buckets every row gets the same constant day, which Postgres cannot GROUP BY: group by the key alone
      const day = q.bucket === 'day' ? sql<string>`to_char(date_trunc('day', ${ledger.createdAt} at time zone 'UTC'), 'YYYY-MM-DD')` : sql<string>`min(null::text)`;
      const rows = await db
        .select({
          key: column,
          day,
          micros: sql<number>`sum(${ledger.amountMicros})::bigint`,
          input: sql<number>`sum(${ledger.inputTokens})::bigint`,
          output: sql<number>`sum(${ledger.outputTokens})::bigint`,
          requests: sql<number>`count(*)::int`,
        })
        .from(ledger)
        .where(and(...where))
        .groupBy(...(q.bucket === 'day' ? [column, day] : [column]))
        .orderBy(...(q.bucket === 'day' ? [day, column] : [column]));
      return c.json(
        {
          group_by: q.group_by,
          from: q.from ?? null,
          to: q.to ?? null,
          data: rows.map((r) => ({ key: r.key, day: r.day, cost_usd: microsToUsd(Number(r.micros)), input_tokens: Number(r.input), output_tokens: Number(r.output), requests: Number(r.requests) })),
        },
        200,
      );
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('budgets:read'),
      method: 'get',
      path: '/v1/pricing',
      tags: ['governance'],
      request: { query: PricingQuery },
      responses: {
        200: json(
          z.object({ overrides: z.record(z.string(), Price).openapi({ description: "the team's prices by model" }), resolved: ResolvedPrice.optional().openapi({ description: 'with ?model=: its price and where it comes from' }) }),
          'USD per million tokens',
        ),
        ...problemResponses,
      },
    }),
    async (c) => {
      const actor = c.get('actor');
      const { model } = c.req.valid('query');
      const overrides = await loadPriceOverrides(db, { teamId: actor.teamId });
      if (model === undefined) return c.json({ overrides }, 200);
      const found = resolvePrice(model, overrides);
      const resolved = found ? { model, source: found.source, price: found.price, catalogue: found.catalogue } : { model, source: 'none' as const, price: null, catalogue: null };
      return c.json({ overrides, resolved }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('budgets:write'),
      method: 'put',
      path: '/v1/pricing/{model}',
      tags: ['governance'],
      request: { params: z.object({ model: ModelParam.openapi({ param: { name: 'model', in: 'path' } }) }), body: jsonBody(Price) },
      responses: { 200: json(z.object({ model: z.string(), price: Price }), 'The override, used from the next turn'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const { model } = c.req.valid('param');
      const price = c.req.valid('json');
      await db.transaction(async (tx) => {
        await setPrice(tx, { teamId: actor.teamId, model, price });
        await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'pricing.set', target: model, decision: 'ok', reason: 'budgets:write', data: price });
      });
      return c.json({ model, price }, 200);
    },
  );

  app.openapi(
    createRoute({ middleware: requires('agents:read'), method: 'get', path: '/v1/policies/team', tags: ['governance'], responses: { 200: json(TeamRules.extend({ revision: z.number().int() }), "The team's deny rules"), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const team = await getTeamPolicy(db, actor.teamId);
      return c.json({ rules: team.rules, revision: team.revision }, 200);
    },
  );

  app.openapi(
    createRoute({ middleware: requires('policies:write'), method: 'put', path: '/v1/policies/team', tags: ['governance'], request: { body: jsonBody(TeamRules) }, responses: { 200: json(TeamRules.extend({ revision: z.number().int(), sessions_notified: z.number().int() }), 'Applied to every running session'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const { rules } = c.req.valid('json');
      const revision = await db.transaction(async (tx) => {
        const next = await setTeamRules(tx, { teamId: actor.teamId, rules });
        await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'policy.team.set', target: actor.teamId, decision: 'ok', reason: 'policies:write', data: { rules, revision: next } });
        return next;
      });
      return c.json({ rules, revision, sessions_notified: await pushPolicy(actor.teamId) }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('policies:write'),
      method: 'put',
      path: '/v1/agents/{agent_id}/policy',
      tags: ['governance'],
      request: { params: idParam('agent_id', 'agent'), body: jsonBody(z.object({ tool_policy: ToolPolicySchema })) },
      responses: { 200: json(AgentSchema.extend({ sessions_notified: z.number().int() }), 'A new agent version; running sessions use it from their next tool decision'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const agentId = c.req.valid('param').agent_id;
      const current = await getAgent(db, { teamId: actor.teamId, agentId });
      if (!current) throw notFound('agent');
      const definition = AgentDefinitionSchema.parse({ ...(current.version.definition as AgentDefinition), tool_policy: c.req.valid('json').tool_policy });
      checkEnforceable(definition, deps.capabilities);
      const result = await db.transaction(async (tx) => {
        const updated = await updateAgent(tx, { teamId: actor.teamId, agentId, name: definition.name, definition, keyId: actor.keyId });
        if (updated.kind !== 'ok') return updated;
        const revision = await bumpPolicyRevision(tx, actor.teamId);
        await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'policy.agent.set', target: agentId, decision: 'ok', reason: 'policies:write', data: { version: updated.version.version, revision, tool_policy: definition.tool_policy } });
        return updated;
      });
      if (result.kind === 'archived') throw new ApiError(409, 'resource.conflict', 'the agent is archived');
      if (result.kind !== 'ok') throw notFound('agent');
      const notified = await pushPolicy(actor.teamId, agentId);
      return c.json({ ...toAgentResponse(result.agent, result.version), sessions_notified: notified }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('agents:read'),
      method: 'post',
      path: '/v1/policies/evaluate',
      tags: ['governance'],
      request: { body: jsonBody(Evaluate) },
      responses: { 200: json(z.object({ action: z.enum(['allow', 'ask', 'deny']), rule: z.string(), rule_index: z.number().int().nullable(), policy_version: z.number().int().nullable() }), 'What the policy would decide, and by which rule'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const body = c.req.valid('json');
      let policy = body.tool_policy;
      let version: number | null = null;
      if (body.agent_id) {
        if (!(await getAgent(db, { teamId: actor.teamId, agentId: body.agent_id }))) throw new ApiError(404, 'resource.not_found', `agent ${body.agent_id} was not found`);
        const live = await effectivePolicyFor(db, { teamId: actor.teamId, agentId: body.agent_id });
        policy = live.policy;
        version = live.revision;
      } else if (policy) {
        const team = await getTeamPolicy(db, actor.teamId);
        policy = composePolicy(team.rules, policy);
        version = team.revision;
      } else {
        throw new ApiError(400, 'request.invalid', 'body.agent_id: agent_id or tool_policy is required', [{ name: 'body.agent_id', reason: 'agent_id or tool_policy is required' }]);
      }
      const decision = evaluatePolicy(policy, body.tool as CanonicalTool, body.input);
      return c.json({ action: decision.action, rule: decision.reason, rule_index: decision.ruleIndex, policy_version: version }, 200);
    },
  );
}

function toBudget(view: Awaited<ReturnType<typeof listBudgets>>[number]) {
  const { budget } = view;
  return {
    id: budget.id,
    type: 'budget' as const,
    scope: budget.scope,
    agent_id: budget.agentId || null,
    period: budget.period,
    limit_usd: microsToUsd(budget.limitMicros),
    thresholds: budget.thresholds as number[],
    current: {
      period_start: view.periodStart.toISOString(),
      spent_usd: microsToUsd(view.spentMicros),
      reserved_usd: microsToUsd(view.reservedMicros),
      remaining_usd: microsToUsd(Math.max(0, budget.limitMicros - view.spentMicros - view.reservedMicros)),
    },
  };
}
