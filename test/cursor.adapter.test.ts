/**
 * The Cursor adapter against the contract fake (turn, follow-up, usage priced by the table, interrupt, reattach
 * without re-sending, the key kept out of state, events and errors), then through the whole stack: an `ask` policy
 * is refused for the runtime, allow/deny rules run end to end (a denied tool Cursor used anyway is made visible).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { priceUsageMicros } from '../governance/pricing';
import type { AgentSnapshot } from '../governance/types';
import { createCursorAdapter } from '../runtimes/cursor/cursor.adapter';
import { CURSOR_CAPABILITIES } from '../runtimes/cursor/descriptor';
import type { RuntimeEvent, RuntimeSessionRef, TurnContext, TurnInput, TurnSink } from '../runtimes/runtime-adapter';
import { defaultScript, startCursorFake, type CursorFake } from './support/cursor-fake';
import { eventsOf, eventually, LOCAL_RECEIVERS, localEgress, startStack, waitForStatus, type Stack } from './support/stack';

let fake: CursorFake;

beforeAll(async () => {
  fake = await startCursorFake();
});
afterAll(async () => {
  await fake?.close();
});

function context(sessionId: string, key = fake.apiKey, policy: AgentSnapshot['toolPolicy'] = { rules: [], default: 'allow' }): TurnContext {
  const agent: AgentSnapshot = {
    agentId: 'agent_local',
    version: 1,
    teamId: 'team_1',
    name: 'cursor worker',
    runtime: { type: 'cursor', config: { repos: [{ url: 'https://github.com/acme/app', startingRef: 'main' }], mode: 'agent' } },
    model: 'claude-sonnet-4-5',
    modelProvider: { baseUrl: fake.url, credentialId: 'cred_1' },
    system: null,
    toolPolicy: policy,
    budget: {},
    approvalTimeoutSeconds: 60,
    idleTimeoutSeconds: 600,
    separationOfDuties: false,
  };
  return { sessionId, agent, workdir: '/tmp', secrets: { modelApiKey: key } };
}

interface Sink extends TurnSink {
  events: RuntimeEvent[];
  states: Array<Record<string, unknown>>;
  decided: number;
  abort(): void;
  kill(): void;
}

/** what the activity does: dedupe events, write checkpoints into the ref; `kill` makes it fail like a dead worker */
function memorySink(ref: RuntimeSessionRef): Sink {
  const controller = new AbortController();
  let dead = false;
  const sink: Sink = {
    events: [],
    states: [],
    decided: 0,
    signal: controller.signal,
    abort: () => controller.abort(),
    kill: () => (dead = true),
    async emit(events) {
      if (dead) throw new Error('worker died');
      for (const e of events) if (!sink.events.some((x) => x.sourceId === e.sourceId)) sink.events.push(e);
    },
    async checkpoint(state) {
      if (dead) throw new Error('worker died');
      ref.state = state;
      sink.states.push(structuredClone(state));
    },
    async decide() {
      sink.decided++;
      return { action: 'allow' };
    },
  };
  return sink;
}

let turns = 0;
const message = (text: string): TurnInput => ({ kind: 'message', turnId: `t${++turns}`, messageId: `m${turns}`, text });
const texts = (events: RuntimeEvent[], type: string) => events.filter((e) => e.type === type).map((e) => (e as any).content.map((c: any) => c.text).join(''));

async function opened(name: string, key?: string) {
  const adapter = createCursorAdapter({ reconnectMs: 20, egress: localEgress() });
  const ctx = context(`sesn_cursor_${name}`, key);
  const ref = await adapter.open(ctx, null);
  return { adapter, ctx, ref };
}

describe('the cursor adapter against the contract fake', () => {
  it('declares no approvals', () => {
    expect(CURSOR_CAPABILITIES).toEqual({ approvals: false, interrupt: true, reattach: true, cost: 'priced', streaming: true, denies: 'none', sandbox: 'remote', gateway: false, portable: 'remote' });
  });

  it('runs a first turn by creating the agent, then a follow-up as a new run on it', async () => {
    const { adapter, ctx, ref } = await opened('turn');
    const sink = memorySink(ref);
    expect(await adapter.runTurn(ctx, ref, message('fix the bug'), sink)).toEqual({ status: 'end_turn' });
    expect(texts(sink.events, 'agent.thinking')).toEqual(['thinking about fix the bug']);
    expect(texts(sink.events, 'agent.message')).toEqual(['done: fix the bug']);
    const use = sink.events.find((e) => e.type === 'agent.tool_use') as any;
    expect(use).toMatchObject({ name: 'read', input: { path: 'README.md' }, evaluated_permission: 'allow' });
    expect(sink.events.find((e) => e.type === 'agent.tool_result')).toMatchObject({ tool_use_id: use.tool_use_id, is_error: false, content: [{ type: 'text', text: '# readme' }] });
    expect(sink.decided).toBe(0);
    const created = fake.requests.find((r) => r.method === 'POST' && r.path === '/v1/agents' && r.body.prompt.text === 'fix the bug')!;
    expect(created.body).toMatchObject({ model: { id: 'claude-sonnet-4-5' }, repos: [{ url: 'https://github.com/acme/app', startingRef: 'main' }], mode: 'agent' });
    const agentId = ref.state.agentId as string;
    expect(agentId).toBeTruthy();

    const sink2 = memorySink(ref);
    expect(await adapter.runTurn(ctx, ref, message('and the tests'), sink2)).toEqual({ status: 'end_turn' });
    expect(texts(sink2.events, 'agent.message')).toEqual(['done: and the tests']);
    expect(fake.requests.filter((r) => r.method === 'POST' && r.path === `/v1/agents/${agentId}/runs`)).toHaveLength(1);
    expect(fake.agents.get(agentId)!.runs).toHaveLength(2);
  });

  it('reports turn-ended tokens as a span without cost, priced by the table', async () => {
    const { adapter, ctx, ref } = await opened('usage');
    const sink = memorySink(ref);
    await adapter.runTurn(ctx, ref, message('count tokens'), sink);
    const spans = sink.events.filter((e) => e.type === 'span.model_request_end') as any[];
    expect(spans).toHaveLength(1);
    expect(spans[0]).toMatchObject({ model: 'claude-sonnet-4-5', model_usage: { input_tokens: 1000, output_tokens: 200, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 }, is_error: false });
    expect(spans[0].cost_usd).toBeUndefined();
    expect(priceUsageMicros(spans[0].model_usage, spans[0].model, {})).toBe(1000 * 3 + 200 * 15);
  });

  it('cancels the run when the turn is interrupted', async () => {
    const { adapter, ctx, ref } = await opened('interrupt');
    fake.hold();
    try {
      const sink = memorySink(ref);
      const running = adapter.runTurn(ctx, ref, message('a long job'), sink);
      await eventually(async () => (sink.events.length > 0 || (ref.state.turn as any)?.lastEventId ? true : undefined), { timeoutMs: 5000 });
      sink.abort();
      expect(await running).toEqual({ status: 'interrupted' });
      const runId = (ref.state.turn as any).runId as string;
      expect(fake.runs.get(runId)!.status).toBe('CANCELLED');
      expect(fake.requests.some((r) => r.path.endsWith(`/runs/${runId}/cancel`))).toBe(true);
    } finally {
      fake.release();
    }
  });

  it('reattaches a retried turn with Last-Event-ID and never sends the prompt again', async () => {
    const { ctx, ref } = await opened('reattach');
    fake.script = (prompt) => (prompt === 'held job' ? [{ assistant: 'first part' }, { assistant: 'second part' }, { usage: { inputTokens: 10, outputTokens: 5 } }] : defaultScript(prompt));
    fake.hold();
    try {
      const first = createCursorAdapter({ reconnectMs: 20, egress: localEgress() });
      const sink = memorySink(ref);
      const running = first.runTurn(ctx, ref, message('held job'), sink);
      await eventually(async () => (texts(sink.events, 'agent.message').includes('first part') && (ref.state.turn as any)?.lastEventId ? true : undefined), { timeoutMs: 5000 });
      // the worker dies: its sink refuses everything and its stream is cut
      sink.kill();
      fake.dropStreams();
      // the dead worker's turn may stay parked on its reconnected stream; it fails once it sees a frame
      const firstDone = running.catch(() => undefined);
      const saved = structuredClone(sink.states.at(-1)!);
      expect(saved).toMatchObject({ agentId: expect.any(String), turn: { runId: expect.any(String), lastEventId: expect.any(String) } });

      const retried: RuntimeSessionRef = { ...ref, state: saved };
      const second = createCursorAdapter({ reconnectMs: 20, egress: localEgress() });
      const sink2 = memorySink(retried);
      const turnInput: TurnInput = { kind: 'message', turnId: (saved.turn as any).turnId, messageId: `m${turns}`, text: 'held job' };
      const resumed = second.runTurn(ctx, await second.open(ctx, retried), turnInput, sink2);
      fake.release();
      expect(await resumed).toEqual({ status: 'end_turn' });
      expect(texts(sink2.events, 'agent.message')).toEqual(['second part']);
      await firstDone;
      expect(fake.prompts.filter((p) => p === 'held job')).toHaveLength(1);
      const streams = fake.requests.filter((r) => r.path.endsWith('/stream') && r.path.includes((saved.turn as any).runId));
      expect(streams.at(-1)!.headers['last-event-id']).toBe((saved.turn as any).lastEventId);
    } finally {
      fake.release();
      fake.script = defaultScript;
    }
  });

  it('keeps the key out of state, events and errors', async () => {
    const { adapter, ctx, ref } = await opened('key');
    const sink = memorySink(ref);
    await adapter.runTurn(ctx, ref, message('secret work'), sink);
    expect(fake.requests.find((r) => r.body?.prompt?.text === 'secret work')!.headers.authorization).toBe(`Bearer ${fake.apiKey}`);
    expect(JSON.stringify({ state: ref.state, states: sink.states, events: sink.events })).not.toContain(fake.apiKey);

    const wrong = 'sk-cursor-wrong-key-0123456789';
    const bad = await opened('badkey', wrong);
    const result = await bad.adapter.runTurn(bad.ctx, bad.ref, message('no entry'), memorySink(bad.ref));
    expect(result).toMatchObject({ status: 'error', retryable: false });
    expect(JSON.stringify(result)).toContain('401');
    expect(JSON.stringify({ result, state: bad.ref.state })).not.toContain(wrong);
  });
});

describe('cursor through the whole stack', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ runtimes: { cursor: createCursorAdapter({ reconnectMs: 50, egress: localEgress() }) }, allowPrivateEgress: LOCAL_RECEIVERS });
  }, 120_000);
  afterAll(async () => {
    await stack?.stop();
  }, 60_000);

  it('refuses an ask policy for the cursor runtime', async () => {
    const res = await stack.call('POST', '/v1/agents', {
      name: 'cursor asks',
      model: 'claude-sonnet-4-5',
      runtime: { type: 'cursor', config: {} },
      tool_policy: { rules: [{ tool: 'bash', action: 'ask' }], default: 'allow' },
    });
    expect(res.status).toBe(400);
    expect(JSON.stringify(res.body)).toContain('body.tool_policy');
  });

  it('a team deny rule cannot be sidestepped by starting a session on Cursor, which cannot refuse a tool call: 400 naming the rule and the runtime', async () => {
    const team = await stack.newTeam();
    const admin = await team.key('admin');
    const agent = await stack.call('POST', '/v1/agents', { name: 'cursor dodger', model: 'claude-sonnet-4-5', runtime: { type: 'cursor', config: {} }, tool_policy: { rules: [], default: 'allow' } }, admin);
    expect(agent.status, JSON.stringify(agent.body)).toBe(200);
    expect((await stack.call('PUT', '/v1/policies/team', { rules: [{ tool: 'read', action: 'deny' }, { tool: 'bash', pattern: 'rm *', action: 'deny' }] }, admin)).status).toBe(200);
    const res = await stack.call('POST', '/v1/sessions', { agent: agent.body.id }, admin);
    expect(res.status).toBe(400);
    expect(res.body.code).toBe('request.invalid');
    expect(res.body.invalid_params).toEqual([{ name: 'body.agent', reason: expect.any(String) }]);
    expect(res.body.detail).toContain('team.rules[1] bash "rm *" cannot be enforced on the cursor runtime');
    expect(res.body.detail).toContain('team.rules[0] read cannot be enforced on the cursor runtime');
    // and no session was written
    expect((await stack.call('GET', '/v1/sessions', undefined, admin)).body.data).toEqual([]);
  });

  it('a team deny rule added while a Cursor session runs stops its next turn before the prompt leaves, naming the rule', async () => {
    const team = await stack.newTeam();
    const admin = await team.key('admin');
    const cred = await stack.call('POST', '/v1/credentials', { name: 'cursor key', secret: fake.apiKey }, admin);
    const agent = await stack.call(
      'POST',
      '/v1/agents',
      { name: 'cursor agent', model: 'claude-sonnet-4-5', runtime: { type: 'cursor', config: {} }, model_provider: { base_url: fake.url, credential_id: cred.body.id }, tool_policy: { rules: [], default: 'allow' } },
      admin,
    );
    expect(agent.status, JSON.stringify(agent.body)).toBe(200);
    const session = await stack.call('POST', '/v1/sessions', { agent: agent.body.id }, admin);
    expect(session.status, JSON.stringify(session.body)).toBe(200);
    const id = session.body.id as string;
    await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'before the rule' }] }, admin);
    // the session belongs to the new team: read it with that team's key
    const settled = (stop: string) =>
      eventually(async () => {
        const res = await stack.call('GET', `/v1/sessions/${id}`, undefined, admin);
        return res.body.status === 'idle' && res.body.stop_reason?.type === stop ? res.body : undefined;
      }, { timeoutMs: 60_000, what: `session ${id} idle/${stop}` });
    await settled('end_turn');

    expect((await stack.call('PUT', '/v1/policies/team', { rules: [{ tool: 'bash', action: 'deny' }] }, admin)).status).toBe(200);
    await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'after the rule' }] }, admin);
    const stopped = await settled('error');
    expect(stopped.stop_reason.message).toContain('team.rules[0] bash cannot be enforced on the cursor runtime');
    const events: any[] = (await stack.call('GET', `/v1/sessions/${id}/events?limit=1000`, undefined, admin)).body.data;
    const errors = events.filter((e) => e.type === 'session.error');
    expect(errors.map((e) => e.error.message)).toEqual([expect.stringContaining('team.rules[0] bash')]);
    expect(fake.prompts).toContain('before the rule');
    expect(fake.prompts).not.toContain('after the rule');
  }, 90_000);

  it('runs a session end to end with allow/deny rules, denied tools made visible', async () => {
    fake.script = (prompt) =>
      prompt === 'ship it'
        ? [{ tool: 'shell', args: { command: 'rm -rf build' }, result: 'ok' }, { tool: 'read_file', args: { path: 'a.ts' }, result: 'code' }, { assistant: 'shipped' }, { usage: { inputTokens: 2000, outputTokens: 100 } }]
        : defaultScript(prompt);
    try {
      const cred = await stack.call('POST', '/v1/credentials', { name: 'cursor key', secret: fake.apiKey });
      expect(cred.status).toBeLessThan(300);
      const agent = await stack.call('POST', '/v1/agents', {
        name: 'cursor agent',
        model: 'claude-sonnet-4-5',
        runtime: { type: 'cursor', config: { repos: [{ url: 'https://github.com/acme/app' }] } },
        model_provider: { base_url: fake.url, credential_id: cred.body.id },
        tool_policy: { rules: [{ tool: 'bash', action: 'deny' }, { tool: 'read', action: 'allow' }], default: 'allow' },
      });
      expect(agent.status, JSON.stringify(agent.body)).toBeLessThan(300);
      const session = await stack.call('POST', '/v1/sessions', { agent: agent.body.id });
      expect(session.status, JSON.stringify(session.body)).toBeLessThan(300);
      const id = session.body.id as string;
      await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'ship it' }] });
      await waitForStatus(stack, id, 'idle', 'end_turn', 60_000);
      const events = await eventually(async () => {
        const all = await eventsOf(stack, id);
        return all.some((e) => e.type === 'agent.message') ? all : undefined;
      });
      expect(events.filter((e) => e.type === 'agent.tool_use').map((u) => [u.name, u.evaluated_permission])).toEqual([
        ['bash', 'allow'],
        ['read', 'allow'],
      ]);
      expect(events.filter((e) => e.type === 'session.error').map((e) => e.error.type)).toContain('policy_not_enforced');
      expect(events.find((e) => e.type === 'agent.message').content[0].text).toBe('shipped');
      expect(events.filter((e) => e.type === 'span.model_request_end')).toHaveLength(1);
      expect(fake.prompts.filter((p) => p === 'ship it')).toHaveLength(1);
      expect(JSON.stringify(events)).not.toContain(fake.apiKey);
    } finally {
      fake.script = defaultScript;
    }
  }, 90_000);

  it('a Cursor server answering an error with a secret-looking body: neither session.error nor the stop reason carries the body, only the status and error type', async () => {
    const leak = `sk-live-${Math.random().toString(36).slice(2)}-DO-NOT-ECHO`;
    const hits: string[] = [];
    const leaky = createServer((req, res) => {
      req.resume();
      req.on('end', () => {
        hits.push(`${req.method} ${req.url}`);
        res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'forbidden', message: `internal token ${leak}` }, detail: leak }));
      });
    });
    await new Promise<void>((resolve) => leaky.listen(0, '127.0.0.1', resolve));
    try {
      const agent = await stack.call('POST', '/v1/agents', {
        name: 'cursor leaky',
        model: 'claude-sonnet-4-5',
        runtime: { type: 'cursor', config: {} },
        model_provider: { base_url: `http://127.0.0.1:${(leaky.address() as AddressInfo).port}` },
        tool_policy: { rules: [], default: 'allow' },
      });
      expect(agent.status, JSON.stringify(agent.body)).toBe(200);
      const session = await stack.call('POST', '/v1/sessions', { agent: agent.body.id, initial_events: [{ type: 'user.message', content: 'leak please' }] });
      const stopped = await waitForStatus(stack, session.body.id, 'idle', 'error', 60_000);
      expect(hits).toEqual(['POST /v1/agents']);
      expect(stopped.stop_reason.message).toBe('POST /v1/agents: 403 forbidden');
      const errors = (await eventsOf(stack, session.body.id)).filter((e) => e.type === 'session.error');
      expect(errors.map((e) => e.error.message)).toEqual(['POST /v1/agents: 403 forbidden']);
      expect(JSON.stringify([stopped, errors])).not.toContain(leak);
      expect(JSON.stringify([stopped, errors])).not.toContain('internal token');
    } finally {
      leaky.closeAllConnections();
      await new Promise((resolve) => leaky.close(resolve));
    }
  }, 90_000);
});
