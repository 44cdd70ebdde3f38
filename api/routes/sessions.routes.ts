/**
 * Sessions: start (a Temporal workflow per session), the fleet query, events in (signals, and an update for tool
 * decisions) and out (history and an SSE stream that replays from Last-Event-ID), and the approvals inbox.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { WorkflowUpdateFailedError, WorkflowUpdateRPCTimeoutOrCancelledError } from '@temporalio/client';
import { ApplicationFailure, WorkflowIdConflictPolicy, WorkflowNotFoundError } from '@temporalio/common';
import { getAgent } from '../../db/queries/agents';
import { planSession, recordSession, SessionStartError, sessionWorkflowInput } from '../../db/queries/session-start';
import { appendAudit } from '../../db/queries/audit';
import { findEvent, listEvents, toPublicEvent, type EventRow } from '../../db/queries/events';
import {
  getApproval,
  getSession,
  getSessionWithApprovals,
  listPendingApprovals,
  listSessions,
  markSessionArchived,
  setSessionStatus,
  type ApprovalRow,
  type PendingApproval,
  type SessionRow,
} from '../../db/queries/sessions';
import { newId, stableId } from '../../db/ids';
import { alreadyDecided } from '../../governance/approvals';
import { microsToUsd } from '../../governance/budget';
import { SANDBOX_KINDS, type Actor, type SandboxKind } from '../../governance/types';
import {
  archiveSignal,
  interruptSignal,
  SESSION_WORKFLOW,
  toolConfirmationUpdate,
  userMessageSignal,
  type RecordedDecision,
  type ToolConfirmation as WorkflowToolConfirmation,
  type ToolConfirmationRefusal,
} from '../../workflows/definitions';
import {
  DEFAULT_MAX_STREAMS_PER_KEY,
  DEFAULT_STREAM_KEY_CHECK_MS,
  DEFAULT_STREAM_POLL_MS,
  DEFAULT_STREAM_SAFETY_READ_MS,
  requirePermission,
  requires,
  type App,
  type AppDeps,
} from '../create-app';
import { createEventStreams, EVENT_PAGE } from '../event-streams';
import type { ApiMetrics } from '../../observability/metrics';
import { ApiError, notFound, problemBody } from '../errors';
import { governanceOf, type AgentDefinition } from '../schemas/agent.schema';
import { idParam, json, jsonBody, Metadata, page, PageQuery, problemResponses, rateLimitedResponse, Version } from '../schemas/common';
import { eventStreamResponse } from '../sse-response';
import { auditActor } from './agents.routes';

const tags = ['sessions'];
const SessionId = idParam('session_id', 'sesn');
const STATUSES = ['idle', 'running', 'requires_action', 'terminated'] as const;

const TextContent = z.union([
  z.string().min(1).max(1_000_000),
  z.array(z.object({ type: z.literal('text'), text: z.string().min(1).max(1_000_000) })).min(1).max(100),
]);

const UserMessage = z.object({ type: z.literal('user.message'), content: TextContent });
const ToolConfirmation = z.object({
  type: z.literal('user.tool_confirmation'),
  tool_use_id: z.string().min(1).max(100),
  result: z.enum(['allow', 'deny']),
  deny_message: z.string().max(10_000).optional(),
});
const Interrupt = z.object({ type: z.literal('user.interrupt') });
const UserEvent = z.discriminatedUnion('type', [UserMessage, ToolConfirmation, Interrupt]);

const SessionCreate = z.object({
  agent: z.union([
    z.string().min(1).max(100),
    z.object({ type: z.literal('agent'), id: z.string().min(1).max(100), version: Version.optional() }),
  ]),
  environment_id: z.string().min(1).max(100).optional(),
  title: z.string().max(512).nullable().optional(),
  metadata: Metadata.optional(),
  budget: z.object({ max_cost_usd: z.number().positive().max(1_000_000) }).optional(),
  initial_events: z.array(UserMessage).max(50).optional(),
});

const Usage = z.object({
  input_tokens: z.number(),
  output_tokens: z.number(),
  cache_read_input_tokens: z.number(),
  cache_creation_input_tokens: z.number(),
  cost_usd: z.number(),
  list_cost: z.object({ amount: z.string(), currency: z.literal('USD') }),
});

export const SessionSchema = z
  .object({
    id: z.string(),
    type: z.literal('session'),
    status: z.enum(STATUSES),
    stop_reason: z.record(z.string(), z.unknown()).nullable(),
    agent: z.object({ id: z.string(), version: z.number().int(), runtime: z.string() }),
    environment_id: z.string().nullable(),
    sandbox: z.enum(SANDBOX_KINDS).openapi({
      description: 'what the session\'s processes run in: bubblewrap, or none (AGENTPLANE_SANDBOX=none: no isolation) once the session was started, or any of its turns run, without a sandbox',
    }),
    title: z.string().nullable(),
    metadata: z.record(z.string(), z.string()),
    budget: z.object({ max_cost_usd: z.number().optional() }),
    usage: Usage,
    pending_approvals: z.array(z.object({ tool_use_id: z.string(), tool: z.string(), input: z.unknown(), requested_at: z.string(), expires_at: z.string() })),
    initiator: z.object({ key_id: z.string() }),
    trigger: z.object({ type: z.enum(['api', 'schedule', 'cli']), schedule_id: z.string().optional(), scheduled_at: z.string().optional() }).openapi({ description: 'what started the session' }),
    created_at: z.string(),
    updated_at: z.string(),
    archived_at: z.string().nullable(),
  })
  .openapi('Session');

const EventSchema = z
  .object({
    id: z.string(),
    type: z.string(),
    processed_at: z.string().nullable(),
    seq: z.number().int().optional(),
    trace_id: z.string().nullable().optional().openapi({ description: 'the OpenTelemetry trace the event was written in; null when tracing is off' }),
  }).passthrough().openapi('SessionEvent');

const ApprovalSchema = z
  .object({ session_id: z.string(), tool_use_id: z.string(), tool: z.string(), input: z.unknown(), status: z.string(), requested_at: z.string(), expires_at: z.string() })
  .openapi('Approval');

function toApproval(a: ApprovalRow) {
  return { session_id: a.sessionId, tool_use_id: a.toolUseId, tool: a.tool, input: a.input, status: a.status, requested_at: a.requestedAt.toISOString(), expires_at: a.expiresAt.toISOString() };
}

export function toSessionResponse(row: SessionRow, pending: PendingApproval[]): z.infer<typeof SessionSchema> {
  const cost = microsToUsd(row.costMicros);
  return {
    id: row.id,
    type: 'session',
    status: row.status as (typeof STATUSES)[number],
    stop_reason: (row.stopReason as Record<string, unknown> | null) ?? null,
    agent: { id: row.agentId, version: row.agentVersion, runtime: row.runtime },
    environment_id: row.environmentId,
    sandbox: row.sandbox as SandboxKind,
    title: row.title,
    metadata: row.metadata as Record<string, string>,
    budget: row.budget as { max_cost_usd?: number },
    usage: {
      input_tokens: row.inputTokens,
      output_tokens: row.outputTokens,
      cache_read_input_tokens: row.cacheReadTokens,
      cache_creation_input_tokens: row.cacheCreationTokens,
      cost_usd: cost,
      list_cost: { amount: cost.toFixed(6), currency: 'USD' },
    },
    pending_approvals: pending.map((a) => ({ tool_use_id: a.toolUseId, tool: a.tool, input: a.input, requested_at: a.requestedAt.toISOString(), expires_at: a.expiresAt.toISOString() })),
    initiator: { key_id: row.initiatorKeyId },
    trigger: {
      type: row.trigger as 'api' | 'schedule' | 'cli',
      ...(row.scheduleId ? { schedule_id: row.scheduleId } : {}),
      ...(row.scheduledAt ? { scheduled_at: row.scheduledAt.toISOString() } : {}),
    },
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
    archived_at: row.archivedAt?.toISOString() ?? null,
  };
}

/** A session that cannot start is the caller's fault: the answer names the field. */
function rethrowStartError(err: unknown): never {
  if (err instanceof SessionStartError) throw new ApiError(err.status, err.code, err.message, err.field ? [{ name: err.field, reason: err.message }] : undefined);
  throw err;
}

/**
 * How long a request waits for the session's workflow to answer its decisions. It answers in milliseconds when a worker
 * holds the session; a decision on a call whose leg is still returning it waits for that leg; with no worker running,
 * nothing answers, and the client is told so rather than kept waiting.
 */
const DECISION_DEADLINE_MS = 60_000;

/** what a refused stream is told to wait: streams end when sessions do or clients leave, neither on a schedule */
const STREAM_RETRY_AFTER_SECONDS = 10;
/** an idle stream sends a ping this often, so proxies and clients do not take it for dead */
const STREAM_PING_MS = 15_000;
const PING_FRAME = 'event: ping\ndata: {}\n\n';

/**
 * The open event streams of each key in this process. Counted in memory, not in the database: a stream lives and
 * dies with this process, so a crash cannot leave a slot taken. With several API replicas, each has its own count.
 */
function createStreamSlots(max: number) {
  const open = new Map<string, number>();
  return {
    max,
    /** takes a slot for the key; the function that gives it back (once, however often it is called), or null when none is free */
    acquire(keyId: string): (() => void) | null {
      const held = open.get(keyId) ?? 0;
      if (held >= max) return null;
      open.set(keyId, held + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (open.get(keyId) ?? 1) - 1;
        if (left > 0) open.set(keyId, left);
        else open.delete(keyId);
      };
    },
  };
}

const textOf = (content: z.infer<typeof TextContent>) => (typeof content === 'string' ? content : content.map((c) => c.text).join('\n'));

export function registerSessionRoutes(app: App, deps: AppDeps & { metrics: ApiMetrics }): void {
  const { db, temporal } = deps;
  const log = deps.log ?? (() => undefined);
  const handle = (sessionId: string) => temporal.workflow.getHandle(sessionId);
  const eventStreams = createEventStreams({
    db,
    notifications: deps.notifications,
    pollMs: deps.streamPollMs ?? DEFAULT_STREAM_POLL_MS,
    safetyReadMs: deps.streamSafetyReadMs ?? DEFAULT_STREAM_SAFETY_READ_MS,
    keyCheckMs: deps.streamKeyCheckMs ?? DEFAULT_STREAM_KEY_CHECK_MS,
    log: deps.log ?? (() => undefined),
    metrics: deps.metrics,
  });
  const streamSlots = createStreamSlots(deps.maxStreamsPerKey ?? DEFAULT_MAX_STREAMS_PER_KEY);
  // an event as its SSE frame, encoded once: the streams of a session share the rows they read, so a thousand streams
  // of one session write the same bytes. The frame is the one Hono's writeSSE makes (the data is one line of JSON).
  const eventFrames = new WeakMap<EventRow, Uint8Array>();
  const encoder = new TextEncoder();
  const eventFrame = (row: EventRow): Uint8Array => {
    let frame = eventFrames.get(row);
    if (frame === undefined) eventFrames.set(row, (frame = encoder.encode(`event: ${row.type}\ndata: ${JSON.stringify(toPublicEvent(row))}\nid: ${row.seq}\n\n`)));
    return frame;
  };

  async function loadSession(actor: Actor, sessionId: string) {
    const row = await getSession(db, { teamId: actor.teamId, sessionId });
    if (!row) throw notFound('session');
    return row;
  }

  /**
   * Whether the agent forbids a session's initiator to decide its tool calls: its current version says, as for every
   * governance field, whatever version the session pinned (the workflow holds the value the session started with).
   */
  async function separationOfDuties(actor: Actor, session: SessionRow): Promise<boolean> {
    const found = await getAgent(db, { teamId: actor.teamId, agentId: session.agentId });
    return found ? governanceOf(found.version.definition as AgentDefinition).separationOfDuties : false;
  }

  async function sessionResponse(row: SessionRow) {
    return toSessionResponse(row, await listPendingApprovals(db, { teamId: row.teamId, sessionId: row.id, limit: 100 }));
  }

  /** Signals a running session; a session whose workflow has ended does not take events. */
  async function signal(sessionId: string, send: () => Promise<void>) {
    try {
      await send();
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) throw new ApiError(409, 'session.not_accepting', `session ${sessionId} has ended`);
      throw new ApiError(503, 'temporal.unavailable', 'the workflow service did not take the event; retry');
    }
  }

  /**
   * A request's decisions, sent to the session's workflow as one update: it records all of them (event, approval row,
   * audit row) before it answers, or refuses all of them, saying why. `fieldOf` names a refused call's field.
   */
  async function decide(sessionId: string, confirmations: WorkflowToolConfirmation[], fieldOf: (toolUseId: string) => string): Promise<RecordedDecision[]> {
    try {
      const outcome = await temporal.withDeadline(Date.now() + DECISION_DEADLINE_MS, () =>
        // the update id is the first event's: the client's own retries of this call are the same update
        handle(sessionId).executeUpdate(toolConfirmationUpdate, { args: [{ confirmations }], updateId: confirmations[0]!.eventId }),
      );
      return outcome.decisions;
    } catch (err) {
      const refused = err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure ? err.cause : null;
      if (refused) {
        const toolUseId = (refused.details?.[0] as { toolUseId?: string } | undefined)?.toolUseId ?? '';
        const field = fieldOf(toolUseId);
        switch (refused.type as ToolConfirmationRefusal) {
          case 'approval.not_pending':
            throw new ApiError(409, 'approval.not_pending', refused.message);
          case 'approval.unknown_call':
            throw new ApiError(404, 'resource.not_found', `${field}: ${refused.message}`, [{ name: field, reason: refused.message }]);
          case 'approval.self_approval':
            throw new ApiError(403, 'approval.self_approval', refused.message);
        }
      }
      if (err instanceof WorkflowNotFoundError) throw new ApiError(409, 'session.not_accepting', `session ${sessionId} has ended`);
      if (err instanceof WorkflowUpdateRPCTimeoutOrCancelledError) {
        throw new ApiError(503, 'temporal.unavailable', `session ${sessionId} did not answer within ${DECISION_DEADLINE_MS / 1000} s (no worker may be running); the decision may still be taken later: read the session before deciding again`);
      }
      throw new ApiError(503, 'temporal.unavailable', 'the workflow service did not take the decision; retry');
    }
  }

  app.openapi(
    createRoute({
      middleware: requires('sessions:write'),
      method: 'post',
      path: '/v1/sessions',
      tags,
      request: {
        body: jsonBody(SessionCreate),
        headers: z.object({ 'idempotency-key': z.string().min(1).max(200).optional() }),
      },
      responses: { 200: json(SessionSchema, 'The session, started'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const body = c.req.valid('json');
      const agentRef = typeof body.agent === 'string' ? { id: body.agent, version: undefined } : body.agent;
      const plan = await planSession(db, { teamId: actor.teamId, agentId: agentRef.id, agentVersion: agentRef.version, environmentId: body.environment_id, budget: body.budget, capabilities: deps.capabilities }).catch(
        rethrowStartError,
      );

      // an Idempotency-Key makes a retried request land on the session the first one created
      const idempotencyKey = c.req.valid('header')['idempotency-key'];
      const sessionId = idempotencyKey ? stableId('sesn', actor.teamId, idempotencyKey) : newId('sesn');
      if (idempotencyKey) {
        const existing = await getSession(db, { teamId: actor.teamId, sessionId });
        if (existing) return c.json(await sessionResponse(existing), 200);
      }
      c.set('sessionId', sessionId);
      const initialMessages = (body.initial_events ?? []).map((event, i) => ({ eventId: stableId('sevt', sessionId, 'initial', String(i)), text: textOf(event.content) }));

      const { row, created } = await recordSession(db, {
        id: sessionId,
        actor,
        plan,
        environmentId: body.environment_id ?? null,
        // a runtime that runs its processes outside any sandbox makes the session unsandboxed, whatever the setting
        sandbox: deps.capabilities[plan.snapshot.runtime.type]?.sandbox === 'none' ? 'none' : deps.sandboxKind,
        title: body.title ?? null,
        metadata: body.metadata ?? {},
        trigger: 'api',
        requestId: c.get('requestId'),
      });
      // a concurrent request with the same Idempotency-Key inserted the row first: it starts the workflow
      if (!created) return c.json(await sessionResponse(row), 200);

      const input = sessionWorkflowInput({ id: sessionId, actor, plan, trigger: 'api' }, initialMessages);
      try {
        await temporal.workflow.start(SESSION_WORKFLOW, {
          workflowId: sessionId,
          taskQueue: deps.taskQueue,
          args: [input],
          workflowIdConflictPolicy: WorkflowIdConflictPolicy.USE_EXISTING,
          memo: { teamId: actor.teamId, agentId: plan.snapshot.agentId },
        });
      } catch (err) {
        // the row must not claim a session that does not run
        await setSessionStatus(db, { sessionId, status: 'terminated', stopReason: { type: 'error', message: 'the session could not be started' } });
        throw new ApiError(503, 'temporal.unavailable', `the session could not be started: ${(err as Error).message}`);
      }
      return c.json(await sessionResponse(row), 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('sessions:read'),
      method: 'get',
      path: '/v1/sessions',
      tags,
      request: {
        query: PageQuery.extend({
          agent_id: z.string().max(100).optional(),
          runtime: z.string().max(50).optional(),
          status: z.enum(STATUSES).optional(),
          initiator: z.string().max(100).optional().openapi({ description: 'the key id that started the session' }),
          schedule_id: z.string().max(100).optional().openapi({ description: 'only the runs of this schedule' }),
          created_after: z.iso.datetime({ offset: true }).optional(),
          created_before: z.iso.datetime({ offset: true }).optional(),
          include_archived: z.enum(['true', 'false']).default('false'),
        }),
      },
      responses: { 200: json(page(SessionSchema, 'SessionPage'), 'Sessions across every runtime, newest first'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const q = c.req.valid('query');
      const rows = await listSessions(db, {
        teamId: actor.teamId,
        agentId: q.agent_id,
        runtime: q.runtime,
        status: q.status,
        initiatorKeyId: q.initiator,
        scheduleId: q.schedule_id,
        createdAfter: q.created_after ? new Date(q.created_after) : undefined,
        createdBefore: q.created_before ? new Date(q.created_before) : undefined,
        after: q.page,
        limit: q.limit,
        includeArchived: q.include_archived === 'true',
      });
      // the list shows pending approvals by count of the session page only; GET /v1/approvals lists them all
      return c.json({ data: rows.map((r) => toSessionResponse(r, [])), next_page: rows.length === q.limit ? (rows.at(-1)?.id ?? null) : null }, 200);
    },
  );

  app.openapi(
    createRoute({ middleware: requires('sessions:read'), method: 'get', path: '/v1/sessions/{session_id}', tags, request: { params: SessionId }, responses: { 200: json(SessionSchema, 'The session'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      // the hot read: the session and its pending approvals in one query
      const found = await getSessionWithApprovals(db, { teamId: actor.teamId, sessionId: c.req.valid('param').session_id, limit: 100 });
      if (!found) throw notFound('session');
      return c.json(toSessionResponse(found.session, found.pending), 200);
    },
  );

  app.openapi(
    createRoute({ middleware: requires('sessions:write'), method: 'post', path: '/v1/sessions/{session_id}/archive', tags, request: { params: SessionId }, responses: { 200: json(SessionSchema, 'The archived session'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const session = await loadSession(actor, c.req.valid('param').session_id);
      if (session.status !== 'terminated') {
        await signal(session.id, () => handle(session.id).signal(archiveSignal, { actor })).catch((err) => {
          if (!(err instanceof ApiError && err.status === 409)) throw err;
        });
      }
      const archived = await db.transaction(async (tx) => {
        const row = await markSessionArchived(tx, { teamId: actor.teamId, sessionId: session.id });
        await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'session.archive', target: session.id, decision: 'ok', reason: 'sessions:write' });
        return row!;
      });
      return c.json(await sessionResponse(archived), 200);
    },
  );

  app.openapi(
    createRoute({
      // which of the two a batch needs depends on its events: the key must hold one before its body is read
      middleware: requires('sessions:write', 'approvals:decide'),
      method: 'post',
      path: '/v1/sessions/{session_id}/events',
      tags,
      request: { params: SessionId, body: jsonBody(z.object({ events: z.array(UserEvent).min(1).max(50) })) },
      description:
        "`user.tool_confirmation` needs `approvals:decide`, the others `sessions:write`. A request's tool confirmations are taken by the session's workflow together, before its other events are sent: " +
        'all of them are recorded (the `user.tool_confirmation` event, the approval and its audit row) before the answer, which carries each as recorded, or none is and nothing of the request is sent. ' +
        'When two people decide the same call at once, one gets 200 and the other 409.',
      responses: {
        200: json(z.object({ data: z.array(EventSchema) }), 'The events as accepted; each tool confirmation as recorded (with `decided_by` and `processed_at`)'),
        ...problemResponses,
        404: { description: 'No such session (or another team\'s), or no such tool call in it: `invalid_params` names the `tool_use_id` field', content: problemResponses[404].content },
        409: {
          description:
            'The session has ended (`session.not_accepting`), or a tool call is no longer waiting (`approval.not_pending`), with `detail` "tool call <id> was already decided by <key id> (allow|deny)" (`system` when nobody decided before the deadline or an interrupt)',
          content: problemResponses[409].content,
        },
      },
    }),
    async (c) => {
      const actor = c.get('actor');
      const { events } = c.req.valid('json');
      // each event's own permission, before anything about the session is read
      for (const event of events) requirePermission(actor, event.type === 'user.tool_confirmation' ? 'approvals:decide' : 'sessions:write');
      const session = await loadSession(actor, c.req.valid('param').session_id);
      // separation of duties, from the agent's current version (the workflow holds it too)
      if (actor.keyId === session.initiatorKeyId && events.some((e) => e.type === 'user.tool_confirmation') && (await separationOfDuties(actor, session))) {
        throw new ApiError(403, 'approval.self_approval', `key ${actor.keyId} started session ${session.id}: another key must decide its tool calls`);
      }
      // check every event before sending any: a batch is taken whole or not at all
      const fieldOf = (toolUseId: string) => `body.events[${events.findIndex((e) => e.type === 'user.tool_confirmation' && e.tool_use_id === toolUseId)}].tool_use_id`;
      for (const [i, event] of events.entries()) {
        if (session.status === 'terminated' || session.archivedAt) throw new ApiError(409, 'session.not_accepting', `session ${session.id} has ended`);
        if (event.type === 'user.tool_confirmation') {
          const field = `body.events[${i}].tool_use_id`;
          if (fieldOf(event.tool_use_id) !== field) {
            const reason = `tool call ${event.tool_use_id} is decided by ${fieldOf(event.tool_use_id)} already: a request decides a call once`;
            throw new ApiError(400, 'request.invalid', `${field}: ${reason}`, [{ name: field, reason }]);
          }
          // the workflow has the last word (below); these answer the common cases without a round trip to it
          const approval = await getApproval(db, { teamId: actor.teamId, sessionId: session.id, toolUseId: event.tool_use_id });
          if (!approval) throw new ApiError(404, 'resource.not_found', `${field}: no tool call ${event.tool_use_id} in this session`, [{ name: field, reason: 'no such tool call in this session' }]);
          if (approval.status !== 'pending') {
            throw new ApiError(409, 'approval.not_pending', alreadyDecided(event.tool_use_id, { result: approval.status === 'allowed' ? 'allow' : 'deny', decidedBy: approval.decidedByKeyId }));
          }
        }
      }
      const ids = events.map(() => newId('sevt'));
      // the decisions go first, together: the workflow records all of them or refuses the request (409 when another
      // person decided a call first), and then nothing else of it is sent either
      const confirmations = events.flatMap((event, i) =>
        event.type === 'user.tool_confirmation' ? [{ toolUseId: event.tool_use_id, result: event.result, denyMessage: event.deny_message, actor, eventId: ids[i]! }] : [],
      );
      const decided = confirmations.length > 0 ? await decide(session.id, confirmations, fieldOf) : [];
      const accepted = [];
      for (const [i, event] of events.entries()) {
        const eventId = ids[i]!;
        if (event.type === 'user.tool_confirmation') {
          // the decision as recorded: its event, with who decided and when
          const recorded = await findEvent(db, session.id, eventId);
          const decision = decided.find((d) => d.eventId === eventId);
          accepted.push(recorded ? toPublicEvent(recorded) : { id: eventId, ...event, decided_by: decision?.decidedBy ?? actor.keyId, processed_at: null });
          continue;
        }
        if (event.type === 'user.message') {
          await signal(session.id, () => handle(session.id).signal(userMessageSignal, { eventId, text: textOf(event.content) }));
        } else {
          await signal(session.id, () => handle(session.id).signal(interruptSignal, { actor, eventId }));
        }
        accepted.push({ id: eventId, ...event, processed_at: null });
      }
      return c.json({ data: accepted }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('sessions:read'),
      method: 'get',
      path: '/v1/sessions/{session_id}/events',
      tags,
      request: { params: SessionId, query: PageQuery.extend({ order: z.enum(['asc', 'desc']).default('asc') }) },
      responses: { 200: json(page(EventSchema, 'SessionEventPage'), 'The event log'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const session = await loadSession(actor, c.req.valid('param').session_id);
      const q = c.req.valid('query');
      const cursor = q.page === undefined ? undefined : Number(q.page);
      if (cursor !== undefined && !Number.isInteger(cursor)) {
        throw new ApiError(400, 'request.invalid', 'query.page: not a cursor returned by this endpoint', [{ name: 'query.page', reason: 'not a cursor returned by this endpoint' }]);
      }
      const rows = await listEvents(db, {
        sessionId: session.id,
        limit: q.limit,
        order: q.order,
        ...(q.order === 'asc' ? { afterSeq: cursor } : { beforeSeq: cursor }),
      });
      return c.json({ data: rows.map(toPublicEvent), next_page: rows.length === q.limit ? String(rows.at(-1)!.seq) : null }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('sessions:read'),
      method: 'get',
      path: '/v1/sessions/{session_id}/events/stream',
      tags,
      request: {
        params: SessionId,
        headers: z.object({ 'last-event-id': z.string().regex(/^\d+$/, 'must be the id of an event frame').optional() }),
      },
      description:
        `At most AGENTPLANE_MAX_STREAMS_PER_KEY streams (default ${DEFAULT_MAX_STREAMS_PER_KEY}) per key at once in one API process; one more is a 429 with Retry-After. ` +
        "The key is checked again while the stream is open: once it is revoked, the stream sends a last frame `event: error` whose data is the problem (401 auth.invalid_key), then closes.",
      responses: {
        200: { description: 'Server-sent events: `id:` (the event sequence number), `event:` (the event type), `data:` (the event)', content: { 'text/event-stream': { schema: z.string() } } },
        ...problemResponses,
        ...rateLimitedResponse,
      },
    }),
    async (c) => {
      const actor = c.get('actor');
      const session = await loadSession(actor, c.req.valid('param').session_id);
      const lastEventId = c.req.valid('header')['last-event-id'];
      // without Last-Event-ID the stream starts now (like Managed Agents); with it, it replays what was missed
      let cursor = lastEventId !== undefined ? Number(lastEventId) : session.eventSeq;
      const release = streamSlots.acquire(actor.keyId);
      if (!release) {
        c.header('retry-after', String(STREAM_RETRY_AFTER_SECONDS));
        throw new ApiError(
          429,
          'request.rate_limited',
          `key ${actor.keyId} already has ${streamSlots.max} event streams open, the most one key may hold at once on this API process; close one and retry`,
        );
      }
      const requestId = c.get('requestId');
      return eventStreamResponse(c, async (stream) => {
        // followed before the first read: whatever that read misses is committed later, and wakes the stream
        const follower = eventStreams.follow({ teamId: actor.teamId, keyId: actor.keyId, sessionId: session.id, seq: session.eventSeq });
        try {
          let closed = false;
          stream.onAbort(() => {
            closed = true;
            follower.close();
          });
          let idleSince = Date.now();
          /** read before waiting: at first (what the client missed), and again while a read comes back full */
          let more = true;
          while (!closed) {
            if (follower.revoked) {
              // no id: a client that resumes from Last-Event-ID resumes from the last event, and is refused with 401
              const revoked = new ApiError(401, 'auth.invalid_key', 'the API key was revoked while the stream was open; the stream is closed');
              await stream.write(`event: error\ndata: ${JSON.stringify(problemBody(revoked, requestId))}\n\n`);
              return;
            }
            if (more || follower.behind) {
              const rows = await follower.read(cursor);
              // one write for the whole read
              if (rows.length > 0) await stream.write(rows.length === 1 ? eventFrame(rows[0]!) : Buffer.concat(rows.map(eventFrame)));
              for (const row of rows) {
                cursor = row.seq;
                if (row.type === 'session.status_terminated') closed = true;
              }
              more = rows.length === EVENT_PAGE;
              if (rows.length > 0) idleSince = Date.now();
              if (more) continue;
            }
            if (Date.now() - idleSince >= STREAM_PING_MS) {
              await stream.write(PING_FRAME);
              idleSince = Date.now();
            }
            if (!closed) await follower.wait(idleSince + STREAM_PING_MS - Date.now());
          }
        } finally {
          // however the stream ends: the session terminated, the client went away, the key was revoked, a read failed
          follower.close();
          release();
        }
      }, (err) => log({ level: 'ERROR', msg: 'event stream failed', requestId, sessionId: session.id, error: String(err) }));
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('approvals:read'),
      method: 'get',
      path: '/v1/approvals',
      tags: ['approvals'],
      request: { query: PageQuery.extend({ session_id: z.string().max(100).optional() }) },
      responses: { 200: json(page(ApprovalSchema, 'ApprovalPage'), 'Tool calls waiting for a decision, across the fleet'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const q = c.req.valid('query');
      const rows = await listPendingApprovals(db, { teamId: actor.teamId, sessionId: q.session_id, limit: q.limit });
      return c.json({ data: rows.map(toApproval), next_page: null }, 200);
    },
  );
}
