import { bigint, index, pgTable, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

/** Append-only charges. One row per runtime usage event: a replayed event cannot be charged twice. */
export const ledger = pgTable(
  'ledger',
  {
    id: text('id').primaryKey(),
    teamId: text('team_id').notNull(),
    agentId: text('agent_id').notNull(),
    sessionId: text('session_id').notNull(),
    sourceId: text('source_id').notNull(),
    model: text('model').notNull(),
    inputTokens: bigint('input_tokens', { mode: 'number' }).notNull(),
    outputTokens: bigint('output_tokens', { mode: 'number' }).notNull(),
    cacheReadTokens: bigint('cache_read_tokens', { mode: 'number' }).notNull(),
    cacheCreationTokens: bigint('cache_creation_tokens', { mode: 'number' }).notNull(),
    amountMicros: bigint('amount_micros', { mode: 'number' }).notNull(),
    /** 'reported' by the runtime, or 'priced' from the pricing table */
    costSource: text('cost_source').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('ledger_source_idx').on(t.sessionId, t.sourceId), index('ledger_team_time_idx').on(t.teamId, t.createdAt)],
);
