/**
 * A session's sandbox as an adapter uses it: the provider's sandbox (./sandbox/) with the session's two ways out
 * already exposed, so that an adapter only spawns.
 *
 * - The egress proxy (./sandbox/egress-proxy.ts) for everything a process inside opens itself: its port is in the
 *   proxy variables of `env`, which every spawn must be given. Its policy is the session's environment's
 *   `config.networking`, replaced at every `open` (the worker reads it at every turn). Each refusal reaches
 *   `onDenied` (→ a `sandbox.egress_denied` event and a metric).
 * - The model endpoint. With the worker's model gateway (gateway/, `gateway`), it is the gateway's server for this
 *   session, exposed in this sandbox only: processes inside are given `modelBaseUrl` (`http://127.0.0.1:<port>/…`, the
 *   path of the provider's base URL) and a session token for a key (the activity swaps them); the provider's host is
 *   not reachable through the proxy at all. Without a gateway (adapter tests): a plain-http endpoint gets a model
 *   bridge at the same kind of address, so model traffic never depends on proxy variables, and an https endpoint keeps
 *   its URL and goes through the egress proxy (CONNECT: end-to-end TLS), with its host allowed whatever
 *   `config.networking` says: a session can always reach its own model.
 *
 * One per session and worker, kept until `close` (the session's runtime is closed, or the worker stops).
 */
import { readdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { allowsHost, DEFAULT_NETWORKING, type Networking } from '../../governance/networking';
import type { TurnContext } from '../runtime-adapter';
import type { EgressGuard } from './egress';
import { runtimeEnv } from './env';
import { startProcess } from './process';
import { socketAnswers, stopRecordedProcess } from './servers';
import { createEgressProxy, createModelBridge, proxyEnv, type EgressDenial, type EgressProxy, type ModelBridge } from './sandbox/egress-proxy';
import type { Sandbox, SandboxKind, SandboxProvider } from './sandbox/provider';
import type { GatewayClient } from '../../gateway/client';

export interface SessionSandboxRequest {
  sessionId: string;
  /** the host directory of the session's workspace (`/workspace` inside) */
  workspace: string;
  /** the host directory of this runtime's state for the session (`/state` inside, HOME) */
  state: string;
  /** what the session may reach this turn */
  networking: Networking;
  /** the session's model endpoint (its model provider's base URL), reachable inside whatever `networking` says */
  modelBaseUrl?: string;
  /** read-only host paths the runtime needs inside (its install), at the same paths */
  mounts?: readonly string[];
  /**
   * the model endpoint (the provider's base URL) of a runtime that calls its model from the worker itself (DeepAgents):
   * with the gateway, the session is served to the worker alone, on a socket outside the sandbox (`workerModel` in the
   * answer); without one, nothing is done with it
   */
  workerModel?: string;
  /**
   * a runtime server of this session outlived the worker that started it and is being reattached: the sandbox is made
   * again around it (SandboxSpec.keep), and a model bridge still running is kept, with whatever it is carrying
   */
  keep?: boolean;
}

/**
 * The sandbox request for a turn: the session, its workspace, the networking its environment has now and its model
 * endpoint, with what the runtime adds (its state directory, its install's mounts, `keep`; a runtime that reaches its
 * model from the worker passes `modelBaseUrl: undefined`).
 */
export function turnSandboxRequest(
  ctx: Pick<TurnContext, 'sessionId' | 'workdir' | 'networking' | 'agent'>,
  runtime: Pick<SessionSandboxRequest, 'state' | 'mounts' | 'keep' | 'modelBaseUrl' | 'workerModel'>,
): SessionSandboxRequest {
  return { sessionId: ctx.sessionId, workspace: ctx.workdir, networking: ctx.networking ?? DEFAULT_NETWORKING, modelBaseUrl: ctx.agent.modelProvider?.baseUrl, ...runtime };
}

export interface SessionSandbox {
  readonly sandbox: Sandbox;
  /** the proxy variables: give them to every process spawned in the sandbox */
  readonly env: Readonly<Record<string, string>>;
  /** the model endpoint as a process inside reaches it (the bridge for http, the URL itself for https) */
  readonly modelBaseUrl: string | undefined;
  /** the gateway as the worker itself reaches it for this session (`workerModel` asked, with a gateway) */
  readonly workerModel?: { baseUrl: string; socketPath: string };
}

export interface SessionSandboxes {
  readonly kind: SandboxKind;
  /** the session's sandbox: prepared at its first call on this worker, its networking replaced at every later one */
  open(req: SessionSandboxRequest): Promise<SessionSandbox>;
  /** ends every process of the session's sandbox and its ways out; its workspace and state stay */
  close(sessionId: string): Promise<void>;
  /** closes every session's sandbox (the worker stops) */
  closeAll(): Promise<void>;
}

export interface SessionSandboxesOptions {
  provider: SandboxProvider;
  /** the platform's address rule: the proxy and the bridge apply it after the session's policy */
  egress: Pick<EgressGuard, 'resolve'>;
  /** bridge sockets go in `<runDir>/<sessionId>` (the worker's, never mounted writable into a sandbox) */
  runDir: string;
  onDenied(sessionId: string, denial: EgressDenial): void;
  /**
   * the model gateway (gateway/client.ts): each session's model endpoint is the gateway daemon's server for it,
   * listening on the socket of the sandbox's `model` bridge (the session must be registered with it first)
   */
  gateway?: Pick<GatewayClient, 'listen' | 'unlisten'>;
}

interface Entry {
  value: SessionSandbox;
  proxy: EgressProxy;
  bridge: ModelBridge | null;
  /** the https model host, always allowed through the proxy */
  modelHost: string | null;
}

/**
 * `baseUrl`'s path and query at `origin` (where the gateway or a bridge serves it), the path as given: a trailing slash
 * or none, since runtimes join paths onto it themselves.
 */
function atOrigin(origin: string, baseUrl: string): string {
  const url = new URL(baseUrl);
  return `${origin}${url.pathname === '/' && !baseUrl.endsWith('/') ? '' : url.pathname}${url.search}`;
}

/** `networking`, with the session's own model host let through. */
function withModelHost(networking: Networking, modelHost: string | null): Networking {
  if (!modelHost || networking.type === 'unrestricted' || allowsHost(networking, modelHost)) return networking;
  return { ...networking, allowed_hosts: [...networking.allowed_hosts, modelHost] };
}

export function createSessionSandboxes(opts: SessionSandboxesOptions): SessionSandboxes {
  const open = new Map<string, Promise<Entry>>();

  async function create(req: SessionSandboxRequest): Promise<Entry> {
    // a fresh sandbox replaces whatever a previous worker left of this session's ways out
    if (!req.keep) await stopModelBridge(join(opts.runDir, req.sessionId));
    const sandbox = await opts.provider.prepare({ sessionId: req.sessionId, workspace: req.workspace, state: req.state, run: join(opts.runDir, req.sessionId), mounts: req.mounts, keep: req.keep });
    const model = req.modelBaseUrl ? new URL(req.modelBaseUrl) : null;
    // through the gateway, the provider's host is the gateway's to reach, never the sandbox's
    const modelHost = model?.protocol === 'https:' && !opts.gateway ? model.hostname : null;
    const proxy = createEgressProxy({ policy: withModelHost(req.networking, modelHost), egress: opts.egress, onDenied: (d) => opts.onDenied(req.sessionId, d) });
    try {
      const env = proxyEnv(await sandbox.expose('egress', proxy.server));
      let bridge: ModelBridge | null = null;
      let modelBaseUrl = req.modelBaseUrl;
      // the path as given (a trailing slash or none: runtimes join paths onto it themselves)
      if (model && opts.gateway) {
        modelBaseUrl = atOrigin(`http://127.0.0.1:${await gatewayEndpoint(opts.gateway, sandbox, req.sessionId, req.modelBaseUrl!)}`, req.modelBaseUrl!);
      } else if (model && model.protocol === 'http:' && sandbox.kind !== 'none') {
        modelBaseUrl = atOrigin(`http://127.0.0.1:${await modelBridge(sandbox, req, model, (b) => (bridge = b))}`, req.modelBaseUrl!);
      }
      let workerModel: SessionSandbox['workerModel'];
      if (req.workerModel && opts.gateway) {
        const socketPath = join(opts.runDir, `${req.sessionId}.model.sock`);
        await opts.gateway.listen(req.sessionId, req.workerModel, { path: socketPath, uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 });
        workerModel = { baseUrl: atOrigin('http://gateway', req.workerModel), socketPath };
      }
      return { value: { sandbox, env, modelBaseUrl, workerModel }, proxy, bridge, modelHost };
    } catch (err) {
      await proxy.close();
      await sandbox.teardown();
      throw err;
    }
  }

  /**
   * The gateway's endpoint inside the sandbox: the daemon listens on the `model` bridge's socket, owned by the sandbox's
   * user, and so outlives this worker with the runtime it serves. A provider without host sockets gets a loopback
   * port of the daemon's.
   */
  async function gatewayEndpoint(gateway: Pick<GatewayClient, 'listen'>, sandbox: Sandbox, sessionId: string, baseUrl: string): Promise<number> {
    const reserved = await sandbox.bridge('model');
    if (!reserved) return (await gateway.listen(sessionId, baseUrl, { port: 0 }))!;
    await gateway.listen(sessionId, baseUrl, { path: reserved.socketPath, uid: reserved.uid, gid: reserved.gid });
    return reserved.port;
  }

  /**
   * The model endpoint inside the sandbox, without a gateway (adapter tests). Where the provider has host sockets, the bridge is a `socat` process of its
   * own on the host, not a server of the worker: a runtime server outlives a crashed worker, and so must the model
   * stream it is reading (a new worker finds the bridge running and keeps it). The address it connects to is checked
   * by the platform's address rule when the bridge starts, and pinned: a later DNS answer cannot move it. Elsewhere
   * (a provider without host sockets) the worker's own bridge serves it.
   */
  async function modelBridge(sandbox: Sandbox, req: SessionSandboxRequest, model: URL, keepServer: (b: ModelBridge) => void): Promise<number> {
    const port = Number(model.port || 80);
    const reserved = await sandbox.bridge('model');
    if (!reserved) {
      const bridge = createModelBridge({ host: model.hostname, port, egress: opts.egress, onDenied: (d) => opts.onDenied(req.sessionId, d) });
      keepServer(bridge);
      return sandbox.expose('model', bridge.server);
    }
    if (req.keep && (await socketAnswers(reserved.socketPath))) return reserved.port;
    const { addresses, refused } = await opts.egress.resolve(model.hostname);
    if (refused || addresses.length === 0) {
      opts.onDenied(req.sessionId, { host: model.hostname, port, reason: refused ?? 'the name does not resolve' });
      throw new Error(`the session's model endpoint ${model.hostname}:${port} is refused: ${refused ?? 'the name does not resolve'}`);
    }
    const { address, family } = addresses[0]!;
    const target = family === 6 ? `TCP6:[${address}]:${port}` : `TCP4:${address}:${port}`;
    const owner = process.getuid?.() === 0 ? `,user=${reserved.uid},group=${reserved.gid}` : '';
    await rm(reserved.socketPath, { force: true });
    const child = startProcess('/usr/bin/socat', [`UNIX-LISTEN:${reserved.socketPath},fork,mode=600${owner}`, target], { cwd: '/', env: runtimeEnv({ HOME: '/' }, { inherit: ['PATH'] }), detached: true });
    child.unref();
    child.catch(() => undefined);
    await writeFile(join(opts.runDir, req.sessionId, 'model.pid'), String(child.pid ?? ''));
    for (let i = 0; i < 200 && !(await socketAnswers(reserved.socketPath)); i++) await sleep(10);
    return reserved.port;
  }

  async function close(sessionId: string): Promise<void> {
    const entry = open.get(sessionId);
    if (!entry) return;
    open.delete(sessionId);
    const found = await entry.catch(() => null);
    if (!found) return;
    await stopModelBridge(join(opts.runDir, sessionId));
    await found.value.sandbox.teardown();
    await opts.gateway?.unlisten(sessionId).catch(() => {});
    await Promise.all([found.proxy.close(), found.bridge?.close()]);
  }

  return {
    kind: opts.provider.kind,
    async open(req) {
      let entry = open.get(req.sessionId);
      if (!entry) {
        entry = create(req);
        open.set(req.sessionId, entry);
        entry.catch(() => open.delete(req.sessionId));
      }
      const found = await entry;
      found.proxy.setPolicy(withModelHost(req.networking, found.modelHost));
      return found.value;
    },
    close,
    async closeAll() {
      await Promise.all([...open.keys()].map(close));
    },
  };
}

/** Stops the session's host-side model bridge, if one is recorded in its run dir and still running. */
async function stopModelBridge(run: string): Promise<void> {
  // only a socat listening in this run dir is ours (pids get reused)
  await stopRecordedProcess(join(run, 'model.pid'), (cmdline) => cmdline.startsWith('/usr/bin/socat') && cmdline.includes(run));
}

/**
 * Stops every session's host-side model bridge under `runDir` (a test's teardown, `npm run dev` clearing what a crashed
 * run left): bridges outlive a crashed worker by design, so nothing else stops those of sessions never reattached.
 */
export async function stopModelBridges(runDir: string): Promise<void> {
  const sessions = await readdir(runDir).catch(() => [] as string[]);
  await Promise.all(sessions.map((id) => stopModelBridge(join(runDir, id))));
}
