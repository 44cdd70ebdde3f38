/**
 * The agentSession workflow end to end through the HTTP API, on the real Temporal dev server and Postgres, with
 * the in-process scripted runtime: turns, tool decisions, approvals, budgets, interrupts.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { eventsOf, eventually, startStack, waitForStatus, type Stack } from './support/stack';

let stack: Stack;
const sentPrompts: string[] = [];

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: createScriptedAdapter({ onPromptSent: (id) => sentPrompts.push(id) }) } });
});
afterAll(async () => {
  await stack?.stop();
});

async function createAgent(extra: Record<string, unknown> = {}) {
  const res = await stack.call('POST', '/v1/agents', {
    name: 'scripted agent',
    model: 'scripted',
    runtime: { type: 'scripted' },
    tool_policy: { rules: [{ tool: 'bash', pattern: 'rm *', action: 'deny' }, { tool: 'bash', pattern: 'git *', action: 'allow' }, { tool: 'write', action: 'ask' }], default: 'deny' },
    ...extra,
  });
  expect(res.status).toBe(200);
  return res.body.id as string;
}

async function startSession(agent: string, text: string, extra: Record<string, unknown> = {}) {
  const res = await stack.call('POST', '/v1/sessions', { agent, initial_events: [{ type: 'user.message', content: [{ type: 'text', text }] }], ...extra });
  expect(res.status).toBe(200);
  return res.body.id as string;
}

describe('agentSession', () => {
  it('runs a turn and records the message, the usage and the end of the turn in order', async () => {
    const agent = await createAgent();
    const id = await startSession(agent, 'say hello there\ncost 0.25');
    const session = await waitForStatus(stack, id, 'idle', 'end_turn');
    expect(session.usage.cost_usd).toBeCloseTo(0.25);
    const types = (await eventsOf(stack, id)).map((e) => e.type);
    expect(types).toEqual(['user.message', 'session.status_running', 'agent.message', 'span.model_request_end', 'session.status_idle']);
  });

  it('decides allow and deny at once from the policy and names the rule that matched', async () => {
    const agent = await createAgent();
    const id = await startSession(agent, 'tool bash git status\ntool bash rm -rf /\ntool bash curl evil.example');
    await waitForStatus(stack, id, 'idle', 'end_turn');
    const uses = (await eventsOf(stack, id)).filter((e) => e.type === 'agent.tool_use');
    expect(uses.map((u) => [u.input.command, u.evaluated_permission, u.evaluation.rule])).toEqual([
      ['git status', 'allow', 'rules[1] bash "git *" → allow'],
      ['rm -rf /', 'deny', 'rules[0] bash "rm *" → deny'],
      ['curl evil.example', 'deny', 'default → deny'],
    ]);
    const results = (await eventsOf(stack, id)).filter((e) => e.type === 'agent.tool_result');
    expect(results.map((r) => [r.tool_use_id, r.is_error])).toEqual(uses.map((u, i) => [u.id, i !== 0]));
  });

  it('waits in requires_action for a person, and an approval resumes the same turn', async () => {
    const agent = await createAgent();
    const id = await startSession(agent, 'tool write /tmp/notes.md\nsay written');
    const waiting = await waitForStatus(stack, id, 'requires_action');
    expect(waiting.pending_approvals).toHaveLength(1);
    const toolUseId = waiting.pending_approvals[0].tool_use_id;
    const inbox = await stack.call('GET', '/v1/approvals');
    expect(inbox.body.data.map((a: any) => a.tool_use_id)).toContain(toolUseId);

    const sent = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: toolUseId, result: 'allow' }] });
    expect(sent.status).toBe(200);
    await waitForStatus(stack, id, 'idle', 'end_turn');
    const events = await eventsOf(stack, id);
    const confirmation = events.find((e) => e.type === 'user.tool_confirmation');
    expect(confirmation).toMatchObject({ tool_use_id: toolUseId, result: 'allow' });
    expect(events.find((e) => e.type === 'agent.tool_result')).toMatchObject({ tool_use_id: toolUseId, is_error: false });
    expect(events.at(-2)).toMatchObject({ type: 'agent.message', content: [{ type: 'text', text: 'written' }] });

    const again = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: toolUseId, result: 'deny' }] });
    expect(again.status).toBe(409);
    expect(again.body.code).toBe('approval.not_pending');
  });

  it('denies a tool call nobody decided once the approval deadline passes', async () => {
    const agent = await createAgent({ approval_timeout_seconds: 2 });
    const id = await startSession(agent, 'tool write /etc/passwd');
    await waitForStatus(stack, id, 'idle', 'end_turn', 20_000);
    const events = await eventsOf(stack, id);
    expect(events.find((e) => e.type === 'user.tool_confirmation')).toMatchObject({ result: 'deny', decided_by: null });
    expect(events.find((e) => e.type === 'agent.tool_result')).toMatchObject({ is_error: true });
  });

  it('stops with budget_reached and sends nothing more once the session cap is spent', async () => {
    const agent = await createAgent({ budget: { max_cost_usd: 1 } });
    const id = await startSession(agent, 'cost 0.6');
    await waitForStatus(stack, id, 'idle', 'end_turn');
    await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'cost 0.6\nsay should not run' }] });
    const afterSecond = await waitForStatus(stack, id, 'idle', 'budget_reached');
    // the second turn was stopped right after the usage that crossed the cap
    expect(afterSecond.usage.cost_usd).toBeCloseTo(1.2);
    expect((await eventsOf(stack, id)).some((e) => e.type === 'agent.message' && e.content[0].text === 'should not run')).toBe(false);

    const before = sentPrompts.length;
    await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'say third' }] });
    await eventually(async () => ((await eventsOf(stack, id)).filter((e) => e.type === 'user.message').length === 3 ? true : undefined));
    await waitForStatus(stack, id, 'idle', 'budget_reached');
    expect(sentPrompts.length).toBe(before); // refused before it left the building
  });

  it('interrupts a running turn', async () => {
    const agent = await createAgent();
    const id = await startSession(agent, 'say start\nsleep 20000\nsay never');
    await waitForStatus(stack, id, 'running');
    await eventually(async () => ((await eventsOf(stack, id)).some((e) => e.type === 'agent.message') ? true : undefined));
    const res = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.interrupt' }] });
    expect(res.status).toBe(200);
    await waitForStatus(stack, id, 'idle', 'interrupted', 15_000);
    expect((await eventsOf(stack, id)).some((e) => e.type === 'agent.message' && e.content[0].text === 'never')).toBe(false);
  });
});
