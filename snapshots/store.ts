/**
 * Where a session's snapshots live (./snapshotter.ts writes and reads them): content-addressed chunks, and one
 * manifest per snapshot naming the chunks of every file. Two stores: Postgres (./postgres-store.ts, the default: no
 * new server) and S3-compatible object storage (./s3-store.ts).
 *
 * What every store must keep true:
 * - A chunk is put before any manifest that names it, and is immutable: putting a hash twice changes nothing.
 * - `commit` refuses a `seq` the session already has (`SnapshotConflictError`): two workers that both think they
 *   hold the session cannot both advance it; the loser learns it lost.
 * - `commit` then keeps the manifests it is told to and every chunk they name, and removes the rest of the session's.
 */

/**
 * One entry of a snapshot's tree, by its path relative to the root (POSIX separators). A file is its chunks' content
 * in order; a `packed` file (a small one, ./snapshotter.ts) is instead `size` bytes at `offset` of its one chunk, a
 * pack of small files, and `hash` is the sha-256 of its own content.
 */
export type SnapshotEntry =
  | { path: string; type: 'dir'; mode: number }
  | { path: string; type: 'file'; mode: number; size: number; mtimeMs: number; chunks: string[]; packed?: { offset: number; hash: string } }
  | { path: string; type: 'symlink'; target: string };

/** the manifest versions this code reads: 2 added packed files */
export const MANIFEST_VERSIONS: ReadonlySet<number> = new Set([1, 2]);

export interface SnapshotManifest {
  version: 1 | 2;
  sessionId: string;
  /** 1, 2, …: the session's snapshots in order; the newest is its state */
  seq: number;
  createdAt: string;
  /** the runtime whose state `roots.runtime` is */
  runtime: string;
  /** which worker wrote it (its host name and data dir), for the operator reading a restore's log */
  writer: string;
  /** the files' total size */
  bytes: number;
  /** `workspace` (the session's files), `runtime` (what its runtime needs to continue) */
  roots: Record<string, SnapshotEntry[]>;
}

export interface StoredChunk {
  /** sha-256 of the content, hex */
  hash: string;
  /** the content as stored (./snapshotter.ts `encodeChunk`: a format byte, then the bytes, compressed or not) */
  data: Uint8Array;
}

export interface SnapshotStore {
  readonly kind: 'postgres' | 's3';
  putChunks(sessionId: string, chunks: StoredChunk[]): Promise<void>;
  /** the chunks asked for; a missing one throws (a manifest names only chunks put before it) */
  getChunks(sessionId: string, hashes: string[]): Promise<Map<string, Uint8Array>>;
  /**
   * Ends a snapshot: its last chunks, its manifest, and the pruning of what it makes unneeded, at once where the store
   * can (one Postgres transaction). `keep`: the manifests kept besides it (with it, they name every chunk kept).
   */
  commit(snapshot: { manifest: SnapshotManifest; chunks: StoredChunk[]; keep: SnapshotManifest[] }): Promise<void>;
  /** the session's newest manifest, or null when it has none */
  latest(sessionId: string): Promise<SnapshotManifest | null>;
  /** removes everything of the session (it ended) */
  drop(sessionId: string): Promise<void>;
}

/** `putManifest` of a seq the session already has: another worker advanced the session first. */
export class SnapshotConflictError extends Error {
  constructor(
    readonly sessionId: string,
    readonly seq: number,
  ) {
    super(`session ${sessionId} already has snapshot ${seq}: another worker holds it`);
  }
}

/** Every chunk hash a manifest names. */
export function chunksOf(manifest: SnapshotManifest): Set<string> {
  const hashes = new Set<string>();
  for (const entries of Object.values(manifest.roots)) for (const e of entries) if (e.type === 'file') for (const h of e.chunks) hashes.add(h);
  return hashes;
}
