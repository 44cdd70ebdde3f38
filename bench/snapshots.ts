/**
 * Session snapshots (snapshots/): how long writing and restoring one takes against the workspace's size, in each store.
 *
 *   npx tsx bench/snapshots.ts [--runs 3] [--mb 100]
 *
 * For 1 MB (100 files of 10 KB) and `--mb` MB (files of 100 KB), half of each file text and half random bytes (a
 * repository with some binaries): the first snapshot (everything stored), a snapshot after a one-file change, and a
 * restore on another data dir (everything fetched and written). The baseline is copying the same tree with `fs.cp`
 * in the same process: the floor for moving those bytes on this disk, which a restore from any store must add to.
 * Medians of `--runs`. The stores: Postgres (DATABASE_URL, else the local cluster), and MinIO when
 * scripts/ensure-minio.sh has built it.
 */
import { randomBytes } from 'node:crypto';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { openDatabase } from '../db/client';
import { newId } from '../db/ids';
import { sessions, teams } from '../db/schema/index';
import { createPostgresSnapshotStore } from '../snapshots/postgres-store';
import { createS3SnapshotStore } from '../snapshots/s3-store';
import { createSnapshotter, type SnapshotRoot } from '../snapshots/snapshotter';
import type { SnapshotStore } from '../snapshots/store';
import { findMinio, startMinio } from '../test/support/minio';
import { createTestDatabase } from '../test/support/postgres';
import { ensureDatabaseUrl, flags, ms, printMachine, printTable } from './support';

const opts = flags({ runs: 3, mb: 100 });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

ensureDatabaseUrl();
printMachine('session snapshots: write and restore against workspace size');
const dir = await mkdtemp(join(tmpdir(), 'agentplane-bench-snapshots-'));
const testDb = await createTestDatabase();
const database = await openDatabase({ url: testDb.url });
const teamId = newId('team');
await database.db.insert(teams).values({ id: teamId, name: 'bench' });
const minioBin = findMinio();
const minio = 'bin' in minioBin ? await startMinio(minioBin.bin) : null;

const stores: Array<[string, SnapshotStore]> = [['postgres', createPostgresSnapshotStore(database.db)]];
if (minio) {
  const s3 = createS3SnapshotStore({ bucket: 'bench', client: { endpoint: minio.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: minio.accessKeyId, secretAccessKey: minio.secretAccessKey } }, createBucket: true });
  await s3.ready();
  stores.push(['s3 (MinIO)', s3]);
} else console.log(`(no MinIO: ${'reason' in minioBin ? minioBin.reason : ''})`);

/** A workspace of `files` files of `size` bytes, half text and half random. */
async function workspace(path: string, files: number, size: number): Promise<void> {
  await mkdir(path, { recursive: true });
  const text = Buffer.from('export function add(a: number, b: number): number {\n  return a + b;\n}\n'.repeat(Math.ceil(size / 2 / 70))).subarray(0, size / 2);
  for (let i = 0; i < files; i++) {
    const sub = join(path, `dir${i % 10}`);
    await mkdir(sub, { recursive: true });
    await writeFile(join(sub, `file${i}.ts`), Buffer.concat([text, randomBytes(size - text.byteLength)]));
  }
}

const sizes: Array<[string, number, number]> = [
  ['1 MB', 100, 10 * 1024],
  [`${opts.mb} MB`, opts.mb * 10, 100 * 1024],
];
const rows: Array<Array<string | number>> = [];
for (const [label, files, size] of sizes) {
  const source = join(dir, `source-${files}`);
  await workspace(source, files, size);
  const copies: number[] = [];
  for (let r = 0; r < opts.runs; r++) {
    const to = join(dir, `copy-${files}-${r}`);
    const t = performance.now();
    await cp(source, to, { recursive: true });
    copies.push(performance.now() - t);
    await rm(to, { recursive: true, force: true });
  }
  const copy = median(copies);
  for (const [storeName, store] of stores) {
    const first: number[] = [];
    const change: number[] = [];
    const restore: number[] = [];
    let stored = 0;
    for (let r = 0; r < opts.runs; r++) {
      const sessionId = newId('sesn');
      await database.db.insert(sessions).values({ id: sessionId, teamId, agentId: 'agent_bench', agentVersion: 1, runtime: 'opencode', metadata: {}, status: 'idle', initiatorKeyId: 'key_bench', trigger: 'api', budget: {} });
      const wsA = join(dir, `a-${sessionId}`, 'ws');
      await cp(source, wsA, { recursive: true });
      const roots = (ws: string): SnapshotRoot[] => [{ name: 'workspace', path: ws }];
      const a = createSnapshotter({ store, dataDir: join(dir, `a-${sessionId}`), maxBytes: 2 ** 40 });
      let t = performance.now();
      const saved = await a.save(sessionId, 'opencode', roots(wsA));
      first.push(performance.now() - t);
      stored = saved.bytesStored;
      await writeFile(join(wsA, 'dir3', 'file3.ts'), `// changed in run ${r}\n`);
      t = performance.now();
      await a.save(sessionId, 'opencode', roots(wsA));
      change.push(performance.now() - t);
      const b = createSnapshotter({ store, dataDir: join(dir, `b-${sessionId}`), maxBytes: 2 ** 40 });
      t = performance.now();
      await b.ensureCurrent(sessionId, roots(join(dir, `b-${sessionId}`, 'ws')), async () => undefined);
      restore.push(performance.now() - t);
      await a.drop(sessionId);
      await rm(join(dir, `a-${sessionId}`), { recursive: true, force: true });
      await rm(join(dir, `b-${sessionId}`), { recursive: true, force: true });
    }
    rows.push([label, storeName, `${(stored / 2 ** 20).toFixed(1)} MB`, ms(median(first)), ms(median(change)), ms(median(restore)), ms(copy), `${(median(restore) / copy).toFixed(1)}×`]);
  }
}
printTable(['workspace', 'store', 'stored (compressed)', 'first snapshot', 'one-file change', 'restore elsewhere', 'fs.cp baseline', 'restore / cp'], rows);
console.log(`targets: restore of ${opts.mb} MB ≤ 2 s; a one-file change ≤ 100 ms`);

await minio?.stop();
await database.close();
await testDb.drop();
await rm(dir, { recursive: true, force: true });
