// Runs a real Temporal dev server (the `temporal` CLI binary, SQLite-backed) for tests.
//
// Only the frontend gRPC port is fixed by us (a free port picked at start, kept across restart() so clients can
// reconnect); the CLI picks free ports itself for the HTTP API, metrics and its internal services, and --headless
// turns the web UI off, so parallel runs on one machine never collide on a port.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Connection } from '@temporalio/client';

export interface TemporalDevServerOptions {
  /** SQLite file for the server's state; a file in a fresh temp dir (removed by stop()) when omitted. */
  dbFile?: string;
  /** Frontend gRPC port; a free port when omitted. */
  port?: number;
  /** Extra `temporal server start-dev` arguments, e.g. `['--dynamic-config-value', 'K=V']`. */
  extraArgs?: string[];
  /** How long start()/restart() wait for the server to answer; default 60 s. */
  startTimeoutMs?: number;
}

export interface StopOptions {
  /** SIGTERM (default) lets the server shut down cleanly; SIGKILL simulates a crash. */
  signal?: 'SIGTERM' | 'SIGKILL';
}

export interface TemporalDevServer {
  /** `127.0.0.1:<port>`, for `Connection.connect({ address })` and `NativeConnection.connect({ address })`. */
  readonly address: string;
  readonly dbFile: string;
  /** the server process (the leader of its process group) */
  readonly pid: number;
  stop(options?: StopOptions): Promise<void>;
  /** Stops the server and starts it again on the same db file and port (for durability tests). */
  restart(options?: StopOptions): Promise<void>;
}

const ENSURE_TEMPORAL_SCRIPT = fileURLToPath(new URL('./ensure-temporal.sh', import.meta.url));
const STOP_GRACE_MS = 10_000;
const OUTPUT_TAIL_CHARS = 8_000;

export async function startTemporalDevServer(options: TemporalDevServerOptions = {}): Promise<TemporalDevServer> {
  const binary = await resolveTemporalCli();
  const port = options.port ?? (await findFreePort());
  const address = `127.0.0.1:${port}`;
  const ownedDir = options.dbFile ? undefined : await mkdtemp(join(tmpdir(), 'agentplane-temporal-'));
  const dbFile = options.dbFile ?? join(ownedDir!, 'temporal.db');
  const args = [
    'server', 'start-dev',
    '--db-filename', dbFile,
    '--headless',
    '--ip', '127.0.0.1',
    '--port', String(port),
    '--log-level', 'error',
    ...(options.extraArgs ?? []),
  ];
  const startTimeoutMs = options.startTimeoutMs ?? 60_000;

  let proc: RunningServer;
  try {
    proc = await launch(binary, args, address, startTimeoutMs);
  } catch (error) {
    if (ownedDir) await rm(ownedDir, { recursive: true, force: true });
    throw error;
  }
  let stopped = false;

  // A crashed test run must not leave a server behind: kill the group when this process exits.
  const killOnExit = () => killGroup(proc.child, 'SIGKILL');
  process.once('exit', killOnExit);

  return {
    address,
    dbFile,
    get pid() {
      return proc.child.pid ?? -1;
    },
    async stop(stopOptions = {}) {
      if (stopped) return;
      stopped = true;
      process.off('exit', killOnExit);
      await terminate(proc, stopOptions.signal ?? 'SIGTERM');
      if (ownedDir) await rm(ownedDir, { recursive: true, force: true });
    },
    async restart(stopOptions = {}) {
      if (stopped) throw new Error('restart() after stop(): the Temporal dev server is gone');
      await terminate(proc, stopOptions.signal ?? 'SIGTERM');
      proc = await launch(binary, args, address, startTimeoutMs);
    },
  };
}

/**
 * `npm run dev`'s server: the one a previous run left behind on the same SQLite file when that run was killed (its
 * `exit` handler never ran), else a new one. A server is adopted only while its recorded pid is still a `temporal`
 * process on that file and answers at its recorded address; adopting means owning: stop() ends it. Two servers on one
 * SQLite file would corrupt it, so a new one is never started beside a live one.
 */
export async function startOrAdoptTemporalDevServer(options: TemporalDevServerOptions & { dbFile: string; stateFile: string }): Promise<TemporalDevServer & { adopted: boolean }> {
  const recorded = await readFile(options.stateFile, 'utf8').then((text) => JSON.parse(text) as { pid: number; address: string }, () => null);
  if (recorded && isTemporalOn(recorded.pid, options.dbFile) && (await answers(recorded.address))) {
    return {
      address: recorded.address,
      dbFile: options.dbFile,
      pid: recorded.pid,
      adopted: true,
      async stop() {
        await rm(options.stateFile, { force: true });
        await stopGroup(recorded.pid);
      },
      async restart() {
        throw new Error('an adopted Temporal dev server cannot be restarted');
      },
    };
  }
  const server = await startTemporalDevServer(options);
  await writeFile(options.stateFile, JSON.stringify({ pid: server.pid, address: server.address }));
  return {
    address: server.address,
    dbFile: server.dbFile,
    pid: server.pid,
    adopted: false,
    restart: (stopOptions) => server.restart(stopOptions),
    async stop(stopOptions) {
      await rm(options.stateFile, { force: true });
      await server.stop(stopOptions);
    },
  };
}

function isTemporalOn(pid: number, dbFile: string): boolean {
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    return args.some((a) => a.endsWith('temporal')) && args.includes(dbFile);
  } catch {
    return false;
  }
}

async function answers(address: string): Promise<boolean> {
  try {
    const connection = await Connection.connect({ address, connectTimeout: 2_000 });
    await connection.close();
    return true;
  } catch {
    return false;
  }
}

async function stopGroup(pid: number): Promise<void> {
  const send = (signal: NodeJS.Signals | 0) => {
    try {
      process.kill(-pid, signal);
      return true;
    } catch {
      return false;
    }
  };
  if (!send('SIGTERM')) return;
  const deadline = Date.now() + STOP_GRACE_MS;
  while (Date.now() < deadline && send(0)) await new Promise((r) => setTimeout(r, 100));
  send('SIGKILL');
}

/** `$TEMPORAL_CLI_PATH`, or whatever scripts/ensure-temporal.sh finds (or builds: minutes on a cold machine). */
export async function resolveTemporalCli(): Promise<string> {
  const fromEnv = process.env.TEMPORAL_CLI_PATH;
  if (fromEnv) return fromEnv;
  // stderr is inherited so a first-time build shows its progress instead of minutes of silence.
  const child = spawn('bash', [ENSURE_TEMPORAL_SCRIPT], { stdio: ['ignore', 'pipe', 'inherit'] });
  let stdout = '';
  child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  const path = stdout.trim().split('\n').at(-1);
  if (code !== 0 || !path) {
    throw new Error(`scripts/ensure-temporal.sh failed (exit ${code}; its message is above); or set TEMPORAL_CLI_PATH`);
  }
  return path;
}

interface RunningServer {
  child: ChildProcess;
  exited: Promise<void>;
  output: () => string;
}

async function launch(binary: string, args: string[], address: string, timeoutMs: number): Promise<RunningServer> {
  // detached: the server leads its own process group, so stop() can signal the whole group.
  const child = spawn(binary, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  let tail = '';
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString('utf8')).slice(-OUTPUT_TAIL_CHARS);
  };
  child.stdout!.on('data', keep);
  child.stderr!.on('data', keep);
  let exitInfo: string | undefined;
  const exited = new Promise<void>((resolve) => {
    child.once('exit', (code, signal) => {
      exitInfo = signal ? `signal ${signal}` : `code ${code}`;
      resolve();
    });
    child.once('error', (error) => {
      exitInfo = `spawn error: ${error.message}`;
      resolve();
    });
  });
  const server: RunningServer = { child, exited, output: () => tail };

  try {
    await waitUntilServing(address, timeoutMs, () => exitInfo);
  } catch (error) {
    await terminate(server, 'SIGKILL');
    const output = tail.trim() || '(no output)';
    throw new Error(
      `Temporal dev server did not come up on ${address}: ${(error as Error).message}\n` +
        `command: ${binary} ${args.join(' ')}\n--- server output ---\n${output}`,
    );
  }
  return server;
}

async function waitUntilServing(address: string, timeoutMs: number, exitInfo: () => string | undefined): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    const exited = exitInfo();
    if (exited) throw new Error(`the server process exited (${exited})`);
    let connection: Connection | undefined;
    try {
      connection = await Connection.connect({ address, connectTimeout: 1_000 });
      // The default namespace is what every test uses; its presence means start-up finished.
      await connection.workflowService.describeNamespace({ namespace: 'default' });
      return;
    } catch (error) {
      lastError = error;
      await new Promise((resolve) => setTimeout(resolve, 200));
    } finally {
      await connection?.close().catch(() => undefined);
    }
  }
  throw new Error(`timed out after ${timeoutMs} ms (last error: ${(lastError as Error | undefined)?.message ?? 'none'})`);
}

async function terminate(server: RunningServer, signal: 'SIGTERM' | 'SIGKILL'): Promise<void> {
  if (server.child.exitCode !== null || server.child.signalCode !== null || server.child.pid === undefined) return;
  killGroup(server.child, signal);
  const timer = setTimeout(() => killGroup(server.child, 'SIGKILL'), STOP_GRACE_MS);
  await server.exited;
  clearTimeout(timer);
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // The group is already gone.
  }
}

/** Asks the OS for a free port on 127.0.0.1. */
export function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}
