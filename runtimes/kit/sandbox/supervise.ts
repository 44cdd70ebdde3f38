/**
 * Starting and watching a sandboxed process, the same for every provider: execa runs the outermost command in its own
 * process group; a kill (asked for, a timeout, an abort) goes through the provider's `terminate` (bubblewrap kills the
 * sandbox's pid 1, which takes everything inside with it) and ends with SIGKILL to the whole group if the tree is still
 * there after a grace period. Output is kept as a tail for error messages, or whole when asked.
 */
import { execa, type Options } from 'execa';
import { closeSync, openSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { SandboxExit, SandboxLimits, SandboxProcess } from './provider';

const TAIL_BYTES = 8 * 1024;
const MAX_CAPTURE = 16 * 1024 * 1024;
/** after SIGTERM, how long the tree has before SIGKILL */
const KILL_GRACE_MS = 2000;

export interface Launch {
  file: string;
  args: readonly string[];
  env: Record<string, string>;
  /** extra descriptors from fd 3 on (bubblewrap's seccomp program and /etc files) */
  extraFds?: readonly Uint8Array[];
  input?: string;
  /** stdin and stdout left to the caller */
  interactive?: boolean;
  capture?: boolean;
  logFile?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** host uid/gid to run as (the worker is root); libuv clears supplementary groups when either is set */
  uid?: number;
  gid?: number;
  /** outlives the worker: no pipe to the worker, no exit hook (see SandboxSpawnOptions.persistent) */
  persistent?: boolean;
  /** host cwd of the outermost process */
  cwd: string;
  /** called once when the tree has ended */
  onExit?: () => void;
  /** ends the tree whose outermost process is `pid` (default: SIGTERM to its process group); SIGKILL follows anyway */
  terminate?: (pid: number) => void;
}

/** prlimit's options for `limits`, the same for every provider. */
export function prlimitArgs(limits: SandboxLimits): string[] {
  return [
    `--nproc=${limits.processes}`,
    `--data=${limits.memoryBytes}`,
    // SIGXCPU at the soft limit, SIGKILL five seconds of CPU later
    `--cpu=${limits.cpuSeconds}:${limits.cpuSeconds + 5}`,
    `--fsize=${limits.fileSizeBytes}`,
    `--nofile=${limits.openFiles}`,
    '--core=0',
  ];
}

/** Sends `signal` to the process group led by `pid`, if it is still there. */
export function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    // already gone
  }
}

export function launch(opts: Launch): SandboxProcess {
  // a persistent process writes its log itself (a descriptor of the file, not a pipe through the worker, which would
  // break when the worker goes) and reads nothing from us
  const logFd = opts.persistent && opts.logFile ? openSync(opts.logFile, 'a') : undefined;
  const output = (opts.persistent ? (logFd ?? 'ignore') : opts.logFile ? ['pipe', { file: opts.logFile, append: true }] : 'pipe') as Options['stdout'];
  const subprocess = execa(opts.file, opts.args, {
    env: opts.env,
    extendEnv: false,
    cwd: opts.cwd,
    uid: opts.uid,
    gid: opts.gid,
    // its own process group: a kill reaches the whole tree, and the worker's terminal signals do not
    detached: true,
    stdio: [opts.interactive || opts.input !== undefined ? 'pipe' : 'ignore', opts.interactive ? 'pipe' : output, output, ...(opts.extraFds ?? [])],
    input: opts.interactive ? undefined : opts.input,
    buffer: opts.capture && !opts.interactive ? { stdout: true, stderr: true } : false,
    maxBuffer: MAX_CAPTURE,
    stripFinalNewline: false,
    reject: false,
    // a persistent process is not ended when the worker exits
    cleanup: !opts.persistent,
  });
  if (logFd !== undefined) closeSync(logFd);
  const pid = subprocess.pid;

  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-TAIL_BYTES);
  };
  if (!opts.interactive) subprocess.stdout?.on('data', keep);
  subprocess.stderr?.on('data', keep);

  let done = false;
  /** why we ended it, when we did: then it is reported killed, whatever exit status the outermost process chose */
  let stoppedBy: 'timeout' | 'kill' | null = null;
  let escalation: NodeJS.Timeout | undefined;
  function stop(reason: 'timeout' | 'kill'): void {
    if (done || pid === undefined) return;
    stoppedBy ??= reason;
    (opts.terminate ?? ((p: number) => signalGroup(p, 'SIGTERM')))(pid);
    escalation ??= setTimeout(() => signalGroup(pid, 'SIGKILL'), KILL_GRACE_MS);
    escalation.unref();
  }
  const timer = opts.timeoutMs === undefined ? undefined : setTimeout(() => stop('timeout'), opts.timeoutMs);
  const onAbort = () => stop('kill');
  if (opts.signal?.aborted) queueMicrotask(onAbort);
  else opts.signal?.addEventListener('abort', onAbort, { once: true });
  const settle = () => {
    done = true;
    clearTimeout(timer);
    clearTimeout(escalation);
    opts.signal?.removeEventListener('abort', onAbort);
    opts.onExit?.();
  };

  const exited: Promise<SandboxExit> = subprocess.then(
    (result) => {
      settle();
      const killed = stoppedBy !== null || result.isTerminated;
      return {
        exitCode: killed ? null : (result.exitCode ?? null),
        signal: stoppedBy ? 'SIGKILL' : (result.signal ?? null),
        timedOut: stoppedBy === 'timeout',
        stdout: opts.capture && !opts.interactive ? String(result.stdout ?? '') : '',
        stderr: opts.capture && !opts.interactive ? String(result.stderr ?? '') : '',
        tail,
      };
    },
    (err: Error) => {
      settle();
      return { exitCode: null, signal: null, timedOut: false, stdout: '', stderr: '', tail: `${tail}\n${err.message}` };
    },
  );

  return {
    pid,
    ...(opts.interactive ? { stdin: subprocess.stdin ?? undefined, stdout: subprocess.stdout ?? undefined } : {}),
    exited,
    async ready(probe, { timeoutMs = 30_000, intervalMs = 100 } = {}) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        if (done) {
          const exit = await exited;
          throw new Error(`sandboxed process ended before it was ready (exit ${exit.exitCode ?? exit.signal}): ${exit.tail.trim().slice(-2000)}`);
        }
        // a probe that hangs (a server that accepted but does not answer yet) counts as a no at the deadline
        const left = Math.max(0, deadline - Date.now());
        const answer = await Promise.race([probe().catch(() => false), sleep(left, false, { ref: false })]);
        if (answer) return;
        if (Date.now() >= deadline) throw new Error(`sandboxed process not ready within ${timeoutMs} ms: ${tail.trim().slice(-2000)}`);
        await sleep(intervalMs);
      }
    },
    kill() {
      stop('kill');
    },
  };
}
