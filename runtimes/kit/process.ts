/**
 * Starting and stopping runtime processes (OpenCode's server, the OpenClaw gateway, ACP agents), through `execa`.
 *
 * What must stay true:
 * - A process gets exactly the environment it is given (`extendEnv: false`): see env.ts. execa's default would add
 *   the worker's whole `process.env`.
 * - Nothing of the worker's lifetime is tied to it unless the adapter asks: no exit hook kills it (`cleanup: false`),
 *   no output is buffered in the worker (`buffer: false`), and a failure resolves instead of rejecting
 *   (`reject: false`): adapters watch `exit` and `error` themselves. A `detached` process leads its own process group,
 *   so a SIGKILLed worker leaves it (and its in-flight turn) running, and `signalGroup` stops it with everything it
 *   started.
 * - Runtime processes outlive the worker that started them (a new worker reattaches), so they are found again by a
 *   recorded pid. `alive` is the check every such lookup needs; what proves a pid is still *ours* (its command line,
 *   its environment) is each runtime's own.
 */
import { readFileSync } from 'node:fs';
import { execa } from 'execa';

/** `'pipe'`, `'ignore'`, or an open file descriptor (a log file: the process writes to it directly, not through us) */
type Output = 'ignore' | 'pipe' | number;

export interface StartOptions {
  cwd: string;
  /** the whole environment (runtimeEnv in env.ts) */
  env: Record<string, string>;
  /** its own process group, so it outlives the worker and is stopped as a group */
  detached?: boolean;
  stdin?: 'ignore' | 'pipe';
  stdout?: Output;
  stderr?: Output;
}

export function startProcess(command: string, args: readonly string[], opts: StartOptions) {
  return execa(command, args, {
    cwd: opts.cwd,
    env: opts.env,
    extendEnv: false,
    detached: opts.detached ?? false,
    cleanup: false,
    buffer: false,
    reject: false,
    // kill() sends what it is told, once: each adapter decides when a SIGKILL follows
    forceKillAfterDelay: false,
    stdin: opts.stdin ?? 'ignore',
    stdout: output(opts.stdout),
    stderr: output(opts.stderr),
  });
}

/**
 * execa hands a file descriptor straight to child_process.spawn (the process writes the file itself, and keeps
 * writing after the worker is gone), though its types name only descriptors 3 to 9: typed as a pipe, which it is not.
 */
function output(value: Output | undefined): 'pipe' | 'ignore' {
  return (value ?? 'ignore') as 'pipe' | 'ignore';
}

export type RuntimeProcess = ReturnType<typeof startProcess>;

/** Whether a process with this pid exists (EPERM: it does, but belongs to someone else). */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Signals the process group `pid` leads, or the process alone when it leads none; quiet when it is gone. */
export function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {
      // already gone
    }
  }
}

/**
 * Whether process `pid` on this host runs on the session's home: mounted into its sandbox (its mount table shows the
 * path) or given as its HOME (no sandbox). A pid recorded on another host, or reused here by an unrelated process,
 * does not.
 */
export function holdsHome(pid: number, home: string): boolean {
  const read = (path: string) => {
    try {
      return readFileSync(path).toString();
    } catch {
      return '';
    }
  };
  return read(`/proc/${pid}/mountinfo`).includes(` ${home} `) || read(`/proc/${pid}/environ`).split('\0').includes(`HOME=${home}`);
}
