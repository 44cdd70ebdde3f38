/**
 * Any agent that speaks the Agent Client Protocol (ACP: JSON-RPC 2.0, newline-delimited, over the agent's stdio)
 * behind the RuntimeAdapter contract, through the official `@agentclientprotocol/sdk` client.
 *
 * Which agents may run: an agent definition names one (`runtime: {type: 'acp', config: {agent: 'opencode'}}`); the
 * worker holds the registry of allowed agents (the built-in `opencode`, plus whatever `AGENTPLANE_ACP_AGENTS` adds).
 * The API never carries a command line, so a user cannot make a worker run a program of their choosing.
 *
 * Process model: one agent process per agentplane session, a child of the worker in its own process group (killed as
 * a group on close, so the tools it started die with it). Its stdio is the ACP connection, so it cannot outlive the
 * worker: live connections are kept in a map keyed by our session id, and a pending permission request stays a
 * pending JSON-RPC request between the `requires_action` leg of a turn and the `resume` leg that answers it.
 *
 * Methods: `initialize`, `session/new`, `session/load` (when the agent advertises `loadSession`: a new process picks up
 * the conversation after a worker restart or a key rotation), `session/prompt`, `session/cancel`. The client declares
 * no fs or terminal capability: the agent works on its own workspace (the session's workdir) itself.
 *
 * Gating: every `session/request_permission` goes through `sink.decide`. allow → the `allow_once` option, deny →
 * `reject_once` (never an `*_always` option: the next call must be asked again), ask → the request is left pending and
 * the turn returns `requires_action`. The built-in OpenCode agent is configured so every tool asks, and so a rejected
 * call hands the refusal to the model instead of ending the turn (`experimental.continue_loop_on_deny`).
 *
 * Reattach is not claimed: a prompt in flight lives in a process that dies with the worker, and ACP has no way to
 * re-join a running prompt. The turn is checkpointed as sent before `session/prompt` goes out, so a retried activity
 * that finds no live prompt never sends it again; it reports the lost turn as an error instead. A turn parked on calls
 * for a person is the exception: it records the calls it waits on, and when their process is gone a new one loads the
 * session and is told what the person decided (the approved call made again is allowed once on that approval).
 *
 * Portable (`sessionState`): the agent's HOME, where the built-in OpenCode agent keeps its sessions, moves with the
 * session's snapshot; another host's agent picks the conversation up with `session/load`. An agent that cannot load
 * sessions starts the conversation over, there as after any restart.
 *
 * Usage: ACP's `usage_update` carries the session's cumulative cost (and context size, not tokens); OpenCode's
 * `session/prompt` answer adds the tokens it counts for the turn. One `span.model_request_end` per turn carries those
 * tokens and, when the agent reported a USD cost, the turn's share of it (kept as a cross-check: the ledger prices the
 * tokens).
 *
 * Secrets: the model key reaches the agent only through its environment (OpenCode reads it via `{env:…}`); it is never
 * put in `ref.state`, events, logs or errors, and error text from the agent is redacted.
 */
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { readFileSync, realpathSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import {
  client as acpClient,
  ndJsonStream,
  PROTOCOL_VERSION,
  type ClientConnection,
  type JsonRpcId,
  type PromptResponse,
  type RequestPermissionRequest,
  type RequestPermissionResponse,
  type SessionUpdate,
  type ToolCallContent,
} from '@agentclientprotocol/sdk';
import type { ModelPrice } from '../../governance/pricing';
import type { CanonicalTool } from '../../governance/types';
import { runtimeEnv } from '../kit/env';
import { refuseInterpolation } from '../kit/interpolation';
import { SILENT_LOGGER } from '../kit/log';
import type { SandboxProcess } from '../kit/sandbox/provider';
import { turnSandboxRequest, type SessionSandboxes } from '../kit/session-sandbox';
import { decidedCalls, lossNotice, takeCarried, type AskedCall, type CarriedCall } from '../kit/lost-calls';
import { holdsHome, signalGroup } from '../kit/process';
import { redact } from '../kit/redact';
import { buildOpenCodeConfig, canonicalTool as openCodeTool, defaultOpenCodeBinary, OPENCODE_KEY_ENV, OPENCODE_SWITCHES, openCodePrice } from '../opencode/config';
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
import { descriptor, type AcpAgentSpec } from './descriptor';

export interface AcpAdapterOptions {
  /** runtime state (home, agent log) lives in `<dataDir>/acp/<sessionId>` */
  dataDir: string;
  /** agents besides the built-in `opencode` (same name: replaces it) */
  agents?: Record<string, AcpAgentSpec>;
  /** the `opencode` binary for the built-in agent; default: the one the `opencode-ai` package ships */
  opencodeBin?: string;
  /** USD per million tokens the built-in OpenCode agent reports cost with (a cross-check: the ledger prices tokens) */
  prices?: Record<string, ModelPrice>;
  logger?: AdapterLogger;
  /** how long an agent may take to answer `initialize` and open its session (default 60 s) */
  startTimeoutMs?: number;
  /** how long a cancelled prompt may take to stop before its process is killed (default 20 s) */
  cancelGraceMs?: number;
  /**
   * each session's sandbox: the agent process (and every tool it runs) runs in it, with the session's workspace at
   * /workspace (the `none` provider, behind its loud setting, is the one way to run it unisolated)
   */
  sandboxes: SessionSandboxes;
}

interface TurnRecord {
  turnId: string;
  messageId: string;
  /** recorded before `session/prompt` is sent: a retry that finds no live prompt must not send it again */
  sent: boolean;
  /** the calls this turn parked for a person: what a lost agent process's calls were */
  asked?: AskedCall[];
  /** approved calls the agent was told to make again after its process was lost: each is allowed once on its approval */
  carried?: CarriedCall[];
}

interface AcpState extends Record<string, unknown> {
  agent: string;
  acpSessionId: string;
  /** the agent process and its command, so a new worker can stop one that outlived its connection */
  pid?: number;
  command?: string;
  turn?: TurnRecord;
  /** why this worker cannot run the agent at all (reported by the turn) */
  unavailable?: string;
}

interface CallState {
  /** the tool's own name when the agent gave one (OpenCode: the first `tool_call` title) */
  name?: string;
  kind?: string;
  title?: string;
  rawInput: Record<string, unknown>;
  locations: string[];
  done: boolean;
}

interface PendingPermission {
  rpcId: JsonRpcId;
  callId: string;
  toolUseId: string;
  tool: CanonicalTool;
  input: Record<string, unknown>;
  options: RequestPermissionRequest['options'];
  answer: (response: RequestPermissionResponse) => void;
}

type Inbound =
  | { kind: 'update'; update: SessionUpdate }
  | { kind: 'permission'; rpcId: JsonRpcId; params: RequestPermissionRequest; answer: (response: RequestPermissionResponse) => void };

interface PromptInFlight {
  turnId: string;
  messageId: string;
  settled: { response: PromptResponse } | { error: Error } | null;
  /** the session's cumulative reported cost when the turn began */
  costAtStart: number | null;
  /** agent.message / agent.thinking events emitted so far in the turn (their source ids count up) */
  segments: number;
}

/** One live agent process and its ACP session. */
interface LiveAgent {
  name: string;
  command: string;
  child: AgentProcess;
  conn: ClientConnection;
  acpSessionId: string;
  /** why the process is gone, once it is */
  exited: string | null;
  /** session/load replays history as updates: those are not this turn's events */
  loading: boolean;
  keyHash: string;
  inbox: Inbound[];
  /** called on every inbound message, prompt answer and exit */
  waiters: Set<() => void>;
  /** the leg driving the turn now; an older attempt's leg that is still running stops when it sees another */
  driver: TurnDriver | null;
  prompt: PromptInFlight | null;
  pending: PendingPermission[];
  calls: Map<string, CallState>;
  /** call ids that already have their `agent.tool_use` (recorded by decide or by us) */
  used: Set<string>;
  /** cumulative USD the agent reported for the session */
  costUsd: number | null;
}

export function createAcpAdapter(opts: AcpAdapterOptions): RuntimeAdapter {
  const log: AdapterLogger = opts.logger ?? SILENT_LOGGER;
  const live = new Map<string, LiveAgent>();
  const starting = new Map<string, Promise<LiveAgent>>();
  const startTimeoutMs = opts.startTimeoutMs ?? 60_000;
  const cancelGraceMs = opts.cancelGraceMs ?? 20_000;

  function layout(sessionId: string) {
    const root = join(opts.dataDir, 'acp', sessionId);
    return { root, home: join(root, 'home'), log: join(root, 'agent.log') };
  }

  /** The command line and environment for a named agent; throws AcpError for a name this worker does not allow. */
  function launch(name: string, ctx: TurnContext, where: Where): { command: string; args: string[]; env: Record<string, string> } {
    const home = where.home;
    const env = runtimeEnv({
      HOME: home,
      XDG_CONFIG_HOME: join(home, '.config'),
      XDG_DATA_HOME: join(home, '.local', 'share'),
      XDG_STATE_HOME: join(home, '.local', 'state'),
      XDG_CACHE_HOME: join(home, '.cache'),
    });
    // in a sandbox, its own PATH (the worker's may name directories that are not there)
    if (where.sandboxed) delete env.PATH;
    // the model as the agent reaches it (in a sandbox: through its bridge)
    ctx = { ...ctx, agent: { ...ctx.agent, modelProvider: ctx.agent.modelProvider && { ...ctx.agent.modelProvider, baseUrl: where.modelBaseUrl ?? ctx.agent.modelProvider.baseUrl } } };
    const spec = opts.agents?.[name];
    if (spec) {
      // an agent may read these variables into a config that expands `{env:…}` / `{file:…}` (OpenCode does)
      refuseInterpolation({ model: ctx.agent.model, 'model_provider.base_url': ctx.agent.modelProvider?.baseUrl });
      Object.assign(env, spec.env);
      if (spec.keyEnv && ctx.secrets.modelApiKey) env[spec.keyEnv] = ctx.secrets.modelApiKey;
      if (spec.baseUrlEnv && ctx.agent.modelProvider) env[spec.baseUrlEnv] = ctx.agent.modelProvider.baseUrl;
      if (spec.modelEnv) env[spec.modelEnv] = ctx.agent.model;
      return { command: spec.command, args: spec.args, env };
    }
    if (name === 'opencode') {
      const config = { ...buildOpenCodeConfig(ctx, openCodePrice(ctx, opts.prices)), experimental: { continue_loop_on_deny: true } };
      Object.assign(env, {
        ...OPENCODE_SWITCHES,
        // the highest-precedence config: a repository's opencode.json cannot move the provider (and its key) or loosen permissions
        OPENCODE_CONFIG_CONTENT: JSON.stringify(config),
        // `opencode acp` also serves its HTTP API on localhost, whose `GET /config` shows the resolved key: lock it
        // with a password nobody keeps
        OPENCODE_SERVER_PASSWORD: randomBytes(24).toString('hex'),
        [OPENCODE_KEY_ENV]: ctx.secrets.modelApiKey ?? '',
      });
      return { command: opts.opencodeBin ?? defaultOpenCodeBinary(), args: ['acp', '--cwd', where.workdir], env };
    }
    throw new AcpError(`unknown ACP agent "${name}": this worker allows ${allowedNames().join(', ')}`, false);
  }

  function allowedNames(): string[] {
    return [...new Set(['opencode', ...Object.keys(opts.agents ?? {})])].sort();
  }

  async function start(ctx: TurnContext, name: string, previous: AcpState | null): Promise<LiveAgent> {
    const dirs = layout(ctx.sessionId);
    for (const dir of [dirs.root, dirs.home, ctx.workdir]) await mkdir(dir, { recursive: true });
    if (previous?.pid && previous.command) killGroup(previous.pid, previous.command);
    // the command as the host knows it, to mount its directory; then the same launch with the sandbox's paths
    const named = launch(name, ctx, { home: dirs.home, workdir: ctx.workdir, sandboxed: false });
    const session = await opts.sandboxes.open(
      turnSandboxRequest(ctx, { state: dirs.home, mounts: [...new Set([dirname(realpathSync(named.command)), ...(opts.agents?.[name]?.mounts ?? [])])] }),
    );
    const where: Where = { home: session.sandbox.paths.state, workdir: session.sandbox.paths.workspace, modelBaseUrl: session.modelBaseUrl, sandboxed: true };
    const inside = launch(name, ctx, where);
    const command = realpathSync(inside.command);
    const child = sandboxedChild(session.sandbox.spawn(command, inside.args, { env: { ...inside.env, ...session.env }, interactive: true, logFile: dirs.log }));
    const cwd = where.workdir;
    const agent = {
      name,
      command,
      child,
      acpSessionId: '',
      exited: null,
      loading: false,
      keyHash: keyHash(ctx.secrets.modelApiKey),
      inbox: [],
      waiters: new Set(),
      driver: null,
      prompt: null,
      pending: [],
      calls: new Map(),
      used: new Set(),
      costUsd: null,
    } as unknown as LiveAgent;
    const deliver = (item: Inbound) => {
      agent.inbox.push(item);
      wake(agent);
    };
    const app = acpClient({})
      .onNotification('session/update', ({ params }) => {
        if (params.sessionId !== agent.acpSessionId && agent.acpSessionId !== '') return;
        if (agent.loading) {
          // history replayed by session/load: only the running cost matters (it is the baseline of the next turn)
          if (params.update.sessionUpdate === 'usage_update') agent.costUsd = usdCost(params.update) ?? agent.costUsd;
          return;
        }
        deliver({ kind: 'update', update: params.update });
      })
      .onRequest('session/request_permission', ({ params, requestId }) => new Promise<RequestPermissionResponse>((answer) => deliver({ kind: 'permission', rpcId: requestId, params, answer })));
    const stdin = Writable.toWeb(child.stdin!) as WritableStream<Uint8Array>;
    const stdout = Readable.toWeb(child.stdout!) as ReadableStream<Uint8Array>;
    agent.conn = app.connect(ndJsonStream(stdin, stdout));
    const gone = (why: string) => {
      if (agent.exited !== null) return;
      agent.exited = why;
      agent.conn.close(new AcpError(`the ${name} agent ${why}`, true));
      for (const p of agent.pending) p.answer({ outcome: { outcome: 'cancelled' } });
      agent.pending = [];
      if (live.get(ctx.sessionId) === agent) live.delete(ctx.sessionId);
      wake(agent);
    };
    child.once('exit', (code, signal) => gone(`exited (${code ?? signal})`));
    child.once('error', (err) => gone(`could not start: ${err.message}`));
    child.stdin!.on('error', () => gone('closed its input'));

    try {
      const init = await withTimeout(
        agent.conn.agent.request('initialize', { protocolVersion: PROTOCOL_VERSION, clientCapabilities: {}, clientInfo: { name: 'agentplane', version: '1' } }),
        startTimeoutMs,
        `${name}: no answer to initialize within ${startTimeoutMs} ms`,
      );
      const canLoad = init.agentCapabilities?.loadSession === true;
      if (previous?.acpSessionId && previous.agent === name && canLoad) {
        agent.acpSessionId = previous.acpSessionId;
        agent.loading = true;
        try {
          await withTimeout(agent.conn.agent.request('session/load', { sessionId: previous.acpSessionId, cwd, mcpServers: [] }), startTimeoutMs, `${name}: session/load timed out`);
        } catch (err) {
          log.warn('acp session could not be loaded; starting a new one', { sessionId: ctx.sessionId, error: redact(errorText(err), [ctx.secrets.modelApiKey]) });
          agent.acpSessionId = '';
        } finally {
          agent.loading = false;
        }
      } else if (previous?.acpSessionId) {
        log.warn('acp agent cannot load sessions; the conversation starts over', { sessionId: ctx.sessionId, agent: name });
      }
      if (!agent.acpSessionId) {
        const created = await withTimeout(agent.conn.agent.request('session/new', { cwd, mcpServers: [] }), startTimeoutMs, `${name}: session/new timed out`);
        agent.acpSessionId = created.sessionId;
      }
    } catch (err) {
      const detail = agent.exited ? `${agent.exited} (see ${dirs.log})` : errorText(err);
      // a command that cannot be run will not start on a retry either
      const retryable = !agent.exited?.startsWith('could not start');
      stop(agent);
      throw new AcpError(redact(`the ${name} agent did not start: ${detail}`, [ctx.secrets.modelApiKey]), retryable);
    }
    live.set(ctx.sessionId, agent);
    log.info('acp agent started', { sessionId: ctx.sessionId, agent: name, pid: child.pid, acpSessionId: agent.acpSessionId });
    return agent;
  }

  /**
   * Cheap on purpose: the activity heartbeats only once `runTurn` runs, and an agent can take longer than the
   * heartbeat timeout to start. The process is started (or found) by `runTurn`.
   */
  async function open(ctx: TurnContext, previous: RuntimeSessionRef | null): Promise<RuntimeSessionRef> {
    const prev = (previous?.state ?? null) as AcpState | null;
    const state: AcpState = { ...(prev ?? {}), agent: '', acpSessionId: prev?.acpSessionId ?? '' };
    delete state.unavailable;
    try {
      const name = agentName(ctx);
      launch(name, ctx, { home: '/', workdir: '/', sandboxed: false }); // refuses a name this worker does not allow
      state.agent = name;
      if (prev && prev.agent !== name) {
        // the agent definition now names another agent: its sessions are not this one's
        state.acpSessionId = '';
        delete state.turn;
      }
    } catch (err) {
      if (!(err instanceof AcpError)) throw err;
      // an agent this worker will never run: the turn reports it as a session.error
      state.unavailable = err.message;
    }
    const running = live.get(ctx.sessionId);
    if (running && running.exited === null && running.name === state.agent) state.acpSessionId = running.acpSessionId;
    return { sessionId: ctx.sessionId, runtimeSessionId: state.acpSessionId, state };
  }

  /** The session's live agent: the running one, or a new process that loads the recorded ACP session. */
  async function ensureAgent(ctx: TurnContext, ref: RuntimeSessionRef): Promise<LiveAgent> {
    const state = ref.state as AcpState;
    let agent = live.get(ctx.sessionId);
    if (agent && (agent.exited !== null || agent.name !== state.agent)) {
      stop(agent);
      agent = undefined;
    }
    if (agent && agent.keyHash !== keyHash(ctx.secrets.modelApiKey) && !agent.prompt) {
      // a rotated key takes effect on the next turn; a turn in flight (e.g. waiting for approval) keeps its process
      log.info('model key changed; restarting the acp agent', { sessionId: ctx.sessionId });
      stop(agent);
      agent = undefined;
    }
    if (!agent) {
      // a retried attempt of the same activity waits for the start already under way instead of starting another
      let pending = starting.get(ctx.sessionId);
      if (!pending) {
        pending = start(ctx, state.agent, state).finally(() => starting.delete(ctx.sessionId));
        starting.set(ctx.sessionId, pending);
      }
      agent = await pending;
    }
    if (agent.acpSessionId !== state.acpSessionId) {
      const { turn: _previousTurn, ...rest } = state;
      ref.state = { ...rest, acpSessionId: agent.acpSessionId };
    }
    ref.state = { ...ref.state, pid: agent.child.pid, command: agent.command };
    ref.runtimeSessionId = agent.acpSessionId;
    return agent;
  }

  async function runTurn(ctx: TurnContext, ref: RuntimeSessionRef, input: TurnInput, sink: TurnSink): Promise<TurnResult> {
    const driver = new TurnDriver(ctx, sink, log, ref);
    try {
      const state = ref.state as AcpState;
      if (state.unavailable) {
        await driver.emit([{ type: 'session.error', error: { type: 'runtime.unavailable', message: state.unavailable }, sourceId: `acp:${input.turnId}:unavailable` }]);
        return { status: 'error', message: `acp: ${state.unavailable}`, retryable: false };
      }
      const running = live.get(ctx.sessionId);
      const inFlight = running?.exited === null && running.acpSessionId === state.acpSessionId ? running.prompt : null;

      if (input.kind === 'resume') {
        if (!running || !inFlight || inFlight.turnId !== input.turnId) {
          const decided = state.turn?.turnId === input.turnId ? decidedCalls(state.turn.asked ?? [], input.decisions) : [];
          if (decided.length === 0) return await lost(driver, state, input, `turn ${input.turnId} is not waiting on a live agent process (was the worker restarted?)`);
          return await resumeAfterLoss(ctx, ref, driver, input.turnId, decided);
        }
        for (const decision of input.decisions) {
          for (const p of running.pending.filter((x) => x.callId === decision.requestId)) {
            p.answer(choose(p.options, decision.behavior));
            running.pending.splice(running.pending.indexOf(p), 1);
          }
        }
        return await drive(running, driver);
      }

      const same = state.turn?.turnId === input.turnId && state.turn.messageId === input.messageId;
      if (same && running && inFlight?.messageId === input.messageId) return await drive(running, driver); // a retry in this worker
      if (same && state.turn?.sent) return await lost(driver, state, input, 'the prompt was sent to an agent process that is gone');

      const agent = await ensureAgent(ctx, ref);
      if (agent.prompt) await cancelPrompt(agent, driver, 'a new message replaced the turn');
      await driver.saveTurn({ turnId: input.turnId, messageId: input.messageId, sent: true });
      send(agent, input.turnId, input.messageId, input.text);
      log.info('prompt sent', { sessionId: ctx.sessionId, turnId: input.turnId });
      return await drive(agent, driver);
    } catch (err) {
      if (err instanceof SinkFailure) throw err.failure;
      const message = redact(errorText(err), [ctx.secrets.modelApiKey]);
      log.warn('acp turn failed', { sessionId: ctx.sessionId, error: message });
      return { status: 'error', message: `acp: ${message}`, retryable: err instanceof AcpError ? err.retryable : true };
    }
  }

  /** `session/prompt`, whose answer settles the prompt in flight */
  function send(agent: LiveAgent, turnId: string, messageId: string, text: string): void {
    const prompt: PromptInFlight = { turnId, messageId, settled: null, costAtStart: agent.costUsd, segments: 0 };
    agent.prompt = prompt;
    agent.conn.agent.request('session/prompt', { sessionId: agent.acpSessionId, prompt: [{ type: 'text', text }] }).then(
      (response) => settle(agent, prompt, { response }),
      (error: unknown) => settle(agent, prompt, { error: error instanceof Error ? error : new Error(errorText(error)) }),
    );
  }

  /**
   * The agent process that held the turn's calls is gone (the worker restarted, or its host was lost and the session
   * restored here): a new one loads the session (`session/load`), and is told what the person decided
   * (runtimes/kit/lost-calls.ts). The approved call made again is allowed once on its approval. Recorded before it is
   * sent, so a retry never tells it twice (the record then holds no asked calls: the turn is lost).
   */
  async function resumeAfterLoss(ctx: TurnContext, ref: RuntimeSessionRef, driver: TurnDriver, turnId: string, decided: ReturnType<typeof decidedCalls<AskedCall>>): Promise<TurnResult> {
    const { turn, acpSessionId } = ref.state as AcpState & { turn: TurnRecord };
    const agent = await ensureAgent(ctx, ref);
    if (!acpSessionId || agent.acpSessionId !== acpSessionId) return lost(driver, ref.state as AcpState, { kind: 'resume', turnId, decisions: [] }, 'the agent could not load the session its calls were made in');
    await driver.saveTurn({ ...turn, asked: [], carried: decided.filter((d) => d.decision.behavior === 'allow').map((d) => d.call) });
    log.warn('the runtime was lost while calls waited for a person: telling the agent what became of them', { sessionId: ctx.sessionId, decided: decided.length });
    send(agent, turnId, `${turn.messageId}:after-loss`, lossNotice(decided));
    return drive(agent, driver);
  }

  function settle(agent: LiveAgent, prompt: PromptInFlight, outcome: NonNullable<PromptInFlight['settled']>): void {
    prompt.settled = outcome;
    wake(agent);
  }

  /** A turn this worker cannot continue: say so once, never re-send. */
  async function lost(driver: TurnDriver, state: AcpState, input: TurnInput, why: string): Promise<TurnResult> {
    const message = `${why}; agentplane does not send a prompt twice, so this turn is over`;
    await driver.emit([{ type: 'session.error', error: { type: 'runtime.lost', message }, sourceId: `acp:${input.turnId}:lost:${state.acpSessionId ?? ''}` }]);
    return { status: 'error', message: `acp: ${message}`, retryable: false };
  }

  /** Feeds the agent's updates and permission requests to the turn until it ends, needs a person, or is interrupted. */
  async function drive(agent: LiveAgent, driver: TurnDriver): Promise<TurnResult> {
    const prompt = agent.prompt;
    if (!prompt) return { status: 'error', message: 'acp: no prompt in flight', retryable: false };
    driver.prompt = prompt;
    agent.driver = driver;
    wake(agent);
    for (;;) {
      // an earlier attempt of this activity (timed out, still running here) gives way to the newer one
      if (agent.driver !== driver) return { status: 'error', message: 'acp: superseded by a newer attempt of the turn', retryable: true };
      while (agent.inbox.length > 0) {
        const item = agent.inbox.shift()!;
        if (item.kind === 'update') await driver.onUpdate(agent, item.update);
        else await onPermission(agent, driver, item);
      }
      if (driver.sink.signal.aborted && (prompt.settled === null || agent.pending.length > 0)) {
        await cancelPrompt(agent, driver, 'interrupted');
        return { status: 'interrupted' };
      }
      if (prompt.settled) {
        if (agent.prompt === prompt) agent.prompt = null;
        await driver.finish(agent);
        if ('error' in prompt.settled) {
          const message = redact(errorText(prompt.settled.error), [driver.ctx.secrets.modelApiKey]);
          await driver.emit([{ type: 'session.error', error: { type: 'runtime.error', message }, sourceId: `acp:${prompt.turnId}:error` }]);
          return { status: 'error', message: `acp: ${message}`, retryable: false };
        }
        if (prompt.settled.response.stopReason === 'cancelled' || driver.sink.signal.aborted) return { status: 'interrupted' };
        if (prompt.settled.response.stopReason !== 'end_turn') {
          const reason = prompt.settled.response.stopReason;
          await driver.emit([{ type: 'session.error', error: { type: `acp.${reason}`, message: `the agent stopped: ${reason}` }, sourceId: `acp:${prompt.turnId}:stop` }]);
        }
        return { status: 'end_turn' };
      }
      if (agent.pending.length > 0) {
        await driver.flushText();
        // the calls it waits on, for a process that may have to carry them out if this one is lost
        const turn = driver.turn;
        if (turn) await driver.saveTurn({ ...turn, asked: agent.pending.map((p) => ({ requestId: p.callId, toolUseId: p.toolUseId, tool: p.tool, input: p.input })) });
        return { status: 'requires_action', pending: agent.pending.map((p) => ({ requestId: p.callId, toolUseId: p.toolUseId })) };
      }
      await new Promise<void>((resolve) => {
        const done = () => {
          driver.sink.signal.removeEventListener('abort', done);
          agent.waiters.delete(done);
          resolve();
        };
        agent.waiters.add(done);
        if (agent.inbox.length > 0 || prompt.settled || agent.exited !== null || agent.driver !== driver) return done();
        driver.sink.signal.addEventListener('abort', done, { once: true });
      });
    }
  }

  async function onPermission(agent: LiveAgent, driver: TurnDriver, item: Extract<Inbound, { kind: 'permission' }>): Promise<void> {
    await driver.flushText();
    const { params } = item;
    const callId = params.toolCall.toolCallId;
    const call = track(agent, params.toolCall);
    const tool = toolName(call, driver.ctx);
    const input = toolInput(call, params.toolCall.rawInput);
    agent.used.add(callId);
    // the same call as one a person approved before the agent's process was lost: allowed once on that approval
    const turn = driver.turn;
    const carried = takeCarried(turn?.carried, tool, input);
    if (carried && turn) await driver.saveTurn({ ...turn, carried: carried.carried });
    const decision = await driver.decide({ requestId: callId, callId, tool, input, ...(carried ? { approvedAs: carried.approvedAs } : {}) });
    if (decision.action === 'ask') {
      agent.pending.push({ rpcId: item.rpcId, callId, toolUseId: decision.toolUseId, tool, input, options: params.options, answer: item.answer });
      return;
    }
    item.answer(choose(params.options, decision.action));
  }

  /** Stops the prompt in flight: `session/cancel`, pending permissions answered `cancelled`, then wait for its answer. */
  async function cancelPrompt(agent: LiveAgent, driver: TurnDriver, why: string): Promise<void> {
    const prompt = agent.prompt;
    for (const p of agent.pending) p.answer({ outcome: { outcome: 'cancelled' } });
    agent.pending = [];
    if (!prompt) return;
    log.info('cancelling the acp prompt', { sessionId: driver.ctx.sessionId, turnId: prompt.turnId, why });
    await agent.conn.agent.notify('session/cancel', { sessionId: agent.acpSessionId }).catch(() => undefined);
    const deadline = Date.now() + cancelGraceMs;
    while (!prompt.settled && agent.exited === null && Date.now() < deadline) {
      // the agent answers permission requests of the cancelled turn itself; any that still arrive are cancelled
      for (const item of agent.inbox.splice(0)) {
        if (item.kind === 'permission') item.answer({ outcome: { outcome: 'cancelled' } });
        else await driver.onUpdate(agent, item.update);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, Math.max(0, deadline - Date.now()));
        function done() {
          clearTimeout(timer);
          agent.waiters.delete(done);
          resolve();
        }
        agent.waiters.add(done);
        if (agent.inbox.length > 0 || prompt.settled || agent.exited !== null) done();
      });
    }
    if (!prompt.settled) {
      log.warn('the acp agent did not stop its prompt; stopping the process', { sessionId: driver.ctx.sessionId });
      stop(agent);
    }
    if (agent.prompt === prompt) agent.prompt = null;
    await driver.finish(agent);
  }

  function stop(agent: LiveAgent): void {
    for (const p of agent.pending) p.answer({ outcome: { outcome: 'cancelled' } });
    agent.pending = [];
    agent.exited ??= 'stopped';
    agent.conn?.close();
    if (agent.child.pid) signalGroup(agent.child.pid, 'SIGTERM');
    const pid = agent.child.pid;
    const timer = setTimeout(() => pid && signalGroup(pid, 'SIGKILL'), 5_000);
    timer.unref();
    agent.child.once('exit', () => clearTimeout(timer));
    for (const [id, a] of live) if (a === agent) live.delete(id);
  }

  async function close(ref: RuntimeSessionRef): Promise<void> {
    const agent = live.get(ref.sessionId);
    if (agent) {
      stop(agent);
      log.info('acp agent stopped', { sessionId: ref.sessionId });
    } else {
      // an agent started by a worker that is gone would have died with its stdio, but make sure
      const state = ref.state as Partial<AcpState>;
      // (this host's only: a pid recorded on another host names some other process here)
      if (state.pid && state.command && holdsHome(state.pid, layout(ref.sessionId).home)) killGroup(state.pid, state.command);
    }
    // the sandbox, its egress proxy and its model bridge end with the session
    await opts.sandboxes.close(ref.sessionId);
  }

  /**
   * The agent's HOME: for the built-in OpenCode agent, its SQLite session store, which `session/load` reads on any host.
   * Not its caches, logs, nor the shared-memory index SQLite rebuilds (its config comes in its environment).
   */
  function sessionState(sessionId: string) {
    return { path: layout(sessionId).home, ignore: ['.cache/**', '**/log/**', '.local/share/opencode/bin/**', '**/*-shm'] };
  }

  return { kind: descriptor.kind, capabilities: descriptor.capabilities, open, runTurn, close, sessionState };
}

/** The ACP agent an agent definition names (`runtime.config.agent`). */
export function agentName(ctx: TurnContext): string {
  const name = (ctx.agent.runtime.config as { agent?: unknown }).agent;
  if (typeof name !== 'string' || name === '') throw new AcpError('runtime.config.agent must name an ACP agent (e.g. "opencode")', false);
  return name;
}

// ---------------------------------------------------------------------------------------------------------------
// One turn's events

/** What a sink failed with: rethrown as is, so the activity sees the sink's own error. */
class SinkFailure extends Error {
  constructor(readonly failure: unknown) {
    super('sink failed');
  }
}

class AcpError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

/** Turns ACP updates into canonical events for one leg of a turn. */
class TurnDriver {
  prompt: PromptInFlight | null = null;
  private text: { kind: 'agent.message' | 'agent.thinking'; chunks: string[] } | null = null;

  constructor(
    readonly ctx: TurnContext,
    readonly sink: TurnSink,
    private readonly log: AdapterLogger,
    private readonly ref: RuntimeSessionRef,
  ) {}

  /** the turn's record, as checkpointed */
  get turn(): TurnRecord | undefined {
    return (this.ref.state as AcpState).turn;
  }

  async saveTurn(turn: TurnRecord): Promise<void> {
    const next: AcpState = { ...(this.ref.state as AcpState), turn };
    this.ref.state = next;
    await this.checkpoint(next);
  }

  async emit(events: RuntimeEvent[]): Promise<void> {
    if (events.length === 0) return;
    try {
      await this.sink.emit(events);
    } catch (err) {
      throw new SinkFailure(err);
    }
  }

  async checkpoint(state: Record<string, unknown>): Promise<void> {
    try {
      await this.sink.checkpoint(state);
    } catch (err) {
      throw new SinkFailure(err);
    }
  }

  async decide(request: Parameters<TurnSink['decide']>[0]) {
    try {
      return await this.sink.decide(request);
    } catch (err) {
      throw new SinkFailure(err);
    }
  }

  async onUpdate(agent: LiveAgent, update: SessionUpdate): Promise<void> {
    switch (update.sessionUpdate) {
      case 'agent_message_chunk':
      case 'agent_thought_chunk': {
        const kind = update.sessionUpdate === 'agent_message_chunk' ? 'agent.message' : 'agent.thinking';
        if (update.content.type !== 'text') return;
        if (this.text?.kind !== kind) await this.flushText();
        this.text ??= { kind, chunks: [] };
        this.text.chunks.push(update.content.text);
        return;
      }
      case 'tool_call':
      case 'tool_call_update': {
        await this.flushText();
        const call = track(agent, update);
        const status = update.status;
        if ((status === 'completed' || status === 'failed') && !call.done) {
          call.done = true;
          const events: RuntimeEvent[] = [];
          if (!agent.used.has(update.toolCallId)) {
            // a call the agent ran without asking (its own config allowed it): on record, without a decision
            agent.used.add(update.toolCallId);
            events.push({ type: 'agent.tool_use', tool_use_id: update.toolCallId, name: toolName(call, this.ctx), input: toolInput(call, undefined), sourceId: `tool:${update.toolCallId}` });
          }
          const text = redact(resultText(update.content, update.rawOutput), [this.ctx.secrets.modelApiKey]);
          events.push({ type: 'agent.tool_result', tool_use_id: update.toolCallId, content: [{ type: 'text', text }], is_error: status === 'failed', sourceId: `acp:result:${update.toolCallId}` });
          await this.emit(events);
        }
        return;
      }
      case 'usage_update': {
        agent.costUsd = usdCost(update) ?? agent.costUsd;
        return;
      }
      default:
        this.log.debug?.('acp update', { sessionId: this.ctx.sessionId, type: update.sessionUpdate });
    }
  }

  async flushText(): Promise<void> {
    const text = this.text;
    this.text = null;
    if (!text || !this.prompt) return;
    const joined = text.chunks.join('');
    if (!joined.trim()) return;
    const n = this.prompt.segments++;
    await this.emit([{ type: text.kind, content: [{ type: 'text', text: joined }], sourceId: `acp:${this.prompt.turnId}:text:${n}` }]);
  }

  /** The end of the turn: the last text, and one span with the turn's tokens and reported cost. */
  async finish(agent: LiveAgent): Promise<void> {
    await this.flushText();
    const prompt = this.prompt;
    if (!prompt?.settled || !('response' in prompt.settled)) return;
    const usage = (prompt.settled.response as { usage?: Record<string, unknown> | null }).usage ?? null;
    const cost = agent.costUsd !== null && agent.costUsd !== prompt.costAtStart ? agent.costUsd - (prompt.costAtStart ?? 0) : null;
    if (!usage && cost === null) return;
    const tokens = (key: string) => (typeof usage?.[key] === 'number' ? (usage[key] as number) : 0);
    await this.emit([
      {
        type: 'span.model_request_end',
        model: this.ctx.agent.model,
        model_usage: {
          input_tokens: tokens('inputTokens'),
          output_tokens: tokens('outputTokens'),
          cache_read_input_tokens: tokens('cachedReadTokens'),
          cache_creation_input_tokens: tokens('cachedWriteTokens'),
        },
        ...(cost !== null && cost >= 0 ? { cost_usd: cost } : {}),
        is_error: false,
        sourceId: `acp:${prompt.turnId}:usage`,
      },
    ]);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Tool calls

type ToolCallLike = { toolCallId: string; kind?: string | null; title?: string | null; rawInput?: unknown; locations?: Array<{ path: string }> | null } & Record<string, unknown>;

function track(agent: LiveAgent, update: ToolCallLike): CallState {
  let call = agent.calls.get(update.toolCallId);
  if (!call) {
    // OpenCode titles a new call with the tool's own name; later titles describe the call ("echo hi", a path)
    const name = typeof update.name === 'string' ? update.name : (update.title ?? undefined);
    call = { name: name ?? undefined, rawInput: {}, locations: [], done: false };
    agent.calls.set(update.toolCallId, call);
  }
  if (update.kind) call.kind = update.kind;
  if (update.title) call.title = update.title;
  if (isRecord(update.rawInput)) call.rawInput = { ...call.rawInput, ...update.rawInput };
  if (update.locations?.length) call.locations = update.locations.map((l) => l.path);
  return call;
}

const KIND_TOOLS: Record<string, CanonicalTool> = { execute: 'bash', read: 'read', edit: 'edit', search: 'grep', fetch: 'web_fetch' };

/** The canonical tool: the agent's own tool name when it is a known one, else what the ACP `kind` says. */
export function toolName(call: Pick<CallState, 'name' | 'kind'>, ctx?: TurnContext): CanonicalTool {
  const named = call.name && /^[A-Za-z0-9_.:-]{1,64}$/.test(call.name) ? openCodeTool(call.name, ctx) : null;
  if (named && !named.startsWith('other:')) return named;
  const byKind = call.kind ? KIND_TOOLS[call.kind] : undefined;
  if (byKind) return byKind;
  return named ?? `other:${call.kind ?? 'unknown'}`;
}

/** The call's input with the keys policies match on (`command`, `file_path`, `url`); nothing is dropped. */
export function toolInput(call: Pick<CallState, 'rawInput' | 'locations'>, extra: unknown): Record<string, unknown> {
  const input: Record<string, unknown> = { ...call.rawInput, ...(isRecord(extra) ? extra : {}) };
  const path = input.file_path ?? input.filePath ?? input.filepath ?? input.path ?? call.locations[0];
  if (input.file_path === undefined && typeof path === 'string') input.file_path = path;
  if (input.command === undefined && typeof input.cmd === 'string') input.command = input.cmd;
  if (input.url === undefined && typeof input.uri === 'string') input.url = input.uri;
  return input;
}

function resultText(content: ToolCallContent[] | null | undefined, rawOutput: unknown): string {
  const parts: string[] = [];
  for (const block of content ?? []) {
    if (block.type === 'content' && block.content.type === 'text') parts.push(block.content.text);
    if (block.type === 'diff') parts.push(`diff of ${block.path}`);
  }
  if (parts.length > 0) return parts.join('\n');
  if (isRecord(rawOutput)) return String(rawOutput.output ?? rawOutput.error ?? JSON.stringify(rawOutput));
  return typeof rawOutput === 'string' ? rawOutput : '';
}

/** allow → allow_once, deny → reject_once; never an "always" option, so the next call is asked again. */
function choose(options: RequestPermissionRequest['options'], behavior: 'allow' | 'deny'): RequestPermissionResponse {
  const option = options.find((o) => o.kind === (behavior === 'allow' ? 'allow_once' : 'reject_once'));
  if (option) return { outcome: { outcome: 'selected', optionId: option.optionId } };
  // no one-off option: an allow cannot be given without granting more, and a deny is still a deny
  const reject = options.find((o) => o.kind === 'reject_always');
  return reject && behavior === 'deny' ? { outcome: { outcome: 'selected', optionId: reject.optionId } } : { outcome: { outcome: 'cancelled' } };
}

function usdCost(update: { cost?: { amount: number; currency: string } | null }): number | null {
  return update.cost && update.cost.currency.toUpperCase() === 'USD' && Number.isFinite(update.cost.amount) ? update.cost.amount : null;
}

// ---------------------------------------------------------------------------------------------------------------
// Helpers

function wake(agent: LiveAgent): void {
  for (const waiter of [...agent.waiters]) waiter();
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function errorText(err: unknown): string {
  if (err instanceof Error) return err.message;
  if (isRecord(err) && typeof err.message === 'string') return err.message;
  return String(err);
}


/** a key's identity kept in memory only, to notice a rotated key */
function keyHash(key: string | undefined): string {
  return createHash('sha256').update(key ?? '').digest('hex');
}

function withTimeout<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([promise, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new AcpError(message, true)), ms)))]).finally(() => clearTimeout(timer));
}

/** Where an agent runs: its home and workspace as it sees them, and its model endpoint there. */
interface Where {
  home: string;
  workdir: string;
  modelBaseUrl?: string;
  sandboxed: boolean;
}

/** What the adapter needs of an agent's process, on the host (execa) or in a sandbox. */
interface AgentProcess {
  readonly pid?: number;
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  once(event: 'exit', listener: (code: number | null, signal: string | null) => void): unknown;
  once(event: 'error', listener: (err: Error) => void): unknown;
}

/** A sandboxed process as the adapter watches a child: `exit` once the sandbox has ended. */
function sandboxedChild(proc: SandboxProcess): AgentProcess {
  const events = new EventEmitter();
  void proc.exited.then((exit) => events.emit('exit', exit.exitCode, exit.signal));
  return { pid: proc.pid, stdin: proc.stdin ?? null, stdout: proc.stdout ?? null, once: (event: string, listener: (...args: any[]) => void) => events.once(event, listener) } as AgentProcess;
}

/** Stops a recorded agent process group, if that pid still runs the agent's command (pids get reused). */
function killGroup(pid: number, command: string): void {
  try {
    if (readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')[0] !== command) return;
  } catch {
    return; // gone, or no /proc: nothing we can prove is ours
  }
  signalGroup(pid, 'SIGKILL');
}
