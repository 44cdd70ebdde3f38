/**
 * The default snapshot store: two tables of the platform's own database (db/schema/snapshots.ts). Chunks are read in
 * batches and put with `on conflict do nothing` (a chunk is immutable); a manifest's seq is its primary key, so a
 * second writer of the same seq gets a conflict instead of overwriting.
 */
import { and, desc, eq, inArray, notInArray, sql } from 'drizzle-orm';
import type { Db } from '../db/client';
import { sessionSnapshots, snapshotChunks } from '../db/schema/index';
import { SnapshotConflictError, chunksOf, type SnapshotManifest, type SnapshotStore, type StoredChunk } from './store';

/** rows per statement: bounded so that one statement stays well under Postgres' parameter and message limits */
const PUT_BATCH_BYTES = 16 * 1024 * 1024;
const GET_BATCH = 64;

export function createPostgresSnapshotStore(db: Db): SnapshotStore {
  return {
    kind: 'postgres',

    async putChunks(sessionId, chunks) {
      for (const batch of batches(chunks)) {
        await db
          .insert(snapshotChunks)
          .values(batch.map((c) => ({ sessionId, hash: c.hash, data: c.data })))
          .onConflictDoNothing();
      }
    },

    async getChunks(sessionId, hashes) {
      const found = new Map<string, Uint8Array>();
      const wanted = [...new Set(hashes)];
      for (let i = 0; i < wanted.length; i += GET_BATCH) {
        const slice = wanted.slice(i, i + GET_BATCH);
        const rows = await db
          .select({ hash: snapshotChunks.hash, data: snapshotChunks.data })
          .from(snapshotChunks)
          .where(and(eq(snapshotChunks.sessionId, sessionId), inArray(snapshotChunks.hash, slice)));
        for (const row of rows) found.set(row.hash, row.data);
      }
      const missing = wanted.find((h) => !found.has(h));
      if (missing) throw new Error(`snapshot chunk ${missing} of session ${sessionId} is missing from the store`);
      return found;
    },

    async commit({ manifest, chunks, keep }) {
      const { sessionId } = manifest;
      await db.transaction(async (tx) => {
        if (chunks.length > 0) await tx.insert(snapshotChunks).values(chunks.map((c) => ({ sessionId, hash: c.hash, data: c.data }))).onConflictDoNothing();
        const [row] = await tx.insert(sessionSnapshots).values({ sessionId, seq: manifest.seq, manifest, bytes: manifest.bytes }).onConflictDoNothing().returning({ seq: sessionSnapshots.seq });
        if (!row) throw new SnapshotConflictError(sessionId, manifest.seq);
        await prune(tx, sessionId, [...keep, manifest]);
      });
    },

    async latest(sessionId) {
      const [row] = await db.select({ manifest: sessionSnapshots.manifest }).from(sessionSnapshots).where(eq(sessionSnapshots.sessionId, sessionId)).orderBy(desc(sessionSnapshots.seq)).limit(1);
      return (row?.manifest as SnapshotManifest | undefined) ?? null;
    },

    async drop(sessionId) {
      await db.transaction((tx) => prune(tx, sessionId, []));
    },
  };
}

/** Removes the session's manifests but `keep`, and every chunk none of `keep` names. */
async function prune(tx: Db, sessionId: string, keep: SnapshotManifest[]): Promise<void> {
  const seqs = keep.map((m) => m.seq);
  const hashes = [...new Set(keep.flatMap((m) => [...chunksOf(m)]))];
  await tx.delete(sessionSnapshots).where(and(eq(sessionSnapshots.sessionId, sessionId), seqs.length ? notInArray(sessionSnapshots.seq, seqs) : sql`true`));
  // one parameter however many chunks are kept (hashes are hex: no separator in them)
  await tx.delete(snapshotChunks).where(and(eq(snapshotChunks.sessionId, sessionId), sql`${snapshotChunks.hash} <> all(string_to_array(${hashes.join(',')}, ','))`));
}

function* batches(chunks: StoredChunk[]): Generator<StoredChunk[]> {
  let batch: StoredChunk[] = [];
  let bytes = 0;
  for (const chunk of chunks) {
    if (batch.length > 0 && bytes + chunk.data.byteLength > PUT_BATCH_BYTES) {
      yield batch;
      batch = [];
      bytes = 0;
    }
    batch.push(chunk);
    bytes += chunk.data.byteLength;
  }
  if (batch.length > 0) yield batch;
}
