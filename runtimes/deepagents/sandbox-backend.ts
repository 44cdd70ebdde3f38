/**
 * DeepAgents' tools in the session's sandbox. The agent itself (its graph and its model client) runs in the worker;
 * what its tools do runs inside the session's sandbox, never with the worker's rights: `execute` is `bash -c` in the
 * sandbox, and the file tools (`ls`, `read_file`, `write_file`, `edit_file`, `glob`, `grep`) are DeepAgents' own
 * `BaseSandbox` implementations, which work through `execute`, `uploadFiles` and `downloadFiles` alone. Uploads and
 * downloads run inside too (`base64` in and out), so a symlink the agent planted in its workspace resolves in the
 * sandbox's view, where the worker's files do not exist, and never on the worker's host.
 *
 * `BaseSandbox` comes from the `deepagents` module the adapter loads lazily, so the class is made from it at run time.
 */
import type { Sandbox } from '../kit/sandbox/provider';

/** What `deepagents` answers: the types of the slice used here (its declarations are not followed, see the adapter). */
interface ExecuteResponse {
  output: string;
  exitCode: number | null;
  truncated: boolean;
}
type FileOperationError = 'file_not_found' | 'permission_denied' | 'is_directory' | 'invalid_path';
interface FileDownloadResponse {
  path: string;
  content: Uint8Array | null;
  error: FileOperationError | null;
}
interface FileUploadResponse {
  path: string;
  error: FileOperationError | null;
}
export type BaseSandboxClass = abstract new () => object;

/** the most output one command returns to the model (more is cut, and said to be) */
const MAX_OUTPUT = 256 * 1024;

/** Exit codes of the upload and download scripts, naming the error the protocol knows. */
const ERRORS: Record<number, FileOperationError> = { 3: 'file_not_found', 4: 'is_directory', 5: 'permission_denied', 6: 'invalid_path' };

const DOWNLOAD = [
  'p="$1"',
  'case "$p" in /*) ;; *) exit 6;; esac',
  '[ -e "$p" ] || exit 3',
  '[ -d "$p" ] && exit 4',
  '[ -r "$p" ] || exit 5',
  'base64 -w0 -- "$p"',
].join('\n');

const UPLOAD = [
  'p="$1"',
  'case "$p" in /*) ;; *) exit 6;; esac',
  '[ -d "$p" ] && exit 4',
  'mkdir -p -- "$(dirname -- "$p")" 2>/dev/null',
  'base64 -d > "$p" 2>/dev/null || exit 5',
].join('\n');

export interface SandboxBackendOptions {
  sandbox: Sandbox;
  /** the environment of every command (the session's proxy variables, the locale) */
  env: Record<string, string>;
  /** seconds one command may run */
  timeoutSeconds: number;
}

/** A `BaseSandbox` subclass whose every operation runs in `opts.sandbox`. */
export function createSandboxBackend(BaseSandbox: BaseSandboxClass, opts: SandboxBackendOptions): object {
  const run = async (script: string, args: string[], input?: string) =>
    opts.sandbox.spawn('/bin/bash', ['-c', script, 'agentplane', ...args], { env: opts.env, capture: true, input, timeoutMs: opts.timeoutSeconds * 1000 }).exited;

  class SessionSandboxBackend extends (BaseSandbox as unknown as new () => object) {
    readonly id = `agentplane:${opts.sandbox.sessionId}`;

    async execute(command: string): Promise<ExecuteResponse> {
      const exit = await run('exec 2>&1; eval "$1"', [command]);
      let output = exit.stdout;
      const truncated = output.length > MAX_OUTPUT;
      if (truncated) output = `${output.slice(0, MAX_OUTPUT)}\n[output cut at ${MAX_OUTPUT} bytes]`;
      if (exit.timedOut) output += `\n[killed: the command ran longer than ${opts.timeoutSeconds} s]`;
      else if (exit.exitCode === null) output += `\n[killed by ${exit.signal ?? 'a signal'}: a sandbox limit (processes, memory, CPU time) or an interrupt]`;
      return { output, exitCode: exit.exitCode, truncated };
    }

    async uploadFiles(files: Array<[string, Uint8Array]>): Promise<FileUploadResponse[]> {
      const results: FileUploadResponse[] = [];
      for (const [path, content] of files) {
        const exit = await run(UPLOAD, [path], Buffer.from(content).toString('base64'));
        results.push({ path, error: exit.exitCode === 0 ? null : (ERRORS[exit.exitCode ?? 5] ?? 'permission_denied') });
      }
      return results;
    }

    async downloadFiles(paths: string[]): Promise<FileDownloadResponse[]> {
      const results: FileDownloadResponse[] = [];
      for (const path of paths) {
        const exit = await run(DOWNLOAD, [path]);
        results.push(exit.exitCode === 0 ? { path, content: new Uint8Array(Buffer.from(exit.stdout, 'base64')), error: null } : { path, content: null, error: ERRORS[exit.exitCode ?? 5] ?? 'permission_denied' });
      }
      return results;
    }
  }
  return new SessionSandboxBackend();
}
