import { bigint, customType, integer, jsonb, pgTable, primaryKey, text, timestamp } from 'drizzle-orm/pg-core';
import { sessions } from './sessions';

/** Binary content: `Buffer` from pg, `Uint8Array` from PGlite. */
const bytea = customType<{ data: Uint8Array; driverData: Uint8Array }>({ dataType: () => 'bytea' });

/**
 * A session's snapshots (snapshots/): what its runtime needs to continue and its workspace, at each point a turn
 * stopped. `manifest` lists every file by the hashes of its chunks; the newest `seq` is the session's state.
 */
export const sessionSnapshots = pgTable(
  'session_snapshots',
  {
    sessionId: text('session_id')
      .notNull()
      .references(() => sessions.id),
    seq: integer('seq').notNull(),
    manifest: jsonb('manifest').notNull(),
    /** the files' total size */
    bytes: bigint('bytes', { mode: 'number' }).notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.sessionId, t.seq] })],
);

/**
 * The chunks of a session's snapshots, by the sha-256 of their content, compressed; stored once however many
 * snapshots (or files) hold them. Per session, not shared between sessions: no team learns what another one stored.
 */
export const snapshotChunks = pgTable(
  'snapshot_chunks',
  {
    sessionId: text('session_id')
      .notNull()
      .references(() => sessions.id),
    hash: text('hash').notNull(),
    data: bytea('data').notNull(),
  },
  (t) => [primaryKey({ columns: [t.sessionId, t.hash] })],
);
