/**
 * The Claude Code adapter against the real `@anthropic-ai/claude-agent-sdk` (and the `claude` binary it ships) talking
 * to the scripted model over the Anthropic Messages protocol. Every test gets its own agentplane session, hence its
 * own Claude Code process, CLAUDE_CONFIG_DIR and HOME.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AgentSnapshot } from '../governance/types';
import { canonicalClaudeTool, claudeSessionIdFor, createClaudeCodeAdapter, normaliseClaudeInput } from '../runtimes/claude-code/claude-code.adapter';
import { stopModelBridges, type SessionSandboxes } from '../runtimes/kit/session-sandbox';
import type { RuntimeAdapter, RuntimeSessionRef, TurnContext } from '../runtimes/runtime-adapter';
import { readFilesUnder } from './support/files';
import { runAllowedThenDeniedBash } from './support/allow-deny';
import { MemorySink } from './support/memory-sink';
import { testSandboxes } from './support/sandboxes';
import { testAgent } from './support/test-agent';
import { createGate, startScriptedModel, type Gate, type ScriptedModel } from './support/scripted-model';

const SECRET = 'sk-ant-test-0123456789abcdefSECRET';
const REPO = join(import.meta.dirname, '..');

function agent(model: ScriptedModel): AgentSnapshot {
  return testAgent({
    name: 'claude code test agent',
    runtime: { type: 'claude-code', config: {} },
    model: 'claude-sonnet-4-5',
    modelProvider: { baseUrl: model.url, credentialId: 'cred_test' },
  });
}

describe('Claude Code tool names and inputs', () => {
  it('maps native tool names to canonical ones and keeps the keys policies match on', () => {
    const names = ['Bash', 'Read', 'Write', 'Edit', 'MultiEdit', 'Glob', 'Grep', 'WebFetch', 'WebSearch', 'TodoWrite', 'Task', 'mcp__github__create_issue', 'Skill'];
    expect(names.map(canonicalClaudeTool)).toEqual(['bash', 'read', 'write', 'edit', 'edit', 'glob', 'grep', 'web_fetch', 'web_search', 'todo', 'task', 'mcp:github:create_issue', 'other:Skill']);
    expect(normaliseClaudeInput('Bash', { command: 'ls', description: 'list' })).toEqual({ command: 'ls', description: 'list' });
    expect(normaliseClaudeInput('NotebookEdit', { notebook_path: '/w/a.ipynb' })).toMatchObject({ file_path: '/w/a.ipynb' });
    expect(normaliseClaudeInput('Grep', { pattern: 'TODO', path: '/w' })).toEqual({ pattern: 'TODO', path: '/w' });
    expect(normaliseClaudeInput('WebFetch', { url: 'https://example.com', prompt: 'x' })).toMatchObject({ url: 'https://example.com' });
    expect(claudeSessionIdFor('sesn_1')).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(claudeSessionIdFor('sesn_1')).toBe(claudeSessionIdFor('sesn_1'));
  });
});

describe('Claude Code adapter (real Agent SDK + claude binary + scripted model)', () => {
  let model: ScriptedModel;
  let root: string;
  let adapter: RuntimeAdapter;
  let sandboxes: SessionSandboxes;
  const opened: RuntimeSessionRef[] = [];
  const gates: Gate[] = [];
  const children: ChildProcess[] = [];

  beforeAll(async () => {
    model = await startScriptedModel();
    root = await mkdtemp(join(tmpdir(), 'agentplane-claude-'));
    ({ sandboxes } = await testSandboxes(join(root, 'data')));
    adapter = createClaudeCodeAdapter({ dataDir: join(root, 'data'), sandboxes });
  });

  afterEach(async () => {
    for (const gate of gates.splice(0)) gate.release();
    for (const child of children.splice(0)) child.kill('SIGKILL');
    await Promise.all(opened.splice(0).map((ref) => adapter.close(ref)));
  });

  afterAll(async () => {
    await model?.close();
    await sandboxes?.closeAll();
    if (root) await stopModelBridges(join(root, 'data', 'run'));
    if (root) await rm(root, { recursive: true, force: true });
  });

  // Claude Code puts <system-reminder> blocks before the first prompt of a session, in the same user message
  const requestsOf = (prompt: string) => model.requests.filter((r) => r.protocol !== null && r.prompt?.endsWith(prompt) === true);
  const sent = (prompt: string) => requestsOf(prompt).filter((r) => r.stepIndex === 0).length;

  let counter = 0;
  function context(): TurnContext {
    const sessionId = `sesn_cc${Date.now().toString(36)}${++counter}`;
    return { sessionId, agent: agent(model), workdir: join(root, 'sessions', sessionId), secrets: { modelApiKey: SECRET } };
  }

  async function openSession(ctx: TurnContext): Promise<RuntimeSessionRef> {
    const ref = await adapter.open(ctx, null);
    opened.push(ref);
    return ref;
  }

  it('runs a plain turn: agent.message, a span per request, end_turn; the key reaches the model and nothing on disk', { timeout: 60_000 }, async () => {
    model.setScript({ 'say hello please': [{ text: 'hello from the scripted model' }] });
    const ctx = context();
    ctx.agent.system = 'Always answer as the agentplane test agent.';
    const ref = await openSession(ctx);
    expect(ref.runtimeSessionId).toBe(claudeSessionIdFor(ctx.sessionId));
    const sink = new MemorySink();

    const result = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'say hello please' }, sink);

    expect(result).toEqual({ status: 'end_turn' });
    expect(sink.of('agent.message').map((e) => e.content[0]?.text)).toEqual(['hello from the scripted model']);
    const spans = sink.of('span.model_request_end');
    expect(spans).toHaveLength(requestsOf('say hello please').length);
    expect(spans[0]).toMatchObject({ model: 'claude-sonnet-4-5', is_error: false, model_usage: { input_tokens: 100, output_tokens: 20 } });
    expect(spans[0]?.cost_usd).toBeUndefined();
    expect(sent('say hello please')).toBe(1);
    // the checkpoint came before the send
    expect(sink.checkpoints[0]).toMatchObject({ claudeSessionId: ref.runtimeSessionId, turn: { turnId: 'turn_1', messageId: 'smsg_1', promptsBefore: 0 } });

    const request = requestsOf('say hello please')[0];
    expect(request?.headers['x-api-key']).toBe(SECRET);
    expect(JSON.stringify((request?.body as { system?: unknown }).system)).toContain('Always answer as the agentplane test agent.');
    expect(JSON.stringify(ref.state)).not.toContain(SECRET);
    expect(JSON.stringify(sink.checkpoints)).not.toContain(SECRET);
    expect(JSON.stringify(sink.events)).not.toContain(SECRET);
    // the transcript exists under the session's own config dir, and no file under the data dir holds the key
    const files = await readFilesUnder(join(root, 'data', 'claude-code', ctx.sessionId));
    expect(files.some((f) => f.path.endsWith(`${ref.runtimeSessionId}.jsonl`))).toBe(true);
    for (const f of files) expect(f.content.includes(SECRET), f.path).toBe(false);
  });

  it('runs an allowed bash call and refuses a denied one; the model sees the refusal', { timeout: 90_000 }, async () => {
    const ctx = context();
    const ref = await openSession(ctx);
    const { sink, first, second } = await runAllowedThenDeniedBash({ adapter, model, ctx, ref, bashTool: 'Bash' });
    // one tool_use per call, recorded by decide, never duplicated by the adapter
    expect(sink.of('agent.tool_use').map((e) => [e.tool_use_id, e.evaluated_permission])).toEqual([
      [first?.callId, 'allow'],
      [second?.callId, 'deny'],
    ]);
    // the follow-up turn went to the same Claude session (the model saw the first exchange)
    const secondRequest = requestsOf('run the denied command')[0]?.body as { messages: unknown[] };
    expect(JSON.stringify(secondRequest.messages)).toContain('run the allowed command');
    expect(sent('run the allowed command')).toBe(1);
  });

  it('returns requires_action for an ask, then finishes the turn when resumed with allow', { timeout: 60_000 }, async () => {
    model.setScript({ 'write something risky': [{ tool: 'Bash', input: { command: 'echo approved-ran', description: 'echo' } }, { text: (c) => `tool said: ${c.lastToolResult}` }] });
    const ctx = context();
    const ref = await openSession(ctx);
    const sink = new MemorySink(() => 'ask');

    const paused = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'write something risky' }, sink);
    expect(paused.status).toBe('requires_action');
    if (paused.status !== 'requires_action') return;
    expect(paused.pending).toHaveLength(1);
    const [pending] = paused.pending;
    expect(pending?.requestId).toBe(sink.requests[0]?.callId);
    expect(pending?.toolUseId).toBe(`tu_${sink.requests[0]?.callId}`);
    expect(sink.of('agent.tool_result')).toHaveLength(0);

    const resumed = await adapter.runTurn(ctx, ref, { kind: 'resume', turnId: 'turn_1', decisions: [{ requestId: pending!.requestId, behavior: 'allow' }] }, sink);
    expect(resumed).toEqual({ status: 'end_turn' });
    expect(sink.of('agent.tool_result')[0]?.content[0]?.text).toContain('approved-ran');
    expect(sink.of('agent.message').at(-1)?.content[0]?.text).toContain('tool said: approved-ran');
    expect(sink.requests).toHaveLength(1);
    expect(sink.of('agent.tool_use').map((e) => e.evaluated_permission)).toEqual(['ask']);
    expect(sent('write something risky')).toBe(1);
  });

  it('stops a turn when the sink signal aborts and returns interrupted', { timeout: 60_000 }, async () => {
    const gate = createGate();
    gates.push(gate);
    model.setScript({ 'a very slow answer': [{ text: 'too late', waitFor: gate.promise }] });
    const ctx = context();
    const ref = await openSession(ctx);
    const sink = new MemorySink();
    const running = adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'a very slow answer' }, sink);
    await model.waitForRequest((r) => r.prompt?.endsWith('a very slow answer') === true, 30_000);
    sink.abort();
    expect(await running).toEqual({ status: 'interrupted' });
    expect(sink.of('agent.message')).toHaveLength(0);

    // the session goes on: a follow-up turn in the same Claude session works
    model.setScript({ 'after the interrupt': [{ text: 'still here' }] });
    const next = new MemorySink();
    expect(await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_2', messageId: 'smsg_2', text: 'after the interrupt' }, next)).toEqual({ status: 'end_turn' });
    expect(next.of('agent.message').at(-1)?.content[0]?.text).toBe('still here');
  });

  it('a retried turn whose prompt is already in the transcript does not send it again (new adapter = lost process)', { timeout: 60_000 }, async () => {
    model.setScript({ 'remember this once': [{ text: 'noted once' }] });
    const ctx = context();
    const ref = await openSession(ctx);
    const sink = new MemorySink();
    const input = { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'remember this once' } as const;
    expect(await adapter.runTurn(ctx, ref, input, sink)).toEqual({ status: 'end_turn' });
    await adapter.close(ref);

    // another worker: no live process, only the checkpointed state and the transcript on disk
    const other = createClaudeCodeAdapter({ dataDir: join(root, 'data'), sandboxes: (await testSandboxes(join(root, 'data'))).sandboxes });
    const retried = await other.open(ctx, { ...ref, state: sink.checkpoints.at(-1)! });
    const again = new MemorySink();
    expect(await other.runTurn(ctx, retried, input, again)).toEqual({ status: 'end_turn' });
    expect(sent('remember this once')).toBe(1);
    // the turn's events were replayed from the transcript
    expect(again.of('agent.message').map((e) => e.content[0]?.text)).toEqual(['noted once']);
    expect(again.of('agent.message')[0]?.sourceId).toBe(sink.of('agent.message')[0]?.sourceId);
    await other.close(retried);
  });

  it('a worker killed while a call waits for a person: the next worker resumes from the transcript and applies the decision', { timeout: 90_000 }, async () => {
    const prompt = 'make the approved marker';
    model.setScript([
      {
        match: prompt,
        steps: [{ tool: 'Bash', input: { command: 'echo approved-after-crash > marker.txt', description: 'marker' } }, { text: (c) => `after the crash: ${c.lastToolResult ?? 'nothing'}` }],
      },
      // told what became of its call after the lost process, the model makes the approved call again
      {
        match: 'moved to another machine',
        steps: [{ tool: 'Bash', input: { command: 'echo approved-after-crash > marker.txt', description: 'marker' } }, { text: 'made the marker' }],
      },
    ]);
    const ctx = context();
    const input = { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: prompt } as const;
    const script = join(root, 'ask-worker.mts');
    await writeFile(
      script,
      `import { createClaudeCodeAdapter } from ${JSON.stringify(pathToFileURL(join(REPO, 'runtimes', 'claude-code', 'claude-code.adapter.ts')).href)};
import { testSandboxes } from ${JSON.stringify(pathToFileURL(join(REPO, 'test', 'support', 'sandboxes.ts')).href)};
const [ctx, input, dataDir] = JSON.parse(process.argv[2]);
const adapter = createClaudeCodeAdapter({ dataDir, sandboxes: (await testSandboxes(dataDir)).sandboxes });
const ref = await adapter.open(ctx, null);
const sink = {
  signal: new AbortController().signal,
  async emit() {},
  async checkpoint(state) { console.log('CHECKPOINT ' + JSON.stringify(state)); },
  async decide(request) { console.log('DECIDE ' + JSON.stringify(request)); return { action: 'ask', toolUseId: 'tu_' + request.callId }; },
};
const result = await adapter.runTurn(ctx, ref, input, sink);
console.log('RESULT ' + JSON.stringify({ ref, result }));
`,
    );
    const child = spawn(process.execPath, ['--import', 'tsx', script, JSON.stringify([ctx, input, join(root, 'data')])], { cwd: REPO, stdio: ['ignore', 'pipe', 'inherit'] });
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

    // the next worker: no live process; the person's decision arrives
    const ref = await openSession(ctx);
    ref.state = checkpoint!;
    const sink = new MemorySink();
    const requestId = paused.result.pending[0]!.requestId;
    const resumed = await adapter.runTurn(ctx, ref, { kind: 'resume', turnId: 'turn_1', decisions: [{ requestId, behavior: 'allow' }] }, sink);
    expect(resumed).toEqual({ status: 'end_turn' });
    expect(existsSync(join(ctx.workdir, 'marker.txt'))).toBe(true);
    // the call made again is decided on the person's approval: it names the asked call's tool use
    expect(sink.requests.map((r) => [r.tool, r.approvedAs])).toEqual([['bash', `tu_${requestId}`]]);
    expect(sink.of('agent.tool_use').map((e) => [e.name, e.evaluated_permission])).toEqual([['bash', 'allow']]);
    expect(sent(prompt)).toBe(1);
  });
});
