/**
 * Schedules: a session started on a timetable. Each schedule is a Temporal Schedule (same id) whose action starts
 * a `scheduledRun` workflow; Temporal fires it from the server, so a fire happens once however many API and
 * worker replicas run. The `schedules` row holds what a run starts and who it runs for, for listing and RBAC.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { ScheduleNotFoundError, type ScheduleDescription, type ScheduleOverlapPolicy, type ScheduleSpec } from '@temporalio/client';
import { appendAudit } from '../../db/queries/audit';
import { getSchedule, insertSchedule, listSchedules, markScheduleDeleted, updateSchedule, type ScheduleChanges, type ScheduleRow } from '../../db/queries/schedules';
import { listSessions } from '../../db/queries/sessions';
import { planSession, SessionStartError } from '../../db/queries/session-start';
import { newId } from '../../db/ids';
import { microsToUsd } from '../../governance/budget';
import { cronProblem, isKnownTimeZone } from '../../governance/cron';
import type { Actor } from '../../governance/types';
import { SCHEDULED_RUN_WORKFLOW, type ScheduledRunInput } from '../../workflows/definitions';
import { requires, type App, type AppDeps } from '../create-app';
import { ApiError, notFound } from '../errors';
import { idParam, json, jsonBody, Metadata, page, PageQuery, problemResponses, Version } from '../schemas/common';
import { auditActor } from './agents.routes';

const tags = ['schedules'];
const ScheduleId = idParam('schedule_id', 'sched');

/** The overlap policies a schedule takes, and Temporal's name for each. */
const OVERLAP = {
  skip: 'SKIP',
  buffer_one: 'BUFFER_ONE',
  buffer_all: 'BUFFER_ALL',
  allow_all: 'ALLOW_ALL',
  cancel_other: 'CANCEL_OTHER',
} as const satisfies Record<string, ScheduleOverlapPolicy>;
type Overlap = keyof typeof OVERLAP;
const OverlapSchema = z.enum(Object.keys(OVERLAP) as [Overlap, ...Overlap[]]).openapi({
  description: 'what happens when a run is due while the previous one is still going: skip it, buffer one (or all) to run after, run both, or cancel (interrupt) the previous one',
});

const SpecSchema = z
  .object({
    cron: z.array(z.string().min(1).max(200)).min(1).max(10).optional().openapi({ description: 'cron expressions (5 fields, or @daily etc.)', example: ['0 9 * * MON-FRI'] }),
    intervals: z
      .array(z.object({ every_seconds: z.number().int().min(1).max(366 * 86_400), offset_seconds: z.number().int().min(0).max(366 * 86_400).optional() }))
      .min(1)
      .max(10)
      .optional(),
    time_zone: z.string().min(1).max(100).default('UTC').openapi({ description: 'IANA time zone the cron expressions are read in', example: 'Europe/Berlin' }),
    jitter_seconds: z.number().int().min(0).max(86_400).default(0).openapi({ description: 'each run starts up to this much later, at random' }),
  })
  .superRefine((spec, ctx) => {
    if (!spec.cron && !spec.intervals) ctx.addIssue({ code: 'custom', path: ['cron'], message: 'give cron expressions or intervals' });
    for (const [i, expression] of (spec.cron ?? []).entries()) {
      const problem = cronProblem(expression);
      if (problem) ctx.addIssue({ code: 'custom', path: ['cron', i], message: `not a cron expression: ${problem}` });
    }
    for (const [i, interval] of (spec.intervals ?? []).entries()) {
      if ((interval.offset_seconds ?? 0) >= interval.every_seconds) ctx.addIssue({ code: 'custom', path: ['intervals', i, 'offset_seconds'], message: 'must be less than every_seconds' });
    }
    if (!isKnownTimeZone(spec.time_zone)) ctx.addIssue({ code: 'custom', path: ['time_zone'], message: `unknown time zone ${spec.time_zone}` });
  });
type Spec = z.infer<typeof SpecSchema>;

const PoliciesSchema = z.object({
  overlap: OverlapSchema.default('skip'),
  catchup_window_seconds: z.number().int().min(10).max(365 * 86_400).default(60).openapi({ description: 'after an outage, runs missed by at most this long still happen' }),
});
type Policies = z.infer<typeof PoliciesSchema>;

const AgentRef = z.union([
  z.string().min(1).max(100),
  z.object({ type: z.literal('agent'), id: z.string().min(1).max(100), version: Version.optional() }),
]);

const ScheduleCreate = z.object({
  agent: AgentRef.openapi({ description: 'the agent each run starts; without a version, the version current when the run fires' }),
  prompt: z.string().min(1).max(1_000_000).openapi({ description: 'the first user message of each run' }),
  environment_id: z.string().min(1).max(100).optional(),
  title: z.string().max(512).nullable().optional(),
  metadata: Metadata.optional(),
  budget: z.object({ max_cost_usd: z.number().positive().max(1_000_000) }).optional().openapi({ description: 'the budget of each run' }),
  spec: SpecSchema,
  policies: PoliciesSchema.default({ overlap: 'skip', catchup_window_seconds: 60 }),
  paused: z.boolean().default(false),
  note: z.string().max(1000).optional(),
});

const ScheduleUpdate = z.object({
  agent: AgentRef.optional(),
  prompt: z.string().min(1).max(1_000_000).optional(),
  environment_id: z.string().min(1).max(100).nullable().optional(),
  title: z.string().max(512).nullable().optional(),
  metadata: Metadata.optional(),
  budget: z.object({ max_cost_usd: z.number().positive().max(1_000_000) }).nullable().optional(),
  spec: SpecSchema.optional(),
  policies: PoliciesSchema.optional(),
});

const ScheduleSchema = z
  .object({
    id: z.string(),
    type: z.literal('schedule'),
    agent: z.object({ id: z.string(), version: z.number().int().nullable() }),
    prompt: z.string(),
    environment_id: z.string().nullable(),
    title: z.string().nullable(),
    metadata: z.record(z.string(), z.string()),
    budget: z.object({ max_cost_usd: z.number().optional() }),
    spec: z.object({
      cron: z.array(z.string()).optional(),
      intervals: z.array(z.object({ every_seconds: z.number(), offset_seconds: z.number().optional() })).optional(),
      time_zone: z.string(),
      jitter_seconds: z.number(),
    }),
    policies: z.object({ overlap: OverlapSchema, catchup_window_seconds: z.number() }),
    state: z.object({ paused: z.boolean(), note: z.string().nullable() }),
    info: z
      .object({
        next_run_times: z.array(z.string()),
        runs_started: z.number().int(),
        runs_skipped_for_overlap: z.number().int(),
        runs_missed_catchup_window: z.number().int(),
        running: z.number().int().openapi({ description: 'runs whose first turn has not settled yet' }),
      })
      .optional()
      .openapi({ description: 'what Temporal reports for the schedule (single-schedule reads only)' }),
    created_by: z.object({ key_id: z.string() }),
    created_at: z.string(),
    updated_at: z.string(),
  })
  .openapi('Schedule');
type ScheduleResponse = z.infer<typeof ScheduleSchema>;

const RunSchema = z
  .object({
    session_id: z.string(),
    scheduled_at: z.string().nullable(),
    status: z.enum(['idle', 'running', 'requires_action', 'terminated']),
    stop_reason: z.record(z.string(), z.unknown()).nullable(),
    cost_usd: z.number(),
    created_at: z.string(),
  })
  .openapi('ScheduleRun');

const Backfill = z
  .object({
    start: z.iso.datetime({ offset: true }),
    end: z.iso.datetime({ offset: true }),
    overlap: OverlapSchema.optional().openapi({ description: 'the overlap policy for the backfilled runs (default: the schedule\'s)' }),
  })
  .refine((b) => new Date(b.start) < new Date(b.end), { path: ['end'], message: 'must be after start' });

function toResponse(row: ScheduleRow, description?: ScheduleDescription): ScheduleResponse {
  const policies = row.policies as Policies;
  return {
    id: row.id,
    type: 'schedule',
    agent: { id: row.agentId, version: row.agentVersion },
    prompt: row.prompt,
    environment_id: row.environmentId,
    title: row.title,
    metadata: row.metadata as Record<string, string>,
    budget: row.budget as { max_cost_usd?: number },
    spec: row.spec as Spec,
    // read back from Temporal when we have it: what is there is what fires
    policies: description ? { overlap: overlapName(description.policies.overlap), catchup_window_seconds: Math.round(description.policies.catchupWindow / 1000) } : policies,
    state: description ? { paused: description.state.paused, note: description.state.note || null } : { paused: row.state === 'paused', note: row.note },
    ...(description
      ? {
          info: {
            next_run_times: description.info.nextActionTimes.map((t) => t.toISOString()),
            runs_started: description.info.numActionsTaken,
            runs_skipped_for_overlap: description.info.numActionsSkippedOverlap,
            runs_missed_catchup_window: description.info.numActionsMissedCatchupWindow,
            running: description.info.runningActions.length,
          },
        }
      : {}),
    created_by: { key_id: row.createdByKeyId },
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  };
}

function overlapName(policy: ScheduleOverlapPolicy): Overlap {
  const found = (Object.entries(OVERLAP) as Array<[Overlap, ScheduleOverlapPolicy]>).find(([, temporal]) => temporal === policy);
  if (!found) throw new Error(`schedule has overlap policy ${policy}, which the API does not offer`);
  return found[0];
}

function toTemporalSpec(spec: Spec): ScheduleSpec {
  return {
    ...(spec.cron ? { cronExpressions: spec.cron } : {}),
    ...(spec.intervals ? { intervals: spec.intervals.map((i) => ({ every: i.every_seconds * 1000, offset: (i.offset_seconds ?? 0) * 1000 })) } : {}),
    timezone: spec.time_zone,
    jitter: spec.jitter_seconds * 1000,
  };
}

function toTemporalPolicies(policies: Policies) {
  return { overlap: OVERLAP[policies.overlap], catchupWindow: policies.catchup_window_seconds * 1000 };
}

const NoteBody = z.object({ note: z.string().max(1000).optional() });
const TriggerBody = z.object({ overlap: OverlapSchema.optional().openapi({ description: "for this run only (default: the schedule's)" }) });

/**
 * For a route whose body may be left out (validated like any other when sent as JSON, {} when absent): a body
 * sent as anything else is refused rather than ignored.
 */
function refuseNonJson(contentType: string | undefined): void {
  if (contentType && !/^application\/([a-z0-9.+-]*\+)?json/i.test(contentType)) throw new ApiError(400, 'request.invalid', 'send the body as application/json, or send none');
}

const agentRefOf = (agent: z.infer<typeof AgentRef>) => (typeof agent === 'string' ? { id: agent, version: undefined } : agent);

/** The server refused what we sent (a spec it cannot read): the caller's input, named. */
function temporalError(err: unknown, field: string): never {
  if (err instanceof ApiError) throw err;
  if (err instanceof ScheduleNotFoundError) throw notFound('schedule');
  const code = (err as { code?: number; cause?: { code?: number } }).code ?? (err as { cause?: { code?: number } }).cause?.code;
  // gRPC INVALID_ARGUMENT
  if (code === 3) throw new ApiError(400, 'request.invalid', `${field}: ${(err as Error).message}`, [{ name: field, reason: (err as Error).message }]);
  throw new ApiError(503, 'temporal.unavailable', `the schedule service did not answer: ${(err as Error).message}`);
}

export function registerScheduleRoutes(app: App, deps: AppDeps): void {
  const { db, temporal } = deps;
  const handleOf = (scheduleId: string) => temporal.schedule.getHandle(scheduleId);

  async function loadSchedule(actor: Actor, scheduleId: string): Promise<ScheduleRow> {
    const row = await getSchedule(db, { teamId: actor.teamId, scheduleId });
    if (!row) throw notFound('schedule');
    return row;
  }

  /** The agent, environment and budget a run would start with, checked as POST /v1/sessions checks them. */
  async function checkRunnable(actor: Actor, agent: { id: string; version?: number }, environmentId: string | null | undefined, budget: { max_cost_usd: number } | null | undefined) {
    try {
      await planSession(db, { teamId: actor.teamId, agentId: agent.id, agentVersion: agent.version, environmentId, budget: budget ?? undefined, capabilities: deps.capabilities });
    } catch (err) {
      if (err instanceof SessionStartError) throw new ApiError(err.status, err.code, err.message, err.field ? [{ name: err.field, reason: err.message }] : undefined);
      throw err;
    }
  }

  async function describe(scheduleId: string): Promise<ScheduleDescription> {
    return handleOf(scheduleId).describe().catch((err) => temporalError(err, 'schedule'));
  }

  /** A state change, its audit row and the Temporal call: the row commits only if Temporal took the change. */
  async function change(actor: Actor, requestId: string, row: ScheduleRow, action: string, changes: ScheduleChanges, temporalCall: () => Promise<void>, data?: Record<string, unknown>) {
    return db.transaction(async (tx) => {
      const updated = await updateSchedule(tx, { teamId: actor.teamId, scheduleId: row.id, changes });
      if (!updated) throw notFound('schedule');
      await appendAudit(tx, { ...auditActor(actor, requestId), action, target: row.id, decision: 'ok', reason: 'schedules:write', ...(data ? { data } : {}) });
      await temporalCall();
      return updated;
    });
  }

  app.openapi(
    createRoute({
      middleware: requires('schedules:write'),
      method: 'post',
      path: '/v1/schedules',
      tags,
      request: { body: jsonBody(ScheduleCreate) },
      responses: { 200: json(ScheduleSchema, 'The schedule, created'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const body = c.req.valid('json');
      const agent = agentRefOf(body.agent);
      await checkRunnable(actor, agent, body.environment_id, body.budget);
      const scheduleId = newId('sched');
      const row = await db.transaction(async (tx) => {
        const inserted = await insertSchedule(tx, {
          id: scheduleId,
          teamId: actor.teamId,
          agentId: agent.id,
          agentVersion: agent.version ?? null,
          environmentId: body.environment_id ?? null,
          prompt: body.prompt,
          title: body.title ?? null,
          metadata: body.metadata ?? {},
          budget: body.budget ?? {},
          spec: body.spec,
          policies: body.policies,
          state: body.paused ? 'paused' : 'active',
          note: body.note ?? null,
          createdByKeyId: actor.keyId,
          createdByRole: actor.role,
        });
        await appendAudit(tx, {
          ...auditActor(actor, c.get('requestId')),
          action: 'schedule.create',
          target: scheduleId,
          decision: 'ok',
          reason: 'schedules:write',
          data: { agent_id: agent.id, spec: body.spec, policies: body.policies },
        });
        const args: [ScheduledRunInput] = [{ scheduleId, teamId: actor.teamId }];
        await temporal.schedule
          .create({
            scheduleId,
            spec: toTemporalSpec(body.spec),
            action: { type: 'startWorkflow', workflowType: SCHEDULED_RUN_WORKFLOW, workflowId: `${scheduleId}-run`, taskQueue: deps.taskQueue, args },
            policies: toTemporalPolicies(body.policies),
            state: { paused: body.paused, ...(body.note ? { note: body.note } : {}) },
            memo: { teamId: actor.teamId },
          })
          .catch((err) => temporalError(err, 'body.spec'));
        return inserted;
      });
      return c.json(toResponse(row, await describe(scheduleId)), 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('schedules:read'),
      method: 'get',
      path: '/v1/schedules',
      tags,
      request: { query: PageQuery.extend({ agent_id: z.string().max(100).optional() }) },
      responses: { 200: json(page(ScheduleSchema, 'SchedulePage'), 'Schedules, newest first'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const q = c.req.valid('query');
      const rows = await listSchedules(db, { teamId: actor.teamId, agentId: q.agent_id, after: q.page, limit: q.limit });
      return c.json({ data: rows.map((r) => toResponse(r)), next_page: rows.length === q.limit ? (rows.at(-1)?.id ?? null) : null }, 200);
    },
  );

  app.openapi(
    createRoute({ middleware: requires('schedules:read'), method: 'get', path: '/v1/schedules/{schedule_id}', tags, request: { params: ScheduleId }, responses: { 200: json(ScheduleSchema, 'The schedule, with what Temporal reports for it'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const row = await loadSchedule(actor, c.req.valid('param').schedule_id);
      return c.json(toResponse(row, await describe(row.id)), 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('schedules:write'),
      method: 'patch',
      path: '/v1/schedules/{schedule_id}',
      tags,
      request: { params: ScheduleId, body: jsonBody(ScheduleUpdate) },
      responses: { 200: json(ScheduleSchema, 'The schedule, changed; runs already started keep what they started with'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const body = c.req.valid('json');
      const row = await loadSchedule(actor, c.req.valid('param').schedule_id);
      const agent = body.agent ? agentRefOf(body.agent) : { id: row.agentId, version: row.agentVersion ?? undefined };
      const environmentId = body.environment_id === undefined ? row.environmentId : body.environment_id;
      const budget = body.budget === undefined ? (row.budget as { max_cost_usd?: number }) : (body.budget ?? {});
      await checkRunnable(actor, agent, environmentId, budget.max_cost_usd === undefined ? null : { max_cost_usd: budget.max_cost_usd });
      const changes: ScheduleChanges = {
        agentId: agent.id,
        agentVersion: agent.version ?? null,
        environmentId,
        budget,
        ...(body.prompt !== undefined ? { prompt: body.prompt } : {}),
        ...(body.title !== undefined ? { title: body.title } : {}),
        ...(body.metadata !== undefined ? { metadata: body.metadata } : {}),
        ...(body.spec ? { spec: body.spec } : {}),
        ...(body.policies ? { policies: body.policies } : {}),
      };
      const timing = body.spec || body.policies;
      const updated = await change(
        actor,
        c.get('requestId'),
        row,
        'schedule.update',
        changes,
        async () => {
          if (!timing) return;
          const spec = toTemporalSpec(body.spec ?? (row.spec as Spec));
          const policies = toTemporalPolicies(body.policies ?? (row.policies as Policies));
          await handleOf(row.id)
            .update((previous) => ({ ...previous, spec, policies: { ...previous.policies, ...policies } }))
            .catch((err) => temporalError(err, 'body.spec'));
        },
        { fields: Object.keys(body) },
      );
      return c.json(toResponse(updated, await describe(row.id)), 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('schedules:write'),
      method: 'delete',
      path: '/v1/schedules/{schedule_id}',
      tags,
      request: { params: ScheduleId },
      responses: { 200: json(ScheduleSchema, 'The deleted schedule; runs already going finish, their sessions stay'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const scheduleId = c.req.valid('param').schedule_id;
      const deleted = await db.transaction(async (tx) => {
        const row = await markScheduleDeleted(tx, { teamId: actor.teamId, scheduleId });
        if (!row) throw notFound('schedule');
        await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'schedule.delete', target: scheduleId, decision: 'ok', reason: 'schedules:write' });
        await handleOf(scheduleId)
          .delete()
          .catch((err) => {
            // already gone from Temporal: the row goes too
            if (!(err instanceof ScheduleNotFoundError)) temporalError(err, 'schedule');
          });
        return row;
      });
      return c.json(toResponse(deleted), 200);
    },
  );

  for (const action of ['pause', 'unpause'] as const) {
    app.openapi(
      createRoute({
        middleware: requires('schedules:write'),
        method: 'post',
        path: `/v1/schedules/{schedule_id}/${action}`,
        tags,
        request: { params: ScheduleId, body: { required: false, content: { 'application/json': { schema: NoteBody } } } },
        responses: { 200: json(ScheduleSchema, action === 'pause' ? 'The schedule, paused: it fires nothing until unpaused' : 'The schedule, firing again'), ...problemResponses },
      }),
      async (c) => {
        const actor = c.get('actor');
        const row = await loadSchedule(actor, c.req.valid('param').schedule_id);
        refuseNonJson(c.req.header('content-type'));
        const { note } = c.req.valid('json');
        const updated = await change(actor, c.get('requestId'), row, `schedule.${action}`, { state: action === 'pause' ? 'paused' : 'active', note: note ?? null }, () =>
          (action === 'pause' ? handleOf(row.id).pause(note) : handleOf(row.id).unpause(note)).catch((err) => temporalError(err, 'schedule')),
        );
        return c.json(toResponse(updated, await describe(row.id)), 200);
      },
    );
  }

  app.openapi(
    createRoute({
      middleware: requires('schedules:write'),
      method: 'post',
      path: '/v1/schedules/{schedule_id}/trigger',
      tags,
      request: { params: ScheduleId, body: { required: false, content: { 'application/json': { schema: TriggerBody } } } },
      responses: { 200: json(z.object({ schedule_id: z.string(), triggered: z.literal(true) }), 'One run, now (also when paused)'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const row = await loadSchedule(actor, c.req.valid('param').schedule_id);
      refuseNonJson(c.req.header('content-type'));
      const { overlap } = c.req.valid('json');
      await change(actor, c.get('requestId'), row, 'schedule.trigger', {}, () =>
        handleOf(row.id)
          // the SDK's default is "allow all"; a run triggered by hand follows the schedule's policy unless told otherwise
          .trigger(OVERLAP[overlap ?? (row.policies as Policies).overlap])
          .catch((err) => temporalError(err, 'schedule')),
      );
      return c.json({ schedule_id: row.id, triggered: true as const }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('schedules:write'),
      method: 'post',
      path: '/v1/schedules/{schedule_id}/backfill',
      tags,
      request: { params: ScheduleId, body: jsonBody(Backfill) },
      responses: { 200: json(z.object({ schedule_id: z.string(), backfilled: z.literal(true) }), 'The runs the schedule would have started in [start, end), started now'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const row = await loadSchedule(actor, c.req.valid('param').schedule_id);
      const body = c.req.valid('json');
      await change(actor, c.get('requestId'), row, 'schedule.backfill', {}, () =>
        handleOf(row.id)
          .backfill({ start: new Date(body.start), end: new Date(body.end), ...(body.overlap ? { overlap: OVERLAP[body.overlap] } : {}) })
          .catch((err) => temporalError(err, 'body')),
      { start: body.start, end: body.end, overlap: body.overlap ?? null });
      return c.json({ schedule_id: row.id, backfilled: true as const }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('schedules:read'),
      method: 'get',
      path: '/v1/schedules/{schedule_id}/runs',
      tags,
      request: { params: ScheduleId, query: PageQuery },
      responses: { 200: json(page(RunSchema, 'ScheduleRunPage'), 'The sessions the schedule started, newest first, with status and cost'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const row = await loadSchedule(actor, c.req.valid('param').schedule_id);
      const q = c.req.valid('query');
      const sessions = await listSessions(db, { teamId: actor.teamId, scheduleId: row.id, after: q.page, limit: q.limit, includeArchived: true });
      const data = sessions.map((s) => ({
        session_id: s.id,
        scheduled_at: s.scheduledAt?.toISOString() ?? null,
        status: s.status as z.infer<typeof RunSchema>['status'],
        stop_reason: (s.stopReason as Record<string, unknown> | null) ?? null,
        cost_usd: microsToUsd(s.costMicros),
        created_at: s.createdAt.toISOString(),
      }));
      return c.json({ data, next_page: sessions.length === q.limit ? (sessions.at(-1)?.id ?? null) : null }, 200);
    },
  );
}
