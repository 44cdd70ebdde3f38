/**
 * Claude Code behind the RuntimeAdapter contract, through `@anthropic-ai/claude-agent-sdk` (which spawns the bundled
 * `claude` binary and talks stream-json to it over stdio).
 *
 * Layout: every agentplane session owns `<dataDir>/claude-code/<sessionId>/` with `home/` (HOME), `config/`
 * (CLAUDE_CONFIG_DIR: Claude Code's transcripts live in `config/projects/<cwd-slug>/<claudeSessionId>.jsonl`), and the
 * session's workdir as cwd. `settingSources: []`, so no user or project settings (and no repository hooks or
 * permission rules) apply. The child gets a minimal environment, not the worker's; the model key is passed only as
 * `ANTHROPIC_API_KEY` in that environment: never on disk, in `ref.state`, events or errors.
 *
 * The sandbox. The SDK's `spawnClaudeCodeProcess` starts `claude` in
 * the session's sandbox, and so every tool it runs: stdio is the SDK's channel, the binary's own directory is mounted
 * read-only, the session's workdir is `/workspace` (cwd) and `<dataDir>/claude-code/<sessionId>` is `/state` (HOME is
 * `/state/home`, CLAUDE_CONFIG_DIR `/state/config`). The model is reached at the sandbox's model URL (the bridge for a
 * plain http endpoint); everything else `claude` or a tool opens goes through the session's egress proxy. The
 * transcript stays where the worker reads it (under the state), but the sandbox writes there: it is opened without
 * following a link out of the session's state (`readTranscript`). The sandbox is the only way `claude` starts (the
 * `none` provider, behind its loud setting, is the one way to run it unisolated).
 *
 * Gating: a `PreToolUse` hook that matches every tool sends every call through `sink.decide` (`canUseTool` alone
 * misses calls Claude Code auto-approves, such as read-only shell commands). The hook is registered with
 * `onFailure: 'block'`, so a hook that fails blocks the call instead of letting it run. allow/deny are answered on the
 * spot (a deny carries a reason the model sees as the tool result). `ask` leaves the hook's promise pending and the
 * turn returns `requires_action`.
 *
 * Process model. The runtime is a child process of the worker, so it cannot outlive it the way `opencode serve` does.
 * While this worker lives, the session's `query` (in streaming-input mode) is kept in an in-process map keyed by our
 * session id: follow-up turns are pushed into it, and a `resume` leg finds the pending hook callbacks and answers them.
 *
 * What survives a worker crash (the claude process dies with the worker):
 * - the Claude session id: derived deterministically from our session id (UUID from a hash) and checkpointed in
 *   `ref.state` before anything is sent; the SDK's `sessionId` option pre-assigns it;
 * - the transcript (JSONL under the session's CLAUDE_CONFIG_DIR), flushed by Claude Code as the turn goes;
 * - what was sent: the checkpoint records the turn and how many user prompts the transcript held before sending, so a
 *   retried turn whose prompt reached the transcript does not send it again;
 * - recorded decisions (the workflow's) for a pending ask.
 * What does not survive: the live process and an in-flight model request or tool run. A retried turn starts a new
 * process with `resume: <claudeSessionId>`. If the prompt is already in the transcript, the turn's finished events are
 * replayed from the transcript (the sink drops duplicates by `sourceId`); a turn that had ended is reported as ended,
 * and an unfinished one is continued with a short, explicit continuation message (never the original prompt). A
 * pending ask whose process is gone is resumed the same way. A turn that parks records the calls it waits on
 * (`turn.asked`: request id, `agent.tool_use` id, tool, input) in its checkpoint; the resumed process is told what the
 * person decided (runtimes/kit/lost-calls.ts). The call made again is decided by `sink.decide` with `approvedAs`, so it
 * is allowed once on that approval and audited as such (a deny rule still wins); a denied call made again is refused
 * without asking. The model may of course choose not to repeat the call; that is the honest limit of resuming
 * without the process that held it.
 *
 * Portable (`sessionState`): the session's whole state directory, transcripts and all, is what another host needs. The
 * worker snapshots it with the workspace whenever a turn stops and restores it elsewhere (snapshots/); the transcript's
 * project directory is named after the cwd, `/workspace` in every sandbox, so `resume` finds it on any host.
 *
 * While the worker lives, each session keeps its `claude` process (and its memory) until `close`.
 *
 * Cost: `result.total_cost_usd` is cumulative per `query` process (a resumed query starts from the transcript's
 * earlier figure) and Claude Code prices with its own list prices, which know nothing about a custom endpoint. So
 * spans carry per-request token usage (from each assistant message's `usage`, once per API message id) and no
 * `cost_usd`: the ledger prices every request from its pricing table, idempotently per request, with no double count.
 */
import { runtimeEnv } from '../kit/env';
import { SILENT_LOGGER } from '../kit/log';
import { decidedCalls, lossNotice, sameCall, takeCarried, type AskedCall, type CarriedCall } from '../kit/lost-calls';
import { redact } from '../kit/redact';
import { turnSandboxRequest, type SessionSandbox, type SessionSandboxes } from '../kit/session-sandbox';
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { constants, existsSync, realpathSync } from 'node:fs';
import { mkdir, open as openFile, readdir, readlink, realpath, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { query, type HookCallback, type Query, type SDKMessage, type SDKUserMessage, type SpawnedProcess, type SpawnOptions } from '@anthropic-ai/claude-agent-sdk';
import type { CanonicalTool } from '../../governance/types';
import type {
  AdapterLogger,
  RuntimeAdapter,
  RuntimeEvent,
  RuntimeSessionRef,
  TurnContext,
  TurnInput,
  TurnResult,
  TurnSink,
} from '../runtime-adapter';
import { descriptor, type ClaudeCodeConfig } from './descriptor';

export interface ClaudeCodeAdapterOptions {
  /** runtime state (home, CLAUDE_CONFIG_DIR with transcripts) lives in `<dataDir>/claude-code/<sessionId>` */
  dataDir: string;
  logger?: AdapterLogger;
  /** the `claude` executable; default: the one the SDK's platform package ships */
  executablePath?: string;
  /** how long a gated call may wait for a person before Claude Code gives up on the hook (default 7 days) */
  approvalHoldSeconds?: number;
  /**
   * Each session's sandbox (runtimes/kit/session-sandbox.ts): `claude` runs in it, and so every tool it runs.
   */
  sandboxes: SessionSandboxes;
}

interface TurnRecord {
  turnId: string;
  messageId: string;
  /** user prompts in the transcript before this turn's prompt was sent: more than that means it was sent */
  promptsBefore: number;
  /** the calls this turn parked for a person: what a lost process's calls were */
  asked?: AskedCall[];
}

interface ClaudeState extends Record<string, unknown> {
  claudeSessionId: string;
  turn?: TurnRecord;
}

interface PendingCall {
  requestId: string;
  toolUseId: string;
  tool: CanonicalTool;
  input: Record<string, unknown>;
  resolve: (decision: { behavior: 'allow' | 'deny'; message?: string }) => void;
}

/** One live Claude Code process for one agentplane session, while this worker lives. */
interface LiveSession {
  q: Query;
  iterator: AsyncIterator<SDKMessage>;
  push: (message: SDKUserMessage) => void;
  end: () => void;
  /** the sink of the turn being driven (hooks decide through it) */
  turn: TurnDriver | null;
  pending: Map<string, PendingCall>;
  /** an outstanding `iterator.next()` left by a turn that returned `requires_action` */
  nextMessage: Promise<IteratorResult<SDKMessage>> | null;
  /** call ids decided through the hook (they already have their `agent.tool_use`) */
  decided: Set<string>;
  /** the calls a lost process held that a person approved: the agent's next call like one is allowed once on its approval (`approvedAs`) */
  carried: CarriedCall[];
  /** the calls a lost process held that a person denied: the agent's next call like one is refused without asking, with the person's message */
  refused: Array<{ call: AskedCall; message: string }>;
  sentMessageIds: Set<string>;
  /** per-request usage not yet reported, kept across the legs of a turn */
  usage: UsageStore;
  closed: boolean;
}

const TOOL_NAMES: Record<string, CanonicalTool> = {
  Bash: 'bash',
  Read: 'read',
  Write: 'write',
  Edit: 'edit',
  MultiEdit: 'edit',
  NotebookEdit: 'edit',
  Glob: 'glob',
  Grep: 'grep',
  WebFetch: 'web_fetch',
  WebSearch: 'web_search',
  TodoWrite: 'todo',
  Task: 'task',
  Agent: 'task',
};

/** Claude Code's tool name → canonical. `mcp__server__tool` → `mcp:server:tool`. */
export function canonicalClaudeTool(name: string): CanonicalTool {
  const known = TOOL_NAMES[name];
  if (known) return known;
  const mcp = /^mcp__(.+?)__(.+)$/.exec(name);
  if (mcp) return `mcp:${mcp[1]}:${mcp[2]}`;
  return `other:${name}`;
}

/** Claude Code already names inputs as policies match them (`command`, `file_path`, `url`, `pattern`, `query`); aliases are added, nothing is dropped. */
export function normaliseClaudeInput(name: string, input: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...input };
  if (out.file_path === undefined && typeof input.notebook_path === 'string') out.file_path = input.notebook_path;
  if (out.file_path === undefined && typeof input.path === 'string' && ['Read', 'Write', 'Edit', 'MultiEdit'].includes(name)) out.file_path = input.path;
  return out;
}

/** A UUID (v4 layout) derived from our session id, so the Claude session id is known before anything is sent. */
export function claudeSessionIdFor(sessionId: string): string {
  const h = createHash('sha256').update(`agentplane:claude-code:${sessionId}`).digest('hex');
  const variant = ((parseInt(h[16] ?? '0', 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

export function createClaudeCodeAdapter(opts: ClaudeCodeAdapterOptions): RuntimeAdapter {
  const log: AdapterLogger = opts.logger ?? SILENT_LOGGER;
  const live = new Map<string, LiveSession>();
  const holdSeconds = opts.approvalHoldSeconds ?? 7 * 24 * 3600;

  function layout(sessionId: string) {
    const root = join(opts.dataDir, 'claude-code', sessionId);
    return { root, home: join(root, 'home'), config: join(root, 'config') };
  }

  async function transcriptPath(sessionId: string, claudeSessionId: string): Promise<string | null> {
    const projects = join(layout(sessionId).config, 'projects');
    let dirs: string[];
    try {
      dirs = await readdir(projects);
    } catch {
      return null;
    }
    for (const dir of dirs) {
      const file = join(projects, dir, `${claudeSessionId}.jsonl`);
      if (existsSync(file)) return file;
    }
    return null;
  }

  /** The transcript's entries (JSONL), oldest first; [] when there is none yet. */
  async function transcript(sessionId: string, claudeSessionId: string): Promise<Array<Record<string, unknown>>> {
    const path = await transcriptPath(sessionId, claudeSessionId);
    if (!path) return [];
    const text = await readTranscript(path, layout(sessionId).root);
    if (text === null) {
      log.warn('transcript ignored: it is not a file of the session\'s own state', { sessionId });
      return [];
    }
    const out: Array<Record<string, unknown>> = [];
    for (const line of text.split('\n')) {
      if (!line.trim()) continue;
      try {
        out.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // a line being written while we read
      }
    }
    return out;
  }

  function env(ctx: TurnContext, box: SessionSandbox): Record<string, string> {
    const baseUrl = box.modelBaseUrl;
    const vars = {
      CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
      DISABLE_TELEMETRY: '1',
      DISABLE_AUTOUPDATER: '1',
      DISABLE_ERROR_REPORTING: '1',
      ANTHROPIC_BASE_URL: baseUrl ? baseUrl.replace(/\/+$/, '').replace(/\/v1$/, '') : undefined,
      ANTHROPIC_API_KEY: ctx.secrets.modelApiKey || undefined,
    };
    // given an env, the SDK starts `claude` with it (and its own switches) instead of the worker's process.env. Inside
    // the sandbox the paths are the sandbox's, PATH and TMPDIR are the sandbox's own (the worker's name host
    // directories), and the proxy variables are the only way out besides the model URL.
    const state = box.sandbox.paths.state;
    return runtimeEnv({ HOME: `${state}/home`, CLAUDE_CONFIG_DIR: `${state}/config`, ...vars, ...box.env }, { inherit: ['LANG', 'LC_ALL', 'TZ', 'TERM'] });
  }

  /**
   * The session's sandbox, opened (its networking replaced) for this turn. Its state and
   * workspace directories exist before the sandbox is first prepared, so that they are handed to its user with it.
   */
  async function sandboxFor(ctx: TurnContext): Promise<SessionSandbox> {
    const dirs = layout(ctx.sessionId);
    for (const dir of [dirs.home, dirs.config, ctx.workdir]) await mkdir(dir, { recursive: true });
    return opts.sandboxes.open(
      turnSandboxRequest(ctx, {
        state: dirs.root,
        // Claude Code's default endpoint when the agent names none: its host is then let through whatever the networking
        modelBaseUrl: ctx.agent.modelProvider?.baseUrl ?? ANTHROPIC_API,
        mounts: [dirname(claudeBinary())],
      }),
    );
  }

  /** The `claude` binary: the one given, or the one the SDK ships; its real path, which the sandbox mounts. */
  function claudeBinary(): string {
    return realpathSync(opts.executablePath ?? bundledClaude());
  }

  function start(ctx: TurnContext, state: ClaudeState, resume: boolean, box: SessionSandbox): LiveSession {
    const queue: SDKUserMessage[] = [];
    let wake: (() => void) | null = null;
    let ended = false;
    async function* input(): AsyncGenerator<SDKUserMessage> {
      for (;;) {
        while (queue.length > 0) yield queue.shift() as SDKUserMessage;
        if (ended) return;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = null;
      }
    }
    const session = {} as LiveSession;
    const hook: HookCallback = async (hookInput, toolUseId, { signal }) => {
      if (hookInput.hook_event_name !== 'PreToolUse') return {};
      const decision = await decideCall(session, hookInput.tool_name, (hookInput.tool_input ?? {}) as Record<string, unknown>, hookInput.tool_use_id ?? toolUseId ?? '', signal);
      return {
        hookSpecificOutput: {
          hookEventName: 'PreToolUse',
          permissionDecision: decision.behavior,
          ...(decision.behavior === 'deny' ? { permissionDecisionReason: decision.message ?? 'denied by agentplane policy' } : {}),
        },
      };
    };
    const rc = ctx.agent.runtime.config as ClaudeCodeConfig;
    const q = query({
      prompt: input(),
      options: {
        cwd: box.sandbox.paths.workspace,
        env: env(ctx, box),
        model: ctx.agent.model,
        ...(ctx.agent.system ? { systemPrompt: ctx.agent.system } : {}),
        settingSources: [],
        includePartialMessages: true,
        ...(resume ? { resume: state.claudeSessionId } : { sessionId: state.claudeSessionId }),
        permissionMode: 'default',
        hooks: { PreToolUse: [{ hooks: [hook], timeout: holdSeconds, onFailure: 'block' }] },
        // every call was decided by the hook already; a call that reaches the permission prompt anyway is allowed
        // only because the hook allowed it
        canUseTool: async (_name, toolInput) => ({ behavior: 'allow', updatedInput: toolInput }),
        // the binary's real path: the one its mounted directory holds inside
        pathToClaudeCodeExecutable: claudeBinary(),
        spawnClaudeCodeProcess: (spawnOptions: SpawnOptions) => spawnInSandbox(box, spawnOptions, (tail) => log.debug?.('claude exited', { sessionId: ctx.sessionId, tail: redact(tail, [ctx.secrets.modelApiKey]).slice(-500) })),
        ...(rc.maxTurns ? { maxTurns: rc.maxTurns } : {}),
        stderr: (data: string) => log.debug?.('claude stderr', { sessionId: ctx.sessionId, data: redact(data, [ctx.secrets.modelApiKey]).slice(0, 500) }),
      },
    });
    Object.assign(session, {
      q,
      iterator: q[Symbol.asyncIterator](),
      push: (m: SDKUserMessage) => {
        queue.push(m);
        wake?.();
      },
      end: () => {
        ended = true;
        wake?.();
      },
      turn: null,
      pending: new Map(),
      nextMessage: null,
      decided: new Set(),
      carried: [],
      refused: [],
      sentMessageIds: new Set(),
      usage: newUsageStore(),
      closed: false,
    } satisfies Omit<LiveSession, never>);
    live.set(ctx.sessionId, session);
    log.info('claude code started', { sessionId: ctx.sessionId, claudeSessionId: state.claudeSessionId, resume });
    return session;
  }

  async function decideCall(session: LiveSession, nativeName: string, rawInput: Record<string, unknown>, callId: string, signal: AbortSignal): Promise<{ behavior: 'allow' | 'deny'; message?: string }> {
    const driver = session.turn;
    if (!driver) return { behavior: 'deny', message: 'no agentplane turn is running' };
    const tool = canonicalClaudeTool(nativeName);
    const input = normaliseClaudeInput(nativeName, rawInput);
    session.decided.add(callId);
    const refused = session.refused.find(({ call }) => sameCall(call, tool, input));
    if (refused) {
      session.refused = session.refused.filter((r) => r !== refused);
      await driver.emit([{ type: 'agent.tool_use', tool_use_id: callId, name: tool, input, evaluated_permission: 'deny', sourceId: `tool:${callId}` }]);
      return { behavior: 'deny', message: refused.message };
    }
    const carried = takeCarried(session.carried, tool, input);
    if (carried) session.carried = carried.carried;
    const decision = await driver.sink.decide({ requestId: callId, callId, tool, input, ...(carried ? { approvedAs: carried.approvedAs } : {}) });
    log.debug?.('tool call decided', { callId, tool, action: decision.action });
    if (decision.action !== 'ask') return decision.action === 'allow' ? { behavior: 'allow' } : { behavior: 'deny', message: decision.message ?? 'denied by agentplane policy' };
    const toolUseId = decision.toolUseId;
    return new Promise((resolve) => {
      const pending: PendingCall = { requestId: callId, toolUseId, tool, input, resolve };
      session.pending.set(callId, pending);
      signal.addEventListener('abort', () => {
        session.pending.delete(callId);
        resolve({ behavior: 'deny', message: 'the call was abandoned' });
      });
      session.turn?.onAsk();
    });
  }

  async function open(ctx: TurnContext, previous: RuntimeSessionRef | null): Promise<RuntimeSessionRef> {
    const dirs = layout(ctx.sessionId);
    for (const dir of [dirs.home, dirs.config, ctx.workdir]) await mkdir(dir, { recursive: true });
    await sandboxFor(ctx);
    const prev = (previous?.state ?? {}) as Partial<ClaudeState>;
    const claudeSessionId = previous?.runtimeSessionId ?? prev.claudeSessionId ?? claudeSessionIdFor(ctx.sessionId);
    return { sessionId: ctx.sessionId, runtimeSessionId: claudeSessionId, state: { ...prev, claudeSessionId } };
  }

  async function runTurn(ctx: TurnContext, ref: RuntimeSessionRef, input: TurnInput, sink: TurnSink): Promise<TurnResult> {
    const state = { ...(ref.state as Partial<ClaudeState>), claudeSessionId: ref.runtimeSessionId } as ClaudeState;
    let session = live.get(ctx.sessionId);
    if (session?.closed) {
      live.delete(ctx.sessionId);
      session = undefined;
    }
    const driver = new TurnDriver(sink, ctx, log);
    const box = await sandboxFor(ctx);
    /** drives the turn; a turn that parks records the calls it waits on, for a host that may have to carry them out */
    const run = async (live: LiveSession): Promise<TurnResult> => {
      const result = await drive(live, driver);
      const turn = (ref.state as Partial<ClaudeState>).turn;
      if (result.status !== 'requires_action' || !turn) return result;
      const asked = [...live.pending.values()].map(({ requestId, toolUseId, tool, input }) => ({ requestId, toolUseId, tool, input }));
      const next = { ...(ref.state as ClaudeState), turn: { ...turn, asked } };
      ref.state = next;
      await sink.checkpoint(next);
      return result;
    };

    if (input.kind === 'message') {
      let turn = state.turn;
      const same = turn?.turnId === input.turnId && turn.messageId === input.messageId;
      if (session && same && session.sentMessageIds.has(input.messageId)) {
        // a retry in this worker: the prompt is in the live process; keep driving it
        return run(session);
      }
      const entries = await transcript(ctx.sessionId, state.claudeSessionId);
      if (!turn || !same) {
        turn = { turnId: input.turnId, messageId: input.messageId, promptsBefore: userPrompts(entries).length };
        const next: ClaudeState = { ...state, turn };
        ref.state = next;
        await sink.checkpoint(next);
      }
      const prompts = userPrompts(entries);
      if (prompts.length > turn.promptsBefore) {
        // the prompt reached the transcript in an earlier attempt whose process is gone: never send it again
        log.info('prompt already in the transcript; reattaching', { sessionId: ctx.sessionId, turnId: turn.turnId });
        const at = prompts[turn.promptsBefore] as number;
        await driver.replay(entries.slice(at + 1));
        if (turnEnded(entries.slice(at + 1))) return { status: 'end_turn' };
        session ??= start(ctx, state, true, box);
        session.push(userMessage('[agentplane] The previous attempt of this turn was cut off by a restart. Continue the task from where you left off.'));
        return run(session);
      }
      session ??= start(ctx, state, entries.length > 0, box);
      session.sentMessageIds.add(input.messageId);
      session.push(userMessage(input.text));
      log.info('prompt sent', { sessionId: ctx.sessionId, turnId: turn.turnId });
      return run(session);
    }

    // resume after a person decided
    if (state.turn?.turnId !== input.turnId) return { status: 'error', message: `no turn ${input.turnId} to resume on this claude-code session`, retryable: false };
    if (session && session.pending.size > 0) {
      for (const decision of input.decisions) {
        const pending = session.pending.get(decision.requestId);
        if (!pending) continue;
        session.pending.delete(decision.requestId);
        pending.resolve({ behavior: decision.behavior, message: decision.behavior === 'deny' ? (decision.message ?? 'denied by a person') : undefined });
      }
      return run(session);
    }
    // the process that held the calls is gone (a restart, or another host restored the session): resumed from the
    // transcript, the agent is told what the person decided and makes an approved call again
    const decided = decidedCalls(state.turn.asked ?? [], input.decisions);
    if (decided.length === 0) return { status: 'error', message: 'the claude code process that held the pending calls is gone, and the turn recorded none of them', retryable: false };
    if (session) session.end();
    session = start(ctx, state, true, box);
    session.carried = decided.filter(({ decision }) => decision.behavior === 'allow').map(({ call }) => call);
    session.refused = decided.flatMap(({ call, decision }) => (decision.behavior === 'deny' ? [{ call, message: decision.message ?? 'denied by a person' }] : []));
    log.warn('the runtime was lost while calls waited for a person: telling the agent what became of them', { sessionId: ctx.sessionId, decided: decided.length });
    session.push(userMessage(lossNotice(decided)));
    return run(session);
  }

  async function drive(session: LiveSession, driver: TurnDriver): Promise<TurnResult> {
    session.turn = driver;
    driver.store = session.usage;
    const asked = new Promise<'ask'>((resolve) => (driver.onAsk = () => resolve('ask')));
    const aborted = new Promise<'abort'>((resolve) => {
      if (driver.sink.signal.aborted) resolve('abort');
      driver.sink.signal.addEventListener('abort', () => resolve('abort'), { once: true });
    });
    let interrupting = false;
    try {
      for (;;) {
        session.nextMessage ??= session.iterator.next();
        const next = await Promise.race([session.nextMessage, asked, ...(interrupting ? [] : [aborted])]);
        if (next === 'ask') {
          // let parallel calls of the same assistant message reach their hooks before handing the turn back
          await sleep(200);
          return { status: 'requires_action', pending: [...session.pending.values()].map((p) => ({ requestId: p.requestId, toolUseId: p.toolUseId })) };
        }
        if (next === 'abort') {
          interrupting = true;
          for (const p of session.pending.values()) p.resolve({ behavior: 'deny', message: 'the turn was interrupted' });
          session.pending.clear();
          await session.q.interrupt().catch(() => undefined);
          continue;
        }
        session.nextMessage = null;
        log.debug?.('claude message', { sessionId: driver.ctx.sessionId, type: next.done ? 'done' : next.value.type });
        if (next.done) {
          session.closed = true;
          live.delete(driver.ctx.sessionId);
          await driver.flush();
          return interrupting ? { status: 'interrupted' } : { status: 'error', message: 'claude code exited in the middle of the turn', retryable: true };
        }
        const message = next.value;
        await driver.onMessage(message, session.decided);
        if (message.type === 'result') {
          await driver.flush();
          session.decided.clear();
          if (interrupting || driver.sink.signal.aborted) return { status: 'interrupted' };
          if (message.subtype === 'success' && !message.is_error) return { status: 'end_turn' };
          const detail = message.subtype === 'success' ? message.result : (message.errors ?? []).join('; ');
          const text = redact(`${message.subtype}: ${detail}`.slice(0, 500), [driver.ctx.secrets.modelApiKey]);
          await driver.emit([{ type: 'session.error', error: { type: message.subtype, message: text }, sourceId: `error:${message.uuid}` }]);
          return { status: 'error', message: `claude code: ${text}`, retryable: false };
        }
      }
    } catch (err) {
      if (err instanceof SinkError) throw err.failure;
      session.closed = true;
      live.delete(driver.ctx.sessionId);
      const text = redact((err as Error).message ?? String(err), [driver.ctx.secrets.modelApiKey]);
      log.warn('claude code turn failed', { sessionId: driver.ctx.sessionId, error: text });
      return { status: 'error', message: `claude code: ${text}`, retryable: true };
    } finally {
      if (session.turn === driver) session.turn = null;
    }
  }

  async function close(ref: RuntimeSessionRef): Promise<void> {
    const session = live.get(ref.sessionId);
    if (session) {
      live.delete(ref.sessionId);
      session.closed = true;
      for (const p of session.pending.values()) p.resolve({ behavior: 'deny', message: 'the session was closed' });
      session.end();
      session.q.close();
      log.info('claude code stopped', { sessionId: ref.sessionId });
    }
    // ends whatever the session left running in its sandbox (a tool's background processes) with it
    await opts.sandboxes.close(ref.sessionId);
  }

  /**
   * What another host needs to continue the session: Claude Code's CLAUDE_CONFIG_DIR (the transcripts, its settings
   * file, todos) and HOME, less what it rebuilds (caches, shell snapshots, feature-flag caches, debug logs).
   */
  function sessionState(sessionId: string) {
    return { path: layout(sessionId).root, ignore: ['**/.cache/**', 'home/.npm/**', 'config/statsig/**', 'config/shell-snapshots/**', 'config/debug/**', 'config/*.backup*'] };
  }

  return { kind: descriptor.kind, capabilities: descriptor.capabilities, open, runTurn, close, sessionState };
}

/** Removes a session's Claude Code data (transcripts, home). */
export async function removeClaudeCodeData(dataDir: string, sessionId: string): Promise<void> {
  await rm(join(dataDir, 'claude-code', sessionId), { recursive: true, force: true });
}

// ---------------------------------------------------------------------------------------------------------------
// One turn: native messages → canonical events

class SinkError extends Error {
  constructor(readonly failure: unknown) {
    super('sink failed');
  }
}

interface ContentBlock {
  type: string;
  id?: string;
  name?: string;
  input?: unknown;
  text?: string;
  thinking?: string;
  tool_use_id?: string;
  content?: unknown;
  is_error?: boolean;
}

interface AnthropicUsage {
  input_tokens?: number;
  output_tokens?: number;
  cache_read_input_tokens?: number | null;
  cache_creation_input_tokens?: number | null;
}

interface UsageStore {
  /** API message id → usage and model from the assistant messages (`message_start` figures) */
  requests: Map<string, { model: string; usage: AnthropicUsage }>;
  /** usage as streamed (`message_start` + `message_delta`), by API message id: the complete per-request figure */
  streamed: Map<string, { model: string; usage: AnthropicUsage }>;
  /** tool calls seen in assistant messages, by call id */
  calls: Map<string, { name: string; input: Record<string, unknown> }>;
  current: string | null;
}

function newUsageStore(): UsageStore {
  return { requests: new Map(), streamed: new Map(), calls: new Map(), current: null };
}

class TurnDriver {
  onAsk: () => void = () => {};
  private readonly emitted = new Set<string>();
  /** requests whose span is not out yet; the live session's store, so a request open at an ask survives the resume */
  store: UsageStore = newUsageStore();
  private get requests() {
    return this.store.requests;
  }
  private get streamed() {
    return this.store.streamed;
  }
  private get calls() {
    return this.store.calls;
  }

  constructor(
    readonly sink: TurnSink,
    readonly ctx: TurnContext,
    private readonly log: AdapterLogger,
  ) {}

  async emit(events: RuntimeEvent[]): Promise<void> {
    const fresh = events.filter((e) => !this.emitted.has(e.sourceId));
    if (fresh.length === 0) return;
    try {
      await this.sink.emit(fresh);
    } catch (err) {
      throw new SinkError(err);
    }
    for (const e of fresh) this.emitted.add(e.sourceId);
  }

  async onMessage(message: SDKMessage, decided: Set<string>): Promise<void> {
    if (message.type === 'stream_event') {
      // the assistant messages carry the usage of `message_start` only; the final output count is in `message_delta`
      if (message.parent_tool_use_id) return;
      const event = message.event as { type: string; message?: { id: string; model?: string; usage?: AnthropicUsage }; usage?: AnthropicUsage };
      if (event.type === 'message_start' && event.message) {
        this.store.current = event.message.id;
        this.streamed.set(event.message.id, { model: event.message.model ?? this.ctx.agent.model, usage: { ...event.message.usage } });
      } else if (event.type === 'message_delta' && this.store.current && event.usage) {
        const r = this.streamed.get(this.store.current);
        if (r) for (const [k, v] of Object.entries(event.usage)) if (typeof v === 'number') (r.usage as Record<string, number>)[k] = v;
      }
    } else if (message.type === 'assistant') {
      if (message.parent_tool_use_id) return;
      await this.assistant(message.message as unknown as { id: string; model?: string; content: ContentBlock[]; usage?: AnthropicUsage }, message.uuid);
    } else if (message.type === 'user') {
      if (message.parent_tool_use_id) return;
      await this.flush();
      await this.toolResults(message.message.content as unknown, decided);
    }
  }

  private async assistant(m: { id: string; model?: string; content: ContentBlock[]; usage?: AnthropicUsage }, uuid: string): Promise<void> {
    for (const [id] of this.requests) if (id !== m.id) await this.flushOne(id);
    if (m.usage) this.requests.set(m.id, { model: m.model ?? this.ctx.agent.model, usage: m.usage });
    const events: RuntimeEvent[] = [];
    (m.content ?? []).forEach((b, i) => {
      if (b.type === 'text' && b.text) events.push({ type: 'agent.message', content: [{ type: 'text', text: b.text }], sourceId: `text:${m.id}:${uuid}:${i}` });
      if (b.type === 'thinking' && b.thinking) events.push({ type: 'agent.thinking', content: [{ type: 'text', text: b.thinking }], sourceId: `thinking:${m.id}:${uuid}:${i}` });
      if (b.type === 'tool_use' && b.id) this.calls.set(b.id, { name: String(b.name), input: (b.input ?? {}) as Record<string, unknown> });
    });
    await this.emit(events);
  }

  private async toolResults(content: unknown, decided: Set<string>): Promise<void> {
    if (!Array.isArray(content)) return;
    const events: RuntimeEvent[] = [];
    for (const b of content as ContentBlock[]) {
      if (b.type !== 'tool_result' || !b.tool_use_id) continue;
      const call = this.calls.get(b.tool_use_id);
      if (!decided.has(b.tool_use_id) && call) {
        // ran without going through the hook in this process (e.g. decided by an earlier attempt: the sink already
        // has this event under the same source id and drops it)
        events.push({ type: 'agent.tool_use', tool_use_id: b.tool_use_id, name: canonicalClaudeTool(call.name), input: normaliseClaudeInput(call.name, call.input), evaluated_permission: 'allow', sourceId: `tool:${b.tool_use_id}` });
      }
      events.push({
        type: 'agent.tool_result',
        tool_use_id: b.tool_use_id,
        content: [{ type: 'text', text: redact(resultText(b.content), [this.ctx.secrets.modelApiKey]) }],
        is_error: b.is_error === true,
        sourceId: `tool_result:${b.tool_use_id}`,
      });
    }
    await this.emit(events);
  }

  /** Replays a turn's finished entries from the transcript (after a lost process). */
  async replay(entries: Array<Record<string, unknown>>): Promise<void> {
    const decided = new Set<string>();
    for (const e of entries) {
      if (e.isSidechain === true) continue;
      if (e.type === 'assistant') await this.assistant(e.message as { id: string; model?: string; content: ContentBlock[]; usage?: AnthropicUsage }, String(e.uuid));
      else if (e.type === 'user') {
        await this.flush();
        await this.toolResults((e.message as { content?: unknown } | undefined)?.content, decided);
      }
    }
    await this.flush();
    this.log.debug?.('transcript replayed', { sessionId: this.ctx.sessionId, entries: entries.length });
  }

  async flush(): Promise<void> {
    for (const id of [...this.requests.keys()]) await this.flushOne(id);
  }

  private async flushOne(id: string): Promise<void> {
    const r = this.streamed.get(id) ?? this.requests.get(id);
    this.requests.delete(id);
    this.streamed.delete(id);
    if (!r) return;
    await this.emit([
      {
        type: 'span.model_request_end',
        model: r.model,
        model_usage: {
          input_tokens: r.usage.input_tokens ?? 0,
          output_tokens: r.usage.output_tokens ?? 0,
          cache_read_input_tokens: r.usage.cache_read_input_tokens ?? 0,
          cache_creation_input_tokens: r.usage.cache_creation_input_tokens ?? 0,
        },
        is_error: false,
        sourceId: `request:${id}`,
      },
    ]);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// The sandbox

/** Claude Code's own endpoint, for an agent that names none */
const ANTHROPIC_API = 'https://api.anthropic.com';

/** The `claude` binary the SDK ships for this machine (its platform package, glibc first), as the SDK finds it. */
function bundledClaude(): string {
  const require = createRequire(import.meta.url);
  for (const pkg of [`@anthropic-ai/claude-agent-sdk-linux-${process.arch}`, `@anthropic-ai/claude-agent-sdk-linux-${process.arch}-musl`]) {
    try {
      const path = require.resolve(`${pkg}/claude`);
      if (existsSync(path)) return path;
    } catch {
      // not installed: the next one
    }
  }
  throw new Error(`no claude binary for linux-${process.arch} is installed (the Agent SDK's platform package)`);
}

/**
 * The SDK's `spawnClaudeCodeProcess`: `claude` in the session's sandbox, its stdin and stdout the SDK's stream-json
 * channel. The environment is the one the SDK built from ours (the allowlist, the proxy variables, the SDK's own
 * switches); the working directory is the workspace whatever the SDK says. Its `signal` (the SDK's, after its own
 * grace period) kills the whole sandboxed tree, and so does `kill`.
 */
function spawnInSandbox(box: SessionSandbox, o: SpawnOptions, onExit: (tail: string) => void): SpawnedProcess {
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(o.env)) if (value !== undefined) env[name] = value;
  const proc = box.sandbox.spawn(o.command, o.args, { interactive: true, env, cwd: box.sandbox.paths.workspace, signal: o.signal });
  const events = new EventEmitter();
  let exitCode: number | null = null;
  let signalCode: NodeJS.Signals | null = null;
  let killed = false;
  void proc.exited.then((exit) => {
    exitCode = exit.exitCode;
    // killed from outside: no exit code, so the SDK must see a signal to know the process is gone
    signalCode = (exit.signal as NodeJS.Signals | null) ?? (exit.exitCode === null ? 'SIGKILL' : null);
    onExit(exit.tail);
    events.emit('exit', exitCode, signalCode);
  });
  if (!proc.stdin || !proc.stdout) throw new Error('the sandbox gave the claude process no stdio');
  const spawned = {
    stdin: proc.stdin,
    stdout: proc.stdout,
    get killed() {
      return killed;
    },
    get exitCode() {
      return exitCode;
    },
    get signalCode() {
      return signalCode;
    },
    kill() {
      killed = true;
      proc.kill();
      return true;
    },
    on(event: string, listener: (...args: unknown[]) => void) {
      events.on(event, listener);
    },
    once(event: string, listener: (...args: unknown[]) => void) {
      events.once(event, listener);
    },
    off(event: string, listener: (...args: unknown[]) => void) {
      events.off(event, listener);
    },
  };
  return spawned as SpawnedProcess;
}

/**
 * The transcript at `path`, or null when it is not a regular file inside `root` (the session's state). Inside a
 * sandbox, the session writes that directory: a link it put there (to another session's transcript, say) must not
 * make the worker read, and replay as this session's events, what it points to. The file is opened without following
 * a final link, and the path of what was actually opened (through /proc/self/fd, so no race with a rename) must lie in
 * the state's real path.
 */
export async function readTranscript(path: string, root: string): Promise<string | null> {
  const handle = await openFile(path, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => null);
  if (!handle) return null;
  try {
    const [opened, base, info] = await Promise.all([readlink(`/proc/self/fd/${handle.fd}`), realpath(root), handle.stat()]);
    if (!info.isFile() || !opened.startsWith(`${base}/`)) return null;
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

function userMessage(text: string): SDKUserMessage {
  return { type: 'user', message: { role: 'user', content: text }, parent_tool_use_id: null };
}

/** Indexes of the transcript's user prompts (user entries that are not tool results, meta or sidechain). */
function userPrompts(entries: Array<Record<string, unknown>>): number[] {
  const out: number[] = [];
  entries.forEach((e, i) => {
    if (e.type !== 'user' || e.isSidechain === true || e.isMeta === true) return;
    const content = (e.message as { content?: unknown } | undefined)?.content;
    if (typeof content === 'string' || (Array.isArray(content) && (content as ContentBlock[]).some((b) => b.type === 'text'))) out.push(i);
  });
  return out;
}

/** The turn's transcript ends with an assistant message that did not stop for tools. */
function turnEnded(entries: Array<Record<string, unknown>>): boolean {
  const last = entries.filter((e) => (e.type === 'assistant' || e.type === 'user') && e.isSidechain !== true).at(-1);
  if (!last || last.type !== 'assistant') return false;
  const m = last.message as { stop_reason?: string | null; content?: ContentBlock[] };
  return m.stop_reason !== 'tool_use' && !(m.content ?? []).some((b) => b.type === 'tool_use');
}

function resultText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return (content as ContentBlock[]).map((b) => (b.type === 'text' ? (b.text ?? '') : '')).join('');
  return '';
}



function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
