/**
 * A deterministic fake LLM on 127.0.0.1 for tests of real runtimes (OpenCode, Claude Code, OpenClaw, DeepAgents).
 *
 * It speaks the two wire protocols those runtimes use against a custom base URL:
 * - OpenAI chat completions: `POST /v1/chat/completions` (SSE when `stream: true`, one JSON body otherwise), `GET /v1/models`;
 * - Anthropic Messages: `POST /v1/messages` (SSE with `event:` + `data:` lines, or one JSON body).
 *
 * A script maps the user message that started the current exchange to the steps the model takes in it:
 *
 *   model.setScript({
 *     'list the files': [{ tool: 'bash', input: { command: 'ls' } }, { text: (ctx) => `saw ${ctx.lastToolResult}` }],
 *   });
 *
 * Which step answers a request is decided from the request alone, so a retried or replayed request gets the same
 * answer: step N answers once N tool calls of this exchange have their results in the conversation. Harnesses append
 * synthetic user messages after tool results (OpenClaw does), so "the last message is a user message" does not mean
 * a new exchange; the exchange starts at the last user message that matches a script rule, or else at the last
 * user message that does not follow a tool result and is not a harness message (OpenClaw also sends its internal
 * context as a user message right after the prompt). Prompts that match no rule get `echo: <prompt>`.
 *
 * Every request is recorded (path, body, time, which exchange and step answered) so tests can prove that a runtime
 * sent a prompt exactly once. A step can be held (`waitFor`, `delayMs`) so a test can kill a worker mid-turn.
 */
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface StepContext {
  /** the user text that started the exchange */
  prompt: string;
  /** index of the step answering this request */
  stepIndex: number;
  /** text of the most recent tool result in the exchange (what the model "sees"), if any */
  lastToolResult: string | undefined;
  /** the tool names offered by the request */
  tools: string[];
  protocol: Protocol;
}

export interface ScriptStep {
  /** text the model replies with (before its tool call, when both are given) */
  text?: string | ((ctx: StepContext) => string);
  /**
   * A tool call. The name is matched case-insensitively against the request's tool list; give several names to
   * cover runtimes that spell a tool differently (`['bash', 'Bash']`). The first one offered wins; when none is
   * offered the first name is used as is.
   */
  tool?: string | string[];
  /** the tool call's arguments */
  input?: Record<string, unknown>;
  /** wait this long before answering (streaming responses send their headers first) */
  delayMs?: number;
  /** answer only once this settles (see `createGate`); aborted if the client goes away first */
  waitFor?: PromiseLike<unknown>;
  /** usage reported for this call; defaults to the server's */
  usage?: Usage;
  /** answer with an HTTP error instead */
  error?: { status: number; message: string };
}

export interface ScriptRule {
  /** a string matches a user text equal to it or containing it */
  match: string | RegExp | ((prompt: string) => boolean);
  steps: ScriptStep[];
}

/** Exact prompt → steps, or ordered rules (first match wins). */
export type Script = Record<string, ScriptStep[]> | ScriptRule[];

export interface Usage {
  input: number;
  output: number;
}

export type Protocol = 'openai' | 'anthropic';

export interface RecordedRequest {
  seq: number;
  method: string;
  path: string;
  headers: Record<string, string | string[] | undefined>;
  protocol: Protocol | null;
  body: unknown;
  at: number;
  stream: boolean;
  /** the prompt of the exchange this request belongs to (null for non-model routes) */
  prompt: string | null;
  /** which step answered (past the end of a script: the last step again) */
  stepIndex: number | null;
  /** true when a script rule matched; false for the echo default */
  scripted: boolean;
  /** what was answered: text, a tool call (canonical name as sent), or an error status */
  answer: { text?: string; tool?: string; error?: number } | null;
}

export interface Gate {
  readonly promise: Promise<void>;
  release(): void;
}

/** A promise a test releases by hand: put `waitFor: gate.promise` on a step to hold the model mid-turn. */
export function createGate(): Gate {
  let release!: () => void;
  const promise = new Promise<void>((resolve) => (release = resolve));
  return { promise, release };
}

export interface ScriptedModelOptions {
  script?: Script;
  /** usage reported per call; default 100 input / 20 output tokens */
  usage?: Usage;
  /** model id reported in responses and by `GET /v1/models` */
  model?: string;
}

export interface ScriptedModel {
  /** base URL, e.g. http://127.0.0.1:PORT */
  url: string;
  /** `url + '/v1'`: the base URL OpenAI-compatible clients take */
  openaiBaseUrl: string;
  requests: RecordedRequest[];
  setScript(script: Script): void;
  /** forget recorded requests (the script stays) */
  reset(): void;
  /** model requests that started exchange `prompt` (step 0): how often the runtime sent that prompt to the model */
  countPrompts(prompt: string): number;
  /** all model requests of exchange `prompt` */
  requestsFor(prompt: string): RecordedRequest[];
  /** resolves with the first recorded request (past or future) that satisfies `predicate` */
  waitForRequest(predicate: (r: RecordedRequest) => boolean, timeoutMs?: number): Promise<RecordedRequest>;
  close(): Promise<void>;
}

const DEFAULT_USAGE: Usage = { input: 100, output: 20 };

export async function startScriptedModel(opts: ScriptedModelOptions = {}): Promise<ScriptedModel> {
  let rules = toRules(opts.script ?? {});
  const usageDefault = opts.usage ?? DEFAULT_USAGE;
  const modelId = opts.model ?? 'scripted-model';
  const requests: RecordedRequest[] = [];
  const waiters = new Set<{ predicate: (r: RecordedRequest) => boolean; resolve: (r: RecordedRequest) => void }>();
  let seq = 0;

  function record(r: RecordedRequest): void {
    requests.push(r);
    for (const w of waiters) {
      if (w.predicate(r)) {
        waiters.delete(w);
        w.resolve(r);
      }
    }
  }

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { message: (err as Error).message } }));
      } else {
        res.destroy();
      }
    });
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const raw = await readBody(req);
    let body: unknown = null;
    if (raw.length > 0) {
      try {
        body = JSON.parse(raw);
      } catch {
        body = raw;
      }
    }
    const base = { seq: ++seq, method: req.method ?? 'GET', path, headers: { ...req.headers }, body, at: Date.now() };

    if (req.method === 'GET' && (path === '/v1/models' || path === '/models')) {
      record({ ...base, protocol: null, stream: false, prompt: null, stepIndex: null, scripted: false, answer: null });
      sendJson(res, 200, { object: 'list', data: [{ id: modelId, object: 'model', created: 0, owned_by: 'scripted' }] });
      return;
    }
    const protocol: Protocol | null =
      req.method === 'POST' && (path === '/v1/chat/completions' || path === '/chat/completions')
        ? 'openai'
        : req.method === 'POST' && (path === '/v1/messages' || path === '/messages')
          ? 'anthropic'
          : null;
    if (!protocol || typeof body !== 'object' || body === null) {
      record({ ...base, protocol, stream: false, prompt: null, stepIndex: null, scripted: false, answer: { error: 404 } });
      sendJson(res, 404, { error: { message: `scripted model: no route ${req.method} ${path}` } });
      return;
    }

    const request = body as { stream?: boolean; model?: string };
    const stream = request.stream === true;
    const convo = protocol === 'openai' ? readOpenAi(body) : readAnthropic(body);
    const { rule, exchange } = locateExchange(convo, rules);
    const steps = rule?.steps ?? [{ text: (ctx: StepContext) => `echo: ${ctx.prompt}` }];
    const stepIndex = Math.min(exchange.completedToolRounds, steps.length - 1);
    const ctx: StepContext = { prompt: exchange.prompt, stepIndex, lastToolResult: exchange.lastToolResult, tools: convo.tools, protocol };
    // a step past the script's end repeats the last text step; a tool step is never repeated (that loops the agent)
    let step = steps[stepIndex] ?? {};
    if (exchange.completedToolRounds >= steps.length && step.tool) step = { text: 'done', usage: step.usage };

    const text = typeof step.text === 'function' ? step.text(ctx) : step.text;
    const toolName = step.tool ? pickTool(step.tool, convo.tools) : undefined;
    const callId = step.tool ? `call_${shortHash(`${exchange.prompt}\u0000${exchange.startIndex}`)}_${stepIndex}` : undefined;
    const usage = step.usage ?? usageDefault;
    const model = request.model ?? modelId;
    record({
      ...base,
      protocol,
      stream,
      prompt: exchange.prompt,
      stepIndex,
      scripted: rule !== null,
      answer: step.error ? { error: step.error.status } : { text, tool: toolName },
    });

    const closed = new Promise<void>((resolve) => res.once('close', resolve));
    if (step.error) {
      await hold(step, closed);
      sendJson(res, step.error.status, { error: { message: step.error.message, type: 'scripted_error' } });
      return;
    }
    const reply: Reply = { text, tool: toolName && callId ? { id: callId, name: toolName, input: step.input ?? {} } : undefined, usage, model };
    if (stream) {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
      res.flushHeaders();
      if (!(await hold(step, closed))) return;
      const frames = protocol === 'openai' ? openAiFrames(reply, base.seq) : anthropicFrames(reply, base.seq);
      res.end(frames.join(''));
    } else {
      if (!(await hold(step, closed))) return;
      sendJson(res, 200, protocol === 'openai' ? openAiJson(reply, base.seq) : anthropicJson(reply, base.seq));
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;

  const modelRequests = () => requests.filter((r) => r.protocol !== null && r.prompt !== null);
  return {
    url,
    openaiBaseUrl: `${url}/v1`,
    requests,
    setScript(script) {
      rules = toRules(script);
    },
    reset() {
      requests.length = 0;
    },
    countPrompts(prompt) {
      return modelRequests().filter((r) => r.prompt === prompt && r.stepIndex === 0).length;
    },
    requestsFor(prompt) {
      return modelRequests().filter((r) => r.prompt === prompt);
    },
    waitForRequest(predicate, timeoutMs = 20_000) {
      const seen = requests.find(predicate);
      if (seen) return Promise.resolve(seen);
      return new Promise<RecordedRequest>((resolve, reject) => {
        const waiter = {
          predicate,
          resolve: (r: RecordedRequest) => {
            clearTimeout(timer);
            resolve(r);
          },
        };
        const timer = setTimeout(() => {
          waiters.delete(waiter);
          reject(new Error(`scripted model: no matching request within ${timeoutMs} ms`));
        }, timeoutMs);
        waiters.add(waiter);
      });
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Reading a conversation, whichever protocol it came in

type Turn =
  | { kind: 'user'; text: string }
  | { kind: 'assistant'; toolCallIds: string[] }
  | { kind: 'tool_result'; callId: string; text: string };

interface Conversation {
  turns: Turn[];
  tools: string[];
}

function readOpenAi(body: unknown): Conversation {
  const b = body as { messages?: Array<Record<string, unknown>>; tools?: Array<{ function?: { name?: string }; name?: string }> };
  const turns: Turn[] = [];
  for (const m of b.messages ?? []) {
    if (m.role === 'user') turns.push({ kind: 'user', text: contentText(m.content) });
    else if (m.role === 'assistant') {
      const calls = (m.tool_calls as Array<{ id?: string }> | undefined) ?? [];
      turns.push({ kind: 'assistant', toolCallIds: calls.map((c) => String(c.id ?? '')) });
    } else if (m.role === 'tool') turns.push({ kind: 'tool_result', callId: String(m.tool_call_id ?? ''), text: contentText(m.content) });
  }
  const tools = (b.tools ?? []).map((t) => t.function?.name ?? t.name ?? '').filter(Boolean);
  return { turns, tools };
}

function readAnthropic(body: unknown): Conversation {
  const b = body as { messages?: Array<{ role?: string; content?: unknown }>; tools?: Array<{ name?: string }> };
  const turns: Turn[] = [];
  for (const m of b.messages ?? []) {
    const blocks = typeof m.content === 'string' ? [{ type: 'text', text: m.content }] : ((m.content as Array<Record<string, unknown>>) ?? []);
    if (m.role === 'user') {
      // tool results ride in user messages; text blocks next to them are the harness's, not a new exchange
      const results = blocks.filter((c) => c.type === 'tool_result');
      for (const r of results) turns.push({ kind: 'tool_result', callId: String(r.tool_use_id ?? ''), text: contentText(r.content) });
      const text = blocks.filter((c) => c.type === 'text').map((c) => String(c.text ?? '')).join('\n');
      if (text) turns.push({ kind: 'user', text });
    } else if (m.role === 'assistant') {
      turns.push({ kind: 'assistant', toolCallIds: blocks.filter((c) => c.type === 'tool_use').map((c) => String(c.id ?? '')) });
    }
  }
  const tools = (b.tools ?? []).map((t) => t.name ?? '').filter(Boolean);
  return { turns, tools };
}

function contentText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) {
    return content
      .map((c: unknown) => {
        if (typeof c === 'string') return c;
        const part = c as { type?: string; text?: unknown };
        return part.type === 'text' || typeof part.text === 'string' ? String(part.text ?? '') : '';
      })
      .filter(Boolean)
      .join('\n');
  }
  return '';
}

interface Exchange {
  prompt: string;
  startIndex: number;
  /** tool calls of this exchange whose results are in the conversation, counted per assistant message */
  completedToolRounds: number;
  lastToolResult: string | undefined;
}

function locateExchange(convo: Conversation, rules: ScriptRule[]): { rule: ScriptRule | null; exchange: Exchange } {
  const { turns } = convo;
  let start = -1;
  let rule: ScriptRule | null = null;
  // the latest user message that a rule claims starts the exchange (synthetic harness messages match no rule)
  for (let i = turns.length - 1; i >= 0 && rule === null; i--) {
    const t = turns[i];
    if (t?.kind !== 'user') continue;
    const r = rules.find((candidate) => matches(candidate.match, t.text));
    if (r) {
      rule = r;
      start = i;
    }
  }
  // …unless a newer user message, not a follow-up to a tool result, started an unscripted exchange since
  for (let i = turns.length - 1; i > start; i--) {
    const t = turns[i];
    if (t?.kind === 'user' && !followsToolResult(turns, i) && !isHarnessMessage(t.text)) {
      rule = null;
      start = i;
      break;
    }
  }
  if (start === -1) {
    // nothing scripted and nothing that looks like a fresh user message: answer the last user text
    for (let i = turns.length - 1; i >= 0; i--) {
      if (turns[i]?.kind === 'user') {
        start = i;
        break;
      }
    }
  }
  const startTurn = turns[start];
  const prompt = startTurn?.kind === 'user' ? startTurn.text : '';
  const answered = new Set<string>();
  let lastToolResult: string | undefined;
  for (let i = start + 1; i < turns.length; i++) {
    const t = turns[i];
    if (t?.kind === 'tool_result') {
      answered.add(t.callId);
      lastToolResult = t.text;
    }
  }
  let completedToolRounds = 0;
  for (let i = start + 1; i < turns.length; i++) {
    const t = turns[i];
    if (t?.kind === 'assistant' && t.toolCallIds.length > 0 && t.toolCallIds.some((id) => answered.has(id))) completedToolRounds++;
  }
  return { rule, exchange: { prompt, startIndex: Math.max(start, 0), completedToolRounds, lastToolResult } };
}

/** user messages a harness adds on its own: never the start of an exchange */
const HARNESS_MARKERS = ['<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>'];

function isHarnessMessage(text: string): boolean {
  return HARNESS_MARKERS.some((marker) => text.trimStart().startsWith(marker));
}

function followsToolResult(turns: Turn[], index: number): boolean {
  for (let i = index - 1; i >= 0; i--) {
    const t = turns[i];
    if (t?.kind === 'user') continue;
    return t?.kind === 'tool_result' || (t?.kind === 'assistant' && t.toolCallIds.length > 0);
  }
  return false;
}

function matches(match: ScriptRule['match'], text: string): boolean {
  if (typeof match === 'string') return text.trim() === match.trim() || text.includes(match);
  if (match instanceof RegExp) return match.test(text);
  return match(text);
}

function toRules(script: Script): ScriptRule[] {
  if (Array.isArray(script)) return script;
  return Object.entries(script).map(([match, steps]) => ({ match, steps }));
}

function pickTool(name: string | string[], offered: string[]): string {
  const names = Array.isArray(name) ? name : [name];
  for (const n of names) {
    const hit = offered.find((o) => o.toLowerCase() === n.toLowerCase());
    if (hit) return hit;
  }
  return names[0] ?? 'unknown';
}

// ---------------------------------------------------------------------------------------------------------------
// Writing replies

interface Reply {
  text: string | undefined;
  tool: { id: string; name: string; input: Record<string, unknown> } | undefined;
  usage: Usage;
  model: string;
}

function openAiFrames(reply: Reply, seq: number): string[] {
  const id = `chatcmpl-scripted-${seq}`;
  const created = Math.floor(Date.now() / 1000);
  const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
    `data: ${JSON.stringify({ id, object: 'chat.completion.chunk', created, model: reply.model, choices, ...extra })}\n\n`;
  const frames = [chunk([{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }])];
  if (reply.text) {
    // two deltas, so clients that assemble text from deltas are exercised
    for (const piece of splitInTwo(reply.text)) frames.push(chunk([{ index: 0, delta: { content: piece }, finish_reason: null }]));
  }
  if (reply.tool) {
    const args = JSON.stringify(reply.tool.input);
    frames.push(chunk([{ index: 0, delta: { tool_calls: [{ index: 0, id: reply.tool.id, type: 'function', function: { name: reply.tool.name, arguments: '' } }] }, finish_reason: null }]));
    for (const piece of splitInTwo(args)) frames.push(chunk([{ index: 0, delta: { tool_calls: [{ index: 0, function: { arguments: piece } }] }, finish_reason: null }]));
  }
  frames.push(chunk([{ index: 0, delta: {}, finish_reason: reply.tool ? 'tool_calls' : 'stop' }]));
  frames.push(chunk([], { usage: openAiUsage(reply.usage) }));
  frames.push('data: [DONE]\n\n');
  return frames;
}

function openAiJson(reply: Reply, seq: number): unknown {
  return {
    id: `chatcmpl-scripted-${seq}`,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model: reply.model,
    choices: [
      {
        index: 0,
        message: {
          role: 'assistant',
          content: reply.text ?? null,
          ...(reply.tool ? { tool_calls: [{ id: reply.tool.id, type: 'function', function: { name: reply.tool.name, arguments: JSON.stringify(reply.tool.input) } }] } : {}),
        },
        finish_reason: reply.tool ? 'tool_calls' : 'stop',
      },
    ],
    usage: openAiUsage(reply.usage),
  };
}

function openAiUsage(u: Usage) {
  return { prompt_tokens: u.input, completion_tokens: u.output, total_tokens: u.input + u.output };
}

function anthropicFrames(reply: Reply, seq: number): string[] {
  const frame = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify({ type: event, ...(data as object) })}\n\n`;
  const frames = [
    frame('message_start', {
      message: {
        id: `msg_scripted_${seq}`,
        type: 'message',
        role: 'assistant',
        model: reply.model,
        content: [],
        stop_reason: null,
        stop_sequence: null,
        usage: { input_tokens: reply.usage.input, output_tokens: 1, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 },
      },
    }),
  ];
  let index = 0;
  if (reply.text) {
    frames.push(frame('content_block_start', { index, content_block: { type: 'text', text: '' } }));
    for (const piece of splitInTwo(reply.text)) frames.push(frame('content_block_delta', { index, delta: { type: 'text_delta', text: piece } }));
    frames.push(frame('content_block_stop', { index }));
    index++;
  }
  if (reply.tool) {
    frames.push(frame('content_block_start', { index, content_block: { type: 'tool_use', id: reply.tool.id, name: reply.tool.name, input: {} } }));
    for (const piece of splitInTwo(JSON.stringify(reply.tool.input))) frames.push(frame('content_block_delta', { index, delta: { type: 'input_json_delta', partial_json: piece } }));
    frames.push(frame('content_block_stop', { index }));
  }
  frames.push(frame('message_delta', { delta: { stop_reason: reply.tool ? 'tool_use' : 'end_turn', stop_sequence: null }, usage: { output_tokens: reply.usage.output } }));
  frames.push(frame('message_stop', {}));
  return frames;
}

function anthropicJson(reply: Reply, seq: number): unknown {
  const content: unknown[] = [];
  if (reply.text) content.push({ type: 'text', text: reply.text });
  if (reply.tool) content.push({ type: 'tool_use', id: reply.tool.id, name: reply.tool.name, input: reply.tool.input });
  return {
    id: `msg_scripted_${seq}`,
    type: 'message',
    role: 'assistant',
    model: reply.model,
    content,
    stop_reason: reply.tool ? 'tool_use' : 'end_turn',
    stop_sequence: null,
    usage: { input_tokens: reply.usage.input, output_tokens: reply.usage.output, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 },
  };
}

// ---------------------------------------------------------------------------------------------------------------

/** Waits for the step's delay and gate; false when the client went away first. */
async function hold(step: ScriptStep, closed: Promise<void>): Promise<boolean> {
  const waits: Array<PromiseLike<unknown>> = [];
  if (step.delayMs) waits.push(new Promise((resolve) => setTimeout(resolve, step.delayMs)));
  if (step.waitFor) waits.push(step.waitFor);
  if (waits.length === 0) return true;
  const gone = Symbol('gone');
  const outcome = await Promise.race([Promise.all(waits), closed.then(() => gone)]);
  return outcome !== gone;
}

function splitInTwo(s: string): string[] {
  if (s.length < 2) return [s];
  const mid = Math.ceil(s.length / 2);
  return [s.slice(0, mid), s.slice(mid)];
}

function shortHash(s: string): string {
  return createHash('sha256').update(s).digest('hex').slice(0, 12);
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
