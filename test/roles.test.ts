/**
 * Roles and versions, on the real stack: what only `policies:write` may change on an agent, what a pinned agent version
 * does and does not bring back, who creates teams and platform admin keys, and how the bootstrap key becomes (and
 * stays) the one platform admin. Each test is named after the attack it stops.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../db/client';
import { bootstrapAdmin, createApiKey, createTeam, findActiveKey } from '../db/queries/teams';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { createTestDatabase } from './support/postgres';
import { eventsOf, startStack, waitForStatus, type Stack } from './support/stack';

let stack: Stack;
let developer: string;
let approver: string;
let platformAdmin: string;

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: createScriptedAdapter() } });
  developer = await stack.key('developer');
  approver = await stack.key('approver');
  platformAdmin = await stack.key('platform_admin');
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

async function count(table: 'agents' | 'agent_versions' | 'teams' | 'api_keys'): Promise<number> {
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

describe('platform roles', () => {
  it('a tenant admin cannot create a team, nor learn from a 409 which team names are taken', async () => {
    const teams = await count('teams');
    for (const name of ['acme', `new ${Math.random().toString(36).slice(2)}`]) {
      const res = await stack.call('POST', '/v1/teams', { name });
      expect(res.status, name).toBe(403);
      expect(res.body).toMatchObject({ code: 'auth.forbidden', detail: expect.stringContaining('teams:create') });
    }
    expect(await count('teams')).toBe(teams);
    // the platform admin can, and only it hears that a name is taken
    const name = `platform made ${Math.random().toString(36).slice(2)}`;
    const created = await stack.call('POST', '/v1/teams', { name }, platformAdmin);
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    expect(created.body.admin_key.role).toBe('admin');
    expect((await stack.call('POST', '/v1/teams', { name }, platformAdmin)).status).toBe(409);
    // the new team's admin cannot make teams either
    expect((await stack.call('POST', '/v1/teams', { name: `${name} 2` }, created.body.admin_key.key)).status).toBe(403);
  });

  it('an admin cannot mint a platform_admin key', async () => {
    const keys = await count('api_keys');
    expectForbidden(await stack.call('POST', '/v1/keys', { name: 'escalate', role: 'platform_admin' }), 'body.role', 'teams:create');
    expect(await count('api_keys')).toBe(keys);
    const minted = await stack.call('POST', '/v1/keys', { name: 'second platform admin', role: 'platform_admin' }, platformAdmin);
    expect(minted.status, JSON.stringify(minted.body)).toBe(200);
    expect(minted.body.role).toBe('platform_admin');
  });
});

describe('the bootstrap key', () => {
  /** A fresh database, migrated, for one bootstrap story. */
  async function withDatabase(story: (db: Db) => Promise<void>) {
    const testDb = await createTestDatabase();
    const database = await openDatabase({ url: testDb.url });
    try {
      await story(database.db);
    } finally {
      await database.close();
      await testDb.drop();
    }
  }
  const roleOf = async (db: Db, plain: string) => (await findActiveKey(db, plain))?.role;

  it('is the platform admin, generated once or registered from AGENTPLANE_ADMIN_KEY', async () => {
    await withDatabase(async (db) => {
      const first = await bootstrapAdmin(db, undefined);
      expect(first.plain).toMatch(/^ap_/);
      expect(await roleOf(db, first.plain!)).toBe('platform_admin');
      expect(await bootstrapAdmin(db, undefined)).toEqual({ teamId: first.teamId, keyId: first.keyId, plain: null });
    });
    await withDatabase(async (db) => {
      const plain = `ap_operator_${Math.random().toString(36).slice(2)}`;
      const given = await bootstrapAdmin(db, plain);
      expect(await roleOf(db, plain)).toBe('platform_admin');
      expect(await bootstrapAdmin(db, plain)).toEqual(given);
    });
  });

  it('a default-team admin cannot become platform admin by naming a key "bootstrap admin": only the first start\'s key is raised', async () => {
    await withDatabase(async (db) => {
      // an installation bootstrapped before platform_admin: its generated key is an admin of the default team ...
      const team = await createTeam(db, { name: 'default' });
      const original = await createApiKey(db, { teamId: team.id, name: 'bootstrap admin', role: 'admin' });
      // ... whose admins later made a key with the same name
      const impostor = await createApiKey(db, { teamId: team.id, name: 'bootstrap admin', role: 'admin' });
      const started = await bootstrapAdmin(db, undefined);
      expect(started).toEqual({ teamId: team.id, keyId: original.key.id, plain: null });
      expect(await roleOf(db, original.plain)).toBe('platform_admin');
      expect(await roleOf(db, impostor.plain)).toBe('admin');
      const audit = (await db.execute(sql`select action, actor_role, data from audit_log where target = ${original.key.id}`)) as unknown as { rows: unknown[] };
      expect(audit.rows).toEqual([{ action: 'key.role', actor_role: 'system', data: { from: 'admin', to: 'platform_admin' } }]);

      // with the original revoked, the impostor is still not raised: a new key is made and shown once
      await db.execute(sql`update api_keys set revoked_at = now() where id = ${original.key.id}`);
      const again = await bootstrapAdmin(db, undefined);
      expect(again.keyId).not.toBe(impostor.key.id);
      expect(await roleOf(db, again.plain!)).toBe('platform_admin');
      expect(await roleOf(db, impostor.plain)).toBe('admin');
    });
  });

  it('a bootstrap key registered as admin from AGENTPLANE_ADMIN_KEY is raised when the same key is given again', async () => {
    await withDatabase(async (db) => {
      const team = await createTeam(db, { name: 'default' });
      const plain = `ap_operator_${Math.random().toString(36).slice(2)}`;
      await createApiKey(db, { teamId: team.id, name: 'bootstrap admin', role: 'admin', plain });
      await bootstrapAdmin(db, plain);
      expect(await roleOf(db, plain)).toBe('platform_admin');
    });
  });
});
