/**
 * The worker's snapshotter (snapshots/): the store its settings name (snapshotEnv in config/env.ts), and the limit.
 */
import type { z } from 'zod';
import type { snapshotEnv } from '../config/env';
import { ConfigError } from '../config/env';
import type { Db } from '../db/client';
import { createPostgresSnapshotStore } from '../snapshots/postgres-store';
import { createS3SnapshotStore } from '../snapshots/s3-store';
import { createSnapshotter, type Snapshotter } from '../snapshots/snapshotter';
import type { SnapshotStore } from '../snapshots/store';

export type SnapshotSettings = Partial<z.infer<z.ZodObject<typeof snapshotEnv>>>;

export const DEFAULT_SNAPSHOT_MAX_MB = 2048;

/** `settings` absent (tests, dev): the Postgres store and the default limit. An S3 store is checked before the worker polls. */
export async function createWorkerSnapshots(opts: { db: Db; dataDir: string; settings?: SnapshotSettings }): Promise<Snapshotter> {
  const settings = opts.settings ?? {};
  const store = settings.AGENTPLANE_SNAPSHOT_STORE === 's3' ? await s3Store(settings) : createPostgresSnapshotStore(opts.db);
  return createSnapshotter({ store, dataDir: opts.dataDir, maxBytes: (settings.AGENTPLANE_SNAPSHOT_MAX_MB ?? DEFAULT_SNAPSHOT_MAX_MB) * 1024 * 1024 });
}

async function s3Store(settings: SnapshotSettings): Promise<SnapshotStore> {
  const bucket = settings.AGENTPLANE_SNAPSHOT_S3_BUCKET;
  if (!bucket) throw new ConfigError('AGENTPLANE_SNAPSHOT_S3_BUCKET: required when AGENTPLANE_SNAPSHOT_STORE is s3');
  const id = settings.AGENTPLANE_SNAPSHOT_S3_ACCESS_KEY_ID;
  const secret = settings.AGENTPLANE_SNAPSHOT_S3_SECRET_ACCESS_KEY;
  if (Boolean(id) !== Boolean(secret)) throw new ConfigError('AGENTPLANE_SNAPSHOT_S3_ACCESS_KEY_ID and AGENTPLANE_SNAPSHOT_S3_SECRET_ACCESS_KEY: give both, or neither');
  const store = createS3SnapshotStore({
    bucket,
    prefix: settings.AGENTPLANE_SNAPSHOT_S3_PREFIX,
    client: {
      region: settings.AGENTPLANE_SNAPSHOT_S3_REGION ?? 'us-east-1',
      ...(settings.AGENTPLANE_SNAPSHOT_S3_ENDPOINT ? { endpoint: settings.AGENTPLANE_SNAPSHOT_S3_ENDPOINT, forcePathStyle: true } : {}),
      ...(id && secret ? { credentials: { accessKeyId: id, secretAccessKey: secret } } : {}),
    },
  });
  await store.ready();
  return store;
}
