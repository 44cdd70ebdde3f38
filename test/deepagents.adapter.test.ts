/**
 * The DeepAgents adapter: the real `deepagents` graph in this process, `ChatOpenAI` talking to the scripted model over
 * OpenAI chat completions, the file checkpointer under a temporary data directory. Every test gets its own session
 * (thread, workdir and checkpoint file).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AgentSnapshot } from '../governance/types';
import { canonicalDeepAgentsTool, createDeepAgentsAdapter, DEEPAGENTS_TOOLS } from '../runtimes/deepagents/deepagents.adapter';
import type { SessionSandboxes } from '../runtimes/kit/session-sandbox';
import type { RuntimeSessionRef, TurnContext } from '../runtimes/runtime-adapter';
import { MemorySink } from './support/memory-sink';
import { testSandboxes } from './support/sandboxes';
import { localEgress } from './support/stack';
import { testAgent } from './support/test-agent';
import { createGate, startScriptedModel, type Gate, type ScriptedModel } from './support/scripted-model';

const SECRET = 'sk-deepagents-test-0123456789SECRET';
const REPO = join(import.meta.dirname, '..');

function agent(model: ScriptedModel): AgentSnapshot {
  return testAgent({
    name: 'deepagents test agent',
    runtime: { type: 'deepagents', config: {} },
    model: 'gpt-4.1',
    modelProvider: { baseUrl: model.openaiBaseUrl, credentialId: 'cred_test' },
  });
}

describe('DeepAgents tool names', () => {
  it('maps DeepAgents tool names to canonical ones and passes unknown ones through', () => {
    const names = ['execute', 'read_file', 'write_file', 'edit_file', 'delete', 'ls', 'glob', 'grep', 'write_todos', 'task', 'researcher'];
    expect(names.map(canonicalDeepAgentsTool)).toEqual(['bash', 'read', 'write', 'edit', 'write', 'glob', 'glob', 'grep', 'todo', 'task', 'other:researcher']);
  });
});

describe('DeepAgents adapter (real deepagents graph + ChatOpenAI + scripted model)', () => {
  let model: ScriptedModel;
  let root: string;
  let sandboxes: SessionSandboxes;
  const gates: Gate[] = [];
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    model = await startScriptedModel();
    root = await mkdtemp(join(tmpdir(), 'agentplane-deepagents-'));
    ({ sandboxes } = await testSandboxes(join(root, 'data')));
  });

  afterEach(() => {
    for (const gate of gates.splice(0)) gate.release();
    for (const child of children.splice(0)) child.kill('SIGKILL');
  });

  afterAll(async () => {
    await model?.close();
    await sandboxes?.closeAll();
    if (root) await rm(root, { recursive: true, force: true });
  });

  const dataDir = () => join(root, 'data');
  const adapter = () => createDeepAgentsAdapter({ dataDir: dataDir(), egress: localEgress(), sandboxes });
  const checkpointFile = (ctx: TurnContext) => join(dataDir(), 'deepagents', ctx.sessionId, 'checkpoints.json');

  let counter = 0;
  function context(): TurnContext {
    const sessionId = `sesn_da${Date.now().toString(36)}${++counter}`;
    return { sessionId, agent: agent(model), workdir: join(root, 'sessions', sessionId), secrets: { modelApiKey: SECRET } };
  }

  it('runs a plain turn: agent.message, a span with the usage, end_turn; the key reaches the model and nothing else', { timeout: 60_000 }, async () => {
    model.setScript({ 'say hello please': [{ text: 'hello from the scripted model' }] });
    const ctx = context();
    ctx.agent.system = 'Always answer as the agentplane test agent.';
    const a = adapter();
    const ref = await a.open(ctx, null);
    expect(ref.runtimeSessionId).toBe(ctx.sessionId);
    const sink = new MemorySink();

    const result = await a.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'say hello please' }, sink);

    expect(result).toEqual({ status: 'end_turn' });
    expect(sink.of('agent.message').map((e) => e.content[0]?.text)).toEqual(['hello from the scripted model']);
    const spans = sink.of('span.model_request_end');
    expect(spans).toHaveLength(model.requestsFor('say hello please').length);
    expect(spans[0]).toMatchObject({ model: 'gpt-4.1', is_error: false, model_usage: { input_tokens: 100, output_tokens: 20 } });
    expect(spans[0]?.cost_usd).toBeUndefined();
    expect(model.countPrompts('say hello please')).toBe(1);
    // the turn was recorded before the prompt went into the graph
    expect(sink.checkpoints[0]).toMatchObject({ threadId: ctx.sessionId, turn: { turnId: 'turn_1', messageId: 'smsg_1' } });

    const request = model.requestsFor('say hello please')[0];
    expect(request?.headers.authorization).toBe(`Bearer ${SECRET}`);
    expect(JSON.stringify((request?.body as { messages: unknown[] }).messages)).toContain('Always answer as the agentplane test agent.');
    // every tool the model is offered is gated (in interruptOn), so no call can skip the workflow's decision
    const offered = ((request?.body as { tools?: Array<{ function: { name: string } }> }).tools ?? []).map((t) => t.function.name);
    expect(offered).toEqual(expect.arrayContaining(['execute', 'write_file', 'read_file']));
    for (const name of offered) expect(Object.keys(DEEPAGENTS_TOOLS), name).toContain(name);

    expect(JSON.stringify(ref.state)).not.toContain(SECRET);
    expect(JSON.stringify(sink.checkpoints)).not.toContain(SECRET);
    expect(JSON.stringify(sink.events)).not.toContain(SECRET);
    // the checkpoint file holds the conversation (serialised values are base64 inside the JSON), never the key
    const stored = await readFile(checkpointFile(ctx), 'utf8');
    const decoded = [...stored.matchAll(/"\$bytes":"([^"]*)"/g)].map((m) => Buffer.from(m[1]!, 'base64').toString('utf8')).join('\n');
    expect(decoded).toContain('say hello please');
    expect(decoded).toContain('hello from the scripted model');
    expect(stored + decoded).not.toContain(SECRET);
  });

  it('refuses a denied execute (an error tool result the model sees) and runs an allowed read', { timeout: 60_000 }, async () => {
    const ctx = context();
    model.setScript({
      'run the denied command then read': [
        { tool: 'execute', input: { command: 'touch denied-marker' } },
        // (the workspace is /workspace in the sandbox)
        { tool: 'read_file', input: { file_path: '/workspace/notes.txt' } },
        { text: (c) => `tool said: ${c.lastToolResult}` },
      ],
    });
    await mkdir(ctx.workdir, { recursive: true });
    await writeFile(join(ctx.workdir, 'notes.txt'), 'the notes say hi\n');
    const a = adapter();
    const ref = await a.open(ctx, null);
    const sink = new MemorySink((r) => (r.tool === 'bash' ? 'deny' : 'allow'));

    const result = await a.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'run the denied command then read' }, sink);

    expect(result).toEqual({ status: 'end_turn' });
    expect(sink.requests.map((r) => [r.tool, r.input])).toEqual([
      ['bash', { command: 'touch denied-marker' }],
      ['read', { file_path: '/workspace/notes.txt' }],
    ]);
    const [denied, read] = sink.requests;
    // tool_use_id is LangChain's tool call id, the model's own
    expect(denied?.callId).toMatch(/^call_/);
    const refused = sink.of('agent.tool_result').find((e) => e.tool_use_id === denied?.callId);
    expect(refused?.is_error).toBe(true);
    expect(refused?.content[0]?.text).toContain('denied by test policy');
    expect(existsSync(join(ctx.workdir, 'denied-marker'))).toBe(false);
    const ok = sink.of('agent.tool_result').find((e) => e.tool_use_id === read?.callId);
    expect(ok?.is_error).toBe(false);
    expect(ok?.content[0]?.text).toContain('the notes say hi');
    expect(sink.of('agent.message').at(-1)?.content[0]?.text).toContain('the notes say hi');
    expect(sink.of('agent.tool_use').map((e) => [e.name, e.evaluated_permission])).toEqual([
      ['bash', 'deny'],
      ['read', 'allow'],
    ]);
    // the denied call was reported to the model as a tool error
    const second = model.requestsFor('run the denied command then read').find((r) => r.stepIndex === 1);
    expect(JSON.stringify(second?.body)).toContain('denied by test policy');

    // the checkpoint file keeps only the newest checkpoints, and they are enough: a follow-up sees the whole history
    const stored = JSON.parse(await readFile(checkpointFile(ctx), 'utf8')) as { storage: Record<string, Record<string, Record<string, unknown>>> };
    expect(Object.keys(stored.storage[ctx.sessionId]![''] ?? {}).length).toBeLessThanOrEqual(4);
    model.setScript({ 'and now a follow-up': [{ text: 'followed up' }] });
    expect(await a.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_2', messageId: 'smsg_2', text: 'and now a follow-up' }, sink)).toEqual({ status: 'end_turn' });
    const history = JSON.stringify(model.requestsFor('and now a follow-up')[0]?.body);
    expect(history).toContain('run the denied command then read');
    expect(history).toContain('the notes say hi');
  });

  it('returns requires_action for an ask, then runs the call when resumed with allow', { timeout: 60_000 }, async () => {
    model.setScript({ 'write the approved file': [{ tool: 'write_file', input: { file_path: '/workspace/approved.txt', content: 'approved\n' } }, { text: (c) => `wrote: ${c.lastToolResult}` }] });
    const ctx = context();
    const a = adapter();
    const ref = await a.open(ctx, null);
    const sink = new MemorySink(() => 'ask');

    const paused = await a.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'write the approved file' }, sink);
    expect(paused.status).toBe('requires_action');
    if (paused.status !== 'requires_action') return;
    expect(paused.pending).toEqual([{ requestId: sink.requests[0]?.callId, toolUseId: `tu_${sink.requests[0]?.callId}` }]);
    expect(sink.of('agent.tool_result')).toHaveLength(0);
    expect(existsSync(join(ctx.workdir, 'approved.txt'))).toBe(false);

    const resumed = await a.runTurn(ctx, ref, { kind: 'resume', turnId: 'turn_1', decisions: [{ requestId: paused.pending[0]!.requestId, behavior: 'allow' }] }, sink);
    expect(resumed).toEqual({ status: 'end_turn' });
    expect(await readFile(join(ctx.workdir, 'approved.txt'), 'utf8')).toBe('approved\n');
    expect(sink.of('agent.tool_result').map((e) => e.is_error)).toEqual([false]);
    expect(sink.of('agent.message').at(-1)?.content[0]?.text).toContain('wrote:');
    expect(sink.of('agent.tool_use').map((e) => e.evaluated_permission)).toEqual(['ask']);
    expect(model.countPrompts('write the approved file')).toBe(1);
  });

  it('a person denying an asked call gives an error tool result and the file is not written', { timeout: 60_000 }, async () => {
    model.setScript({ 'write the refused file': [{ tool: 'write_file', input: { file_path: '/workspace/refused.txt', content: 'no\n' } }, { text: 'understood, not written' }] });
    const ctx = context();
    const a = adapter();
    const ref = await a.open(ctx, null);
    const sink = new MemorySink(() => 'ask');
    const paused = await a.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'write the refused file' }, sink);
    if (paused.status !== 'requires_action') throw new Error(`expected requires_action, got ${paused.status}`);

    const resumed = await a.runTurn(ctx, ref, { kind: 'resume', turnId: 'turn_1', decisions: [{ requestId: paused.pending[0]!.requestId, behavior: 'deny', message: 'not this file' }] }, sink);
    expect(resumed).toEqual({ status: 'end_turn' });
    expect(sink.of('agent.tool_result').map((e) => [e.tool_use_id, e.is_error, e.content[0]?.text])).toEqual([[paused.pending[0]!.requestId, true, 'not this file']]);
    expect(existsSync(join(ctx.workdir, 'refused.txt'))).toBe(false);
    expect(sink.of('agent.message').at(-1)?.content[0]?.text).toBe('understood, not written');
  });

  it('a subagent (the task tool) is governed too: its calls go through decide, and its model usage is reported', { timeout: 60_000 }, async () => {
    model.setScript([
      { match: 'delegate the writing', steps: [{ tool: 'task', input: { description: 'SUBTASK write sub.txt', subagent_type: 'general-purpose' } }, { text: (c) => `parent saw: ${c.lastToolResult}` }] },
      { match: 'SUBTASK write sub.txt', steps: [{ tool: 'write_file', input: { file_path: '/workspace/sub.txt', content: 'from the subagent\n' } }, { text: 'sub done' }] },
    ]);
    const ctx = context();
    const a = adapter();
    const ref = await a.open(ctx, null);
    const sink = new MemorySink((r) => (r.tool === 'write' ? 'ask' : 'allow'));

    const paused = await a.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'delegate the writing' }, sink);
    if (paused.status !== 'requires_action') throw new Error(`expected requires_action, got ${JSON.stringify(paused)}`);
    expect(sink.requests.map((r) => [r.tool, r.input])).toEqual([
      ['task', { description: 'SUBTASK write sub.txt', subagent_type: 'general-purpose' }],
      ['write', { file_path: '/workspace/sub.txt', content: 'from the subagent\n' }],
    ]);
    expect(existsSync(join(ctx.workdir, 'sub.txt'))).toBe(false);

    const resumed = await a.runTurn(ctx, ref, { kind: 'resume', turnId: 'turn_1', decisions: [{ requestId: paused.pending[0]!.requestId, behavior: 'allow' }] }, sink);
    expect(resumed).toEqual({ status: 'end_turn' });
    expect(await readFile(join(ctx.workdir, 'sub.txt'), 'utf8')).toBe('from the subagent\n');
    expect(sink.of('agent.message').at(-1)?.content[0]?.text).toBe('parent saw: sub done');
    // one span per model request, the subagent's two included
    const requests = model.requestsFor('delegate the writing').length + model.requestsFor('SUBTASK write sub.txt').length;
    expect(requests).toBe(4);
    expect(sink.of('span.model_request_end')).toHaveLength(requests);
  });

  it('a provider error ends the turn with an error that does not carry the key, and says whether a retry can help', { timeout: 60_000 }, async () => {
    model.setScript({
      'the key is refused': [{ error: { status: 401, message: `invalid key ${SECRET}` } }],
    });
    const ctx = context();
    const a = adapter();
    const ref = await a.open(ctx, null);
    const sink = new MemorySink();
    const result = await a.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'the key is refused' }, sink);
    expect(result).toMatchObject({ status: 'error', retryable: false });
    if (result.status !== 'error') return;
    expect(result.message).toContain('401');
    expect(result.message).not.toContain(SECRET);
    expect(JSON.stringify(sink.events) + JSON.stringify(sink.checkpoints)).not.toContain(SECRET);
  });

  it('a new message while a call still waits for a person: the waiting call is dropped and the new turn runs', { timeout: 60_000 }, async () => {
    model.setScript({ 'write the abandoned file': [{ tool: 'write_file', input: { file_path: '/workspace/abandoned.txt', content: 'no\n' } }, { text: 'never' }], 'something else': [{ text: 'moved on' }] });
    const ctx = context();
    const a = adapter();
    const ref = await a.open(ctx, null);
    const sink = new MemorySink(() => 'ask');
    const paused = await a.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'write the abandoned file' }, sink);
    expect(paused.status).toBe('requires_action');

    const next = await a.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_2', messageId: 'smsg_2', text: 'something else' }, sink);
    expect(next).toEqual({ status: 'end_turn' });
    expect(sink.of('agent.message').at(-1)?.content[0]?.text).toBe('moved on');
    expect(existsSync(join(ctx.workdir, 'abandoned.txt'))).toBe(false);
    expect(model.countPrompts('something else')).toBe(1);
  });

  it('stops a turn when the sink signal aborts, returns interrupted, and the session goes on', { timeout: 60_000 }, async () => {
    const gate = createGate();
    gates.push(gate);
    model.setScript({ 'a very slow answer': [{ text: 'too late', waitFor: gate.promise }], 'after the interrupt': [{ text: 'still here' }] });
    const ctx = context();
    const a = adapter();
    const ref = await a.open(ctx, null);
    const sink = new MemorySink();
    const running = a.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'a very slow answer' }, sink);
    await model.waitForRequest((r) => r.prompt === 'a very slow answer', 30_000);
    sink.abort();
    expect(await running).toEqual({ status: 'interrupted' });
    expect(sink.of('agent.message')).toHaveLength(0);

    const next = new MemorySink();
    expect(await a.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_2', messageId: 'smsg_2', text: 'after the interrupt' }, next)).toEqual({ status: 'end_turn' });
    expect(next.of('agent.message').at(-1)?.content[0]?.text).toBe('still here');
  });

  it('a retried turn that had finished replays its events from the checkpoint without sending again (new adapter)', { timeout: 60_000 }, async () => {
    model.setScript({ 'remember this once': [{ text: 'noted once' }] });
    const ctx = context();
    const first = adapter();
    const ref = await first.open(ctx, null);
    const sink = new MemorySink();
    const input = { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'remember this once' } as const;
    expect(await first.runTurn(ctx, ref, input, sink)).toEqual({ status: 'end_turn' });

    const other = adapter();
    const retried = await other.open(ctx, { ...ref, state: sink.checkpoints.at(-1)! });
    const again = new MemorySink();
    expect(await other.runTurn(ctx, retried, input, again)).toEqual({ status: 'end_turn' });
    expect(model.countPrompts('remember this once')).toBe(1);
    expect(again.of('agent.message').map((e) => e.content[0]?.text)).toEqual(['noted once']);
    expect(again.events.map((e) => e.sourceId)).toEqual(sink.events.map((e) => e.sourceId));
  });

  it('a turn cut off mid-step continues from the checkpoint on retry: the prompt is not sent again', { timeout: 60_000 }, async () => {
    const gate = createGate();
    gates.push(gate);
    const prompt = 'list then answer slowly';
    model.setScript({ [prompt]: [{ tool: 'ls', input: { path: '.' } }, { text: 'listed and answered', waitFor: gate.promise }] });
    const ctx = context();
    const first = adapter();
    const ref = await first.open(ctx, null);
    const sink = new MemorySink();
    const input = { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: prompt } as const;
    const running = first.runTurn(ctx, ref, input, sink);
    // the tool ran and the model is answering: the step is in flight when the worker goes away
    await model.waitForRequest((r) => r.prompt === prompt && r.stepIndex === 1, 30_000);
    // streaming: the finished step's events arrive while the turn is still running (the model is held)
    await until(() => sink.of('agent.tool_result').length === 1 && sink.of('span.model_request_end').length === 1);
    sink.abort();
    await running;

    const other = adapter();
    const retried = await other.open(ctx, { ...ref, state: sink.checkpoints.at(-1)! });
    const again = new MemorySink();
    gate.release();
    expect(await other.runTurn(ctx, retried, input, again)).toEqual({ status: 'end_turn' });
    expect(again.of('agent.message').map((e) => e.content[0]?.text)).toEqual(['listed and answered']);
    // the ls call was decided once, its result replayed with the same id
    expect(again.requests, JSON.stringify(again.requests)).toHaveLength(0);
    expect(again.of('agent.tool_result').map((e) => e.tool_use_id)).toEqual(sink.of('agent.tool_result').map((e) => e.tool_use_id));
    expect(model.countPrompts(prompt)).toBe(1);
  });

  it('a worker killed while a call waits for a person: the next worker resumes from the checkpoint file and applies the decision', { timeout: 90_000 }, async () => {
    const prompt = 'make the approved marker';
    model.setScript({ [prompt]: [{ tool: 'execute', input: { command: 'echo approved-after-crash > marker.txt' } }, { text: (c) => `after the crash: ${c.lastToolResult ?? 'nothing'}` }] });
    const ctx = context();
    const input = { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: prompt } as const;
    const script = join(root, 'ask-worker.mts');
    await writeFile(
      script,
      `import { createDeepAgentsAdapter } from ${JSON.stringify(pathToFileURL(join(REPO, 'runtimes', 'deepagents', 'deepagents.adapter.ts')).href)};
import { createEgressGuard } from ${JSON.stringify(pathToFileURL(join(REPO, 'runtimes', 'kit', 'egress.ts')).href)};
import { testSandboxes } from ${JSON.stringify(pathToFileURL(join(REPO, 'test', 'support', 'sandboxes.ts')).href)};
const [ctx, input, dataDir] = JSON.parse(process.argv[2]);
const adapter = createDeepAgentsAdapter({ dataDir, egress: createEgressGuard({ allowPrivate: ['127.0.0.1/32'] }), sandboxes: (await testSandboxes(dataDir)).sandboxes });
const ref = await adapter.open(ctx, null);
const sink = {
  signal: new AbortController().signal,
  async emit() {},
  async checkpoint(state) { console.log('CHECKPOINT ' + JSON.stringify(state)); },
  async decide(request) { return { action: 'ask', toolUseId: 'tu_' + request.callId }; },
};
const result = await adapter.runTurn(ctx, ref, input, sink);
console.log('RESULT ' + JSON.stringify({ ref, result }));
setInterval(() => {}, 1000);
`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify([ctx, input, dataDir()])], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    let checkpoint: Record<string, unknown> | null = null;
    const paused = await new Promise<{ ref: RuntimeSessionRef; result: { status: string; pending: Array<{ requestId: string }> } }>((resolve) => {
      createInterface({ input: child.stdout! }).on('line', (line) => {
        if (line.startsWith('CHECKPOINT ')) checkpoint = JSON.parse(line.slice(11));
        if (line.startsWith('RESULT ')) resolve(JSON.parse(line.slice(7)));
      });
    });
    expect(paused.result.status).toBe('requires_action');
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
    expect(existsSync(join(ctx.workdir, 'marker.txt'))).toBe(false);

    const next = adapter();
    const ref = await next.open(ctx, { ...paused.ref, state: checkpoint! });
    const sink = new MemorySink();
    const requestId = paused.result.pending[0]!.requestId;
    const resumed = await next.runTurn(ctx, ref, { kind: 'resume', turnId: 'turn_1', decisions: [{ requestId, behavior: 'allow' }] }, sink);
    expect(resumed).toEqual({ status: 'end_turn' });
    expect((await readFile(join(ctx.workdir, 'marker.txt'), 'utf8')).trim()).toBe('approved-after-crash');
    expect(sink.requests).toHaveLength(0);
    expect(sink.of('agent.tool_result').map((e) => [e.tool_use_id, e.is_error])).toEqual([[requestId, false]]);
    expect(sink.of('agent.message').at(-1)?.content[0]?.text).toContain('after the crash');
    expect(model.countPrompts(prompt)).toBe(1);
  });
});

/** waits for a condition the test cannot otherwise await; the test's own timeout bounds it */
async function until(condition: () => boolean): Promise<void> {
  while (!condition()) await new Promise((r) => setTimeout(r, 20));
}
