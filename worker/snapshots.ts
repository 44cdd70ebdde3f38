/**
 * The worker's snapshotter (snapshots/): the store its settings name (snapshotEnv in config/env.ts), and the limit.
 */
import type { Db } from '../db/client';
import { createPostgresSnapshotStore } from '../snapshots/postgres-store';
import { createSnapshotter, type Snapshotter } from '../snapshots/snapshotter';

export interface WorkerSnapshotsOptions {
  db: Db;
  dataDir: string;
  /** the largest snapshot written, in MiB (AGENTPLANE_SNAPSHOT_MAX_MB; default 2048) */
  maxMb?: number;
}

export const DEFAULT_SNAPSHOT_MAX_MB = 2048;

export function createWorkerSnapshots(opts: WorkerSnapshotsOptions): Snapshotter {
  return createSnapshotter({ store: createPostgresSnapshotStore(opts.db), dataDir: opts.dataDir, maxBytes: (opts.maxMb ?? DEFAULT_SNAPSHOT_MAX_MB) * 1024 * 1024 });
}
