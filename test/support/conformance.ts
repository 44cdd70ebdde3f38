/**
 * Conformance: every runtime adapter, through the real stack (API → Temporal workflow → activity → adapter), gives
 * the same answers to the same questions. One policy must produce the same decisions on every runtime that has
 * approvals, so each runtime runs the same abstract script (bash, write, read, say) under the same policy and the
 * sequences of `[tool, decision]` are compared at the end.
 *
 * Each case turns the abstract steps into its runtime's own script (scripted model for OpenCode, ACP and Claude Code, the
 * contract fakes for Managed Agents and Cursor, the message text for the in-process scripted runtime). What a runtime
 * declares in `capabilities` decides which tests apply: a declared capability must hold, and one not declared must be
 * refused by the API (an `ask` policy for a runtime without approvals).
 *
 * Each runtime has its own file, test/conformance/<kind>.test.ts, which calls `describeConformance(kind)`, so two
 * runtimes run at once; every one of them asserts the same literal decision sequence for the same policy and script.
 *
 * The reattach case runs last in each block: the in-process worker is replaced by a worker process that is SIGKILLed
 * mid-turn, and a second process must finish the turn without the runtime receiving the prompt twice.
 */
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { rowsOf } from '../../db/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createAcpAdapter } from '../../runtimes/acp/acp.adapter';
import { createClaudeCodeAdapter } from '../../runtimes/claude-code/claude-code.adapter';
import { createDeepAgentsAdapter } from '../../runtimes/deepagents/deepagents.adapter';
import { createHermesAdapter } from '../../runtimes/hermes/hermes.adapter';
import { createManagedAgentsAdapter } from '../../runtimes/managed-agents/managed-agents.adapter';
import { createOpenClawAdapter, stopOpenClawGateways } from '../../runtimes/openclaw/openclaw.adapter';
import { createOpenCodeAdapter } from '../../runtimes/opencode/opencode.adapter';
import { RUNTIME_CAPABILITIES } from '../../runtimes/registry';
import type { RuntimeKind, RuntimeRegistry } from '../../runtimes/runtime-adapter';
import { createScriptedAdapter } from '../../runtimes/scripted/scripted.adapter';
import { createCursorAdapter } from '../../runtimes/cursor/cursor.adapter';
import { startCursorFake, type CursorFake, type CursorStep } from './cursor-fake';
import { ensureHermes, hermesBin } from './hermes';
import { openClawBinaries } from './openclaw';
import { startManagedAgentsFake, type FakeStep, type ManagedAgentsFake } from './managed-agents-fake';
import { createGate, startScriptedModel, type Gate, type ScriptedModel, type ScriptStep } from './scripted-model';
import { eventsOf, eventually, LOCAL_RECEIVERS, startStack, waitForStatus, type Stack } from './stack';
import { readFilesUnder } from './files';
import { spawnWorker, type WorkerProcess } from './worker-process';

/** `hold` parks the turn until the test releases it (never, for the interrupt case), then says `say` */
type Step = { say: string } | { tool: 'bash' | 'write' | 'read'; subject: string } | { hold: true; say?: string };

interface Env {
  stack: Stack;
  model?: ScriptedModel;
  fake?: ManagedAgentsFake;
  cursor?: CursorFake;
  /** Cursor fake runs by prompt */
  cursorScripts: Map<string, CursorStep[]>;
  sessionId: string;
  /** held steps by prompt */
  gates: Map<string, Gate>;
}

interface RuntimeCase {
  kind: RuntimeKind;
  /** start what the runtime talks to (model server, fake) */
  backend(env: Env): Promise<void>;
  adapter(env: Env): RuntimeRegistry;
  agent(env: Env): Promise<Record<string, unknown>>;
  /** the runtime runs in the session's sandbox, where the session's workspace is /workspace */
  sandboxed?: boolean;
  /** stops what outlives a worker by design (a sandboxed runtime server), before the stack goes */
  cleanup?(env: Env): Promise<void>;
  /** make `prompt` run `steps`; returns the text to send as the user message */
  script(env: Env, prompt: string, steps: Step[]): string;
  /** resolves once the held step of a script has been reached */
  held(env: Env, prompt: string): Promise<void>;
  /** lets the held step go on */
  release(env: Env, prompt: string): void;
  /** how often the runtime's backend received `prompt` (the in-process scripted runtime has none: null) */
  promptsReceived(env: Env, prompt: string): number | null;
  /** extra time the first turn may take because the runtime starts then */
  startMs?: number;
}

/**
 * The outcome of the conformance policy (deny bash, ask write, allow the rest) on a turn that calls bash, write and
 * read: the three decisions in order, and the denied call's result is an error. Returns the results for more checks.
 */
export function expectDenyAskAllow(events: any[]) {
  const uses = events.filter((e) => e.type === 'agent.tool_use');
  expect(uses.map((u): [string, string] => [u.name, u.evaluated_permission])).toEqual([
    ['bash', 'deny'],
    ['write', 'ask'],
    ['read', 'allow'],
  ]);
  const results = events.filter((e) => e.type === 'agent.tool_result');
  expect(results.map((r) => [r.tool_use_id, r.is_error])).toEqual([
    [uses[0].id, true],
    [uses[1].id, false],
    [uses[2].id, false],
  ]);
  return results;
}

const POLICY = { rules: [{ tool: 'bash', action: 'deny' }, { tool: 'write', action: 'ask' }], default: 'allow' };
/** for runtimes without approvals the API refuses an `ask`: the same policy without it */
const POLICY_WITHOUT_ASK = { rules: [{ tool: 'bash', action: 'deny' }], default: 'allow' };

/**
 * scripted model steps for runtimes that call an LLM (OpenCode: filePath, Claude Code and DeepAgents: file_path). Each
 * tool lists every runtime's spelling; the model calls the one the runtime offers (DeepAgents: execute, write_file,
 * read_file).
 */
function modelSteps(env: Env, prompt: string, steps: Step[], fileKey: 'filePath' | 'file_path'): ScriptStep[] {
  return steps.map((s): ScriptStep => {
    if ('hold' in s) return { text: s.say ?? 'never said', waitFor: gateFor(env, prompt).promise };
    if ('say' in s) return { text: s.say };
    if (s.tool === 'bash') return { tool: ['bash', 'Bash', 'execute'], input: { command: s.subject, description: 'conformance' } };
    if (s.tool === 'write') return { tool: ['write', 'Write', 'write_file'], input: { [fileKey]: s.subject, content: 'conformance content\n' } };
    return { tool: ['read', 'Read', 'read_file'], input: { [fileKey]: s.subject } };
  });
}

/** the user messages' text of an OpenAI chat completions request */
function userMessages(body: unknown): string[] {
  const messages = (body as { messages?: Array<{ role?: string; content?: unknown }> }).messages ?? [];
  return messages.filter((m) => m.role === 'user').map((m) => (typeof m.content === 'string' ? m.content : Array.isArray(m.content) ? m.content.map((c: { text?: string }) => c.text ?? '').join('') : ''));
}

function gateFor(env: Env, prompt: string): Gate {
  if (!env.gates.has(prompt)) env.gates.set(prompt, createGate());
  return env.gates.get(prompt)!;
}

const modelBackend = {
  async backend(env: Env) {
    env.model = await startScriptedModel();
  },
  held: async (env: Env, prompt: string) => void (await env.model!.waitForRequest((r) => r.prompt?.includes(prompt) === true, 60_000)),
  release: (env: Env, prompt: string) => gateFor(env, prompt).release(),
  // Claude Code prefixes the prompt with system reminders: the exchange's prompt ends with ours
  promptsReceived: (env: Env, prompt: string) => env.model!.requests.filter((r) => r.protocol !== null && r.prompt?.endsWith(prompt) === true && r.stepIndex === 0).length,
};

/** scripted model steps in Hermes's tool names (terminal, write_file, read_file) */
function hermesSteps(env: Env, prompt: string, steps: Step[]): ScriptStep[] {
  return modelSteps(env, prompt, steps, 'file_path').map((s, i) => {
    const step = steps[i]!;
    if (!('tool' in step)) return s;
    if (step.tool === 'bash') return { tool: 'terminal', input: { command: step.subject } };
    if (step.tool === 'write') return { tool: 'write_file', input: { path: step.subject, content: 'conformance content\n' } };
    return { tool: 'read_file', input: { path: step.subject } };
  });
}


const RUNTIMES: RuntimeCase[] = [
  {
    kind: 'scripted',
    async backend() {},
    adapter: () => ({ scripted: createScriptedAdapter() }),
    agent: async () => ({ model: 'scripted', runtime: { type: 'scripted', config: {} } }),
    script(_env, prompt, steps) {
      // a hold that is released is a pause long enough for a worker to be killed in it (the runtime lives in the worker)
      const lines = steps.flatMap((s) => ('hold' in s ? [`say held ${prompt}`, ...(s.say ? ['sleep 3000', `say ${s.say}`] : ['sleep 60000'])] : 'say' in s ? [`say ${s.say}`] : [`tool ${s.tool} ${s.subject}`]));
      return [...lines, 'cost 0.001'].join('\n');
    },
    async held(env, prompt) {
      await eventually(async () => ((await eventsOf(env.stack, env.sessionId)).some((e) => e.type === 'agent.message' && e.content[0].text === `held ${prompt}`) ? true : undefined), { timeoutMs: 60_000, what: `scripted: held ${prompt}` });
    },
    release() {},
    promptsReceived: () => null,
  },
  {
    kind: 'opencode',
    ...modelBackend,
    adapter: (env) => ({ opencode: createOpenCodeAdapter({ dataDir: env.stack.dataDir, sandboxes: env.stack.sandboxes }) }),
    sandboxed: true,
    agent: async (env) => ({ model: 'scripted-model', runtime: { type: 'opencode', config: {} }, model_provider: { base_url: env.model!.openaiBaseUrl } }),
    script(env, prompt, steps) {
      env.model!.setScript([{ match: prompt, steps: modelSteps(env, prompt, steps, 'filePath') }]);
      return prompt;
    },
  },
  {
    kind: 'acp',
    ...modelBackend,
    adapter: (env) => ({ acp: createAcpAdapter({ dataDir: env.stack.dataDir, sandboxes: env.stack.sandboxes }) }),
    sandboxed: true,
    async agent(env) {
      const credential = await env.stack.call('POST', '/v1/credentials', { name: 'acp model key', secret: 'sk-acp-conformance-0123456789' });
      return { model: 'scripted-model', runtime: { type: 'acp', config: { agent: 'opencode' } }, model_provider: { base_url: env.model!.openaiBaseUrl, credential_id: credential.body.id } };
    },
    script(env, prompt, steps) {
      env.model!.setScript([{ match: prompt, steps: modelSteps(env, prompt, steps, 'filePath') }]);
      return prompt;
    },
  },
  {
    kind: 'claude-code',
    ...modelBackend,
    adapter: (env) => ({ 'claude-code': createClaudeCodeAdapter({ dataDir: env.stack.dataDir, sandboxes: env.stack.sandboxes }) }),
    sandboxed: true,
    async agent(env) {
      const credential = await env.stack.call('POST', '/v1/credentials', { name: 'anthropic key', secret: 'sk-ant-conformance-0123456789' });
      return { model: 'claude-sonnet-4-5', runtime: { type: 'claude-code', config: {} }, model_provider: { base_url: env.model!.url, credential_id: credential.body.id } };
    },
    script(env, prompt, steps) {
      // Claude Code prefixes prompts with system reminders: rules match by substring. A turn cut off by a worker crash
      // is continued by the adapter with its own message (the claude process and its model request died with the
      // worker); the model answers it with what the held step would have said.
      const held = steps.find((s): s is { hold: true; say: string } => 'hold' in s && s.say !== undefined);
      env.model!.setScript([{ match: prompt, steps: modelSteps(env, prompt, steps, 'file_path') }, ...(held ? [{ match: 'cut off by a restart', steps: [{ text: held.say }] }] : [])]);
      return prompt;
    },
    // Claude Code records a prompt in its transcript once its model has answered the request (its headers), not when
    // it sends it: a worker killed in between leaves a transcript without the prompt, and the retry sends it again.
    // The adapter's guarantee begins at the record, so the crash comes after it.
    async held(env, prompt) {
      await env.model!.waitForRequest((r) => r.prompt?.includes(prompt) === true, 60_000);
      const recorded = async () => {
        const files = await readFilesUnder(join(env.stack.dataDir, 'claude-code', env.sessionId));
        return files.some((f) => f.path.endsWith('.jsonl') && f.content.includes(prompt)) ? true : undefined;
      };
      await eventually(recorded, { timeoutMs: 30_000, what: `claude-code: "${prompt}" in the transcript` });
    },
  },
  {
    kind: 'deepagents',
    ...modelBackend,
    adapter: (env) => ({ deepagents: createDeepAgentsAdapter({ dataDir: env.stack.dataDir, egress: env.stack.egress, sandboxes: env.stack.sandboxes }) }),
    sandboxed: true,
    async agent(env) {
      const credential = await env.stack.call('POST', '/v1/credentials', { name: 'openai-compatible key', secret: 'sk-deepagents-conformance-0123456789' });
      // a model in the default pricing table: DeepAgents reports tokens, the ledger prices them
      return { model: 'gpt-4.1', runtime: { type: 'deepagents', config: {} }, model_provider: { base_url: env.model!.openaiBaseUrl, credential_id: credential.body.id } };
    },
    script(env, prompt, steps) {
      env.model!.setScript([{ match: prompt, steps: modelSteps(env, prompt, steps, 'file_path') }]);
      return prompt;
    },
    // The graph runs in the worker: a model call cut off by the crash is made again from the last checkpoint, with
    // the same conversation. What must not happen is the prompt going into the thread twice, so count how often it
    // is a user message of the conversation the model is sent.
    promptsReceived: (env, prompt) => Math.max(0, ...env.model!.requestsFor(prompt).map((r) => userMessages(r.body).filter((text) => text === prompt).length)),
  },
  {
    kind: 'managed-agents',
    async backend(env) {
      env.fake = await startManagedAgentsFake({ heartbeatMs: 200 });
    },
    adapter: (env) => ({ 'managed-agents': createManagedAgentsAdapter({ settleMs: 50, egress: env.stack.egress }) }),
    async agent(env) {
      const credential = await env.stack.call('POST', '/v1/credentials', { name: 'managed agents key', secret: env.fake!.apiKey });
      return { model: 'claude-sonnet-4-6', runtime: { type: 'managed-agents', config: {} }, model_provider: { base_url: env.fake!.url, credential_id: credential.body.id } };
    },
    script(env, prompt, steps) {
      const fakeSteps = steps.flatMap((s): FakeStep[] => {
        if ('hold' in s) return [{ gate: `hold:${prompt}` }, ...(s.say ? [{ say: s.say }] : [])];
        if ('say' in s) return [{ say: s.say }];
        return [{ tool: s.tool, input: s.tool === 'bash' ? { command: s.subject } : s.tool === 'write' ? { file_path: s.subject, content: 'conformance content\n' } : { file_path: s.subject }, result: 'ok' }];
      });
      env.fake!.script(prompt, [...fakeSteps, { usage: { input: 100, output: 20, costUsd: 0.001 } }]);
      return prompt;
    },
    held: async (env, prompt) => env.fake!.gate(`hold:${prompt}`).reached,
    release: (env, prompt) => env.fake!.gate(`hold:${prompt}`).open(),
    promptsReceived: (env, prompt) => env.fake!.countPrompts(prompt),
  },
  {
    kind: 'cursor',
    async backend(env) {
      env.cursor = await startCursorFake();
      env.cursor.script = (prompt) => env.cursorScripts.get(prompt) ?? [{ assistant: `echo: ${prompt}` }, { usage: { inputTokens: 100, outputTokens: 20 } }];
    },
    adapter: (env) => ({ cursor: createCursorAdapter({ reconnectMs: 50, egress: env.stack.egress }) }),
    async agent(env) {
      const credential = await env.stack.call('POST', '/v1/credentials', { name: 'cursor key', secret: env.cursor!.apiKey });
      return { model: 'claude-sonnet-4-5', runtime: { type: 'cursor', config: {} }, model_provider: { base_url: env.cursor!.url, credential_id: credential.body.id } };
    },
    script(env, prompt, steps) {
      const cursorSteps = steps.flatMap((s): CursorStep[] => {
        // the fake parks a run after its first event while held: the thinking step is that first event
        if ('hold' in s) {
          env.cursor!.hold();
          return [{ thinking: `held ${prompt}` }, { assistant: s.say ?? 'never said' }];
        }
        if ('say' in s) return [{ assistant: s.say }];
        return [{ tool: s.tool === 'bash' ? 'run_terminal_cmd' : s.tool === 'write' ? 'edit_file' : 'read_file', args: { path: s.subject }, result: 'ok' }];
      });
      env.cursorScripts.set(prompt, [...cursorSteps, { usage: { inputTokens: 100, outputTokens: 20 } }]);
      return prompt;
    },
    held: async (env, prompt) =>
      void (await eventually(async () => ([...env.cursor!.runs.values()].some((r) => r.prompt === prompt && r.frames.length > 1) ? true : undefined), { timeoutMs: 60_000, what: `cursor: held ${prompt}` })),
    release: (env) => env.cursor!.release(),
    promptsReceived: (env, prompt) => env.cursor!.prompts.filter((p) => p === prompt).length,
  },
  {
    kind: 'hermes',
    ...modelBackend,
    adapter: (env) => ({ hermes: createHermesAdapter({ binaryPath: hermesBin(), dataDir: env.stack.dataDir, sandboxes: env.stack.sandboxes, pollMs: 200, settleMs: 500 }) }),
    sandboxed: true,
    async agent(env) {
      const credential = await env.stack.call('POST', '/v1/credentials', { name: 'openai-compatible key', secret: 'sk-hermes-conformance-0123456789' });
      return { model: 'claude-sonnet-4-5', runtime: { type: 'hermes', config: {} }, model_provider: { base_url: env.model!.openaiBaseUrl, credential_id: credential.body.id } };
    },
    script(env, prompt, steps) {
      env.model!.setScript([{ match: prompt, steps: hermesSteps(env, prompt, steps) }]);
      return prompt;
    },
    // Hermes imports a lot of Python before its API server answers
    startMs: 60_000,
  },
  {
    kind: 'openclaw',
    ...modelBackend,
    adapter: (env) => ({ openclaw: createOpenClawAdapter({ ...openClawBinaries().binaries!, dataDir: env.stack.dataDir, sandboxes: env.stack.sandboxes }) }),
    sandboxed: true,
    cleanup: (env) => stopOpenClawGateways(env.stack.dataDir),
    // the first turn starts the gateway: about 20 s on an idle machine, a minute or more on a loaded one
    startMs: 180_000,
    agent: async (env) => ({ model: 'scripted-model', runtime: { type: 'openclaw', config: {} }, model_provider: { base_url: env.model!.openaiBaseUrl } }),
    script(env, prompt, steps) {
      // OpenClaw prefixes the prompt with a timestamp: rules match by substring
      env.model!.setScript([{ match: prompt, steps: modelSteps(env, prompt, steps, 'filePath') }]);
      return prompt;
    },
    held: async (env, prompt) => void (await env.model!.waitForRequest((r) => r.prompt?.includes(prompt) === true, 120_000)),
  },
];

/**
 * OpenClaw and Hermes run only where their install scripts put them (in CI a failed install is an error). OpenClaw's
 * gateway is slow to start on a loaded machine and can fail its own startup self-check there (a state-lease worker
 * must answer within a fixed 5 s); the adapter retries the start, and `startMs` gives the first turn the time.
 */
function available(rt: RuntimeCase): boolean {
  if (rt.kind === 'openclaw') return openClawBinaries().binaries !== null;
  if (rt.kind === 'hermes') {
    const installed = ensureHermes(); // only the hermes file pays for the check (and, where missing, the install)
    if ('error' in installed) console.error(`\n!!! conformance: hermes SKIPPED: ${installed.error}\n`);
    return 'bin' in installed;
  }
  return true;
}

export function describeConformance(kind: RuntimeKind): void {
  const rt = RUNTIMES.find((r) => r.kind === kind);
  if (!rt || !available(rt)) {
    // not installed here (the runtime's support module printed why; in CI that is an error, not a skip)
    describe.skip(`conformance: ${kind}`, () => it('runs', () => undefined));
    return;
  }
  describeRuntime(rt);
}

function describeRuntime(rt: RuntimeCase): void {
  describe(`conformance: ${rt.kind}`, () => {
    const caps = RUNTIME_CAPABILITIES[rt.kind];
    const env = { gates: new Map(), cursorScripts: new Map() } as unknown as Env;
    let sessionId: string;
    /** the worker process of the reattach case */
    let worker: WorkerProcess | undefined;

    /** sends a message and waits for the next session.status_idle event; returns it */
    async function turn(text: string, timeoutMs = 90_000) {
      const before = (await eventsOf(env.stack, sessionId)).filter((e) => e.type === 'session.status_idle').length;
      const sent = await env.stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.message', content: text }] });
      expect(sent.status, JSON.stringify(sent.body)).toBeLessThan(300);
      return eventually(
        async () => {
          const idles = (await eventsOf(env.stack, sessionId)).filter((e) => e.type === 'session.status_idle');
          return idles.length > before ? idles.at(-1) : undefined;
        },
        { timeoutMs, what: `${rt.kind}: idle after "${text.split('\n')[0]}"` },
      );
    }

    function script(prompt: string, steps: Step[]) {
      return rt.script(env, prompt, steps);
    }

    beforeAll(async () => {
      // every runtime but the scripted one talks to a local model server or fake: only 127.0.0.1 is allowed
      env.stack = await startStack({ worker: false, allowPrivateEgress: rt.kind === 'scripted' ? [] : LOCAL_RECEIVERS });
      await rt.backend(env);
      await env.stack.startWorker(rt.adapter(env));
      // the scripted model is in no catalogue: the team prices it, as a runtime that prices tokens needs
      await env.stack.price('scripted-model', { input: 3, output: 15 });
      const agent = await env.stack.call('POST', '/v1/agents', { name: `conformance ${rt.kind}`, tool_policy: caps.approvals ? POLICY : POLICY_WITHOUT_ASK, ...(await rt.agent(env)) });
      expect(agent.status, JSON.stringify(agent.body)).toBeLessThan(300);
      const session = await env.stack.call('POST', '/v1/sessions', { agent: agent.body.id });
      expect(session.status, JSON.stringify(session.body)).toBeLessThan(300);
      sessionId = session.body.id;
      env.sessionId = sessionId;
    }, 120_000);
    afterAll(async () => {
      for (const gate of env.gates.values()) gate.release();
      await worker?.stop();
      await rt.cleanup?.(env);
      await env.stack?.stop();
      await env.model?.close();
      await env.fake?.close();
      await env.cursor?.close();
    }, 60_000);

    it('answers a message: agent.message, a model request with usage, idle end_turn, and a cost when one is declared', { timeout: 120_000 + (rt.startMs ?? 0) }, async () => {
      const idle = await turn(script('conformance hello', [{ say: 'hello from the runtime' }]), 90_000 + (rt.startMs ?? 0));
      expect(idle.stop_reason?.type).toBe('end_turn');
      const events = await eventsOf(env.stack, sessionId);
      expect(events.filter((e) => e.type === 'agent.message').map((e) => e.content[0].text)).toContain('hello from the runtime');
      const spans = events.filter((e) => e.type === 'span.model_request_end');
      expect(spans.length).toBeGreaterThan(0);
      expect(spans[0].model_usage).toMatchObject({ input_tokens: expect.any(Number), output_tokens: expect.any(Number) });
      const session = await env.stack.call('GET', `/v1/sessions/${sessionId}`);
      if (caps.cost !== 'none') expect(session.body.usage.cost_usd).toBeGreaterThan(0);
    });

    it.runIf(caps.approvals)('applies the same policy: bash denied, write asked and approved, read allowed', { timeout: 150_000 }, async () => {
      const file = rt.sandboxed ? '/workspace/conformance.txt' : join(env.stack.dataDir, 'sessions', sessionId, 'conformance.txt');
      const text = script('conformance policy', [{ tool: 'bash', subject: 'echo conformance' }, { tool: 'write', subject: file }, { tool: 'read', subject: file }, { say: 'policy done' }]);
      const before = (await eventsOf(env.stack, sessionId)).length;
      const sent = await env.stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.message', content: text }] });
      expect(sent.status).toBeLessThan(300);
      const waiting = await waitForStatus(env.stack, sessionId, 'requires_action', 'requires_action', 90_000);
      expect(waiting.pending_approvals).toHaveLength(1);
      const approved = await env.stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: waiting.pending_approvals[0].tool_use_id, result: 'allow' }] });
      expect(approved.status, JSON.stringify(approved.body)).toBeLessThan(300);
      await waitForStatus(env.stack, sessionId, 'idle', 'end_turn', 90_000);
      await eventually(async () => ((await eventsOf(env.stack, sessionId)).slice(before).some((e) => e.type === 'agent.message') ? true : undefined), { timeoutMs: 10_000 });

      expectDenyAskAllow((await eventsOf(env.stack, sessionId)).slice(before));
    });

    it.runIf(caps.interrupt)('stops an in-flight turn on user.interrupt: idle with stop reason interrupted', { timeout: 120_000 }, async () => {
      const text = script('conformance interrupt', [{ hold: true }]);
      const sent = await env.stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.message', content: text }] });
      expect(sent.status).toBeLessThan(300);
      await waitForStatus(env.stack, sessionId, 'running', undefined, 60_000);
      await rt.held(env, 'conformance interrupt');
      const interrupted = await env.stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.interrupt' }] });
      expect(interrupted.status, JSON.stringify(interrupted.body)).toBeLessThan(300);
      await waitForStatus(env.stack, sessionId, 'idle', 'interrupted', 60_000);
      rt.release(env, 'conformance interrupt');
    });

    it.runIf(!caps.approvals)('refuses a policy that asks a person, naming the field, since the runtime cannot hold a call', async () => {
      const refused = await env.stack.call('POST', '/v1/agents', { name: `conformance ${rt.kind} asks`, tool_policy: POLICY, ...(await rt.agent(env)) });
      expect(refused.status).toBe(400);
      expect(JSON.stringify(refused.body)).toContain('tool_policy');
      expect(refused.body.detail ?? refused.body.title).toMatch(/approv|ask/i);
    });

    it('answers a follow-up in the same session with end_turn', { timeout: 120_000 }, async () => {
      const idle = await turn(script('conformance follow-up', [{ say: 'followed up' }]));
      expect(idle.stop_reason?.type).toBe('end_turn');
      const messages = (await eventsOf(env.stack, sessionId)).filter((e) => e.type === 'agent.message');
      expect(messages.at(-1)?.content[0].text).toBe('followed up');
    });

    // last: it replaces the in-process worker with worker processes
    it.runIf(caps.reattach)('finishes a turn whose worker was SIGKILLed mid-turn, without the runtime receiving the prompt twice', { timeout: 240_000 }, async () => {
      await env.stack.stopWorker();
      worker = await spawnWorker(env.stack, { AGENTPLANE_RUNTIMES: rt.kind });
      const prompt = 'conformance reattach';
      // a team budget, so that each model request through the gateway takes a hold the crash could leave behind
      if (caps.gateway) expect((await env.stack.call('POST', '/v1/budgets', { scope: 'team', period: 'month', limit_usd: 1000 })).status).toBe(200);
      const before = (await eventsOf(env.stack, sessionId)).length;
      const sent = await env.stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.message', content: script(prompt, [{ hold: true, say: 'finished after the crash' }]) }] });
      expect(sent.status).toBeLessThan(300);
      await rt.held(env, prompt);
      await worker.kill();
      worker = await spawnWorker(env.stack, { AGENTPLANE_RUNTIMES: rt.kind });
      rt.release(env, prompt);
      await waitForStatus(env.stack, sessionId, 'idle', 'end_turn', 180_000);

      const received = rt.promptsReceived(env, prompt);
      if (received !== null) expect(received).toBe(1);
      const events = await eventsOf(env.stack, sessionId);
      expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
      const messages = events.slice(before).filter((e) => e.type === 'agent.message').map((e) => e.content[0].text);
      expect(messages.at(-1)).toBe('finished after the crash');
      // every message of the turn once: nothing replayed into the log twice
      expect(new Set(messages).size).toBe(messages.length);
      if (caps.gateway) {
        // the request the crash cut across was charged once, by the next worker, and no hold stayed behind
        const spans = events.filter((e) => e.type === 'span.model_request_end');
        expect(spans.every((e) => e.metered_by === 'gateway')).toBe(true);
        const ledger = rowsOf<{ n: number; distinct_sources: number }>(await env.stack.db.db.execute(sql`select count(*)::int as n, count(distinct source_id)::int as distinct_sources from ledger where session_id = ${sessionId}`))[0]!;
        expect(ledger).toEqual({ n: spans.length, distinct_sources: spans.length });
        const held = rowsOf<{ n: number }>(await env.stack.db.db.execute(sql`select count(*)::int as n from reservations where session_id = ${sessionId} and status = 'held'`))[0]!;
        expect(held.n).toBe(0);
      }
    });
  });
}
