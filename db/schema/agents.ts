import { index, integer, jsonb, pgTable, primaryKey, text, timestamp } from 'drizzle-orm/pg-core';
import { teams } from './teams';

export const agents = pgTable(
  'agents',
  {
    id: text('id').primaryKey(),
    teamId: text('team_id').notNull().references(() => teams.id),
    name: text('name').notNull(),
    currentVersion: integer('current_version').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
    archivedAt: timestamp('archived_at', { withTimezone: true }),
  },
  (t) => [index('agents_team_idx').on(t.teamId, t.createdAt)],
);

/** Immutable: an update writes a new row. Sessions pin the version they started on. */
export const agentVersions = pgTable(
  'agent_versions',
  {
    agentId: text('agent_id').notNull().references(() => agents.id),
    version: integer('version').notNull(),
    /** the agent definition as accepted by the API (credential ids only, never values) */
    definition: jsonb('definition').notNull(),
    createdByKeyId: text('created_by_key_id').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.agentId, t.version] })],
);

/** Where sessions run: Managed Agents' shape (api/schemas/environment.schema.ts); sessions read `config.networking` per turn. */
export const environments = pgTable(
  'environments',
  {
    id: text('id').primaryKey(),
    teamId: text('team_id').notNull().references(() => teams.id),
    name: text('name').notNull(),
    description: text('description'),
    config: jsonb('config').notNull(),
    metadata: jsonb('metadata').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
    archivedAt: timestamp('archived_at', { withTimezone: true }),
  },
  (t) => [index('environments_team_idx').on(t.teamId, t.createdAt)],
);
