/**
 * The Managed Agents contract fake, checked with the official `@anthropic-ai/sdk`: if the SDK accepts the fake's
 * shapes (REST, PageCursor, SSE frames), the adapter tested against it speaks the real protocol.
 */
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startManagedAgentsFake, type ManagedAgentsFake } from './support/managed-agents-fake';

let fake: ManagedAgentsFake;
let client: Anthropic;

beforeAll(async () => {
  fake = await startManagedAgentsFake({ heartbeatMs: 100 });
  client = new Anthropic({ baseURL: fake.url, apiKey: fake.apiKey });
});
afterAll(async () => {
  await fake?.close();
});

async function setUp(permission: 'always_ask' | 'always_allow') {
  const agent = await client.beta.agents.create({
    name: 'fake agent',
    model: 'claude-sonnet-4-6',
    system: 'Be brief.',
    tools: [{ type: 'agent_toolset_20260401', default_config: { permission_policy: { type: permission } } }],
  });
  const environment = await client.beta.environments.create({ name: 'env', config: { type: 'cloud', networking: { type: 'unrestricted' } } });
  const session = await client.beta.sessions.create({ agent: agent.id, environment_id: environment.id, title: 'fake session' });
  return { agent, environment, session };
}

/** follows the stream until the turn ends, answering each confirmation with the next decision */
async function runFlow(sessionId: string, prompt: string, decisions: Array<'allow' | 'deny'>) {
  const seen: any[] = [];
  const stream = await client.beta.sessions.events.stream(sessionId);
  const consumed = (async () => {
    for await (const event of stream as AsyncIterable<any>) {
      seen.push(event);
      if (event.type === 'session.status_idle' && event.stop_reason.type === 'requires_action') {
        const result = decisions.shift()!;
        await client.beta.sessions.events.send(sessionId, {
          events: event.stop_reason.event_ids.map((tool_use_id: string) => ({ type: 'user.tool_confirmation', tool_use_id, result, ...(result === 'deny' ? { deny_message: 'no' } : {}) })),
        });
      }
      if (event.type === 'session.status_idle' && event.stop_reason.type !== 'requires_action') break;
    }
  })();
  await client.beta.sessions.events.send(sessionId, { events: [{ type: 'user.message', content: [{ type: 'text', text: prompt }] }] });
  await consumed;
  stream.controller.abort();
  return seen;
}

describe('the Managed Agents fake, driven by the official SDK', () => {
  it('refuses calls without the key or the beta header', async () => {
    const noKey = await fetch(`${fake.url}/v1/agents`, { headers: { 'anthropic-beta': 'managed-agents-2026-04-01' } });
    expect(noKey.status).toBe(401);
    const noBeta = await fetch(`${fake.url}/v1/agents`, { headers: { 'x-api-key': fake.apiKey } });
    expect(noBeta.status).toBe(400);
    await expect(new Anthropic({ baseURL: fake.url, apiKey: 'wrong' }).beta.agents.list().then((p) => p.data)).rejects.toThrow(/401/);
  });

  it('runs an allow flow: tool use asked, confirmed, result, usage with list_cost', async () => {
    fake.script('allow me', [
      { think: 'planning' },
      { tool: 'bash', input: { command: 'ls' }, result: 'a b c' },
      { usage: { input: 1000, output: 200, costUsd: 0.0123 } },
      { say: 'listed' },
    ]);
    const { agent, session } = await setUp('always_ask');
    expect(agent.id).toMatch(/^agent_/);
    expect(session.status).toBe('idle');
    expect((await client.beta.agents.retrieve(agent.id)).name).toBe('fake agent');

    const seen = await runFlow(session.id, 'allow me', ['allow']);
    const types = seen.map((e) => e.type);
    expect(types).toEqual([
      'user.message',
      'session.status_running',
      'agent.thinking',
      'agent.tool_use',
      'session.status_idle',
      'user.tool_confirmation',
      'session.status_running',
      'agent.tool_result',
      'span.model_request_start',
      'span.model_request_end',
      'session.usage',
      'agent.message',
      'session.status_idle',
    ]);
    const use = seen.find((e) => e.type === 'agent.tool_use');
    expect(use).toMatchObject({ name: 'bash', input: { command: 'ls' }, evaluated_permission: 'ask' });
    expect(seen.find((e) => e.type === 'agent.tool_result')).toMatchObject({ tool_use_id: use.id, is_error: false, content: [{ type: 'text', text: 'a b c' }] });
    expect(seen.find((e) => e.type === 'session.usage').usage.list_cost).toEqual({ amount: '0.012300', currency: 'USD' });

    const listed: any[] = [];
    for await (const event of client.beta.sessions.events.list(session.id, { limit: 4 })) listed.push(event);
    expect(listed.map((e) => e.id)).toEqual(seen.map((e) => e.id));
    const retrieved = await client.beta.sessions.retrieve(session.id);
    expect(retrieved.status).toBe('idle');
    expect(retrieved.usage.list_cost?.amount).toBe('0.012300');
    expect(fake.countPrompts('allow me')).toBe(1);
    await client.beta.sessions.archive(session.id);
  });

  it('runs a deny flow, and always_allow runs tools without asking', async () => {
    fake.script('deny me', [{ tool: 'bash', input: { command: 'rm -rf /' } }, { say: 'refused' }]);
    const asked = await setUp('always_ask');
    const seen = await runFlow(asked.session.id, 'deny me', ['deny']);
    const use = seen.find((e) => e.type === 'agent.tool_use');
    expect(seen.find((e) => e.type === 'agent.tool_result')).toMatchObject({ tool_use_id: use.id, is_error: true, content: [{ type: 'text', text: 'no' }] });
    expect(seen.at(-1).stop_reason).toEqual({ type: 'end_turn' });

    const open = await setUp('always_allow');
    const ran = await runFlow(open.session.id, 'deny me', []);
    expect(ran.find((e) => e.type === 'agent.tool_use').evaluated_permission).toBe('allow');
    expect(ran.filter((e) => e.type === 'session.status_idle').map((e) => e.stop_reason.type)).toEqual(['end_turn']);
  });

  it('streams only what happens after connect', async () => {
    const { session } = await setUp('always_allow');
    await runFlow(session.id, 'first', []);
    const seen = await runFlow(session.id, 'second', []);
    expect(seen[0]).toMatchObject({ type: 'user.message', content: [{ type: 'text', text: 'second' }] });
    expect(seen.find((e) => e.type === 'agent.message').content[0].text).toBe('echo: second');
  });
});
