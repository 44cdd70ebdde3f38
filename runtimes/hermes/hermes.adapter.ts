/**
 * Hermes Agent (Nous Research) behind the RuntimeAdapter contract: one `hermes gateway run` per agentplane session, its
 * API server on a port inside the session's sandbox, driven through the Runs API: `POST /v1/runs`, `GET /v1/runs/{id}`,
 * `GET /v1/runs/{id}/events` (SSE), `POST /v1/runs/{id}/approval`, `POST /v1/runs/{id}/stop`. Checked against
 * hermes-agent 0.19.0 from PyPI (scripts/ensure-hermes.sh), run for real in the tests.
 *
 * The server. The worker starts it in the session's sandbox (`spawn(..., { persistent: true, serve: [port] })`, like
 * OpenCode's server) and reaches it only through the sandbox's bridge (`sandboxDispatcher`). Its HERMES_HOME and HOME
 * are the session's state (`/state`); its tools run in `/workspace`; the virtualenv is mounted read-only. The agent's
 * `modelProvider` is the LLM, an OpenAI-compatible endpoint like every other runtime's: Hermes's `config.yaml` (in
 * the state, mode 600, never the workspace) names it as a custom provider at the sandbox's model URL, with the model
 * credential as its key and `agent.model` as its model. The API server's key is a random secret per server, which the
 * worker keeps next to the state, outside the sandbox (`server.json`, mode 600), never in `ref.state`, events or logs.
 * The server outlives a killed worker; a new worker makes the sandbox again around it (`keep`) and reattaches. A
 * rotated model key or a changed model restarts it on a turn that finds it idle. `agent.system` goes as
 * `instructions`. Every run carries `session_id: <our session id>`, under which Hermes stores the conversation; 0.19
 * does not load it for a new run, so the run also carries that stored conversation (`GET /api/sessions/{id}/messages`)
 * as `conversation_history`.
 *
 * Governance. Hermes itself asks a person only before "dangerous" terminal commands. To hold every tool call, the
 * server loads the agentplane gate plugin (`runtimes/hermes/gate/`, copied into the state's `plugins/` at every start):
 * a `pre_tool_call` hook that escalates each call to Hermes's approval gate with the call (tool, call id, arguments) in
 * the description, whole (hex-encoded JSON, so Hermes's masking of secret-shaped text cannot change it; a call whose
 * arguments exceed the plugin's limit arrives without them and is refused, as is a call from an older plugin, which cut
 * long arguments). Each `approval.request` goes through `sink.decide`: allow → choice `once`, deny → `deny`
 * (Hermes blocks the call and the model sees the refusal), ask → the turn returns `requires_action` with the run still
 * blocked, and the resume turn posts the decisions and reads on. A dangerous-command prompt for a call already
 * decided is answered with that decision. Without the plugin only dangerous terminal commands reach `sink.decide` and
 * every other call runs unasked, so a deny rule could not hold: a run under any deny (the team's or the agent's) is
 * started only when `GET /v1/toolsets` lists the plugin's toolset, and the turn fails naming the rules otherwise. Under
 * allow and ask rules alone, a call run unasked is recorded with `evaluated_permission: 'allow'`, and a `session.error`
 * (`policy_not_enforced`) names any such call the policy would have asked about.
 *
 * The state is writable from inside (Hermes and every tool it runs share the sandbox's user), so what configures the
 * server is made again by the worker at every start, before anything runs in the sandbox: `config.yaml` rewritten,
 * `plugins/` replaced by the gate alone (root-owned where the worker is root, so nothing inside can add to it), and
 * `.env` (which overrides the environment, HERMES_YOLO_MODE included) and gateway `hooks/` removed. A tool that edits
 * them changes nothing until the next start, which undoes it. HERMES_YOLO_MODE is set off in the environment, so that
 * no top-level key of `config.yaml` written meanwhile can switch it on.
 *
 * What Hermes 0.19's run events carry, and what that costs us: `message.delta`, `tool.started {tool, preview}`,
 * `tool.completed {tool, duration, error}` (no call id, no output: results are recorded without content),
 * `approval.request`, `approval.responded`, `run.completed {output, usage}`, `run.failed`, `run.cancelled`. Frames are
 * `data:` lines only; there is no `id:`, no replay, and one reader per run: the stream is dropped when its reader goes
 * away. Hence:
 * - A run's stream is read by one live reader. When a turn parks on `ask`, its reader is parked in this process (keyed
 *   by run id) and the resume turn picks it up.
 * - A retried turn never sends again: the turn is checkpointed before sending, the send carries
 *   `Idempotency-Key: <messageId>`, and the run id is checkpointed as soon as it is known. With a run id the turn
 *   reattaches: the parked reader if this process has one, else the run's status (`GET /v1/runs/{id}`: a finished
 *   run's output and usage) and a new stream with `Last-Event-ID` (sent when a server gives ids). While streaming, the
 *   status is polled too, so a run whose events went to a dead reader still ends the turn. Events a dead reader took
 *   are lost except for the final output and usage, which come from the status.
 * - Event ids (`sourceId`) are built from the run id and the call id / segment, never from arrival order alone.
 *
 * Usage: `run.completed.usage {input_tokens, output_tokens}` for the whole run becomes one `span.model_request_end`
 * without `cost_usd`; the ledger prices it by `agent.model` (cost 'priced').
 *
 * Neither key (the model's, the API server's) is in `ref.state`, events or errors; neither is the body of a failed
 * answer (its status and error type only: runtimes/kit/egress.ts).
 */
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import { chown, copyFile, mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { denyRuleLabel, unenforceableDenies } from '../../governance/enforceability';
import { evaluatePolicy } from '../../governance/policy';
import { CANONICAL_TOOLS, type CanonicalTool } from '../../governance/types';
import type { AdapterLogger, PermissionDecision, RuntimeAdapter, RuntimeEvent, RuntimeSessionRef, TurnContext, TurnInput, TurnResult, TurnSink } from '../runtime-adapter';
import { createJsonClient, RuntimeApiError } from '../kit/http';
import { describeRequestError } from '../kit/egress';
import { SILENT_LOGGER } from '../kit/log';
import { stopRecordedServers, stopServer } from '../kit/servers';
import { alive } from '../kit/process';
import { decidedCalls, lossNotice, takeCarried, type AskedCall, type CarriedCall } from '../kit/lost-calls';
import { redact } from '../kit/redact';
import { fetchThrough, sandboxDispatcher, UNREACHABLE, type Dispatcher } from '../kit/sandbox/provider';
import { turnSandboxRequest, type SessionSandbox, type SessionSandboxes } from '../kit/session-sandbox';
import { readSseFrames } from '../kit/sse';
import { descriptor } from './descriptor';

/** The Hermes plugin that holds every tool call at the approval gate; the adapter copies it to `$HERMES_HOME/plugins/agentplane_gate`. */
export const HERMES_GATE_PLUGIN_DIR = fileURLToPath(new URL('./gate', import.meta.url));
/** What the gate plugin puts before the call in an approval's description. */
export const HERMES_GATE_MARKER = 'agentplane-gate:';
/** The description format the adapter reads after the marker: `v2:` and the call's JSON in hex (Hermes's masking of
 * secret-shaped text cannot touch hex, so the arguments arrive as the model wrote them). */
const HERMES_GATE_FORMAT = 'v2:';
/** The toolset the gate plugin registers: `GET /v1/toolsets` lists it on a server that loaded the plugin. */
export const HERMES_GATE_TOOLSET = 'agentplane_gate';
const GATE_NAME = 'agentplane_gate';

const TERMINAL = new Set(['completed', 'failed', 'cancelled', 'interrupted']);
/** the API server's port inside a bubblewrap sandbox (its own network namespace: no other session's server is there) */
const SANDBOX_PORT = 8642;
/** Hermes reads the model's context window from the endpoint when its config does not say; the scripted and most
 * OpenAI-compatible endpoints do not report one, and Hermes refuses to run under 64k */
const CONTEXT_LENGTH = 128_000;

export interface HermesAdapterOptions {
  /** the `hermes` binary of a virtualenv (scripts/ensure-hermes.sh; HERMES_BIN) */
  binaryPath: string;
  /** each session's state (HERMES_HOME, the server's log and key file) lives in `<dataDir>/hermes/<sessionId>` */
  dataDir: string;
  /** each session's sandbox: the Hermes server, and every tool it runs, runs in it (never as the worker) */
  sandboxes: SessionSandboxes;
  /** the gate plugin installed into every server (default HERMES_GATE_PLUGIN_DIR; a test gives an empty one) */
  gatePluginDir?: string;
  /** how long a server may take to answer after spawn (default 90 s: Hermes imports a lot of Python) */
  startTimeoutMs?: number;
  /** how often the run's status is polled while its stream is read (default 1000 ms) */
  pollMs?: number;
  /** how long a stream may stay silent after the status says the run ended (default 2000 ms) */
  settleMs?: number;
  /** wait before reopening a stream that broke (default 300 ms) */
  reconnectMs?: number;
  logger?: AdapterLogger;
}

/** Kept next to the session's state, outside the sandbox, mode 0600: how to reach and authenticate to its server. */
interface ServerFile {
  /** the sandbox's outermost process on the host (its process group's leader) */
  pid: number;
  /** the API server's port inside the sandbox */
  port: number;
  /** API_SERVER_KEY */
  key: string;
  /** HMAC under `key` of what the server's config was made from (model key, endpoint, model): tells a change apart without storing the model key */
  configFingerprint: string;
  startedAt: string;
}

/** A tool call of the current run, as far as we know it. `tool` is Hermes's name for it. */
interface CallRecord {
  callId: string;
  tool: string;
  /** ungated: Hermes ran it without asking; asked: waiting for a decision; allowed/denied: the answer sent */
  status: 'ungated' | 'asked' | 'allowed' | 'denied';
  /** Hermes reported `tool.started` / `tool.completed` for it */
  ran: boolean;
  done: boolean;
}

interface TurnRecord {
  turnId: string;
  messageId: string;
  runId: string | null;
  lastEventId: string | null;
  calls: CallRecord[];
  /** calls waiting for a person (requires_action): what a lost server's calls were */
  pending: Array<AskedCall & { callId: string }>;
  /** approved calls the agent was told to make again after its server was lost: each is allowed once on its approval */
  carried?: CarriedCall[];
  /** text segments emitted so far (a segment ends at a tool call) */
  segments: number;
}

interface HermesState extends Record<string, unknown> {
  /** where the server is (no key): for a reader of the ref; the server file is what the adapter trusts */
  server?: { pid: number; port: number };
  turn?: TurnRecord;
}

export class HermesApiError extends RuntimeApiError {}

interface Frame {
  id: string | null;
  event: string;
  data: Record<string, any>;
}

interface RunStatus {
  status: string;
  output?: string;
  usage?: { input_tokens?: number; output_tokens?: number };
  error?: string;
}

/** A run's open stream: read by one turn at a time, parked between an `ask` and its resume. */
interface LiveStream {
  frames: AsyncGenerator<Frame>;
  abort: AbortController;
  /** text of the current segment, not yet emitted */
  text: string;
  next: Promise<IteratorResult<Frame>> | null;
}

function createApi(file: ServerFile, dispatcher: Dispatcher) {
  const client = createJsonClient(`http://127.0.0.1:${file.port}`, file.key, { ids: /\/run_[^/]+/g, error: HermesApiError, fetch: (url, init) => fetchThrough(dispatcher, String(url), init ?? {}) });
  const { root, auth, failure } = client;
  return {
    request: client.request,
    async healthy(): Promise<boolean> {
      try {
        const res = await client.fetch(`${root}/health`, { signal: AbortSignal.timeout(2_000) });
        await res.body?.cancel();
        return res.ok;
      } catch {
        return false;
      }
    },
    async stream(runId: string, lastEventId: string | null): Promise<LiveStream> {
      const abort = new AbortController();
      const res = await client.fetch(`${root}/v1/runs/${runId}/events`, {
        headers: { ...auth(), accept: 'text/event-stream', ...(lastEventId ? { 'last-event-id': lastEventId } : {}) },
        signal: abort.signal,
      });
      if (!res.ok || !res.body) throw await failure(res, 'GET /v1/runs/{id}/events');
      return { frames: readFrames(res.body), abort, text: '', next: null };
    },
  };
}
type Api = ReturnType<typeof createApi>;

async function* readFrames(body: ReadableStream<Uint8Array>): AsyncGenerator<Frame> {
  for await (const frame of readSseFrames(body)) {
    if (frame.data === '') continue; // keepalive and "stream closed" comments
    let data: unknown;
    try {
      data = JSON.parse(frame.data);
    } catch {
      continue;
    }
    if (!data || typeof data !== 'object') continue;
    const d = data as Record<string, any>;
    // 0.19 names the event inside the JSON; an `event:` line (documented for later versions) wins when present
    yield { id: frame.id, event: frame.event ?? String(d.event ?? 'message'), data: d };
  }
}

const TOOL_NAMES: Record<string, CanonicalTool> = {
  terminal: 'bash',
  execute_code: 'bash',
  read_file: 'read',
  write_file: 'write',
  patch: 'edit',
  search_files: 'grep',
  web_search: 'web_search',
  web_extract: 'web_fetch',
  todo: 'todo',
  delegate_task: 'task',
};

export function hermesTool(name: string): CanonicalTool {
  if (TOOL_NAMES[name]) return TOOL_NAMES[name];
  if (name.startsWith('mcp_')) return `mcp:${name.slice(4).replace('_', ':')}` as CanonicalTool;
  if ((CANONICAL_TOOLS as readonly string[]).includes(name)) return name as CanonicalTool;
  return `other:${name}`;
}

/** Hermes's arguments, with the subject under the key the policy matches on (`command`, `path`, `url`, `pattern`). */
function toolInput(tool: string, args: Record<string, unknown>): Record<string, unknown> {
  if (tool === 'execute_code' && typeof args.code === 'string' && args.command === undefined) return { command: args.code, ...args };
  if (tool === 'web_extract' && Array.isArray(args.urls) && typeof args.urls[0] === 'string') return { url: args.urls[0], ...args };
  return args;
}

/**
 * What a sandbox mounts read-only for the `hermes` binary of a virtualenv: the virtualenv, and the interpreter's prefix
 * when it lies outside /usr (which every sandbox has): a pyenv or a python.org build that the venv's python links to.
 */
export function hermesMounts(binary: string): string[] {
  const venv = dirname(dirname(binary));
  let home: string | undefined;
  try {
    home = /^home\s*=\s*(.+)$/m.exec(readFileSync(join(venv, 'pyvenv.cfg'), 'utf8'))?.[1]?.trim();
  } catch {
    return [venv];
  }
  if (!home || !isAbsolute(home)) return [venv];
  const prefix = dirname(realpathSync(home));
  return prefix === '/usr' || prefix.startsWith('/usr/') || prefix === '/' ? [venv] : [venv, prefix];
}

/** Hermes's config for one session's server: the session's model behind the sandbox's bridge, the gate, the workspace. */
function hermesConfig(ctx: TurnContext, modelBaseUrl: string | undefined, workspace: string): string {
  const yaml = (v: string) => JSON.stringify(v); // a JSON string is a YAML scalar
  return [
    '# written by agentplane at every start of this session\'s Hermes server; edits here are undone at the next start',
    'model:',
    '  provider: custom',
    ...(modelBaseUrl ? [`  base_url: ${yaml(modelBaseUrl)}`] : []),
    `  default: ${yaml(ctx.agent.model)}`,
    ...(ctx.secrets.modelApiKey ? [`  api_key: ${yaml(ctx.secrets.modelApiKey)}`] : []),
    `  context_length: ${CONTEXT_LENGTH}`,
    'plugins:',
    `  enabled: [${GATE_NAME}]`,
    'terminal:',
    '  backend: local',
    `  cwd: ${yaml(workspace)}`,
    '',
  ].join('\n');
}

export function createHermesAdapter(opts: HermesAdapterOptions): RuntimeAdapter {
  const timing = { pollMs: opts.pollMs ?? 1000, settleMs: opts.settleMs ?? 2000, reconnectMs: opts.reconnectMs ?? 300 };
  const log: AdapterLogger = opts.logger ?? SILENT_LOGGER;
  const startTimeoutMs = opts.startTimeoutMs ?? 90_000;
  const gatePluginDir = opts.gatePluginDir ?? HERMES_GATE_PLUGIN_DIR;
  /** streams parked on an `ask`, by run id */
  const parked = new Map<string, LiveStream>();
  /** the sessions' sandboxes this worker has opened, and a connection pool into each server */
  const reached = new Map<string, { sandbox: SessionSandbox; port: number; dispatcher: Dispatcher }>();

  function layout(sessionId: string) {
    const root = join(opts.dataDir, 'hermes', sessionId);
    return { root, home: join(root, 'home'), serverFile: join(root, 'server.json'), log: join(root, 'server.log') };
  }


  async function readServerFile(path: string): Promise<ServerFile | null> {
    try {
      return JSON.parse(await readFile(path, 'utf8')) as ServerFile;
    } catch {
      return null;
    }
  }

  /** The session's sandbox, opened around a server that outlived its worker (`keep`) or fresh; the turn's networking. */
  function openSandbox(ctx: TurnContext, keep: boolean): Promise<SessionSandbox> {
    return opts.sandboxes.open(turnSandboxRequest(ctx, { state: layout(ctx.sessionId).home, mounts: hermesMounts(opts.binaryPath), keep }));
  }

  function remember(sessionId: string, sandbox: SessionSandbox, port: number): void {
    const known = reached.get(sessionId);
    if (known?.sandbox === sandbox && known.port === port) return;
    void known?.dispatcher.close();
    reached.set(sessionId, { sandbox, port, dispatcher: sandboxDispatcher(sandbox.sandbox, port) });
  }

  function apiFor(sessionId: string, file: ServerFile): Api {
    const inside = reached.get(sessionId);
    // a server whose sandbox this worker has not opened is unreachable (the request fails, retryably)
    return createApi(file, inside?.port === file.port ? inside.dispatcher : UNREACHABLE);
  }

  function configFingerprint(key: string, ctx: TurnContext): string {
    return createHmac('sha256', key)
      .update([ctx.secrets.modelApiKey ?? '', ctx.agent.modelProvider?.baseUrl ?? '', ctx.agent.model].join('\0'))
      .digest('hex')
      .slice(0, 16);
  }

  /**
   * Makes again what configures the server, in the state the sandbox can write (see the header): nothing in the
   * sandbox runs while this happens (its server is not started yet). Files are created anew (`wx`), so a link planted
   * in their place is never followed.
   */
  async function prepareHome(home: string, config: string): Promise<void> {
    const owner = await stat(home);
    const asRoot = process.getuid?.() === 0;
    for (const name of ['config.yaml', '.env', 'plugins', 'hooks']) await rm(join(home, name), { recursive: true, force: true });
    await writeFile(join(home, 'config.yaml'), config, { mode: 0o600, flag: 'wx' });
    // Hermes reads it as the sandbox's user (the state's owner); 600 keeps it from everyone else
    if (asRoot) await chown(join(home, 'config.yaml'), owner.uid, owner.gid);
    const plugin = join(home, 'plugins', GATE_NAME);
    await mkdir(plugin, { recursive: true, mode: 0o755 });
    for (const name of await readdir(gatePluginDir).catch(() => [] as string[])) {
      if (name.endsWith('.py') || name.endsWith('.yaml')) await copyFile(join(gatePluginDir, name), join(plugin, name));
    }
  }

  /** Starts `hermes gateway run` in the session's sandbox; answers its server file once it answers. */
  async function startServer(ctx: TurnContext): Promise<ServerFile> {
    const dirs = layout(ctx.sessionId);
    // searchable, not listable: the sandbox's user resolves its state below it; the key file stays the worker's
    await mkdir(dirs.root, { recursive: true, mode: 0o711 });
    const sandbox = await openSandbox(ctx, false);
    const inside = sandbox.sandbox.paths;
    await prepareHome(dirs.home, hermesConfig(ctx, sandbox.modelBaseUrl, inside.workspace));
    const key = randomBytes(24).toString('hex');
    const port = sandbox.sandbox.kind === 'none' ? await sandbox.sandbox.port() : SANDBOX_PORT;
    const env = {
      HOME: inside.state,
      HERMES_HOME: inside.state,
      API_SERVER_ENABLED: 'true',
      API_SERVER_KEY: key,
      API_SERVER_HOST: '127.0.0.1',
      API_SERVER_PORT: String(port),
      HERMES_YOLO_MODE: '0',
      NO_COLOR: '1',
      ...sandbox.env,
    };
    const proc = sandbox.sandbox.spawn(opts.binaryPath, ['gateway', 'run'], { env, cwd: inside.workspace, serve: [port], logFile: dirs.log, persistent: true });
    remember(ctx.sessionId, sandbox, port);
    const file: ServerFile = { pid: proc.pid ?? -1, port, key, configFingerprint: configFingerprint(key, ctx), startedAt: new Date().toISOString() };
    const api = apiFor(ctx.sessionId, file);
    try {
      await proc.ready(() => api.healthy(), { timeoutMs: startTimeoutMs, intervalMs: 250 });
    } catch (err) {
      proc.kill();
      throw new Error(`the Hermes server did not start in its sandbox: ${redact((err as Error).message, [key, ctx.secrets.modelApiKey])} (see ${dirs.log})`);
    }
    await rm(dirs.serverFile, { force: true });
    await writeFile(dirs.serverFile, JSON.stringify(file), { mode: 0o600, flag: 'wx' });
    log.info('hermes server started', { sessionId: ctx.sessionId, pid: file.pid, port, sandbox: sandbox.sandbox.kind });
    return file;
  }

  /** The recorded server if it is alive, ours, and runs with the current model config; else null (and it is stopped). */
  async function reusableServer(ctx: TurnContext): Promise<ServerFile | null> {
    const file = await readServerFile(layout(ctx.sessionId).serverFile);
    if (!file) return null;
    if (!isOurProcess(file.pid, file.port)) return null;
    // a server a previous worker started: the sandbox is made again around it, its bridges where they were
    remember(ctx.sessionId, await openSandbox(ctx, !reached.has(ctx.sessionId)), file.port);
    const api = apiFor(ctx.sessionId, file);
    if (!(await api.healthy())) {
      await killGroup(file.pid, file.port);
      return null;
    }
    if (file.configFingerprint !== configFingerprint(file.key, ctx)) {
      // a rotated key or another model takes effect on a turn that finds the server idle; a run in flight keeps it
      const runs = await api.request<{ data?: Array<{ status?: string }> }>('GET', '/v1/runs').catch(() => null);
      const busy = runs?.data?.some((r) => !TERMINAL.has(String(r.status))) ?? false;
      if (!busy) {
        log.info('model settings changed; restarting the hermes server', { sessionId: ctx.sessionId });
        await killGroup(file.pid, file.port);
        // the sandbox's model bridge leads to the old endpoint: the new server gets a sandbox made for the new one
        void reached.get(ctx.sessionId)?.dispatcher.close();
        reached.delete(ctx.sessionId);
        await opts.sandboxes.close(ctx.sessionId);
        return null;
      }
    }
    return file;
  }

  async function server(ctx: TurnContext): Promise<ServerFile> {
    return (await reusableServer(ctx)) ?? (await startServer(ctx));
  }

  return {
    kind: descriptor.kind,
    capabilities: descriptor.capabilities,
    async open(ctx, previous) {
      const file = await server(ctx);
      const state: HermesState = { ...((previous?.state ?? {}) as HermesState), server: { pid: file.pid, port: file.port } };
      return { sessionId: ctx.sessionId, runtimeSessionId: previous?.runtimeSessionId ?? `hermes:${ctx.sessionId}`, state };
    },
    async runTurn(ctx, ref, input, sink) {
      try {
        const file = await readServerFile(layout(ctx.sessionId).serverFile);
        if (!file) return { status: 'error', message: 'the Hermes server is not running (open the session first)', retryable: true };
        // the environment's networking as it is this turn (the sandbox is cached: this only sets the policy)
        remember(ctx.sessionId, await openSandbox(ctx, !reached.has(ctx.sessionId)), file.port);
        return await new Turn(apiFor(ctx.sessionId, file), ctx, ref, sink, parked, timing, log).run(input);
      } catch (err) {
        if (err instanceof HermesApiError) {
          const retryable = err.status >= 500 || err.status === 408 || err.status === 429;
          return { status: 'error', message: err.message, retryable };
        }
        // an unreachable server: open() restarts a dead one and the retried turn reattaches to its run
        if (err instanceof TypeError) return { status: 'error', message: `Hermes API server unreachable: ${describeRequestError(err)}`, retryable: true };
        throw err;
      }
    },
    async close(ref) {
      const runId = (ref.state as HermesState).turn?.runId;
      const live = runId ? parked.get(runId) : undefined;
      if (live && runId) {
        parked.delete(runId);
        live.abort.abort();
      }
      const dirs = layout(ref.sessionId);
      const file = await readServerFile(dirs.serverFile);
      if (file) await killGroup(file.pid, file.port);
      await rm(dirs.serverFile, { force: true });
      void reached.get(ref.sessionId)?.dispatcher.close();
      reached.delete(ref.sessionId);
      await opts.sandboxes.close(ref.sessionId);
      log.info('hermes server stopped', { sessionId: ref.sessionId, pid: file?.pid });
    },
    /**
     * HERMES_HOME: the session store (SQLite and its write-ahead log) with the conversation, memories, skills. Not what
     * every start makes again (`config.yaml`, with the model credential, `plugins/`; `.env` and `hooks/` are removed),
     * nor logs, caches, or the shared-memory index SQLite rebuilds. The server's key file is outside it.
     */
    sessionState: (sessionId) => ({ path: layout(sessionId).home, ignore: ['config.yaml', '.env', 'plugins/**', 'hooks/**', 'logs/**', '**/*-shm', '**/.cache/**', '*_cache/**'] }),
  };
}

/**
 * Stops the Hermes servers started under `dataDir` (tests' teardown, a worker's orderly shutdown when its sessions are
 * not coming back): servers deliberately outlive a crashed worker, so nothing else stops them. `keep` names sessions
 * whose server must stay.
 */
export function stopHermesServers(dataDir: string, keep?: (sessionId: string) => boolean): Promise<number> {
  return stopRecordedServers(join(dataDir, 'hermes'), isOurProcess, keep);
}

/** A recorded pid is only trusted while it still is a sandboxed `hermes gateway` serving the recorded port (pids get reused). */
function isOurProcess(pid: number, port: number): boolean {
  if (!(pid > 0) || !alive(pid)) return false;
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    // (a bubblewrap sandbox's command line shows the command and the bridge to `port`; `none` shows the command)
    return args.some((a) => a.endsWith('/hermes')) && args.includes('gateway') && args.includes('run') && (args.some((a) => a.includes(`:${port}`)) || !args.includes('/usr/bin/bwrap'));
  } catch {
    return existsSync('/proc') ? false : true; // no /proc (macOS): the health check with our key is the proof
  }
}

function killGroup(pid: number, port: number): Promise<void> {
  return stopServer(pid, port, isOurProcess);
}

class Turn {
  private state: HermesState;
  private turn!: TurnRecord;
  /** ungated calls' inputs (only the preview is known), for the record made when they complete; lost with the process */
  private ungated?: Map<string, Record<string, unknown>>;

  constructor(
    private readonly api: Api,
    private readonly ctx: TurnContext,
    private readonly ref: RuntimeSessionRef,
    private readonly sink: TurnSink,
    private readonly parked: Map<string, LiveStream>,
    private readonly timing: { pollMs: number; settleMs: number; reconnectMs: number },
    private readonly log: AdapterLogger,
  ) {
    this.state = { ...ref.state } as HermesState;
  }

  private async save(): Promise<void> {
    this.state = { ...this.state, turn: this.turn };
    await this.sink.checkpoint(this.state);
  }

  async run(input: TurnInput): Promise<TurnResult> {
    const current = this.state.turn;
    if (input.kind === 'resume') {
      if (!current?.runId) return { status: 'error', message: 'no Hermes run is waiting for a decision', retryable: false };
      this.turn = current;
      // the server that held the run is gone (its host was lost; this one runs on the restored state)
      if (!this.parked.has(current.runId) && !(await this.status())) return this.resumeAfterLoss(input.decisions);
      await this.answer(input.decisions);
      return this.follow();
    }
    this.turn = current?.turnId === input.turnId ? current : { turnId: input.turnId, messageId: input.messageId, runId: null, lastEventId: null, calls: [], pending: [], segments: 0 };
    if (this.turn.runId) return this.follow();
    if (this.sink.signal.aborted) return { status: 'interrupted' };
    const unenforced = await this.denialsWithoutGate();
    if (unenforced) {
      this.log.warn('hermes turn refused: the server does not load the agentplane gate', { sessionId: this.ctx.sessionId, reason: unenforced });
      return { status: 'error', message: unenforced, retryable: false };
    }
    await this.save();
    const history = await this.history();
    const created = await this.api.request<{ run_id: string }>('POST', '/v1/runs', this.runBody(input.text, history), { 'idempotency-key': this.turn.messageId });
    this.turn = { ...this.turn, runId: created.run_id };
    await this.save();
    return this.follow();
  }

  /**
   * Hermes refuses a call only when the gate plugin holds it for us: without the plugin every call runs unasked, and a
   * deny rule (the team's or the agent's) would silently do nothing. So a run under any deny is only started on a
   * server that loads the gate; otherwise this says which rules it would ignore (and the turn fails, not retried).
   */
  private async denialsWithoutGate(): Promise<string | null> {
    const policy = this.ctx.agent.toolPolicy;
    const found = unenforceableDenies({ denies: 'none' }, policy.rules);
    if (found.length === 0 && policy.default !== 'deny') return null;
    if (await this.gateLoaded()) return null;
    const teamRules = policy.rules.filter((r) => r.source === 'team').length;
    const named = found.map((f) => (f.rule.source === 'team' ? denyRuleLabel(f, 'team.rules') : denyRuleLabel({ ...f, index: f.index - teamRules }, 'rules')));
    if (policy.default === 'deny') named.push('the default deny');
    return `${named.join(', ')} cannot be enforced on the hermes runtime: the Hermes server does not load the agentplane gate plugin (runtimes/hermes/gate), so it runs tool calls without asking`;
  }

  private async gateLoaded(): Promise<boolean> {
    try {
      const listed = await this.api.request<{ data?: Array<{ name?: string }> }>('GET', '/v1/toolsets');
      return (listed.data ?? []).some((t) => t.name === HERMES_GATE_TOOLSET);
    } catch (err) {
      // a server without the listing cannot show the gate: it counts as absent
      if (err instanceof HermesApiError && err.status === 404) return false;
      throw err;
    }
  }

  /**
   * The session's conversation so far, from Hermes's own session store. A 0.19 run starts from `conversation_history`
   * only (its `session_id` files the messages but does not load them), so each run carries the user and assistant
   * messages Hermes stored for this session.
   */
  private async history(): Promise<Array<{ role: string; content: string }>> {
    let listed: { data?: Array<{ role?: string; content?: unknown }> };
    try {
      listed = await this.api.request('GET', `/api/sessions/${encodeURIComponent(this.ctx.sessionId)}/messages`);
    } catch (err) {
      if (err instanceof HermesApiError && err.status === 404) return []; // the session's first run
      throw err;
    }
    return (listed.data ?? []).flatMap((m) => ((m.role === 'user' || m.role === 'assistant') && typeof m.content === 'string' && m.content ? [{ role: m.role, content: m.content }] : []));
  }

  /**
   * The run that waited for a person died with its server: Hermes keeps a run in its process only. A new run on the
   * restored conversation tells the agent what the person decided (runtimes/kit/lost-calls.ts); the approved call made
   * again is allowed once on its approval. Idempotent by the lost run's id: a retry on this server gets the same run.
   */
  private async resumeAfterLoss(decisions: PermissionDecision[]): Promise<TurnResult> {
    const decided = decidedCalls(this.turn.pending, decisions);
    if (decided.length === 0) return { status: 'error', message: `Hermes run ${this.runId} is gone, and the turn recorded none of the calls it waited on`, retryable: false };
    const lost = this.runId;
    this.log.warn('the runtime was lost while calls waited for a person: telling the agent what became of them', { sessionId: this.ctx.sessionId, runId: lost, decided: decided.length });
    const created = await this.api.request<{ run_id: string }>('POST', '/v1/runs', this.runBody(lossNotice(decided), await this.history()), { 'idempotency-key': `${this.turn.messageId}:after:${lost}` });
    for (const { call, decision } of decided) await this.record(call.callId, decision.behavior, decision.message, lost);
    const carried = decided.filter((d) => d.decision.behavior === 'allow').map((d) => d.call);
    this.turn = { ...this.turn, runId: created.run_id, lastEventId: null, pending: [], carried };
    await this.save();
    return this.follow();
  }

  private runBody(text: string, history: Array<{ role: string; content: string }>): Record<string, unknown> {
    const { agent } = this.ctx;
    return { input: text, session_id: this.ctx.sessionId, ...(history.length > 0 ? { conversation_history: history } : {}), ...(agent.model ? { model: agent.model } : {}), ...(agent.system ? { instructions: agent.system } : {}) };
  }

  private get runId(): string {
    return this.turn.runId!;
  }

  /** post the person's decisions for the calls the run is blocked on */
  private async answer(decisions: PermissionDecision[]): Promise<void> {
    for (const pending of this.turn.pending) {
      const decision = decisions.find((d) => d.requestId === pending.requestId);
      if (!decision) continue;
      await this.reply(pending.callId, decision.behavior, decision.message);
    }
    this.turn = { ...this.turn, pending: this.turn.pending.filter((p) => !decisions.some((d) => d.requestId === p.requestId)) };
    await this.save();
  }

  private async reply(callId: string, behavior: 'allow' | 'deny', message?: string): Promise<void> {
    try {
      await this.api.request('POST', `/v1/runs/${this.runId}/approval`, { choice: behavior === 'allow' ? 'once' : 'deny' });
    } catch (err) {
      // 409: nothing pending any more (answered before a crash, or the run moved on); the record below still holds
      if (!(err instanceof HermesApiError && err.status === 409)) throw err;
    }
    await this.record(callId, behavior, message, this.runId);
  }

  /** the answer a call of run `runId` got, on the turn's record (and, for a denied one, its result) */
  private async record(callId: string, behavior: 'allow' | 'deny', message: string | undefined, runId: string): Promise<void> {
    this.setCall(callId, { status: behavior === 'allow' ? 'allowed' : 'denied' });
    if (behavior === 'deny') {
      // a blocked call produces no tool event in Hermes: its result is the refusal
      await this.sink.emit([{ sourceId: `hermes:${runId}:${callId}:result`, type: 'agent.tool_result', tool_use_id: callId, content: [{ type: 'text', text: message ?? 'denied by policy' }], is_error: true }]);
    }
    await this.save();
  }

  private setCall(callId: string, change: Partial<CallRecord>, tool?: string): void {
    const calls = this.turn.calls.some((c) => c.callId === callId)
      ? this.turn.calls.map((c) => (c.callId === callId ? { ...c, ...change } : c))
      : [...this.turn.calls, { callId, tool: tool ?? 'unknown', status: 'asked' as const, ran: false, done: false, ...change }];
    this.turn = { ...this.turn, calls };
  }

  /** read the run's events (parked, or a new stream) until the turn ends or waits for a person */
  private async follow(): Promise<TurnResult> {
    if (this.turn.pending.length > 0) return this.waiting();
    let live = this.parked.get(this.runId) ?? null;
    this.parked.delete(this.runId);
    if (!live) {
      const status = await this.status();
      if (status && TERMINAL.has(status.status)) return this.finish(status);
    }
    const onAbort = () => live?.abort.abort();
    this.sink.signal.addEventListener('abort', onAbort, { once: true });
    let keep = false;
    try {
      let endedAt: number | null = null;
      for (;;) {
        if (this.sink.signal.aborted) return await this.stop();
        if (!live) {
          try {
            live = await this.api.stream(this.runId, this.turn.lastEventId);
          } catch (err) {
            // 404: 0.19 drops a run's stream once its reader is gone; the status still tells how the run ends
            if (!(err instanceof HermesApiError && err.status === 404)) throw err;
          }
        }
        const step = live ? await this.nextFrame(live) : await delay(this.timing.pollMs).then(() => 'tick' as const);
        if (step === 'tick' || step === 'closed') {
          if (step === 'closed') live = null;
          if (this.sink.signal.aborted) return await this.stop();
          const status = await this.status();
          if (!status) return { status: 'error', message: `Hermes run ${this.runId} is gone`, retryable: false };
          if (TERMINAL.has(status.status)) {
            endedAt ??= Date.now();
            // the stream may still hold the run's last events: let it drain a little before the status decides
            if (!live || Date.now() - endedAt >= this.timing.settleMs) return await this.finish(status);
          }
          if (!live && step === 'closed') await delay(this.timing.reconnectMs);
          continue;
        }
        const outcome = await this.handle(live!, step);
        if (outcome) {
          if (outcome.status === 'requires_action') {
            this.parked.set(this.runId, live!);
            keep = true;
          }
          return outcome;
        }
      }
    } catch (err) {
      if (this.sink.signal.aborted) return await this.stop();
      throw err;
    } finally {
      this.sink.signal.removeEventListener('abort', onAbort);
      if (!keep) live?.abort.abort();
    }
  }

  /** the next frame, or 'tick' when the poll interval passes first, or 'closed' when the stream ended */
  private async nextFrame(live: LiveStream): Promise<Frame | 'tick' | 'closed'> {
    live.next ??= live.frames.next();
    const pending = live.next;
    let timer: NodeJS.Timeout | undefined;
    const tick = new Promise<'tick'>((resolve) => (timer = setTimeout(() => resolve('tick'), this.timing.pollMs)));
    try {
      const result = await Promise.race([pending.then((r) => r, () => ({ done: true, value: undefined }) as IteratorResult<Frame>), tick]);
      if (result === 'tick') return 'tick';
      live.next = null;
      return result.done ? 'closed' : result.value;
    } finally {
      clearTimeout(timer);
    }
  }

  private async status(): Promise<RunStatus | null> {
    try {
      return await this.api.request<RunStatus>('GET', `/v1/runs/${this.runId}`);
    } catch (err) {
      if (err instanceof HermesApiError && err.status === 404) return null;
      throw err;
    }
  }

  private async stop(): Promise<TurnResult> {
    try {
      await this.api.request('POST', `/v1/runs/${this.runId}/stop`, {});
    } catch (err) {
      // 404: the run already finished; there is nothing left to stop
      if (!(err instanceof HermesApiError && err.status === 404)) throw err;
    }
    return { status: 'interrupted' };
  }

  private waiting(): TurnResult {
    return { status: 'requires_action', pending: this.turn.pending.map((p) => ({ requestId: p.requestId, toolUseId: p.toolUseId })) };
  }

  private async flushText(live: LiveStream): Promise<void> {
    const text = live.text.trim();
    live.text = '';
    if (!text) return;
    this.turn = { ...this.turn, segments: this.turn.segments + 1 };
    await this.sink.emit([{ sourceId: `hermes:${this.runId}:text:${this.turn.segments}`, type: 'agent.message', content: [{ type: 'text', text }] }]);
    await this.save();
  }

  /** the run ended: its output and usage (the same source ids whether they came from the stream or the status) */
  private async finish(status: RunStatus): Promise<TurnResult> {
    const parked = this.parked.get(this.runId);
    if (parked) {
      this.parked.delete(this.runId);
      parked.abort.abort();
    }
    const events: RuntimeEvent[] = [];
    if (status.output) events.push({ sourceId: `hermes:${this.runId}:output`, type: 'agent.message', content: [{ type: 'text', text: status.output }] });
    if (status.usage) {
      events.push({
        sourceId: `hermes:${this.runId}:usage`,
        type: 'span.model_request_end',
        model: this.ctx.agent.model,
        is_error: status.status === 'failed',
        model_usage: { input_tokens: num(status.usage.input_tokens), output_tokens: num(status.usage.output_tokens), cache_read_input_tokens: 0, cache_creation_input_tokens: 0 },
      });
    }
    if (status.status === 'failed') events.push({ sourceId: `hermes:${this.runId}:failed`, type: 'session.error', error: { type: 'hermes_run_failed', message: String(status.error ?? 'Hermes run failed') } });
    if (events.length > 0) await this.sink.emit(events);
    if (status.status === 'completed') return { status: 'end_turn' };
    if (status.status === 'cancelled') return { status: 'interrupted' };
    return { status: 'error', message: `Hermes run ${this.runId} ${status.status}: ${status.error ?? 'no detail'}`, retryable: false };
  }

  private async handle(live: LiveStream, frame: Frame): Promise<TurnResult | null> {
    const result = await this.dispatch(live, frame.event, frame.data);
    if (frame.id && !result) {
      this.turn = { ...this.turn, lastEventId: frame.id };
      await this.save();
    }
    return result;
  }

  private async dispatch(live: LiveStream, event: string, d: Record<string, any>): Promise<TurnResult | null> {
    switch (event) {
      case 'message.delta':
        if (typeof d.delta === 'string') live.text += d.delta;
        return null;
      case 'approval.request':
        await this.flushText(live);
        return this.approval(d);
      case 'tool.started': {
        await this.flushText(live);
        const tool = String(d.tool ?? 'unknown');
        const gated = this.turn.calls.find((c) => c.tool === tool && c.status === 'allowed' && !c.ran);
        if (gated) {
          this.setCall(gated.callId, { ran: true });
        } else {
          // not gated (no plugin): Hermes gives only a display preview (for a terminal call, a shortened command)
          const callId = `${this.runId}:${tool}:${this.turn.calls.length}`;
          this.setCall(callId, { status: 'ungated', ran: true }, tool);
          const input = tool === 'terminal' ? { command: String(d.preview ?? '') } : { preview: String(d.preview ?? '') };
          (this.ungated ??= new Map()).set(callId, input);
        }
        await this.save();
        return null;
      }
      case 'tool.completed': {
        const tool = String(d.tool ?? 'unknown');
        const call = this.turn.calls.find((c) => c.tool === tool && c.ran && !c.done && (c.status === 'allowed' || c.status === 'ungated'));
        if (!call) return null;
        this.setCall(call.callId, { done: true });
        const events: RuntimeEvent[] = [];
        const input = call.status === 'ungated' ? (this.ungated?.get(call.callId) ?? {}) : null;
        if (input) {
          const canonical = hermesTool(tool);
          events.push({ sourceId: `tool:${call.callId}`, type: 'agent.tool_use', tool_use_id: call.callId, name: canonical, input, evaluated_permission: 'allow' });
          const verdict = evaluatePolicy(this.ctx.agent.toolPolicy, canonical, input);
          if (verdict.action !== 'allow') {
            events.push({ sourceId: `hermes:${this.runId}:${call.callId}:policy`, type: 'session.error', error: { type: 'policy_not_enforced', message: `Hermes ran ${canonical} without asking although the policy says ${verdict.action} (${verdict.reason}): load the agentplane gate plugin on the Hermes server` } });
          }
        }
        events.push({ sourceId: `hermes:${this.runId}:${call.callId}:result`, type: 'agent.tool_result', tool_use_id: call.callId, content: [], is_error: d.error === true });
        await this.sink.emit(events);
        await this.save();
        return null;
      }
      case 'run.completed':
        await this.flushTail(live, d);
        return this.finish({ status: 'completed', output: typeof d.output === 'string' ? d.output : undefined, usage: d.usage });
      case 'run.failed':
        return this.finish({ status: 'failed', error: String(d.error ?? 'Hermes run failed'), usage: d.usage });
      case 'run.cancelled':
        return this.finish({ status: 'cancelled' });
      default:
        return null;
    }
  }

  /** text after the last tool call is the run's output, emitted by `finish`; anything else still buffered is emitted here */
  private async flushTail(live: LiveStream, d: Record<string, any>): Promise<void> {
    const output = typeof d.output === 'string' ? d.output.trim() : '';
    if (live.text.trim() && live.text.trim() !== output) await this.flushText(live);
    live.text = '';
  }

  private async approval(d: Record<string, any>): Promise<TurnResult | null> {
    const description = String(d.description ?? '');
    let call: { callId: string; tool: string; args: Record<string, unknown> };
    if (description.startsWith(HERMES_GATE_MARKER)) {
      const gated = readGateCall(description.slice(HERMES_GATE_MARKER.length));
      const callId = String(gated.call_id || `${this.runId}:${gated.tool}:${this.turn.calls.length}`);
      const tool = String(gated.tool ?? 'unknown');
      if (gated.refuse) return this.refuse(callId, tool, gated.refuse);
      call = { callId, tool, args: gated.args ?? {} };
    } else {
      // Hermes's own prompt before a dangerous terminal command; the call already started (or was gated by the plugin)
      const running = this.turn.calls.findLast((c) => c.tool === 'terminal' && c.ran && !c.done);
      if (running?.status === 'allowed') {
        await this.api.request('POST', `/v1/runs/${this.runId}/approval`, { choice: 'once' });
        return null;
      }
      call = { callId: running?.callId ?? `${this.runId}:terminal:${this.turn.calls.length}`, tool: 'terminal', args: { command: String(d.command ?? '') } };
    }
    const known = this.turn.calls.find((c) => c.callId === call.callId);
    if (known?.status === 'allowed' || known?.status === 'denied') return null; // answered before a reattach
    this.setCall(call.callId, { status: 'asked' }, call.tool);
    const request = { requestId: call.callId, callId: call.callId, tool: hermesTool(call.tool), input: toolInput(call.tool, call.args) };
    // the same call as one a person approved before the server was lost: allowed once on that approval
    const carried = takeCarried(this.turn.carried, request.tool, request.input);
    if (carried) {
      this.turn = { ...this.turn, carried: carried.carried };
      await this.save();
    }
    const decision = await this.sink.decide({ ...request, ...(carried ? { approvedAs: carried.approvedAs } : {}) });
    if (decision.action === 'ask') {
      this.turn = { ...this.turn, pending: [...this.turn.pending.filter((p) => p.callId !== call.callId), { ...request, toolUseId: decision.toolUseId }] };
      await this.save();
      return this.waiting();
    }
    await this.reply(call.callId, decision.action, decision.message);
    return null;
  }

  /** A gated call the policy must not decide (its arguments did not arrive whole): denied, and recorded as such. */
  private async refuse(callId: string, tool: string, reason: string): Promise<null> {
    const known = this.turn.calls.find((c) => c.callId === callId);
    if (known?.status === 'allowed' || known?.status === 'denied') return null; // answered before a reattach
    this.setCall(callId, { status: 'asked' }, tool);
    this.log.warn('hermes tool call refused', { sessionId: this.ctx.sessionId, runId: this.runId, callId, tool, reason });
    await this.sink.emit([{ sourceId: `hermes:${this.runId}:${callId}:use`, type: 'agent.tool_use', tool_use_id: callId, name: hermesTool(tool), input: {}, evaluated_permission: 'deny' }]);
    await this.reply(callId, 'deny', `refused: ${reason}`);
    return null;
  }
}

/**
 * The call in a gate approval's description (after the marker). Arguments the gate could not pass whole, and the
 * format of an older plugin (which cut long arguments), come back as a reason to refuse the call.
 */
export function readGateCall(body: string): { tool?: string; call_id?: string; args?: Record<string, unknown>; refuse?: string } {
  if (!body.startsWith(HERMES_GATE_FORMAT)) {
    let old: { tool?: string; call_id?: string } = {};
    try {
      old = JSON.parse(body) as typeof old;
    } catch {
      // cut or foreign: only the refusal is certain
    }
    return { tool: old.tool, call_id: old.call_id, refuse: 'the agentplane gate plugin on this Hermes server is outdated and may cut arguments; install the one in runtimes/hermes/gate' };
  }
  const call = JSON.parse(Buffer.from(body.slice(HERMES_GATE_FORMAT.length), 'hex').toString('utf8')) as {
    tool?: string;
    call_id?: string;
    args?: Record<string, unknown>;
    args_bytes?: number;
    max_args_bytes?: number;
  };
  if (call.args === undefined && typeof call.args_bytes === 'number') {
    return { tool: call.tool, call_id: call.call_id, refuse: `the call's arguments are ${call.args_bytes} bytes, more than the ${call.max_args_bytes} the agentplane gate passes whole, so the policy and the approver could not see them` };
  }
  return { tool: call.tool, call_id: call.call_id, args: call.args && typeof call.args === 'object' ? call.args : {} };
}

function num(v: unknown): number {
  const n = typeof v === 'string' ? Number(v) : typeof v === 'number' ? v : 0;
  return Number.isFinite(n) ? n : 0;
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
