/**
 * Money: prices come from the platform (the team's overrides, else the pinned @pydantic/genai-prices catalogue),
 * never from a tenant; a runtime the platform runs is charged from its tokens, whatever cost it reports; no charge
 * is negative; a session whose tokens would cost nothing for want of a price does not start.
 *
 * The catalogue figures below are worked by hand from the library's bundled data (0.1.8), USD per million tokens:
 * gpt-4.1 input 2, cached input 0.5, output 8; claude-sonnet-4-5 input 3, cache read 0.3, cache write 3.75, output 15,
 * and above 200K prompt tokens 6 / 0.6 / 7.5 / 22.5; claude-sonnet-4-20250514 (claude-sonnet-4-0) 3 / 0.3 / 3.75 / 15.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../db/client';
import { decideCharge, priceUsageMicros, resolvePrice, type TokenUsage } from '../governance/pricing';
import { createManagedAgentsAdapter } from '../runtimes/managed-agents/managed-agents.adapter';
import { createOpenCodeAdapter } from '../runtimes/opencode/opencode.adapter';
import { startManagedAgentsFake, type ManagedAgentsFake } from './support/managed-agents-fake';
import { startScriptedModel, type ScriptedModel } from './support/scripted-model';
import { eventsOf, eventually, LOCAL_RECEIVERS, localEgress, startStack, waitForStatus, type Stack } from './support/stack';

const usage = (input: number, output: number, cacheRead = 0, cacheWrite = 0): TokenUsage => ({ input_tokens: input, output_tokens: output, cache_read_input_tokens: cacheRead, cache_creation_input_tokens: cacheWrite });

describe('the price table', () => {
  it('prices known models from the catalogue, cache tokens at their own rates', () => {
    // 1,000 uncached input, 2,000 cached, 500 output
    expect(priceUsageMicros(usage(1000, 500, 2000), 'gpt-4.1', {})).toBe(1000 * 2 + 2000 * 0.5 + 500 * 8);
    // 1,000 uncached, 10,000 cache reads, 2,000 cache writes, 500 output
    expect(priceUsageMicros(usage(1000, 500, 10_000, 2000), 'claude-sonnet-4-5', {})).toBe(1000 * 3 + 10_000 * 0.3 + 2000 * 3.75 + 500 * 15);
    // the library's README example: a 4,740-token prompt of which 4,735 written to the cache, 255 output
    expect(priceUsageMicros(usage(5, 255, 0, 4735), 'claude-sonnet-4-20250514', {})).toBe(Math.round(5 * 3 + 4735 * 3.75 + 255 * 15));
    // a provider-prefixed id finds the same entry
    expect(priceUsageMicros(usage(1000, 500), 'anthropic:claude-sonnet-4-5', {})).toBe(1000 * 3 + 500 * 15);
    expect(resolvePrice('claude-sonnet-4-20250514', {})).toMatchObject({ source: 'catalogue', price: { input: 3, output: 15, cache_read: 0.3, cache_write: 3.75 }, catalogue: { provider: 'anthropic', model: 'claude-sonnet-4-0', tiered: false } });
  });

  it('counts cache tokens into the prompt size that selects a tiered rate (agentplane input tokens are uncached only)', () => {
    // 150,000 uncached + 60,000 cached = a 210K prompt: above the 200K tier, every token at the higher rate
    expect(priceUsageMicros(usage(150_000, 1000, 60_000), 'claude-sonnet-4-5', {})).toBe(150_000 * 6 + 60_000 * 0.6 + 1000 * 22.5);
    expect(resolvePrice('claude-sonnet-4-5', {})?.catalogue).toMatchObject({ tiered: true });
  });

  it("a team's override beats the catalogue, and an unknown model has no price (not $0)", () => {
    const overrides = { 'gpt-4.1': { input: 1, output: 1 }, 'local-model': { input: 0, output: 0 } };
    expect(priceUsageMicros(usage(1000, 500, 2000), 'gpt-4.1', overrides)).toBe(1000 + 2000 * 1 + 500);
    expect(resolvePrice('gpt-4.1', overrides)).toMatchObject({ source: 'override', catalogue: null });
    expect(priceUsageMicros(usage(1000, 500), 'local-model', overrides)).toBe(0);
    expect(priceUsageMicros(usage(200, 40), 'made-up-model', {})).toBeNull();
    expect(resolvePrice('made-up-model', {})).toBeNull();
    // a request reported under another name is priced as the agent's model
    expect(priceUsageMicros(usage(1000, 500), ['made-up-model', 'gpt-4.1'], {})).toBe(1000 * 2 + 500 * 8);
  });

  it('a hostile model server cannot lower a charge with negative token counts', () => {
    expect(priceUsageMicros(usage(-1_000_000, 100), 'gpt-4.1', {})).toBe(100 * 8);
    expect(priceUsageMicros(usage(-1_000_000, 100), 'gpt-4.1', { 'gpt-4.1': { input: 2, output: 8 } })).toBe(100 * 8);
  });
});

describe('charges', () => {
  const base = { usage: usage(1000, 500), models: ['gpt-4.1'], overrides: {} };
  const priced = 1000 * 2 + 500 * 8;

  it('a remote runtime reporting a negative or non-numeric cost is charged 0, and the refusal is recorded', () => {
    expect(decideCharge({ ...base, costSource: 'reported', reportedUsd: -5 })).toMatchObject({ amountMicros: 0, refusal: 'negative_cost', reportedMicros: -5_000_000 });
    expect(decideCharge({ ...base, costSource: 'reported', reportedUsd: Number.NaN })).toMatchObject({ amountMicros: 0, refusal: 'invalid_cost' });
    expect(decideCharge({ ...base, costSource: 'reported', reportedUsd: 1e300 })).toMatchObject({ amountMicros: 0, refusal: 'invalid_cost' });
    expect(decideCharge({ ...base, costSource: 'reported', reportedUsd: 0.25 })).toMatchObject({ amountMicros: 250_000, costSource: 'reported', refusal: null });
  });

  it("a runtime the platform runs is charged from its tokens, not the cost it reports (a tenant's price, OpenClaw's zero default)", () => {
    expect(decideCharge({ ...base, costSource: 'priced', reportedUsd: 0 })).toMatchObject({ amountMicros: priced, costSource: 'priced', reportedMicros: 0, mismatch: false });
    expect(decideCharge({ ...base, costSource: 'priced', reportedUsd: -5 })).toMatchObject({ amountMicros: priced, mismatch: true, refusal: null });
    expect(decideCharge({ ...base, usage: usage(1_000_000, 0), costSource: 'priced', reportedUsd: 0 })).toMatchObject({ amountMicros: 2_000_000, mismatch: true });
    expect(decideCharge({ ...base, costSource: 'priced', reportedUsd: 0.006 })).toMatchObject({ amountMicros: priced, mismatch: false });
  });

  it('an unpriced model on a priced runtime is charged 0 and says so', () => {
    expect(decideCharge({ ...base, models: ['made-up-model'], costSource: 'priced' })).toMatchObject({ amountMicros: 0, refusal: 'unpriced_model' });
  });
});

describe('through the API', () => {
  let stack: Stack;
  let fake: ManagedAgentsFake;
  let model: ScriptedModel;

  beforeAll(async () => {
    fake = await startManagedAgentsFake({ heartbeatMs: 200 });
    model = await startScriptedModel();
    // the Managed Agents fake and the scripted model listen on 127.0.0.1
    stack = await startStack({ worker: false, allowPrivateEgress: LOCAL_RECEIVERS });
    await stack.startWorker({ 'managed-agents': createManagedAgentsAdapter({ settleMs: 50, egress: localEgress() }), opencode: createOpenCodeAdapter({ dataDir: stack.dataDir, sandboxes: stack.sandboxes }) });
  }, 120_000);
  afterAll(async () => {
    await stack?.stop();
    await fake?.close();
    await model?.close();
  }, 60_000);

  const query = async <T>(q: ReturnType<typeof sql>) => rowsOf<T>(await stack.db.db.execute(q));

  it('a developer cannot price their own sessions: runtime.config.cost is refused on create and on update', async () => {
    const developer = await stack.key('developer');
    const created = await stack.call('POST', '/v1/agents', { name: 'self-priced', model: 'gpt-4.1', runtime: { type: 'opencode', config: { cost: { input: 0, output: 0 } } } }, developer);
    expect(created.status).toBe(400);
    expect(created.body.invalid_params).toEqual([expect.objectContaining({ name: 'body.runtime.config.cost' })]);
    // made by an admin: a developer may not set its policy (policies:write), and openclaw cannot ask
    const agent = await stack.call('POST', '/v1/agents', { name: 'priced by the platform', model: 'gpt-4.1', runtime: { type: 'openclaw', config: {} }, tool_policy: { rules: [], default: 'allow' } });
    expect(agent.status).toBe(200);
    const updated = await stack.call('POST', `/v1/agents/${agent.body.id}`, { version: agent.body.version, runtime: { type: 'openclaw', config: { cost: { input: 0, output: 0 } } } }, developer);
    expect(updated.status).toBe(400);
    expect(updated.body.invalid_params).toEqual([expect.objectContaining({ name: 'body.runtime.config.cost' })]);
  });

  it('GET /v1/pricing answers the team overrides and, per ?model=, the price and where it comes from', async () => {
    const team = await stack.newTeam();
    const admin = await team.key('admin');
    const viewer = await team.key('viewer');
    expect((await stack.call('GET', '/v1/pricing', undefined, viewer)).body).toEqual({ overrides: {} });
    const catalogue = await stack.call('GET', '/v1/pricing?model=gpt-4.1', undefined, viewer);
    expect(catalogue.body.resolved).toEqual({ model: 'gpt-4.1', source: 'catalogue', price: { input: 2, output: 8, cache_read: 0.5 }, catalogue: { provider: 'openai', model: 'gpt-4.1', tiered: false } });
    await stack.price('gpt-4.1', { input: 1, output: 4 }, admin);
    const override = await stack.call('GET', '/v1/pricing?model=gpt-4.1', undefined, viewer);
    expect(override.body).toEqual({ overrides: { 'gpt-4.1': { input: 1, output: 4 } }, resolved: { model: 'gpt-4.1', source: 'override', price: { input: 1, output: 4 }, catalogue: null } });
    const none = await stack.call('GET', '/v1/pricing?model=made-up-model', undefined, viewer);
    expect(none.body.resolved).toEqual({ model: 'made-up-model', source: 'none', price: null, catalogue: null });
    // another team's override is not this team's price
    expect((await stack.call('GET', '/v1/pricing?model=gpt-4.1')).body.resolved.source).toBe('catalogue');
  });

  it('a session on a model without a price is refused before anything is written, until the team sets one (0 allowed)', async () => {
    const team = await stack.newTeam();
    const admin = await team.key('admin');
    const agent = await stack.call('POST', '/v1/agents', { name: 'unpriced', model: 'unpriced-model-7', runtime: { type: 'opencode', config: {} } }, admin);
    expect(agent.status).toBe(200);
    const refused = await stack.call('POST', '/v1/sessions', { agent: agent.body.id }, admin);
    expect(refused.status).toBe(400);
    expect(refused.body.detail).toContain('model unpriced-model-7 has no price');
    expect(refused.body.invalid_params).toEqual([expect.objectContaining({ name: 'body.agent' })]);
    const [written] = await query<{ sessions: number; audits: number }>(
      sql`select (select count(*)::int from sessions where team_id = ${team.teamId}) as sessions, (select count(*)::int from audit_log where team_id = ${team.teamId} and action = 'session.create') as audits`,
    );
    expect(written).toEqual({ sessions: 0, audits: 0 });
    // a schedule would start the same refused sessions
    const schedule = await stack.call('POST', '/v1/schedules', { agent: agent.body.id, prompt: 'nightly', spec: { cron: ['0 3 * * *'] } }, admin);
    expect(schedule.status).toBe(400);
    expect(schedule.body.detail).toContain('has no price');

    await stack.price('unpriced-model-7', { input: 0, output: 0 }, admin);
    const started = await stack.call('POST', '/v1/sessions', { agent: agent.body.id }, admin);
    expect(started.status, JSON.stringify(started.body)).toBe(200);
  });

  it('a remote Managed Agents server reporting a negative cost does not free team budget; the refusal is an event', { timeout: 120_000 }, async () => {
    // the stack's own team (its admin key is what eventsOf and waitForStatus read with); the only budget in this file
    const admin = stack.adminKey;
    const credential = await stack.call('POST', '/v1/credentials', { name: 'remote key', secret: fake.apiKey }, admin);
    const agent = await stack.call('POST', '/v1/agents', { name: 'remote', model: 'claude-sonnet-4-6', runtime: { type: 'managed-agents', config: {} }, model_provider: { base_url: fake.url, credential_id: credential.body.id } }, admin);
    expect(agent.status, JSON.stringify(agent.body)).toBe(200);
    expect((await stack.call('POST', '/v1/budgets', { scope: 'team', period: 'month', limit_usd: 10 }, admin)).status).toBe(200);
    fake.script('paid turn', [{ say: 'paid' }, { usage: { input: 100, output: 20, costUsd: 0.25 } }]);
    fake.script('refund turn', [{ say: 'refunded?' }, { span: { input: 100, output: 20, costUsd: -5 } }]);

    const session = await stack.call('POST', '/v1/sessions', { agent: agent.body.id, initial_events: [{ type: 'user.message', content: 'paid turn' }] }, admin);
    expect(session.status).toBe(200);
    const sessionId = session.body.id as string;
    await waitForStatus(stack, sessionId, 'idle', 'end_turn', 60_000);
    const before = (await stack.call('GET', '/v1/budgets', undefined, admin)).body.data[0].current;
    expect(before.spent_usd).toBeCloseTo(0.25, 9);

    const idles = async () => (await eventsOf(stack, sessionId)).filter((e) => e.type === 'session.status_idle').length;
    const idleBefore = await idles();
    expect((await stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.message', content: 'refund turn' }] }, admin)).status).toBe(200);
    await eventually(async () => ((await idles()) > idleBefore ? true : undefined), { timeoutMs: 60_000, what: 'the refund turn to end' });
    const events = await eventsOf(stack, sessionId);
    const refusal = events.find((e) => e.type === 'budget.charge_refused');
    expect(refusal).toMatchObject({ reason: 'negative_cost', model: 'claude-sonnet-4-6', reported_cost_usd: -5, charged_usd: 0 });
    expect(events.filter((e) => e.type === 'span.model_request_end').at(-1)).toMatchObject({ cost_usd: 0, reported_cost_usd: -5 });

    const after = (await stack.call('GET', '/v1/budgets', undefined, admin)).body.data[0].current;
    expect(after).toMatchObject({ spent_usd: before.spent_usd, reserved_usd: 0 });
    expect((await stack.call('GET', `/v1/sessions/${sessionId}`, undefined, admin)).body.usage.cost_usd).toBeCloseTo(0.25, 9);
    const [negative] = await query<{ n: number }>(sql`select count(*)::int as n from ledger where session_id = ${sessionId} and amount_micros < 0`);
    expect(negative!.n).toBe(0);
  });

  it("an agent saved with its own price (runtime.config.cost) is charged the team's price for its tokens on OpenCode", { timeout: 180_000 }, async () => {
    const admin = stack.adminKey;
    await stack.price('scripted-model', { input: 3, output: 15 }, admin);
    const credential = await stack.call('POST', '/v1/credentials', { name: 'model key', secret: 'sk-pricing-test-000111' }, admin);
    const agent = await stack.call('POST', '/v1/agents', { name: 'free ride', model: 'scripted-model', runtime: { type: 'opencode', config: {} }, model_provider: { base_url: model.openaiBaseUrl, credential_id: credential.body.id } }, admin);
    expect(agent.status).toBe(200);
    // as an agent written before the API refused the field: OpenCode would have reported $0 for every request
    await stack.db.db.execute(sql`update agent_versions set definition = jsonb_set(definition, '{runtime,config}', '{"cost": {"input": 0, "output": 0}}') where agent_id = ${agent.body.id}`);
    model.setScript([{ match: 'free ride', steps: [{ text: 'not free' }] }]);

    const session = await stack.call('POST', '/v1/sessions', { agent: agent.body.id, initial_events: [{ type: 'user.message', content: 'free ride' }] }, admin);
    expect(session.status).toBe(200);
    const sessionId = session.body.id as string;
    await waitForStatus(stack, sessionId, 'idle', 'end_turn', 120_000);
    const [ledger] = await query<{ n: number; micros: number; input: number; output: number; cache_read: number; cache_write: number; sources: string[] }>(
      sql`select count(*)::int as n, sum(amount_micros)::bigint as micros, sum(input_tokens)::bigint as input, sum(output_tokens)::bigint as output, sum(cache_read_tokens)::bigint as cache_read, sum(cache_creation_tokens)::bigint as cache_write, array_agg(distinct cost_source) as sources from ledger where session_id = ${sessionId}`,
    );
    expect(ledger!.n).toBeGreaterThan(0);
    expect(ledger!.sources).toEqual(['priced']);
    const expected = Number(ledger!.input) * 3 + Number(ledger!.output) * 15 + (Number(ledger!.cache_read) + Number(ledger!.cache_write)) * 3;
    expect(expected).toBeGreaterThan(0);
    expect(Number(ledger!.micros)).toBe(expected);
    await stack.call('POST', `/v1/sessions/${sessionId}/archive`, undefined, admin);
  });
});
