/**
 * Governance at invocation time, on real Temporal and Postgres: team budgets under concurrency, thresholds, live
 * policy (agent and team), the dry run, credential rotation and revocation, master-key rotation, spend reports.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../db/client';
import { createCredential, openCredential } from '../db/queries/credentials';
import { reserveBudget } from '../db/queries/budgets';
import { createVault, generateMasterKeySpec } from '../db/vault';
import { createHoldSweeper } from '../worker/hold-sweeper';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { eventsOf, eventually, startStack, waitForStatus, type Stack } from './support/stack';

let stack: Stack;
const sent: string[] = [];

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: createScriptedAdapter({ onPromptSent: (id) => sent.push(id) }) } });
});
afterAll(async () => {
  await stack?.stop();
});

async function agent(extra: Record<string, unknown> = {}) {
  const res = await stack.call('POST', '/v1/agents', { name: 'gov', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' }, ...extra });
  expect(res.status).toBe(200);
  return res.body.id as string;
}

async function session(agentId: string, text: string) {
  const res = await stack.call('POST', '/v1/sessions', { agent: agentId, initial_events: [{ type: 'user.message', content: text }] });
  expect(res.status).toBe(200);
  return res.body.id as string;
}

const query = async <T>(q: ReturnType<typeof sql>) => rowsOf<T>(await stack.db.db.execute(q));

describe('team budgets', () => {
  it('lets 20 concurrent sessions spend exactly what the team budget covers, and refuses the rest before sending', async () => {
    // a separate team, so this budget sees only these sessions
    const teamKey = await (await stack.newTeam()).key('admin');
    const agentRes = await stack.call('POST', '/v1/agents', { name: 'budgeted', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' }, budget: { turn_reserve_usd: 0.1 } }, teamKey);
    const budget = await stack.call('POST', '/v1/budgets', { scope: 'team', period: 'month', limit_usd: 0.5 }, teamKey);
    expect(budget.status).toBe(200);
    const sentBefore = sent.length;

    const ids = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const res = await stack.call('POST', '/v1/sessions', { agent: agentRes.body.id, initial_events: [{ type: 'user.message', content: `say run ${i}\ncost 0.1` }] }, teamKey);
        expect(res.status).toBe(200);
        return res.body.id as string;
      }),
    );
    const finals = await Promise.all(
      ids.map((id) => eventually(async () => {
        const s = (await stack.call('GET', `/v1/sessions/${id}`, undefined, teamKey)).body;
        return s.status === 'idle' && s.stop_reason ? s.stop_reason.type as string : undefined;
      }, { timeoutMs: 90_000 })),
    );
    expect(finals.filter((r) => r === 'end_turn')).toHaveLength(5);
    expect(finals.filter((r) => r === 'budget_reached')).toHaveLength(15);
    expect(sent.length - sentBefore).toBe(5); // refused turns never reached the runtime

    const [ledger] = await query<{ n: number; total: number; distinct_sources: number }>(
      sql`select count(*)::int as n, coalesce(sum(amount_micros),0)::bigint as total, count(distinct (session_id, source_id))::int as distinct_sources from ledger where session_id in ${sql.raw(`(${ids.map((i) => `'${i}'`).join(',')})`)}`,
    );
    expect(Number(ledger!.total)).toBe(500_000);
    expect(ledger!.n).toBe(5);
    expect(ledger!.distinct_sources).toBe(5);
    const window = (await stack.call('GET', '/v1/budgets', undefined, teamKey)).body.data[0].current;
    expect(window).toMatchObject({ spent_usd: 0.5, reserved_usd: 0, remaining_usd: 0 });
    // each refused session says which budget refused it
    const refusedEvents = await Promise.all(
      ids.map(async (id) => (await stack.call('GET', `/v1/sessions/${id}/events?limit=100`, undefined, teamKey)).body.data.filter((e: any) => e.type === 'budget.exceeded')),
    );
    expect(refusedEvents.filter((e) => e.length === 1)).toHaveLength(15);
    expect(refusedEvents.flat()[0]).toMatchObject({ budget_id: budget.body.id, scope: 'team', limit_usd: 0.5 });
  }, 120_000);

  it('records each threshold once in the session that crossed it', async () => {
    const teamKey = await (await stack.newTeam()).key('admin');
    const budget = await stack.call('POST', '/v1/budgets', { scope: 'team', period: 'day', limit_usd: 10, thresholds: [50, 80, 100] }, teamKey);
    expect(budget.status).toBe(200);
    const a = await stack.call('POST', '/v1/agents', { name: 'thresholds', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' }, budget: { turn_reserve_usd: 3 } }, teamKey);
    const s = await stack.call('POST', '/v1/sessions', { agent: a.body.id, initial_events: [{ type: 'user.message', content: 'cost 5.5' }] }, teamKey);
    await eventually(async () => ((await stack.call('GET', `/v1/sessions/${s.body.id}`, undefined, teamKey)).body.stop_reason?.type === 'end_turn' ? true : undefined));
    await stack.call('POST', `/v1/sessions/${s.body.id}/events`, { events: [{ type: 'user.message', content: 'cost 3' }] }, teamKey);
    await eventually(async () => {
      const events = (await stack.call('GET', `/v1/sessions/${s.body.id}/events?limit=100`, undefined, teamKey)).body.data;
      return events.filter((e: any) => e.type === 'budget.threshold').length === 2 ? events : undefined;
    });
    const events = (await stack.call('GET', `/v1/sessions/${s.body.id}/events?limit=100`, undefined, teamKey)).body.data;
    expect(events.filter((e: any) => e.type === 'budget.threshold').map((e: any) => e.percent)).toEqual([50, 80]);
  }, 60_000);

  it('releases a hold a killed turn left behind once its session is not running, with an audit row; a running session\'s hold stays', async () => {
    const team = await stack.newTeam();
    const teamKey = await team.key('admin');
    const budget = await stack.call('POST', '/v1/budgets', { scope: 'team', period: 'month', limit_usd: 1 }, teamKey);
    expect(budget.status).toBe(200);
    const a = await stack.call('POST', '/v1/agents', { name: 'orphans', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' } }, teamKey);
    const ended = await stack.call('POST', '/v1/sessions', { agent: a.body.id, initial_events: [{ type: 'user.message', content: 'say done' }] }, teamKey);
    const busy = await stack.call('POST', '/v1/sessions', { agent: a.body.id, initial_events: [{ type: 'user.message', content: 'say done' }] }, teamKey);
    for (const s of [ended, busy]) await eventually(async () => ((await stack.call('GET', `/v1/sessions/${s.body.id}`, undefined, teamKey)).body.stop_reason?.type === 'end_turn' ? true : undefined));
    // what a turn killed with its worker leaves: a hold taken, never settled; the busy session stands for one whose
    // turn is still being retried
    const now = new Date();
    for (const [s, id] of [[ended, 'orphan-of-ended'], [busy, 'hold-of-busy']] as const) {
      const held = await reserveBudget(stack.db.db, { reservationId: id, teamId: team.teamId, agentId: a.body.id, sessionId: s.body.id, amountMicros: 300_000, now });
      expect(held.ok).toBe(true);
    }
    await stack.db.db.execute(sql`update sessions set status = 'running' where id = ${busy.body.id}`);
    expect((await stack.call('GET', '/v1/budgets', undefined, teamKey)).body.data[0].current).toMatchObject({ reserved_usd: 0.6, remaining_usd: 0.4 });

    const sweeper = createHoldSweeper({ db: stack.db.db, maxAgeMs: 0 });
    // a hold younger than the age is left alone
    expect(await createHoldSweeper({ db: stack.db.db, maxAgeMs: 3_600_000 }).sweep()).toBe(0);
    expect(await sweeper.sweep()).toBe(1);
    expect((await stack.call('GET', '/v1/budgets', undefined, teamKey)).body.data[0].current).toMatchObject({ spent_usd: 0, reserved_usd: 0.3, remaining_usd: 0.7 });
    expect(await sweeper.sweep()).toBe(0);
    const [audit] = await query<{ actor_role: string; decision: string; reason: string }>(sql`select actor_role, decision, reason from audit_log where action = 'budget.release' and target = 'orphan-of-ended'`);
    expect(audit).toMatchObject({ actor_role: 'system', decision: 'ok', reason: expect.stringContaining('orphaned hold of $0.3 released') });
    const held = await query<{ id: string; status: string }>(sql`select id, status from reservations where id in ('orphan-of-ended', 'hold-of-busy') order by id`);
    expect(held).toEqual([
      { id: 'hold-of-busy', status: 'held' },
      { id: 'orphan-of-ended', status: 'settled' },
    ]);
    await stack.db.db.execute(sql`update sessions set status = 'idle' where id = ${busy.body.id}`);
  }, 60_000);
});

describe('live policy', () => {
  it('denies the next call of a running session after the agent policy changes, naming the rule, without a restart', async () => {
    const agentId = await agent({ tool_policy: { rules: [{ tool: 'bash', action: 'allow' }], default: 'deny' } });
    const id = await session(agentId, 'tool bash ls');
    await waitForStatus(stack, id, 'idle', 'end_turn');
    const changed = await stack.call('PUT', `/v1/agents/${agentId}/policy`, { tool_policy: { rules: [{ tool: 'bash', action: 'deny' }], default: 'deny' } });
    expect(changed.status).toBe(200);
    expect(changed.body.version).toBe(2);
    expect(changed.body.sessions_notified).toBeGreaterThanOrEqual(1);
    await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'tool bash ls' }] });
    await eventually(async () => ((await eventsOf(stack, id)).filter((e) => e.type === 'agent.tool_use').length === 2 ? true : undefined));
    const uses = (await eventsOf(stack, id)).filter((e) => e.type === 'agent.tool_use');
    expect(uses.map((u) => [u.evaluated_permission, u.evaluation.rule])).toEqual([
      ['allow', 'rules[0] bash → allow'],
      ['deny', 'rules[0] bash → deny'],
    ]);
    const [audit] = await query<{ decision: string; reason: string }>(sql`select decision, reason from audit_log where action = 'tool.evaluate' and target = ${`${id}/${uses[1].id}`}`);
    expect(audit).toEqual({ decision: 'deny', reason: 'rules[0] bash → deny' });
  });

  it('applies a team deny rule over an agent allow, in running and new sessions', async () => {
    const teamKey = await (await stack.newTeam()).key('admin');
    const a = await stack.call('POST', '/v1/agents', { name: 'team-rules', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [{ tool: 'web_fetch', action: 'allow' }], default: 'allow' } }, teamKey);
    const s = await stack.call('POST', '/v1/sessions', { agent: a.body.id, initial_events: [{ type: 'user.message', content: 'tool web_fetch https://example.com' }] }, teamKey);
    await eventually(async () => ((await stack.call('GET', `/v1/sessions/${s.body.id}`, undefined, teamKey)).body.stop_reason?.type === 'end_turn' ? true : undefined));
    const set = await stack.call('PUT', '/v1/policies/team', { rules: [{ tool: 'web_fetch', pattern: '*example.com*' }] }, teamKey);
    expect(set.status).toBe(200);
    await stack.call('POST', `/v1/sessions/${s.body.id}/events`, { events: [{ type: 'user.message', content: 'tool web_fetch https://example.com/x' }] }, teamKey);
    await eventually(async () => {
      const uses = (await stack.call('GET', `/v1/sessions/${s.body.id}/events?limit=100`, undefined, teamKey)).body.data.filter((e: any) => e.type === 'agent.tool_use');
      return uses.length === 2 ? uses : undefined;
    });
    const uses = (await stack.call('GET', `/v1/sessions/${s.body.id}/events?limit=100`, undefined, teamKey)).body.data.filter((e: any) => e.type === 'agent.tool_use');
    expect(uses[1]).toMatchObject({ evaluated_permission: 'deny', evaluation: { rule: 'team.rules[0] web_fetch "*example.com*" → deny' } });

    const dry = await stack.call('POST', '/v1/policies/evaluate', { agent_id: a.body.id, tool: 'web_fetch', input: { url: 'https://example.com/y' } }, teamKey);
    expect(dry.body).toMatchObject({ action: 'deny', rule: 'team.rules[0] web_fetch "*example.com*" → deny' });
    const other = await stack.call('POST', '/v1/policies/evaluate', { agent_id: a.body.id, tool: 'web_fetch', input: { url: 'https://docs.rs' } }, teamKey);
    expect(other.body).toMatchObject({ action: 'allow', rule: 'rules[0] web_fetch → allow' });
  });
});

describe('vault', () => {
  it('uses a rotated secret from the next turn and stops a session whose credential is revoked, with a clear error', async () => {
    const cred = await stack.call('POST', '/v1/credentials', { name: 'rotating', secret: 'sk-first-secret' });
    const agentId = await agent({ model_provider: { base_url: 'http://203.0.113.10/v1', credential_id: cred.body.id } });
    const id = await session(agentId, 'say one');
    await waitForStatus(stack, id, 'idle', 'end_turn');
    const rotated = await stack.call('POST', `/v1/credentials/${cred.body.id}/rotate`, { secret: 'sk-second-secret' });
    expect(rotated.body).toMatchObject({ secret_version: 2 });
    expect(JSON.stringify(rotated.body)).not.toContain('sk-second-secret');
    expect(await openCredential(stack.db.db, stack.vault, { teamId: stack.teamId, credentialId: cred.body.id })).toBe('sk-second-secret');

    const revoked = await stack.call('POST', `/v1/credentials/${cred.body.id}/revoke`);
    expect(revoked.status).toBe(200);
    await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'say two' }] });
    const stopped = await eventually(async () => {
      const s = (await stack.call('GET', `/v1/sessions/${id}`)).body;
      return s.stop_reason?.type === 'error' ? s : undefined;
    });
    expect(stopped.stop_reason.message).toContain(`credential ${cred.body.id} is missing or revoked`);
    expect((await eventsOf(stack, id)).some((e) => e.type === 'session.error')).toBe(true);
    const [use] = await query<{ n: number }>(sql`select count(*)::int as n from audit_log where action = 'credential.use' and target = ${cred.body.id}`);
    expect(use!.n).toBe(1);
  });

  it('rotates the master key without downtime: old records open, rewrap moves them to the new key', async () => {
    const oldSpec = generateMasterKeySpec('old');
    const newSpec = generateMasterKeySpec('new');
    const before = createVault(oldSpec);
    const { teamId } = await stack.newTeam();
    const created = await createCredential(stack.db.db, before, { teamId, name: 'mk', kind: 'api_key', secret: 'sk-master-rotation' });
    const both = createVault(`${newSpec},${oldSpec},${stack.masterKey}`); // every key that sealed something
    expect(await openCredential(stack.db.db, both, { teamId, credentialId: created.id })).toBe('sk-master-rotation');
    const { rewrapCredentials } = await import('../db/queries/credentials');
    expect((await rewrapCredentials(stack.db.db, both)).rewrapped).toBeGreaterThanOrEqual(1);
    const onlyNew = createVault(newSpec);
    expect(await openCredential(stack.db.db, onlyNew, { teamId, credentialId: created.id })).toBe('sk-master-rotation');
    await expect(openCredential(stack.db.db, before, { teamId, credentialId: created.id })).rejects.toThrow();
  });
});

describe('usage', () => {
  it('reports spend by agent and by model over a time range', async () => {
    const teamKey = await (await stack.newTeam()).key('admin');
    const a = await stack.call('POST', '/v1/agents', { name: 'usage', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' } }, teamKey);
    const s = await stack.call('POST', '/v1/sessions', { agent: a.body.id, initial_events: [{ type: 'user.message', content: 'cost 0.25\ncost 0.5' }] }, teamKey);
    await eventually(async () => ((await stack.call('GET', `/v1/sessions/${s.body.id}`, undefined, teamKey)).body.stop_reason?.type === 'end_turn' ? true : undefined));
    const byAgent = await stack.call('GET', '/v1/usage?group_by=agent', undefined, teamKey);
    expect(byAgent.body.data.find((r: any) => r.key === a.body.id)).toMatchObject({ cost_usd: 0.75, requests: 2 });
    const byModel = await stack.call('GET', '/v1/usage?group_by=model&bucket=day', undefined, teamKey);
    expect(byModel.body.data.find((r: any) => r.key === 'scripted').day).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    const future = await stack.call('GET', `/v1/usage?group_by=agent&from=${encodeURIComponent(new Date(Date.now() + 3600_000).toISOString())}`, undefined, teamKey);
    expect(future.body.data).toEqual([]);
  });
});
