/**
 * The worker as its own OS process (`tsx worker/main.ts`), so a test can SIGKILL it like a crashed pod.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import type { Stack } from './stack';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

export interface WorkerProcess {
  child: ChildProcess;
  output(): string;
  kill(): Promise<void>;
  stop(): Promise<void>;
}

/** `startTimeoutMs`: how long the process may take to bundle the workflows and start polling (default 120 s) */
export async function spawnWorker(stack: Stack, env: Record<string, string> = {}, startTimeoutMs = 120_000): Promise<WorkerProcess> {
  const child = spawn(`${REPO}/node_modules/.bin/tsx`, ['worker/main.ts'], {
    cwd: REPO,
    env: {
      ...process.env,
      TEMPORAL_ADDRESS: stack.temporalAddress,
      AGENTPLANE_TASK_QUEUE: stack.taskQueue,
      DATABASE_URL: stack.databaseUrl,
      AGENTPLANE_MASTER_KEY: stack.masterKey,
      AGENTPLANE_DATA_DIR: stack.dataDir,
      AGENTPLANE_RUNTIMES: 'opencode,scripted',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const deadline = Date.now() + startTimeoutMs;
  while (!out.includes('worker started')) {
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`worker did not start:\n${out}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
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
