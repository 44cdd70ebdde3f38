import { bigint, bigserial, index, jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

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

/**
 * How far the chain has been proven: a walk of GET /v1/audit/verify that finds every row sound up to row `seq`
 * records that row's hash here, and the next walk checks that row still has it and walks only the rows after it.
 * One row per walk that got further; the highest seq counts. No guard like audit_log's: a checkpoint changed or
 * removed by the application role can only make a walk start earlier, or be reported as a break (its hash no longer
 * matches the row); rows before a checkpoint are the ones a superuser's change would escape, whatever guards this table.
 */
export const auditCheckpoints = pgTable('audit_checkpoints', {
  seq: bigint('seq', { mode: 'number' }).primaryKey(),
  hash: text('hash').notNull(),
  verifiedAt: timestamp('verified_at', { withTimezone: true }).notNull().defaultNow(),
});
