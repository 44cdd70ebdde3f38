/**
 * OpenClaw's install as a session's sandbox mounts it: the Node 24 binary's directory and the `node_modules` that holds
 * `openclaw` and its dependencies, read-only at their host paths.
 *
 * bubblewrap mounts as the sandbox's unprivileged user, so every directory above a mount must be searchable by others.
 * `scripts/ensure-openclaw.sh` installs into `~/.cache/agentplane/openclaw`, and a root worker's home (/root) is 0700:
 * the sandbox could not reach it. A root worker then mirrors the install into a root-owned 0755 directory
 * (`/var/cache/agentplane/openclaw-<key>` by default: a cache, rebuilt from the install when missing) with hard links
 * (`cp -al`: no data copied, a fraction of a second for OpenClaw's 40,000 files; a plain copy across filesystems), and
 * the sandbox mounts the mirror. The key covers the install's paths and modification times, so an updated install
 * gets a new mirror (an old one stays until removed: it is only a cache). The worker's own home is never opened to
 * others, and nothing under /tmp is used (anyone can create names there). A worker that is not root runs its sandboxes
 * as its own uid, which reaches its own install: no mirror then.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { realpathSync, statSync } from 'node:fs';
import { lstat, mkdir, rename, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, relative } from 'node:path';
import { promisify } from 'node:util';

export interface OpenClawInstall {
  nodeBin: string;
  openclawBin: string;
  /** what the sandbox mounts read-only */
  mounts: string[];
}

/** where a root worker mirrors an install its sandboxes cannot reach */
export const DEFAULT_MIRROR_DIR = '/var/cache/agentplane';

const run = promisify(execFile);

/** The directory OpenClaw's packages resolve from: the nearest `node_modules` above `openclaw.mjs`. */
function packagesRoot(openclawBin: string): string {
  for (let dir = dirname(openclawBin); dir !== dirname(dir); dir = dirname(dir)) {
    if (basename(dir) === 'node_modules') return dir;
  }
  return dirname(openclawBin);
}

/** Whether every directory above `path` is searchable by any user. */
function reachableByOthers(path: string): boolean {
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) return false;
    if (dir === dirname(dir)) return true;
  }
}

/** `path` must be a real directory of root's that nobody else can write: what the sandboxes run must be the worker's. */
async function assertRootOwned(path: string): Promise<void> {
  const info = await lstat(path);
  if (!info.isDirectory() || info.uid !== 0 || (info.mode & 0o022) !== 0) {
    throw new Error(`${path} must be a directory owned by root and writable by nobody else (it holds the OpenClaw install sandboxes run)`);
  }
}

/** The install the sandboxes mount: the configured one where they can reach it, else a mirror of it (see above). */
export async function sandboxInstall(nodeBin: string, openclawBin: string, mirrorDir = DEFAULT_MIRROR_DIR): Promise<OpenClawInstall> {
  const node = realpathSync(nodeBin);
  const app = realpathSync(openclawBin);
  const roots = { node: dirname(node), app: packagesRoot(app) };
  if (process.getuid?.() !== 0 || (reachableByOthers(roots.node) && reachableByOthers(roots.app))) {
    return { nodeBin: node, openclawBin: app, mounts: [roots.node, roots.app] };
  }
  const key = createHash('sha256')
    .update([roots.node, roots.app, statSync(node).mtimeMs, statSync(app).mtimeMs, statSync(join(dirname(app), 'package.json'), { throwIfNoEntry: false })?.mtimeMs ?? 0].join('\0'))
    .digest('hex')
    .slice(0, 16);
  const mirror = join(mirrorDir, `openclaw-${key}`);
  // each root keeps its name (`node_modules`, so that Node resolves OpenClaw's packages from it)
  const into = { node: join('node', basename(roots.node)), app: join('app', basename(roots.app)) };
  const mirrored = { nodeBin: join(mirror, into.node, basename(node)), openclawBin: join(mirror, into.app, relative(roots.app, app)), mounts: [mirror] };
  await mkdir(mirrorDir, { recursive: true, mode: 0o755 });
  await assertRootOwned(mirrorDir);
  if (await lstat(join(mirror, '.complete')).catch(() => null)) {
    await assertRootOwned(mirror);
    return mirrored;
  }
  // built next to its final name and renamed into place: a worker that stops half way, or two building at once, never
  // leave a partial mirror under the name
  const building = `${mirror}.${process.pid}.${Date.now()}`;
  await mkdir(building, { mode: 0o755 });
  try {
    for (const name of ['node', 'app'] as const) {
      const to = join(building, into[name]);
      await mkdir(dirname(to), { mode: 0o755 });
      await run('cp', ['-al', '--', roots[name], to]).catch(async () => {
        // another filesystem: a copy, over whatever the failed link left
        await rm(to, { recursive: true, force: true });
        await run('cp', ['-a', '--', roots[name], to]);
      });
    }
    await writeFile(join(building, '.complete'), `${JSON.stringify(roots)}\n`, { mode: 0o644 });
    await rename(building, mirror).catch(async (err: NodeJS.ErrnoException) => {
      // another worker finished first: its mirror is the same
      if (!(await lstat(join(mirror, '.complete')).catch(() => null))) throw err;
    });
  } finally {
    await rm(building, { recursive: true, force: true });
  }
  await assertRootOwned(mirror);
  return mirrored;
}
