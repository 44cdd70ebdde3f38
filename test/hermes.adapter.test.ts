/**
 * The Hermes adapter with a real Hermes Agent (hermes-agent from PyPI, installed by scripts/ensure-hermes.sh) in each
 * session's bubblewrap sandbox, its model the scripted model through the sandbox's model bridge: a turn with usage, the
 * gate plugin's approvals (allow, deny, ask → resume), stop, a turn retried by a new adapter (the prompt reaches the
 * model once), the keys kept out of state, events, errors and the workspace, and a gate that survives what a tool
 * writes into the state. Sessions are few (each starts a Hermes, which takes seconds). Skipped, loudly, only when
 * Hermes could not be installed.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { priceUsageMicros } from '../governance/pricing';
import { HERMES_CAPABILITIES } from '../runtimes/hermes/descriptor';
import { HERMES_GATE_MARKER, HERMES_GATE_PLUGIN_DIR, createHermesAdapter, hermesTool, readGateCall, stopHermesServers } from '../runtimes/hermes/hermes.adapter';
import { SILENT_LOGGER } from '../runtimes/kit/log';
import { createBubblewrapProvider } from '../runtimes/kit/sandbox/bubblewrap';
import { fetchThrough, sandboxDispatcher } from '../runtimes/kit/sandbox/provider';
import { createSessionSandboxes, stopModelBridges, type SessionSandboxes } from '../runtimes/kit/session-sandbox';
import type { PermissionRequest, RuntimeAdapter, RuntimeEvent, RuntimeSessionRef, TurnContext, TurnInput } from '../runtimes/runtime-adapter';
import { ensureHermes } from './support/hermes';
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

  it('declares approvals, interrupt, reattach, priced cost, and a session sandbox', () => {
    expect(HERMES_CAPABILITIES).toEqual({ approvals: true, interrupt: true, reattach: true, cost: 'priced', streaming: true, denies: 'any', sandbox: 'session', gateway: true, portable: 'snapshot' });
  });
});

/** A worker's sessions' sandboxes, as the stack makes them: bubblewrap, the local scripted model reachable. */
async function sandboxesIn(root: string): Promise<SessionSandboxes> {
  // the sandboxes' users resolve their state below it (mkdtemp made it private)
  await chmod(root, 0o711);
  return createSessionSandboxes({ provider: createBubblewrapProvider({ logger: SILENT_LOGGER }), egress: localEgress(), runDir: join(root, 'run'), onDenied: () => {} });
}

describe.skipIf('error' in installed)('the hermes adapter with Hermes in its session\'s sandbox', () => {
  let model: ScriptedModel;
  let root: string;
  let sandboxes: SessionSandboxes;
  let adapter: RuntimeAdapter;
  let turns = 0;
  /** the session most tests share (each Hermes takes seconds to start): its ref, as the activity keeps it */
  let ref: RuntimeSessionRef;
  const MODEL_KEY = `sk-hermes-model-${Math.random().toString(36).slice(2)}`;

  const make = () => createHermesAdapter({ binaryPath: (installed as { bin: string }).bin, dataDir: root, sandboxes, pollMs: 200, settleMs: 1000 });

  beforeAll(async () => {
    model = await startScriptedModel();
    root = await mkdtemp(join(tmpdir(), 'agentplane-hermes-'));
    sandboxes = await sandboxesIn(root);
    adapter = make();
    ref = await adapter.open(context('main'), null);
  }, 180_000);
  afterAll(async () => {
    await sandboxes?.closeAll();
    await stopHermesServers(root);
    await stopModelBridges(join(root, 'run'));
    await model?.close();
    await rm(root, { recursive: true, force: true });
  }, 60_000);

  function context(name: string, toolPolicy?: TurnContext['agent']['toolPolicy']): TurnContext {
    const agent = testAgent({ runtime: { type: 'hermes', config: {} }, model: 'claude-sonnet-4-5', modelProvider: { baseUrl: model.openaiBaseUrl, credentialId: 'cred_1' }, ...(toolPolicy ? { toolPolicy } : {}) });
    return { sessionId: `sesn_hermes_${name}`, agent, workdir: join(root, 'sessions', name), secrets: { modelApiKey: MODEL_KEY } };
  }
  /** the main session's workspace on the host (/workspace inside) */
  const workspace = (file: string) => join(root, 'sessions', 'main', file);

  const message = (text: string): TurnInput => ({ kind: 'message', turnId: `t${++turns}`, messageId: `m${turns}`, text });
  const texts = (events: RuntimeEvent[], type: string) => events.filter((e) => e.type === type).map((e) => (e as any).content.map((c: any) => c.text).join(''));

  /** a sink that writes checkpoints into the ref, as the activity does */
  function sinkFor(r: RuntimeSessionRef, policy?: (req: PermissionRequest) => 'allow' | 'deny' | 'ask') {
    const sink = new MemorySink(policy);
    const checkpoint = sink.checkpoint.bind(sink);
    sink.checkpoint = async (state) => {
      r.state = state;
      await checkpoint(state);
    };
    return sink;
  }

  /** the server's record, as the worker keeps it (outside the sandbox) */
  const serverFile = async (name = 'main') => JSON.parse(await readFile(join(root, 'hermes', `sesn_hermes_${name}`, 'server.json'), 'utf8')) as { key: string; port: number };
  /** a request to the main session's Hermes, the way the worker makes it: through the sandbox's bridge */
  async function hermesGet(path: string, key?: string): Promise<Response> {
    const { port } = await serverFile();
    const sandbox = await sandboxes.open({ sessionId: 'sesn_hermes_main', workspace: workspace(''), state: join(root, 'hermes', 'sesn_hermes_main', 'home'), networking: { type: 'unrestricted' } });
    const dispatcher = sandboxDispatcher(sandbox.sandbox, port);
    try {
      const res = await fetchThrough(dispatcher, `http://127.0.0.1:${port}${path}`, { headers: key ? { authorization: `Bearer ${key}` } : {} });
      await res.clone().text();
      return res;
    } finally {
      void dispatcher.close();
    }
  }

  it('answers a message and reports the run usage as one span priced by the table', { timeout: 120_000 }, async () => {
    model.setScript([{ match: 'hermes hello', steps: [{ text: 'hello from hermes' }] }]);
    const ctx = context('main');
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
    // the LLM is the agent's model provider, reached with the agent's model and key (through the sandbox's bridge)
    const request = model.requestsFor('hermes hello')[0]!;
    expect((request.body as { model?: string }).model).toBe('claude-sonnet-4-5');
    expect(JSON.stringify(request.headers)).toContain(MODEL_KEY);
  });

  it('keeps one Hermes conversation per session: a follow-up run sees the earlier turn', { timeout: 180_000 }, async () => {
    model.setScript([
      { match: 'remember the word kumquat', steps: [{ text: 'remembered' }] },
      { match: 'which word was it', steps: [{ text: 'kumquat' }] },
    ]);
    const ctx = context('follow-up');
    const own = await adapter.open(ctx, null);
    try {
      expect(await adapter.runTurn(ctx, own, message('remember the word kumquat'), sinkFor(own))).toEqual({ status: 'end_turn' });
      expect(await adapter.runTurn(ctx, own, message('which word was it'), sinkFor(own))).toEqual({ status: 'end_turn' });
      model.setScript([{ match: 'and once more', steps: [{ text: 'still kumquat' }] }]);
      expect(await adapter.runTurn(ctx, own, message('and once more'), sinkFor(own))).toEqual({ status: 'end_turn' });
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
    } finally {
      await adapter.close(own);
    }
  });

  it('sends every tool call through the gate: a denied terminal call is blocked, an allowed write runs', { timeout: 120_000 }, async () => {
    model.setScript([
      {
        match: 'gate two tools',
        steps: [{ tool: 'terminal', input: { command: 'touch /workspace/denied-ran.txt' } }, { tool: 'write_file', input: { path: '/workspace/allowed.txt', content: 'written by hermes\n' } }, { text: 'tools done' }],
      },
    ]);
    const sink = sinkFor(ref, (r) => (r.tool === 'bash' ? 'deny' : 'allow'));
    expect(await adapter.runTurn(context('main'), ref, message('gate two tools'), sink)).toEqual({ status: 'end_turn' });
    expect(sink.requests.map((r) => [r.tool, r.input])).toEqual([
      ['bash', { command: 'touch /workspace/denied-ran.txt' }],
      ['write', { path: '/workspace/allowed.txt', content: 'written by hermes\n' }],
    ]);
    expect(existsSync(workspace('denied-ran.txt'))).toBe(false);
    expect(await readFile(workspace('allowed.txt'), 'utf8')).toBe('written by hermes\n');
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
    // the part a deny rule would match sits past the 4,000 characters the gate used to pass on
    const command = `echo ${'x'.repeat(4500)} sk-ant-api03-notarealkeybutshapedlikeone && touch /workspace/padded-ran.txt`;
    model.setScript([{ match: 'padded command', steps: [{ tool: 'terminal', input: { command } }, { text: 'padded done' }] }]);
    // a team deny: the turn also proves the adapter finds the gate loaded on this server
    const ctx = context('main', { rules: [{ tool: 'bash', pattern: '*touch*', action: 'deny', source: 'team' }], default: 'allow' });
    const sink = sinkFor(ref, (r) => (String(r.input.command).includes('touch') ? 'deny' : 'allow'));
    expect(await adapter.runTurn(ctx, ref, message('padded command'), sink)).toEqual({ status: 'end_turn' });
    expect(sink.requests.map((r) => r.input.command)).toEqual([command]);
    expect(sink.of('agent.tool_use').map((u) => [u.input.command, u.evaluated_permission])).toEqual([[command, 'deny']]);
    expect(existsSync(workspace('padded-ran.txt'))).toBe(false);
    // the gate's marker tool is never offered to the model
    const offered = (model.requestsFor('padded command')[0]!.body as { tools?: Array<{ function: { name: string } }> }).tools?.map((t) => t.function.name) ?? [];
    expect(offered).toContain('terminal');
    expect(offered).not.toContain('agentplane_gate_probe');
  });

  it('a call whose arguments are too long to show whole is refused and recorded as denied, never shown cut', { timeout: 120_000 }, async () => {
    const command = `echo ${'x'.repeat(1024 * 1024)} && touch /workspace/huge-ran.txt`;
    model.setScript([{ match: 'huge command', steps: [{ tool: 'terminal', input: { command } }, { text: 'huge done' }] }]);
    const sink = sinkFor(ref);
    expect(await adapter.runTurn(context('main'), ref, message('huge command'), sink)).toEqual({ status: 'end_turn' });
    // the policy was never asked about a call it could not see whole
    expect(sink.requests).toEqual([]);
    const uses = sink.of('agent.tool_use');
    expect(uses.map((u) => [u.name, u.input, u.evaluated_permission])).toEqual([['bash', {}, 'deny']]);
    const results = sink.of('agent.tool_result');
    expect(results.map((r) => [r.tool_use_id, r.is_error])).toEqual([[uses[0]!.tool_use_id, true]]);
    expect(results[0]!.content[0]!.text).toMatch(/refused: the call's arguments are \d+ bytes, more than the 1048576/);
    expect(existsSync(workspace('huge-ran.txt'))).toBe(false);
  });

  it('parks on ask with the run blocked, and the resume turn answers and reads on', { timeout: 120_000 }, async () => {
    model.setScript([{ match: 'ask before writing', steps: [{ tool: 'write_file', input: { path: '/workspace/asked.txt', content: 'approved\n' } }, { text: 'wrote after approval' }] }]);
    const ctx = context('main');
    const sink = sinkFor(ref, () => 'ask');
    const first = await adapter.runTurn(ctx, ref, message('ask before writing'), sink);
    expect(first.status).toBe('requires_action');
    const pending = (first as { pending: Array<{ requestId: string; toolUseId: string }> }).pending;
    expect(pending).toEqual([{ requestId: expect.any(String), toolUseId: `tu_${pending[0]!.requestId}` }]);
    expect(existsSync(workspace('asked.txt'))).toBe(false);
    const runId = (ref.state.turn as { runId: string }).runId;
    const status = (await (await hermesGet(`/v1/runs/${runId}`, (await serverFile()).key)).json()) as { status: string };
    expect(status.status).toBe('waiting_for_approval');

    const resumed = await adapter.runTurn(ctx, ref, { kind: 'resume', turnId: `t${turns}`, decisions: [{ requestId: pending[0]!.requestId, behavior: 'allow' }] }, sink);
    expect(resumed).toEqual({ status: 'end_turn' });
    expect(await readFile(workspace('asked.txt'), 'utf8')).toBe('approved\n');
    expect(sink.of('agent.tool_result').map((r) => r.is_error)).toEqual([false]);
    expect(texts(sink.events, 'agent.message').at(-1)).toBe('wrote after approval');
  });

  it('reattaches a turn retried by a new adapter after its worker died, and never sends the prompt again', { timeout: 150_000 }, async () => {
    const gate = createGate();
    model.setScript([{ match: 'held hermes job', steps: [{ tool: 'read_file', input: { path: '/workspace/allowed.txt' } }, { text: 'finished after the crash', waitFor: gate.promise }] }]);
    try {
      const ctx = context('main');
      const sink = sinkFor(ref);
      const running = adapter.runTurn(ctx, ref, message('held hermes job'), sink).catch((err: Error) => err);
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

      // a new adapter, as a new worker's: it finds the session's server from its record, in the session's sandbox
      const retried: RuntimeSessionRef = { ...ref, state: saved };
      const second = make();
      const sink2 = sinkFor(retried);
      const input: TurnInput = { kind: 'message', turnId: `t${turns}`, messageId: `m${turns}`, text: 'held hermes job' };
      const resumed = second.runTurn(ctx, await second.open(ctx, retried), input, sink2);
      gate.release();
      expect(await resumed).toEqual({ status: 'end_turn' });
      expect(texts(sink2.events, 'agent.message')).toContain('finished after the crash');
      expect(sink2.of('span.model_request_end')).toHaveLength(1);
      await running;
      expect(model.countPrompts('held hermes job')).toBe(1);
      ref = retried;
    } finally {
      gate.release();
    }
  });

  it('the API server key and the model key stay out of state, events, the workspace and the server log, and the server refuses a request without its key', { timeout: 120_000 }, async () => {
    model.setScript([{ match: 'secret hermes work', steps: [{ tool: 'read_file', input: { path: '/workspace/allowed.txt' } }, { text: 'kept secret' }] }]);
    const sink = sinkFor(ref);
    expect(await adapter.runTurn(context('main'), ref, message('secret hermes work'), sink)).toEqual({ status: 'end_turn' });
    const { key } = await serverFile();
    const sessionDir = join(root, 'hermes', 'sesn_hermes_main');
    const kept = JSON.stringify({ state: ref.state, checkpoints: sink.checkpoints, events: sink.events }) + (await readFile(join(sessionDir, 'server.log'), 'utf8'));
    for (const secret of [key, MODEL_KEY]) expect(kept).not.toContain(secret);
    // the server's record is the worker's (outside the state the sandbox mounts), Hermes's config the state's: both 600
    expect(statSync(join(sessionDir, 'server.json')).mode & 0o777).toBe(0o600);
    expect(statSync(join(sessionDir, 'home', 'config.yaml')).mode & 0o777).toBe(0o600);
    // nothing in the workspace holds the model key (grep: no file listed)
    expect(spawnSync('grep', ['-rlF', MODEL_KEY, workspace('')], { encoding: 'utf8' }).stdout).toBe('');
    expect((await hermesGet('/v1/runs/run_none')).status).toBe(401);
    expect((await hermesGet('/v1/runs/run_none', 'hermes-wrong-key-0123456789abcdef')).status).toBe(401);
  });

  it('a tool that rewrites Hermes\'s config, .env and plugins in the state cannot switch the gate off: the next start makes them again', { timeout: 240_000 }, async () => {
    // allowed (the policy allows it), what an injected prompt would try: yolo mode three ways, and a plugin of its own
    const tamper = [
      'printf "HERMES_YOLO_MODE=1\\n" > /state/.env',
      'printf "HERMES_YOLO_MODE: true\\napprovals:\\n  mode: \'off\'\\nplugins:\\n  enabled: []\\n" > /state/config.yaml',
      'mkdir -p /state/plugins/mine 2>/dev/null; mv /state/plugins /state/plugins-old 2>/dev/null; mkdir -p /state/plugins/agentplane_gate',
      'printf "def register(ctx):\\n    pass\\n" > /state/plugins/agentplane_gate/__init__.py',
    ].join('; ');
    model.setScript([{ match: 'tamper with hermes', steps: [{ tool: 'terminal', input: { command: tamper } }, { text: 'tampered' }] }]);
    expect(await adapter.runTurn(context('main'), ref, message('tamper with hermes'), sinkFor(ref))).toEqual({ status: 'end_turn' });
    expect(await readFile(join(root, 'hermes', 'sesn_hermes_main', 'home', '.env'), 'utf8')).toContain('YOLO');
    // the server restarts (a new worker after a crash, or a rotated key): here the session is closed and opened again
    await adapter.close(ref);
    const ctx = context('main', { rules: [{ tool: 'bash', action: 'deny' }], default: 'allow' });
    ref = await adapter.open(ctx, ref);
    model.setScript([{ match: 'after the tampering', steps: [{ tool: 'terminal', input: { command: 'touch /workspace/tampered-ran.txt' } }, { text: 'still gated' }] }]);
    const sink = sinkFor(ref, (r) => (r.tool === 'bash' ? 'deny' : 'allow'));
    expect(await adapter.runTurn(ctx, ref, message('after the tampering'), sink)).toEqual({ status: 'end_turn' });
    expect(sink.requests.map((r) => r.tool)).toEqual(['bash']);
    expect(existsSync(workspace('tampered-ran.txt'))).toBe(false);
    expect(existsSync(join(root, 'hermes', 'sesn_hermes_main', 'home', '.env'))).toBe(false);
  });

  // last of this session's turns: Hermes sends the next run the stopped run's prompt and the next one as one user message
  it('stops the run when the turn is interrupted', { timeout: 120_000 }, async () => {
    const gate = createGate();
    model.setScript([{ match: 'a long hermes job', steps: [{ text: 'never said', waitFor: gate.promise }] }]);
    try {
      const sink = sinkFor(ref);
      const running = adapter.runTurn(context('main'), ref, message('a long hermes job'), sink);
      await model.waitForRequest((r) => r.prompt === 'a long hermes job', 60_000);
      sink.abort();
      expect(await running).toEqual({ status: 'interrupted' });
      const runId = (ref.state.turn as { runId: string }).runId;
      const status = (await (await hermesGet(`/v1/runs/${runId}`, (await serverFile()).key)).json()) as { status: string };
      expect(['stopping', 'cancelled']).toContain(status.status);
      expect(texts(sink.events, 'agent.message')).toEqual([]);
    } finally {
      gate.release();
    }
  });
});

describe.skipIf('error' in installed)('the hermes adapter with a Hermes that did not load the gate plugin', () => {
  let model: ScriptedModel;
  let root: string;
  let sandboxes: SessionSandboxes;
  let adapter: RuntimeAdapter;
  let ref: RuntimeSessionRef;

  function context(toolPolicy: TurnContext['agent']['toolPolicy']): TurnContext {
    const agent = testAgent({ runtime: { type: 'hermes', config: {} }, model: 'claude-sonnet-4-5', modelProvider: { baseUrl: model.openaiBaseUrl, credentialId: 'cred_1' }, toolPolicy });
    return { sessionId: 'sesn_hermes_ungated', agent, workdir: join(root, 'sessions', 'ungated'), secrets: { modelApiKey: 'sk-hermes-ungated-0123456789' } };
  }

  beforeAll(async () => {
    model = await startScriptedModel();
    root = await mkdtemp(join(tmpdir(), 'agentplane-hermes-'));
    sandboxes = await sandboxesIn(root);
    // a plugin that is not there: what a Hermes whose plugin failed to load looks like
    const noGate = join(root, 'no-gate');
    await mkdir(noGate);
    adapter = createHermesAdapter({ binaryPath: (installed as { bin: string }).bin, dataDir: root, sandboxes, gatePluginDir: noGate, pollMs: 200, settleMs: 1000 });
    ref = await adapter.open(context({ rules: [], default: 'allow' }), null);
  }, 180_000);
  afterAll(async () => {
    await sandboxes?.closeAll();
    await stopHermesServers(root);
    await stopModelBridges(join(root, 'run'));
    await model?.close();
    await rm(root, { recursive: true, force: true });
  }, 60_000);

  it('decides only dangerous terminal commands, and names calls it ran against the policy', { timeout: 120_000 }, async () => {
    model.setScript([{ match: 'ungated tools', steps: [{ tool: 'terminal', input: { command: 'ls > /workspace/listed.txt' } }, { tool: 'terminal', input: { command: 'rm -rf /workspace/junk' } }, { text: 'ungated done' }] }]);
    const ctx = context({ rules: [{ tool: 'bash', pattern: 'rm *', action: 'ask' }, { tool: 'bash', action: 'ask' }], default: 'allow' });
    const sink = new MemorySink((r) => (String(r.input.command).startsWith('rm ') ? 'deny' : 'ask'));
    // (an ask it cannot hold is recorded, not refused; a deny would refuse the turn, see below)
    expect(await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 't_ungated', messageId: 'm_ungated', text: 'ungated tools' }, sink)).toEqual({ status: 'end_turn' });
    // only the dangerous command came to a decision; `ls` ran without asking
    expect(sink.requests.map((r) => [r.tool, r.input.command])).toEqual([['bash', 'rm -rf /workspace/junk']]);
    expect(existsSync(join(root, 'sessions', 'ungated', 'listed.txt'))).toBe(true);
    // an unasked call is known only by Hermes's display preview of it (here `ls`, without the redirection)
    expect(sink.of('agent.tool_use').map((u) => [u.name, u.input.command, u.evaluated_permission])).toEqual([
      ['bash', expect.stringMatching(/^ls/), 'allow'],
      ['bash', 'rm -rf /workspace/junk', 'deny'],
    ]);
    expect(sink.of('agent.tool_result').map((r) => r.is_error)).toEqual([false, true]);
    expect(sink.of('session.error').map((e) => e.error.type)).toEqual(['policy_not_enforced']);
    expect(sink.of('session.error')[0]!.error.message).toContain('policy says ask');
  });

  it('a team or agent deny rule is not silently dropped on a Hermes without the gate: the turn fails naming the rules, before the run starts', { timeout: 120_000 }, async () => {
    model.setScript([{ match: 'ungated deny', steps: [{ tool: 'terminal', input: { command: 'rm -rf /tmp/nothing' } }, { text: 'never' }] }]);
    const ctx = context({ rules: [{ tool: 'bash', pattern: 'rm *', action: 'deny', source: 'team' }, { tool: 'read', action: 'allow' }, { tool: 'write', action: 'deny' }], default: 'allow' });
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
