import { bigserial, index, jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * Append-only and hash-chained: hash = sha256(prev_hash + canonical row). A trigger (migration 0001) makes the
 * database refuse UPDATE and DELETE. Never holds a secret.
 */
export const auditLog = pgTable(
  'audit_log',
  {
    seq: bigserial('seq', { mode: 'number' }).primaryKey(),
    id: text('id').notNull().unique(),
    teamId: text('team_id').notNull(),
    actorKeyId: text('actor_key_id').notNull(),
    actorRole: text('actor_role').notNull(),
    action: text('action').notNull(),
    target: text('target').notNull(),
    decision: text('decision').notNull(),
    reason: text('reason').notNull(),
    requestId: text('request_id'),
    traceId: text('trace_id'),
    data: jsonb('data').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
    prevHash: text('prev_hash').notNull(),
    hash: text('hash').notNull(),
  },
  (t) => [index('audit_team_idx').on(t.teamId, t.seq)],
);
