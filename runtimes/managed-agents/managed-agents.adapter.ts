/**
 * Claude Managed Agents behind the RuntimeAdapter contract, over the egress guard's `fetch` (beta `managed-agents-2026-04-01`).
 *
 * The base URL is the agent's `modelProvider.baseUrl` (default https://api.anthropic.com) and the key its model
 * credential, sent as `x-api-key` only. Any server speaking the protocol works, another agentplane included: its
 * `/v1` surface is the same, and the outer key is then an API key of the inner agentplane.
 *
 * `agent.runtime.config` (all optional): `agent_id` / `environment_id` reuse remote ones instead of creating them;
 * `agent` is merged into the remote agent's create body (e.g. `{runtime: {type: 'scripted'}}` for an inner
 * agentplane); `environment` likewise for the environment.
 *
 * What must stay true:
 * - One remote agent, environment and session per agentplane session, created by `open` and recorded in the ref
 *   (which the activity persists), so later turns and retries reuse them.
 * - Every tool call comes to agentplane's policy: the remote toolset is `always_ask`, and each `agent.tool_use` with
 *   `evaluated_permission: 'ask'` goes through `sink.decide`; allow/deny are answered at once with
 *   `user.tool_confirmation`, `ask` returns `requires_action` with the remote session left waiting.
 * - The prompt is sent at most once. Before sending, the number of `user.message` events already in the remote
 *   history is checkpointed; after sending, the id the server gave the message. A retry opens the stream first,
 *   then lists the history (the stream does not replay), deduplicates by event id, and finds its message there
 *   instead of sending it again. The turn's events are the ones after that message.
 * - Cost: the remote `session.usage` is cumulative; each one's `list_cost` (and token) delta since the previous one
 *   becomes one canonical `span.model_request_end` with `cost_usd`, keyed by the usage event's id. The native spans
 *   are not charged (they would count the same tokens twice), except when a span carries its own `cost_usd` (an
 *   inner agentplane does), in which case spans are charged and `session.usage` is ignored. A server that reports
 *   neither gets its spans priced by tokens at the end of the turn.
 * - The key is never in `ref.state`, events or errors; neither is the body of a failed answer (its status and error
 *   type only: runtimes/kit/egress.ts).
 */
import { DEFAULT_NETWORKING } from '../../governance/networking';
import { createEgressGuard, describeResponse, egressRefusal, errorToken, type EgressGuard } from '../kit/egress';
import { readSseFrames } from '../kit/sse';
import { CANONICAL_TOOLS, type CanonicalTool } from '../../governance/types';
import type { ModelUsage, RuntimeAdapter, RuntimeEvent, RuntimeSessionRef, TurnContext, TurnInput, TurnResult, TurnSink } from '../runtime-adapter';
import { descriptor, type ManagedAgentsConfig } from './descriptor';

export const MANAGED_AGENTS_BETA = 'managed-agents-2026-04-01';
const DEFAULT_BASE_URL = 'https://api.anthropic.com';

export interface ManagedAgentsAdapterOptions {
  /** used when the agent has no model provider (default https://api.anthropic.com) */
  defaultBaseUrl?: string;
  /** how long to wait before reopening a stream that ended (default 300 ms) */
  reconnectMs?: number;
  /** a retry that cannot find its message in the history looks again after this long before sending (default 500 ms) */
  settleMs?: number;
  /** every connection to the remote server goes through it (default: private addresses refused) */
  egress?: EgressGuard;
}

interface TurnRecord {
  turnId: string;
  messageId: string;
  /** `user.message` events in the remote history before ours was sent */
  userMessagesBefore: number;
  /** the remote id of our message, once the server answered */
  sentEventId: string | null;
}

interface ManagedState extends Record<string, unknown> {
  agentId?: string;
  environmentId?: string;
  turn?: TurnRecord;
}

type RemoteEvent = Record<string, any> & { id: string; type: string };

export class ManagedAgentsError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

interface Api {
  request<T = any>(method: string, path: string, body?: unknown): Promise<T>;
  stream(sessionId: string, signal: AbortSignal): Promise<AsyncGenerator<RemoteEvent>>;
  history(sessionId: string): Promise<RemoteEvent[]>;
}

function createApi(baseUrl: string, key: string | undefined, egress: EgressGuard): Api {
  const root = baseUrl.replace(/\/+$/, '');
  const headers = (): Record<string, string> => ({
    ...(key ? { 'x-api-key': key } : {}),
    'anthropic-version': '2023-06-01',
    'anthropic-beta': MANAGED_AGENTS_BETA,
  });
  // the status and at most the error's type: never the server's words (a base URL aimed at the wrong server would
  // otherwise copy its pages into session errors), never what we sent, never the key
  const failure = async (res: Response, what: string) => new ManagedAgentsError(res.status, `${what}: ${await describeResponse(res, [key])}`);
  const api: Api = {
    async request(method, path, body) {
      const what = `${method} ${path.split('?')[0]}`;
      const res = await egress.fetch(`${root}${path}`, {
        method,
        headers: { ...headers(), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (!res.ok) throw await failure(res, what);
      const answer = parseJson(await res.text());
      if (answer === undefined) throw new ManagedAgentsError(502, `${what}: ${res.status} answer is not JSON`);
      return answer as any;
    },
    async stream(sessionId, signal) {
      const res = await egress.fetch(`${root}/v1/sessions/${sessionId}/events/stream`, { headers: { ...headers(), accept: 'text/event-stream' }, signal });
      if (!res.ok || !res.body) throw await failure(res, 'GET /v1/sessions/{id}/events/stream');
      return readSse(res.body);
    },
    async history(sessionId) {
      const all: RemoteEvent[] = [];
      let page: string | null = null;
      for (;;) {
        const q = new URLSearchParams({ limit: '100', ...(page ? { page } : {}) });
        const body: { data: RemoteEvent[]; next_page: string | null } = await api.request('GET', `/v1/sessions/${sessionId}/events?${q}`);
        all.push(...body.data);
        if (!body.next_page || body.data.length === 0) return all;
        page = body.next_page;
      }
    },
  };
  return api;
}

/** SSE frames: `event:` + `data:`; frames without `event:` are dropped (as the official SDK does), pings skipped */
async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<RemoteEvent> {
  for await (const frame of readSseFrames(body)) {
    if (frame.event === null || frame.event === 'ping' || frame.data === '') continue;
    const event = parseJson(frame.data);
    // an error frame says what kind of error in its JSON `error.type`; its message is the server's, not repeated
    if (frame.event === 'error') {
      const token = errorToken(event);
      throw new ManagedAgentsError(502, `stream error${token ? `: ${token}` : ''}`);
    }
    if (event === undefined) throw new ManagedAgentsError(502, `stream ${frame.event} frame is not JSON`);
    yield event as RemoteEvent;
  }
}

/** the JSON value, or undefined: JSON.parse's own message quotes the text it choked on */
function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

export function createManagedAgentsAdapter(opts: ManagedAgentsAdapterOptions = {}): RuntimeAdapter {
  const reconnectMs = opts.reconnectMs ?? 300;
  const settleMs = opts.settleMs ?? 500;
  const egress = opts.egress ?? createEgressGuard({ allowPrivate: [] });
  /** keys seen by runTurn, in memory only, so `close` (which gets no context) can archive the remote session */
  const keys = new Map<string, { baseUrl: string; key: string | undefined }>();

  function apiFor(ctx: TurnContext): Api {
    const baseUrl = ctx.agent.modelProvider?.baseUrl || opts.defaultBaseUrl || DEFAULT_BASE_URL;
    keys.set(ctx.sessionId, { baseUrl, key: ctx.secrets.modelApiKey });
    return createApi(baseUrl, ctx.secrets.modelApiKey, egress);
  }

  return {
    kind: descriptor.kind,
    capabilities: descriptor.capabilities,

    async open(ctx, previous) {
      if (previous?.runtimeSessionId) return previous;
      const api = apiFor(ctx);
      const config = (ctx.agent.runtime.config ?? {}) as ManagedAgentsConfig;
      const state: ManagedState = { ...(previous?.state ?? {}) };
      const metadata = { agentplane_session_id: ctx.sessionId, agentplane_agent_id: ctx.agent.agentId };
      state.agentId ??=
        config.agent_id ??
        (
          await api.request<{ id: string }>('POST', '/v1/agents', {
            name: ctx.agent.name,
            model: ctx.agent.model,
            ...(ctx.agent.system ? { system: ctx.agent.system } : {}),
            // every call asks, so every call comes to agentplane's policy
            tools: [{ type: 'agent_toolset_20260401', default_config: { permission_policy: { type: 'always_ask' } } }],
            metadata,
            ...config.agent,
          })
        ).id;
      state.environmentId ??=
        config.environment_id ??
        (await api.request<{ id: string }>('POST', '/v1/environments', { name: `agentplane ${ctx.sessionId}`, config: { type: 'cloud', networking: ctx.networking ?? DEFAULT_NETWORKING }, metadata, ...config.environment })).id;
      const session = await api.request<{ id: string }>('POST', '/v1/sessions', { agent: state.agentId, environment_id: state.environmentId, title: `agentplane ${ctx.sessionId}`, metadata });
      return { sessionId: ctx.sessionId, runtimeSessionId: session.id, state };
    },

    async runTurn(ctx, ref, input, sink) {
      const api = apiFor(ctx);
      try {
        return await runTurn(api, ctx, ref, input, sink, { reconnectMs, settleMs });
      } catch (err) {
        const refused = egressRefusal(err);
        if (refused) return { status: 'error', message: `egress refused: ${refused.reason}`, retryable: false };
        if (err instanceof ManagedAgentsError && err.status >= 400 && err.status < 500 && err.status !== 408 && err.status !== 429) {
          return { status: 'error', message: err.message, retryable: false };
        }
        if (err instanceof ManagedAgentsError) return { status: 'error', message: err.message, retryable: true };
        throw err;
      }
    },

    async close(ref) {
      const known = keys.get(ref.sessionId);
      keys.delete(ref.sessionId);
      if (!known) return;
      await createApi(known.baseUrl, known.key, egress)
        .request('POST', `/v1/sessions/${ref.runtimeSessionId}/archive`, {})
        .catch(() => {});
    },
  };
}

async function runTurn(api: Api, ctx: TurnContext, ref: RuntimeSessionRef, input: TurnInput, sink: TurnSink, timing: { reconnectMs: number; settleMs: number }): Promise<TurnResult> {
  const remoteId = ref.runtimeSessionId;
  let state = { ...ref.state } as ManagedState;
  const save = async (next: ManagedState) => {
    state = next;
    await sink.checkpoint(state);
  };
  const sendMessage = async (turn: TurnRecord, text: string) => {
    const sent = await api.request<{ data: RemoteEvent[] }>('POST', `/v1/sessions/${remoteId}/events`, { events: [{ type: 'user.message', content: [{ type: 'text', text }] }] });
    await save({ ...state, turn: { ...turn, sentEventId: sent.data[0]?.id ?? null } });
  };

  const streamAbort = new AbortController();
  const onAbort = () => streamAbort.abort();
  sink.signal.addEventListener('abort', onAbort, { once: true });
  try {
    if (sink.signal.aborted) return await interrupt(api, remoteId);
    // the stream first, then the history: nothing falls between the two
    let stream = await api.stream(remoteId, streamAbort.signal);
    let history = await api.history(remoteId);

    if (input.kind === 'message') {
      if (state.turn?.turnId !== input.turnId) {
        const turn: TurnRecord = { turnId: input.turnId, messageId: input.messageId, userMessagesBefore: history.filter((e) => e.type === 'user.message').length, sentEventId: null };
        await save({ ...state, turn });
        await sendMessage(turn, input.text);
      } else if (!state.turn.sentEventId && !findStart(history, state.turn)) {
        // a retry that does not know whether the prompt left: it may still be on its way into the history
        await new Promise((r) => setTimeout(r, timing.settleMs));
        history = await api.history(remoteId);
        if (!findStart(history, state.turn)) await sendMessage(state.turn, input.text);
      }
    }
    const turn = state.turn;
    if (!turn || (input.kind === 'resume' && turn.turnId !== input.turnId)) return { status: 'error', message: `no turn ${input.turnId} on remote session ${remoteId}`, retryable: false };

    const answered = new Set(history.filter((e) => e.type === 'user.tool_confirmation').map((e) => String(e.tool_use_id)));
    if (input.kind === 'resume') {
      const confirmations = input.decisions.filter((d) => !answered.has(d.requestId)).map((d) => confirmation(d.requestId, d.behavior, d.message));
      if (confirmations.length > 0) await api.request('POST', `/v1/sessions/${remoteId}/events`, { events: confirmations });
      for (const d of input.decisions) answered.add(d.requestId);
    }

    const reader = new TurnReader(api, ctx, remoteId, turn, sink, answered, history);
    for (;;) {
      for (const event of history) {
        const result = await reader.handle(event);
        if (result) return result;
      }
      try {
        for await (const event of stream) {
          const result = await reader.handle(event);
          if (result) return result;
        }
      } catch (err) {
        if (egressRefusal(err) || (!sink.signal.aborted && !(err instanceof Error && err.name === 'AbortError') && !(err instanceof TypeError))) throw err;
      }
      if (sink.signal.aborted) return await interrupt(api, remoteId);
      // the stream ended or broke: reopen it, then read what was missed from the history
      await new Promise((r) => setTimeout(r, timing.reconnectMs));
      stream = await api.stream(remoteId, streamAbort.signal);
      history = await api.history(remoteId);
    }
  } finally {
    sink.signal.removeEventListener('abort', onAbort);
    streamAbort.abort();
  }
}

async function interrupt(api: Api, remoteId: string): Promise<TurnResult> {
  await api.request('POST', `/v1/sessions/${remoteId}/events`, { events: [{ type: 'user.interrupt' }] });
  return { status: 'interrupted' };
}

function confirmation(toolUseId: string, result: 'allow' | 'deny', message?: string) {
  return { type: 'user.tool_confirmation', tool_use_id: toolUseId, result, ...(result === 'deny' ? { deny_message: message ?? 'denied by agentplane' } : {}) };
}

/** our message in the history: by the id the server gave it, else the first user.message after those counted before */
function findStart(history: RemoteEvent[], turn: TurnRecord): RemoteEvent | undefined {
  if (turn.sentEventId) return history.find((e) => e.id === turn.sentEventId);
  return history.filter((e) => e.type === 'user.message')[turn.userMessagesBefore];
}

interface Cumulative {
  input_tokens: number;
  output_tokens: number;
  cache_read_input_tokens: number;
  cache_creation_input_tokens: number;
  cost: number;
}

/** Reads the remote events of one turn, in order, once each. */
class TurnReader {
  private readonly seen = new Set<string>();
  private started = false;
  private userMessages = 0;
  private usage: Cumulative | null = null;
  private usageSeen = false;
  private readonly spansReportCost: boolean;
  private unpriced: RuntimeEvent[] = [];
  private readonly asked = new Map<string, string>();

  constructor(
    private readonly api: Api,
    private readonly ctx: TurnContext,
    private readonly remoteId: string,
    private readonly turn: TurnRecord,
    private readonly sink: TurnSink,
    private readonly answered: Set<string>,
    history: RemoteEvent[],
  ) {
    this.spansReportCost = history.some((e) => e.type === 'span.model_request_end' && typeof e.cost_usd === 'number');
  }

  async handle(e: RemoteEvent): Promise<TurnResult | null> {
    if (!e?.id || this.seen.has(e.id)) return null;
    this.seen.add(e.id);
    if (e.type === 'session.usage') return this.onUsage(e);
    if (!this.started) {
      if (e.type === 'user.message') {
        this.userMessages++;
        this.started = this.turn.sentEventId ? e.id === this.turn.sentEventId : this.userMessages === this.turn.userMessagesBefore + 1;
      }
      return null;
    }
    const sink = this.sink;
    switch (e.type) {
      case 'agent.message':
      case 'agent.thinking':
        await sink.emit([{ sourceId: e.id, type: e.type, content: textBlocks(e.content) }]);
        return null;
      case 'agent.tool_use':
      case 'agent.mcp_tool_use':
      case 'agent.custom_tool_use':
        return this.onToolUse(e);
      case 'agent.tool_result':
      case 'agent.mcp_tool_result':
        await sink.emit([{ sourceId: e.id, type: 'agent.tool_result', tool_use_id: String(e.tool_use_id ?? e.mcp_tool_use_id), content: textBlocks(e.content), is_error: Boolean(e.is_error) }]);
        return null;
      case 'span.model_request_end': {
        const span: RuntimeEvent = { sourceId: e.id, type: 'span.model_request_end', model: typeof e.model === 'string' ? e.model : this.ctx.agent.model, model_usage: modelUsage(e.model_usage), is_error: Boolean(e.is_error) };
        if (typeof e.cost_usd === 'number') await sink.emit([{ ...span, cost_usd: e.cost_usd }]);
        else if (!this.spansReportCost) this.unpriced.push(span);
        return null;
      }
      case 'session.error':
        await sink.emit([{ sourceId: e.id, type: 'session.error', error: { type: String(e.error?.type ?? 'unknown_error'), message: String(e.error?.message ?? 'remote session error') } }]);
        return null;
      case 'session.status_terminated':
        return { status: 'error', message: `remote session ${this.remoteId} terminated`, retryable: false };
      case 'session.status_idle':
        return this.onIdle(e);
      default:
        return null;
    }
  }

  private async onUsage(e: RemoteEvent): Promise<null> {
    const u = e.usage ?? {};
    const now: Cumulative = {
      input_tokens: num(u.input_tokens),
      output_tokens: num(u.output_tokens),
      cache_read_input_tokens: num(u.cache_read_input_tokens),
      cache_creation_input_tokens: num(u.cache_creation_input_tokens) || num(u.cache_creation?.ephemeral_5m_input_tokens) + num(u.cache_creation?.ephemeral_1h_input_tokens),
      cost: num(u.list_cost?.amount),
    };
    const before = this.usage ?? { input_tokens: 0, output_tokens: 0, cache_read_input_tokens: 0, cache_creation_input_tokens: 0, cost: 0 };
    this.usage = now;
    this.usageSeen = true;
    if (!this.started || this.spansReportCost) return null;
    // whatever spans preceded this snapshot are inside its delta
    this.unpriced = [];
    const delta = (k: keyof Cumulative) => Math.max(0, now[k] - before[k]);
    const hasCost = u.list_cost?.amount !== undefined;
    await this.sink.emit([
      {
        sourceId: e.id,
        type: 'span.model_request_end',
        model: this.ctx.agent.model,
        is_error: false,
        model_usage: { input_tokens: delta('input_tokens'), output_tokens: delta('output_tokens'), cache_read_input_tokens: delta('cache_read_input_tokens'), cache_creation_input_tokens: delta('cache_creation_input_tokens') },
        ...(hasCost ? { cost_usd: Math.round(delta('cost') * 1e9) / 1e9 } : {}),
        raw: { list_cost: u.list_cost },
      },
    ]);
    return null;
  }

  private async onToolUse(e: RemoteEvent): Promise<TurnResult | null> {
    const tool = canonicalTool(e);
    const input = (e.input ?? {}) as Record<string, unknown>;
    const permission = e.evaluated_permission as 'allow' | 'ask' | 'deny' | undefined;
    if (permission !== 'ask' && e.type !== 'agent.custom_tool_use') {
      await this.sink.emit([{ sourceId: e.id, type: 'agent.tool_use', tool_use_id: e.id, name: tool, input, evaluated_permission: permission ?? 'allow' }]);
      return null;
    }
    if (this.answered.has(e.id)) return null;
    const decision = await this.sink.decide({ requestId: e.id, callId: e.id, tool, input });
    if (decision.action === 'ask') {
      this.asked.set(e.id, decision.toolUseId);
      return null;
    }
    this.answered.add(e.id);
    await this.api.request('POST', `/v1/sessions/${this.remoteId}/events`, { events: [confirmation(e.id, decision.action, decision.message)] });
    return null;
  }

  private async onIdle(e: RemoteEvent): Promise<TurnResult | null> {
    const stop = e.stop_reason?.type as string | undefined;
    if (stop === 'requires_action') {
      const waiting = ((e.stop_reason.event_ids ?? []) as string[]).filter((id) => !this.answered.has(id));
      if (waiting.length === 0) return null;
      const unknown = waiting.filter((id) => !this.asked.has(id));
      if (unknown.length > 0 && this.asked.size === 0) return { status: 'error', message: `remote session waits on ${unknown.join(', ')}, which agentplane cannot answer`, retryable: false };
      return { status: 'requires_action', pending: [...this.asked].filter(([id]) => !this.answered.has(id)).map(([requestId, toolUseId]) => ({ requestId, toolUseId })) };
    }
    if (stop === undefined || stop === 'end_turn') {
      if (this.unpriced.length > 0 && !this.usageSeen) await this.sink.emit(this.unpriced);
      return { status: 'end_turn' };
    }
    if (stop === 'budget_reached') return { status: 'error', message: `remote session ${this.remoteId} reached its budget`, retryable: false };
    if (stop === 'retries_exhausted') return { status: 'error', message: `remote session ${this.remoteId} gave up after retries`, retryable: false };
    return { status: 'error', message: `remote session ${this.remoteId} stopped: ${stop}`, retryable: false };
  }
}

function canonicalTool(e: RemoteEvent): CanonicalTool {
  const name = String(e.name ?? e.tool_name ?? 'unknown');
  if (e.type === 'agent.mcp_tool_use') return `mcp:${String(e.mcp_server_name ?? e.server_name ?? 'unknown')}:${name}`;
  if ((CANONICAL_TOOLS as readonly string[]).includes(name) || name.startsWith('mcp:') || name.startsWith('other:')) return name as CanonicalTool;
  return `other:${name}`;
}

function textBlocks(content: unknown): Array<{ type: 'text'; text: string }> {
  if (typeof content === 'string') return [{ type: 'text', text: content }];
  if (!Array.isArray(content)) return [];
  return content.filter((c) => c && typeof c.text === 'string').map((c) => ({ type: 'text', text: c.text as string }));
}

function modelUsage(u: any): ModelUsage {
  return { input_tokens: num(u?.input_tokens), output_tokens: num(u?.output_tokens), cache_read_input_tokens: num(u?.cache_read_input_tokens), cache_creation_input_tokens: num(u?.cache_creation_input_tokens) };
}

function num(v: unknown): number {
  const n = typeof v === 'string' ? Number(v) : typeof v === 'number' ? v : 0;
  return Number.isFinite(n) ? n : 0;
}
