/**
 * The `bubblewrap` provider: every spawn is one `bwrap` invocation with its own user, pid, ipc, uts, network, mount
 * and (where possible) cgroup namespaces, run as the session's unprivileged host user, under prlimit limits and a
 * seccomp filter. What a sandboxed process sees:
 *
 *   /usr (read-only; /bin, /sbin, /lib, /lib64 as the host has them: symlinks into /usr or read-only binds)
 *   /etc            read-only copies of an allowlist of the host's files (dynamic linker, CA certificates, alternatives, time
 *                   zone, name service config) and generated passwd, group and hosts; nothing else of the host's /etc
 *   /proc           a new procfs: only this sandbox's processes
 *   /dev            a minimal dev (null, zero, random, urandom, tty, pts), read-only, with a small private /dev/shm
 *   /tmp            a private tmpfs of bounded size (one per spawn)
 *   /workspace      the session's workspace (read-write)
 *   /state          the runtime's state for this session (read-write; HOME)
 *   /run/agentplane the session's bridge sockets (read-only: the worker's sockets); /run/agentplane/in read-write
 *                   (the sockets of servers inside)
 *   <mounts>        the spec's read-only mounts at their host paths (the runtime's install)
 *   everything else read-only and empty: `/` is a tmpfs remounted read-only once the mounts are in place.
 *
 * The user. Inside, uid and gid 1000 (`agent`), no capabilities, no_new_privs (bwrap sets it for the filter). On the
 * host, when the worker is root, each session runs as its own uid, derived from the session id in a reserved range
 * (`uidBase` + a hash, `uidCount` wide; default 0x70000000, which systemd leaves unassigned). A uid per session rather
 * than one sandbox uid because RLIMIT_NPROC counts per uid, so one session's fork bomb cannot use up another's
 * processes, and because a process that left its sandbox would still be a stranger to every other session's files.
 * Derived rather than allocated, so a resumed session finds its files owned by the uid it runs as again. Two session
 * ids can land on one uid (a birthday chance of about 1 % at 1,000 live sessions): they then share the process limit;
 * nothing else, since no sandbox sees another's paths or processes. When the worker is not root, the sandbox runs as
 * the worker's uid: still isolated by namespaces, but an escape would be the worker.
 *
 * bwrap runs as that unprivileged uid and resolves every mount source with its rights: the workspace, state, run dir
 * and mounts must be reachable by it (each parent directory searchable by others). `prepare` checks and says which
 * directory is not.
 *
 * The network. None of its own (`--unshare-net`: loopback only). Bridges are `socat` processes started inside each
 * spawn before the command: `TCP-LISTEN:127.0.0.1:<port>` → `/run/agentplane/<name>.sock` (a worker server given to
 * `expose`), and `/run/agentplane/in/<port>.sock` → `TCP:127.0.0.1:<port>` (a server inside, for `connect`). The
 * worker opens the latter without following a symlink the sandbox could have put there.
 *
 * The process chain, on the host: `choom -n 1000` (the kernel's OOM killer takes a sandboxed process before the worker,
 * Postgres or Temporal) → `prlimit` (the limits, inherited by everything inside; inside bwrap instead when the worker
 * is not root, see `spawn`) → `bwrap --args 4`, all as the session's uid with PATH alone in their environment. bwrap reads its options, the sandbox's environment among them
 * (`--clearenv --setenv …`), from descriptor 4, so neither the environment (keys) nor the mounts appear on a command
 * line the host's `ps` shows, and nothing in that environment (LD_PRELOAD…) acts on the host-side processes. The
 * seccomp program comes on descriptor 3.
 *
 * Lifetime. `--die-with-parent`: a sandbox ends with the worker that started it (its bridges are the worker's anyway).
 * `--new-session`: no access to the worker's terminal. A kill is SIGKILL to the sandbox's pid 1, which ends every
 * process inside at once.
 */
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, constants, cpSync, existsSync, fstatSync, lstatSync, mkdirSync, mkdtempSync, openSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { chmod, chown, lchown, lstat, mkdir, readdir, rm, stat } from 'node:fs/promises';
import { connect as netConnect, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, posix } from 'node:path';
import { DEFAULT_LIMITS, type Sandbox, type SandboxLimits, type SandboxProcess, type SandboxProvider, type SandboxSpawnOptions, type SandboxSpec } from './provider';
import { hostSeccompArch, seccompFilter } from './seccomp';
import { launch, prlimitArgs, signalGroup } from './supervise';

export interface BubblewrapOptions {
  limits?: Partial<SandboxLimits>;
  /** first host uid of the range sessions are mapped into when the worker is root */
  uidBase?: number;
  /** how many uids the range holds */
  uidCount?: number;
  /** where the sandboxes' /etc is built (default: a directory of this process's in the system's tmp) */
  etcDir?: string;
  logger: { info(msg: string, meta?: Record<string, unknown>): void; warn(msg: string, meta?: Record<string, unknown>): void };
}

/** 0x70000000: above every range systemd assigns (containers end at 0x6FFFFFFF), below its "foreign" range. */
export const DEFAULT_UID_BASE = 0x70000000;
export const DEFAULT_UID_COUNT = 0x04000000;

const INSIDE_UID = 1000;
const RUN = '/run/agentplane';
const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
/** O_PATH (Linux, same value on x86_64 and aarch64): a handle on a file without opening it */
const O_PATH = 0o10000000;
/** the first port `port()` hands out; each spawn has a fresh loopback, so any fixed start works */
const FIRST_PORT = 20000;
const NAME = /^[a-z][a-z0-9-]{0,31}$/;

/**
 * The host's /etc entries a sandbox sees (when present): what the dynamic linker, TLS clients, `/usr/bin`'s
 * alternatives symlinks, time zones, name service lookups, shells and Python/Perl need. Not passwd/group/shadow,
 * hosts, hostname, machine-id, environment, ssh, ssl/private, npmrc, pip.conf, gitconfig or anything a service
 * keeps there.
 */
const ETC_ALLOWLIST = [
  'alternatives',
  'ld.so.cache',
  'ld.so.conf',
  'ld.so.conf.d',
  'ssl/certs',
  'ssl/openssl.cnf',
  'ca-certificates',
  'ca-certificates.conf',
  'localtime',
  'timezone',
  'nsswitch.conf',
  'host.conf',
  'gai.conf',
  'protocols',
  'services',
  'networks',
  'mime.types',
  'magic',
  'magic.mime',
  'os-release',
  'debian_version',
  'shells',
  'bash.bashrc',
  'inputrc',
  'locale.alias',
  'terminfo',
  'python3',
  'perl',
];

const PASSWD = `root:x:0:0:root:/nonexistent:/usr/sbin/nologin\nagent:x:${INSIDE_UID}:${INSIDE_UID}:agent:/state:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`;
const GROUP = `root:x:0:\nagent:x:${INSIDE_UID}:\nnogroup:x:65534:\n`;
const HOSTS = '127.0.0.1\tlocalhost agentplane\n::1\tlocalhost ip6-localhost ip6-loopback\n';

/** The host uid a session's sandbox runs as (when the worker is root). */
export function sandboxUid(sessionId: string, base = DEFAULT_UID_BASE, count = DEFAULT_UID_COUNT): number {
  return base + (createHash('sha256').update(sessionId).digest().readUInt32BE(0) % count);
}

/** The host's /bin, /sbin, /lib… as bwrap arguments: the same symlink into /usr, or a read-only bind. */
function rootDirArgs(): string[] {
  const args: string[] = ['--ro-bind', '/usr', '/usr'];
  for (const dir of ['/bin', '/sbin', '/lib', '/lib64', '/lib32', '/libx32']) {
    if (!existsSync(dir)) continue;
    const info = lstatSync(dir);
    if (info.isSymbolicLink()) args.push('--symlink', posix.relative('/', join(dirname(dir), readlinkSync(dir))), dir);
    else if (info.isDirectory()) args.push('--ro-bind', dir, dir);
  }
  return args;
}

/**
 * The sandboxes' /etc, built once per provider in a directory of its own and mounted whole (one mount rather than one
 * per entry: a third of a spawn's cost): copies of the allowlisted host entries (symlinks kept as they are: they point
 * into /usr) and the generated passwd, group and hosts. A host change to those files reaches sandboxes when the worker
 * restarts. Rebuilt when something (a /tmp cleaner) removed it.
 */
function buildEtc(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true, mode: 0o755 });
  chmodSync(dir, 0o755);
  for (const entry of ETC_ALLOWLIST) {
    const source = `/etc/${entry}`;
    if (!existsSync(source) && !lstatExists(source)) continue;
    mkdirSync(dirname(join(dir, entry)), { recursive: true, mode: 0o755 });
    cpSync(source, join(dir, entry), { recursive: true, verbatimSymlinks: true, preserveTimestamps: true, errorOnExist: false });
  }
  writeFileSync(join(dir, 'passwd'), PASSWD, { mode: 0o644 });
  writeFileSync(join(dir, 'group'), GROUP, { mode: 0o644 });
  writeFileSync(join(dir, 'hosts'), HOSTS, { mode: 0o644 });
}

function lstatExists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

/** Why `uid`/`gid` cannot reach `path` (a directory on the way is not searchable by it), or null. */
async function unreachable(path: string, uid: number, gid: number): Promise<string | null> {
  const parts = path.split('/').filter(Boolean);
  for (let i = 0; i < parts.length; i++) {
    const dir = `/${parts.slice(0, i).join('/')}`;
    const info = await stat(dir);
    const searchable = info.mode & 0o001 || (info.uid === uid && info.mode & 0o100) || (info.gid === gid && info.mode & 0o010);
    if (!searchable) return `${dir} (mode ${(info.mode & 0o777).toString(8)}) is not searchable by the sandbox's user`;
  }
  return null;
}

/** lchown everything under `dir` (never following a symlink) that is not owned by uid already. */
async function chownTree(dir: string, uid: number, gid: number): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    const info = await lstat(path);
    if (info.uid !== uid || info.gid !== gid) await lchown(path, uid, gid);
    if (entry.isDirectory() && !entry.isSymbolicLink()) await chownTree(path, uid, gid);
  }
}

export function createBubblewrapProvider(opts: BubblewrapOptions): SandboxProvider {
  const arch = hostSeccompArch();
  if (!arch) throw new Error(`the bubblewrap sandbox has no seccomp filter for ${process.arch}: x64 and arm64 only`);
  const filter = new Uint8Array(seccompFilter(arch));
  const baseArgs = rootDirArgs();
  const etc = opts.etcDir ?? mkdtempSync(join(tmpdir(), 'agentplane-sandbox-etc-'));
  buildEtc(etc);
  if (!opts.etcDir) process.once('exit', () => rmSync(etc, { recursive: true, force: true }));
  const providerLimits: SandboxLimits = { ...DEFAULT_LIMITS, ...opts.limits };
  const isRoot = process.getuid?.() === 0;
  const uidBase = opts.uidBase ?? DEFAULT_UID_BASE;
  const uidCount = opts.uidCount ?? DEFAULT_UID_COUNT;
  if (uidBase < 65536 || uidCount < 1 || uidBase + uidCount - 1 > 0x7fffffff) throw new Error('the sandbox uid range must lie within 65536..2147483647');

  async function prepare(spec: SandboxSpec): Promise<Sandbox> {
    if (!spec.sessionId) throw new Error('a sandbox needs a session id');
    const uid = isRoot ? sandboxUid(spec.sessionId, uidBase, uidCount) : process.getuid!();
    const gid = isRoot ? uid : process.getgid!();
    const inbound = join(spec.run, 'in');
    // an install below /usr (a system interpreter's directory) is in the sandbox already, read-only at the same path
    const mounts = (spec.mounts ?? []).filter((path) => !path.startsWith('/usr/'));
    for (const path of mounts) {
      if (!path.startsWith('/') || posix.normalize(path) !== path) throw new Error(`a sandbox mount must be an absolute, normalised path: ${path}`);
      const reserved = ['/workspace', '/state', '/tmp', '/proc', '/dev', '/etc', RUN, '/usr'];
      // below /tmp is allowed (a checkout or an install there): it is bound read-only over the sandbox's private /tmp
      const within = (r: string) => path.startsWith(`${r}/`) && r !== '/tmp';
      if (path === '/' || reserved.some((r) => path === r || within(r) || r.startsWith(`${path}/`))) throw new Error(`a sandbox mount may not cover ${path}`);
    }

    for (const dir of [spec.workspace, spec.state]) {
      // parents it creates are searchable (not listable) by others, so the sandbox's user can reach what it mounts
      await mkdir(dirname(dir), { recursive: true, mode: 0o711 });
      await mkdir(dir, { recursive: true, mode: 0o700 });
      if (isRoot) {
        const owner = await lstat(dir);
        if (owner.isSymbolicLink()) throw new Error(`${dir} is a symlink: a sandbox mounts real directories only`);
        // a directory from before (a resumed session, another uid range) is handed over once, without following links
        if (owner.uid !== uid || owner.gid !== gid) await chownTree(dir, uid, gid);
        await lchown(dir, uid, gid);
      }
    }
    if (!spec.keep) await rm(spec.run, { recursive: true, force: true });
    await mkdir(dirname(spec.run), { recursive: true, mode: 0o711 });
    await mkdir(spec.run, { recursive: true, mode: 0o755 });
    await chmod(spec.run, 0o755);
    await mkdir(inbound, { recursive: true, mode: 0o700 });
    if (isRoot) await chown(inbound, uid, gid);

    if (isRoot) {
      for (const path of [spec.workspace, spec.state, spec.run, ...mounts]) {
        const why = await unreachable(path, uid, gid);
        if (why) throw new Error(`the sandbox cannot mount ${path}: ${why} (bubblewrap mounts as the sandbox's unprivileged user)`);
      }
    }

    const exposed: Array<{ name: string; port: number }> = [];
    const live = new Set<SandboxProcess>();
    let nextPort = FIRST_PORT;

    function mountArgs(limits: SandboxLimits): string[] {
      return [
        ...baseArgs,
        '--ro-bind', etc, '/etc',
        '--proc', '/proc',
        '--dev', '/dev',
        '--perms', '1777', '--size', String(Math.max(1024 ** 2, Math.floor(limits.tmpBytes / 16))), '--tmpfs', '/dev/shm',
        '--perms', '1777', '--size', String(limits.tmpBytes), '--tmpfs', '/tmp',
        '--bind', spec.workspace, '/workspace',
        '--bind', spec.state, '/state',
        '--ro-bind', spec.run, RUN,
        '--bind', inbound, `${RUN}/in`,
        ...mounts.flatMap((path) => ['--ro-bind', path, path]),
        '--remount-ro', '/dev',
        '--remount-ro', '/',
      ];
    }

    function bridge(name: string) {
      if (!NAME.test(name)) throw new Error(`a bridge name is lowercase letters, digits and "-": ${JSON.stringify(name)}`);
      if (exposed.some((e) => e.name === name)) throw new Error(`a server is exposed as ${name} already`);
      const port = nextPort++;
      exposed.push({ name, port });
      return { port, socketPath: join(spec.run, `${name}.sock`), uid, gid };
    }

    function spawn(command: string, args: readonly string[], o: SandboxSpawnOptions = {}): SandboxProcess {
      const limits = { ...providerLimits, ...o.limits };
      const cwd = o.cwd ?? '/workspace';
      if (!existsSync(join(etc, 'passwd'))) buildEtc(etc);
      const env = { PATH, HOME: '/state', TMPDIR: '/tmp', LANG: 'C.UTF-8', USER: 'agent', ...o.env };
      for (const name of Object.keys(env)) {
        if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`not an environment variable name: ${JSON.stringify(name)}`);
      }
      // bwrap reads its options from a descriptor (--args 4): the sandbox's environment (keys among it) and mounts are
      // on no command line the host's `ps` shows, and choom, prlimit and bwrap themselves run with PATH alone, so
      // nothing in the sandbox's environment (LD_PRELOAD, say) acts on them outside the sandbox
      const options = [
        '--unshare-user', '--unshare-pid', '--unshare-ipc', '--unshare-uts', '--unshare-net', '--unshare-cgroup-try',
        '--disable-userns',
        '--uid', String(INSIDE_UID), '--gid', String(INSIDE_UID),
        '--hostname', 'agentplane',
        // a persistent sandbox's parent is the shell below, which outlives the worker
        '--die-with-parent', '--new-session',
        '--cap-drop', 'ALL',
        '--seccomp', '3',
        ...mountArgs(limits),
        '--chdir', cwd,
        '--clearenv',
        ...Object.entries(env).flatMap(([name, value]) => ['--setenv', name, value]),
      ];
      if (options.some((option) => option.includes('\0'))) throw new Error('a sandbox option or environment value contains a NUL byte');
      const optionsFd = new Uint8Array(Buffer.from(`${options.join('\0')}\0`));
      const prlimit = prlimitArgs(limits);
      // As root, the limits go on before bwrap, as the session's own uid: RLIMIT_NPROC then bounds every process of
      // the session (all its spawns share the uid), and the user namespace bwrap makes inherits the bound. As another
      // user, that uid also runs the worker and everything else of its owner, and RLIMIT_NPROC set before bwrap would
      // count all of those (bwrap could not even start past it): there the limits go on inside, where RLIMIT_NPROC
      // counts the processes of this one sandbox.
      const inner = withBridges(command, args, exposed, o.serve ?? []);
      const chain = isRoot
        ? ['/usr/bin/prlimit', ...prlimit, '--', '/usr/bin/bwrap', '--args', '4', '--', ...inner]
        : ['/usr/bin/bwrap', '--args', '4', '--', '/usr/bin/prlimit', ...prlimit, '--', ...inner];
      // the kernel's OOM killer takes a sandboxed process before the worker, Postgres or Temporal
      const outer = ['/usr/bin/choom', '-n', '1000', '--', ...chain];
      // persistent: a shell waits for the sandbox (`; exit` keeps dash from exec'ing it), so bwrap's parent, whose end
      // ends the sandbox (--die-with-parent), is that shell in the sandbox's process group, not the worker
      const [file, ...rest] = o.persistent ? ['/bin/sh', '-c', '"$@"; exit $?', 'sandbox', ...outer] : outer;
      const proc = launch({
        file: file!,
        args: rest,
        env: { PATH: '/usr/bin:/bin' },
        extraFds: [filter, optionsFd],
        uid: isRoot ? uid : undefined,
        gid: isRoot ? gid : undefined,
        cwd: '/',
        input: o.input,
        interactive: o.interactive,
        capture: o.capture,
        logFile: o.logFile,
        persistent: o.persistent,
        timeoutMs: o.timeoutMs,
        signal: o.signal,
        onExit: () => live.delete(proc),
        terminate: killSandbox,
      });
      live.add(proc);
      return proc;
    }

    return {
      sessionId: spec.sessionId,
      kind: 'bubblewrap',
      paths: { workspace: '/workspace', state: '/state', tmp: '/tmp' },
      hostPath(insidePath) {
        const path = posix.normalize(insidePath);
        for (const [inside, host] of [['/workspace', spec.workspace], ['/state', spec.state]] as const) {
          if (path === inside) return host;
          if (path.startsWith(`${inside}/`)) return join(host, path.slice(inside.length + 1));
        }
        return null;
      },
      async port() {
        return nextPort++;
      },
      bridge: async (name: string) => bridge(name),
      async expose(name: string, server: Server) {
        const { port, socketPath } = bridge(name);
        await listenIn(server, spec.run, `${name}.sock`);
        // only this session's user may connect (the socket is in its run dir, which no other sandbox mounts anyway)
        if (isRoot) await chown(socketPath, uid, gid);
        await chmod(socketPath, 0o600);
        return port;
      },
      connect(port: number) {
        return connectInbound(join(inbound, `${port}.sock`));
      },
      spawn,
      async teardown() {
        for (const proc of live) proc.kill();
        await Promise.all([...live].map((proc) => proc.exited));
        await rm(spec.run, { recursive: true, force: true });
      },
    };
  }

  opts.logger.info('sandbox: bubblewrap', { seccompArch: arch, perSessionUid: isRoot, limits: providerLimits });
  return { kind: 'bubblewrap', prepare };
}

/**
 * Ends a sandbox whose outermost process (bwrap, outside the sandbox) is `pid`: SIGKILL to its child, the sandbox's
 * pid 1, which takes every process in the sandbox with it; bwrap then reaps it and exits. Killing bwrap first instead
 * would leave that pid 1 to the host's init to reap, and a zombie still counts against the session's process limit
 * until it is. Before bwrap has a child there is only bwrap to kill.
 */
function killSandbox(pid: number): void {
  let children: number[] = [];
  try {
    children = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    // gone, or a kernel without CONFIG_PROC_CHILDREN: the group kill below does it
  }
  if (children.length === 0) return signalGroup(pid, 'SIGKILL');
  for (const child of children) {
    try {
      process.kill(child, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/**
 * The command, preceded by the bridges when there are any: a shell starts one socat per bridge, waits until the
 * outbound ones listen (so the command's first connection finds them), and execs the command.
 */
function withBridges(command: string, args: readonly string[], exposed: ReadonlyArray<{ name: string; port: number }>, serve: readonly number[]): string[] {
  if (exposed.length === 0 && serve.length === 0) return [command, ...args];
  const lines: string[] = [];
  for (const { name, port } of exposed) {
    lines.push(`socat TCP-LISTEN:${port},bind=127.0.0.1,fork,reuseaddr UNIX-CONNECT:${RUN}/${name}.sock </dev/null >/dev/null 2>&1 &`);
  }
  for (const port of serve) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`not a port: ${port}`);
    lines.push(`socat UNIX-LISTEN:${RUN}/in/${port}.sock,fork,unlink-early TCP:127.0.0.1:${port} </dev/null >/dev/null 2>&1 &`);
  }
  if (exposed.length > 0) {
    // /proc/net/tcp lists local addresses as HEXADDR:HEXPORT with state 0A for LISTEN; shell builtins only
    const hex = exposed.map(({ port }) => port.toString(16).toUpperCase().padStart(4, '0'));
    lines.push(
      'listening() { while read -r _ a _ s _; do case "$a:$s" in *:$1:0A) return 0;; esac; done < /proc/net/tcp; return 1; }',
      `for p in ${hex.join(' ')}; do`,
      '  n=0',
      '  until listening "$p"; do',
      '    n=$((n+1)); [ $n -gt 100 ] && sleep 0.01',
      '    [ $n -gt 600 ] && { echo "agentplane: a bridge did not listen" >&2; exit 125; }',
      '  done',
      'done',
    );
  }
  lines.push('exec "$@"');
  return ['/bin/sh', '-c', lines.join('\n'), 'sandbox', command, ...args];
}

/** Listens on `dir/name` through a descriptor of `dir`, so the path's length never hits the 108-byte socket limit. */
async function listenIn(server: Server, dir: string, name: string): Promise<void> {
  await rm(join(dir, name), { force: true });
  const fd = openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(`/proc/self/fd/${fd}/${name}`, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } finally {
    closeSync(fd);
  }
}

/**
 * Connects to a socket a sandboxed process created, without following a symlink it may have put there instead (the
 * worker would otherwise connect, with its rights, wherever the link points): the final name is opened with
 * O_PATH | O_NOFOLLOW, checked to be a socket, and connected to through /proc/self/fd. The directory above is the
 * worker's.
 */
function connectInbound(path: string): Promise<Socket> {
  let fd: number;
  try {
    fd = openSync(path, O_PATH | constants.O_NOFOLLOW);
  } catch (err) {
    return Promise.reject(err);
  }
  if (!fstatSync(fd).isSocket()) {
    closeSync(fd);
    return Promise.reject(Object.assign(new Error(`${path} is not a socket`), { code: 'ENOTSOCK' }));
  }
  return new Promise<Socket>((resolve, reject) => {
    const socket = netConnect(`/proc/self/fd/${fd}`);
    let open = true;
    const settle = () => {
      if (open) closeSync(fd);
      open = false;
    };
    socket.once('connect', () => {
      settle();
      resolve(socket);
    });
    socket.once('error', (err) => {
      settle();
      reject(err);
    });
  });
}
