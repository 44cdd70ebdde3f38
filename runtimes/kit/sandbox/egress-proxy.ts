/**
 * A sandbox's only ways out, both run by the worker and handed to the sandbox with `Sandbox.expose`:
 *
 * - The egress proxy: an HTTP proxy for one session. Plain HTTP requests in absolute form (`GET http://host/path`)
 *   are forwarded; HTTPS goes through `CONNECT host:443` as an opaque tunnel (end-to-end TLS: the proxy sees the host
 *   and port, never the content). Each host:port is decided twice: by the session's networking policy (the host name
 *   as the client asked for it, before any DNS lookup), then by the platform's address rule (runtimes/kit/egress.ts:
 *   no loopback, private, link-local, metadata or other internal ranges, unless the operator allowed a range) on every
 *   address the name resolves to. The connection then goes to one of those checked addresses, never to a second
 *   lookup's answer. A refusal answers 403 and calls `onDenied` with the host and port (→ a `sandbox.egress_denied`
 *   event and a metric).
 * - The model bridge: raw TCP to one host:port (the session's model provider, later the gateway), so a runtime can
 *   be given `http://127.0.0.1:<port>` as its base URL and never depend on proxy variables. The address rule is
 *   applied at each connection with the same operator allowances, so a name that moves to a refused address after the
 *   turn checked it is refused here too. It forwards bytes: right for an http endpoint (a local model, the gateway);
 *   an https provider needs the gateway's HTTP-aware forwarding (TLS and the Host header), which this is not.
 *
 * Both stream: nothing is buffered beyond what a socket holds, a tunnel's two sides are closed together, a connect
 * that does not complete in `connectTimeoutMs` fails, and a connection idle for `idleTimeoutMs` is closed.
 */
import { createServer as createHttpServer, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect as netConnect, createServer as createNetServer, isIP, type Server, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { allowsHost, normaliseHost, type Networking } from '../../../governance/networking';
import type { EgressGuard } from '../egress';

export interface EgressDenial {
  host: string;
  port: number;
  /** why, in words a tenant can act on (never an address the platform resolved a name to) */
  reason: string;
}

/** The proxy variables a sandboxed process gets, pointing at the egress proxy's port inside. */
export function proxyEnv(port: number): Record<string, string> {
  const url = `http://127.0.0.1:${port}`;
  // Loopback inside a sandbox is the sandbox's own (its network namespace): the model bridge and the runtime's own
  // server listen there. Sending those through the proxy would only have them refused.
  const local = 'localhost,127.0.0.1,::1';
  return {
    HTTP_PROXY: url,
    HTTPS_PROXY: url,
    ALL_PROXY: url,
    http_proxy: url,
    https_proxy: url,
    all_proxy: url,
    NO_PROXY: local,
    no_proxy: local,
    // Node 24 and later honour the variables above only with this
    NODE_USE_ENV_PROXY: '1',
  };
}

interface Timeouts {
  /** a connection to the destination that has not completed by then fails (default 10 s) */
  connectTimeoutMs?: number;
  /** a connection (or tunnel) with no traffic either way for this long is closed (default 10 min) */
  idleTimeoutMs?: number;
}

export interface EgressProxyOptions extends Timeouts {
  policy: Networking;
  /** the platform's address rule (the worker's guard, with the operator's AGENTPLANE_EGRESS_ALLOW_PRIVATE) */
  egress: Pick<EgressGuard, 'resolve'>;
  onDenied(denial: EgressDenial): void;
}

export interface EgressProxy {
  /** the proxy's server, to hand to `Sandbox.expose` (or to listen on a socket of one's own) */
  readonly server: Server;
  /** the policy for connections from now on (the environment changed between turns) */
  setPolicy(policy: Networking): void;
  /** stops listening and closes every open connection and tunnel */
  close(): Promise<void>;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authorization', 'proxy-authenticate', 'te', 'trailer', 'transfer-encoding', 'upgrade']);

/** The headers without hop-by-hop ones (and those the Connection header names). */
function endToEnd(headers: IncomingHttpHeaders): Record<string, string | string[]> {
  const named = new Set(String(headers.connection ?? '').split(',').map((s) => s.trim().toLowerCase()).filter(Boolean));
  const out: Record<string, string | string[]> = {};
  for (const [key, value] of Object.entries(headers)) {
    if (value === undefined || HOP_BY_HOP.has(key) || named.has(key)) continue;
    out[key] = value;
  }
  return out;
}

/** `host:port` of a CONNECT request (`[::1]:443` for IPv6), or null. */
function parseAuthority(authority: string): { host: string; port: number } | null {
  const match = /^(\[[0-9a-fA-F:.]+\]|[^:[\]/\s]+):(\d{1,5})$/.exec(authority);
  if (!match) return null;
  const port = Number(match[2]);
  if (port < 1 || port > 65535) return null;
  return { host: normaliseHost(match[1]!), port };
}

class Refused extends Error {}

/**
 * Connects to host:port after the address rule: to the first checked address that answers within the timeout.
 * Throws `Refused` when the rule refuses the host.
 */
async function connectChecked(egress: Pick<EgressGuard, 'resolve'>, host: string, port: number, timeoutMs: number): Promise<Socket> {
  const { addresses, refused } = await egress.resolve(host);
  if (refused) throw new Refused(refused);
  let lastError: Error = new Error(`no address for ${host}`);
  for (const { address } of addresses) {
    try {
      return await new Promise<Socket>((resolve, reject) => {
        const socket = netConnect({ host: address, port });
        const timer = setTimeout(() => {
          socket.destroy();
          reject(Object.assign(new Error(`connect to ${host}:${port} timed out`), { code: 'ETIMEDOUT' }));
        }, timeoutMs);
        const failed = (err: Error) => {
          clearTimeout(timer);
          reject(err);
        };
        socket.once('error', failed);
        socket.once('connect', () => {
          clearTimeout(timer);
          socket.off('error', failed);
          // until its user attaches its own: an error in between must close it, not crash the worker
          socket.on('error', () => socket.destroy());
          resolve(socket);
        });
      });
    } catch (err) {
      lastError = err as Error;
    }
  }
  throw lastError;
}

/** Pipes two sockets into each other; either side ending, failing or idling ends both. */
function splice(a: Duplex & { setTimeout?: Socket['setTimeout'] }, b: Socket, idleTimeoutMs: number): void {
  const closeBoth = () => {
    a.destroy();
    b.destroy();
  };
  for (const side of [a, b]) {
    side.on('error', closeBoth);
    side.once('close', closeBoth);
    side.setTimeout?.(idleTimeoutMs, closeBoth);
  }
  a.pipe(b);
  b.pipe(a);
}

export function createEgressProxy(opts: EgressProxyOptions): EgressProxy {
  let policy = opts.policy;
  const connectTimeoutMs = opts.connectTimeoutMs ?? 10_000;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 600_000;
  const open = new Set<Duplex>();
  const track = (socket: Duplex) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
  };

  /** The upstream socket for host:port, or a refusal said of the host (and `onDenied` called). */
  async function reach(host: string, port: number): Promise<{ socket: Socket } | { denied: string } | { failed: string }> {
    if (!allowsHost(policy, host)) {
      const reason = `${host} is not in this environment's allowed_hosts`;
      opts.onDenied({ host, port, reason });
      return { denied: reason };
    }
    try {
      const socket = await connectChecked(opts.egress, host, port, connectTimeoutMs);
      track(socket);
      return { socket };
    } catch (err) {
      if (err instanceof Refused) {
        opts.onDenied({ host, port, reason: err.message });
        return { denied: err.message };
      }
      const code = (err as NodeJS.ErrnoException).code;
      return { failed: code === 'ENOTFOUND' ? `${host} does not resolve` : `${host}:${port} unreachable (${code ?? 'error'})` };
    }
  }

  const server = createHttpServer({ requestTimeout: 0, headersTimeout: 30_000, keepAliveTimeout: 5_000 });
  server.on('connection', (socket: Socket) => {
    track(socket);
    socket.setTimeout(idleTimeoutMs, () => socket.destroy());
  });

  // plain HTTP, absolute form
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    let target: URL;
    try {
      target = new URL(req.url ?? '');
    } catch {
      return answer(res, 400, 'agentplane egress proxy: requests must be in absolute form (http://host/path)');
    }
    if (target.protocol !== 'http:') return answer(res, 400, 'agentplane egress proxy: plain requests are for http:// only; https goes through CONNECT');
    const host = normaliseHost(target.hostname);
    const port = target.port ? Number(target.port) : 80;
    void reach(host, port).then((opened) => {
      if ('denied' in opened) return answer(res, 403, `agentplane egress proxy: ${host}:${port} refused: ${opened.denied}`);
      if ('failed' in opened) return answer(res, 502, `agentplane egress proxy: ${opened.failed}`);
      const upstream = httpRequest({
        createConnection: () => opened.socket,
        method: req.method,
        path: `${target.pathname}${target.search}`,
        headers: { ...endToEnd(req.headers), host: target.host },
        setHost: false,
      });
      upstream.once('response', (upstreamRes) => {
        res.writeHead(upstreamRes.statusCode ?? 502, endToEnd(upstreamRes.headers));
        upstreamRes.pipe(res);
        upstreamRes.once('error', () => res.destroy());
      });
      upstream.once('error', () => {
        if (res.headersSent) res.destroy();
        else answer(res, 502, `agentplane egress proxy: ${host}:${port} closed the connection`);
      });
      res.once('close', () => upstream.destroy());
      req.pipe(upstream);
    });
  });

  // HTTPS (and anything else over TCP): a tunnel
  server.on('connect', (req: IncomingMessage, client: Duplex, head: Buffer) => {
    track(client);
    const target = parseAuthority(req.url ?? '');
    if (!target) return refuseTunnel(client, 400, 'agentplane egress proxy: CONNECT needs host:port');
    void reach(target.host, target.port).then((opened) => {
      if ('denied' in opened) return refuseTunnel(client, 403, `agentplane egress proxy: ${target.host}:${target.port} refused: ${opened.denied}`);
      if ('failed' in opened) return refuseTunnel(client, 502, `agentplane egress proxy: ${opened.failed}`);
      if (client.destroyed) return opened.socket.destroy();
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) opened.socket.write(head);
      splice(client, opened.socket, idleTimeoutMs);
    });
  });

  return {
    server,
    setPolicy(next) {
      policy = next;
    },
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of open) socket.destroy();
      });
    },
  };
}

function answer(res: ServerResponse, status: number, text: string): void {
  if (res.headersSent) return void res.destroy();
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(`${text}\n`), connection: 'close' });
  res.end(`${text}\n`);
}

function refuseTunnel(client: Duplex, status: number, text: string): void {
  const phrase = status === 403 ? 'Forbidden' : status === 400 ? 'Bad Request' : 'Bad Gateway';
  const body = `${text}\n`;
  client.end(`HTTP/1.1 ${status} ${phrase}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

export interface ModelBridgeOptions extends Timeouts {
  /** the model endpoint's host (a name or an IP literal) and port */
  host: string;
  port: number;
  /** the platform's address rule, as for the proxy */
  egress: Pick<EgressGuard, 'resolve'>;
  /** called when the address rule refuses the endpoint at connect time */
  onDenied?(denial: EgressDenial): void;
}

export interface ModelBridge {
  readonly server: Server;
  close(): Promise<void>;
}

/** Raw TCP from the sandbox to one endpoint, checked at each connection (see the top of this file). */
export function createModelBridge(opts: ModelBridgeOptions): ModelBridge {
  const host = normaliseHost(opts.host);
  if (!host || (isIP(host) === 0 && !/^[a-z0-9.-]+$/.test(host))) throw new Error(`not a host name or address: ${JSON.stringify(opts.host)}`);
  if (!Number.isInteger(opts.port) || opts.port < 1 || opts.port > 65535) throw new Error(`not a port: ${opts.port}`);
  const open = new Set<Socket>();
  const server = createNetServer((client) => {
    open.add(client);
    client.once('close', () => open.delete(client));
    client.on('error', () => client.destroy());
    // hold what the client sends until the upstream is there (paused sockets keep it in the kernel's buffers)
    client.pause();
    connectChecked(opts.egress, host, opts.port, opts.connectTimeoutMs ?? 10_000).then(
      (upstream) => {
        open.add(upstream);
        upstream.once('close', () => open.delete(upstream));
        if (client.destroyed) return upstream.destroy();
        splice(client, upstream, opts.idleTimeoutMs ?? 600_000);
        client.resume();
      },
      (err: Error) => {
        if (err instanceof Refused) opts.onDenied?.({ host, port: opts.port, reason: err.message });
        client.destroy();
      },
    );
  });
  return {
    server,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const socket of open) socket.destroy();
      });
    },
  };
}
