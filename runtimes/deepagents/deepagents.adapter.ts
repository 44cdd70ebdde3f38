/**
 * DeepAgents JS (`deepagents` on LangGraph) behind the RuntimeAdapter contract, in the worker process.
 *
 * Model: `ChatOpenAI` pointed at the agent's `modelProvider.baseUrl` (any OpenAI-compatible endpoint), streaming
 * with usage: through the model gateway when the worker has one (the session's token, on a socket the gateway serves
 * to this worker alone; every request held and charged by the gateway), else with the decrypted key. Tools: DeepAgents' built-in file tools and `execute` on a sandboxed backend
 * (sandbox-backend.ts): every command and every file operation runs inside the session's sandbox, never in the worker,
 * with the workspace at /workspace and a minimal environment (never the worker's). Paths are the sandbox's: like
 * Claude Code and OpenCode, an absolute path means what it says there, and the tool policy decides what may be touched.
 *
 * Gating: every built-in tool is in `interruptOn`, so every call stops the graph (HumanInTheLoopMiddleware) before it
 * runs. Each action request goes through `sink.decide`; allow/deny are answered on the spot by resuming the graph
 * with `Command({ resume: { decisions } })` (approve / reject with the reason, which the model sees as an error tool
 * result). `ask` returns `requires_action`; decisions taken on the spot for other calls of the same interrupt are kept
 * in `ref.state` until the person's decision arrives, because LangGraph takes all decisions of an interrupt at once.
 * Note the library's rule: when any call of one model message is rejected, the approved calls of that message are
 * dropped too and the model is asked again.
 *
 * Persistence: a checkpointer keyed by our session id (`thread_id` = session id), kept as one JSON file per session
 * under `<dataDir>/deepagents/<sessionId>/`, replaced atomically (write to a temporary file, then rename) after every
 * checkpoint and pending write. Why files and not a table in our database: adapters are built by
 * `buildRuntimes` with a data directory and no database handle, the session's other runtime state (Claude Code's
 * transcript, OpenCode's store) already lives in the worker's data directory with the same durability, and a table
 * would mean a migration in a schema several branches are changing at once. The directory is the session's state
 * (`sessionState`): the worker snapshots it with the workspace whenever a turn stops, and any other worker restores it
 * (snapshots/), so a session moves between hosts with its graph, a pending interrupt included: a call approved after
 * its host was lost runs once, from the restored interrupt. The file holds the conversation, never the key; only the
 * newest few checkpoints per namespace are kept (each holds the whole state), so it grows with the conversation, not
 * with the number of steps. It is rewritten whole on every change, which is fine for sessions of ordinary length; a
 * database saver can replace `FileCheckpointSaver` without touching the rest of this file.
 *
 * What must stay true:
 * - The user message goes into the graph with `id = messageId`, after `sink.checkpoint` recorded the turn. A retried
 *   turn looks for that id in the thread's state: when present it never sends again. A finished turn is replayed from
 *   the state (same sourceIds, the sink drops duplicates); an unfinished one continues from the last checkpoint
 *   (`stream(null)`), or re-asks the pending interrupt's decisions (the sink answers recorded ones without asking).
 * - sourceIds come from the checkpointed messages (their ids, tool call ids), so a replay yields the same ones.
 * - `tool_use_id` is LangChain's tool call id (the model's), also the `requestId` of the pending decision. Calls made
 *   inside a subagent (the `task` tool; subagents inherit `interruptOn`) are decided too, under an id derived from the
 *   interrupt, since their messages live in the subagent; their results reach the event log only through the `task`
 *   call's result, their model usage through the model's callbacks.
 * - Checkpoints are written synchronously after every step (`durability: 'sync'`): a tool that finished is never run
 *   again by a retry. A tool cut off mid-run by a crash is run again (at least once), like in every runtime.
 * - Events are emitted after every step from the checkpointed state, so they stream while the turn runs.
 * - The key is passed to `ChatOpenAI` only; it is never in `ref.state`, the checkpoint file, events or errors (errors
 *   are redacted). Token counting never goes to the network (tiktoken downloads are replaced by an estimate).
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { BaseCallbackHandler } from '@langchain/core/callbacks/base';
import { AIMessage, HumanMessage, ToolMessage, type BaseMessage, type UsageMetadata } from '@langchain/core/messages';
import type { LLMResult } from '@langchain/core/outputs';
import type { RunnableConfig } from '@langchain/core/runnables';
import { Command, type StateSnapshot } from '@langchain/langgraph';
import { MemorySaver, type Checkpoint, type CheckpointMetadata, type PendingWrite } from '@langchain/langgraph-checkpoint';
import { ChatOpenAI, ChatOpenAICompletions } from '@langchain/openai';
import { createEgressGuard, describeStatus, egressRefusal, errorToken, type EgressGuard } from '../kit/egress';
import type { CanonicalTool } from '../../governance/types';
import { redact } from '../kit/redact';
import { turnSandboxRequest, type SessionSandboxes } from '../kit/session-sandbox';
import { socketFetch } from '../kit/sandbox/provider';
import { createSandboxBackend, type BaseSandboxClass } from './sandbox-backend';
import type {
  AdapterLogger,
  PermissionDecision,
  RuntimeAdapter,
  RuntimeEvent,
  RuntimeSessionRef,
  TurnContext,
  TurnInput,
  TurnResult,
  TurnSink,
} from '../runtime-adapter';
import { descriptor } from './descriptor';

export interface DeepAgentsAdapterOptions {
  /** checkpoints live in `<dataDir>/deepagents/<sessionId>/checkpoints.json` */
  dataDir: string;
  logger?: AdapterLogger;
  /** seconds a shell command may run (default 120) */
  commandTimeoutSeconds?: number;
  /** the model client connects through it: `model_provider.base_url` is the tenant's (default: private addresses refused) */
  egress?: EgressGuard;
  /**
   * each session's sandbox: the tools run in it (sandbox-backend.ts), never in the worker (the `none` provider, behind
   * its loud setting, is the one way to run them unisolated)
   */
  sandboxes: SessionSandboxes;
}
type Options = DeepAgentsAdapterOptions & { egress: EgressGuard };

/** DeepAgents' built-in tools, all gated, and the canonical names policies see. */
export const DEEPAGENTS_TOOLS: Record<string, CanonicalTool> = {
  execute: 'bash',
  read_file: 'read',
  write_file: 'write',
  edit_file: 'edit',
  delete: 'write',
  ls: 'glob',
  glob: 'glob',
  grep: 'grep',
  write_todos: 'todo',
  task: 'task',
};

export function canonicalDeepAgentsTool(name: string): CanonicalTool {
  return DEEPAGENTS_TOOLS[name] ?? `other:${name}`;
}

/** runs of the graph in one turn (each tool call that needs a decision ends one) */
const MAX_PASSES = 200;

/**
 * The slice of `deepagents` this adapter uses. The package is loaded by a specifier TypeScript does not follow: its
 * declarations pull in `@langchain/langgraph/zod`, whose augmentation of zod's `ZodType` breaks the type of every
 * `@hono/zod-openapi` route in the API.
 */
interface DeepAgentsModule {
  createDeepAgent(params: Record<string, unknown>): Agent;
  BaseSandbox: BaseSandboxClass;
}
interface Agent {
  stream(input: unknown, config: RunnableConfig & { streamMode: 'updates'; signal?: AbortSignal; recursionLimit?: number; durability?: 'sync' | 'async' | 'exit' }): Promise<AsyncIterable<unknown>>;
  getState(config: RunnableConfig): Promise<StateSnapshot>;
}
const DEEPAGENTS_MODULE: string = 'deepagents';
let loaded: Promise<DeepAgentsModule> | null = null;
const loadDeepAgents = () => (loaded ??= import(DEEPAGENTS_MODULE) as Promise<DeepAgentsModule>);

type HitlDecision = { type: 'approve' } | { type: 'reject'; message?: string };

interface TurnRecord {
  turnId: string;
  messageId: string;
  /** decisions already taken for the pending interrupt, by tool call id */
  decided?: Record<string, HitlDecision>;
}

interface DeepAgentsState extends Record<string, unknown> {
  threadId?: string;
  turn?: TurnRecord;
}

interface ActionRequest {
  name: string;
  args: Record<string, unknown>;
}

export function createDeepAgentsAdapter(options: DeepAgentsAdapterOptions): RuntimeAdapter {
  const opts: Options = { ...options, egress: options.egress ?? createEgressGuard({ allowPrivate: [] }) };
  return {
    kind: descriptor.kind,
    capabilities: descriptor.capabilities,
    async open(ctx, previous) {
      if (previous?.runtimeSessionId) return previous;
      return { sessionId: ctx.sessionId, runtimeSessionId: ctx.sessionId, state: { threadId: ctx.sessionId } };
    },
    async runTurn(ctx, ref, input, sink) {
      const key = ctx.secrets.modelApiKey;
      try {
        return await runTurn(opts, ctx, ref, input, sink);
      } catch (err) {
        if (sink.signal.aborted) return { status: 'interrupted' };
        const refused = egressRefusal(err);
        if (refused) return { status: 'error', message: `egress refused: ${refused.reason}`, retryable: false };
        const answer = providerAnswer(err);
        // a provider's answer is told by its status and error type: its message can quote anything (the OpenAI client
        // puts the whole error body in it, and LangChain copies that into the errors it wraps)
        const message = answer ? `model provider: ${describeStatus(answer.status, errorToken({ error: answer }, [key]))}` : redact(err instanceof Error ? err.message : String(err), [key]);
        opts.logger?.warn('deepagents turn failed', { sessionId: ctx.sessionId, error: message });
        // provider answers by HTTP status; a connection failure may pass; anything else (a bug, a broken graph) will not
        const retryable = answer ? answer.status >= 500 || answer.status === 408 || answer.status === 429 : /connection|timeout|ECONNRE|fetch failed/i.test(`${(err as Error)?.name} ${message}`);
        return { status: 'error', message, retryable };
      }
    },
    async close(ref) {
      // nothing else lives between turns: the graph is rebuilt from the checkpoint file each turn
      await opts.sandboxes.close(ref.sessionId);
    },
    // the checkpoint file; a temporary one is never left between turns but by a crash, and is not state
    sessionState: (sessionId) => ({ path: join(opts.dataDir, 'deepagents', sessionId), ignore: ['*.tmp'] }),
  };
}

/** The HTTP answer behind a model error: the OpenAI client's APIError, found under LangChain's middleware errors. */
function providerAnswer(err: unknown): { status: number; type?: unknown; code?: unknown } | null {
  for (let e = err, depth = 0; e && typeof e === 'object' && depth < 10; e = (e as { cause?: unknown }).cause, depth++) {
    const { status, type, code } = e as { status?: unknown; type?: unknown; code?: unknown };
    if (typeof status === 'number') return { status, type, code };
  }
  return null;
}

/**
 * LangChain estimates tokens of a streamed answer (and summarisation thresholds) with tiktoken encodings it downloads
 * on first use; a worker may have no internet, so count approximately (4 characters a token). Billing never uses
 * this: spans carry the provider's `usage` (`streamUsage`).
 */
class OfflineCompletions extends ChatOpenAICompletions {
  override async getNumTokens(content: unknown): Promise<number> {
    return Math.ceil(textOf(content).length / 4);
  }
}

/**
 * Usage of model calls made by subagents (the `task` tool runs one with the same model). Their messages stay in the
 * subagent, not in this thread's state, so their spans come from the model's callbacks instead, keyed by the run id;
 * a subagent run is not replayed from a checkpoint, so that id is the request's own. Calls of the main graph are
 * left to `emitTurn` (their checkpoint namespace has no parent).
 */
class SubagentUsage extends BaseCallbackHandler {
  name = 'agentplane-subagent-usage';
  override awaitHandlers = true;
  private readonly subagentRuns = new Set<string>();

  constructor(
    private readonly ctx: TurnContext,
    private readonly sink: TurnSink,
  ) {
    super();
  }

  override handleChatModelStart(_llm: unknown, _messages: unknown, runId: string, _parent?: string, _extra?: unknown, _tags?: string[], metadata?: Record<string, unknown>): void {
    const ns = String(metadata?.langgraph_checkpoint_ns ?? metadata?.checkpoint_ns ?? '');
    if (ns.includes('|')) this.subagentRuns.add(runId);
  }

  override async handleLLMEnd(output: LLMResult, runId: string): Promise<void> {
    if (!this.subagentRuns.delete(runId)) return;
    const message = (output.generations[0]?.[0] as { message?: AIMessage } | undefined)?.message;
    const span = message?.usage_metadata ? usageSpan(this.ctx, `deepagents:subagent:${runId}:usage`, message.usage_metadata) : null;
    if (span) await this.sink.emit([span]);
  }
}

async function buildAgent(opts: Options, ctx: TurnContext, sink: TurnSink): Promise<Agent> {
  await mkdir(ctx.workdir, { recursive: true });
  // the model is called from the worker (DeepAgents runs in it): through the model gateway when the worker has one,
  // on a socket of the worker's own (the sandbox gets no model endpoint)
  const baseUrl = ctx.agent.modelProvider?.baseUrl;
  const session = await opts.sandboxes.open(turnSandboxRequest(ctx, { state: join(opts.dataDir, 'deepagents', ctx.sessionId, 'home'), modelBaseUrl: undefined, workerModel: baseUrl }));
  const via = session.workerModel;
  const fields = {
    model: ctx.agent.model,
    // a placeholder keeps the client from reading OPENAI_API_KEY from the worker's environment
    apiKey: ctx.secrets.modelApiKey ?? 'no-key',
    // through the gateway: the session's token, on the session's socket; else every request (and redirect) of the
    // model client is checked where it connects, not only where it was saved
    configuration: via ? { baseURL: via.baseUrl, fetch: socketFetch(via.socketPath) } : { ...(baseUrl ? { baseURL: baseUrl } : {}), fetch: opts.egress.fetch },
    streaming: true,
    streamUsage: true,
    maxRetries: 2,
    callbacks: [new SubagentUsage(ctx, sink)],
  };
  const model = new ChatOpenAI({ ...fields, completions: new OfflineCompletions(fields) });
  const { createDeepAgent, BaseSandbox } = await loadDeepAgents();
  const timeout = opts.commandTimeoutSeconds ?? 120;
  const backend = createSandboxBackend(BaseSandbox, { sandbox: session.sandbox, env: { ...session.env, LANG: 'C.UTF-8' }, timeoutSeconds: timeout });
  const checkpointer = await FileCheckpointSaver.open(join(opts.dataDir, 'deepagents', ctx.sessionId, 'checkpoints.json'));
  const interruptOn = Object.fromEntries(Object.keys(DEEPAGENTS_TOOLS).map((name) => [name, { allowedDecisions: ['approve', 'reject'] }]));
  return createDeepAgent({
    model,
    backend,
    checkpointer,
    interruptOn,
    ...(ctx.agent.system ? { systemPrompt: ctx.agent.system } : {}),
  });
}

async function runTurn(opts: Options, ctx: TurnContext, ref: RuntimeSessionRef, input: TurnInput, sink: TurnSink): Promise<TurnResult> {
  let state = { ...ref.state } as DeepAgentsState;
  const threadId = state.threadId ?? ctx.sessionId;
  const save = async (next: DeepAgentsState) => {
    state = next;
    ref.state = next;
    await sink.checkpoint(next);
  };
  const agent = await buildAgent(opts, ctx, sink);
  const config = { configurable: { thread_id: threadId } };
  const messagesOf = async (): Promise<BaseMessage[]> => ((await agent.getState(config)).values?.messages as BaseMessage[] | undefined) ?? [];

  let turn: TurnRecord;
  let next: unknown;
  if (input.kind === 'message') {
    turn = state.turn?.messageId === input.messageId ? state.turn : { turnId: input.turnId, messageId: input.messageId };
    if (state.turn?.messageId === input.messageId && (await messagesOf()).some((m) => m.id === input.messageId)) {
      // a retry: the prompt is in the thread; replay what it produced, then pick up where the graph stopped
      opts.logger?.info('deepagents turn reattached from the checkpoint', { sessionId: ctx.sessionId, messageId: input.messageId });
      await emitTurn(ctx, sink, turn.messageId, await messagesOf());
      next = null;
    } else {
      if (sink.signal.aborted) return { status: 'interrupted' };
      await save({ ...state, threadId, turn });
      next = { messages: [new HumanMessage({ content: input.text, id: input.messageId })] };
    }
  } else {
    if (!state.turn) return { status: 'error', message: 'nothing to resume: no turn was recorded for this session', retryable: false };
    turn = state.turn;
    const decided = { ...(turn.decided ?? {}) };
    for (const d of input.decisions) decided[d.requestId] = toHitl(d);
    turn = { ...turn, decided };
    await save({ ...state, turn });
    next = null;
  }

  // each pass runs the graph until it stops, then answers the interrupt it stopped on; a graph that stops without
  // an interrupt and without finishing (a retry after a crash mid-step) is continued from its last checkpoint
  for (let pass = 0; pass < MAX_PASSES; pass++) {
    if (next === null) {
      if (await isFinished(agent, config)) {
        await emitTurn(ctx, sink, turn.messageId, await messagesOf());
        return { status: 'end_turn' };
      }
      const pending = await pendingActions(agent, config);
      if (pending) {
        const answered = await answerInterrupt(sink, pending, turn.decided ?? {});
        if ('ask' in answered) {
          turn = { ...turn, decided: answered.decided };
          await save({ ...state, turn });
          return { status: 'requires_action', pending: answered.ask };
        }
        turn = { ...turn, decided: {} };
        await save({ ...state, turn });
        next = new Command({ resume: { decisions: answered.decisions } });
      }
    }
    const outcome = await streamGraph(agent, config, next, ctx, sink, turn.messageId, messagesOf);
    if (outcome) return outcome;
    next = null;
  }
  return { status: 'error', message: `the graph did not settle after ${MAX_PASSES} passes`, retryable: false };
}

async function isFinished(agent: Agent, config: RunnableConfig): Promise<boolean> {
  const snapshot = await agent.getState(config);
  return snapshot.next.length === 0;
}

/** the action requests of the interrupt the graph waits on, with the tool call id of each */
async function pendingActions(agent: Agent, config: RunnableConfig): Promise<Array<ActionRequest & { callId: string }> | null> {
  const snapshot = await agent.getState(config);
  const pending = snapshot.tasks.flatMap((t) => t.interrupts).find((i) => Array.isArray((i.value as { actionRequests?: unknown } | undefined)?.actionRequests));
  if (!pending) return null;
  const { actionRequests } = pending.value as { actionRequests: ActionRequest[] };
  const messages = (snapshot.values?.messages as BaseMessage[] | undefined) ?? [];
  const last = [...messages].reverse().find((m) => AIMessage.isInstance(m)) as AIMessage | undefined;
  // HumanInTheLoopMiddleware asks for the gated calls of the last AI message, in their order
  const calls = (last?.tool_calls ?? []).filter((c) => c.name in DEEPAGENTS_TOOLS);
  const ours = actionRequests.length === calls.length && actionRequests.every((r, i) => calls[i]?.name === r.name && calls[i]?.id);
  // an interrupt that is not about this graph's last message comes from a subagent (the `task` tool runs one, with
  // the same interruptOn): its calls live in the subagent's own messages, so they get ids from the interrupt's
  return actionRequests.map((request, i) => ({ ...request, callId: ours ? calls[i]!.id! : `${pending.id ?? 'interrupt'}:${i}` }));
}

async function answerInterrupt(
  sink: TurnSink,
  actions: Array<ActionRequest & { callId: string }>,
  recorded: Record<string, HitlDecision>,
): Promise<{ decisions: HitlDecision[] } | { ask: Array<{ requestId: string; toolUseId: string }>; decided: Record<string, HitlDecision> }> {
  const decided: Record<string, HitlDecision> = { ...recorded };
  const ask: Array<{ requestId: string; toolUseId: string }> = [];
  for (const action of actions) {
    if (decided[action.callId]) continue;
    const decision = await sink.decide({ requestId: action.callId, callId: action.callId, tool: canonicalDeepAgentsTool(action.name), input: action.args ?? {} });
    if (decision.action === 'ask') ask.push({ requestId: action.callId, toolUseId: decision.toolUseId });
    else decided[action.callId] = decision.action === 'allow' ? { type: 'approve' } : { type: 'reject', message: decision.message ?? `${action.name} was denied by policy` };
  }
  if (ask.length > 0) return { ask, decided };
  return { decisions: actions.map((a) => decided[a.callId]!) };
}

function toHitl(d: PermissionDecision): HitlDecision {
  return d.behavior === 'allow' ? { type: 'approve' } : { type: 'reject', message: d.message ?? 'denied by a person' };
}

/** runs the graph until it stops; returns a result only when the turn must end here (interrupt, abort) */
async function streamGraph(
  agent: Agent,
  config: RunnableConfig,
  input: unknown,
  ctx: TurnContext,
  sink: TurnSink,
  messageId: string,
  messagesOf: () => Promise<BaseMessage[]>,
): Promise<TurnResult | null> {
  if (sink.signal.aborted) return { status: 'interrupted' };
  const abort = new AbortController();
  const onAbort = () => abort.abort(sink.signal.reason);
  sink.signal.addEventListener('abort', onAbort, { once: true });
  try {
    const stream = await agent.stream(input, { ...config, streamMode: 'updates', signal: abort.signal, recursionLimit: 200, durability: 'sync' });
    for await (const _update of stream) {
      // each update is one finished step, already checkpointed: emit from the checkpoint so ids are stable
      await emitTurn(ctx, sink, messageId, await messagesOf());
    }
  } catch (err) {
    if (sink.signal.aborted) return { status: 'interrupted' };
    throw err;
  } finally {
    sink.signal.removeEventListener('abort', onAbort);
  }
  if (sink.signal.aborted) return { status: 'interrupted' };
  await emitTurn(ctx, sink, messageId, await messagesOf());
  return null;
}

/** canonical events for everything the thread holds after the turn's user message (the sink drops repeats) */
async function emitTurn(ctx: TurnContext, sink: TurnSink, messageId: string, messages: BaseMessage[]): Promise<void> {
  const start = messages.findIndex((m) => m.id === messageId);
  if (start < 0) return;
  const events: RuntimeEvent[] = [];
  messages.slice(start + 1).forEach((m, i) => {
    const key = `deepagents:${messageId}:${m.id ?? i}`;
    if (AIMessage.isInstance(m)) {
      const text = textOf(m.content);
      if (text) events.push({ sourceId: `${key}:text`, type: 'agent.message', content: [{ type: 'text', text }] });
      const span = m.usage_metadata ? usageSpan(ctx, `${key}:usage`, m.usage_metadata) : null;
      if (span) events.push(span);
    } else if (ToolMessage.isInstance(m)) {
      events.push({
        sourceId: `deepagents:result:${m.tool_call_id}`,
        type: 'agent.tool_result',
        tool_use_id: m.tool_call_id,
        content: [{ type: 'text', text: textOf(m.content) }],
        is_error: m.status === 'error',
      });
    }
  });
  if (events.length > 0) await sink.emit(events);
}

function usageSpan(ctx: TurnContext, sourceId: string, usage: UsageMetadata): RuntimeEvent {
  const cacheRead = usage.input_token_details?.cache_read ?? 0;
  const cacheWrite = usage.input_token_details?.cache_creation ?? 0;
  return {
    sourceId,
    type: 'span.model_request_end',
    model: ctx.agent.model,
    is_error: false,
    // OpenAI counts cached prompt tokens inside input_tokens; the ledger prices them separately
    model_usage: { input_tokens: Math.max(usage.input_tokens - cacheRead - cacheWrite, 0), output_tokens: usage.output_tokens, cache_read_input_tokens: cacheRead, cache_creation_input_tokens: cacheWrite },
  };
}

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((c) => (typeof c === 'string' ? c : c && typeof c === 'object' && 'text' in c ? String((c as { text: unknown }).text) : '')).join('');
  return '';
}

/**
 * LangGraph's in-memory saver, persisted: after every change the whole store is written to one file, atomically
 * (temporary file + rename), so a process killed at any moment leaves the previous or the next version, never half
 * of one. Writes are serialised so an older snapshot never overwrites a newer one.
 */
const KEEP_CHECKPOINTS = 4;

export class FileCheckpointSaver extends MemorySaver {
  private queue: Promise<void> = Promise.resolve();

  private constructor(private readonly file: string) {
    super();
  }

  static async open(file: string): Promise<FileCheckpointSaver> {
    const saver = new FileCheckpointSaver(file);
    let text: string | null = null;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text !== null) {
      const stored = JSON.parse(text, (_key, value) => (value && typeof value === 'object' && typeof value.$bytes === 'string' ? new Uint8Array(Buffer.from(value.$bytes, 'base64')) : value));
      saver.storage = stored.storage ?? {};
      saver.writes = stored.writes ?? {};
    }
    return saver;
  }

  override async put(config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata): Promise<RunnableConfig> {
    const saved = await super.put(config, checkpoint, metadata);
    await this.persist();
    return saved;
  }

  override async putWrites(config: RunnableConfig, writes: PendingWrite[], taskId: string, taskPath?: string): Promise<void> {
    await super.putWrites(config, writes, taskId, taskPath);
    await this.persist();
  }

  override async deleteThread(threadId: string): Promise<void> {
    await super.deleteThread(threadId);
    await this.persist();
  }

  /**
   * Keeps the newest checkpoints of each thread and namespace, and the pending writes of those. Every checkpoint holds
   * the whole channel values (the agent graph has no delta channels), so the newest one is enough to resume; a few
   * more are kept for the step that is being written. Without this the file would grow with the square of the session.
   */
  private prune(): void {
    for (const [threadId, namespaces] of Object.entries(this.storage)) {
      for (const [ns, checkpoints] of Object.entries(namespaces)) {
        const old = Object.keys(checkpoints).sort().reverse().slice(KEEP_CHECKPOINTS);
        for (const id of old) {
          delete checkpoints[id];
          delete this.writes[JSON.stringify([threadId, ns, id])];
        }
      }
    }
  }

  private persist(): Promise<void> {
    this.prune();
    const text = JSON.stringify({ storage: this.storage, writes: this.writes }, function (this: Record<string, unknown>, key, value) {
      const original = this[key];
      return original instanceof Uint8Array ? { $bytes: Buffer.from(original).toString('base64') } : value;
    });
    this.queue = this.queue.then(async () => {
      await mkdir(dirname(this.file), { recursive: true });
      const tmp = `${this.file}.${process.pid}.tmp`;
      await writeFile(tmp, text);
      await rename(tmp, this.file);
    });
    return this.queue;
  }
}
