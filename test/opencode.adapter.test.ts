/**
 * The OpenCode adapter against the real `opencode serve` binary (npm `opencode-ai`) and the scripted model.
 * Every test gets its own agentplane session, hence its own OpenCode server and data folder.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AgentSnapshot } from '../governance/types';
import { stopModelBridges, type SessionSandboxes } from '../runtimes/kit/session-sandbox';
import { createOpenCodeAdapter, stopOpenCodeServers } from '../runtimes/opencode/opencode.adapter';
import type { RuntimeAdapter, RuntimeSessionRef, TurnContext } from '../runtimes/runtime-adapter';
import { runAllowedThenDeniedBash } from './support/allow-deny';
import { testSandboxes } from './support/sandboxes';
import { MemorySink } from './support/memory-sink';
import { testAgent } from './support/test-agent';
import { createGate, startScriptedModel, type Gate, type ScriptedModel } from './support/scripted-model';

const SECRET = 'sk-test-0123456789abcdefSECRET';
const REPO = join(import.meta.dirname, '..');
/** what the runtime computes its own cost with (agentplane charges from its tokens; the figure is a cross-check) */
const PRICES = { 'scripted-model': { input: 3, output: 15 } };

function agent(model: ScriptedModel): AgentSnapshot {
  return testAgent({
    name: 'opencode test agent',
    runtime: { type: 'opencode', config: {} },
    model: 'scripted-model',
    modelProvider: { baseUrl: model.openaiBaseUrl, credentialId: 'cred_test' },
  });
}

describe('OpenCode adapter (real opencode serve + scripted model)', () => {
  let model: ScriptedModel;
  let root: string;
  let adapter: RuntimeAdapter;
  let sandboxes: SessionSandboxes;
  const opened: RuntimeSessionRef[] = [];
  const gates: Gate[] = [];
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    model = await startScriptedModel();
    root = await mkdtemp(join(tmpdir(), 'agentplane-opencode-'));
    ({ sandboxes } = await testSandboxes(join(root, 'data')));
    adapter = createOpenCodeAdapter({ dataDir: join(root, 'data'), prices: PRICES, sandboxes });
  });

  afterEach(async () => {
    for (const gate of gates.splice(0)) gate.release();
    for (const child of children.splice(0)) child.kill('SIGKILL');
    await Promise.all(opened.splice(0).map((ref) => adapter.close(ref)));
  });

  afterAll(async () => {
    await model?.close();
    if (!root) return;
    // servers outlive their worker by design: stop whatever a failed test left behind before deleting its data
    await stopOpenCodeServers(join(root, 'data'));
    await sandboxes?.closeAll();
    await stopModelBridges(join(root, 'data', 'run'));
    await rm(root, { recursive: true, force: true });
  });

  let counter = 0;
  function context(): TurnContext {
    const sessionId = `sesn_oc${Date.now().toString(36)}${++counter}`;
    return { sessionId, agent: agent(model), workdir: join(root, 'sessions', sessionId), secrets: { modelApiKey: SECRET } };
  }

  async function openSession(ctx: TurnContext, previous: RuntimeSessionRef | null = null): Promise<RuntimeSessionRef> {
    const ref = await adapter.open(ctx, previous);
    opened.push(ref);
    return ref;
  }

  it('runs a plain message turn: agent.message, a priced span, end_turn; the key stays off disk and out of state', { timeout: 90_000 }, async () => {
    model.setScript({ 'say hello please': [{ text: 'hello from the scripted model' }] });
    const ctx = context();
    ctx.agent.system = 'Always answer as the agentplane test agent.';
    const ref = await openSession(ctx);
    expect(ref.runtimeSessionId).toMatch(/^ses_/);
    const sink = new MemorySink();

    const result = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'say hello please' }, sink);

    expect(result).toEqual({ status: 'end_turn' });
    expect(sink.of('agent.message').map((e) => e.content[0]?.text)).toEqual(['hello from the scripted model']);
    const spans = sink.of('span.model_request_end');
    expect(spans).toHaveLength(1);
    expect(spans[0]).toMatchObject({ model: 'scripted-model', is_error: false, model_usage: { input_tokens: 100, output_tokens: 20 } });
    // 100 × $3/M + 20 × $15/M, as OpenCode reports it
    expect(spans[0]?.cost_usd).toBeCloseTo(0.0006, 10);
    expect(model.countPrompts('say hello please')).toBe(1);

    // the checkpoint came before the send, and names the OpenCode message id the prompt went under
    expect(sink.checkpoints[0]?.turn).toMatchObject({ turnId: 'turn_1', messageId: 'smsg_1', openCodeMessageId: expect.stringMatching(/^msg_/) });
    const request = model.requestsFor('say hello please')[0]?.body as { messages: Array<{ role: string; content: unknown }> };
    expect(JSON.stringify(request.messages.filter((m) => m.role === 'system'))).toContain('Always answer as the agentplane test agent.');
    // the key reached the model, through the environment only
    expect(model.requestsFor('say hello please')[0]?.headers.authorization).toBe(`Bearer ${SECRET}`);
    expect(JSON.stringify(ref.state)).not.toContain(SECRET);
    expect(JSON.stringify(sink.checkpoints)).not.toContain(SECRET);
    const config = await readFile(join(root, 'data', 'opencode', ctx.sessionId, 'home', 'opencode.json'), 'utf8');
    expect(config).toContain('{env:AGENTPLANE_MODEL_API_KEY}');
    expect(config).not.toContain(SECRET);
  });

  it('runs an allowed bash call and refuses a denied one; the model sees the refusal', { timeout: 90_000 }, async () => {
    const ctx = context();
    const ref = await openSession(ctx);
    const { sink, first, second } = await runAllowedThenDeniedBash({ adapter, model, ctx, ref, bashTool: 'bash' });

    // other tools come through under canonical names with the keys policies match on
    // (the workspace is /workspace in the sandbox)
    await writeFile(join(ctx.workdir, 'notes.txt'), 'the notes say 42\n');
    const notes = '/workspace/notes.txt';
    model.setScript({ 'read the notes': [{ tool: 'read', input: { filePath: notes } }, { text: 'read them' }] });
    expect(await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_3', messageId: 'smsg_3', text: 'read the notes' }, sink)).toEqual({ status: 'end_turn' });
    const third = sink.requests[2];
    expect(third).toMatchObject({ tool: 'read', input: { filePath: notes, file_path: notes } });
    expect(sink.of('agent.tool_result').find((e) => e.tool_use_id === third?.callId)?.content[0]?.text).toContain('the notes say 42');
    // one tool_use per call, recorded by decide, never duplicated by the adapter
    expect(sink.of('agent.tool_use').map((e) => [e.tool_use_id, e.evaluated_permission])).toEqual([
      [first?.callId, 'allow'],
      [second?.callId, 'deny'],
      [third?.callId, 'allow'],
    ]);
  });

  it('returns requires_action for an ask, then finishes the turn when resumed with allow', { timeout: 90_000 }, async () => {
    model.setScript({ 'run something risky': [{ tool: 'bash', input: { command: 'echo approved-ran', description: 'echo' } }, { text: (c) => `tool said: ${c.lastToolResult}` }] });
    const ctx = context();
    const ref = await openSession(ctx);
    const sink = new MemorySink(() => 'ask');

    const paused = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'run something risky' }, sink);
    expect(paused.status).toBe('requires_action');
    if (paused.status !== 'requires_action') return;
    expect(paused.pending).toHaveLength(1);
    const [pending] = paused.pending;
    expect(pending?.requestId).toMatch(/^per_/);
    expect(pending?.toolUseId).toBe(`tu_${sink.requests[0]?.callId}`);
    expect(sink.of('agent.tool_result')).toHaveLength(0);

    const resumed = await adapter.runTurn(ctx, ref, { kind: 'resume', turnId: 'turn_1', decisions: [{ requestId: pending!.requestId, behavior: 'allow' }] }, sink);
    expect(resumed).toEqual({ status: 'end_turn' });
    expect(sink.of('agent.tool_result')[0]?.content[0]?.text).toContain('approved-ran');
    expect(sink.of('agent.message').at(-1)?.content[0]?.text).toContain('tool said: approved-ran');
    expect(sink.requests).toHaveLength(1);
    // the resumed run re-derives the call's tool_use from history; the sink keeps the one decide recorded
    expect(sink.of('agent.tool_use').map((e) => e.evaluated_permission)).toEqual(['ask']);
    expect(model.countPrompts('run something risky')).toBe(1);
  });

  it('reattaches after the worker process is SIGKILLed mid-turn without sending the prompt again', { timeout: 120_000 }, async () => {
    const gate = createGate();
    gates.push(gate);
    const prompt = 'slow turn that survives a crash';
    model.setScript({
      [prompt]: [
        { tool: 'bash', input: { command: 'echo survived-crash', description: 'echo' }, waitFor: gate.promise },
        { text: (c) => `after reattach: ${c.lastToolResult}` },
      ],
    });
    const ctx = context();
    const input = { kind: 'message', turnId: 'turn_1', messageId: 'smsg_crash', text: prompt } as const;

    // the first "worker": a separate Node process that opens the session, starts the turn, and is then killed
    const script = join(root, 'crash-worker.mts');
    await writeFile(
      script,
      `import { createOpenCodeAdapter } from ${JSON.stringify(pathToFileURL(join(REPO, 'runtimes', 'opencode', 'opencode.adapter.ts')).href)};
import { testSandboxes } from ${JSON.stringify(pathToFileURL(join(REPO, 'test', 'support', 'sandboxes.ts')).href)};
const [ctx, input, dataDir] = JSON.parse(process.argv[2]);
const adapter = createOpenCodeAdapter({ dataDir, sandboxes: (await testSandboxes(dataDir)).sandboxes });
const ref = await adapter.open(ctx, null);
console.log('REF ' + JSON.stringify(ref));
const sink = {
  signal: new AbortController().signal,
  async emit() {},
  async checkpoint(state) { console.log('CHECKPOINT ' + JSON.stringify(state)); },
  async decide() { return { action: 'allow' }; },
};
await adapter.runTurn(ctx, ref, input, sink);
console.log('DONE');
`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify([ctx, input, join(root, 'data')])], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    let ref: RuntimeSessionRef | null = null;
    let checkpoint: Record<string, unknown> | null = null;
    createInterface({ input: child.stdout! }).on('line', (line) => {
      if (line.startsWith('REF ')) ref = JSON.parse(line.slice(4));
      if (line.startsWith('CHECKPOINT ')) checkpoint = JSON.parse(line.slice(11));
    });

    await model.waitForRequest((r) => r.prompt === prompt, 25_000);
    child.kill('SIGKILL');
    await new Promise((resolve) => child.once('exit', resolve));
    expect(ref).not.toBeNull();
    expect(checkpoint).not.toBeNull();
    const crashed = ref as unknown as RuntimeSessionRef;
    opened.push(crashed);

    // the model answers while nobody listens: the tool call now waits for a permission no worker has seen
    gate.release();
    await new Promise((r) => setTimeout(r, 1_000));

    // the retried activity: a new adapter instance, the ref as the last checkpoint left it, the same input
    const retry = createOpenCodeAdapter({ dataDir: join(root, 'data'), sandboxes: (await testSandboxes(join(root, 'data'))).sandboxes });
    const previous: RuntimeSessionRef = { ...crashed, state: checkpoint as unknown as Record<string, unknown> };
    const reopened = await retry.open(ctx, previous);
    expect(reopened.runtimeSessionId).toBe(crashed.runtimeSessionId);
    expect(reopened.state.server).toEqual(crashed.state.server); // the same server, still running
    const sink = new MemorySink(() => 'allow');
    const result = await retry.runTurn(ctx, reopened, input, sink);

    expect(result).toEqual({ status: 'end_turn' });
    expect(sink.requests.map((r) => r.input.command)).toEqual(['echo survived-crash']);
    expect(sink.of('agent.tool_result')[0]?.content[0]?.text).toContain('survived-crash');
    expect(sink.of('agent.message').at(-1)?.content[0]?.text).toContain('after reattach: survived-crash');
    expect(sink.of('span.model_request_end')).toHaveLength(2);
    // the prompt reached the model exactly once, and the conversation holds it once
    expect(model.countPrompts(prompt)).toBe(1);
    const last = model.requestsFor(prompt).at(-1)?.body as { messages: Array<{ role: string; content: unknown }> };
    expect(last.messages.filter((m) => m.role === 'user' && JSON.stringify(m.content).includes(prompt))).toHaveLength(1);
  });

  it('stops a turn when the sink signal aborts and returns interrupted', { timeout: 90_000 }, async () => {
    const gate = createGate();
    gates.push(gate);
    model.setScript({ 'think forever': [{ text: 'never said', waitFor: gate.promise }] });
    const ctx = context();
    const ref = await openSession(ctx);
    const sink = new MemorySink();

    const running = adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'think forever' }, sink);
    await model.waitForRequest((r) => r.prompt === 'think forever');
    // the model's reply is held and never released: only the interrupt can end this turn
    sink.abort();
    const result = await running;

    expect(result).toEqual({ status: 'interrupted' });
    expect(sink.of('agent.message')).toHaveLength(0);

    // the session is usable again: the next turn runs normally
    model.setScript({ 'are you there': [{ text: 'still here' }] });
    const next = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_2', messageId: 'smsg_2', text: 'are you there' }, new MemorySink());
    expect(next).toEqual({ status: 'end_turn' });
  });

  it('restarts a dead server on the same data and keeps the OpenCode session and its history', { timeout: 120_000 }, async () => {
    model.setScript({ 'remember this': [{ text: 'remembered' }], 'and now': [{ text: 'still the same session' }] });
    const ctx = context();
    const ref = await openSession(ctx);
    expect(await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'remember this' }, new MemorySink())).toEqual({ status: 'end_turn' });
    const before = ref.state.server as { pid: number; port: number };

    process.kill(-before.pid, 'SIGKILL');
    await new Promise((r) => setTimeout(r, 300));

    const reopened = await openSession(ctx, ref);
    const after = reopened.state.server as { pid: number; port: number };
    expect(after.pid).not.toBe(before.pid);
    expect(reopened.runtimeSessionId).toBe(ref.runtimeSessionId);
    const result = await adapter.runTurn(ctx, reopened, { kind: 'message', turnId: 'turn_2', messageId: 'smsg_2', text: 'and now' }, new MemorySink());
    expect(result).toEqual({ status: 'end_turn' });
    // the model saw the first exchange: OpenCode kept it on disk across the restart
    const body = model.requestsFor('and now')[0]?.body as { messages: Array<{ role: string; content: unknown }> };
    expect(JSON.stringify(body.messages)).toContain('remember this');
    const serverFile = JSON.parse(readFileSync(join(root, 'data', 'opencode', ctx.sessionId, 'server.json'), 'utf8'));
    expect(serverFile.pid).toBe(after.pid);
  });
});
