/**
 * The model gateway: what a session's runtime calls instead of its model provider. It holds a session token
 * (./tokens.ts), never a key; the gateway checks the token, puts the real key on the upstream request, streams the
 * answer back as it comes, and reads the provider's own usage from it (./usage.ts) for metering.
 *
 It runs in the gateway daemon (./daemon.ts: one process per worker host and data dir, which outlives a crashed
 * worker as the runtimes do), with one HTTP server per session (`serverFor`) listening where that session's sandbox
 * alone reaches it: the server a request arrived on names the session, so a token is useless anywhere else, and
 * another session's token is refused (401) on this one. A session is served while it is registered (`register`, with
 * its decrypted key held in memory only, and the tokens its runtime may present) and refused once `revoke`d (it
 * ended).
 *
 * What passes, and how:
 * - POST `<base>/chat/completions` (OpenAI chat), `<base>/responses` (OpenAI responses), `<base>/messages` and
 *   `<base>/messages/count_tokens` (Anthropic), streaming or not, and GET `<base>/models[/…]`, where `<base>` is the
 *   path of the session's `model_provider.base_url`: the request goes to the same path on the provider's origin.
 *   Anything else is a 404 in the provider's error shape; nothing else of the provider's host is reachable.
 * - The token arrives as `Authorization: Bearer` (OpenAI) or `x-api-key` (Anthropic); the key goes upstream in the
 *   same header. `Accept-Encoding: identity` upstream, so the gateway can read the usage from the bytes it passes on.
 * - The response's status, headers and body bytes go back as they arrive: no buffering, the first byte when the
 *   provider sends it. One exception: a streamed chat completion that did not ask for usage
 *   (`stream_options.include_usage`) is sent upstream with it, and the usage-only chunk is dropped from what the
 *   runtime sees, event by event.
 * - Upstream connections go through the platform's address rule (the egress guard's dispatcher).
 * - Errors the gateway makes itself are in the provider's own shape (OpenAI's `{error: {message, type, code}}`,
 *   Anthropic's `{type: "error", error: {type, message}}`), so a runtime reports them as its provider's.
 *
 * `onRequest` hears of every metered request when its response has ended (or failed): model, tokens, latency, time
 * to first byte. The worker turns that into a ledger row and a `span.model_request_end` event.
 */
import { randomUUID, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { request as undiciRequest, type Dispatcher } from 'undici';
import type { TokenUsage } from '../governance/pricing';
import { createUsageMeter, protocolOf, type ModelProtocol } from './usage';

export interface GatewaySession {
  sessionId: string;
  /** the credential whose key is injected: the token is bound to it */
  credentialId: string;
  /** the session's `model_provider.base_url` */
  baseUrl: string;
  /** the provider key, decrypted: kept in this process's memory only (empty: a provider without keys) */
  apiKey: string;
  /** the tokens the session's runtime may present (./tokens.ts `all`: the current master key's first) */
  tokens: readonly string[];
}

export interface ModelRequestRecord {
  /** the request's id, the one `admit` was asked with (a record is one ledger row: charged once by this id) */
  id: string;
  sessionId: string;
  protocol: ModelProtocol;
  /** the model the provider answered with, else the one asked for */
  model: string | null;
  streaming: boolean;
  /** the provider's status; 0 when no answer came */
  status: number;
  /** what the provider reported; null when it reported nothing (an error, a cut stream) */
  usage: TokenUsage | null;
  startedAt: Date;
  latencyMs: number;
  /** until the first byte of the answer's body went to the runtime */
  ttfbMs: number | null;
  /** why the exchange did not end normally: `upstream: <code>`, `client closed` */
  failure: string | null;
}

/** A metered request about to be forwarded, as `admit` is asked about it. */
export interface ModelRequestAsked {
  id: string;
  sessionId: string;
  protocol: ModelProtocol;
  /** the model asked for */
  model: string | null;
  /** the request body's size: about four bytes a token of input */
  bytes: number;
  /** the most output it asked for (max_tokens, max_completion_tokens, max_output_tokens), when it said */
  maxOutputTokens: number | null;
}

/** What `admit` answers: go ahead, or a refusal for the runtime. */
export type Admission = { ok: true } | { ok: false; status: 402 | 429; message: string };

export interface ModelGatewayOptions {
  /**
   * Asked before a metered request is forwarded (a budget hold, in the worker). A refusal goes to the runtime in its
   * provider's shape, naming why (with `x-should-retry: false`, which the vendors' SDKs obey), and nothing is sent;
   * an admitted request's record reaches `onRequest` exactly once, however the exchange ended (usage null when none
   * was seen).
   */
  admit?(request: ModelRequestAsked): Promise<Admission>;
  /** how the gateway reaches providers: the egress guard's checked dispatcher */
  dispatcher: Dispatcher;
  onRequest?(record: ModelRequestRecord): void;
  /** how long the provider may take to send its headers, and to send anything at all mid-body (default 10 min) */
  timeoutMs?: number;
}

export interface ModelGateway {
  /** serves the session (again): its provider, its credential, key and tokens, replacing what it had */
  register(session: GatewaySession): void;
  /** the session ended: its tokens are refused from now on (401), also on a connection its runtime still holds */
  revoke(sessionId: string): void;
  /** a new server for the session's sandbox (listened on once: ./daemon.ts, on the socket its sandbox reaches) */
  serverFor(sessionId: string): Server;
  /** model requests being answered now */
  active(): number;
  /** closes every session server */
  close(): Promise<void>;
}

/** the hop-by-hop headers, and those the gateway sets itself */
const DROP_REQUEST = new Set(['host', 'connection', 'keep-alive', 'proxy-authorization', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'content-length', 'authorization', 'x-api-key', 'accept-encoding']);
const DROP_RESPONSE = new Set(['connection', 'keep-alive', 'proxy-authenticate', 'trailer', 'transfer-encoding', 'upgrade']);

type Shape = 'openai' | 'anthropic';

/** An error in the provider's own shape. */
function sendError(res: ServerResponse, shape: Shape, status: number, type: string, message: string, extra: Record<string, string> = {}): void {
  const body = shape === 'anthropic' ? { type: 'error', error: { type, message } } : { error: { message, type, code: type } };
  const text = JSON.stringify(body);
  if (res.headersSent) {
    res.destroy();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...extra });
  res.end(text);
}

/** Drops an answer's body: its error (the abort) has no one left to hear it. */
function drop(body: Dispatcher.ResponseData['body']): void {
  body.on('error', () => {});
  body.destroy();
}

/** How long a revoked session's servers keep answering (401) before they close. */
const REVOKED_SERVER_GRACE_MS = 60_000;

/** The largest request body passed on (a model request with its whole conversation is a few MiB at most). */
const MAX_REQUEST_BYTES = 32 * 1024 * 1024;

/** The request's body, or null when it is larger than MAX_REQUEST_BYTES (the rest is not read). */
async function readBody(req: IncomingMessage): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_REQUEST_BYTES) return null;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

/**
 * Drops the usage-only chunk (`choices: []` with `usage`) from a chat completion stream, event by event; every other
 * event goes on as it came, as soon as it is whole.
 */
function createUsageStripper(): { push(chunk: Uint8Array): string; end(): string } {
  const decoder = new TextDecoder();
  let pending = '';
  const keep = (event: string) => {
    if (!event.includes('"usage"')) return true;
    const data = event
      .split(/\r?\n/)
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).trimStart())
      .join('\n');
    try {
      const parsed = JSON.parse(data) as { choices?: unknown[]; usage?: unknown };
      return !(Array.isArray(parsed.choices) && parsed.choices.length === 0 && parsed.usage);
    } catch {
      return true;
    }
  };
  const drain = (final: boolean) => {
    let out = '';
    for (;;) {
      const m = /\r?\n\r?\n/.exec(pending);
      if (!m) break;
      const event = pending.slice(0, m.index + m[0].length);
      pending = pending.slice(m.index + m[0].length);
      if (keep(event)) out += event;
    }
    if (final && pending) {
      if (keep(pending)) out += pending;
      pending = '';
    }
    return out;
  };
  return {
    push(chunk) {
      pending += decoder.decode(chunk, { stream: true });
      return drain(false);
    },
    end() {
      pending += decoder.decode();
      return drain(true);
    },
  };
}

export function createModelGateway(opts: ModelGatewayOptions): ModelGateway {
  /** the sessions served, each with its tokens as bytes */
  const sessions = new Map<string, GatewaySession & { accepted: Buffer[] }>();
  const valid = (token: string, session: { accepted: Buffer[] }) => {
    const given = Buffer.from(token);
    let ok = false;
    // every token compared, in constant time each
    for (const accepted of session.accepted) ok = (given.length === accepted.length && timingSafeEqual(given, accepted)) || ok;
    return ok;
  };
  let active = 0;
  const servers = new Map<string, Set<Server>>();
  const timeoutMs = opts.timeoutMs ?? 600_000;

  async function handle(sessionId: string, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = performance.now();
    const startedAt = new Date();
    const url = req.url ?? '/';
    const path = url.replace(/\?.*$/, '');
    const protocol = protocolOf(path);
    const shape: Shape = protocol?.startsWith('anthropic') || req.headers['x-api-key'] !== undefined ? 'anthropic' : 'openai';

    // the token: on this session's server, for this session's credential, while it is served
    const bearer = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '')?.[1]?.trim();
    const headerKey = typeof req.headers['x-api-key'] === 'string' ? req.headers['x-api-key'].trim() : undefined;
    const token = headerKey ?? bearer;
    const session = sessions.get(sessionId);
    if (!token || !session || !valid(token, session)) {
      req.resume();
      return sendError(res, shape, 401, shape === 'anthropic' ? 'authentication_error' : 'invalid_api_key', 'agentplane gateway: this token is not valid for this session (it ended, or the token belongs to another session)');
    }

    const base = new URL(session.baseUrl);
    const prefix = base.pathname.replace(/\/+$/, '');
    // a path that normalises to another (`..`, `.`, their %2e forms) could leave the base on the provider's side
    const normal = new URL(path, 'http://gateway.invalid').pathname === path;
    const below = normal && (path === prefix || path.startsWith(`${prefix}/`));
    const listing = req.method === 'GET' && below && /\/models(\/[^/]+)?$/.test(path);
    if (!below || !((req.method === 'POST' && protocol) || listing)) {
      req.resume();
      return sendError(res, shape, 404, 'not_found_error', `agentplane gateway: ${req.method} ${path} is not a model endpoint of this session's provider`);
    }

    let body = req.method === 'POST' ? await readBody(req) : undefined;
    if (body === null) {
      res.setHeader('connection', 'close');
      return sendError(res, shape, 413, 'request_too_large', `agentplane gateway: the request is larger than ${MAX_REQUEST_BYTES / 1024 / 1024} MiB`);
    }
    let streaming = false;
    let asked: string | null = null;
    let maxOutputTokens: number | null = null;
    let strip = false;
    if (body && protocol) {
      let parsed: Record<string, unknown> | null = null;
      try {
        const value = JSON.parse(body.toString('utf8')) as unknown;
        if (value && typeof value === 'object' && !Array.isArray(value)) parsed = value as Record<string, unknown>;
      } catch {
        // not JSON: the provider answers it as it would
      }
      if (parsed) {
        streaming = parsed.stream === true;
        asked = typeof parsed.model === 'string' ? parsed.model : null;
        const max = parsed.max_tokens ?? parsed.max_completion_tokens ?? parsed.max_output_tokens;
        maxOutputTokens = typeof max === 'number' && Number.isFinite(max) && max > 0 ? max : null;
        const options = parsed.stream_options as { include_usage?: unknown } | undefined;
        if (protocol === 'openai-chat' && streaming && options?.include_usage !== true) {
          strip = true;
          body = Buffer.from(JSON.stringify({ ...parsed, stream_options: { ...(options ?? {}), include_usage: true } }));
        }
      }
    }

    const headers: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(req.headers)) {
      if (value !== undefined && !DROP_REQUEST.has(name)) headers[name] = value;
    }
    // (a provider without a key, a local model server, gets none)
    if (session.apiKey && headerKey !== undefined) headers['x-api-key'] = session.apiKey;
    else if (session.apiKey) headers.authorization = `Bearer ${session.apiKey}`;
    headers['accept-encoding'] = 'identity';

    // metered: the model requests (count_tokens and the model list are free)
    const metered = protocol !== null && protocol !== 'anthropic-count-tokens' ? protocol : null;
    const id = randomUUID();
    if (metered && opts.admit) {
      const admission = await opts.admit({ id, sessionId, protocol: metered, model: asked, bytes: body?.length ?? 0, maxOutputTokens });
      if (!admission.ok) {
        const type = admission.status === 429 ? (shape === 'anthropic' ? 'rate_limit_error' : 'rate_limit_exceeded') : shape === 'anthropic' ? 'billing_error' : 'insufficient_quota';
        return sendError(res, shape, admission.status, type, `agentplane gateway: ${admission.message}`, { 'x-should-retry': 'false' });
      }
    }
    const record = (status: number, usage: TokenUsage | null, model: string | null, ttfb: number | null, failure: string | null) => {
      if (!metered) return;
      opts.onRequest?.({ id, sessionId, protocol: metered, model: model ?? asked, streaming, status, usage, startedAt, latencyMs: performance.now() - started, ttfbMs: ttfb, failure });
    };

    // the runtime hung up: the provider's answer is dropped (its body destroyed) wherever it has got to
    let clientGone = false;
    let answerBody: Dispatcher.ResponseData['body'] | null = null;
    res.once('close', () => {
      if (!res.writableFinished) {
        clientGone = true;
        if (answerBody) drop(answerBody);
      }
    });

    let answer: Dispatcher.ResponseData;
    try {
      answer = await undiciRequest(`${base.origin}${url}`, {
        method: req.method as Dispatcher.HttpMethod,
        headers,
        body,
        dispatcher: opts.dispatcher,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
    } catch (err) {
      const code = (err as { code?: string }).code ?? (err as Error).name;
      record(0, null, null, null, clientGone ? 'client closed' : `upstream: ${code}`);
      if (!clientGone) sendError(res, shape, 502, 'api_error', `agentplane gateway: the model provider could not be reached (${code})`);
      return;
    }

    answerBody = answer.body;
    if (clientGone) {
      drop(answer.body);
      record(answer.statusCode, null, null, null, 'client closed');
      return;
    }
    const out: Record<string, string | string[]> = {};
    for (const [name, value] of Object.entries(answer.headers)) {
      if (value !== undefined && !DROP_RESPONSE.has(name) && !(strip && name === 'content-length')) out[name] = value;
    }
    res.writeHead(answer.statusCode, out);
    // the provider's headers go on when they come, before any body: a runtime may act on them (Claude Code records
    // its prompt once its model answers) while the provider takes its time over the first token
    res.flushHeaders();
    const ok = answer.statusCode >= 200 && answer.statusCode < 300;
    const meter = protocol && ok ? createUsageMeter(protocol, streaming) : null;
    const stripper = strip && ok ? createUsageStripper() : null;
    let ttfb: number | null = null;
    const send = async (data: Uint8Array | string) => {
      if (data.length === 0) return;
      if (ttfb === null) ttfb = performance.now() - started;
      if (!res.write(data)) await new Promise<void>((resolve) => res.once('drain', resolve).once('close', resolve));
    };
    try {
      for await (const chunk of answer.body) {
        meter?.write(chunk as Buffer);
        await send(stripper ? stripper.push(chunk as Buffer) : (chunk as Buffer));
        if (clientGone) break;
      }
      if (stripper) await send(stripper.end());
    } catch (err) {
      const found = meter?.end();
      record(answer.statusCode, found?.usage ?? null, found?.model ?? null, ttfb, clientGone ? 'client closed' : `upstream: ${(err as { code?: string }).code ?? (err as Error).name}`);
      res.destroy();
      return;
    }
    const found = meter?.end();
    if (clientGone) {
      drop(answer.body);
      record(answer.statusCode, found?.usage ?? null, found?.model ?? null, ttfb, 'client closed');
      return;
    }
    res.end();
    record(answer.statusCode, found?.usage ?? null, found?.model ?? null, ttfb, null);
  }

  return {
    register(session) {
      sessions.set(session.sessionId, { ...session, accepted: session.tokens.map((t) => Buffer.from(t)) });
    },
    revoke(sessionId) {
      sessions.delete(sessionId);
      // every request from now on gets a 401, on a connection the runtime still holds too; the session's servers close
      // a while later (a runtime being stopped is told why its requests fail, rather than finding nothing there)
      const ended = servers.get(sessionId) ?? new Set();
      servers.delete(sessionId);
      setTimeout(() => {
        for (const server of ended) {
          server.close();
          server.closeAllConnections();
        }
      }, REVOKED_SERVER_GRACE_MS).unref();
    },
    serverFor(sessionId) {
      const server = createServer({ keepAlive: true }, (req, res) => {
        active++;
        handle(sessionId, req, res)
          .catch(() => {
            if (!res.headersSent) sendError(res, 'openai', 500, 'api_error', 'agentplane gateway: internal error');
            else res.destroy();
          })
          .finally(() => active--);
      });
      // runtimes keep their connection to the model between requests, minutes apart in a long tool call
      server.keepAliveTimeout = 65_000;
      server.once('close', () => servers.get(sessionId)?.delete(server));
      let set = servers.get(sessionId);
      if (!set) servers.set(sessionId, (set = new Set()));
      set.add(server);
      return server;
    },
    active: () => active,
    async close() {
      const all = [...servers.values()].flatMap((s) => [...s]);
      servers.clear();
      await Promise.all(
        all.map(
          (server) =>
            new Promise<void>((resolve) => {
              server.close(() => resolve());
              server.closeAllConnections();
            }),
        ),
      );
    },
  };
}
