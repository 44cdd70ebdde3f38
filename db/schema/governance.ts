import { sql } from 'drizzle-orm';
import { bigint, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';
import { teams } from './teams';

/**
 * A spending limit for a team or one agent over a calendar period (UTC). Enforcement happens in `budget_windows`:
 * one row per budget and period, where reservations and charges are added with guarded UPDATEs.
 */
export const budgets = pgTable(
  'budgets',
  {
    id: text('id').primaryKey(),
    teamId: text('team_id').notNull().references(() => teams.id),
    /** 'team' or 'agent' */
    scope: text('scope').notNull(),
    /** the agent for scope 'agent'; '' for the team */
    agentId: text('agent_id').notNull().default(''),
    /** 'day' | 'month' | 'total' */
    period: text('period').notNull(),
    limitMicros: bigint('limit_micros', { mode: 'number' }).notNull(),
    /** percentages that notify when crossed, ascending */
    thresholds: jsonb('thresholds').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [uniqueIndex('budgets_scope_idx').on(t.teamId, t.scope, t.agentId, t.period)],
);

/** Money held and spent in one period of one budget. `spent + reserved <= limit` is kept by the UPDATE's WHERE. */
export const budgetWindows = pgTable(
  'budget_windows',
  {
    budgetId: text('budget_id').notNull().references(() => budgets.id),
    periodStart: timestamp('period_start', { withTimezone: true }).notNull(),
    spentMicros: bigint('spent_micros', { mode: 'number' }).notNull().default(0),
    reservedMicros: bigint('reserved_micros', { mode: 'number' }).notNull().default(0),
    /** the highest threshold (percent) already notified in this window */
    notifiedPercent: integer('notified_percent').notNull().default(0),
  },
  (t) => [primaryKey({ columns: [t.budgetId, t.periodStart] })],
);

/** A hold taken before a turn leaves, released or settled when the turn's usage is known. Idempotent by id. */
export const reservations = pgTable(
  'reservations',
  {
    id: text('id').primaryKey(),
    teamId: text('team_id').notNull(),
    sessionId: text('session_id').notNull(),
    /** [{budgetId, periodStart}] the hold was taken on */
    windows: jsonb('windows').notNull(),
    /** what was held before the turn */
    amountMicros: bigint('amount_micros', { mode: 'number' }).notNull(),
    /** the part of the hold not yet consumed by charges; returned to the windows at settlement */
    remainingMicros: bigint('remaining_micros', { mode: 'number' }).notNull(),
    /** what the turn was charged against this hold (may exceed the hold by the last usage report) */
    chargedMicros: bigint('charged_micros', { mode: 'number' }).notNull().default(0),
    /** 'held' | 'settled' */
    status: text('status').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    settledAt: timestamp('settled_at', { withTimezone: true }),
  },
  // the sweeper's search (db/queries/budgets.ts releaseOrphanedHolds): the few holds still open, oldest first
  (t) => [index('reservations_session_idx').on(t.sessionId), index('reservations_held_idx').on(t.createdAt).where(sql`${t.status} = 'held'`)],
);

/** Admin overrides of the pricing table, USD per million tokens. */
export const modelPrices = pgTable(
  'model_prices',
  {
    teamId: text('team_id').notNull().references(() => teams.id),
    model: text('model').notNull(),
    /** {input, output, cache_read?, cache_write?} */
    price: jsonb('price').notNull(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.teamId, t.model] })],
);

/** Team-level tool rules, applied before every agent's own; a team `deny` beats any agent rule. */
export const teamPolicies = pgTable('team_policies', {
  teamId: text('team_id').primaryKey().references(() => teams.id),
  rules: jsonb('rules').notNull(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/** Where a team's notifications go. The signing secret is sealed by the vault like a credential. */
export const webhooks = pgTable(
  'webhooks',
  {
    id: text('id').primaryKey(),
    teamId: text('team_id').notNull().references(() => teams.id),
    url: text('url').notNull(),
    /** event types delivered: 'approval.requested', 'budget.threshold', … ; empty = all */
    events: jsonb('events').notNull(),
    masterKeyId: text('master_key_id').notNull(),
    wrappedKey: text('wrapped_key').notNull(),
    ciphertext: text('ciphertext').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    disabledAt: timestamp('disabled_at', { withTimezone: true }),
  },
  (t) => [index('webhooks_team_idx').on(t.teamId)],
);

export const webhookDeliveries = pgTable(
  'webhook_deliveries',
  {
    id: text('id').primaryKey(),
    webhookId: text('webhook_id').notNull().references(() => webhooks.id),
    teamId: text('team_id').notNull(),
    eventType: text('event_type').notNull(),
    payload: jsonb('payload').notNull(),
    /** 'pending' | 'delivered' | 'failed' */
    status: text('status').notNull(),
    attempts: integer('attempts').notNull().default(0),
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true }).notNull().defaultNow(),
    lastError: text('last_error'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    deliveredAt: timestamp('delivered_at', { withTimezone: true }),
  },
  (t) => [index('webhook_deliveries_team_idx').on(t.teamId, t.createdAt), index('webhook_deliveries_due_idx').on(t.status, t.nextAttemptAt)],
);
