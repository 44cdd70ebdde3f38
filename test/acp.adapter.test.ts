/**
 * The ACP adapter against a real ACP agent, `opencode acp` (npm `opencode-ai`), and the scripted model.
 * Every test gets its own agentplane session, hence its own agent process and data folder.
 */
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { acpAgentsEnv, ConfigError, parseEnv } from '../config/env';
import { createAdapterLog, createJsonLog } from '../observability/logger';
import type { AgentSnapshot } from '../governance/types';
import { createAcpAdapter, toolInput, toolName } from '../runtimes/acp/acp.adapter';
import { stopModelBridges, type SessionSandboxes } from '../runtimes/kit/session-sandbox';
import type { RuntimeAdapter, RuntimeSessionRef, TurnContext } from '../runtimes/runtime-adapter';
import { MemorySink } from './support/memory-sink';
import { testSandboxes } from './support/sandboxes';
import { testAgent } from './support/test-agent';
import { createGate, startScriptedModel, type Gate, type ScriptedModel } from './support/scripted-model';
import { buildRuntimes } from '../worker/runtimes';

const SECRET = 'sk-test-0123456789abcdefACPSECRET';
/** what the runtime computes its own cost with (agentplane charges from its tokens; the figure is a cross-check) */
const PRICES = { 'scripted-model': { input: 3, output: 15 } };

function agent(model: ScriptedModel, config: Record<string, unknown> = { agent: 'opencode' }): AgentSnapshot {
  return testAgent({
    name: 'acp test agent',
    runtime: { type: 'acp', config },
    model: 'scripted-model',
    modelProvider: { baseUrl: model.openaiBaseUrl, credentialId: 'cred_test' },
  });
}

describe('ACP adapter (real opencode acp + scripted model)', () => {
  let model: ScriptedModel;
  let root: string;
  let adapter: RuntimeAdapter;
  let sandboxes: SessionSandboxes;
  const opened: RuntimeSessionRef[] = [];
  const gates: Gate[] = [];

  beforeAll(async () => {
    model = await startScriptedModel();
    root = await mkdtemp(join(tmpdir(), 'agentplane-acp-'));
    ({ sandboxes } = await testSandboxes(join(root, 'data')));
    adapter = createAcpAdapter({ dataDir: join(root, 'data'), prices: PRICES, sandboxes });
  });

  afterEach(async () => {
    for (const gate of gates.splice(0)) gate.release();
    await Promise.all(opened.splice(0).map((ref) => adapter.close(ref)));
  });

  afterAll(async () => {
    await model?.close();
    await sandboxes?.closeAll();
    if (root) await stopModelBridges(join(root, 'data', 'run'));
    if (root) await rm(root, { recursive: true, force: true });
  });

  /** requests of the agent's own loop that started `prompt` (OpenCode also asks the model for a session title, without tools) */
  function agentPrompts(prompt: string): number {
    return model.requestsFor(prompt).filter((r) => r.stepIndex === 0 && ((r.body as { tools?: unknown[] }).tools?.length ?? 0) > 0).length;
  }

  let counter = 0;
  function context(config?: Record<string, unknown>): TurnContext {
    const sessionId = `sesn_acp${Date.now().toString(36)}${++counter}`;
    return { sessionId, agent: agent(model, config), workdir: join(root, 'sessions', sessionId), secrets: { modelApiKey: SECRET } };
  }

  async function openSession(ctx: TurnContext): Promise<RuntimeSessionRef> {
    const ref = await adapter.open(ctx, null);
    opened.push(ref);
    return ref;
  }

  it('runs a plain message turn: agent.message, a span with tokens and the reported cost, end_turn; the key stays out of state and events', { timeout: 120_000 }, async () => {
    model.setScript({ 'say hello please': [{ text: 'hello over acp' }] });
    const ctx = context();
    const ref = await openSession(ctx);
    const sink = new MemorySink();

    const result = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'say hello please' }, sink);

    expect(result).toEqual({ status: 'end_turn' });
    // the agent started with the turn, and its ACP session is what the ref (saved by the checkpoint) names
    expect(ref.runtimeSessionId).toMatch(/^ses_/);
    expect(ref.state.acpSessionId).toBe(ref.runtimeSessionId);
    expect(sink.of('agent.message').map((e) => e.content[0]?.text)).toEqual(['hello over acp']);
    const spans = sink.of('span.model_request_end');
    expect(spans).toHaveLength(1);
    expect(spans[0]).toMatchObject({ model: 'scripted-model', is_error: false, model_usage: { input_tokens: 100, output_tokens: 20 } });
    // 100 × $3/M + 20 × $15/M, as OpenCode reports it in usage_update
    expect(spans[0]?.cost_usd).toBeCloseTo(0.0006, 10);
    expect(agentPrompts('say hello please')).toBe(1);
    // the turn was recorded as sent before it was sent
    expect(sink.checkpoints[0]?.turn).toEqual({ turnId: 'turn_1', messageId: 'smsg_1', sent: true });

    // the key reached the model (so it was passed on), but nowhere agentplane keeps things
    expect(model.requestsFor('say hello please')[0]?.headers.authorization).toBe(`Bearer ${SECRET}`);
    for (const kept of [ref, sink.events, sink.checkpoints]) expect(JSON.stringify(kept)).not.toContain(SECRET);
    expect(readFileSync(join(root, 'data', 'acp', ctx.sessionId, 'agent.log'), 'utf8')).not.toContain(SECRET);

    // a follow-up turn goes to the same live process and ACP session: the model sees the first exchange
    model.setScript({ 'and again': [{ text: 'again over acp' }] });
    const again = await adapter.runTurn(ctx, await adapter.open(ctx, ref), { kind: 'message', turnId: 'turn_2', messageId: 'smsg_2', text: 'and again' }, sink);
    expect(again).toEqual({ status: 'end_turn' });
    expect(JSON.stringify(model.requestsFor('and again')[0]?.body)).toContain('say hello please');
    // the second span carries only the second turn's share of the session's cumulative cost
    expect(sink.of('span.model_request_end')[1]?.cost_usd).toBeCloseTo(0.0006, 10);
  });

  it('sends every tool call through decide: a deny is refused and the model carries on, allows run', { timeout: 120_000 }, async () => {
    const ctx = context();
    // the agent sees its workspace at /workspace (its sandbox); the test checks the host's copy
    const marker = '/workspace/denied-marker';
    const notes = '/workspace/notes.txt';
    model.setScript({
      'use the tools': [
        { tool: 'bash', input: { command: `touch ${marker}`, description: 'touch' } },
        { tool: 'write', input: { filePath: notes, content: 'the notes say 42\n' } },
        { tool: 'read', input: { filePath: notes } },
        { text: (c) => `read: ${c.lastToolResult}` },
      ],
    });
    const ref = await openSession(ctx);
    const sink = new MemorySink((r) => (r.tool === 'bash' ? 'deny' : 'allow'));

    const result = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'use the tools' }, sink);

    expect(result).toEqual({ status: 'end_turn' });
    expect(sink.requests.map((r) => [r.tool, r.input.command ?? r.input.file_path])).toEqual([
      ['bash', `touch ${marker}`],
      ['write', notes],
      ['read', notes],
    ]);
    expect(sink.of('agent.tool_use').map((e) => [e.tool_use_id, e.name, e.evaluated_permission])).toEqual(sink.requests.map((r, i) => [r.callId, r.tool, ['deny', 'allow', 'allow'][i]]));
    expect(sink.of('agent.tool_result').map((e) => [e.tool_use_id, e.is_error])).toEqual(sink.requests.map((r, i) => [r.callId, i === 0]));
    expect(existsSync(join(ctx.workdir, 'denied-marker'))).toBe(false);
    expect(readFileSync(join(ctx.workdir, 'notes.txt'), 'utf8')).toBe('the notes say 42\n');
    expect(sink.of('agent.message').at(-1)?.content[0]?.text).toContain('the notes say 42');
    expect(agentPrompts('use the tools')).toBe(1);
  });

  it('returns requires_action for an ask, keeps the agent waiting, and finishes the turn when resumed with allow', { timeout: 120_000 }, async () => {
    model.setScript({ 'run something risky': [{ tool: 'bash', input: { command: 'echo approved-ran', description: 'echo' } }, { text: (c) => `tool said: ${c.lastToolResult}` }] });
    const ctx = context();
    const ref = await openSession(ctx);
    const sink = new MemorySink(() => 'ask');

    const paused = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'run something risky' }, sink);
    expect(paused.status).toBe('requires_action');
    if (paused.status !== 'requires_action') return;
    const callId = sink.requests[0]?.callId;
    expect(paused.pending).toEqual([{ requestId: callId, toolUseId: `tu_${callId}` }]);
    expect(sink.of('agent.tool_result')).toHaveLength(0);

    // the activity of the resume leg opens the session again: the same live process and session
    const reopened = await adapter.open(ctx, ref);
    expect(reopened.runtimeSessionId).toBe(ref.runtimeSessionId);
    const resumed = await adapter.runTurn(ctx, reopened, { kind: 'resume', turnId: 'turn_1', decisions: [{ requestId: callId!, behavior: 'allow' }] }, sink);
    expect(resumed).toEqual({ status: 'end_turn' });
    expect(sink.of('agent.tool_result')[0]).toMatchObject({ tool_use_id: callId, is_error: false });
    expect(sink.of('agent.tool_result')[0]?.content[0]?.text).toContain('approved-ran');
    expect(sink.of('agent.message').at(-1)?.content[0]?.text).toContain('tool said: approved-ran');
    expect(sink.of('agent.tool_use').map((e) => e.evaluated_permission)).toEqual(['ask']);
    expect(agentPrompts('run something risky')).toBe(1);
  });

  it('resumed with deny: the call is refused, the tool never runs, the turn ends', { timeout: 120_000 }, async () => {
    const ctx = context();
    const marker = join(ctx.workdir, 'asked-then-denied');
    const inside = '/workspace/asked-then-denied';
    model.setScript({ 'ask me first': [{ tool: 'bash', input: { command: `touch ${inside}`, description: 'touch' } }, { text: 'understood, not run' }] });
    const ref = await openSession(ctx);
    const sink = new MemorySink(() => 'ask');
    const paused = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'ask me first' }, sink);
    if (paused.status !== 'requires_action') throw new Error(`expected requires_action, got ${JSON.stringify(paused)}`);

    const resumed = await adapter.runTurn(ctx, ref, { kind: 'resume', turnId: 'turn_1', decisions: [{ requestId: paused.pending[0]!.requestId, behavior: 'deny' }] }, sink);

    expect(resumed).toEqual({ status: 'end_turn' });
    expect(sink.of('agent.tool_result')[0]).toMatchObject({ is_error: true });
    expect(existsSync(marker)).toBe(false);
  });

  it('stops a turn when the sink signal aborts (session/cancel) and returns interrupted; the session stays usable', { timeout: 120_000 }, async () => {
    const gate = createGate();
    gates.push(gate);
    model.setScript({ 'think forever': [{ text: 'never said', waitFor: gate.promise }], 'are you there': [{ text: 'still here' }] });
    const ctx = context();
    const ref = await openSession(ctx);
    const sink = new MemorySink();

    const running = adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'think forever' }, sink);
    await model.waitForRequest((r) => r.prompt === 'think forever', 60_000);
    // the model's reply is held and never released: only the interrupt can end this turn
    sink.abort();
    expect(await running).toEqual({ status: 'interrupted' });
    expect(sink.of('agent.message')).toHaveLength(0);

    const next = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_2', messageId: 'smsg_2', text: 'are you there' }, new MemorySink());
    expect(next).toEqual({ status: 'end_turn' });
  });

  it('interrupting a turn that waits for a person cancels the pending permission and the turn', { timeout: 120_000 }, async () => {
    const ctx = context();
    const marker = join(ctx.workdir, 'never-approved');
    const inside = '/workspace/never-approved';
    model.setScript({ 'wait for me': [{ tool: 'bash', input: { command: `touch ${inside}`, description: 'touch' } }, { text: 'done' }] });
    const ref = await openSession(ctx);
    const paused = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'wait for me' }, new MemorySink(() => 'ask'));
    expect(paused.status).toBe('requires_action');

    const sink = new MemorySink();
    sink.abort();
    expect(await adapter.runTurn(ctx, ref, { kind: 'resume', turnId: 'turn_1', decisions: [] }, sink)).toEqual({ status: 'interrupted' });
    expect(existsSync(marker)).toBe(false);
  });

  it('never sends a prompt twice: a turn whose agent process is gone ends with a session.error', { timeout: 120_000 }, async () => {
    model.setScript({ 'only once': [{ text: 'said once' }] });
    const ctx = context();
    const ref = await openSession(ctx);
    const input = { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'only once' } as const;
    expect(await adapter.runTurn(ctx, ref, input, new MemorySink())).toEqual({ status: 'end_turn' });

    // a retried activity on a new worker: a new adapter, the checkpointed state, the same input
    const retry = createAcpAdapter({ dataDir: join(root, 'data'), sandboxes: (await testSandboxes(join(root, 'data'))).sandboxes });
    const reopened = await retry.open(ctx, ref);
    opened.push(reopened);
    // the new process loaded the same ACP session
    expect(reopened.runtimeSessionId).toBe(ref.runtimeSessionId);
    const sink = new MemorySink();
    const result = await retry.runTurn(ctx, reopened, input, sink);
    expect(result).toMatchObject({ status: 'error', retryable: false });
    expect(sink.of('session.error')[0]?.error.message).toContain('does not send a prompt twice');
    expect(agentPrompts('only once')).toBe(1);

    // the next turn runs in the loaded session, with its history
    model.setScript({ 'after the restart': [{ text: 'loaded' }] });
    expect(await retry.runTurn(ctx, reopened, { kind: 'message', turnId: 'turn_2', messageId: 'smsg_2', text: 'after the restart' }, new MemorySink())).toEqual({ status: 'end_turn' });
    expect(JSON.stringify(model.requestsFor('after the restart')[0]?.body)).toContain('said once');
    await retry.close(reopened);
  });

  it('an agent name the worker does not allow is a non-retryable session.error, not a command', { timeout: 30_000 }, async () => {
    const ctx = context({ agent: 'rm-rf' });
    const ref = await openSession(ctx);
    const sink = new MemorySink();
    const result = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'hello' }, sink);
    expect(result).toMatchObject({ status: 'error', retryable: false });
    expect(sink.of('session.error')[0]?.error.message).toBe('unknown ACP agent "rm-rf": this worker allows opencode');
  });

  it('runs an agent from the worker registry with the key only in the variable it names', { timeout: 30_000 }, async () => {
    // a tiny ACP "agent" that fails initialize, reporting its environment: enough to see what it was given
    const agents = join(root, 'agents');
    await mkdir(agents, { recursive: true });
    const script = join(agents, 'env-agent.mjs');
    await writeFile(
      script,
      `process.stdin.on('data', (d) => { const m = JSON.parse(String(d).split('\\n')[0]); process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: m.id, error: { code: -32603, message: 'env ' + Object.keys(process.env).sort().join(',') + ' key=' + process.env.MY_KEY } }) + '\\n'); });`,
    );
    const custom = createAcpAdapter({ dataDir: join(root, 'data'), sandboxes, agents: { envy: { command: process.execPath, args: [script], env: { FIXED: '1' }, keyEnv: 'MY_KEY', mounts: [agents] } } });
    const ctx = context({ agent: 'envy' });
    const result = await custom.runTurn(ctx, await custom.open(ctx, null), { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'hello' }, new MemorySink());
    expect(result).toMatchObject({ status: 'error', retryable: true });
    const failure = result.status === 'error' ? result : null;
    expect(failure?.message).toContain('FIXED');
    expect(failure?.message).toContain('MY_KEY');
    // the key was in the agent's environment, but it never comes back in an error
    expect(failure?.message).toContain('key=[redacted]');
    expect(failure?.message).not.toContain(SECRET);
  });

  it("an ACP agent cannot have the client (the worker, outside the sandbox) read or write a file or run a terminal for it: fs/* and terminal/* are method not found", { timeout: 60_000 }, async () => {
    const agents = join(root, 'agents');
    await mkdir(agents, { recursive: true });
    const script = join(agents, 'client-probe.mjs');
    await writeFile(script, CLIENT_PROBE_AGENT);
    // a file of the worker's, outside every sandbox mount, and a path the agent asks the client to write
    const secretFile = join(root, 'worker-secret.txt');
    const writtenFile = join(root, 'written-by-the-client.txt');
    await writeFile(secretFile, `worker secret ${SECRET}\n`);
    const probe = createAcpAdapter({ dataDir: join(root, 'data'), sandboxes, agents: { probe: { command: process.execPath, args: [script], env: {}, mounts: [agents] } } });
    const ctx = context({ agent: 'probe' });
    const ref = await probe.open(ctx, null);
    opened.push(ref);
    const sink = new MemorySink();
    const text = JSON.stringify({ read: secretFile, write: writtenFile, run: ['cat', secretFile] });
    expect(await probe.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text }, sink)).toEqual({ status: 'end_turn' });
    const said = sink.of('agent.message').map((e) => e.content[0]?.text ?? '').join('');
    const answers = JSON.parse(/PROBE<(.*)>/.exec(said)?.[1] ?? 'null') as Record<string, { result?: unknown; error?: { code: number } }> | null;
    expect(answers, said).not.toBeNull();
    for (const method of ['fs/read_text_file', 'fs/write_text_file', 'terminal/create']) {
      expect(answers![method], method).toMatchObject({ error: { code: -32601 } });
      expect(answers![method]?.result, method).toBeUndefined();
    }
    // and the agent itself, in its sandbox, does not even find the worker's file
    expect(answers!.direct).toMatchObject({ error: 'ENOENT' });
    expect(said).not.toContain(SECRET);
    expect(existsSync(writtenFile)).toBe(false);
  });
});

/**
 * A minimal ACP agent (newline-delimited JSON-RPC on stdio): on `session/prompt` (a JSON of paths) it asks the client
 * for `fs/read_text_file`, `fs/write_text_file` and `terminal/create`, tries to read the file itself too, and answers
 * with one message `PROBE<{…answers}>` before ending the turn.
 */
const CLIENT_PROBE_AGENT = `import { readFileSync } from 'node:fs';
let buffer = '';
let nextId = 1000;
const waiting = new Map();
const send = (m) => process.stdout.write(JSON.stringify({ jsonrpc: '2.0', ...m }) + '\\n');
const ask = (method, params) => new Promise((resolve) => { const id = nextId++; waiting.set(id, resolve); send({ id, method, params }); });
const keep = (r) => (r.error ? { error: { code: r.error.code, message: r.error.message } } : { result: r.result });
async function handle(m) {
  if (m.id !== undefined && !m.method) { waiting.get(m.id)?.(m); waiting.delete(m.id); return; }
  if (m.method === 'initialize') return send({ id: m.id, result: { protocolVersion: 1, agentCapabilities: {} } });
  if (m.method === 'session/new') return send({ id: m.id, result: { sessionId: 'probe' } });
  if (m.method === 'session/prompt') {
    const target = JSON.parse(m.params.prompt.map((p) => p.text ?? '').join(''));
    const answers = {};
    answers['fs/read_text_file'] = keep(await ask('fs/read_text_file', { sessionId: 'probe', path: target.read }));
    answers['fs/write_text_file'] = keep(await ask('fs/write_text_file', { sessionId: 'probe', path: target.write, content: 'pwned' }));
    answers['terminal/create'] = keep(await ask('terminal/create', { sessionId: 'probe', command: target.run[0], args: target.run.slice(1) }));
    try { answers.direct = { result: readFileSync(target.read, 'utf8') }; } catch (err) { answers.direct = { error: String(err.code ?? err) }; }
    send({ method: 'session/update', params: { sessionId: 'probe', update: { sessionUpdate: 'agent_message_chunk', content: { type: 'text', text: 'PROBE<' + JSON.stringify(answers) + '>' } } } });
    return send({ id: m.id, result: { stopReason: 'end_turn' } });
  }
  if (m.id !== undefined) send({ id: m.id, error: { code: -32601, message: 'not here' } });
}
process.stdin.on('data', (chunk) => {
  buffer += chunk;
  let nl;
  while ((nl = buffer.indexOf('\\n')) >= 0) {
    const line = buffer.slice(0, nl).trim();
    buffer = buffer.slice(nl + 1);
    if (line) void handle(JSON.parse(line));
  }
});
`;

describe('ACP tool names and inputs', () => {
  it('maps the agent tool name when known, else the ACP kind, else other:', () => {
    expect(toolName({ name: 'bash', kind: 'execute' })).toBe('bash');
    expect(toolName({ name: 'write', kind: 'edit' })).toBe('write');
    expect(toolName({ name: 'glob', kind: 'search' })).toBe('glob');
    expect(toolName({ name: 'Run the tests', kind: 'execute' })).toBe('bash');
    expect(toolName({ name: 'fetch page', kind: 'fetch' })).toBe('web_fetch');
    expect(toolName({ name: 'plan', kind: 'think' })).toBe('other:plan');
    expect(toolName({ kind: 'switch_mode' })).toBe('other:switch_mode');
  });

  it('adds the keys policies match on without dropping the agent own', () => {
    expect(toolInput({ rawInput: { filePath: '/w/a.txt', content: 'x' }, locations: [] }, { filepath: '/w/a.txt', diff: '+x' })).toEqual({ filePath: '/w/a.txt', content: 'x', filepath: '/w/a.txt', diff: '+x', file_path: '/w/a.txt' });
    expect(toolInput({ rawInput: {}, locations: ['/w/b.txt'] }, {})).toEqual({ file_path: '/w/b.txt' });
    expect(toolInput({ rawInput: { cmd: 'ls' }, locations: [] }, undefined)).toEqual({ cmd: 'ls', command: 'ls' });
  });
});

describe('AGENTPLANE_ACP_AGENTS', () => {
  it('parses named agents with defaults, and refuses bad JSON or a bad name naming the variable', () => {
    const parsed = parseEnv(acpAgentsEnv, { AGENTPLANE_ACP_AGENTS: '{"gemini": {"command": "/usr/bin/gemini", "args": ["--experimental-acp"], "keyEnv": "GEMINI_API_KEY"}}' });
    expect(parsed.AGENTPLANE_ACP_AGENTS).toEqual({ gemini: { command: '/usr/bin/gemini', args: ['--experimental-acp'], env: {}, keyEnv: 'GEMINI_API_KEY' } });
    expect(parseEnv(acpAgentsEnv, {}).AGENTPLANE_ACP_AGENTS).toEqual({});
    expect(() => parseEnv(acpAgentsEnv, { AGENTPLANE_ACP_AGENTS: '{not json' })).toThrow(ConfigError);
    expect(() => parseEnv(acpAgentsEnv, { AGENTPLANE_ACP_AGENTS: '{not json' })).toThrow(/AGENTPLANE_ACP_AGENTS: must be JSON/);
    expect(() => parseEnv(acpAgentsEnv, { AGENTPLANE_ACP_AGENTS: '{"Bad Name": {"command": "x"}}' })).toThrow(/AGENTPLANE_ACP_AGENTS/);
    expect(() => parseEnv(acpAgentsEnv, { AGENTPLANE_ACP_AGENTS: '{"ok": {"command": "x", "secret": "sk-1"}}' })).toThrow(/AGENTPLANE_ACP_AGENTS/);
  });
});

describe("the worker's log reaches the adapters", () => {
  it('an adapter warning built by the worker (worker/runtimes.ts) lands in the worker log, with its runtime and session, instead of being dropped', async () => {
    const root = await mkdtemp(join(tmpdir(), 'agentplane-acp-log-'));
    try {
      // an ACP "agent" that refuses initialize, echoing the key it was given
      const agents = join(root, 'agents');
      await mkdir(agents, { recursive: true });
      const script = join(agents, 'refusing-agent.mjs');
      await writeFile(script, `process.stdin.on('data', (d) => { const m = JSON.parse(String(d).split('\\n')[0]); process.stdout.write(JSON.stringify({ jsonrpc: '2.0', id: m.id, error: { code: -32603, message: 'no thanks, key=' + process.env.MY_KEY } }) + '\\n'); });`);
      const lines: string[] = [];
      const runtimes = await buildRuntimes(['acp'], {
        dataDir: join(root, 'data'),
        acpAgents: { refusing: { command: process.execPath, args: [script], env: {}, keyEnv: 'MY_KEY', mounts: [agents] } },
        sandboxes: (await testSandboxes(join(root, 'data'))).sandboxes,
        logger: createAdapterLog(createJsonLog((line) => lines.push(line)), 'INFO'),
      });
      const adapter = runtimes.acp!;
      const ctx: TurnContext = {
        sessionId: 'sesn_acp_logged',
        agent: testAgent({ runtime: { type: 'acp', config: { agent: 'refusing' } }, model: 'scripted-model', modelProvider: { baseUrl: 'http://127.0.0.1:9/v1', credentialId: 'cred_test' } }),
        workdir: join(root, 'work'),
        secrets: { modelApiKey: SECRET },
      };
      const ref = await adapter.open(ctx, null);
      expect(await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'hello' }, new MemorySink())).toMatchObject({ status: 'error' });
      await adapter.close(ref);
      const entries = lines.map((line) => JSON.parse(line) as Record<string, unknown>);
      expect(entries).toContainEqual(expect.objectContaining({ level: 'WARN', msg: 'acp turn failed', runtime: 'acp', sessionId: 'sesn_acp_logged', error: expect.stringContaining('no thanks, key=[redacted]') }));
      expect(lines.join('\n')).not.toContain(SECRET);
      // below the configured level nothing is written
      expect(entries.filter((e) => e.level === 'DEBUG')).toEqual([]);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
