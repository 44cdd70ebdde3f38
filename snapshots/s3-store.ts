/**
 * Snapshots in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, R2…) through `@aws-sdk/client-s3`.
 *
 * Layout under the bucket's prefix, per session:
 *   sessions/<id>/chunks/<sha-256>        a chunk as encoded by ./snapshotter.ts
 *   sessions/<id>/manifests/<seq, 10 digits>.json
 *
 * A manifest is put with `If-None-Match: *` (S3's conditional write): a seq that exists already answers 412, which is
 * the SnapshotConflictError every store owes. The newest manifest is the last key of a listing (keys sort by seq). A
 * prune reads the manifests it removes and deletes the chunks only they named; `drop` deletes everything under the
 * session's prefix.
 */
import {
  CreateBucketCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadBucketCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { SnapshotConflictError, chunksOf, type SnapshotManifest, type SnapshotStore } from './store';

export interface S3SnapshotStoreOptions {
  bucket: string;
  /** prepended to every key (e.g. `agentplane/`); default none */
  prefix?: string;
  /** the client's settings: endpoint, region, credentials, forcePathStyle (MinIO and most self-hosted stores want it) */
  client: S3ClientConfig;
  /** create the bucket when it does not exist (dev, tests); default false */
  createBucket?: boolean;
}

/** requests in flight at once for one session's chunks */
const PARALLEL = 16;

export function createS3SnapshotStore(opts: S3SnapshotStoreOptions): SnapshotStore & { ready(): Promise<void>; close(): void } {
  const s3 = new S3Client(opts.client);
  const Bucket = opts.bucket;
  const base = (sessionId: string) => `${opts.prefix ?? ''}sessions/${sessionId}/`;
  const chunkKey = (sessionId: string, hash: string) => `${base(sessionId)}chunks/${hash}`;
  const manifestKey = (sessionId: string, seq: number) => `${base(sessionId)}manifests/${String(seq).padStart(10, '0')}.json`;

  async function list(prefix: string): Promise<string[]> {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket, Prefix: prefix, ContinuationToken: token }));
      for (const o of page.Contents ?? []) if (o.Key) keys.push(o.Key);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys;
  }

  async function get(key: string): Promise<Uint8Array> {
    const res = await s3.send(new GetObjectCommand({ Bucket, Key: key }));
    if (!res.Body) throw new Error(`s3://${Bucket}/${key} has no body`);
    return res.Body.transformToByteArray();
  }

  async function remove(keys: string[]): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const Objects = keys.slice(i, i + 1000).map((Key) => ({ Key }));
      const res = await s3.send(new DeleteObjectsCommand({ Bucket, Delete: { Objects, Quiet: true } }));
      if (res.Errors?.length) throw new Error(`deleting snapshot objects failed: ${res.Errors[0]?.Key}: ${res.Errors[0]?.Message}`);
    }
  }

  /** removes the session's manifests but `keep`, and the chunks only they named */
  async function prune(sessionId: string, keep: SnapshotManifest[]): Promise<void> {
    const kept = new Set(keep.map((m) => manifestKey(sessionId, m.seq)));
    const dropped = (await manifestsOf(sessionId)).filter((k) => !kept.has(k));
    if (dropped.length === 0) return;
    const needed = new Set(keep.flatMap((m) => [...chunksOf(m)]));
    const unneeded = new Set<string>();
    for (const key of dropped) {
      const old = JSON.parse(Buffer.from(await get(key)).toString('utf8')) as SnapshotManifest;
      for (const hash of chunksOf(old)) if (!needed.has(hash)) unneeded.add(chunkKey(sessionId, hash));
    }
    // the manifests first: a chunk is never gone while a manifest that names it is there
    await remove(dropped);
    await remove([...unneeded]);
  }

  async function manifestsOf(sessionId: string): Promise<string[]> {
    return (await list(`${base(sessionId)}manifests/`)).sort();
  }

  const store = {
    kind: 's3' as const,

    async ready() {
      try {
        await s3.send(new HeadBucketCommand({ Bucket }));
      } catch (err) {
        if (!opts.createBucket) throw new Error(`the snapshot bucket ${Bucket} cannot be reached: ${(err as Error).name} ${(err as Error).message}`);
        await s3.send(new CreateBucketCommand({ Bucket }));
      }
    },

    async putChunks(sessionId: string, chunks: Array<{ hash: string; data: Uint8Array }>) {
      await inParallel(chunks, (c) => s3.send(new PutObjectCommand({ Bucket, Key: chunkKey(sessionId, c.hash), Body: c.data })));
    },

    async getChunks(sessionId: string, hashes: string[]) {
      const found = new Map<string, Uint8Array>();
      await inParallel([...new Set(hashes)], async (hash) => {
        try {
          found.set(hash, await get(chunkKey(sessionId, hash)));
        } catch (err) {
          throw new Error(`snapshot chunk ${hash} of session ${sessionId} cannot be read from the store: ${(err as Error).name}`);
        }
      });
      return found;
    },

    async commit({ manifest, chunks, keep }: { manifest: SnapshotManifest; chunks: Array<{ hash: string; data: Uint8Array }>; keep: SnapshotManifest[] }) {
      await store.putChunks(manifest.sessionId, chunks);
      try {
        await s3.send(new PutObjectCommand({ Bucket, Key: manifestKey(manifest.sessionId, manifest.seq), Body: JSON.stringify(manifest), ContentType: 'application/json', IfNoneMatch: '*' }));
      } catch (err) {
        const status = (err as { $metadata?: { httpStatusCode?: number } }).$metadata?.httpStatusCode;
        if (status === 412 || status === 409) throw new SnapshotConflictError(manifest.sessionId, manifest.seq);
        throw err;
      }
      await prune(manifest.sessionId, [...keep, manifest]);
    },

    async latest(sessionId: string) {
      const newest = (await manifestsOf(sessionId)).at(-1);
      if (!newest) return null;
      return JSON.parse(Buffer.from(await get(newest)).toString('utf8')) as SnapshotManifest;
    },

    async drop(sessionId: string) {
      const keys = await list(base(sessionId));
      const manifests = keys.filter((k) => k.includes('/manifests/'));
      await remove(manifests);
      await remove(keys.filter((k) => !k.includes('/manifests/')));
    },

    close() {
      s3.destroy();
    },
  };
  return store;
}

async function inParallel<T>(items: readonly T[], each: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  const lanes = Array.from({ length: Math.min(PARALLEL, items.length) }, async () => {
    while (next < items.length) await each(items[next++] as T);
  });
  await Promise.all(lanes);
}
