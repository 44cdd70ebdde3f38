/**
 * A session's state as data: its workspace and what its runtime needs to continue, written to a `SnapshotStore` at
 * every point a turn stops, and restored by whichever worker runs its next leg when it is not the one that wrote it.
 *
 * - **Incremental.** A file is cut into chunks of at most 4 MiB, each stored once under the sha-256 of its content
 *   (compressed with deflate when that saves a tenth or more). The worker keeps its last snapshot's manifest with each
 *   file's inode and change time (`<dataDir>/snapshots/<session>.json`); a file that has not changed since is not read
 *   again, and a chunk the last snapshot holds is not stored again.
 * - **Small files are packed.** A file under 1 MiB changed since the last snapshot goes into a pack with the others of
 *   this snapshot: one chunk of up to 4 MiB, fetched in one request where a chunk each took a thousand (a store's cost
 *   per chunk, an S3 GET above all, was most of a restore). Unchanged files keep their place in older packs, so a
 *   one-file change still stores one small chunk; content the last snapshot holds (packed or not) is not stored again.
 *   A pack is kept while any kept snapshot names one of its files.
 * - **Who holds the session.** That local record says which snapshot this worker's copy is (its `seq`). Before a leg,
 *   `ensureCurrent` compares it with the store's newest: equal, the local copy is current (or newer: a turn that
 *   stopped after the snapshot was written cannot be, since the snapshot is the last thing a leg does); otherwise the
 *   worker's runtime for the session is stopped and the newest snapshot is restored in place of its files. Two workers
 *   that both think they hold a session cannot both write the next `seq` (SnapshotConflictError).
 * - **Never follows a link.** The files belong to the session's sandbox, which may swap a file for a symlink at any
 *   moment: a file is opened with O_NOFOLLOW and read only if the opened descriptor is the file at that path inside
 *   the root (`/proc/self/fd`), so a link to the worker's own files never lands in a snapshot. A restore writes into a
 *   fresh directory no sandbox can see, then renames it into place.
 * - **Limits.** A snapshot larger than `maxBytes` is not written (SnapshotTooLargeError); the session goes on on this
 *   worker and the caller records why it is not portable. `ignore` patterns (picomatch, relative to the root) leave
 *   files out: a runtime's caches, the environment's `node_modules`.
 */
import { createHash } from 'node:crypto';
import { constants, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import { chmod, mkdir, open, readdir, readFile, readlink, realpath, rename, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { promisify } from 'node:util';
import { deflateRaw, inflateRaw } from 'node:zlib';
import picomatch from 'picomatch';
import { chunksOf, MANIFEST_VERSIONS, type SnapshotEntry, type SnapshotManifest, type SnapshotStore, type StoredChunk } from './store';

const deflate = promisify(deflateRaw);
const inflate = promisify(inflateRaw);

export const CHUNK_BYTES = 4 * 1024 * 1024;
/** files smaller than this are packed together into chunks of up to CHUNK_BYTES */
export const PACK_FILE_BYTES = 1024 * 1024;
/** chunks are put (and fetched) in groups of about this many bytes: bounded memory whatever the workspace's size */
const BATCH_BYTES = 32 * 1024 * 1024;
const SAMPLE_BYTES = 64 * 1024;
const RAW = 0;
const DEFLATED = 1;

/** One tree of a session's state: `workspace`, or `runtime` (./store.ts). */
export interface SnapshotRoot {
  name: string;
  /** the host directory */
  path: string;
  /** picomatch patterns relative to the root: what is left out */
  ignore?: readonly string[];
}

export interface SnapshotterOptions {
  store: SnapshotStore;
  /** the worker's data dir: its record of each session's last snapshot goes in `snapshots/` below it */
  dataDir: string;
  /** the largest snapshot written, in bytes of files (AGENTPLANE_SNAPSHOT_MAX_BYTES) */
  maxBytes: number;
}

export interface SavedSnapshot {
  manifest: SnapshotManifest;
  /** files read (changed since the last snapshot) and chunks stored (not held by it) */
  filesRead: number;
  chunksStored: number;
  bytesStored: number;
}

export class SnapshotTooLargeError extends Error {
  constructor(
    readonly bytes: number,
    readonly maxBytes: number,
  ) {
    super(`the session's files pass the snapshot limit: ${bytes} bytes or more, limit ${maxBytes} (AGENTPLANE_SNAPSHOT_MAX_BYTES)`);
  }
}

type FileEntry = Extract<SnapshotEntry, { type: 'file' }>;

/** What a worker keeps of the last snapshot it wrote or restored for a session. */
interface LocalRecord {
  manifest: SnapshotManifest;
  /** root → path → what the file was on this disk when that snapshot was taken or restored */
  stats: Record<string, Record<string, FileStat>>;
}

export interface Snapshotter {
  /**
   * Makes this worker's copy of the session the newest snapshot: nothing when it is, else `stopLocal` (the worker's
   * runtime for the session, working on stale files) and a restore. Answers the manifest restored, or null.
   */
  ensureCurrent(sessionId: string, roots: readonly SnapshotRoot[], stopLocal: () => Promise<void>): Promise<SnapshotManifest | null>;
  save(sessionId: string, runtime: string, roots: readonly SnapshotRoot[]): Promise<SavedSnapshot>;
  /** the session ended: its snapshots and this worker's record of them go */
  drop(sessionId: string): Promise<void>;
  /** the sessions this worker's disk holds a copy of (its records), with each one's runtime */
  held(): Promise<Array<{ sessionId: string; runtime: string }>>;
}

export function createSnapshotter(opts: SnapshotterOptions): Snapshotter {
  const { store } = opts;
  const recordPath = (sessionId: string) => join(opts.dataDir, 'snapshots', `${sessionId}.json`);
  const writer = `${hostname()}:${opts.dataDir}`;

  async function readRecord(sessionId: string): Promise<LocalRecord | null> {
    try {
      return JSON.parse(await readFile(recordPath(sessionId), 'utf8')) as LocalRecord;
    } catch {
      return null;
    }
  }

  async function writeRecord(sessionId: string, record: LocalRecord): Promise<void> {
    const path = recordPath(sessionId);
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    await writeFile(`${path}.tmp`, JSON.stringify(record), { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }

  async function ensureCurrent(sessionId: string, roots: readonly SnapshotRoot[], stopLocal: () => Promise<void>): Promise<SnapshotManifest | null> {
    const [latest, local] = await Promise.all([store.latest(sessionId), readRecord(sessionId)]);
    if (!latest || local?.manifest.seq === latest.seq) return null;
    if (!MANIFEST_VERSIONS.has(latest.version)) throw new Error(`snapshot ${latest.seq} of ${sessionId} has manifest version ${latest.version}, which this worker cannot read: a newer worker wrote it`);
    await stopLocal();
    const stats: LocalRecord['stats'] = {};
    for (const root of roots) stats[root.name] = await restoreRoot(store, sessionId, root.path, latest.roots[root.name] ?? []);
    await writeRecord(sessionId, { manifest: latest, stats });
    return latest;
  }

  async function save(sessionId: string, runtime: string, roots: readonly SnapshotRoot[]): Promise<SavedSnapshot> {
    const local = await readRecord(sessionId);
    const base = local?.manifest ?? (await store.latest(sessionId));
    const stored = base ? chunksOf(base) : new Set<string>();
    const manifest: SnapshotManifest = { version: 2, sessionId, seq: (base?.seq ?? 0) + 1, createdAt: new Date().toISOString(), runtime, writer, bytes: 0, roots: {} };
    const stats: LocalRecord['stats'] = {};
    const result = { filesRead: 0, chunksStored: 0, bytesStored: 0 };
    let pending: StoredChunk[] = [];
    let pendingBytes = 0;
    const flush = async () => {
      if (pending.length === 0) return;
      await store.putChunks(sessionId, pending);
      result.chunksStored += pending.length;
      result.bytesStored += pendingBytes;
      pending = [];
      pendingBytes = 0;
    };
    /** a chunk this snapshot names: stored unless it is already */
    const keep = async (hash: string, content: Buffer) => {
      if (stored.has(hash)) return;
      stored.add(hash);
      const data = await encodeChunk(content);
      pending.push({ hash, data });
      pendingBytes += data.byteLength;
      if (pendingBytes >= BATCH_BYTES) await flush();
    };

    // small files: where each content already is in a pack (the base's, then this snapshot's), and the open pack
    const packedAt = new Map<string, { chunk: string; offset: number }>();
    for (const e of base ? filesOf(base) : []) if (e.packed) packedAt.set(e.packed.hash, { chunk: e.chunks[0] as string, offset: e.packed.offset });
    let pack = { parts: [] as Buffer[], bytes: 0, files: [] as FileEntry[], offsets: new Map<string, number>() };
    const sealPack = async () => {
      if (pack.files.length === 0) return;
      const content = Buffer.concat(pack.parts);
      const hash = sha256(content);
      await keep(hash, content);
      for (const f of pack.files) {
        f.chunks = [hash];
        packedAt.set(f.packed!.hash, { chunk: hash, offset: f.packed!.offset });
      }
      pack = { parts: [], bytes: 0, files: [], offsets: new Map() };
    };
    /** a small file's entry: its content's place in a pack, or the one chunk that is its content already */
    const packSmall = async (entry: FileEntry, content: Buffer) => {
      const hash = sha256(content);
      const at = packedAt.get(hash);
      if (at) {
        entry.chunks = [at.chunk];
        entry.packed = { offset: at.offset, hash };
        return;
      }
      if (stored.has(hash)) {
        entry.chunks = [hash];
        return;
      }
      let offset = pack.offsets.get(hash);
      if (offset === undefined) {
        if (pack.bytes + content.byteLength > CHUNK_BYTES) await sealPack();
        offset = pack.bytes;
        pack.offsets.set(hash, offset);
        pack.parts.push(content);
        pack.bytes += content.byteLength;
      }
      entry.packed = { offset, hash };
      pack.files.push(entry); // its chunk is the pack's, set when the pack is sealed
    };

    for (const root of roots) {
      const previous = new Map<string, SnapshotEntry>();
      for (const e of local?.manifest.roots[root.name] ?? []) previous.set(e.path, e);
      const seen = local?.stats[root.name] ?? {};
      const entries: SnapshotEntry[] = [];
      const rootStats: Record<string, FileStat> = {};
      const rootReal = await realpath(root.path).catch(() => null);
      if (rootReal) {
        for (const found of walk(root.path, root.ignore ?? [])) {
          if (found.type !== 'file') {
            entries.push(found.entry);
            continue;
          }
          const before = previous.get(found.path);
          const was = seen[found.path];
          if (before?.type === 'file' && was && sameFile(was, found.stat)) {
            entries.push(before);
            rootStats[found.path] = was;
            manifest.bytes += before.size;
            continue;
          }
          const read = await readFileSafely(join(root.path, found.path), join(rootReal, found.path));
          if (!read) continue; // gone, or not a regular file any more
          result.filesRead++;
          manifest.bytes += read.content.byteLength;
          if (manifest.bytes > opts.maxBytes) throw new SnapshotTooLargeError(manifest.bytes, opts.maxBytes);
          const entry: FileEntry = { path: found.path, type: 'file', mode: read.mode, size: read.content.byteLength, mtimeMs: read.mtimeMs, chunks: [] };
          entries.push(entry);
          rootStats[found.path] = read.stat;
          if (read.content.byteLength < PACK_FILE_BYTES) {
            await packSmall(entry, read.content);
            continue;
          }
          for (const piece of pieces(read.content)) {
            const hash = sha256(piece);
            entry.chunks.push(hash);
            await keep(hash, piece);
          }
        }
      }
      manifest.roots[root.name] = entries;
      stats[root.name] = rootStats;
      if (manifest.bytes > opts.maxBytes) throw new SnapshotTooLargeError(manifest.bytes, opts.maxBytes);
    }
    await sealPack();
    // the last chunks, the manifest and the pruning in one go; the snapshot before is kept too (a worker restoring it
    // right now still finds its chunks)
    await store.commit({ manifest, chunks: pending, keep: base ? [base] : [] });
    result.chunksStored += pending.length;
    result.bytesStored += pendingBytes;
    await writeRecord(sessionId, { manifest, stats });
    return { manifest, ...result };
  }

  async function drop(sessionId: string): Promise<void> {
    await store.drop(sessionId);
    await rm(recordPath(sessionId), { force: true });
  }

  async function held(): Promise<Array<{ sessionId: string; runtime: string }>> {
    const names = await readdir(join(opts.dataDir, 'snapshots')).catch(() => [] as string[]);
    const out: Array<{ sessionId: string; runtime: string }> = [];
    for (const name of names.filter((n) => n.endsWith('.json'))) {
      const record = await readRecord(name.slice(0, -'.json'.length));
      if (record) out.push({ sessionId: record.manifest.sessionId, runtime: record.manifest.runtime });
    }
    return out;
  }

  return { ensureCurrent, save, drop, held };
}

/**
 * A chunk as stored: a format byte, then the content, deflated when that saves a tenth or more. Whether it would is
 * tried on its first 64 KiB first: random or compressed content (archives, images, a model's weights) is not deflated
 * whole only to be stored raw.
 */
export async function encodeChunk(content: Uint8Array): Promise<Uint8Array> {
  const worthTrying = content.byteLength <= SAMPLE_BYTES || (await deflate(content.subarray(0, SAMPLE_BYTES), { level: 1 })).byteLength <= SAMPLE_BYTES * 0.9;
  if (content.byteLength >= 64 && worthTrying) {
    const deflated = await deflate(content, { level: 1 });
    if (deflated.byteLength <= content.byteLength * 0.9) return Buffer.concat([Buffer.from([DEFLATED]), deflated]);
  }
  return Buffer.concat([Buffer.from([RAW]), content]);
}

export async function decodeChunk(data: Uint8Array): Promise<Buffer> {
  const body = Buffer.from(data.buffer, data.byteOffset + 1, data.byteLength - 1);
  if (data[0] === RAW) return body;
  // output in pieces of about what it will be (up to a chunk) rather than zlib's 16 KiB: a 4 MiB pack comes out in
  // one piece instead of 256 and is not copied together again
  if (data[0] === DEFLATED) return inflate(body, { chunkSize: Math.min(CHUNK_BYTES, Math.max(64 * 1024, body.byteLength * 2)) });
  throw new Error(`unknown snapshot chunk format ${data[0]}`);
}

const sha256 = (content: Uint8Array) => createHash('sha256').update(content).digest('hex');

function* filesOf(manifest: SnapshotManifest): Generator<FileEntry> {
  for (const entries of Object.values(manifest.roots)) for (const e of entries) if (e.type === 'file') yield e;
}

/** What tells a changed file from an unchanged one without reading it (as git's index does). */
interface FileStat {
  size: number;
  mtimeMs: number;
  ino: number;
  ctimeMs: number;
}

const fileStat = (st: FileStat): FileStat => ({ size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, ctimeMs: st.ctimeMs });
const sameFile = (a: FileStat, b: FileStat) => a.size === b.size && a.mtimeMs === b.mtimeMs && a.ino === b.ino && a.ctimeMs === b.ctimeMs;

/** A file's content in chunks of at most CHUNK_BYTES. */
function pieces(content: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0; at < content.byteLength; at += CHUNK_BYTES) out.push(content.subarray(at, at + CHUNK_BYTES));
  return out;
}

type Found =
  | { type: 'file'; path: string; stat: FileStat }
  | { type: 'other'; entry: SnapshotEntry };

/**
 * Every directory, regular file and symlink below `root` (depth first, a directory before what it holds), minus
 * `ignore`. With the synchronous calls: a thousand files are walked in milliseconds, where awaiting each `lstat` took
 * 80 (bench/snapshots.ts); a snapshot's walk is short however large the workspace, and nothing else of the turn waits.
 */
function* walk(root: string, ignore: readonly string[]): Generator<Found> {
  const ignored = ignore.length > 0 ? picomatch([...ignore], { dot: true }) : () => false;
  const stack = [''];
  while (stack.length > 0) {
    const dir = stack.pop() as string;
    let names: string[];
    try {
      names = readdirSync(join(root, dir)).sort();
    } catch {
      continue; // removed while we walked
    }
    for (const name of names) {
      const path = dir ? `${dir}/${name}` : name;
      if (ignored(path)) continue;
      const st = lstatSync(join(root, path), { throwIfNoEntry: false });
      if (!st) continue;
      if (st.isDirectory()) {
        if (ignored(`${path}/`)) continue;
        yield { type: 'other', entry: { path, type: 'dir', mode: st.mode & 0o7777 } };
        stack.push(path);
      } else if (st.isSymbolicLink()) {
        const target = tryReadlink(join(root, path));
        if (target !== null) yield { type: 'other', entry: { path, type: 'symlink', target } };
      } else if (st.isFile()) {
        yield { type: 'file', path, stat: fileStat(st) };
      }
      // sockets, fifos and devices are not state
    }
  }
}

function tryReadlink(path: string): string | null {
  try {
    return readlinkSync(path);
  } catch {
    return null;
  }
}

/**
 * The content of the regular file at `path`, read without following a link anywhere on the way: it is opened with
 * O_NOFOLLOW, and read only if the descriptor's own path is `expected` (a directory above it swapped for a link would
 * lead elsewhere). A file that changes while it is read is read again; null when it is gone or not a regular file.
 */
async function readFileSafely(path: string, expected: string): Promise<{ content: Buffer; mode: number; mtimeMs: number; stat: FileStat } | null> {
  for (let attempt = 0; attempt < 3; attempt++) {
    let handle;
    try {
      handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch {
      return null;
    }
    try {
      const opened = await readlink(`/proc/self/fd/${handle.fd}`).catch(() => null);
      if (opened !== expected) return null;
      const before = await handle.stat();
      if (!before.isFile()) return null;
      const content = await handle.readFile();
      const after = await handle.stat();
      if (after.mtimeMs === before.mtimeMs && after.size === content.byteLength && after.ctimeMs === before.ctimeMs) {
        return { content, mode: after.mode & 0o7777, mtimeMs: after.mtimeMs, stat: fileStat(after) };
      }
    } finally {
      await handle.close();
    }
  }
  throw new Error(`${path} kept changing while it was snapshotted`);
}

/**
 * Writes a root's entries into a fresh directory next to `path`, then puts it in `path`'s place. Answers what each
 * file is on this disk now, so the next snapshot reads only what changes after.
 */
async function restoreRoot(store: SnapshotStore, sessionId: string, path: string, entries: readonly SnapshotEntry[]): Promise<Record<string, FileStat>> {
  const fresh = `${path}.restoring`;
  await rm(fresh, { recursive: true, force: true });
  await mkdir(dirname(path), { recursive: true, mode: 0o711 });
  // searchable, not listable, like the parents a sandbox creates: a runtime may mount a directory below the root
  // (DeepAgents' sandbox home), and what is inside keeps its own modes
  await mkdir(fresh, { mode: 0o711 });
  const target = (rel: string) => {
    const normal = posix.normalize(rel);
    if (normal.startsWith('../') || normal === '..' || posix.isAbsolute(normal) || normal !== rel) throw new Error(`snapshot of ${sessionId} names a path outside its root: ${rel}`);
    return join(fresh, rel);
  };

  const files = entries.filter((e): e is FileEntry => e.type === 'file');
  for (const e of entries) {
    if (e.type === 'dir') await mkdir(target(e.path), { mode: 0o700 });
    else if (e.type === 'symlink') await symlink(e.target, target(e.path));
  }
  // files in groups of about BATCH_BYTES: the next group's chunks are fetched while this one's are written. A group
  // does not end among the files of a pack it holds (the pack would be fetched twice).
  const groups: FileEntry[][] = [];
  let group: FileEntry[] = [];
  let inGroup = new Set<string>();
  let bytes = 0;
  for (const f of files) {
    if (group.length > 0 && bytes + f.size > BATCH_BYTES && f.chunks.some((h) => !inGroup.has(h))) {
      groups.push(group);
      group = [];
      inGroup = new Set();
      bytes = 0;
    }
    group.push(f);
    for (const h of f.chunks) inGroup.add(h);
    bytes += f.size;
  }
  if (group.length > 0) groups.push(group);
  const fetch = (g: FileEntry[]) => store.getChunks(sessionId, g.flatMap((f) => f.chunks));
  let next = groups.length > 0 ? fetch(groups[0]!) : null;
  for (let i = 0; i < groups.length; i++) {
    const chunks = await (next as Promise<Map<string, Uint8Array>>);
    next = i + 1 < groups.length ? fetch(groups[i + 1]!) : null;
    // each chunk decoded once, however many of the group's files it holds
    const decoded = new Map<string, Promise<Buffer>>();
    const decode = (hash: string) => {
      let content = decoded.get(hash);
      if (!content) decoded.set(hash, (content = decodeChunk(chunks.get(hash) as Uint8Array)));
      return content;
    };
    await Promise.all(
      groups[i]!.map(async (f) => {
        const file = target(f.path);
        await writeFile(file, await contentOf(f, decode), { flag: 'wx', mode: f.mode & 0o777 });
        await chmod(file, f.mode);
        await utimes(file, f.mtimeMs / 1000, f.mtimeMs / 1000);
      }),
    );
  }
  // directories' own modes last (a read-only directory would refuse what goes in it)
  for (const e of [...entries].reverse()) if (e.type === 'dir') await chmod(target(e.path), e.mode);

  await rm(path, { recursive: true, force: true });
  await rename(fresh, path);
  const stats: Record<string, FileStat> = {};
  for (const f of files) stats[f.path] = fileStat(lstatSync(join(path, f.path)));
  return stats;
}

/** A file's content from its decoded chunks: a slice of its pack, or its chunks in order; either is `size` bytes. */
async function contentOf(f: FileEntry, decode: (hash: string) => Promise<Buffer>): Promise<Buffer> {
  if (f.packed) {
    const pack = await decode(f.chunks[0] as string);
    const end = f.packed.offset + f.size;
    if (f.chunks.length !== 1 || end > pack.byteLength) throw new Error(`snapshot entry ${f.path} lies outside its pack ${f.chunks[0]}`);
    return pack.subarray(f.packed.offset, end);
  }
  const parts = await Promise.all(f.chunks.map(decode));
  const content = parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts);
  if (content.byteLength !== f.size) throw new Error(`snapshot entry ${f.path} is ${f.size} bytes but its chunks hold ${content.byteLength}`);
  return content;
}
