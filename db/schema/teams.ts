import { index, integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

export const teams = pgTable('teams', {
  id: text('id').primaryKey(),
  name: text('name').notNull().unique(),
  /** bumped by every policy change in the team (agent or team rules): the version running sessions compare */
  policyRevision: integer('policy_revision').notNull().default(0),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});

/** API keys are stored as a SHA-256 hash; the plain key is shown once, at creation. */
export const apiKeys = pgTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    teamId: text('team_id').notNull().references(() => teams.id),
    name: text('name').notNull(),
    role: text('role').notNull(),
    hash: text('hash').notNull().unique(),
    /** the first characters of the key, so a person can tell keys apart */
    prefix: text('prefix').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
  },
  (t) => [index('api_keys_team_idx').on(t.teamId)],
);
