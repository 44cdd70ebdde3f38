/**
 * The worker (`worker/main.ts`) and the API (`api/main.ts`) as their own OS processes, so a test can SIGKILL them
 * like a crashed pod.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Stack } from './stack';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

export interface ServiceProcess {
  child: ChildProcess;
  output(): string;
  kill(): Promise<void>;
  stop(): Promise<void>;
}
export type WorkerProcess = ServiceProcess;

/** What a worker or API process needs to join a platform: a test's Stack has it, so does a chaos run's. */
export type PlatformTarget = Pick<Stack, 'temporalAddress' | 'taskQueue' | 'databaseUrl' | 'masterKey' | 'dataDir'> & Partial<Pick<Stack, 'allowPrivateEgress'>>;

function platformEnv(target: PlatformTarget): Record<string, string> {
  return {
    TEMPORAL_ADDRESS: target.temporalAddress,
    AGENTPLANE_TASK_QUEUE: target.taskQueue,
    DATABASE_URL: target.databaseUrl,
    AGENTPLANE_MASTER_KEY: target.masterKey,
    AGENTPLANE_DATA_DIR: target.dataDir,
    // what the test's own stack allows, never what the shell running the tests happens to allow
    AGENTPLANE_EGRESS_ALLOW_PRIVATE: (target.allowPrivateEgress ?? []).join(','),
  };
}

/** `startTimeoutMs`: how long the process may take to bundle the workflows and start polling (default 120 s) */
export async function spawnWorker(target: PlatformTarget, env: Record<string, string> = {}, startTimeoutMs = 120_000): Promise<WorkerProcess> {
  return spawnService('worker/main.ts', { ...platformEnv(target), AGENTPLANE_RUNTIMES: 'opencode,scripted', ...env }, 'worker started', startTimeoutMs);
}

/** The API on 127.0.0.1:`port` (keep the port across restarts so clients find it again). */
export async function spawnApi(target: PlatformTarget, port: number, env: Record<string, string> = {}, startTimeoutMs = 120_000): Promise<ServiceProcess> {
  return spawnService('api/main.ts', { ...platformEnv(target), PORT: String(port), HOST: '127.0.0.1', ...env }, 'api listening', startTimeoutMs);
}

async function spawnService(entry: string, env: Record<string, string>, readyText: string, startTimeoutMs: number): Promise<ServiceProcess> {
  // node with tsx's loader, not the `tsx` command: that one runs the code in a child process of its own, so a
  // SIGKILL would kill only the wrapper and leave the real worker (or API) running, orphaned
  const child = spawn(process.execPath, ['--import', 'tsx', entry], {
    cwd: REPO,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const deadline = Date.now() + startTimeoutMs;
  while (!out.includes(readyText)) {
    if (child.exitCode !== null || child.signalCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${entry} did not start:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    child,
    output: () => out,
    async kill() {
      child.kill('SIGKILL');
      await exited;
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
      if (child.exitCode === null) child.kill('SIGKILL');
    },
  };
}
