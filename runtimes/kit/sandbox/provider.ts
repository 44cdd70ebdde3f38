/**
 * One session's sandbox, behind one interface so that a deployment can swap how it is made:
 * - `bubblewrap` (./bubblewrap.ts): namespaces, a mount allowlist, a seccomp filter and resource limits on this host;
 * - `none` (./none.ts): no isolation at all, for machines that cannot make namespaces, behind a loud setting;
 * - a Kubernetes provider later: a pod per session with a gVisor or Kata runtime class. `prepare` creates the pod (its
 *   workspace and state on volumes); `spawn` runs a command in it (the pod's main container for a runtime server, an
 *   exec for a tool call); `expose` serves a worker-side server to the pod (a port on the worker that a
 *   NetworkPolicy lets only that pod reach, or a sidecar); `connect` opens TCP to the pod's IP and port; `hostPath`
 *   answers null (the worker reads files through the pod); `teardown` deletes the pod.
 *
 * What the worker may rely on whatever the provider:
 * - a process sees its session's workspace at `paths.workspace` (read-write), its state at `paths.state` (read-write,
 *   its HOME), a private `/tmp`, and the read-only mounts the spec names, at their own host paths;
 * - its only way out is a server the worker exposed to it (`expose`: the egress proxy, the model bridge), reached at
 *   `127.0.0.1:<port>` inside; a server it runs is reached by the worker through `connect(port)` only;
 * - its environment is the one `spawn` is given plus PATH, HOME, TMPDIR, LANG and USER, never the worker's.
 */
import type { Server, Socket } from 'node:net';
import type { Readable, Writable } from 'node:stream';
import { Agent, fetch as undiciFetch, type Dispatcher, type RequestInit as UndiciRequestInit } from 'undici';

export type SandboxKind = 'bubblewrap' | 'none';

/** Resource limits on each sandboxed process (prlimit). Per process unless said otherwise. */
export interface SandboxLimits {
  /** RLIMIT_NPROC: processes and threads of the sandbox's user (a fork bomb stops here) */
  processes: number;
  /** RLIMIT_DATA in bytes: the heap and private writable mappings of one process (what a memory hog grows) */
  memoryBytes: number;
  /** RLIMIT_CPU in seconds of CPU time per process (a runaway loop ends here) */
  cpuSeconds: number;
  /** RLIMIT_FSIZE in bytes: the largest file a process may write */
  fileSizeBytes: number;
  /** RLIMIT_NOFILE: open file descriptors per process */
  openFiles: number;
  /** size of the private /tmp (a tmpfs: memory) in bytes; /dev/shm gets a sixteenth of it */
  tmpBytes: number;
}

/**
 * Defaults, and why:
 * - 512 processes: RLIMIT_NPROC counts threads, and a Node or Bun runtime server alone runs 10-20, a JVM 30 or more,
 *   a parallel build a few dozen; 512 leaves room for that and still stops a fork bomb long before the host's pid
 *   table (4 million) or its memory notices.
 * - 4 GiB of heap per process: a TypeScript or Rust build stays under it; RLIMIT_DATA rather than RLIMIT_AS because
 *   runtimes reserve address space they never touch (WebAssembly in Node 20 reserves ~10 GiB per memory: under a 4 GiB
 *   RLIMIT_AS Node 20's own fetch fails), and RLIMIT_DATA counts what a process can actually fill.
 * - 1 hour of CPU per process: a tool call that spins forever ends; a runtime server that works for hours uses a small
 *   fraction of that (each process counts its own time).
 * - 2 GiB per file: larger than a package or a repository's pack, small enough that one runaway write is not a full
 *   disk (many files still can be: disk quotas need a filesystem with them, which this machine does not have).
 * - 8192 open files: file watchers and dev servers want more than the usual 1024.
 * - 1 GiB of /tmp: tmpfs is memory, so it is bounded like memory.
 */
export const DEFAULT_LIMITS: SandboxLimits = {
  processes: 512,
  memoryBytes: 4 * 1024 ** 3,
  cpuSeconds: 3600,
  fileSizeBytes: 2 * 1024 ** 3,
  openFiles: 8192,
  tmpBytes: 1024 ** 3,
};

export interface SandboxSpec {
  /** the session's id: names the sandbox in logs and picks its user id */
  sessionId: string;
  /** host directory of the session's workspace (created when missing; read-write inside) */
  workspace: string;
  /** host directory of the runtime's state for this session (created when missing; read-write inside, HOME) */
  state: string;
  /** host directory for the bridge sockets (created when missing, emptied at teardown; the worker's, not the sandbox's) */
  run: string;
  /**
   * host paths mounted read-only at the same path inside: the runtime's install directory and what it links to (a
   * Python venv's interpreter, say), at the same path so that shebangs, venvs and absolute symlinks keep working.
   * Each must be reachable by an unprivileged user (every parent directory searchable by others), since bubblewrap
   * mounts as the sandbox's user, and none may lie in or over /usr, /etc, /tmp, /proc, /dev, /workspace, /state or
   * /run/agentplane.
   */
  mounts?: readonly string[];
  /**
   * A sandbox a previous worker left running (a runtime server spawned `persistent`): its run dir, with the sockets of
   * its bridges and of the servers inside, is kept instead of emptied. Bridges must then be made again in the same
   * order (`bridge`, `expose`), so that each gets the port the processes inside were given.
   */
  keep?: boolean;
}

export interface SandboxSpawnOptions {
  /** working directory inside (default: the workspace) */
  cwd?: string;
  /** the process's environment besides PATH, HOME, TMPDIR, LANG and USER (which it may override) */
  env?: Readonly<Record<string, string>>;
  /** written to the process's stdin, which is closed after it (default: no stdin) */
  input?: string;
  /**
   * stdin and stdout are the caller's (`SandboxProcess.stdin`, `.stdout`), for runtimes that speak over stdio (ACP
   * agents, the Claude Code binary); only stderr's tail is kept. `input` and `capture` do not apply.
   */
  interactive?: boolean;
  /** keep stdout and stderr whole (up to 16 MiB each) in `exited`; otherwise only their tail is kept */
  capture?: boolean;
  /** host file the output is appended to (a runtime server's log) */
  logFile?: string;
  /** ports this process will listen on inside, that the worker reaches through `connect(port)` */
  serve?: readonly number[];
  /** limits for this process tree instead of the provider's */
  limits?: Partial<SandboxLimits>;
  /**
   * the process outlives the worker that spawned it (a runtime server a new worker reattaches to, with the sandbox
   * made again with `keep`); otherwise it ends with the worker
   */
  persistent?: boolean;
  /** killed (the whole tree) after this long */
  timeoutMs?: number;
  /** killed (the whole tree) when this aborts */
  signal?: AbortSignal;
}

export interface SandboxExit {
  /** the command's exit code (128 + n when it was killed inside by signal n), null when killed from outside */
  exitCode: number | null;
  /** the signal that killed the sandbox from outside (kill, timeout, abort), or null */
  signal: string | null;
  timedOut: boolean;
  /** whole output with `capture`, else empty */
  stdout: string;
  stderr: string;
  /** the last few KiB of stdout and stderr as they came, for error messages */
  tail: string;
}

export interface SandboxProcess {
  /** pid of the sandbox's outermost process on the worker's host (the leader of its process group) */
  readonly pid: number | undefined;
  /** with `interactive`: the process's stdin and stdout */
  readonly stdin?: Writable;
  readonly stdout?: Readable;
  /** settles when the whole sandboxed tree has ended; never rejects */
  readonly exited: Promise<SandboxExit>;
  /**
   * Resolves once `probe` answers true (polled); rejects with the output's tail when the process ends first or
   * `timeoutMs` (default 30 s) passes.
   */
  ready(probe: () => Promise<boolean>, opts?: { timeoutMs?: number; intervalMs?: number }): Promise<void>;
  /**
   * Ends the whole tree: bubblewrap SIGKILLs the sandbox's pid 1, which ends everything inside at once; `none` sends
   * SIGTERM to the process group. SIGKILL to the group follows after 2 s if anything is left.
   */
  kill(): void;
}

export interface Sandbox {
  readonly sessionId: string;
  readonly kind: SandboxKind;
  /** where the workspace, the state and the private tmp are, as a sandboxed process sees them */
  readonly paths: { workspace: string; state: string; tmp: string };
  /**
   * The worker's path for a path inside the workspace or the state, or null (anything else, or a provider without
   * host paths). The sandbox writes there: never follow a symlink found under it with the worker's rights.
   */
  hostPath(insidePath: string): string | null;
  /** a port on the sandbox's loopback that nothing of this sandbox uses yet */
  port(): Promise<number>;
  /**
   * Serves `server` (the worker's: the egress proxy, the model bridge) to processes spawned after this call; they
   * reach it at 127.0.0.1:<the returned port>. The caller keeps the server and closes it.
   */
  expose(name: string, server: Server): Promise<number>;
  /**
   * Like `expose`, for a server that is not the worker's own (a process that must outlive the worker): answers the
   * host path of the Unix socket that server must listen on, the owner it must give that socket (the sandbox's user),
   * and the port processes spawned after this call reach it at. Providers without host sockets (none) answer null:
   * their processes reach the host's network directly.
   */
  bridge(name: string): Promise<{ port: number; socketPath: string; uid: number; gid: number } | null>;
  /** a connection to a server listening inside on 127.0.0.1:`port`, for a process spawned with `serve: [port]` */
  connect(port: number): Promise<Socket>;
  /** runs `command` (a path or a name on the sandbox's PATH) inside */
  spawn(command: string, args: readonly string[], opts?: SandboxSpawnOptions): SandboxProcess;
  /** ends every process spawned in it and removes the bridge sockets; the workspace and state stay */
  teardown(): Promise<void>;
}

export interface SandboxProvider {
  readonly kind: SandboxKind;
  /** creates the session's directories (owned by its sandbox user) and answers its sandbox */
  prepare(spec: SandboxSpec): Promise<Sandbox>;
}

/** A dispatcher that refuses every connection: for a server in a sandbox the worker has no way into (yet). */
export const UNREACHABLE: Dispatcher = new Agent({ connect: (_opts, callback) => callback(new Error('the session\'s sandbox is not open on this worker'), null) });

/**
 * `fetch` through `dispatcher` (sandboxDispatcher: a server inside a sandbox), with undici's own fetch so that the
 * dispatcher and the fetch come from one version; without one, the platform's fetch.
 */
export type { Dispatcher };

export function fetchThrough(dispatcher: Dispatcher | undefined, url: string, init: RequestInit): Promise<Response> {
  if (!dispatcher) return fetch(url, init);
  return undiciFetch(url, { ...(init as UndiciRequestInit), dispatcher }) as unknown as Promise<Response>;
}

/** An undici dispatcher whose connections go to a server inside the sandbox: HTTP to a runtime server. */
export function sandboxDispatcher(sandbox: Pick<Sandbox, 'connect'>, port: number): Agent {
  return new Agent({
    connect: (_opts, callback) => {
      sandbox.connect(port).then(
        (socket) => callback(null, socket),
        (err: Error) => callback(err, null),
      );
    },
  });
}

/** A fetch whose every connection goes to the Unix socket at `path` (one pool per socket, kept for the process's life). */
const socketPools = new Map<string, Agent>();
export function socketFetch(path: string): typeof fetch {
  let pool = socketPools.get(path);
  if (!pool) socketPools.set(path, (pool = new Agent({ connect: { socketPath: path } })));
  const dispatcher = pool;
  return ((url: string | URL, init?: RequestInit) => fetchThrough(dispatcher, String(url), init ?? {})) as typeof fetch;
}
