/**
 * The `none` provider: the same interface with no isolation at all, for a machine that cannot make namespaces
 * (`AGENTPLANE_SANDBOX=none`). A process runs as the worker's user, in the session's workspace on the host, sees the
 * host's files and processes (the worker's environment included, through /proc) and has the host's network; exposed
 * servers listen on the host's loopback, where every local process reaches them. Only the environment allowlist and
 * the prlimit limits still hold. It says so in a warning when it is created, and a session run with it records
 * `sandbox: none`.
 */
import { chmod, mkdir, rm } from 'node:fs/promises';
import { connect as netConnect, createServer, type Server, type Socket } from 'node:net';
import { join, posix } from 'node:path';
import { DEFAULT_LIMITS, type Sandbox, type SandboxLimits, type SandboxProcess, type SandboxProvider, type SandboxSpawnOptions, type SandboxSpec } from './provider';
import { launch, prlimitArgs } from './supervise';

export interface NoneOptions {
  limits?: Partial<SandboxLimits>;
  logger: { warn(msg: string, meta?: Record<string, unknown>): void };
}

const PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

export function createNoneProvider(opts: NoneOptions): SandboxProvider {
  const providerLimits: SandboxLimits = { ...DEFAULT_LIMITS, ...opts.limits };
  opts.logger.warn(
    'SANDBOX DISABLED (AGENTPLANE_SANDBOX=none): every runtime and tool runs unisolated as the worker user; a session can read the worker\'s environment and files, other sessions\' workspaces and the host network. Never use this with tenants you do not trust.',
    { sandbox: 'none' },
  );

  async function prepare(spec: SandboxSpec): Promise<Sandbox> {
    for (const dir of [spec.workspace, spec.state]) await mkdir(dir, { recursive: true, mode: 0o700 });
    if (!spec.keep) await rm(spec.run, { recursive: true, force: true });
    await mkdir(spec.run, { recursive: true, mode: 0o700 });
    await chmod(spec.run, 0o700);
    const live = new Set<SandboxProcess>();

    function spawn(command: string, args: readonly string[], o: SandboxSpawnOptions = {}): SandboxProcess {
      const limits = { ...providerLimits, ...o.limits };
      const prlimit = prlimitArgs(limits);
      const proc = launch({
        file: '/usr/bin/prlimit',
        args: [...prlimit, '--', command, ...args],
        env: { PATH, HOME: spec.state, TMPDIR: '/tmp', LANG: 'C.UTF-8', USER: 'agent', ...o.env },
        cwd: o.cwd ?? spec.workspace,
        input: o.input,
        interactive: o.interactive,
        capture: o.capture,
        logFile: o.logFile,
        persistent: o.persistent,
        timeoutMs: o.timeoutMs,
        signal: o.signal,
        onExit: () => live.delete(proc),
      });
      live.add(proc);
      return proc;
    }

    return {
      sessionId: spec.sessionId,
      kind: 'none',
      paths: { workspace: spec.workspace, state: spec.state, tmp: '/tmp' },
      hostPath(insidePath) {
        const path = posix.normalize(insidePath);
        for (const root of [spec.workspace, spec.state]) {
          if (path === root || path.startsWith(`${root}/`)) return path;
        }
        return null;
      },
      port: freePort,
      async bridge() {
        return null;
      },
      async expose(_name: string, server: Server) {
        await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
        return (server.address() as { port: number }).port;
      },
      connect(port: number) {
        return new Promise<Socket>((resolve, reject) => {
          const socket = netConnect(port, '127.0.0.1');
          socket.once('connect', () => resolve(socket));
          socket.once('error', reject);
        });
      },
      spawn,
      async teardown() {
        for (const proc of live) proc.kill();
        await Promise.all([...live].map((proc) => proc.exited));
        await rm(join(spec.run), { recursive: true, force: true });
      },
    };
  }

  return { kind: 'none', prepare };
}
