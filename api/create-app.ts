/**
 * The HTTP API: a thin layer that authenticates, validates, and turns requests into Temporal starts and
 * signals and database reads. Built from its dependencies; `main.ts` only composes and serves.
 */
import { OpenAPIHono } from '@hono/zod-openapi';
import { SpanKind, SpanStatusCode, type Span, type Tracer } from '@opentelemetry/api';
import type { Client } from '@temporalio/client';
import type { MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { HTTPException } from 'hono/http-exception';
import { matchedRoutes } from 'hono/route';
import type { Db } from '../db/client';
import { newId } from '../db/ids';
import { findActiveKey } from '../db/queries/teams';
import type { Notifications } from '../db/notifications';
import type { Vault } from '../db/vault';
import { can, type Permission } from '../governance/permissions';
import type { Role, SandboxKind } from '../governance/types';
import { createApiMetrics, type ApiMetrics } from '../observability/metrics';
import { activeTraceId, extractContext } from '../observability/tracing';
import { EgressRefusedError, type EgressGuard } from '../runtimes/kit/egress';
import type { RuntimeCapabilities } from '../runtimes/runtime-adapter';
import { nodeResponse, type AppEnv } from './context';
import { ApiError, fromZodError, problem } from './errors';
import { allowedMethods, nulCharacterProblem } from './request-guards';
import { registerAgentRoutes } from './routes/agents.routes';
import { registerAuditRoutes } from './routes/audit.routes';
import { registerCredentialRoutes } from './routes/credentials.routes';
import { registerDashboardRoutes } from './routes/dashboard.routes';
import { registerEnvironmentRoutes } from './routes/environments.routes';
import { registerGovernanceRoutes } from './routes/governance.routes';
import { registerHealthRoutes } from './routes/health.routes';
import { registerKeyRoutes } from './routes/keys.routes';
import { registerScheduleRoutes } from './routes/schedules.routes';
import { registerSessionRoutes } from './routes/sessions.routes';
import { registerTeamRoutes } from './routes/teams.routes';
import { registerWebhookRoutes } from './routes/webhooks.routes';

export interface AppDeps {
  db: Db;
  vault: Vault;
  temporal: Client;
  taskQueue: string;
  /** what each runtime can do, as its descriptor declares it (runtimes/registry.ts) */
  capabilities: Record<string, RuntimeCapabilities>;
  /** decides which URLs a tenant may save (webhooks, model providers); built from AGENTPLANE_EGRESS_ALLOW_PRIVATE */
  egress: EgressGuard;
  /**
   * the sandbox the workers run sessions in (AGENTPLANE_SANDBOX): the API runs none, but marks the sessions it starts
   * and reports it in /readyz
   */
  sandboxKind: SandboxKind;
  /** the largest request body taken, in bytes (default 1 MiB); a larger one is refused with 413 before it is read */
  maxBodyBytes?: number;
  /**
   * this process's LISTEN connection (db/notifications.ts): with it, event streams wake when their session's events
   * commit (api/event-streams.ts; without it they are woken by one read for all of them every `streamPollMs`), and a
   * verified key is kept in memory until it is revoked anywhere, instead of read on every request
   */
  notifications?: Notifications;
  /** how often the event streams look for new events while no notifications are heard (default 200 ms): one read for all of them */
  streamPollMs?: number;
  /** how often they look even while notifications are heard (default 5 s), so a lost notification delays an event by at most this */
  streamSafetyReadMs?: number;
  /** event streams one key may hold open at once in this process (default 16); one more is refused with 429 */
  maxStreamsPerKey?: number;
  /** how often an open event stream checks that its key is still active (default 15 s); a revoked key's stream ends */
  streamKeyCheckMs?: number;
  /** structured log lines (one object per request and per unhandled error); silent when absent */
  log?: (entry: Record<string, unknown>) => void;
  /** a span per request, parent of the workflow it starts; absent: tracing off */
  tracer?: Tracer | null;
  /** request latency by route template; a private registry when absent */
  metrics?: ApiMetrics;
}

export type App = OpenAPIHono<AppEnv>;

export const DEFAULT_MAX_BODY_BYTES = 1024 * 1024;
/**
 * An idle stream costs the database nothing (api/event-streams.ts), but each holds a connection and a read per batch
 * of new events, so one key's streams are one key's share of the process. 16 is more than a person follows at once (a
 * browser holds at most 6 connections to one origin over HTTP/1.1); a program that follows more sessions reads their
 * pages or takes webhooks.
 */
export const DEFAULT_MAX_STREAMS_PER_KEY = 16;
/** half the 30 s within which a revoked key must lose its streams, for one read of every key holding a stream */
export const DEFAULT_STREAM_KEY_CHECK_MS = 15_000;
export const DEFAULT_STREAM_POLL_MS = 200;
export const DEFAULT_STREAM_SAFETY_READ_MS = 5_000;

export function createApp(deps: AppDeps): App {
  const app: App = new OpenAPIHono<AppEnv>({
    defaultHook: (result) => {
      const where = result.target === 'json' ? 'body' : result.target === 'param' ? 'path' : (result.target as 'query');
      if (!result.success) throw fromZodError(result.error, where);
      const nul = nulCharacterProblem(result.data, where);
      if (nul) throw nul;
    },
  });

  const log = deps.log ?? (() => undefined);
  const metrics = deps.metrics ?? createApiMetrics();
  const tracer = deps.tracer ?? null;
  app.use('*', async (c, next) => {
    const started = performance.now();
    c.set('requestId', c.req.header('x-request-id')?.slice(0, 100) || newId('req'));
    const handle = async (span: Span | null) => {
      // before the response exists: every response made through the context carries it. Set on a finished response,
      // a header makes Hono rebuild that response around its body as a stream, which cost a third of a short read.
      const outgoing = nodeResponse(c);
      if (outgoing) outgoing.setHeader('x-request-id', c.get('requestId'));
      else c.header('x-request-id', c.get('requestId'));
      await next();
      if (!outgoing && !c.res.headers.has('x-request-id')) c.header('x-request-id', c.get('requestId'));
      // the template, not the path: one series per route however many ids it is called with
      const route = routeTemplate(c);
      const sessionId = c.get('sessionId') ?? /^\/v1\/sessions\/(sesn_[^/]+)/.exec(c.req.path)?.[1];
      if (span) {
        span.updateName(`${c.req.method} ${route}`);
        span.setAttributes({ 'http.route': route, 'http.response.status_code': c.res.status, 'agentplane.request_id': c.get('requestId'), ...(sessionId ? { 'agentplane.session_id': sessionId } : {}) });
        if (c.res.status >= 500) span.setStatus({ code: SpanStatusCode.ERROR });
      }
      metrics.requestDuration.observe({ method: c.req.method, route, status: String(c.res.status) }, (performance.now() - started) / 1000);
      log({
        level: c.res.status >= 500 ? 'ERROR' : 'INFO',
        msg: 'request',
        requestId: c.get('requestId'),
        traceId: activeTraceId() ?? undefined,
        sessionId,
        method: c.req.method,
        path: c.req.path,
        route,
        status: c.res.status,
        ms: Math.round(performance.now() - started),
        keyId: c.get('actor')?.keyId,
      });
    };
    if (!tracer) return handle(null);
    const attributes = { 'http.request.method': c.req.method, 'url.path': c.req.path };
    await tracer.startActiveSpan(`${c.req.method}`, { kind: SpanKind.SERVER, attributes }, extractContext(c.req.header()), async (span) => {
      try {
        await handle(span);
      } finally {
        span.end();
      }
    });
  });

  const maxBodyBytes = deps.maxBodyBytes ?? DEFAULT_MAX_BODY_BYTES;
  const tooLarge = () => {
    throw new ApiError(413, 'request.too_large', `the request body is larger than ${maxBodyBytes} bytes`);
  };
  const limitBody = bodyLimit({ maxSize: maxBodyBytes, onError: tooLarge });
  // first, so no later step reads more than this: a declared Content-Length over it is refused unread, and a chunked
  // body is cut off as soon as it passes it. A declared length is judged from the header alone (Node's parser reads
  // exactly that many bytes as the body), without bodyLimit, which opens the body to look at it: an opened body that
  // is answered early (this 413, a 401, a 403) cannot be discarded while the client still sends it, so the server
  // closes on the client, which then reads a reset instead of the answer. A request with neither header has no body
  // (RFC 9112 §6.3), as every GET: it goes straight on, since looking at its body (`c.req.raw.body`) would make
  // @hono/node-server build a whole Request, which was a sixth of the CPU of a short read.
  app.use('/v1/*', (c, next) => {
    if (c.req.header('transfer-encoding') !== undefined) return limitBody(c, next);
    const declared = c.req.header('content-length');
    if (declared === undefined) return next();
    return Number(declared) > maxBodyBytes ? tooLarge() : next();
  });

  app.use('/v1/*', async (c, next) => {
    const header = c.req.header('authorization');
    const plain = header?.toLowerCase().startsWith('bearer ') ? header.slice(7).trim() : c.req.header('x-api-key')?.trim();
    if (!plain) throw new ApiError(401, 'auth.missing_key', 'send the key as "Authorization: Bearer <key>" or "x-api-key: <key>"');
    const key = await findActiveKey(deps.db, plain, deps.notifications);
    if (!key) throw new ApiError(401, 'auth.invalid_key', 'the API key is unknown or revoked');
    c.set('actor', { keyId: key.id, role: key.role as Role, teamId: key.teamId });
    await next();
  });

  app.onError((err, c) => {
    if (err instanceof ApiError) return problem(c, err);
    if (err instanceof EgressRefusedError) return problem(c, new ApiError(400, 'request.invalid', err.message, [{ name: err.field, reason: err.reason }]));
    if (err instanceof HTTPException && err.status < 500) {
      return problem(c, new ApiError(400, 'request.invalid', err.message || 'the request could not be read'));
    }
    log({ level: 'ERROR', msg: 'unhandled API error', requestId: c.get('requestId'), error: String(err) });
    return problem(c, new ApiError(500, 'internal', 'an internal error occurred; quote the request_id when reporting it'));
  });
  // read when a request comes, so it sees the routes registered below
  let allowed: ((path: string) => string[]) | null = null;
  app.notFound((c) => {
    allowed ??= allowedMethods(app.routes);
    const methods = allowed(c.req.path);
    if (methods.length === 0) return problem(c, new ApiError(404, 'resource.not_found', `no route for ${c.req.method} ${c.req.path}`));
    c.header('allow', methods.join(', '));
    return problem(c, new ApiError(405, 'request.method_not_allowed', `${c.req.path} takes ${methods.join(', ')}, not ${c.req.method}`));
  });

  registerHealthRoutes(app, deps);
  registerAgentRoutes(app, deps);
  registerEnvironmentRoutes(app, deps);
  registerCredentialRoutes(app, deps);
  registerSessionRoutes(app, { ...deps, metrics });
  registerScheduleRoutes(app, deps);
  registerKeyRoutes(app, deps);
  registerTeamRoutes(app, deps);
  registerAuditRoutes(app, deps);
  registerWebhookRoutes(app, deps);
  registerGovernanceRoutes(app, deps);
  registerDashboardRoutes(app);

  app.doc31('/openapi.json', {
    openapi: '3.1.0',
    info: { title: 'agentplane', version: '0.1.0', description: 'A control plane for AI coding agents. Managed-Agents-compatible where the concepts match.' },
    // every /v1 operation needs a key; /healthz and /readyz are not in the document
    security: [{ bearer: [] }],
  });
  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer' });
  return app;
}

/** The matched route's template (`/v1/sessions/:session_id`); `unmatched` when only middleware matched. */
function routeTemplate(c: Parameters<typeof matchedRoutes>[0]): string {
  const handler = matchedRoutes(c).findLast((r) => r.method !== 'ALL');
  return handler?.path ?? 'unmatched';
}

/**
 * A route's permission, checked before its body, query or path is validated: a key that may not call the route learns
 * nothing about what it accepts, and its body is never parsed. With several, any one of them admits the caller (the
 * handler then checks the one the request needs).
 */
export function requires(...anyOf: [Permission, ...Permission[]]): MiddlewareHandler<AppEnv> {
  // not async: an await per layer is a turn of the microtask queue on every request
  return (c, next) => {
    const actor = c.get('actor');
    if (!anyOf.some((permission) => can(actor.role, permission))) {
      // each of them would admit the caller: name them all
      throw new ApiError(403, 'auth.forbidden', `role "${actor.role}" lacks ${anyOf.map((p) => `"${p}"`).join(' or ')}`);
    }
    return next();
  };
}

/** Throws 403 unless the caller's role grants the permission. */
export function requirePermission(actor: { role: Role }, permission: Permission): void {
  if (!can(actor.role, permission)) throw new ApiError(403, 'auth.forbidden', `role "${actor.role}" lacks "${permission}"`);
}
