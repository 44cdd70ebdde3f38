/**
 * The Managed Agents adapter against the contract fake (turn, allow, deny, ask then resume, interrupt, follow-up,
 * reattach without re-sending), then agentplane driving agentplane: an outer agentplane session on the
 * managed-agents runtime whose remote is a second agentplane running the scripted runtime.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentSnapshot } from '../governance/types';
import { createManagedAgentsAdapter } from '../runtimes/managed-agents/managed-agents.adapter';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import type { Decision, PermissionRequest, RuntimeEvent, RuntimeSessionRef, TurnContext, TurnInput, TurnSink } from '../runtimes/runtime-adapter';
import { startManagedAgentsFake, type ManagedAgentsFake } from './support/managed-agents-fake';
import { eventsOf, eventually, LOCAL_RECEIVERS, localEgress, startStack, waitForStatus, type Stack } from './support/stack';

let fake: ManagedAgentsFake;

beforeAll(async () => {
  fake = await startManagedAgentsFake({ heartbeatMs: 200 });
});
afterAll(async () => {
  await fake?.close();
});

function context(sessionId: string, key = fake.apiKey): TurnContext {
  const agent: AgentSnapshot = {
    agentId: 'agent_local',
    version: 1,
    teamId: 'team_1',
    name: 'remote worker',
    runtime: { type: 'managed-agents', config: {} },
    model: 'claude-sonnet-4-6',
    modelProvider: { baseUrl: fake.url, credentialId: 'cred_1' },
    system: 'Be brief.',
    toolPolicy: { rules: [], default: 'ask' },
    budget: {},
    approvalTimeoutSeconds: 60,
    idleTimeoutSeconds: 600,
    separationOfDuties: false,
  };
  return { sessionId, agent, workdir: '/tmp', secrets: { modelApiKey: key } };
}

interface MemorySink extends TurnSink {
  events: RuntimeEvent[];
  requests: PermissionRequest[];
  states: Array<Record<string, unknown>>;
  abort(): void;
  kill(): void;
}

/** what the activity does around an adapter: events, checkpoints into the ref, decisions by a function */
function memorySink(ref: RuntimeSessionRef, decide: (r: PermissionRequest) => Decision = () => ({ action: 'allow' })): MemorySink {
  const controller = new AbortController();
  let dead = false;
  const sink: MemorySink = {
    events: [],
    requests: [],
    states: [],
    signal: controller.signal,
    abort: () => controller.abort(),
    kill: () => (dead = true),
    async emit(events) {
      if (dead) throw new Error('worker died');
      sink.events.push(...events);
    },
    async checkpoint(state) {
      if (dead) throw new Error('worker died');
      ref.state = state;
      sink.states.push(structuredClone(state));
    },
    async decide(request) {
      if (dead) throw new Error('worker died');
      sink.requests.push(request);
      return decide(request);
    },
  };
  return sink;
}

let turns = 0;
const message = (text: string): TurnInput => ({ kind: 'message', turnId: `t${++turns}`, messageId: `m${turns}`, text });

async function opened(name: string) {
  const adapter = createManagedAgentsAdapter({ settleMs: 50, egress: localEgress() });
  const ctx = context(`sesn_local_${name}`);
  const ref = await adapter.open(ctx, null);
  return { adapter, ctx, ref };
}

const texts = (events: RuntimeEvent[], type: string) => events.filter((e) => e.type === type).map((e) => (e as any).content.map((c: any) => c.text).join(''));

describe('the managed-agents adapter against the contract fake', () => {
  it('opens the remote agent, environment and session once, with every tool asking', async () => {
    const { adapter, ctx, ref } = await opened('open');
    expect(ref.runtimeSessionId).toMatch(/^sesn_/);
    expect(ref.state).toMatchObject({ agentId: expect.stringMatching(/^agent_/), environmentId: expect.stringMatching(/^env_/) });
    expect(await adapter.open(ctx, ref)).toEqual(ref);
    const remote = fake.session(ref.runtimeSessionId)!;
    expect(remote.agent).toMatchObject({ name: 'remote worker', model: { id: 'claude-sonnet-4-6' }, system: 'Be brief.', tools: [{ type: 'agent_toolset_20260401', default_config: { permission_policy: { type: 'always_ask' } } }] });
    expect(fake.requests.filter((r) => r.method === 'POST' && r.path === '/v1/sessions' && r.body?.metadata?.agentplane_session_id === ctx.sessionId)).toHaveLength(1);
  });

  it('a session under limited networking is not given an unrestricted remote environment: its networking goes with it', async () => {
    const adapter = createManagedAgentsAdapter({ settleMs: 50, egress: localEgress() });
    const networking = { type: 'limited' as const, allowed_hosts: ['api.example.com'], allow_package_managers: false, allow_mcp_servers: false };
    const ctx = { ...context('sesn_local_networking'), networking };
    await adapter.open(ctx, null);
    const created = fake.requests.filter((r) => r.method === 'POST' && r.path === '/v1/environments' && r.body?.name === `agentplane ${ctx.sessionId}`);
    expect(created).toHaveLength(1);
    expect(created[0]!.body.config.networking).toEqual(networking);
  });

  it('runs a turn: messages, thinking, cost from list_cost deltas charged once', async () => {
    fake.script('plain turn', [{ think: 'hmm' }, { usage: { input: 1000, output: 100, costUsd: 0.01 } }, { say: 'hello' }, { usage: { input: 500, output: 50, costUsd: 0.005 } }]);
    const { adapter, ctx, ref } = await opened('turn');
    const sink = memorySink(ref);
    const result = await adapter.runTurn(ctx, ref, message('plain turn'), sink);
    expect(result).toEqual({ status: 'end_turn' });
    expect(texts(sink.events, 'agent.thinking')).toEqual(['hmm']);
    expect(texts(sink.events, 'agent.message')).toEqual(['hello']);
    const spans = sink.events.filter((e) => e.type === 'span.model_request_end') as any[];
    expect(spans.map((s) => [s.cost_usd, s.model_usage.input_tokens, s.model_usage.output_tokens])).toEqual([
      [0.01, 1000, 100],
      [0.005, 500, 50],
    ]);
    expect(new Set(sink.events.map((e) => e.sourceId)).size).toBe(sink.events.length);
    // the key travels in the header only
    expect(JSON.stringify([ref, sink.events, sink.states])).not.toContain(fake.apiKey);
    expect(JSON.stringify(fake.requests.map((r) => r.body))).not.toContain(fake.apiKey);
  });

  it('answers allowed and denied calls at once; tool ids are the remote tool_use ids', async () => {
    fake.script('two tools', [{ tool: 'bash', input: { command: 'ls' }, result: 'file-a' }, { tool: 'write', input: { file_path: '/etc/passwd' } }, { say: 'done' }]);
    const { adapter, ctx, ref } = await opened('allow-deny');
    const sink = memorySink(ref, (r) => (r.tool === 'bash' ? { action: 'allow' } : { action: 'deny', message: 'not there' }));
    expect(await adapter.runTurn(ctx, ref, message('two tools'), sink)).toEqual({ status: 'end_turn' });
    expect(sink.requests.map((r) => [r.tool, r.input])).toEqual([
      ['bash', { command: 'ls' }],
      ['write', { file_path: '/etc/passwd' }],
    ]);
    const results = sink.events.filter((e) => e.type === 'agent.tool_result') as any[];
    expect(results.map((r) => [r.tool_use_id, r.is_error, r.content[0].text])).toEqual([
      [sink.requests[0]!.callId, false, 'file-a'],
      [sink.requests[1]!.callId, true, 'not there'],
    ]);
    const confirmations = fake.session(ref.runtimeSessionId)!.events.filter((e) => e.type === 'user.tool_confirmation');
    expect(confirmations.map((c) => [c.tool_use_id, c.result])).toEqual([
      [sink.requests[0]!.callId, 'allow'],
      [sink.requests[1]!.callId, 'deny'],
    ]);
  });

  it('leaves the remote waiting on ask, and resumes with the decision', async () => {
    fake.script('ask a person', [{ tool: 'bash', input: { command: 'deploy' }, result: 'deployed' }, { say: 'shipped' }]);
    const { adapter, ctx, ref } = await opened('ask');
    const first = memorySink(ref, () => ({ action: 'ask', toolUseId: 'sevt_local_1' }));
    const input = message('ask a person');
    const waiting = await adapter.runTurn(ctx, ref, input, first);
    expect(waiting).toEqual({ status: 'requires_action', pending: [{ requestId: first.requests[0]!.requestId, toolUseId: 'sevt_local_1' }] });
    expect(fake.session(ref.runtimeSessionId)!.status).toBe('idle');

    const second = memorySink(ref);
    const done = await adapter.runTurn(ctx, ref, { kind: 'resume', turnId: input.turnId, decisions: [{ requestId: first.requests[0]!.requestId, behavior: 'allow' }] }, second);
    expect(done).toEqual({ status: 'end_turn' });
    expect(second.requests).toEqual([]);
    expect((second.events.find((e) => e.type === 'agent.tool_result') as any).content[0].text).toBe('deployed');
    expect(texts(second.events, 'agent.message')).toEqual(['shipped']);
    expect(fake.countPrompts('ask a person')).toBe(1);
  });

  it('interrupts the remote turn when the sink aborts', async () => {
    fake.script('long work', [{ say: 'starting' }, { gate: 'interrupt-me' }, { say: 'never said' }]);
    const { adapter, ctx, ref } = await opened('interrupt');
    const sink = memorySink(ref);
    const running = adapter.runTurn(ctx, ref, message('long work'), sink);
    await fake.gate('interrupt-me').reached;
    sink.abort();
    expect(await running).toEqual({ status: 'interrupted' });
    const remote = fake.session(ref.runtimeSessionId)!;
    expect(remote.events.some((e) => e.type === 'user.interrupt')).toBe(true);
    await new Promise((r) => setTimeout(r, 100));
    expect(remote.events.filter((e) => e.type === 'agent.message').map((e) => e.content[0].text)).toEqual(['starting']);
  });

  it('runs a follow-up turn on the same remote session with only its own events', async () => {
    const { adapter, ctx, ref } = await opened('follow-up');
    const one = memorySink(ref);
    await adapter.runTurn(ctx, ref, message('first question'), one);
    const two = memorySink(ref);
    expect(await adapter.runTurn(ctx, ref, message('second question'), two)).toEqual({ status: 'end_turn' });
    expect(texts(one.events, 'agent.message')).toEqual(['echo: first question']);
    expect(texts(two.events, 'agent.message')).toEqual(['echo: second question']);
    expect(two.events.filter((e) => e.type === 'span.model_request_end').map((e: any) => e.cost_usd)).toEqual([0.001]);
  });

  it('maps budget_reached to an error result', async () => {
    fake.script('spend it all', [{ usage: { input: 10, output: 10, costUsd: 1 } }, { stop: 'budget_reached' }]);
    const { adapter, ctx, ref } = await opened('budget');
    const result = await adapter.runTurn(ctx, ref, message('spend it all'), memorySink(ref));
    expect(result).toMatchObject({ status: 'error', retryable: false, message: expect.stringContaining('budget') });
  });

  it('reports a wrong key as a non-retryable error without the key', async () => {
    const { adapter, ref } = await opened('bad-key');
    const ctx = context('sesn_local_bad-key', 'sk-wrong-key');
    const result = await adapter.runTurn(ctx, ref, message('hello'), memorySink(ref));
    expect(result).toMatchObject({ status: 'error', retryable: false, message: expect.stringContaining('401') });
    expect(JSON.stringify(result)).not.toContain('sk-wrong-key');
  });

  it('reattaches: a second adapter with the last checkpoint finishes a held turn without sending it again', async () => {
    fake.script('held turn', [{ say: 'before the crash' }, { tool: 'bash', input: { command: 'make' }, result: 'built' }, { gate: 'held' }, { say: 'after the crash' }, { usage: { input: 10, output: 5, costUsd: 0.002 } }]);
    const first = await opened('reattach');
    const input = message('held turn');
    const dying = memorySink(first.ref);
    const running = first.adapter.runTurn(first.ctx, first.ref, input, dying).catch((err: Error) => err);
    await fake.gate('held').reached;
    // the worker dies: its sink fails from now on, and only its last checkpoint survives
    dying.kill();
    const saved: RuntimeSessionRef = { ...first.ref, state: structuredClone(dying.states.at(-1)!) };
    expect(saved.state.turn).toMatchObject({ turnId: input.turnId, sentEventId: expect.stringMatching(/^sevt_/) });

    const adapter = createManagedAgentsAdapter({ egress: localEgress() });
    const ref = await adapter.open(first.ctx, saved);
    expect(ref.runtimeSessionId).toBe(first.ref.runtimeSessionId);
    const sink = memorySink(ref, () => ({ action: 'allow' }));
    const resumed = adapter.runTurn(first.ctx, ref, input, sink);
    await new Promise((r) => setTimeout(r, 200));
    fake.gate('held').open();
    expect(await resumed).toEqual({ status: 'end_turn' });
    expect(fake.countPrompts('held turn')).toBe(1);
    expect(texts(sink.events, 'agent.message')).toEqual(['before the crash', 'after the crash']);
    // the call was answered before the crash: it is not decided or confirmed again
    expect(sink.requests).toEqual([]);
    expect(fake.session(ref.runtimeSessionId)!.events.filter((e) => e.type === 'user.tool_confirmation')).toHaveLength(1);
    expect(sink.events.filter((e) => e.type === 'span.model_request_end').map((e: any) => e.cost_usd)).toEqual([0.002]);
    expect(await running).toBeInstanceOf(Error);
  });
});

describe('agentplane driving agentplane through the Managed Agents protocol', () => {
  let inner: Stack;
  let outer: Stack;

  beforeAll(async () => {
    inner = await startStack({ runtimes: { scripted: createScriptedAdapter() } });
    // the outer agentplane reaches the inner one on 127.0.0.1
    outer = await startStack({ runtimes: { 'managed-agents': createManagedAgentsAdapter({ egress: localEgress() }) }, allowPrivateEgress: LOCAL_RECEIVERS });
  }, 120_000);
  afterAll(async () => {
    await outer?.stop();
    await inner?.stop();
  }, 60_000);

  it('runs an outer turn on an inner scripted session; both policies apply', async () => {
    // the outer agentplane holds the inner's admin key as the model credential of its agent
    const cred = await outer.call('POST', '/v1/credentials', { name: 'inner agentplane', secret: inner.adminKey });
    expect(cred.status, JSON.stringify(cred.body)).toBe(200);
    const agent = await outer.call('POST', '/v1/agents', {
      name: 'outer',
      model: 'claude-sonnet-4-6',
      runtime: {
        type: 'managed-agents',
        // the inner agent runs the scripted runtime; its own policy: `git *` allowed, other bash asked, rm denied
        config: { agent: { runtime: { type: 'scripted' }, tool_policy: { rules: [{ tool: 'bash', pattern: 'git *', action: 'allow' }, { tool: 'bash', pattern: 'rm *', action: 'deny' }], default: 'ask' } } },
      },
      model_provider: { base_url: inner.url, credential_id: cred.body.id },
      // the outer policy: make allowed, curl denied
      tool_policy: { rules: [{ tool: 'bash', pattern: 'make*', action: 'allow' }, { tool: 'bash', pattern: 'curl *', action: 'deny' }], default: 'ask' },
    });
    expect(agent.status, JSON.stringify(agent.body)).toBe(200);
    const env = await outer.call('POST', '/v1/environments', { name: 'outer env' });
    const session = await outer.call('POST', '/v1/sessions', { agent: agent.body.id, environment_id: env.body.id });
    expect(session.status, JSON.stringify(session.body)).toBe(200);
    const script = ['say hello from inside', 'tool bash git status', 'tool bash make all', 'tool bash curl evil.example', 'tool bash rm -rf /', 'cost 0.25', 'say done'].join('\n');
    const sent = await outer.call('POST', `/v1/sessions/${session.body.id}/events`, { events: [{ type: 'user.message', content: [{ type: 'text', text: script }] }] });
    expect(sent.status).toBe(200);
    await waitForStatus(outer, session.body.id, 'idle', 'end_turn', 60_000);

    const events = await eventsOf(outer, session.body.id);
    expect(events.filter((e) => e.type === 'agent.message').map((e) => e.content[0].text)).toEqual(['hello from inside', 'done']);
    const uses = events.filter((e) => e.type === 'agent.tool_use');
    expect(uses.map((u) => [u.input.command, u.evaluated_permission])).toEqual([
      // allowed by the inner policy: ran there without asking, the outer logs it as run
      ['git status', 'allow'],
      // asked by the inner policy, so it came to the outer policy, which allowed…
      ['make all', 'allow'],
      // …and denied
      ['curl evil.example', 'deny'],
      // denied by the inner policy itself: the outer only sees it
      ['rm -rf /', 'deny'],
    ]);
    const results = events.filter((e) => e.type === 'agent.tool_result');
    expect(results.map((r) => [uses.findIndex((u) => u.id === r.tool_use_id), r.is_error])).toEqual([
      [0, false],
      [1, false],
      [2, true],
      [3, true],
    ]);
    // cost: the inner reports it per span; the outer charges it once
    const outerSession = await outer.call('GET', `/v1/sessions/${session.body.id}`);
    expect(outerSession.body.usage.list_cost.amount).toBe('0.250000');
    // the inner session saw one prompt, and its key never reached the outer's event log
    const innerSessions = await inner.call('GET', '/v1/sessions');
    const innerSession = innerSessions.body.data.find((s: any) => s.metadata?.agentplane_session_id === session.body.id);
    expect(innerSession).toBeTruthy();
    const innerEvents = await eventsOf(inner, innerSession.id);
    expect(innerEvents.filter((e) => e.type === 'user.message')).toHaveLength(1);
    expect(JSON.stringify(events)).not.toContain(inner.adminKey);
  }, 120_000);

  it('an outer ask waits for a person on the outer agentplane while the inner session waits; a follow-up reuses the inner session', async () => {
    const cred = await outer.call('POST', '/v1/credentials', { name: 'inner agentplane 2', secret: inner.adminKey });
    const agent = await outer.call('POST', '/v1/agents', {
      name: 'outer asks',
      model: 'claude-sonnet-4-6',
      // no inner policy given: the adapter's always_ask toolset makes the inner ask for every call
      runtime: { type: 'managed-agents', config: { agent: { runtime: { type: 'scripted' } } } },
      model_provider: { base_url: inner.url, credential_id: cred.body.id },
      tool_policy: { rules: [], default: 'ask' },
    });
    expect(agent.status, JSON.stringify(agent.body)).toBe(200);
    const env = await outer.call('POST', '/v1/environments', { name: 'outer env 2' });
    const session = await outer.call('POST', '/v1/sessions', { agent: agent.body.id, environment_id: env.body.id });
    const id = session.body.id;
    await outer.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: [{ type: 'text', text: 'tool write /tmp/notes.md\nsay written' }] }] });
    const waiting = await waitForStatus(outer, id, 'requires_action', undefined, 60_000);
    expect(waiting.pending_approvals).toHaveLength(1);
    const toolUseId = waiting.pending_approvals[0].tool_use_id;

    // the inner session is parked on the same call
    const innerSession = (await inner.call('GET', '/v1/sessions')).body.data.find((s: any) => s.metadata?.agentplane_session_id === id);
    expect((await inner.call('GET', `/v1/sessions/${innerSession.id}`)).body.status).toBe('requires_action');

    const approved = await outer.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: toolUseId, result: 'allow' }] });
    expect(approved.status).toBe(200);
    await waitForStatus(outer, id, 'idle', 'end_turn', 60_000);
    let events = await eventsOf(outer, id);
    expect(events.find((e) => e.type === 'agent.tool_result')).toMatchObject({ tool_use_id: toolUseId, is_error: false });
    expect(events.filter((e) => e.type === 'agent.message').map((e) => e.content[0].text)).toEqual(['written']);
    const innerEvents = await eventsOf(inner, innerSession.id);
    expect(innerEvents.find((e) => e.type === 'user.tool_confirmation')).toMatchObject({ result: 'allow' });

    await outer.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: [{ type: 'text', text: 'say again' }] }] });
    await eventually(async () => ((await eventsOf(outer, id)).filter((e) => e.type === 'agent.message').length === 2 ? true : undefined), { what: 'the follow-up answer', timeoutMs: 60_000 });
    await waitForStatus(outer, id, 'idle', 'end_turn', 60_000);
    events = await eventsOf(outer, id);
    expect(events.filter((e) => e.type === 'agent.message').map((e) => e.content[0].text)).toEqual(['written', 'again']);
    const innerSessions = (await inner.call('GET', '/v1/sessions')).body.data.filter((s: any) => s.metadata?.agentplane_session_id === id);
    expect(innerSessions).toHaveLength(1);
    expect((await eventsOf(inner, innerSession.id)).filter((e) => e.type === 'user.message')).toHaveLength(2);
  }, 150_000);
});
