/**
 * Snapshots (snapshots/): a session's files written to a store at a turn's stop and restored by another worker, in
 * each store: real Postgres, and a real MinIO for the S3 store. Two workers are two data dirs; the session's trees are
 * real directories.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readFile, readlink, readdir, rm, symlink, writeFile, chmod } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, rowsOf, type Database } from '../db/client';
import { newId } from '../db/ids';
import { sessions, teams } from '../db/schema/index';
import { createPostgresSnapshotStore } from '../snapshots/postgres-store';
import { createSnapshotter, decodeChunk, SnapshotTooLargeError, type SnapshotRoot } from '../snapshots/snapshotter';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { createS3SnapshotStore } from '../snapshots/s3-store';
import { SnapshotConflictError, type SnapshotStore } from '../snapshots/store';
import { findMinio, startMinio, type Minio } from './support/minio';
import { createTestDatabase, type TestDatabase } from './support/postgres';

let testDb: TestDatabase;
let database: Database;
let dir: string;
let teamId: string;
let minio: Minio | null = null;
const minioBin = findMinio();

beforeAll(async () => {
  testDb = await createTestDatabase();
  database = await openDatabase({ url: testDb.url });
  dir = await mkdtemp(join(tmpdir(), 'agentplane-snapshots-'));
  teamId = newId('team');
  await database.db.insert(teams).values({ id: teamId, name: `snapshots ${teamId}` });
  if ('bin' in minioBin) minio = await startMinio(minioBin.bin);
}, 90_000);

afterAll(async () => {
  await minio?.stop();
  await database?.close();
  await testDb?.drop();
  await rm(dir, { recursive: true, force: true });
});

/** A store, and what a test reads of it behind its interface: how many manifests and chunks a session has, the chunks' bytes. */
interface Backend {
  store: SnapshotStore;
  manifests(sessionId: string): Promise<number>;
  chunks(sessionId: string): Promise<Uint8Array[]>;
}

function postgresBackend(): Backend {
  return {
    store: createPostgresSnapshotStore(database.db),
    async manifests(id) {
      return rowsOf<{ n: number }>(await database.db.execute(sql`select count(*)::int as n from session_snapshots where session_id = ${id}`))[0]!.n;
    },
    async chunks(id) {
      return rowsOf<{ data: Uint8Array }>(await database.db.execute(sql`select data from snapshot_chunks where session_id = ${id}`)).map((r) => r.data);
    },
  };
}

function s3Backend(): Backend {
  const m = minio as Minio;
  const client = { endpoint: m.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: m.accessKeyId, secretAccessKey: m.secretAccessKey } };
  const store = createS3SnapshotStore({ bucket: 'snapshots', prefix: 'test/', client, createBucket: true });
  const s3 = new S3Client(client);
  const keys = async (prefix: string) => ((await s3.send(new ListObjectsV2Command({ Bucket: 'snapshots', Prefix: prefix }))).Contents ?? []).map((o) => o.Key as string);
  return {
    store,
    async manifests(id) {
      return (await keys(`test/sessions/${id}/manifests/`)).length;
    },
    async chunks(id) {
      const found = await keys(`test/sessions/${id}/chunks/`);
      return Promise.all(found.map(async (Key) => (await s3.send(new GetObjectCommand({ Bucket: 'snapshots', Key }))).Body!.transformToByteArray()));
    },
  };
}

const BACKENDS: Array<[string, () => Promise<Backend>, string | null]> = [
  ['postgres', async () => postgresBackend(), null],
  [
    's3 (MinIO)',
    async () => {
      const b = s3Backend();
      await (b.store as ReturnType<typeof createS3SnapshotStore>).ready();
      return b;
    },
    'reason' in minioBin ? minioBin.reason : null,
  ],
];

async function newSession(): Promise<string> {
  const id = newId('sesn');
  await database.db.insert(sessions).values({ id, teamId, agentId: 'agent_x', agentVersion: 1, runtime: 'opencode', metadata: {}, status: 'idle', initiatorKeyId: 'key_x', trigger: 'api', budget: {} });
  return id;
}

/** One worker's view of a session: its data dir and the session's two trees under it. */
function hostOf(store: SnapshotStore, name: string, sessionId: string, maxBytes = 1 << 30) {
  const dataDir = join(dir, store.kind, name);
  const roots: SnapshotRoot[] = [
    { name: 'workspace', path: join(dataDir, 'sessions', sessionId), ignore: ['node_modules/**'] },
    { name: 'runtime', path: join(dataDir, 'runtime', sessionId, 'home'), ignore: ['.cache/**', '**/*-shm'] },
  ];
  return { dataDir, roots, ws: roots[0]!.path, rt: roots[1]!.path, snapshots: createSnapshotter({ store, dataDir, maxBytes }) };
}

/** Every entry below `root`: path → file content (base64), link target or `dir`, with its mode. */
async function tree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  async function visit(rel: string) {
    for (const name of (await readdir(join(root, rel))).sort()) {
      const path = rel ? `${rel}/${name}` : name;
      const st = await lstat(join(root, path));
      const mode = (st.mode & 0o777).toString(8);
      if (st.isDirectory()) {
        out[path] = `dir ${mode}`;
        await visit(path);
      } else if (st.isSymbolicLink()) out[path] = `link ${await readlink(join(root, path))}`;
      else out[path] = `file ${mode} ${(await readFile(join(root, path))).toString('base64')}`;
    }
  }
  await visit('');
  return out;
}

describe.each(BACKENDS)('snapshots in %s', (_name, backendOf, skipReason) => {
  let backend: Backend;
  let store: SnapshotStore;
  beforeAll(async () => {
    if (skipReason) return;
    backend = await backendOf();
    store = backend.store;
  }, 60_000);
  const host = (name: string, sessionId: string, maxBytes?: number) => hostOf(store, name, sessionId, maxBytes);
  if (skipReason) console.warn(`[snapshots] skipping the S3 store's tests: ${skipReason}`);

  it.skipIf(skipReason !== null)('restores a session on another worker exactly: files, empty files, large files, modes, links, directories', async () => {
    const id = await newSession();
    const a = host('a1', id);
    await mkdir(join(a.ws, 'src/deep/er'), { recursive: true });
    await writeFile(join(a.ws, 'src/deep/er/notes.md'), 'turn one wrote this\n');
    await writeFile(join(a.ws, 'empty'), '');
    await writeFile(join(a.ws, 'big.bin'), randomBytes(9 * 1024 * 1024 + 17)); // three chunks
    await writeFile(join(a.ws, 'run.sh'), '#!/bin/sh\necho hi\n');
    await chmod(join(a.ws, 'run.sh'), 0o750);
    await symlink('src/deep/er/notes.md', join(a.ws, 'notes'));
    await mkdir(join(a.ws, 'node_modules/pkg'), { recursive: true });
    await writeFile(join(a.ws, 'node_modules/pkg/index.js'), 'ignored');
    await mkdir(join(a.rt, '.local/share'), { recursive: true });
    await writeFile(join(a.rt, '.local/share/runtime.db'), 'conversation');
    await writeFile(join(a.rt, '.local/share/runtime.db-shm'), 'rebuilt on open');

    const saved = await a.snapshots.save(id, 'opencode', a.roots);
    expect(saved.manifest.seq).toBe(1);
    expect(saved.chunksStored).toBe(4); // big.bin's three, and one pack of the small files of both roots

    const b = host('b1', id);
    let stopped = 0;
    const restored = await b.snapshots.ensureCurrent(id, b.roots, async () => void stopped++);
    expect(restored?.seq).toBe(1);
    expect(stopped).toBe(1);
    const want = await tree(a.ws);
    delete want['node_modules/pkg'];
    delete want['node_modules/pkg/index.js'];
    delete want['node_modules'];
    expect(await tree(b.ws)).toEqual(want);
    expect(await tree(b.rt)).toEqual({ '.local': 'dir 755', '.local/share': 'dir 755', '.local/share/runtime.db': `file 644 ${Buffer.from('conversation').toString('base64')}` });
    // current now: nothing more to do, and the runtime is left alone
    expect(await b.snapshots.ensureCurrent(id, b.roots, async () => void stopped++)).toBeNull();
    expect(stopped).toBe(1);
  }, 60_000);

  it.skipIf(skipReason !== null)('stores only what changed: a one-file change reads one file and stores one chunk', async () => {
    const id = await newSession();
    const a = host('a2', id);
    await mkdir(a.ws, { recursive: true });
    for (let i = 0; i < 50; i++) await writeFile(join(a.ws, `file${i}.txt`), `content ${i}\n`.repeat(100));
    await a.snapshots.save(id, 'opencode', a.roots);
    await writeFile(join(a.ws, 'file7.txt'), 'changed\n');
    const second = await a.snapshots.save(id, 'opencode', a.roots);
    expect(second.manifest.seq).toBe(2);
    expect({ read: second.filesRead, stored: second.chunksStored }).toEqual({ read: 1, stored: 1 });
    // a restored copy snapshots incrementally too: nothing is read again
    const b = host('b2', id);
    await b.snapshots.ensureCurrent(id, b.roots, async () => undefined);
    await writeFile(join(b.ws, 'new.txt'), 'from b');
    const third = await b.snapshots.save(id, 'opencode', b.roots);
    expect({ seq: third.manifest.seq, read: third.filesRead, stored: third.chunksStored }).toEqual({ seq: 3, read: 1, stored: 1 });
    // two snapshots are kept, and only the chunks they name
    expect(await backend.manifests(id)).toBe(2);
    // the pack of the 50 files (49 of them still named), and the packs of file7 changed and of new.txt
    expect((await backend.chunks(id)).length).toBe(3);
  }, 60_000);

  it.skipIf(skipReason !== null)('packs small files: a restore fetches a chunk per pack, not per file, and content already stored is not stored again', async () => {
    const id = await newSession();
    const a = host('a7', id);
    await mkdir(join(a.ws, 'src'), { recursive: true });
    for (let i = 0; i < 200; i++) await writeFile(join(a.ws, 'src', `m${i}.ts`), `export const m${i} = ${i};\n`);
    for (let i = 0; i < 10; i++) await writeFile(join(a.ws, `blob${i}.bin`), randomBytes(900 * 1024)); // four to a pack
    await writeFile(join(a.ws, 'src/copy.ts'), 'export const m7 = 7;\n'); // the same content as m7.ts
    await writeFile(join(a.ws, 'empty'), '');
    const first = await a.snapshots.save(id, 'opencode', a.roots);
    expect(first.chunksStored).toBe(3);
    expect(first.manifest.version).toBe(2);

    const fetched: string[][] = [];
    const counting: SnapshotStore = { ...store, getChunks: (sessionId, hashes) => (fetched.push(hashes), store.getChunks(sessionId, hashes)) };
    const b = hostOf(counting, 'b7', id);
    await b.snapshots.ensureCurrent(id, b.roots, async () => undefined);
    expect(await tree(b.ws)).toEqual(await tree(a.ws));
    expect(new Set(fetched.flat()).size).toBe(3);

    // rewritten with the same content, copied, or the content of another file: read, and nothing stored
    await writeFile(join(b.ws, 'src/m1.ts'), 'export const m1 = 1;\n');
    await writeFile(join(b.ws, 'src/another-copy.ts'), 'export const m2 = 2;\n');
    await writeFile(join(b.ws, 'src/m3.ts'), 'export const m4 = 4;\n');
    const second = await b.snapshots.save(id, 'opencode', b.roots);
    expect({ read: second.filesRead, stored: second.chunksStored }).toEqual({ read: 3, stored: 0 });
    const c = host('c7', id);
    await c.snapshots.ensureCurrent(id, c.roots, async () => undefined);
    expect(await tree(c.ws)).toEqual(await tree(b.ws));
    expect(await readFile(join(c.ws, 'src/m3.ts'), 'utf8')).toBe('export const m4 = 4;\n');
  }, 60_000);

  it.skipIf(skipReason !== null)('brings a stale worker up to date, stopping its runtime first; a stale writer cannot overwrite', async () => {
    const id = await newSession();
    const a = host('a3', id);
    const b = host('b3', id);
    await mkdir(a.ws, { recursive: true });
    await writeFile(join(a.ws, 'turn.txt'), 'turn 1');
    await a.snapshots.save(id, 'opencode', a.roots);
    await b.snapshots.ensureCurrent(id, b.roots, async () => undefined);
    await writeFile(join(b.ws, 'turn.txt'), 'turn 2');
    await b.snapshots.save(id, 'opencode', b.roots);
    // A still holds turn 1: its next leg stops its runtime and takes B's files
    let stopped = false;
    expect((await a.snapshots.ensureCurrent(id, a.roots, async () => void (stopped = true)))?.seq).toBe(2);
    expect(stopped).toBe(true);
    expect(await readFile(join(a.ws, 'turn.txt'), 'utf8')).toBe('turn 2');
    // A writes snapshot 3; B, which still holds snapshot 2, cannot write over it
    await writeFile(join(a.ws, 'turn.txt'), 'turn 3');
    await a.snapshots.save(id, 'opencode', a.roots);
    await writeFile(join(b.ws, 'turn.txt'), 'stale turn');
    await expect(b.snapshots.save(id, 'opencode', b.roots)).rejects.toBeInstanceOf(SnapshotConflictError);
    expect((await store.latest(id))?.writer).toContain(a.dataDir);
  }, 60_000);

  it.skipIf(skipReason !== null)('refuses a snapshot past the size limit, and writes nothing', async () => {
    const id = await newSession();
    const a = host('a4', id, 1024);
    await mkdir(a.ws, { recursive: true });
    await writeFile(join(a.ws, 'big'), Buffer.alloc(4096, 1));
    await expect(a.snapshots.save(id, 'opencode', a.roots)).rejects.toBeInstanceOf(SnapshotTooLargeError);
    expect(await store.latest(id)).toBeNull();
  });

  it.skipIf(skipReason !== null)('never follows a link out of the session: a file or directory swapped for a link to the worker\'s secrets is not read', async () => {
    const id = await newSession();
    const a = host('a5', id);
    const secret = join(dir, 'worker-secret.key');
    await writeFile(secret, 'MASTER-KEY-NEVER-IN-A-SNAPSHOT');
    await mkdir(join(a.ws, 'sub'), { recursive: true });
    await writeFile(join(a.ws, 'sub/ok.txt'), 'the session\'s own file');
    await symlink(secret, join(a.ws, 'key-link'));
    await symlink(dir, join(a.ws, 'dir-link'));
    const saved = await a.snapshots.save(id, 'opencode', a.roots);
    const entries = saved.manifest.roots.workspace!;
    expect(entries.find((e) => e.path === 'key-link')).toEqual({ path: 'key-link', type: 'symlink', target: secret });
    expect(entries.some((e) => e.path.startsWith('dir-link/'))).toBe(false);
    // no chunk holds the secret's content
    const stored = await backend.chunks(id);
    expect(stored.length).toBeGreaterThan(0);
    for (const data of stored) expect((await decodeChunk(data)).toString()).not.toContain('MASTER-KEY');
    // restored, the link is a link again (the sandbox cannot follow it out: its mount namespace has no such path)
    const b = host('b5', id);
    await b.snapshots.ensureCurrent(id, b.roots, async () => undefined);
    expect(await readlink(join(b.ws, 'key-link'))).toBe(secret);
  });

  it.skipIf(skipReason !== null)('drops every snapshot and chunk of an ended session', async () => {
    const id = await newSession();
    const a = host('a6', id);
    await mkdir(a.ws, { recursive: true });
    await writeFile(join(a.ws, 'x'), 'x');
    await a.snapshots.save(id, 'opencode', a.roots);
    await a.snapshots.drop(id);
    expect(await store.latest(id)).toBeNull();
    expect(await backend.chunks(id)).toEqual([]);
    expect(await backend.manifests(id)).toBe(0);
  });
});
