/**
 * Roles and versions, on the real stack: what only `policies:write` may change on an agent, and what a pinned agent
 * version does and does not bring back. Each test is named after the attack it stops.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScriptedAdapter } from '../runtimes/scripted.adapter';
import { eventsOf, startStack, waitForStatus, type Stack } from './support/stack';

let stack: Stack;
let developer: string;
let approver: string;

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: createScriptedAdapter() } });
  developer = await stack.key('developer');
  approver = await stack.key('approver');
});
afterAll(async () => {
  await stack?.stop();
});

const ALLOW_ALL = { rules: [], default: 'allow' };
const STRICT = { rules: [{ tool: 'write', action: 'ask' }], default: 'deny' };

function definition(extra: Record<string, unknown> = {}) {
  return { name: 'roles test agent', model: 'scripted', runtime: { type: 'scripted' }, ...extra };
}

/** An agent made by the stack's admin key (which holds policies:write). */
async function adminAgent(extra: Record<string, unknown> = {}): Promise<string> {
  const res = await stack.call('POST', '/v1/agents', definition(extra));
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.id;
}

async function count(table: 'agents' | 'agent_versions'): Promise<number> {
  const result = (await stack.db.db.execute(sql`select count(*)::int as n from ${sql.identifier(table)}`)) as unknown as { rows: Array<{ n: number }> };
  return result.rows[0]!.n;
}

/** A 403 naming the field and the permission, as the API gives it. */
function expectForbidden(res: { status: number; body: any }, field: string, permission: string) {
  expect(res.status, JSON.stringify(res.body)).toBe(403);
  expect(res.body.code).toBe('auth.forbidden');
  expect(res.body.detail).toContain(field);
  expect(res.body.detail).toContain(permission);
  expect(res.body.invalid_params.map((p: { name: string }) => p.name)).toContain(field);
}

const toolUses = async (sessionId: string) => (await eventsOf(stack, sessionId)).filter((e) => e.type === 'agent.tool_use');

describe('policy fields need policies:write', () => {
  it("a developer key cannot loosen an agent's tool policy through POST /v1/agents", async () => {
    const before = await count('agents');
    expectForbidden(await stack.call('POST', '/v1/agents', definition({ tool_policy: ALLOW_ALL }), developer), 'body.tool_policy', 'policies:write');
    expect(await count('agents')).toBe(before);
    // without policy fields the agent gets the default policy, which agents:write alone may make
    const plain = await stack.call('POST', '/v1/agents', definition(), developer);
    expect(plain.status).toBe(200);
    expect(plain.body.tool_policy).toEqual({ rules: [], default: 'ask' });
    // the same policy sent explicitly is no change either
    expect((await stack.call('POST', '/v1/agents', definition({ tool_policy: { rules: [], default: 'ask' } }), developer)).status).toBe(200);
  });

  it("a developer key cannot loosen an agent's tool policy through the Managed Agents toolset in tools, on create or update", async () => {
    // a toolset without permission settings allows everything
    const toolset = [{ type: 'agent_toolset_20250822' }];
    const before = await count('agents');
    expectForbidden(await stack.call('POST', '/v1/agents', definition({ tools: toolset }), developer), 'body.tools', 'policies:write');
    expect(await count('agents')).toBe(before);

    const agentId = await adminAgent();
    const versions = await count('agent_versions');
    expectForbidden(await stack.call('POST', `/v1/agents/${agentId}`, { tools: toolset }, developer), 'body.tools', 'policies:write');
    expect(await count('agent_versions')).toBe(versions);
    // behind a tool_policy the toolset settings decide nothing, so adding them changes no policy
    const governed = await adminAgent({ tool_policy: STRICT });
    const res = await stack.call('POST', `/v1/agents/${governed}`, { tools: toolset }, developer);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.tool_policy).toEqual(STRICT);
  });

  it("a developer key cannot loosen an agent's tool policy through POST /v1/agents/{id}", async () => {
    const agentId = await adminAgent({ tool_policy: STRICT });
    const versions = await count('agent_versions');
    expectForbidden(await stack.call('POST', `/v1/agents/${agentId}`, { tool_policy: ALLOW_ALL }, developer), 'body.tool_policy', 'policies:write');
    expect(await count('agent_versions')).toBe(versions);
    const current = await stack.call('GET', `/v1/agents/${agentId}`);
    expect(current.body).toMatchObject({ version: 1, tool_policy: STRICT });
    // sending the policy back unchanged with another change is allowed: only a change needs the permission
    const unchanged = await stack.call('POST', `/v1/agents/${agentId}`, { description: 'reworded', tool_policy: STRICT }, developer);
    expect(unchanged.status, JSON.stringify(unchanged.body)).toBe(200);
    expect(unchanged.body).toMatchObject({ version: 2, description: 'reworded', tool_policy: STRICT });
  });

  it('a developer key cannot set or turn off separation of duties', async () => {
    expectForbidden(
      await stack.call('POST', '/v1/agents', definition({ approvals: { separation_of_duties: true } }), developer),
      'body.approvals.separation_of_duties',
      'policies:write',
    );
    const agentId = await adminAgent({ approvals: { separation_of_duties: true } });
    expectForbidden(
      await stack.call('POST', `/v1/agents/${agentId}`, { approvals: { separation_of_duties: false } }, developer),
      'body.approvals.separation_of_duties',
      'policies:write',
    );
    expect((await stack.call('GET', `/v1/agents/${agentId}`)).body).toMatchObject({ version: 1, approvals: { separation_of_duties: true } });
  });

  it('a policy loosened or tightened through POST /v1/agents/{id} governs the sessions already running, not only new ones', async () => {
    const agentId = await adminAgent({ tool_policy: ALLOW_ALL });
    const started = await stack.call('POST', '/v1/sessions', { agent: agentId });
    expect(started.status).toBe(200);
    const sessionId = started.body.id;
    const updated = await stack.call('POST', `/v1/agents/${agentId}`, { tool_policy: { rules: [{ tool: 'write', action: 'deny' }], default: 'allow' } });
    expect(updated.status, JSON.stringify(updated.body)).toBe(200);
    await stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.message', content: `tool write /tmp/roles-${Math.random().toString(36).slice(2)}.md\nsay done` }] });
    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
    expect((await toolUses(sessionId)).map((e) => e.evaluated_permission)).toEqual(['deny']);
    // the change is audited as a policy change, with the revision it was ordered at
    const audit = await stack.call('GET', `/v1/audit?target=${agentId}&action=agent.update`);
    expect(audit.body.data[0]).toMatchObject({ reason: 'agents:write, policies:write', data: { version: 2, policy_fields: ['tool_policy'], revision: expect.any(Number) } });
  });
});

describe('pinned versions', () => {
  it("a session pinned to v1 runs v3's tool policy, cost cap and separation of duties", async () => {
    // v1: everything allowed, $5 a session, anyone approves
    const agentId = await adminAgent({ tool_policy: ALLOW_ALL, budget: { max_cost_usd: 5 } });
    // v2: writes need a person (not the initiator), everything else is denied, $1 a session
    const v2 = await stack.call('POST', `/v1/agents/${agentId}`, { tool_policy: STRICT, budget: { max_cost_usd: 1 }, approvals: { separation_of_duties: true } });
    expect(v2.status, JSON.stringify(v2.body)).toBe(200);
    // v3: a change that is not governance
    expect((await stack.call('POST', `/v1/agents/${agentId}`, { description: 'v3' }, developer)).body.version).toBe(3);
    const pinned = { type: 'agent', id: agentId, version: 1 };

    // the cap is the current one
    const over = await stack.call('POST', '/v1/sessions', { agent: pinned, budget: { max_cost_usd: 3 } });
    expect(over.status).toBe(400);
    expect(over.body.invalid_params.map((p: { name: string }) => p.name)).toEqual(['body.budget.max_cost_usd']);
    expect(over.body.detail).toContain('cap of 1');

    const started = await stack.call('POST', '/v1/sessions', { agent: pinned, initial_events: [{ type: 'user.message', content: `tool write /tmp/pinned-${Math.random().toString(36).slice(2)}.md\nsay written` }] });
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    // it runs version 1 (what the agent is), under the current version's governance
    expect(started.body.agent.version).toBe(1);
    expect(started.body.budget).toEqual({ max_cost_usd: 1 });
    const waiting = await waitForStatus(stack, started.body.id, 'requires_action');
    const toolUseId = waiting.pending_approvals[0].tool_use_id;
    // separation of duties: the initiator may not decide
    const self = await stack.call('POST', `/v1/sessions/${started.body.id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: toolUseId, result: 'allow' }] });
    expect(self.status).toBe(403);
    expect(self.body.code).toBe('approval.self_approval');
    const other = await stack.call('POST', `/v1/sessions/${started.body.id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: toolUseId, result: 'deny' }] }, approver);
    expect(other.status).toBe(200);
    await waitForStatus(stack, started.body.id, 'idle', 'end_turn');
  });
});
