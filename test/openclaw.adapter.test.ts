/**
 * The OpenClaw adapter against a real `openclaw gateway run` (OpenClaw 2026.9.6 on Node 24) and the scripted model.
 * One gateway serves the whole file (it takes 20 s or more to start), so the tests share one session and run in order:
 * a plain turn with reported cost, the key kept out of state, events, errors and the environment, a tool call and a
 * tool the policy denies (never offered to the model), an interrupt, and a retried turn that reattaches through a new
 * adapter (a lost worker) without sending the prompt again. Then, through the whole stack: an `ask` policy is refused.
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentSnapshot } from '../governance/types';
import { stopModelBridges, type SessionSandboxes } from '../runtimes/kit/session-sandbox';
import { createOpenClawAdapter, deniedOpenClawTools, openClawTool, stopOpenClawGateways } from '../runtimes/openclaw/openclaw.adapter';
import { OPENCLAW_CAPABILITIES } from '../runtimes/openclaw/descriptor';
import type { RuntimeAdapter, RuntimeSessionRef, TurnContext, TurnInput } from '../runtimes/runtime-adapter';
import { MemorySink } from './support/memory-sink';
import { openClawBinaries } from './support/openclaw';
import { testSandboxes } from './support/sandboxes';
import { createGate, startScriptedModel, type Gate, type ScriptedModel } from './support/scripted-model';
import { startStack, type Stack } from './support/stack';
import { testAgent } from './support/test-agent';

const KEY = 'sk-openclaw-test-5f3c9a0d7e1b2468';

describe('OpenClaw tool names and policy', () => {
  it('maps OpenClaw tools to canonical names', () => {
    expect(openClawTool('exec')).toBe('bash');
    expect(openClawTool('apply_patch')).toBe('edit');
    expect(openClawTool('write')).toBe('write');
    expect(openClawTool('sessions_yield')).toBe('other:sessions_yield');
  });

  it('compiles whole-tool denies into OpenClaw tool names and leaves pattern rules to the runtime', () => {
    expect(deniedOpenClawTools({ rules: [{ tool: 'bash', action: 'deny' }], default: 'allow' }).sort()).toEqual(['code_execution', 'exec', 'process']);
    expect(deniedOpenClawTools({ rules: [{ tool: 'bash', action: 'deny', pattern: 'rm *' }], default: 'allow' })).toEqual([]);
    expect(deniedOpenClawTools({ rules: [{ tool: 'read', action: 'allow' }], default: 'deny' })).not.toContain('read');
    expect(deniedOpenClawTools({ rules: [{ tool: 'read', action: 'allow' }], default: 'deny' })).toContain('write');
  });

  it('declares that its sessions run in their sandbox (sandbox: session), so the API does not mark them sandbox: none', () => {
    expect(OPENCLAW_CAPABILITIES).toMatchObject({ approvals: false, reattach: true, cost: 'priced', denies: 'whole-tool', sandbox: 'session' });
  });

  it("redacts a provider key (sk-…) from the turn's error even when it is not the session's key", { timeout: 60_000 }, async () => {
    const root = await mkdtemp(join(tmpdir(), 'agentplane-openclaw-redact-'));
    const { sandboxes } = await testSandboxes(join(root, 'data'));
    try {
      // an "openclaw" that dies at start, printing a key it found somewhere: its output ends up in the error (it runs
      // in the session's sandbox, which mounts its folder: readable by the sandbox's user)
      const bin = join(root, 'bin');
      await mkdir(bin, { mode: 0o755 });
      const script = join(bin, 'leaky-openclaw.mjs');
      await writeFile(script, "console.error('boom: upstream said sk-live-0123456789abcdefLEAK'); process.exit(1);\n", { mode: 0o644 });
      const adapter = createOpenClawAdapter({ nodeBin: process.execPath, openclawBin: script, dataDir: join(root, 'data'), sandboxes, startTimeoutMs: 30_000 });
      const agent = testAgent({ runtime: { type: 'openclaw', config: {} }, model: 'scripted-model', modelProvider: { baseUrl: 'http://127.0.0.1:9/v1', credentialId: 'cred_1' } });
      const workdir = join(root, 'data', 'sessions', 'sesn_openclaw_redact');
      await mkdir(workdir, { recursive: true });
      const ctx: TurnContext = { sessionId: 'sesn_openclaw_redact', agent, workdir, secrets: { modelApiKey: KEY } };
      const result = await adapter.runTurn(ctx, await adapter.open(ctx, null), { kind: 'message', turnId: 't1', messageId: 'm1', text: 'hi' }, new MemorySink());
      expect(result).toMatchObject({ status: 'error' });
      const message = (result as { message: string }).message;
      expect(message).toContain('boom: upstream said [redacted]');
      expect(message).not.toContain('0123456789abcdefLEAK');
    } finally {
      await sandboxes.closeAll();
      await stopModelBridges(join(root, 'data', 'run'));
      await rm(root, { recursive: true, force: true });
    }
  });

  it('declares no approvals, and priced cost (its reported cost is a cross-check)', () => {
    expect(OPENCLAW_CAPABILITIES).toMatchObject({ approvals: false, interrupt: true, cost: 'priced' });
  });
});

const { binaries } = openClawBinaries();

describe.skipIf(!binaries)('OpenClaw adapter (real gateway + scripted model)', () => {
  let model: ScriptedModel;
  let root: string;
  /** the session's workspace, below the data dir as a worker's are */
  let workdir: string;
  /** the adapter's data dir: the session's OpenClaw state, outside its workspace */
  let dataDir: string;
  /** the sessions' sandboxes, as a worker makes them: every adapter of the file (a new one stands for a new worker) */
  let sandboxes: SessionSandboxes;
  let adapter: RuntimeAdapter;
  let ref: RuntimeSessionRef;
  const gates: Gate[] = [];
  let turns = 0;
  const ownPolicy: AgentSnapshot['toolPolicy'] = { rules: [{ tool: 'write', action: 'deny' }], default: 'allow' };
  // the session's current policy, as the activity passes it: a test may add a team rule mid-session
  let policy = ownPolicy;
  const message = (text: string): TurnInput => ({ kind: 'message', turnId: `t${++turns}`, messageId: `m${turns}-${Date.now()}`, text });

  function context(): TurnContext {
    const agent: AgentSnapshot = {
      agentId: 'agent_local',
      version: 1,
      teamId: 'team_1',
      name: 'openclaw worker',
      runtime: { type: 'openclaw', config: {} },
      model: 'scripted-model',
      modelProvider: { baseUrl: model.openaiBaseUrl, credentialId: 'cred_1' },
      system: null,
      toolPolicy: policy,
      budget: {},
      approvalTimeoutSeconds: 60,
      idleTimeoutSeconds: 600,
      separationOfDuties: false,
    };
    return { sessionId: 'sesn_openclaw_test', agent, workdir, secrets: { modelApiKey: KEY } };
  }

  // OpenClaw prefixes the prompt with a timestamp, so requests are found by substring
  const requestsFor = (prompt: string) => model.requests.filter((r) => r.prompt?.includes(prompt) === true);
  const timesSent = (prompt: string) => requestsFor(prompt).filter((r) => r.stepIndex === 0).length;

  async function run(sink: MemorySink, input: TurnInput, using = adapter) {
    const result = await using.runTurn(context(), ref, input, sink);
    if (sink.checkpoints.length > 0) ref = { ...ref, state: sink.checkpoints.at(-1)! };
    return result;
  }

  beforeAll(async () => {
    model = await startScriptedModel();
    root = await mkdtemp(join(tmpdir(), 'agentplane-openclaw-'));
    dataDir = join(root, 'data');
    workdir = join(dataDir, 'sessions', 'sesn_openclaw_test');
    await mkdir(workdir, { recursive: true });
    ({ sandboxes } = await testSandboxes(dataDir));
    // what OpenClaw computes its own cost with (agentplane charges from its tokens; the figure is a cross-check)
    adapter = createOpenClawAdapter({ ...binaries!, dataDir, sandboxes, prices: { 'scripted-model': { input: 3, output: 15 } } });
    ref = await adapter.open(context(), null);
  });
  afterAll(async () => {
    for (const gate of gates) gate.release();
    await adapter?.close(ref);
    await model?.close();
    if (!root) return;
    // gateways outlive their worker by design: stop whatever a failed test left behind before deleting its data
    await stopOpenClawGateways(dataDir);
    await sandboxes?.closeAll();
    await stopModelBridges(join(dataDir, 'run'));
    await rm(root, { recursive: true, force: true });
  }, 60_000);

  it('runs a plain turn: agent.message, a span with the reported cost, end_turn; the key reaches the model and is kept out of everything else', { timeout: 600_000 }, async () => {
    model.setScript([{ match: 'openclaw hello', steps: [{ text: 'hello from openclaw' }] }]);
    const sink = new MemorySink();
    const result = await run(sink, message('openclaw hello'));
    expect(result).toEqual({ status: 'end_turn' });
    expect(sink.of('agent.message').map((e) => e.content[0]!.text)).toContain('hello from openclaw');
    const spans = sink.of('span.model_request_end');
    expect(spans).toHaveLength(1);
    expect(spans[0]).toMatchObject({ model: 'scripted-model', is_error: false, model_usage: { input_tokens: 100, output_tokens: 20 } });
    // 100 input tokens at $3/M + 20 output tokens at $15/M, priced by OpenClaw itself
    expect(spans[0]!.cost_usd).toBeCloseTo(0.0006, 8);

    const request = requestsFor('openclaw hello')[0]!;
    expect(request.headers.authorization).toBe(`Bearer ${KEY}`);
    // the config with the key is the runtime's, outside the workspace the agent works in
    const config = join(dataDir, 'openclaw', 'sesn_openclaw_test', 'home', 'openclaw.json');
    expect(readdirSync(workdir)).not.toContain('.openclaw');
    expect(statSync(config).mode & 0o777).toBe(0o600);
    expect(readFileSync(config, 'utf8')).toContain(KEY);
    expect(JSON.stringify(ref.state)).not.toContain(KEY);
    expect(JSON.stringify(sink.checkpoints)).not.toContain(KEY);
    expect(JSON.stringify(sink.events)).not.toContain(KEY);
    expect(timesSent('openclaw hello')).toBe(1);
  });

  it('runs an allowed exec call live, and never offers a tool the policy denies', { timeout: 300_000 }, async () => {
    const file = join(workdir, 'denied.txt');
    model.setScript([
      {
        match: 'openclaw tools',
        steps: [{ tool: 'exec', input: { command: 'echo from-exec' } }, { tool: 'write', input: { path: file, content: 'no' } }, { text: 'tools done' }],
      },
    ]);
    const sink = new MemorySink();
    expect(await run(sink, message('openclaw tools'))).toEqual({ status: 'end_turn' });
    expect(requestsFor('openclaw tools')[0]!.body).toMatchObject({ tools: expect.not.arrayContaining([expect.objectContaining({ function: expect.objectContaining({ name: 'write' }) })]) });
    const uses = sink.of('agent.tool_use');
    expect(uses.map((u) => [u.name, u.evaluated_permission])).toEqual([
      ['bash', 'allow'],
      ['write', 'deny'],
    ]);
    expect(uses[0]!.input).toEqual({ command: 'echo from-exec' });
    const results = sink.of('agent.tool_result');
    expect(results.map((r) => [r.tool_use_id, r.is_error])).toEqual([
      [uses[0]!.tool_use_id, false],
      [uses[1]!.tool_use_id, true],
    ]);
    expect(results[0]!.content[0]!.text).toContain('from-exec');
    expect(sink.of('session.error')).toEqual([]);
    expect(() => statSync(file)).toThrow();
    // a span with its cost for the exec request and the final answer (see the skipped test below for the third)
    const spans = sink.of('span.model_request_end');
    expect(spans.length).toBeGreaterThanOrEqual(2);
    expect(spans.every((span) => (span.cost_usd ?? 0) > 0)).toBe(true);
  });

  // Known gap, not fixed yet: the model request whose tool call named a tool the policy removed (`write`) has no usage
  // in OpenClaw's `chat.history`, so its tokens and cost are not reported (3 model requests, 2 spans).
  it.skip('reports one span per model request, also for a request that called a removed tool', () => {});

  it('stops a turn when the sink signal aborts and returns interrupted', { timeout: 300_000 }, async () => {
    const gate = createGate();
    gates.push(gate);
    model.setScript([{ match: 'openclaw hold', steps: [{ text: 'never said', waitFor: gate.promise }] }]);
    const sink = new MemorySink();
    const turn = run(sink, message('openclaw hold'));
    await model.waitForRequest((r) => r.prompt?.includes('openclaw hold') === true, 240_000);
    sink.abort();
    expect(await turn).toEqual({ status: 'interrupted' });
    expect(sink.of('agent.message').map((e) => e.content[0]!.text)).not.toContain('never said');
  });

  it('a retried turn reattaches through a new adapter (lost worker) and never sends the prompt again', { timeout: 300_000 }, async () => {
    model.setScript([{ match: 'openclaw retry', steps: [{ text: 'answered once' }] }]);
    const input = message('openclaw retry');
    const first = new MemorySink();
    expect(await run(first, input)).toEqual({ status: 'end_turn' });
    expect(ref.state.turn).toMatchObject({ turnId: input.turnId, sent: true });

    const second = new MemorySink();
    const next = createOpenClawAdapter({ ...binaries!, dataDir, sandboxes });
    expect(await run(second, input, next)).toEqual({ status: 'end_turn' });
    expect(timesSent('openclaw retry')).toBe(1);
    // the replay carries the same sourceIds as the first attempt, so the event log keeps one copy
    expect(second.of('agent.message').map((e) => e.sourceId)).toEqual(first.of('agent.message').map((e) => e.sourceId));
    expect(second.of('span.model_request_end').map((e) => e.sourceId)).toEqual(first.of('span.model_request_end').map((e) => e.sourceId));
  });

  it('a team deny added mid-session reaches the gateway: the next turn (on another worker) runs without the tool, and the gateway is not restarted again', { timeout: 600_000 }, async () => {
    const marker = join(workdir, 'ran-after-deny.txt');
    model.setScript([
      { match: 'openclaw after the deny', steps: [{ tool: 'exec', input: { command: `touch ${marker}` } }, { text: 'tried' }] },
      { match: 'openclaw still denied', steps: [{ text: 'fine' }] },
    ]);
    const before = ref.state.pid;
    expect(before).toEqual(expect.any(Number));
    policy = { rules: [{ tool: 'bash', action: 'deny', source: 'team' }, ...ownPolicy.rules], default: 'allow' };
    // a new worker: the gateway it finds was started by another, and is stopped by its recorded pid
    const next = createOpenClawAdapter({ ...binaries!, dataDir, sandboxes });
    try {
      const sink = new MemorySink();
      expect(await run(sink, message('openclaw after the deny'), next)).toEqual({ status: 'end_turn' });
      const offered = (requestsFor('openclaw after the deny')[0]!.body as { tools: Array<{ function: { name: string } }> }).tools.map((t) => t.function.name);
      expect(offered).not.toContain('exec');
      expect(offered).not.toContain('process');
      expect(offered).not.toContain('write');
      expect(() => statSync(marker)).toThrow();
      const restarted = ref.state.pid;
      expect(restarted).not.toBe(before);
      // the same policy on the next turn: the gateway already enforces it
      expect(await run(new MemorySink(), message('openclaw still denied'), next)).toEqual({ status: 'end_turn' });
      expect(ref.state.pid).toBe(restarted);
    } finally {
      policy = ownPolicy;
      await next.close(ref);
    }
  });

  it('keeps the key out of errors', { timeout: 60_000 }, async () => {
    const broken = createOpenClawAdapter({ nodeBin: binaries!.nodeBin, openclawBin: join(root, 'missing.mjs'), dataDir, sandboxes, startTimeoutMs: 30_000 });
    const other = join(dataDir, 'sessions', 'sesn_openclaw_broken');
    await mkdir(other, { recursive: true });
    const ctx = { ...context(), sessionId: 'sesn_openclaw_broken', workdir: other };
    const result = await broken.runTurn(ctx, await broken.open(ctx, null), message('openclaw broken'), new MemorySink());
    expect(result).toMatchObject({ status: 'error', retryable: false });
    expect((result as { message: string }).message).toContain('missing.mjs');
    expect(JSON.stringify(result)).not.toContain(KEY);
    await broken.close(await broken.open(ctx, null));
  });
});

describe('openclaw through the whole stack', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ worker: false });
  }, 120_000);
  afterAll(async () => {
    await stack?.stop();
  }, 60_000);

  it('refuses an ask policy for the openclaw runtime, naming the field', async () => {
    const res = await stack.call('POST', '/v1/agents', {
      name: 'openclaw asks',
      model: 'scripted-model',
      runtime: { type: 'openclaw', config: {} },
      model_provider: { base_url: 'http://203.0.113.10/v1' },
      tool_policy: { rules: [{ tool: 'write', action: 'ask' }], default: 'allow' },
    });
    expect(res.status).toBe(400);
    expect(JSON.stringify(res.body)).toContain('body.tool_policy');
  });
});
