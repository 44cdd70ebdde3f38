/**
 * OpenCode behind the RuntimeAdapter contract: one `opencode serve` process per agentplane session.
 *
 * API family: the classic (v1) HTTP API — `POST /session`, `POST /session/{id}/prompt_async`, the `/event` SSE bus,
 * `GET /session/{id}/message`, `GET /permission`, `POST /permission/{id}/reply`, `POST /session/{id}/abort`.
 * The v2 API (`/api/session/{id}/event?after=seq`) replays durably, but in 1.18.33 it reports `cost: 0` on every
 * step (no USD cost to cross-check the ledger's price with), answers `POST /api/session/{id}/wait` with 503, and keeps its
 * permission requests off the durable stream anyway. v1 loses nothing we need on a reattach: every canonical event
 * we emit is derived from a *final* state (a finished text part, a completed or failed tool part, a step-finish
 * part, an assistant message's error), and all of those are in the session history that `GET /session/{id}/message`
 * returns. So the "stream position" of a turn is simply its user message id: a retried activity re-reads the turn's
 * messages (the sink drops what it already has by `sourceId`), lists pending permissions, and follows `/event`.
 *
 * What must stay true:
 * - The prompt is sent at most once. Its OpenCode message id is chosen and checkpointed before sending; a retry
 *   looks that id up in the history and only sends when it is absent.
 * - Every tool call is gated by agentplane: the session is created with a `*: ask` permission rule (session rules are
 *   evaluated last, so a repository's own opencode.json cannot loosen them) and every `permission.asked` goes
 *   through `sink.decide`. A deny is always sent with a message: OpenCode stops the whole turn on a bare reject,
 *   while a reject with feedback hands the refusal to the model, which carries on.
 * - The model API key reaches the server as an environment variable referenced by `{env:…}` in the config; it is
 *   never written to disk, into `ref.state`, events or errors. The server itself requires HTTP basic auth with a
 *   random password kept in a 0600 file next to its data (not in `ref.state`), because `GET /config` shows the
 *   resolved key to anyone who can call it. The server gets a minimal environment, not the worker's.
 * - The server runs in the session's sandbox (runtimes/kit/sandbox/; the only way this adapter starts it), persistent:
 *   it outlives a killed worker, which reattaches to it through the sandbox's bridge; `ref.state.server` says where
 *   it is. Every tool it runs runs there too.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { delimiter, dirname, join } from 'node:path';
import type { ModelPrice } from '../../governance/pricing';
import { SILENT_LOGGER } from '../kit/log';
import { stopRecordedServers, stopServer } from '../kit/servers';
import { alive, holdsHome } from '../kit/process';
import { decidedCalls, lossNotice, takeCarried, type AskedCall, type CarriedCall } from '../kit/lost-calls';
import { redact } from '../kit/redact';
import { fetchThrough, sandboxDispatcher, UNREACHABLE, type Dispatcher } from '../kit/sandbox/provider';
import { turnSandboxRequest, type SessionSandbox, type SessionSandboxes } from '../kit/session-sandbox';
import { readSseFrames } from '../kit/sse';
import type {
  AdapterLogger,
  Decision,
  PermissionRequest,
  RuntimeAdapter,
  RuntimeEvent,
  RuntimeSessionRef,
  TurnContext,
  TurnInput,
  TurnResult,
  TurnSink,
} from '../runtime-adapter';
import { buildOpenCodeConfig, canonicalTool, defaultOpenCodeBinary, OPENCODE_KEY_ENV, OPENCODE_SWITCHES, openCodePrice, PROVIDER_ID } from './config';
import { descriptor } from './descriptor';

export interface OpenCodeAdapterOptions {
  /** the `opencode` binary; default: the one shipped by the `opencode-ai` package, else `opencode` on PATH */
  binaryPath?: string;
  /** runtime state (home, config, server log, OpenCode's own database) lives in `<dataDir>/opencode/<sessionId>` */
  dataDir: string;
  logger?: AdapterLogger;
  /** USD per million tokens OpenCode reports its own cost with (a cross-check: the ledger prices tokens); default: the catalogue */
  prices?: Record<string, ModelPrice>;
  /**
   * each session's sandbox: the server (and every tool it runs) runs in it, persistent, so that it outlives a crashed
   * worker; the only way this adapter starts a process (the `none` provider is the explicit way to run unisolated)
   */
  sandboxes: SessionSandboxes;
  /** how long a server may take to answer after spawn (default 30 s) */
  startTimeoutMs?: number;
  /**
   * how long the session may look idle with its turn unfinished before the turn is called over (default 15 s: a
   * loaded machine can take seconds to persist a prompt it accepted, and calling that "not accepted" loses the turn)
   */
  idleGraceMs?: number;
}

/** Where the runtime is; the only thing `ref.state` needs besides the turn in flight. JSON, no secrets. */
interface ServerLocation {
  pid: number;
  port: number;
}

interface TurnRecord {
  turnId: string;
  /** agentplane's message id for the turn */
  messageId: string;
  /**
   * the OpenCode id the prompt is (or will be) sent under; after a lost runtime, the message that told the agent what
   * became of its calls (`resumedAfterLoss`): the turn's answer is the one to it
   */
  openCodeMessageId: string;
  /** the calls this turn parked for a person, by OpenCode's request id: what a lost runtime's calls were */
  asked?: AskedCall[];
  /** approved calls the agent was told to make again after its runtime was lost: each is allowed once on its approval */
  carried?: CarriedCall[];
  /** set once the agent has been told (the message's OpenCode id): a retry does not tell it twice */
  resumedAfterLoss?: string;
  /** what it was told */
  lossNotice?: string;
}

interface OpenCodeState extends Record<string, unknown> {
  server?: ServerLocation;
  turn?: TurnRecord;
}

/** Kept next to the runtime's data, mode 0600: how to reach and authenticate to the server. */
interface ServerFile extends ServerLocation {
  /** the server runs in the session's sandbox: `port` is inside it, reached through the sandbox's bridge */
  sandboxed?: boolean;
  password: string;
  /** HMAC of the model key under the password: tells a rotated key apart without storing the key */
  keyFingerprint: string;
  startedAt: string;
}

/** while events flow, history is still re-read this often, in case the bus dropped one */
const FULL_RECONCILE_MS = 10_000;
const SERVER_USER = 'opencode';
/** the server's port inside a bubblewrap sandbox (its own network namespace: no other session's server is there) */
const SANDBOX_PORT = 4096;

export function createOpenCodeAdapter(opts: OpenCodeAdapterOptions): RuntimeAdapter {
  const log: AdapterLogger = opts.logger ?? SILENT_LOGGER;
  const binary = opts.binaryPath ?? defaultOpenCodeBinary();
  const startTimeoutMs = opts.startTimeoutMs ?? 30_000;
  const idleGraceMs = opts.idleGraceMs ?? 15_000;

  function layout(sessionId: string) {
    const root = join(opts.dataDir, 'opencode', sessionId);
    const home = join(root, 'home');
    return {
      root,
      home,
      serverFile: join(root, 'server.json'),
      log: join(root, 'server.log'),
    };
  }

  async function readServerFile(path: string): Promise<ServerFile | null> {
    try {
      return JSON.parse(await readFile(path, 'utf8')) as ServerFile;
    } catch {
      return null;
    }
  }

  /** the sessions' sandboxes this worker has opened, and a connection pool into each sandboxed server */
  const sandboxed = new Map<string, { sandbox: SessionSandbox; port: number; dispatcher: Dispatcher }>();

  function clientFor(file: ServerFile, ctx: TurnContext | null, sessionId = ctx?.sessionId): OpenCodeClient {
    const inside = file.sandboxed && sessionId ? sandboxed.get(sessionId) : undefined;
    // a sandboxed server whose sandbox this worker has not opened yet is unreachable (the client says so, retryably)
    const dispatcher = file.sandboxed ? (inside?.port === file.port ? inside.dispatcher : UNREACHABLE) : undefined;
    return new OpenCodeClient(`http://127.0.0.1:${file.port}`, file.password, ctx?.secrets.modelApiKey, dispatcher);
  }

  /** The session's sandbox, opened around a server that outlived its worker (`keep`) or fresh. */
  async function openSandbox(ctx: TurnContext, keep: boolean): Promise<SessionSandbox> {
    return opts.sandboxes.open(turnSandboxRequest(ctx, { state: layout(ctx.sessionId).home, mounts: [dirname(realpathSync(binaryPath()))], keep }));
  }

  function remember(sessionId: string, sandbox: SessionSandbox, port: number): void {
    const known = sandboxed.get(sessionId);
    if (known?.sandbox === sandbox && known.port === port) return;
    void known?.dispatcher.close();
    sandboxed.set(sessionId, { sandbox, port, dispatcher: sandboxDispatcher(sandbox.sandbox, port) });
  }

  function binaryPath(): string {
    return binary.includes('/') ? binary : (findOnPath(binary) ?? binary);
  }

  /** Starts `opencode serve` in the session's sandbox; answers its server file once it answers. */
  async function startSandboxedServer(ctx: TurnContext, password: string, key: string): Promise<ServerFile> {
    const dirs = layout(ctx.sessionId);
    // a new server gets a new sandbox: nothing of a dead one (its bridges, the pooled connections into it) is reused
    void sandboxed.get(ctx.sessionId)?.dispatcher.close();
    sandboxed.delete(ctx.sessionId);
    await opts.sandboxes.close(ctx.sessionId);
    const sandbox = await openSandbox(ctx, false);
    const inside = sandbox.sandbox.paths.state;
    const xdg = {
      XDG_CONFIG_HOME: `${inside}/.config`,
      XDG_DATA_HOME: `${inside}/.local/share`,
      XDG_STATE_HOME: `${inside}/.local/state`,
      XDG_CACHE_HOME: `${inside}/.cache`,
    };
    // the model is reached through the sandbox's bridge, never at the agent's own address
    const bridged: TurnContext = { ...ctx, agent: { ...ctx.agent, modelProvider: ctx.agent.modelProvider && { ...ctx.agent.modelProvider, baseUrl: sandbox.modelBaseUrl ?? ctx.agent.modelProvider.baseUrl } } };
    const config = buildOpenCodeConfig(bridged, openCodePrice(ctx, opts.prices));
    await writeFile(join(dirs.home, 'opencode.json'), `${JSON.stringify(config, null, 2)}\n`);
    const env = {
      HOME: inside,
      ...xdg,
      ...OPENCODE_SWITCHES,
      OPENCODE_CONFIG: `${inside}/opencode.json`,
      OPENCODE_CONFIG_CONTENT: JSON.stringify(config),
      OPENCODE_SERVER_USERNAME: SERVER_USER,
      OPENCODE_SERVER_PASSWORD: password,
      [OPENCODE_KEY_ENV]: key,
      ...sandbox.env,
    };
    const port = sandbox.sandbox.kind === 'none' ? await sandbox.sandbox.port() : SANDBOX_PORT;
    const proc = sandbox.sandbox.spawn(binaryPath(), ['serve', '--hostname', '127.0.0.1', '--port', String(port)], { env, serve: [port], logFile: dirs.log, persistent: true });
    remember(ctx.sessionId, sandbox, port);
    const file: ServerFile = { pid: proc.pid ?? -1, port, password, keyFingerprint: fingerprint(password, key), startedAt: new Date().toISOString(), sandboxed: true };
    const client = clientFor(file, ctx);
    try {
      await proc.ready(() => client.healthy(), { timeoutMs: startTimeoutMs, intervalMs: 150 });
    } catch (err) {
      proc.kill();
      throw new Error(`opencode server did not start in its sandbox: ${redact((err as Error).message, [key, password])} (see ${dirs.log})`);
    }
    await writeFile(dirs.serverFile, JSON.stringify(file), { mode: 0o600 });
    await chmod(dirs.serverFile, 0o600);
    log.info('opencode server started', { sessionId: ctx.sessionId, pid: file.pid, port, sandbox: sandbox.sandbox.kind });
    return file;
  }

  async function startServer(ctx: TurnContext): Promise<ServerFile> {
    const dirs = layout(ctx.sessionId);
    // a definition OpenCode would expand ({env:…}, {file:…}) is refused before anything is started
    buildOpenCodeConfig(ctx, openCodePrice(ctx, opts.prices));
    await mkdir(dirs.root, { recursive: true });
    return startSandboxedServer(ctx, randomBytes(24).toString('hex'), ctx.secrets.modelApiKey ?? '');
  }

  /** The recorded server if it is alive, ours, and runs with the current key; else null (and it is stopped). */
  async function reusableServer(ctx: TurnContext, recorded: ServerLocation | undefined): Promise<ServerFile | null> {
    const file = await readServerFile(layout(ctx.sessionId).serverFile);
    if (!file) {
      // without its password file a recorded server cannot be used; it must not keep writing to the same data
      if (recorded && holdsHome(recorded.pid, layout(ctx.sessionId).home)) await killGroup(recorded.pid, recorded.port);
      return null;
    }
    if (recorded && (recorded.pid !== file.pid || recorded.port !== file.port)) {
      log.warn('recorded server differs from the server file; using the file', { sessionId: ctx.sessionId, recorded, file: { pid: file.pid, port: file.port } });
    }
    if (file.sandboxed && isOurProcess(file.pid, file.port) && !sandboxed.has(ctx.sessionId)) {
      // a server a previous worker started: the sandbox is made again around it, its bridges where they were
      remember(ctx.sessionId, await openSandbox(ctx, true), file.port);
    }
    const client = clientFor(file, ctx);
    if (!isOurProcess(file.pid, file.port) || !(await client.healthy())) {
      await killGroup(file.pid, file.port);
      return null;
    }
    if (file.keyFingerprint !== fingerprint(file.password, ctx.secrets.modelApiKey ?? '')) {
      // a rotated key takes effect on the next turn; a turn in flight (e.g. waiting for approval) keeps its server
      const busy = await client.sessionBusy(null);
      if (!busy) {
        log.info('model key changed; restarting the opencode server', { sessionId: ctx.sessionId });
        await killGroup(file.pid, file.port);
        return null;
      }
    }
    return file;
  }

  async function open(ctx: TurnContext, previous: RuntimeSessionRef | null): Promise<RuntimeSessionRef> {
    const prevState = (previous?.state ?? {}) as OpenCodeState;
    const file = (await reusableServer(ctx, prevState.server)) ?? (await startServer(ctx));
    // the environment's networking as it is this turn
    if (file.sandboxed) await openSandbox(ctx, true);
    const client = clientFor(file, ctx);
    const title = `agentplane ${ctx.sessionId}`;

    let runtimeSessionId = previous?.runtimeSessionId ?? null;
    if (runtimeSessionId && !(await client.sessionExists(runtimeSessionId))) {
      // OpenCode keeps sessions on disk under our data dir; losing one means the data dir was wiped
      log.warn('recorded opencode session is gone; starting a new one', { sessionId: ctx.sessionId, runtimeSessionId });
      runtimeSessionId = null;
    }
    // idempotent on our session id: an open retried before its ref was saved finds the session it created
    runtimeSessionId ??= (await client.findSessionByTitle(title)) ?? (await client.createSession(title));

    const state: OpenCodeState = { ...prevState, server: { pid: file.pid, port: file.port } };
    return { sessionId: ctx.sessionId, runtimeSessionId, state };
  }

  async function runTurn(ctx: TurnContext, ref: RuntimeSessionRef, input: TurnInput, sink: TurnSink): Promise<TurnResult> {
    const file = await readServerFile(layout(ctx.sessionId).serverFile);
    if (!file) return { status: 'error', message: 'the opencode server is not running (open the session first)', retryable: true };
    // (a server that died since open() shows up as an unreachable-server error below, which is retryable)
    const client = clientFor(file, ctx);
    const state = ref.state as OpenCodeState;

    let turn = state.turn;
    if (input.kind === 'message') {
      if (!turn || turn.turnId !== input.turnId || turn.messageId !== input.messageId) {
        // choose the id and record it before anything is sent: a retry finds it and never sends twice
        turn = { turnId: input.turnId, messageId: input.messageId, openCodeMessageId: openCodeMessageId(input.messageId) };
        const next: OpenCodeState = { ...state, turn };
        ref.state = next;
        await sink.checkpoint(next);
      }
    } else if (!turn || turn.turnId !== input.turnId) {
      return { status: 'error', message: `no turn ${input.turnId} to resume on this opencode session`, retryable: false };
    }
    const saveTurn = async (next: TurnRecord) => {
      ref.state = { ...(ref.state as OpenCodeState), turn: next };
      await sink.checkpoint(ref.state);
    };
    if (input.kind === 'resume') {
      try {
        const resumed = await resumeAfterLoss(ctx, client, ref.runtimeSessionId, turn, input, saveTurn);
        if (resumed) [turn, input] = [resumed, { kind: 'resume', turnId: input.turnId, decisions: [] }];
      } catch (err) {
        if (!(err instanceof OpenCodeError)) throw err;
        return { status: 'error', message: `opencode: ${redact(err.message, [ctx.secrets.modelApiKey])}`, retryable: err.retryable };
      }
    }
    const run = new TurnRun({ ctx, client, sessionId: ref.runtimeSessionId, turn, input, sink, log, idleGraceMs, priced: openCodePrice(ctx, opts.prices) !== undefined, saveTurn });
    try {
      const result = await run.execute();
      // what a lost runtime's calls were, should this one be lost while they wait for a person
      if (result.status === 'requires_action') await saveTurn({ ...run.turn, asked: run.askedCalls() });
      return result;
    } catch (err) {
      // failures of the sink (event log, checkpoint, decisions) are the activity's to retry: they propagate
      if (!(err instanceof OpenCodeError)) throw err;
      const message = redact(err.message, [ctx.secrets.modelApiKey]);
      log.warn('opencode turn failed', { sessionId: ctx.sessionId, error: message });
      // an unreachable or failing server is worth a retry: open() restarts a dead one and the turn is reconciled
      // from history, never re-sent
      return { status: 'error', message: `opencode: ${message}`, retryable: err.retryable };
    }
  }

  /**
   * The resume of a turn whose runtime was lost while its calls waited for a person (its host died; the session was
   * restored elsewhere from the snapshot taken when the turn parked). OpenCode keeps the conversation on disk but not the
   * pending requests: restarted, its session is idle, the turn's last message unfinished, and a person's answer has
   * nothing to reply to. So the agent is told, in one message, what became of each call: an approved one did not run
   * and is to be made again (it is then allowed once on that approval), a denied one is not to be made. Answers the turn
   * as it continues (its answer is the one to that message), or null when nothing was lost (the usual resume).
   */
  async function resumeAfterLoss(ctx: TurnContext, client: OpenCodeClient, sessionId: string, turn: TurnRecord, input: Extract<TurnInput, { kind: 'resume' }>, saveTurn: (next: TurnRecord) => Promise<void>): Promise<TurnRecord | null> {
    const tell = (told: TurnRecord) =>
      client.promptAsync(sessionId, {
        messageID: told.resumedAfterLoss,
        parts: [{ type: 'text', text: told.lossNotice ?? '' }],
        model: { providerID: PROVIDER_ID, modelID: ctx.agent.model },
        ...(ctx.agent.system ? { system: ctx.agent.system } : {}),
      });
    if (turn.resumedAfterLoss) {
      // a retry: the agent was told unless the message is not in its history yet
      if (!(await client.messages(sessionId)).some((m) => m.info.id === turn.resumedAfterLoss)) await tell(turn);
      return turn;
    }
    const asked = turn.asked ?? [];
    if (asked.length === 0 || input.decisions.length === 0) return null;
    const pending = new Set((await client.pendingPermissions()).map((p) => p.id));
    if (input.decisions.some((d) => pending.has(d.requestId)) || (await client.sessionBusy(sessionId))) return null;
    const history = await client.messages(sessionId);
    const last = history.filter((m) => m.info.role === 'assistant' && m.info.parentID === turn.openCodeMessageId).at(-1)?.info;
    if (!last || last.time?.completed !== undefined) return null;
    const decided = decidedCalls(asked, input.decisions);
    if (decided.length === 0) return null;
    const told = openCodeMessageId(`${turn.messageId}:resumed:${input.decisions.map((d) => d.requestId).join(',')}`);
    const carried = decided.filter((d) => d.decision.behavior === 'allow').map((d) => d.call);
    const next: TurnRecord = { ...turn, openCodeMessageId: told, resumedAfterLoss: told, lossNotice: lossNotice(decided, 'Tool execution was interrupted'), carried, asked: [] };
    // recorded before it is sent: a retry finds it and never tells the agent twice
    await saveTurn(next);
    log.warn('the runtime was lost while calls waited for a person: telling the agent what became of them', { sessionId: ctx.sessionId, approved: carried.length, denied: decided.length - carried.length });
    await tell(next);
    return next;
  }

  async function close(ref: RuntimeSessionRef): Promise<void> {
    const dirs = layout(ref.sessionId);
    const file = await readServerFile(dirs.serverFile);
    const recorded = (ref.state as OpenCodeState).server;
    // the recorded server only if it is this session's on this host: a ref restored from another host names a pid there
    const target = file ?? (recorded && holdsHome(recorded.pid, dirs.home) ? recorded : undefined);
    if (target) await killGroup(target.pid, target.port);
    await rm(dirs.serverFile, { force: true });
    void sandboxed.get(ref.sessionId)?.dispatcher.close();
    sandboxed.delete(ref.sessionId);
    await opts.sandboxes.close(ref.sessionId);
    log.info('opencode server stopped', { sessionId: ref.sessionId, pid: target?.pid });
  }

  /**
   * OpenCode keeps a session in its SQLite database (`.local/share/opencode/opencode.db`, with its write-ahead log) under
   * the server's home: that is what another worker needs. Its caches, logs and the shared-memory index it rebuilds on
   * open are not, nor the config written afresh at every start (`server.json`, with the server's password, is outside).
   */
  function sessionState(sessionId: string) {
    return { path: layout(sessionId).home, ignore: ['.cache/**', '.local/share/opencode/log/**', '.local/share/opencode/bin/**', '**/*-shm', 'opencode.json'] };
  }

  return { kind: descriptor.kind, capabilities: descriptor.capabilities, open, runTurn, close, sessionState };
}

/**
 * Stops the OpenCode servers started under `dataDir` (tests' teardown, a worker's orderly shutdown when its
 * sessions are not coming back, `npm run dev` clearing what a crashed run left). Servers deliberately outlive a
 * crashed worker, so nothing else stops them. `keep` names sessions whose server must stay (it is reattached).
 */
export function stopOpenCodeServers(dataDir: string, keep?: (sessionId: string) => boolean): Promise<number> {
  return stopRecordedServers(join(dataDir, 'opencode'), isOurProcess, keep);
}

// ---------------------------------------------------------------------------------------------------------------
// One turn

interface TurnRunDeps {
  ctx: TurnContext;
  client: OpenCodeClient;
  sessionId: string;
  turn: TurnRecord;
  input: TurnInput;
  sink: TurnSink;
  log: AdapterLogger;
  idleGraceMs: number;
  /** a price was configured, so OpenCode's `cost` is a real figure to cross-check the ledger with (otherwise it is 0) */
  priced: boolean;
  /** records the turn (a carried approval used) so that a retry sees it */
  saveTurn(next: TurnRecord): Promise<void>;
}

class TurnRun {
  private readonly emitted = new Set<string>();
  /** call ids decided during this run: they already have their `agent.tool_use` */
  private readonly decided = new Set<string>();
  private readonly handledPermissions = new Set<string>();
  private readonly asks: Array<{ requestId: string; toolUseId: string }> = [];
  /** what each call parked for a person was: kept with the turn, in case the runtime is lost while they wait */
  private readonly asked: AskedCall[] = [];
  private current: TurnRecord;
  private readonly messages = new Map<string, MessageInfo>();
  private readonly toolParts = new Map<string, ToolPart>();
  /** our session and its sub-agent sessions: their permission requests are ours to answer */
  private readonly family: Set<string>;
  private idleSince: number | null = null;
  private lastReconcile = 0;
  private stopping = false;
  private outcome: TurnResult | null = null;

  constructor(private readonly d: TurnRunDeps) {
    this.family = new Set([d.sessionId]);
    this.current = d.turn;
  }

  get turn(): TurnRecord {
    return this.current;
  }

  askedCalls(): AskedCall[] {
    return [...this.asked];
  }

  async execute(): Promise<TurnResult> {
    const { client, sink, input, sessionId } = this.d;
    const turn = this.current;
    // subscribe before reading history, so nothing falls between the snapshot and the stream
    const pump = new EventPump(client);
    try {
      await pump.connected();
      if (sink.signal.aborted) return await this.interrupt();
      if (input.kind === 'message') {
        const history = await client.messages(sessionId);
        if (!history.some((m) => m.info.id === turn.openCodeMessageId)) {
          await client.promptAsync(sessionId, {
            messageID: turn.openCodeMessageId,
            parts: [{ type: 'text', text: input.text }],
            model: { providerID: PROVIDER_ID, modelID: this.d.ctx.agent.model },
            ...(this.d.ctx.agent.system ? { system: this.d.ctx.agent.system } : {}),
          });
          this.d.log.info('prompt sent', { sessionId: this.d.ctx.sessionId, turnId: turn.turnId, messageID: turn.openCodeMessageId });
        } else {
          this.d.log.info('prompt already sent; reattaching', { sessionId: this.d.ctx.sessionId, turnId: turn.turnId });
        }
      } else {
        for (const decision of input.decisions) {
          // answered here: a request still listed for a moment after the reply must not be decided again
          this.handledPermissions.add(decision.requestId);
          await this.reply(decision.requestId, decision.behavior === 'allow' ? 'once' : 'reject', decision.behavior === 'deny' ? (decision.message ?? 'denied by a person') : undefined);
        }
      }
      await this.reconcile();
      return await this.loop(pump);
    } finally {
      pump.close();
    }
  }

  private async loop(pump: EventPump): Promise<TurnResult> {
    const { sink } = this.d;
    for (;;) {
      if (this.outcome) return this.outcome;
      const next = await pump.next(1_000, sink.signal);
      if (next === 'aborted') return this.interrupt();
      if (next !== 'tick' && next !== 'reconnected') await this.onEvent(next);
      if (this.outcome) continue;
      if (next === 'reconnected' || Date.now() - this.lastReconcile > FULL_RECONCILE_MS) await this.reconcile();
      else if (next === 'tick') {
        // quiet for a second: cheap checks only (a missed idle, a missed permission request)
        if (await this.d.client.sessionBusy(this.d.sessionId)) await this.settlePermissions();
        else await this.reconcile();
      }
    }
  }

  private async onEvent(event: BusEvent): Promise<void> {
    const p = event.properties ?? {};
    switch (event.type) {
      case 'message.updated': {
        const info = p.info as MessageInfo | undefined;
        if (info?.sessionID === this.d.sessionId) this.messages.set(info.id, info);
        return;
      }
      case 'message.part.updated': {
        const part = p.part as Part | undefined;
        if (!part || part.sessionID !== this.d.sessionId) return;
        const owner = this.messages.get(part.messageID);
        if (owner) await this.emit(this.translatePart(part, owner));
        return;
      }
      case 'permission.asked': {
        const request = p as unknown as PermissionAsked;
        if (this.family.has(request.sessionID)) await this.onPermission(request, true);
        return;
      }
      case 'session.created':
      case 'session.updated': {
        const info = p.info as { id?: string; parentID?: string } | undefined;
        if (info?.id && info.parentID && this.family.has(info.parentID)) this.family.add(info.id);
        return;
      }
      case 'session.idle':
      case 'session.error':
        if (p.sessionID === this.d.sessionId) await this.reconcile();
        return;
      case 'session.status': {
        const status = p.status as { type?: string } | undefined;
        if (p.sessionID === this.d.sessionId && status?.type === 'idle') await this.reconcile();
        return;
      }
      default:
        return;
    }
  }

  /** Re-derive the turn from OpenCode's history and pending permissions; decide whether it is over. */
  private async reconcile(): Promise<void> {
    const { client, sessionId } = this.d;
    const turn = this.current;
    this.lastReconcile = Date.now();
    const history = await client.messages(sessionId);
    const events: RuntimeEvent[] = [];
    for (const m of history) {
      this.messages.set(m.info.id, m.info);
      for (const part of m.parts) events.push(...this.translatePart(part, m.info));
    }
    const turnMessages = history.filter((m) => m.info.role === 'assistant' && m.info.parentID === turn.openCodeMessageId);
    for (const m of turnMessages) events.push(...this.translateError(m.info));
    await this.emit(events);
    if (this.outcome || this.stopping) return;

    const busy = await client.sessionBusy(sessionId);
    if (busy) {
      this.idleSince = null;
      await this.settlePermissions();
      return;
    }
    const user = history.find((m) => m.info.id === turn.openCodeMessageId);
    const last = turnMessages.at(-1)?.info;
    const finished = last?.time?.completed !== undefined && (last.error !== undefined || !['tool-calls', 'unknown', undefined].includes(last.finish));
    if (user && last && finished) {
      this.outcome = this.finalOutcome(last);
      return;
    }
    // idle but not visibly finished: a prompt not yet picked up, or a loop OpenCode stopped on its own
    this.idleSince ??= Date.now();
    if (Date.now() - this.idleSince < this.d.idleGraceMs) return;
    if (!user) this.outcome = { status: 'error', message: 'opencode did not accept the prompt', retryable: false };
    else if (!last) this.outcome = { status: 'error', message: 'opencode did not start the turn', retryable: false };
    else if (last.time?.completed === undefined) this.outcome = { status: 'error', message: 'the opencode server stopped in the middle of the turn', retryable: false };
    else this.outcome = this.finalOutcome(last);
  }

  private finalOutcome(last: MessageInfo): TurnResult {
    if (!last.error) return { status: 'end_turn' };
    if (last.error.name === 'MessageAbortedError') return { status: 'interrupted' };
    return { status: 'error', message: describeError(last.error, this.d.ctx.secrets.modelApiKey), retryable: false };
  }

  private async settlePermissions(): Promise<void> {
    await this.sweepPermissions();
    if (this.asks.length > 0) this.outcome = { status: 'requires_action', pending: [...this.asks] };
  }

  private async sweepPermissions(): Promise<void> {
    const pending = await this.d.client.pendingPermissions();
    for (const request of pending) {
      if (request.sessionID === this.d.sessionId && !this.belongsToTurn(request)) continue;
      if (!this.family.has(request.sessionID)) {
        // a sub-agent session created before this run subscribed: ask OpenCode whose child it is
        const parent = await this.d.client.sessionParent(request.sessionID);
        if (!parent || !this.family.has(parent)) continue;
        this.family.add(request.sessionID);
      }
      await this.onPermission(request, false);
    }
  }

  /** OpenCode keeps requests of aborted turns listed; only calls made by this turn's assistant messages count */
  private belongsToTurn(request: PermissionAsked): boolean {
    const owner = request.tool ? this.messages.get(request.tool.messageID) : undefined;
    return owner === undefined || owner.parentID === this.current.openCodeMessageId;
  }

  private async onPermission(request: PermissionAsked, sweepAfterAsk: boolean): Promise<void> {
    if (this.handledPermissions.has(request.id) || this.stopping) return;
    this.handledPermissions.add(request.id);
    const callId = request.tool?.callID ?? request.id;
    // the part we hold may be from before its arguments arrived (`pending`, input {}); the server has it running
    let part = this.toolParts.get(callId);
    if ((!part || !hasKeys(part.state?.input)) && request.tool?.messageID) part = (await this.d.client.toolPart(request.sessionID, request.tool.messageID, callId)) ?? part;
    const nativeName = part?.tool ?? request.permission;
    const permissionRequest: PermissionRequest = {
      requestId: request.id,
      callId,
      tool: canonicalTool(nativeName, this.d.ctx),
      input: normaliseInput(nativeName, hasKeys(part?.state?.input) ? part.state.input : (request.metadata ?? {})),
    };
    // the same call as one a person approved before the runtime was lost: allowed once on that approval
    const carried = takeCarried(this.current.carried, permissionRequest.tool, permissionRequest.input);
    if (carried) {
      permissionRequest.approvedAs = carried.approvedAs;
      this.current = { ...this.current, carried: carried.carried };
      await this.d.saveTurn(this.current);
    }
    const decision: Decision = await this.d.sink.decide(permissionRequest);
    this.decided.add(callId);
    if (decision.action === 'ask') {
      this.asks.push({ requestId: request.id, toolUseId: decision.toolUseId });
      this.asked.push({ requestId: request.id, toolUseId: decision.toolUseId, tool: permissionRequest.tool, input: permissionRequest.input });
      // collect every other call waiting at this moment (parallel tool calls), then hand the turn back
      if (sweepAfterAsk) await this.sweepPermissions();
      this.outcome = { status: 'requires_action', pending: [...this.asks] };
    } else if (decision.action === 'allow') {
      await this.reply(request.id, 'once');
    } else {
      await this.reply(request.id, 'reject', decision.message ?? 'denied by agentplane policy');
    }
  }

  private async reply(requestId: string, reply: 'once' | 'reject', message?: string): Promise<void> {
    // a request answered already (a retried resume) or gone with an aborted turn is not an error
    await this.d.client.replyPermission(requestId, reply, message);
  }

  private async interrupt(): Promise<TurnResult> {
    const { client, sessionId } = this.d;
    this.stopping = true;
    await client.abort(sessionId);
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && (await client.sessionBusy(sessionId))) await sleep(100);
    // OpenCode keeps permission requests of an aborted turn listed; clear ours so nothing waits on them
    for (const request of await client.pendingPermissions()) {
      if (this.family.has(request.sessionID)) await client.replyPermission(request.id, 'reject', 'the turn was interrupted');
    }
    await this.reconcile();
    return { status: 'interrupted' };
  }

  private translatePart(part: Part, owner: MessageInfo): RuntimeEvent[] {
    if (part.type === 'tool' && part.callID) this.toolParts.set(part.callID, part as ToolPart);
    if (owner.role !== 'assistant' || owner.parentID !== this.current.openCodeMessageId) return [];
    switch (part.type) {
      case 'text':
        if (part.synthetic || part.ignored || part.time?.end === undefined || !part.text) return [];
        return [{ type: 'agent.message', content: [{ type: 'text', text: part.text }], sourceId: `text:${part.id}` }];
      case 'reasoning':
        if (part.time?.end === undefined || !part.text) return [];
        return [{ type: 'agent.thinking', content: [{ type: 'text', text: part.text }], sourceId: `reasoning:${part.id}` }];
      case 'tool': {
        const tool = part as ToolPart;
        const status = tool.state?.status;
        if (status !== 'completed' && status !== 'error') return [];
        const events: RuntimeEvent[] = [];
        if (!this.decided.has(tool.callID)) {
          // ran without a permission request through this run (ungated, or decided by an earlier attempt, in
          // which case the sink already has this event under the same source id and drops it)
          events.push({
            type: 'agent.tool_use',
            tool_use_id: tool.callID,
            name: canonicalTool(tool.tool, this.d.ctx),
            input: normaliseInput(tool.tool, tool.state?.input ?? {}),
            evaluated_permission: 'allow',
            sourceId: `tool:${tool.callID}`,
          });
        }
        const text = status === 'completed' ? (tool.state?.output ?? '') : (tool.state?.error ?? 'tool failed');
        events.push({
          type: 'agent.tool_result',
          tool_use_id: tool.callID,
          content: [{ type: 'text', text: redact(text, [this.d.ctx.secrets.modelApiKey]) }],
          is_error: status === 'error',
          sourceId: `tool_result:${tool.callID}`,
        });
        return events;
      }
      case 'step-finish': {
        const t = part.tokens;
        return [
          {
            type: 'span.model_request_end',
            model: owner.modelID ?? this.d.ctx.agent.model,
            model_usage: {
              input_tokens: t?.input ?? 0,
              // reasoning tokens are billed as output
              output_tokens: (t?.output ?? 0) + (t?.reasoning ?? 0),
              cache_read_input_tokens: t?.cache?.read ?? 0,
              cache_creation_input_tokens: t?.cache?.write ?? 0,
            },
            ...(this.d.priced && typeof part.cost === 'number' ? { cost_usd: part.cost } : {}),
            is_error: false,
            sourceId: `step:${part.id}`,
          },
        ];
      }
      default:
        return [];
    }
  }

  private translateError(info: MessageInfo): RuntimeEvent[] {
    if (!info.error || info.time?.completed === undefined) return [];
    return [
      {
        type: 'session.error',
        error: { type: info.error.name ?? 'UnknownError', message: describeError(info.error, this.d.ctx.secrets.modelApiKey) },
        sourceId: `error:${info.id}`,
      },
    ];
  }

  private async emit(events: RuntimeEvent[]): Promise<void> {
    const fresh = events.filter((e) => !this.emitted.has(e.sourceId));
    if (fresh.length === 0) return;
    await this.d.sink.emit(fresh);
    for (const e of fresh) this.emitted.add(e.sourceId);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// OpenCode's HTTP API, the parts we use

interface MessageInfo {
  id: string;
  sessionID: string;
  role: 'user' | 'assistant';
  parentID?: string;
  modelID?: string;
  finish?: string;
  time?: { created?: number; completed?: number };
  error?: { name?: string; data?: { message?: string; statusCode?: number; isRetryable?: boolean } };
}

interface Part {
  id: string;
  sessionID: string;
  messageID: string;
  type: string;
  text?: string;
  synthetic?: boolean;
  ignored?: boolean;
  time?: { start?: number; end?: number };
  callID?: string;
  tool?: string;
  state?: ToolState;
  tokens?: { input?: number; output?: number; reasoning?: number; cache?: { read?: number; write?: number } };
  cost?: number;
}

interface ToolState {
  status?: 'pending' | 'running' | 'completed' | 'error';
  input?: Record<string, unknown>;
  output?: string;
  error?: string;
}

type ToolPart = Part & { callID: string; tool: string };

interface PermissionAsked {
  id: string;
  sessionID: string;
  permission: string;
  patterns?: string[];
  metadata?: Record<string, unknown>;
  tool?: { messageID: string; callID: string };
}

interface BusEvent {
  id?: string;
  type: string;
  properties?: Record<string, unknown>;
}

/** Something OpenCode's server did or failed to do; `retryable` when trying again can help. */
class OpenCodeError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

class OpenCodeClient {
  private readonly auth: string;

  constructor(
    readonly baseUrl: string,
    password: string,
    private readonly secret: string | undefined,
    /** how connections reach a server in a sandbox; absent: the host's loopback */
    private readonly dispatcher?: Dispatcher,
  ) {
    this.auth = `Basic ${Buffer.from(`${SERVER_USER}:${password}`).toString('base64')}`;
  }

  /** undici's fetch with the sandbox's dispatcher, or the platform's */
  private fetch(url: string, init: RequestInit): Promise<Response> {
    return fetchThrough(this.dispatcher, url, init);
  }

  async request<T>(method: string, path: string, body?: unknown, timeoutMs = 15_000): Promise<{ status: number; data: T | null }> {
    let res: Response;
    try {
      res = await this.fetch(`${this.baseUrl}${path}`, {
        method,
        headers: { authorization: this.auth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new OpenCodeError(`${method} ${path}: ${(err as Error).message}`, true);
    }
    const text = await res.text();
    let data: T | null = null;
    if (text) {
      try {
        data = JSON.parse(text) as T;
      } catch {
        data = null;
      }
    }
    return { status: res.status, data };
  }

  private async ok<T>(method: string, path: string, body?: unknown): Promise<T> {
    const { status, data } = await this.request<T>(method, path, body);
    if (status < 200 || status >= 300) {
      const detail = redact(JSON.stringify(data ?? {}).slice(0, 300), [this.secret]);
      throw new OpenCodeError(`${method} ${path} answered ${status} ${detail}`, status >= 500);
    }
    return data as T;
  }

  async healthy(): Promise<boolean> {
    try {
      const { status } = await this.request('GET', '/global/health', undefined, 1_500);
      return status === 200;
    } catch {
      return false;
    }
  }

  async sessionExists(id: string): Promise<boolean> {
    const { status } = await this.request('GET', `/session/${encodeURIComponent(id)}`);
    return status === 200;
  }

  async sessionParent(id: string): Promise<string | null> {
    const { status, data } = await this.request<{ parentID?: string }>('GET', `/session/${encodeURIComponent(id)}`);
    return status === 200 ? (data?.parentID ?? null) : null;
  }

  async findSessionByTitle(title: string): Promise<string | null> {
    const sessions = await this.ok<Array<{ id: string; title?: string; parentID?: string }>>('GET', '/session');
    return sessions.find((s) => s.title === title && !s.parentID)?.id ?? null;
  }

  async createSession(title: string): Promise<string> {
    // Session rules are evaluated after the config's and the agent's, and the last match wins: `*: ask` here means
    // every call comes to agentplane whatever a repository's opencode.json says. The `question` tool needs a
    // person to type an answer through OpenCode's own UI, which agentplane does not have, so it is off.
    const session = await this.ok<{ id: string }>('POST', '/session', {
      title,
      permission: [
        { permission: '*', pattern: '*', action: 'ask' },
        { permission: 'question', pattern: '*', action: 'deny' },
      ],
    });
    return session.id;
  }

  messages(sessionId: string): Promise<Array<{ info: MessageInfo; parts: Part[] }>> {
    return this.ok('GET', `/session/${encodeURIComponent(sessionId)}/message`);
  }

  async toolPart(sessionId: string, messageId: string, callId: string): Promise<ToolPart | undefined> {
    const { status, data } = await this.request<{ parts: Part[] }>('GET', `/session/${encodeURIComponent(sessionId)}/message/${encodeURIComponent(messageId)}`);
    if (status !== 200) return undefined;
    return data?.parts.find((p): p is ToolPart => p.type === 'tool' && p.callID === callId);
  }

  async promptAsync(sessionId: string, body: Record<string, unknown>): Promise<void> {
    await this.ok('POST', `/session/${encodeURIComponent(sessionId)}/prompt_async`, body);
  }

  /** busy or retrying; `null` = any session of this server */
  async sessionBusy(sessionId: string | null): Promise<boolean> {
    const statuses = await this.ok<Record<string, { type?: string }>>('GET', '/session/status');
    const busy = (s: { type?: string } | undefined) => s !== undefined && s.type !== 'idle';
    return sessionId === null ? Object.values(statuses).some(busy) : busy(statuses[sessionId]);
  }

  async pendingPermissions(): Promise<PermissionAsked[]> {
    return (await this.ok<PermissionAsked[]>('GET', '/permission')) ?? [];
  }

  async replyPermission(requestId: string, reply: 'once' | 'reject', message?: string): Promise<void> {
    const { status } = await this.request('POST', `/permission/${encodeURIComponent(requestId)}/reply`, { reply, ...(message ? { message } : {}) });
    if (status >= 500) throw new OpenCodeError(`POST /permission/${requestId}/reply answered ${status}`, true);
  }

  async abort(sessionId: string): Promise<void> {
    await this.request('POST', `/session/${encodeURIComponent(sessionId)}/abort`);
  }

  /** `GET /event` as a stream of parsed frames */
  async subscribe(signal: AbortSignal): Promise<AsyncGenerator<BusEvent>> {
    let res: Response;
    try {
      res = await this.fetch(`${this.baseUrl}/event`, { headers: { authorization: this.auth, accept: 'text/event-stream' }, signal });
    } catch (err) {
      throw new OpenCodeError(`GET /event: ${(err as Error).message}`, true);
    }
    if (res.status !== 200 || !res.body) throw new OpenCodeError(`GET /event answered ${res.status}`, res.status >= 500 || res.status === 401);
    return readSse(res.body);
  }
}

async function* readSse(body: ReadableStream<Uint8Array>): AsyncGenerator<BusEvent> {
  for await (const frame of readSseFrames(body)) {
    if (!frame.data) continue;
    try {
      yield JSON.parse(frame.data) as BusEvent;
    } catch {
      // a frame we cannot read is skipped; reconciliation from history covers what it carried
    }
  }
}

/**
 * Follows `/event` in the background and hands frames to the turn loop one at a time. A dropped stream is
 * reopened; the loop then gets `reconnected` and re-reads history, which covers whatever was missed meanwhile.
 */
class EventPump {
  private readonly queue: Array<BusEvent | 'reconnected'> = [];
  private wake: (() => void) | null = null;
  private readonly stop = new AbortController();
  private firstConnect: Promise<void>;

  constructor(private readonly client: OpenCodeClient) {
    this.firstConnect = this.run();
    // the first connection failing surfaces through connected(); later failures only trigger reconnects
    this.firstConnect.catch(() => {});
  }

  private run(): Promise<void> {
    return new Promise<void>((resolveConnected, rejectConnected) => {
      let connectedOnce = false;
      const loop = async () => {
        while (!this.stop.signal.aborted) {
          try {
            const stream = await this.client.subscribe(this.stop.signal);
            if (!connectedOnce) {
              connectedOnce = true;
              resolveConnected();
            } else {
              this.push('reconnected');
            }
            for await (const event of stream) this.push(event);
          } catch (err) {
            if (!connectedOnce) {
              rejectConnected(err);
              return;
            }
          }
          if (!this.stop.signal.aborted) await sleep(300);
        }
      };
      void loop();
    });
  }

  connected(): Promise<void> {
    return this.firstConnect;
  }

  private push(item: BusEvent | 'reconnected'): void {
    if (item !== 'reconnected' && (item.type === 'server.heartbeat' || item.type === 'plugin.added')) return;
    this.queue.push(item);
    this.wake?.();
  }

  async next(timeoutMs: number, signal: AbortSignal): Promise<BusEvent | 'tick' | 'reconnected' | 'aborted'> {
    if (signal.aborted) return 'aborted';
    const queued = this.queue.shift();
    if (queued) return queued;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.wake = null;
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      signal.addEventListener('abort', done, { once: true });
      this.wake = done;
    });
    if (signal.aborted) return 'aborted';
    return this.queue.shift() ?? 'tick';
  }

  close(): void {
    this.stop.abort();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Names and inputs

/** The keys policies match on (`command`, `file_path`, `url`) exist where they apply; the rest is kept. */
export function normaliseInput(name: string, input: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...input };
  const path = input.filePath ?? input.filepath ?? input.path;
  if (out.file_path === undefined && typeof path === 'string' && ['read', 'write', 'edit', 'multiedit', 'patch', 'list', 'external_directory'].includes(name)) {
    out.file_path = path;
  }
  if (out.file_path === undefined && typeof (input.filePath ?? input.filepath) === 'string') out.file_path = input.filePath ?? input.filepath;
  if (name === 'bash' && out.command === undefined && typeof input.cmd === 'string') out.command = input.cmd;
  if ((name === 'webfetch' || name === 'websearch') && out.url === undefined && typeof input.uri === 'string') out.url = input.uri;
  return out;
}

/**
 * OpenCode message ids are `msg_` + 12 hex digits of (ms × 4096 + counter) + 14 random base62 characters, and
 * OpenCode sorts by them. Ours keeps that shape with the time of the first attempt (recorded in the checkpoint
 * before sending, so a retry reuses it) and a suffix derived from agentplane's message id.
 */
export function openCodeMessageId(messageId: string, now = Date.now()): string {
  const time = ((BigInt(now) * 0x1000n + 1n) & 0xffffffffffffn).toString(16).padStart(12, '0');
  const alphabet = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
  const digest = createHash('sha256').update(`agentplane:${messageId}`).digest();
  let suffix = '';
  for (let i = 0; i < 14; i++) suffix += alphabet[(digest[i] ?? 0) % 62];
  return `msg_${time}${suffix}`;
}

function hasKeys(value: Record<string, unknown> | undefined): value is Record<string, unknown> {
  return value !== undefined && Object.keys(value).length > 0;
}

function describeError(error: NonNullable<MessageInfo['error']>, secret: string | undefined): string {
  const name = error.name ?? 'UnknownError';
  const detail = error.data?.message ? `: ${error.data.message}` : '';
  return redact(`${name}${detail}`.slice(0, 500), [secret]);
}


// ---------------------------------------------------------------------------------------------------------------
// Processes

function fingerprint(password: string, key: string): string {
  return createHmac('sha256', password).update(key).digest('hex').slice(0, 16);
}

/** A recorded pid is only trusted while it still is an `opencode serve` on the recorded port (pids get reused). */
function isOurProcess(pid: number, port: number): boolean {
  if (!(pid > 0) || !alive(pid)) return false;
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return args.includes('serve') && args.includes(String(port));
  } catch {
    return true; // no /proc (macOS): the health check with our password is the proof
  }
}

function killGroup(pid: number, port: number): Promise<void> {
  return stopServer(pid, port, isOurProcess);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}


/** `name` on the worker's PATH, as an absolute path (a sandbox mounts the directory it is in). */
function findOnPath(name: string): string | null {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir && existsSync(join(dir, name))) return join(dir, name);
  }
  return null;
}
