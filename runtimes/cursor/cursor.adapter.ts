/**
 * Cursor Cloud Agents (API v1) behind the RuntimeAdapter contract, over the egress guard's `fetch` (runtimes/kit/egress.ts).
 *
 * The base URL is the agent's `modelProvider.baseUrl` (default https://api.cursor.com) and the key its model
 * credential, sent as `Authorization: Bearer` only. `agent.runtime.config` (all optional): `repos`
 * (`[{url, startingRef?}]`), `mode` (`agent` | `plan`).
 *
 * Governance: Cursor has no approval hook. Tool calls run in Cursor's VM without asking, so they are recorded as
 * `agent.tool_use` with `evaluated_permission: 'allow'`, never through `sink.decide`; the API refuses an `ask`
 * policy for this runtime. A Cursor agent is governed by budget (tokens priced by the pricing table), repos,
 * mode and cancel only. When a tool the run used is denied by the policy, a `session.error`
 * (`policy_not_enforced`) makes that visible.
 *
 * What must stay true:
 * - The first turn creates the remote agent (`POST /v1/agents`), later turns add runs (`POST /v1/agents/{id}/runs`).
 *   The turn is checkpointed before sending, and the send carries `Idempotency-Key: <messageId>`; the agent id, run
 *   id and last SSE event id are checkpointed as soon as they are known. A retried turn with a run id reattaches
 *   with `Last-Event-ID` and never sends again.
 * - The key is never in `ref.state`, events or errors; neither is the body of a failed answer (its status and error
 *   type only: runtimes/kit/egress.ts).
 */
import { createJsonClient, RuntimeApiError } from '../kit/http';
import { createEgressGuard, egressRefusal, type EgressGuard } from '../kit/egress';
import { readSseFrames } from '../kit/sse';
import { evaluatePolicy } from '../../governance/policy';
import { CANONICAL_TOOLS, type CanonicalTool } from '../../governance/types';
import type { RuntimeAdapter, RuntimeEvent, RuntimeSessionRef, TurnContext, TurnInput, TurnResult, TurnSink } from '../runtime-adapter';
import { descriptor, type CursorConfig } from './descriptor';

const DEFAULT_BASE_URL = 'https://api.cursor.com';

export interface CursorAdapterOptions {
  defaultBaseUrl?: string;
  /** every connection to the Cursor API goes through it (default: private addresses refused) */
  egress?: EgressGuard;
  /** wait before reopening a stream that broke (default 300 ms) */
  reconnectMs?: number;
  /** reconnects before giving up with a retryable error (default 20) */
  maxReconnects?: number;
}

interface TurnRecord {
  turnId: string;
  messageId: string;
  runId: string | null;
  lastEventId: string | null;
}

interface CursorState extends Record<string, unknown> {
  agentId?: string;
  turn?: TurnRecord;
}

export class CursorApiError extends RuntimeApiError {}

interface Frame {
  id: string | null;
  event: string;
  data: any;
}

function createApi(baseUrl: string, key: string | undefined, egress: EgressGuard) {
  const client = createJsonClient(baseUrl, key, { ids: /\/(bc|run)-[^/]+/g, error: CursorApiError, fetch: egress.fetch });
  const { root, auth, failure } = client;
  return {
    request: client.request,
    async stream(agentId: string, runId: string, lastEventId: string | null, signal: AbortSignal): Promise<AsyncGenerator<Frame>> {
      const res = await client.fetch(`${root}/v1/agents/${agentId}/runs/${runId}/stream`, {
        headers: { ...auth(), accept: 'text/event-stream', 'x-cursor-streaming': 'true', ...(lastEventId ? { 'last-event-id': lastEventId } : {}) },
        signal,
      });
      if (!res.ok || !res.body) throw await failure(res, 'GET /v1/agents/{id}/runs/{runId}/stream');
      return readSse(res.body);
    },
  };
}
type Api = ReturnType<typeof createApi>;

async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<Frame> {
  for await (const frame of readSseFrames(body)) {
    const event = frame.event ?? 'message';
    if (event === 'heartbeat' || frame.data === '') continue;
    let parsed: unknown = frame.data;
    try {
      parsed = JSON.parse(frame.data);
    } catch {
      // keep the text
    }
    yield { id: frame.id, event, data: parsed };
  }
}

const TOOL_NAMES: Record<string, CanonicalTool> = {
  shell: 'bash',
  run_terminal_cmd: 'bash',
  terminal: 'bash',
  read_file: 'read',
  edit_file: 'edit',
  search_replace: 'edit',
  write_file: 'write',
  grep_search: 'grep',
  file_search: 'glob',
  glob_file_search: 'glob',
  web_search: 'web_search',
  fetch: 'web_fetch',
  todo_write: 'todo',
};

function canonicalTool(name: string): CanonicalTool {
  if ((CANONICAL_TOOLS as readonly string[]).includes(name) || name.startsWith('mcp:')) return name as CanonicalTool;
  return TOOL_NAMES[name] ?? `other:${name}`;
}

export function createCursorAdapter(opts: CursorAdapterOptions = {}): RuntimeAdapter {
  const reconnectMs = opts.reconnectMs ?? 300;
  const maxReconnects = opts.maxReconnects ?? 20;
  const egress = opts.egress ?? createEgressGuard({ allowPrivate: [] });
  return {
    kind: descriptor.kind,
    capabilities: descriptor.capabilities,
    async open(ctx, previous) {
      if (previous?.runtimeSessionId) return previous;
      // the remote agent is created with the first prompt (Cursor has no agent without a run)
      return { sessionId: ctx.sessionId, runtimeSessionId: `cursor:${ctx.sessionId}`, state: { ...(previous?.state ?? {}) } };
    },
    async runTurn(ctx, ref, input, sink) {
      const api = createApi(ctx.agent.modelProvider?.baseUrl || opts.defaultBaseUrl || DEFAULT_BASE_URL, ctx.secrets.modelApiKey, egress);
      try {
        return await runTurn(api, ctx, ref, input, sink, { reconnectMs, maxReconnects });
      } catch (err) {
        const refused = egressRefusal(err);
        if (refused) return { status: 'error', message: `egress refused: ${refused.reason}`, retryable: false };
        if (err instanceof CursorApiError) {
          const retryable = err.status >= 500 || err.status === 408 || err.status === 409 || err.status === 429;
          return { status: 'error', message: err.message, retryable };
        }
        throw err;
      }
    },
    async close() {
      // the remote agent is kept: its branches and PRs belong to the user
    },
  };
}

async function runTurn(api: Api, ctx: TurnContext, ref: RuntimeSessionRef, input: TurnInput, sink: TurnSink, timing: { reconnectMs: number; maxReconnects: number }): Promise<TurnResult> {
  if (input.kind === 'resume') return { status: 'error', message: 'Cursor has no approvals: there is nothing to resume', retryable: false };
  let state = { ...ref.state } as CursorState;
  const save = async (next: CursorState) => {
    state = next;
    await sink.checkpoint(state);
  };
  if (sink.signal.aborted && !state.turn?.runId) return { status: 'interrupted' };

  let turn: TurnRecord = state.turn?.turnId === input.turnId ? state.turn : { turnId: input.turnId, messageId: input.messageId, runId: null, lastEventId: null };
  if (!turn.runId) {
    await save({ ...state, turn });
    const config = (ctx.agent.runtime.config ?? {}) as CursorConfig;
    const idem = { 'idempotency-key': turn.messageId };
    const prompt = { text: input.text };
    const model = ctx.agent.model ? { id: ctx.agent.model } : undefined;
    if (!state.agentId) {
      const created = await api.request<{ agent: { id: string }; run: { id: string } }>(
        'POST',
        '/v1/agents',
        { prompt, ...(model ? { model } : {}), name: ctx.agent.name, ...(Array.isArray(config.repos) ? { repos: config.repos } : {}), ...(config.mode ? { mode: config.mode } : {}) },
        idem,
      );
      turn = { ...turn, runId: created.run.id };
      await save({ ...state, agentId: created.agent.id, turn });
    } else {
      const created = await api.request<{ run: { id: string } }>('POST', `/v1/agents/${state.agentId}/runs`, { prompt, ...(model ? { model } : {}), ...(config.mode ? { mode: config.mode } : {}) }, idem);
      turn = { ...turn, runId: created.run.id };
      await save({ ...state, turn });
    }
  }
  const agentId = state.agentId!;
  const runId = turn.runId!;

  const abort = new AbortController();
  const onAbort = () => abort.abort();
  sink.signal.addEventListener('abort', onAbort, { once: true });
  const cancel = async (): Promise<TurnResult> => {
    await api.request('POST', `/v1/agents/${agentId}/runs/${runId}/cancel`, {});
    return { status: 'interrupted' };
  };
  let outcome: TurnResult | null = null;
  try {
    for (let attempt = 0; ; attempt++) {
      if (sink.signal.aborted) return await cancel();
      try {
        const stream = await api.stream(agentId, runId, turn.lastEventId, abort.signal);
        for await (const frame of stream) {
          const result = await handle(ctx, sink, runId, frame);
          if (result) outcome = result;
          if (frame.id) {
            turn = { ...turn, lastEventId: frame.id };
            await save({ ...state, turn });
          }
          if (frame.event === 'done') return outcome ?? { status: 'end_turn' };
        }
      } catch (err) {
        if ((err instanceof CursorApiError && err.status < 500) || egressRefusal(err)) throw err;
        if (!sink.signal.aborted && !(err instanceof Error && (err.name === 'AbortError' || err instanceof TypeError || err instanceof CursorApiError))) throw err;
      }
      if (sink.signal.aborted) return await cancel();
      if (outcome) return outcome;
      if (attempt >= timing.maxReconnects) return { status: 'error', message: `stream of run ${runId} kept breaking`, retryable: true };
      await new Promise((r) => setTimeout(r, timing.reconnectMs));
    }
  } finally {
    sink.signal.removeEventListener('abort', onAbort);
    abort.abort();
  }
}

async function handle(ctx: TurnContext, sink: TurnSink, runId: string, frame: Frame): Promise<TurnResult | null> {
  const sourceId = `cursor:${frame.id ?? `${runId}:${frame.event}`}`;
  const d = (frame.data && typeof frame.data === 'object' && 'data' in frame.data && frame.event === 'tool_call' ? frame.data.data : frame.data) ?? {};
  switch (frame.event) {
    case 'assistant':
    case 'thinking':
      if (typeof d.text === 'string' && d.text) await sink.emit([{ sourceId, type: frame.event === 'assistant' ? 'agent.message' : 'agent.thinking', content: [{ type: 'text', text: d.text }] }]);
      return null;
    case 'tool_call': {
      if (d.status !== 'completed' && d.status !== 'error') return null;
      const callId = String(d.callId ?? frame.id);
      const tool = canonicalTool(String(d.name ?? 'unknown'));
      const args = (d.args && typeof d.args === 'object' ? d.args : {}) as Record<string, unknown>;
      const result = typeof d.result === 'string' ? d.result : d.result === undefined ? '' : JSON.stringify(d.result);
      const events: RuntimeEvent[] = [
        { sourceId: `${sourceId}:use`, type: 'agent.tool_use', tool_use_id: callId, name: tool, input: args, evaluated_permission: 'allow' },
        { sourceId: `${sourceId}:result`, type: 'agent.tool_result', tool_use_id: callId, content: [{ type: 'text', text: result }], is_error: d.status === 'error' },
      ];
      const policy = evaluatePolicy(ctx.agent.toolPolicy, tool, args);
      if (policy.action === 'deny') {
        events.push({ sourceId: `${sourceId}:policy`, type: 'session.error', error: { type: 'policy_not_enforced', message: `Cursor ran ${tool} although the policy denies it (${policy.reason}); Cursor cannot gate tool calls` } });
      }
      await sink.emit(events);
      return null;
    }
    case 'interaction_update': {
      const u = d.type === 'turn-ended' ? d.usage : d.update?.type === 'turn-ended' ? d.update.usage : null;
      if (!u) return null;
      await sink.emit([
        {
          sourceId,
          type: 'span.model_request_end',
          model: ctx.agent.model,
          is_error: false,
          model_usage: { input_tokens: num(u.inputTokens), output_tokens: num(u.outputTokens), cache_read_input_tokens: num(u.cacheReadTokens), cache_creation_input_tokens: num(u.cacheWriteTokens) },
        },
      ]);
      return null;
    }
    case 'error':
      await sink.emit([{ sourceId, type: 'session.error', error: { type: String(d.code ?? 'cursor_error'), message: String(d.message ?? 'Cursor run error') } }]);
      return null;
    case 'result': {
      const status = String(d.status ?? 'FINISHED');
      if (status === 'FINISHED') return { status: 'end_turn' };
      if (status === 'CANCELLED') return { status: 'interrupted' };
      return { status: 'error', message: `Cursor run ${runId} ended ${status}`, retryable: false };
    }
    default:
      return null;
  }
}

function num(v: unknown): number {
  const n = typeof v === 'string' ? Number(v) : typeof v === 'number' ? v : 0;
  return Number.isFinite(n) ? n : 0;
}
