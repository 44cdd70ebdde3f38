import { index, integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import { teams } from './teams';

/**
 * Envelope encryption: the secret is sealed with a per-record data key (AES-256-GCM), and the data key is sealed
 * with the master key named by `masterKeyId`. Only activities open it. Never select this table into a response:
 * the API reads through `credentialMetadata` in db/queries/credentials.ts.
 */
export const credentials = pgTable(
  'credentials',
  {
    id: text('id').primaryKey(),
    teamId: text('team_id').notNull().references(() => teams.id),
    name: text('name').notNull(),
    kind: text('kind').notNull(),
    masterKeyId: text('master_key_id').notNull(),
    wrappedKey: text('wrapped_key').notNull(),
    ciphertext: text('ciphertext').notNull(),
    secretVersion: integer('secret_version').notNull().default(1),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    rotatedAt: timestamp('rotated_at', { withTimezone: true }),
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
  },
  (t) => [index('credentials_team_idx').on(t.teamId)],
);
