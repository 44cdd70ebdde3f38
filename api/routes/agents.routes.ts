import { createRoute, z } from '@hono/zod-openapi';
import { appendAudit } from '../../db/queries/audit';
import { archiveAgent, createAgent, getAgent, listAgents, listAgentVersions, updateAgent } from '../../db/queries/agents';
import { getCredential } from '../../db/queries/credentials';
import { bumpPolicyRevision, effectivePolicyFor, liveSessions } from '../../db/queries/policies';
import type { Db } from '../../db/client';
import { can } from '../../governance/permissions';
import type { Actor } from '../../governance/types';
import { policyUpdateSignal } from '../../workflows/definitions';
import type { EgressGuard } from '../../runtimes/kit/egress';
import { requires, type App, type AppDeps } from '../create-app';
import { ApiError, notFound } from '../errors';
import { AgentDefinitionSchema, AgentSchema, AgentUpdateSchema, changedPolicyFields, effectivePolicy, toAgentResponse, type AgentDefinition, type PolicyField } from '../schemas/agent.schema';
import { idParam, json, jsonBody, MAX_VERSION, page, PageQuery, problemResponses } from '../schemas/common';

const AgentId = idParam('agent_id', 'agent');
const tags = ['agents'];

export function registerAgentRoutes(app: App, deps: AppDeps): void {
  const { db } = deps;

  app.openapi(
    createRoute({ middleware: requires('agents:write'), method: 'post', path: '/v1/agents', tags, request: { body: jsonBody(AgentDefinitionSchema) }, responses: { 200: json(AgentSchema, 'The agent, version 1'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const def = c.req.valid('json');
      const policyFields = changedPolicyFields(null, def);
      requirePolicyPermission(actor, policyFields);
      checkEnforceable(def, deps.capabilities);
      await checkReferences(db, actor.teamId, def);
      await checkModelProviderUrl(def, deps.egress);
      const created = await db.transaction(async (tx) => {
        const result = await createAgent(tx, { teamId: actor.teamId, name: def.name, definition: def, keyId: actor.keyId });
        await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'agent.create', target: result.agent.id, decision: 'ok', reason: permissionsUsed(policyFields), data: { version: 1, ...policyData(policyFields) } });
        return result;
      });
      return c.json(toAgentResponse(created.agent, created.version), 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('agents:read'),
      method: 'get',
      path: '/v1/agents',
      tags,
      request: { query: PageQuery.extend({ include_archived: z.enum(['true', 'false']).default('false') }) },
      responses: { 200: json(page(AgentSchema, 'AgentPage'), 'Agents, newest first'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const q = c.req.valid('query');
      const rows = await listAgents(db, { teamId: actor.teamId, limit: q.limit, before: q.page, includeArchived: q.include_archived === 'true' });
      const data = rows.map((r) => toAgentResponse(r.agent, r.version));
      return c.json({ data, next_page: rows.length === q.limit ? (rows.at(-1)?.agent.id ?? null) : null }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('agents:read'),
      method: 'get',
      path: '/v1/agents/{agent_id}',
      tags,
      request: { params: AgentId, query: z.object({ version: z.coerce.number().int().positive().max(MAX_VERSION).optional() }) },
      responses: { 200: json(AgentSchema, 'The agent (current version unless one is asked for)'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const found = await getAgent(db, { teamId: actor.teamId, agentId: c.req.valid('param').agent_id, version: c.req.valid('query').version });
      if (!found) throw notFound('agent');
      return c.json(toAgentResponse(found.agent, found.version), 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('agents:write'),
      method: 'post',
      path: '/v1/agents/{agent_id}',
      tags,
      request: { params: AgentId, body: jsonBody(AgentUpdateSchema) },
      responses: { 200: json(AgentSchema, 'The agent at its new version'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const agentId = c.req.valid('param').agent_id;
      const { version: expectedVersion, ...changes } = c.req.valid('json');
      const current = await getAgent(db, { teamId: actor.teamId, agentId });
      if (!current) throw notFound('agent');
      const previous = current.version.definition as AgentDefinition;
      const merged = AgentDefinitionSchema.safeParse({ ...previous, ...changes });
      if (!merged.success) throw new ApiError(400, 'request.invalid', merged.error.issues.map((i) => `body.${i.path.join('.')}: ${i.message}`).join('; '));
      const policyFields = changedPolicyFields(previous, merged.data);
      requirePolicyPermission(actor, policyFields);
      checkEnforceable(merged.data, deps.capabilities);
      await checkReferences(db, actor.teamId, merged.data);
      await checkModelProviderUrl(merged.data, deps.egress);
      const result = await db.transaction(async (tx) => {
        // the merge (and the policy check above) was made on the version read: a version written since would be lost
        // under it, a policy tightened since among it, so the update lands only on that version
        const updated = await updateAgent(tx, { teamId: actor.teamId, agentId, name: merged.data.name, definition: merged.data, keyId: actor.keyId, expectedVersion: expectedVersion ?? current.version.version });
        if (updated.kind === 'ok') {
          // a policy change orders itself like PUT /v1/agents/{id}/policy, so running sessions take it at their next call
          const revision = policyFields.length > 0 ? await bumpPolicyRevision(tx, actor.teamId) : undefined;
          await appendAudit(tx, {
            ...auditActor(actor, c.get('requestId')),
            action: 'agent.update',
            target: agentId,
            decision: 'ok',
            reason: permissionsUsed(policyFields),
            data: { version: updated.version.version, ...policyData(policyFields), ...(revision === undefined ? {} : { revision }) },
          });
        }
        return updated;
      });
      if (result.kind === 'not_found') throw notFound('agent');
      if (result.kind === 'archived') throw new ApiError(409, 'resource.conflict', 'the agent is archived');
      if (result.kind === 'version_conflict') {
        throw new ApiError(
          409,
          'resource.conflict',
          expectedVersion === undefined
            ? `the agent changed to version ${result.current} while this update was made; send it again`
            : `version ${expectedVersion} is stale: the agent is at version ${result.current}`,
        );
      }
      if (policyFields.includes('tool_policy') || policyFields.includes('tools')) await pushPolicy(deps, actor.teamId, agentId);
      return c.json(toAgentResponse(result.agent, result.version), 200);
    },
  );

  app.openapi(
    createRoute({ middleware: requires('agents:write'), method: 'post', path: '/v1/agents/{agent_id}/archive', tags, request: { params: AgentId }, responses: { 200: json(AgentSchema, 'The archived agent'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const agentId = c.req.valid('param').agent_id;
      const archived = await db.transaction(async (tx) => {
        const row = await archiveAgent(tx, { teamId: actor.teamId, agentId });
        if (row) await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'agent.archive', target: agentId, decision: 'ok', reason: 'agents:write' });
        return row;
      });
      if (!archived) throw notFound('agent');
      const found = await getAgent(db, { teamId: actor.teamId, agentId });
      return c.json(toAgentResponse(found!.agent, found!.version), 200);
    },
  );

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/runtimes',
      tags: ['agents'],
      responses: {
        200: json(
          z.object({
            data: z.array(
              z.object({
                type: z.string(),
                approvals: z.boolean(),
                interrupt: z.boolean(),
                reattach: z.boolean(),
                cost: z.string(),
                streaming: z.boolean(),
                denies: z.enum(['any', 'whole-tool', 'none']).openapi({ description: 'which deny rules the runtime enforces: any, whole tools only (deny_tools), or none' }),
                sandbox: z.enum(['session', 'remote', 'no-process', 'none']).openapi({ description: "where a session's processes run: in the session's own sandbox, remotely at the vendor, nowhere (the runtime starts none), or on the worker without a sandbox (sessions marked sandbox none)" }),
                gateway: z.boolean().openapi({ description: "its model requests go through agentplane's model gateway: the runtime holds a session token, never the provider key, and every request is held on the budgets and charged from the provider's usage" }),
                portable: z.enum(['snapshot', 'remote', 'stateless', 'no']).openapi({ description: "how a session moves to another worker: snapshot (its runtime's state and workspace are snapshotted at every turn stop and restored there), remote (the vendor keeps it), stateless (nothing of it is on a worker), no (it continues only where its files are)" }),
                deny_tools: z.array(z.string()).optional().openapi({ description: 'for whole-tool: the canonical tools it can deny; its other tools cannot be denied' }),
              }),
            ),
          }),
          'Every runtime and what its adapter declares it can do',
        ),
        ...problemResponses,
      },
    }),
    (c) => c.json({ data: Object.entries(deps.capabilities).map(([type, { denyTools, ...caps }]) => ({ type, ...caps, ...(denyTools ? { deny_tools: [...denyTools] } : {}) })) }, 200),
  );

  app.openapi(
    createRoute({
      middleware: requires('agents:read'),
      method: 'get',
      path: '/v1/agents/{agent_id}/versions',
      tags,
      request: { params: AgentId },
      responses: { 200: json(page(AgentSchema, 'AgentVersionPage'), 'Every version, oldest first'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const found = await listAgentVersions(db, { teamId: actor.teamId, agentId: c.req.valid('param').agent_id });
      if (!found) throw notFound('agent');
      return c.json({ data: found.versions.map((v) => toAgentResponse(found.agent, v)), next_page: null }, 200);
    },
  );
}

/**
 * A policy must be one the runtime can enforce: a runtime without an approval hook cannot hold a call for a person,
 * so an `ask` for it would silently be an allow or a deny. Refuse it and say why.
 */
export function checkEnforceable(def: AgentDefinition, capabilities: AppDeps['capabilities']): void {
  const runtime = def.runtime?.type ?? 'opencode';
  if (capabilities[runtime]?.approvals !== false) return;
  const policy = effectivePolicy(def);
  const asks = policy.rules.some((r) => r.action === 'ask') || policy.default === 'ask';
  if (asks) {
    throw new ApiError(400, 'request.invalid', `body.tool_policy: the ${runtime} runtime has no approval hook, so "ask" cannot be enforced; use allow or deny`, [
      { name: 'body.tool_policy', reason: `runtime ${runtime} cannot hold a tool call for approval (capabilities.approvals is false)` },
    ]);
  }
}

/**
 * `agents:write` makes and changes agents; what governs them (the effective tool policy, separation of duties) also
 * takes `policies:write`, the permission of PUT /v1/agents/{id}/policy. Checked before anything is written.
 */
function requirePolicyPermission(actor: Actor, fields: PolicyField[]): void {
  if (fields.length === 0 || can(actor.role, 'policies:write')) return;
  const names = fields.map((f) => `body.${f}`);
  throw new ApiError(
    403,
    'auth.forbidden',
    `${names.join(', ')}: changing an agent's policy needs "policies:write", which role "${actor.role}" lacks`,
    names.map((name) => ({ name, reason: 'changing it needs "policies:write"' })),
  );
}

const permissionsUsed = (fields: PolicyField[]) => (fields.length > 0 ? 'agents:write, policies:write' : 'agents:write');
const policyData = (fields: PolicyField[]) => (fields.length > 0 ? { policy_fields: fields } : {});

/** Sends each live session of the team (or of one agent) the policy it now runs under. Ended sessions are skipped. */
export async function pushPolicy(deps: Pick<AppDeps, 'db' | 'temporal'>, teamId: string, agentId?: string): Promise<number> {
  let pushed = 0;
  for (const session of await liveSessions(deps.db, { teamId, agentId })) {
    const { policy, revision } = await effectivePolicyFor(deps.db, { teamId, agentId: session.agentId });
    try {
      await deps.temporal.workflow.getHandle(session.id).signal(policyUpdateSignal, { policy, version: revision });
      pushed += 1;
    } catch {
      // the workflow has ended; its row will say so
    }
  }
  return pushed;
}

/** A definition may only name credentials of the caller's team. */
async function checkReferences(db: Db, teamId: string, def: AgentDefinition): Promise<void> {
  const credentialId = def.model_provider?.credential_id;
  if (credentialId && !(await getCredential(db, { teamId, credentialId }))) {
    throw new ApiError(400, 'request.invalid', `body.model_provider.credential_id: credential ${credentialId} does not exist`, [
      { name: 'body.model_provider.credential_id', reason: 'no such credential in this team' },
    ]);
  }
}

/**
 * The model provider's URL is the tenant's choice, and the worker (or the runtime it starts) connects to it: it must
 * not point into the platform's network (see runtimes/kit/egress.ts). Checked again at the start of every turn.
 */
async function checkModelProviderUrl(def: AgentDefinition, egress: EgressGuard): Promise<void> {
  if (def.model_provider) await egress.checkUrl(def.model_provider.base_url, 'body.model_provider.base_url');
}

export function auditActor(actor: { keyId: string; role: string; teamId: string }, requestId: string) {
  return { teamId: actor.teamId, actorKeyId: actor.keyId, actorRole: actor.role, requestId };
}
