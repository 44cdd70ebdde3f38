import { bigint, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';
import { teams } from './teams';

/** The queryable index of every session; Temporal history stays the durable record of decisions. */
export const sessions = pgTable(
  'sessions',
  {
    id: text('id').primaryKey(),
    teamId: text('team_id').notNull().references(() => teams.id),
    agentId: text('agent_id').notNull(),
    agentVersion: integer('agent_version').notNull(),
    runtime: text('runtime').notNull(),
    environmentId: text('environment_id'),
    /**
     * the sandbox its processes ran in (governance/types.ts SANDBOX_KINDS): set from the starting process's setting,
     * and turned to `none` for good by the first turn a worker runs without one
     */
    sandbox: text('sandbox').notNull().default('bubblewrap'),
    title: text('title'),
    metadata: jsonb('metadata').notNull(),
    status: text('status').notNull(),
    stopReason: jsonb('stop_reason'),
    initiatorKeyId: text('initiator_key_id').notNull(),
    trigger: text('trigger').notNull(),
    /** the schedule that started the session (trigger 'schedule') */
    scheduleId: text('schedule_id'),
    /** for a scheduled run: the time Temporal scheduled it for */
    scheduledAt: timestamp('scheduled_at', { withTimezone: true }),
    budget: jsonb('budget').notNull(),
    inputTokens: bigint('input_tokens', { mode: 'number' }).notNull().default(0),
    outputTokens: bigint('output_tokens', { mode: 'number' }).notNull().default(0),
    cacheReadTokens: bigint('cache_read_tokens', { mode: 'number' }).notNull().default(0),
    cacheCreationTokens: bigint('cache_creation_tokens', { mode: 'number' }).notNull().default(0),
    costMicros: bigint('cost_micros', { mode: 'number' }).notNull().default(0),
    /** last assigned event sequence number; events get seq = event_seq + 1 under the row lock */
    eventSeq: integer('event_seq').notNull().default(0),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
    archivedAt: timestamp('archived_at', { withTimezone: true }),
  },
  (t) => [
    // ids are time-ordered (ulid), so the fleet list pages by id; each filter has its own index
    index('sessions_team_id_idx').on(t.teamId, t.id),
    index('sessions_team_status_idx').on(t.teamId, t.status, t.id),
    index('sessions_team_agent_idx').on(t.teamId, t.agentId, t.id),
    index('sessions_team_runtime_idx').on(t.teamId, t.runtime, t.id),
    index('sessions_schedule_idx').on(t.scheduleId, t.id),
  ],
);

/** The event log: ordered per session (seq has no gaps), deduplicated per source event. */
export const sessionEvents = pgTable(
  'session_events',
  {
    id: text('id').primaryKey(),
    sessionId: text('session_id').notNull().references(() => sessions.id),
    seq: integer('seq').notNull(),
    sourceId: text('source_id').notNull(),
    type: text('type').notNull(),
    payload: jsonb('payload').notNull(),
    /** the OpenTelemetry trace the event was written in (a session's trace starts at the request that created it) */
    traceId: text('trace_id'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('session_events_seq_idx').on(t.sessionId, t.seq),
    uniqueIndex('session_events_source_idx').on(t.sessionId, t.sourceId),
  ],
);

/** Tool calls waiting for (or decided by) a person. */
export const approvals = pgTable(
  'approvals',
  {
    sessionId: text('session_id').notNull().references(() => sessions.id),
    toolUseId: text('tool_use_id').notNull(),
    teamId: text('team_id').notNull(),
    tool: text('tool').notNull(),
    input: jsonb('input').notNull(),
    status: text('status').notNull(),
    requestedAt: timestamp('requested_at', { withTimezone: true }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
    decidedAt: timestamp('decided_at', { withTimezone: true }),
    decidedByKeyId: text('decided_by_key_id'),
    reason: text('reason'),
  },
  (t) => [primaryKey({ columns: [t.sessionId, t.toolUseId] }), index('approvals_team_status_idx').on(t.teamId, t.status)],
);

/** Where an adapter finds its runtime session again after a worker dies. No secrets. */
export const runtimeSessions = pgTable('runtime_sessions', {
  sessionId: text('session_id').primaryKey().references(() => sessions.id),
  runtime: text('runtime').notNull(),
  runtimeSessionId: text('runtime_session_id').notNull(),
  state: jsonb('state').notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});
