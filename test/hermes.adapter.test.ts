/**
 * The Hermes adapter against a real Hermes Agent API server (hermes-agent from PyPI, installed by
 * scripts/ensure-hermes.sh) whose model is the scripted model: a turn with usage, the gate plugin's approvals
 * (allow, deny, ask → resume), stop, a turn retried after its worker died (the prompt reaches the model once), and
 * the API server key kept out of state, events and errors. Skipped, loudly, only when Hermes could not be installed.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { priceUsageMicros } from '../governance/pricing';
import { HERMES_CAPABILITIES } from '../runtimes/hermes/descriptor';
import { HERMES_GATE_MARKER, HERMES_GATE_PLUGIN_DIR, createHermesAdapter, hermesTool, readGateCall } from '../runtimes/hermes/hermes.adapter';
import type { PermissionRequest, RuntimeEvent, RuntimeSessionRef, TurnContext, TurnInput } from '../runtimes/runtime-adapter';
import { ensureHermes, startHermes, type HermesServer } from './support/hermes-server';
import { MemorySink } from './support/memory-sink';
import { createGate, startScriptedModel, type ScriptedModel } from './support/scripted-model';
import { eventually, localEgress } from './support/stack';
import { testAgent } from './support/test-agent';

const installed = ensureHermes();
if ('error' in installed) console.error(`\n!!! Hermes adapter tests SKIPPED: ${installed.error}\n`);

describe('Hermes tool names', () => {
  it('maps Hermes tools to canonical names and passes others through', () => {
    expect(['terminal', 'write_file', 'read_file', 'patch', 'search_files', 'web_extract', 'delegate_task'].map(hermesTool)).toEqual(['bash', 'write', 'read', 'edit', 'grep', 'web_fetch', 'task']);
    expect(hermesTool('vision_analyze')).toBe('other:vision_analyze');
  });

  it('declares approvals, interrupt, reattach and priced cost', () => {
    expect(HERMES_CAPABILITIES).toEqual({ approvals: true, interrupt: true, reattach: true, cost: 'priced', streaming: true, denies: 'any', sandbox: 'none' });
  });
});

/**
 * Hermes 0.19 sends no `id:` lines, so a real server cannot show the Last-Event-ID path. This stub of the documented
 * Runs API numbers its frames and replays after `Last-Event-ID`, the way the docs describe later versions.
 */
describe('the hermes adapter against a Runs API that numbers its events', () => {
  it('checkpoints the last event id and reattaches with Last-Event-ID, sending the run once', { timeout: 30_000 }, async () => {
    const frames = [
      { event: 'message.delta', delta: 'first part' },
      { event: 'tool.started', tool: 'read_file', preview: 'a.txt' },
      { event: 'tool.completed', tool: 'read_file', duration: 0.1, error: false },
      { event: 'run.completed', output: 'second part', usage: { input_tokens: 10, output_tokens: 5, total_tokens: 15 } },
    ];
    const requests: Array<{ method: string; url: string; headers: Record<string, unknown> }> = [];
    let cut = true;
    const server = createServer((req, res) => {
      requests.push({ method: req.method!, url: req.url!, headers: req.headers });
      if (req.method === 'POST' && req.url === '/v1/runs') return void res.writeHead(202, { 'content-type': 'application/json' }).end(JSON.stringify({ run_id: 'run_numbered', status: 'started' }));
      if (req.url === '/v1/runs/run_numbered') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ object: 'hermes.run', run_id: 'run_numbered', status: 'running' }));
      if (req.url === '/v1/runs/run_numbered/events') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const after = Number(req.headers['last-event-id'] ?? 0);
        // the first stream breaks after two events, as when the worker reading it dies
        const upTo = cut ? 2 : frames.length;
        for (let i = after; i < upTo; i++) res.write(`id: ${i + 1}\ndata: ${JSON.stringify({ ...frames[i], run_id: 'run_numbered' })}\n\n`);
        if (cut) {
          cut = false;
          setTimeout(() => res.destroy(), 50);
        } else res.end(': stream closed\n\n');
        return;
      }
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'not found' } }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    try {
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const agent = testAgent({ runtime: { type: 'hermes', config: {} }, model: 'claude-sonnet-4-5', modelProvider: { baseUrl: url, credentialId: 'cred_1' } });
      const ctx: TurnContext = { sessionId: 'sesn_numbered', agent, workdir: '/tmp', secrets: { modelApiKey: 'hermes-stub-key-0123456789' } };
      const first = createHermesAdapter({ pollMs: 100, settleMs: 200, reconnectMs: 10, egress: localEgress() });
      const ref = await first.open(ctx, null);
      const sink = new MemorySink();
      const states: Array<Record<string, unknown>> = [];
      // the worker dies once it has checkpointed event 2: nothing it does afterwards lands
      sink.checkpoint = async (state) => {
        if (states.some((s) => (s.turn as { lastEventId?: string }).lastEventId === '2')) throw new Error('worker died');
        states.push(structuredClone(state));
      };
      const input: TurnInput = { kind: 'message', turnId: 't_numbered', messageId: 'm_numbered', text: 'numbered job' };
      await expect(first.runTurn(ctx, ref, input, sink)).rejects.toThrow('worker died');
      const saved = states.at(-1)!;
      expect(saved.turn).toMatchObject({ runId: 'run_numbered', lastEventId: '2' });

      const second = createHermesAdapter({ pollMs: 100, settleMs: 200, reconnectMs: 10, egress: localEgress() });
      const retried: RuntimeSessionRef = { ...ref, state: saved };
      const sink2 = new MemorySink();
      expect(await second.runTurn(ctx, await second.open(ctx, retried), input, sink2)).toEqual({ status: 'end_turn' });
      expect(sink2.of('agent.message').map((m) => m.content[0]!.text)).toEqual(['second part']);
      expect(sink2.of('agent.tool_result')).toHaveLength(1);
      expect(requests.filter((r) => r.method === 'POST' && r.url === '/v1/runs')).toHaveLength(1);
      expect(requests.find((r) => r.method === 'POST' && r.url === '/v1/runs')!.headers['idempotency-key']).toBe('m_numbered');
      const streams = requests.filter((r) => r.url.endsWith('/events'));
      expect(streams.at(-1)!.headers['last-event-id']).toBe('2');
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe.skipIf('error' in installed)('the hermes adapter against a real Hermes API server', () => {
  let model: ScriptedModel;
  let hermes: HermesServer;
  let turns = 0;

  beforeAll(async () => {
    model = await startScriptedModel();
    hermes = await startHermes({ bin: (installed as { bin: string }).bin, modelBaseUrl: model.openaiBaseUrl });
  }, 180_000);
  afterAll(async () => {
    await hermes?.close();
    await model?.close();
  }, 60_000);

  function context(sessionId: string, key = hermes.apiKey, toolPolicy?: TurnContext['agent']['toolPolicy']): TurnContext {
    const agent = testAgent({ runtime: { type: 'hermes', config: {} }, model: 'claude-sonnet-4-5', modelProvider: { baseUrl: hermes.url, credentialId: 'cred_1' }, ...(toolPolicy ? { toolPolicy } : {}) });
    return { sessionId, agent, workdir: hermes.home, secrets: { modelApiKey: key } };
  }

  const message = (text: string): TurnInput => ({ kind: 'message', turnId: `t${++turns}`, messageId: `m${turns}`, text });
  const texts = (events: RuntimeEvent[], type: string) => events.filter((e) => e.type === type).map((e) => (e as any).content.map((c: any) => c.text).join(''));

  async function opened(name: string, key?: string, toolPolicy?: TurnContext['agent']['toolPolicy']) {
    const adapter = createHermesAdapter({ pollMs: 200, settleMs: 1000, egress: localEgress() });
    const ctx = context(`sesn_hermes_${name}`, key, toolPolicy);
    const ref = await adapter.open(ctx, null);
    return { adapter, ctx, ref };
  }

  /** a sink that writes checkpoints into the ref, as the activity does */
  function sinkFor(ref: RuntimeSessionRef, policy?: (r: PermissionRequest) => 'allow' | 'deny' | 'ask') {
    const sink = new MemorySink(policy);
    const checkpoint = sink.checkpoint.bind(sink);
    sink.checkpoint = async (state) => {
      ref.state = state;
      await checkpoint(state);
    };
    return sink;
  }

  it('answers a message and reports the run usage as one span priced by the table', { timeout: 120_000 }, async () => {
    model.setScript([{ match: 'hermes hello', steps: [{ text: 'hello from hermes' }] }]);
    const { adapter, ctx, ref } = await opened('hello');
    const sink = sinkFor(ref);
    expect(await adapter.runTurn(ctx, ref, message('hermes hello'), sink)).toEqual({ status: 'end_turn' });
    expect(texts(sink.events, 'agent.message')).toEqual(['hello from hermes']);
    const spans = sink.of('span.model_request_end');
    expect(spans).toHaveLength(1);
    expect(spans[0]).toMatchObject({ model: 'claude-sonnet-4-5', is_error: false, model_usage: { input_tokens: 100, output_tokens: 20 } });
    expect(spans[0]!.cost_usd).toBeUndefined();
    expect(priceUsageMicros(spans[0]!.model_usage, 'claude-sonnet-4-5', {})).toBe(100 * 3 + 20 * 15);
    expect(model.countPrompts('hermes hello')).toBe(1);
    expect(ref.state.turn).toMatchObject({ turnId: `t${turns}`, messageId: `m${turns}`, runId: expect.stringMatching(/^run_/) });
  });

  it('keeps one Hermes conversation per session: a follow-up run sees the earlier turn', { timeout: 120_000 }, async () => {
    model.setScript([
      { match: 'remember the word kumquat', steps: [{ text: 'remembered' }] },
      { match: 'which word was it', steps: [{ text: 'kumquat' }] },
    ]);
    const { adapter, ctx, ref } = await opened('follow-up');
    expect(await adapter.runTurn(ctx, ref, message('remember the word kumquat'), sinkFor(ref))).toEqual({ status: 'end_turn' });
    expect(await adapter.runTurn(ctx, ref, message('which word was it'), sinkFor(ref))).toEqual({ status: 'end_turn' });
    model.setScript([{ match: 'and once more', steps: [{ text: 'still kumquat' }] }]);
    expect(await adapter.runTurn(ctx, ref, message('and once more'), sinkFor(ref))).toEqual({ status: 'end_turn' });
    const seen = (prompt: string) => (model.requestsFor(prompt)[0]!.body as { messages: Array<{ role: string; content: unknown }> }).messages.filter((m) => m.role !== 'system').map((m) => [m.role, m.content]);
    expect(seen('which word was it')).toEqual([
      ['user', 'remember the word kumquat'],
      ['assistant', 'remembered'],
      ['user', 'which word was it'],
    ]);
    expect(seen('and once more')).toEqual([
      ['user', 'remember the word kumquat'],
      ['assistant', 'remembered'],
      ['user', 'which word was it'],
      ['assistant', 'kumquat'],
      ['user', 'and once more'],
    ]);
  });

  it('sends every tool call through the gate: a denied terminal call is blocked, an allowed write runs', { timeout: 120_000 }, async () => {
    const file = join(hermes.home, 'allowed.txt');
    const marker = join(hermes.home, 'denied-ran.txt');
    model.setScript([
      {
        match: 'gate two tools',
        steps: [{ tool: 'terminal', input: { command: `touch ${marker}` } }, { tool: 'write_file', input: { path: file, content: 'written by hermes\n' } }, { text: 'tools done' }],
      },
    ]);
    const { adapter, ctx, ref } = await opened('gate');
    const sink = sinkFor(ref, (r) => (r.tool === 'bash' ? 'deny' : 'allow'));
    expect(await adapter.runTurn(ctx, ref, message('gate two tools'), sink)).toEqual({ status: 'end_turn' });
    expect(sink.requests.map((r) => [r.tool, r.input])).toEqual([
      ['bash', { command: `touch ${marker}` }],
      ['write', { path: file, content: 'written by hermes\n' }],
    ]);
    expect(existsSync(marker)).toBe(false);
    expect(await readFile(file, 'utf8')).toBe('written by hermes\n');
    const uses = sink.of('agent.tool_use');
    expect(uses.map((u) => [u.name, u.evaluated_permission])).toEqual([
      ['bash', 'deny'],
      ['write', 'allow'],
    ]);
    expect(sink.of('agent.tool_result').map((r) => [r.tool_use_id, r.is_error])).toEqual([
      [uses[0]!.tool_use_id, true],
      [uses[1]!.tool_use_id, false],
    ]);
    expect(texts(sink.events, 'agent.message').at(-1)).toBe('tools done');
  });

  it('a bash command longer than 4,000 characters reaches the policy whole, secret-shaped text included, so a deny cannot be dodged by padding', { timeout: 120_000 }, async () => {
    const marker = join(hermes.home, 'padded-ran.txt');
    // the part a deny rule would match sits past the 4,000 characters the gate used to pass on
    const command = `echo ${'x'.repeat(4500)} sk-ant-api03-notarealkeybutshapedlikeone && touch ${marker}`;
    model.setScript([{ match: 'padded command', steps: [{ tool: 'terminal', input: { command } }, { text: 'padded done' }] }]);
    // a team deny: the turn also proves the adapter finds the gate loaded on this server
    const { adapter, ctx, ref } = await opened('padded', undefined, { rules: [{ tool: 'bash', pattern: '*touch*', action: 'deny', source: 'team' }], default: 'allow' });
    const sink = sinkFor(ref, (r) => (String(r.input.command).includes('touch') ? 'deny' : 'allow'));
    expect(await adapter.runTurn(ctx, ref, message('padded command'), sink)).toEqual({ status: 'end_turn' });
    expect(sink.requests.map((r) => r.input.command)).toEqual([command]);
    expect(sink.of('agent.tool_use').map((u) => [u.input.command, u.evaluated_permission])).toEqual([[command, 'deny']]);
    expect(existsSync(marker)).toBe(false);
    // the gate's marker tool is never offered to the model
    const offered = (model.requestsFor('padded command')[0]!.body as { tools?: Array<{ function: { name: string } }> }).tools?.map((t) => t.function.name) ?? [];
    expect(offered).toContain('terminal');
    expect(offered).not.toContain('agentplane_gate_probe');
  });

  it('a call whose arguments are too long to show whole is refused and recorded as denied, never shown cut', { timeout: 120_000 }, async () => {
    const marker = join(hermes.home, 'huge-ran.txt');
    const command = `echo ${'x'.repeat(1024 * 1024)} && touch ${marker}`;
    model.setScript([{ match: 'huge command', steps: [{ tool: 'terminal', input: { command } }, { text: 'huge done' }] }]);
    const { adapter, ctx, ref } = await opened('huge');
    const sink = sinkFor(ref);
    expect(await adapter.runTurn(ctx, ref, message('huge command'), sink)).toEqual({ status: 'end_turn' });
    // the policy was never asked about a call it could not see whole
    expect(sink.requests).toEqual([]);
    const uses = sink.of('agent.tool_use');
    expect(uses.map((u) => [u.name, u.input, u.evaluated_permission])).toEqual([['bash', {}, 'deny']]);
    const results = sink.of('agent.tool_result');
    expect(results.map((r) => [r.tool_use_id, r.is_error])).toEqual([[uses[0]!.tool_use_id, true]]);
    expect(results[0]!.content[0]!.text).toMatch(/refused: the call's arguments are \d+ bytes, more than the 1048576/);
    expect(existsSync(marker)).toBe(false);
  });

  it('parks on ask with the run blocked, and the resume turn answers and reads on', { timeout: 120_000 }, async () => {
    const file = join(hermes.home, 'asked.txt');
    model.setScript([{ match: 'ask before writing', steps: [{ tool: 'write_file', input: { path: file, content: 'approved\n' } }, { text: 'wrote after approval' }] }]);
    const { adapter, ctx, ref } = await opened('ask');
    const sink = sinkFor(ref, () => 'ask');
    const first = await adapter.runTurn(ctx, ref, message('ask before writing'), sink);
    expect(first.status).toBe('requires_action');
    const pending = (first as { pending: Array<{ requestId: string; toolUseId: string }> }).pending;
    expect(pending).toEqual([{ requestId: expect.any(String), toolUseId: `tu_${pending[0]!.requestId}` }]);
    expect(existsSync(file)).toBe(false);
    const runId = (ref.state.turn as { runId: string }).runId;
    const status = await fetch(`${hermes.url}/v1/runs/${runId}`, { headers: { authorization: `Bearer ${hermes.apiKey}` } }).then((r) => r.json() as Promise<{ status: string }>);
    expect(status.status).toBe('waiting_for_approval');

    const resumed = await adapter.runTurn(ctx, ref, { kind: 'resume', turnId: `t${turns}`, decisions: [{ requestId: pending[0]!.requestId, behavior: 'allow' }] }, sink);
    expect(resumed).toEqual({ status: 'end_turn' });
    expect(await readFile(file, 'utf8')).toBe('approved\n');
    expect(sink.of('agent.tool_result').map((r) => r.is_error)).toEqual([false]);
    expect(texts(sink.events, 'agent.message').at(-1)).toBe('wrote after approval');
  });

  it('stops the run when the turn is interrupted', { timeout: 120_000 }, async () => {
    const gate = createGate();
    model.setScript([{ match: 'a long hermes job', steps: [{ text: 'never said', waitFor: gate.promise }] }]);
    try {
      const { adapter, ctx, ref } = await opened('stop');
      const sink = sinkFor(ref);
      const running = adapter.runTurn(ctx, ref, message('a long hermes job'), sink);
      await model.waitForRequest((r) => r.prompt === 'a long hermes job', 60_000);
      sink.abort();
      expect(await running).toEqual({ status: 'interrupted' });
      const runId = (ref.state.turn as { runId: string }).runId;
      const status = await fetch(`${hermes.url}/v1/runs/${runId}`, { headers: { authorization: `Bearer ${hermes.apiKey}` } }).then((r) => r.json() as Promise<{ status: string }>);
      expect(['stopping', 'cancelled']).toContain(status.status);
      expect(texts(sink.events, 'agent.message')).toEqual([]);
    } finally {
      gate.release();
    }
  });

  it('reattaches a turn retried after its worker died and never sends the prompt again', { timeout: 150_000 }, async () => {
    const gate = createGate();
    model.setScript([{ match: 'held hermes job', steps: [{ tool: 'read_file', input: { path: join(hermes.home, 'config.yaml') } }, { text: 'finished after the crash', waitFor: gate.promise }] }]);
    try {
      const { ctx, ref } = await opened('reattach');
      const first = createHermesAdapter({ pollMs: 200, settleMs: 1000, egress: localEgress() });
      const sink = sinkFor(ref);
      const running = first.runTurn(ctx, ref, message('held hermes job'), sink).catch((err: Error) => err);
      await model.waitForRequest((r) => r.prompt === 'held hermes job' && r.stepIndex === 1, 60_000);
      await eventually(async () => (sink.of('agent.tool_result').length > 0 ? true : undefined), { timeoutMs: 30_000 });
      // the worker dies: everything it does from now on fails
      const saved = structuredClone(ref.state);
      const dead = async () => {
        throw new Error('worker died');
      };
      sink.emit = dead;
      sink.checkpoint = dead;
      expect(saved).toMatchObject({ turn: { runId: expect.stringMatching(/^run_/), messageId: `m${turns}` } });
      // Hermes 0.19 frames carry no ids, so there is no Last-Event-ID to resume from: the status carries the end
      expect((saved.turn as { lastEventId: string | null }).lastEventId).toBeNull();

      const retried: RuntimeSessionRef = { ...ref, state: saved };
      const second = createHermesAdapter({ pollMs: 200, settleMs: 1000, egress: localEgress() });
      const sink2 = sinkFor(retried);
      const input: TurnInput = { kind: 'message', turnId: `t${turns}`, messageId: `m${turns}`, text: 'held hermes job' };
      const resumed = second.runTurn(ctx, await second.open(ctx, retried), input, sink2);
      gate.release();
      expect(await resumed).toEqual({ status: 'end_turn' });
      expect(texts(sink2.events, 'agent.message')).toContain('finished after the crash');
      expect(sink2.of('span.model_request_end')).toHaveLength(1);
      await running;
      expect(model.countPrompts('held hermes job')).toBe(1);
    } finally {
      gate.release();
    }
  });

  it('keeps the API server key out of state, events and errors', { timeout: 120_000 }, async () => {
    model.setScript([{ match: 'secret hermes work', steps: [{ tool: 'read_file', input: { path: join(hermes.home, 'config.yaml') } }, { text: 'kept secret' }] }]);
    const { adapter, ctx, ref } = await opened('key');
    const sink = sinkFor(ref);
    expect(await adapter.runTurn(ctx, ref, message('secret hermes work'), sink)).toEqual({ status: 'end_turn' });
    expect(JSON.stringify({ state: ref.state, checkpoints: sink.checkpoints, events: sink.events })).not.toContain(hermes.apiKey);

    const wrong = 'hermes-wrong-key-0123456789abcdef';
    const bad = await opened('badkey', wrong);
    const result = await bad.adapter.runTurn(bad.ctx, bad.ref, message('no entry'), sinkFor(bad.ref));
    expect(result).toMatchObject({ status: 'error', retryable: false });
    expect(JSON.stringify(result)).toContain('401');
    expect(JSON.stringify({ result, state: bad.ref.state })).not.toContain(wrong);
  });
});

describe.skipIf('error' in installed)('the hermes adapter against a Hermes server without the gate plugin', () => {
  let model: ScriptedModel;
  let hermes: HermesServer;

  beforeAll(async () => {
    model = await startScriptedModel();
    hermes = await startHermes({ bin: (installed as { bin: string }).bin, modelBaseUrl: model.openaiBaseUrl, gate: false });
  }, 180_000);
  afterAll(async () => {
    await hermes?.close();
    await model?.close();
  }, 60_000);

  it('decides only dangerous terminal commands, and names calls it ran against the policy', { timeout: 120_000 }, async () => {
    const junk = join(hermes.home, 'junk');
    const listed = join(hermes.home, 'listed.txt');
    model.setScript([{ match: 'ungated tools', steps: [{ tool: 'terminal', input: { command: `ls > ${listed}` } }, { tool: 'terminal', input: { command: `rm -rf ${junk}` } }, { text: 'ungated done' }] }]);
    const agent = testAgent({
      runtime: { type: 'hermes', config: {} },
      model: 'claude-sonnet-4-5',
      modelProvider: { baseUrl: hermes.url, credentialId: 'cred_1' },
      toolPolicy: { rules: [{ tool: 'bash', pattern: 'rm *', action: 'ask' }, { tool: 'bash', action: 'ask' }], default: 'allow' },
    });
    const ctx: TurnContext = { sessionId: 'sesn_hermes_ungated', agent, workdir: hermes.home, secrets: { modelApiKey: hermes.apiKey } };
    const adapter = createHermesAdapter({ pollMs: 200, settleMs: 1000, egress: localEgress() });
    const ref = await adapter.open(ctx, null);
    const sink = new MemorySink((r) => (String(r.input.command).startsWith('rm ') ? 'deny' : 'ask'));
    // (an ask it cannot hold is recorded, not refused; a deny would refuse the turn, see below)
    expect(await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 't_ungated', messageId: 'm_ungated', text: 'ungated tools' }, sink)).toEqual({ status: 'end_turn' });
    // only the dangerous command came to a decision; `ls` ran without asking
    expect(sink.requests.map((r) => [r.tool, r.input.command])).toEqual([['bash', `rm -rf ${junk}`]]);
    expect(existsSync(listed)).toBe(true);
    // an unasked call is known only by Hermes's display preview of it (here `ls`, without the redirection)
    expect(sink.of('agent.tool_use').map((u) => [u.name, u.input.command, u.evaluated_permission])).toEqual([
      ['bash', expect.stringMatching(/^ls/), 'allow'],
      ['bash', `rm -rf ${junk}`, 'deny'],
    ]);
    expect(sink.of('agent.tool_result').map((r) => r.is_error)).toEqual([false, true]);
    expect(sink.of('session.error').map((e) => e.error.type)).toEqual(['policy_not_enforced']);
    expect(sink.of('session.error')[0]!.error.message).toContain('policy says ask');
  });

  it('a team or agent deny rule is not silently dropped on a Hermes server without the gate: the turn fails naming the rules, before the run starts', { timeout: 120_000 }, async () => {
    model.setScript([{ match: 'ungated deny', steps: [{ tool: 'terminal', input: { command: 'rm -rf /tmp/nothing' } }, { text: 'never' }] }]);
    const agent = testAgent({
      runtime: { type: 'hermes', config: {} },
      model: 'claude-sonnet-4-5',
      modelProvider: { baseUrl: hermes.url, credentialId: 'cred_1' },
      toolPolicy: { rules: [{ tool: 'bash', pattern: 'rm *', action: 'deny', source: 'team' }, { tool: 'read', action: 'allow' }, { tool: 'write', action: 'deny' }], default: 'allow' },
    });
    const ctx: TurnContext = { sessionId: 'sesn_hermes_ungated_deny', agent, workdir: hermes.home, secrets: { modelApiKey: hermes.apiKey } };
    const adapter = createHermesAdapter({ pollMs: 200, settleMs: 1000, egress: localEgress() });
    const ref = await adapter.open(ctx, null);
    const result = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 't_ungated_deny', messageId: 'm_ungated_deny', text: 'ungated deny' }, new MemorySink());
    expect(result).toEqual({
      status: 'error',
      retryable: false,
      message: expect.stringContaining('team.rules[0] bash "rm *", rules[1] write cannot be enforced on the hermes runtime: the Hermes server does not load the agentplane gate plugin'),
    });
    expect(model.countPrompts('ungated deny')).toBe(0);
  });
});

describe.skipIf('error' in installed)('the agentplane gate plugin', () => {
  it('refuses, naming the size and the limit, a call whose arguments are too long to pass whole, instead of cutting them', () => {
    const python = join(dirname((installed as { bin: string }).bin), 'python');
    const script = [
      'import importlib.util, json, sys',
      `spec = importlib.util.spec_from_file_location("gate", ${JSON.stringify(join(HERMES_GATE_PLUGIN_DIR, '__init__.py'))})`,
      'gate = importlib.util.module_from_spec(spec); spec.loader.exec_module(gate)',
      'for n in (5000, 2 * 1024 * 1024):',
      '    print(json.dumps(gate._gate(tool_name="terminal", tool_call_id="call_%d" % n, args={"command": "y" * n})))',
    ].join('\n');
    const [short, long] = execFileSync(python, ['-c', script], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }).trim().split('\n').map((line) => JSON.parse(line) as { action: string; message: string });
    for (const answer of [short!, long!]) {
      expect(answer.action).toBe('approve');
      expect(answer.message.startsWith(HERMES_GATE_MARKER)).toBe(true);
    }
    expect(readGateCall(short!.message.slice(HERMES_GATE_MARKER.length))).toEqual({ tool: 'terminal', call_id: 'call_5000', args: { command: 'y'.repeat(5000) } });
    const refused = readGateCall(long!.message.slice(HERMES_GATE_MARKER.length));
    expect(refused).toEqual({ tool: 'terminal', call_id: `call_${2 * 1024 * 1024}`, refuse: expect.stringContaining(`${2 * 1024 * 1024 + 15} bytes, more than the 1048576`) });
    // the description carries no part of the arguments
    expect(long!.message.length).toBeLessThan(1000);
  });

  it('refuses calls from an older gate plugin, which cut arguments at 4,000 characters', () => {
    const old = readGateCall(JSON.stringify({ tool: 'terminal', call_id: 'call_old', args: { command: `${'z'.repeat(4000)}...` } }));
    expect(old).toEqual({ tool: 'terminal', call_id: 'call_old', refuse: expect.stringContaining('outdated') });
  });
});
