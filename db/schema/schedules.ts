import { index, integer, jsonb, pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import { teams } from './teams';

/**
 * Schedules: the team-scoped record of a Temporal Schedule (same id). Temporal fires the runs; this row holds
 * what each run starts (agent, prompt, environment, budget) so a run reads it when it fires and the list is a
 * plain team-scoped query.
 */
export const schedules = pgTable(
  'schedules',
  {
    id: text('id').primaryKey(),
    teamId: text('team_id').notNull().references(() => teams.id),
    agentId: text('agent_id').notNull(),
    /** null: each run uses the agent's version current when it fires */
    agentVersion: integer('agent_version'),
    environmentId: text('environment_id'),
    prompt: text('prompt').notNull(),
    title: text('title'),
    metadata: jsonb('metadata').notNull(),
    /** the session budget of each run ({ max_cost_usd? }) */
    budget: jsonb('budget').notNull(),
    /** when runs fire, as the API accepted it (cron / intervals, time zone, jitter) */
    spec: jsonb('spec').notNull(),
    /** overlap policy and catch-up window */
    policies: jsonb('policies').notNull(),
    /** 'active' | 'paused'; Temporal's schedule state is the one that fires, this one is for listing */
    state: text('state').notNull(),
    note: text('note'),
    /** the key that created the schedule, kept for the record */
    createdByKeyId: text('created_by_key_id').notNull(),
    createdByRole: text('created_by_role').notNull(),
    /**
     * the key its runs start as: whoever last changed what a run starts (create, PATCH), so nobody makes a schedule
     * run their own changes as someone else
     */
    runAsKeyId: text('run_as_key_id').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
    deletedAt: timestamp('deleted_at', { withTimezone: true }),
  },
  (t) => [index('schedules_team_idx').on(t.teamId, t.id)],
);
