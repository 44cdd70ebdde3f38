/**
 * A MinIO server for the tests of the S3 snapshot store: `AGENTPLANE_MINIO_BIN`, or what `scripts/ensure-minio.sh`
 * built into the tools cache. On a machine without it the S3 tests are skipped, with the reason; in CI (which runs the
 * script in .ci/run) a missing server is a failure, not a skip.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../runtimes/kit/ports';

export interface Minio {
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  stop(): Promise<void>;
}

/** the MinIO binary, or why there is none */
export function findMinio(): { bin: string } | { reason: string } {
  const given = process.env.AGENTPLANE_MINIO_BIN;
  if (given && existsSync(given)) return { bin: given };
  const cached = join(process.env.AGENTPLANE_TOOLS_DIR ?? join(homedir(), '.cache/agentplane/bin'), 'minio');
  if (existsSync(cached)) return { bin: cached };
  const reason = `no MinIO server (AGENTPLANE_MINIO_BIN, or ${cached}): run scripts/ensure-minio.sh`;
  if (process.env.CI) throw new Error(`MinIO is required in CI: ${reason}`);
  return { reason };
}

export async function startMinio(bin: string): Promise<Minio> {
  const dir = await mkdtemp(join(tmpdir(), 'agentplane-minio-'));
  const [port, consolePort] = [await freePort(), await freePort()];
  const credentials = { accessKeyId: 'agentplane-test', secretAccessKey: 'agentplane-test-secret' };
  const child = spawn(bin, ['server', join(dir, 'data'), '--address', `127.0.0.1:${port}`, '--console-address', `127.0.0.1:${consolePort}`, '--quiet'], {
    env: { PATH: process.env.PATH ?? '', HOME: dir, MINIO_ROOT_USER: credentials.accessKeyId, MINIO_ROOT_PASSWORD: credentials.secretAccessKey, MINIO_BROWSER: 'off' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const endpoint = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`minio exited with ${child.exitCode}:\n${output}`);
    const live = await fetch(`${endpoint}/minio/health/live`).then((r) => r.ok, () => false);
    if (live) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`minio did not answer /minio/health/live within 60 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    endpoint,
    ...credentials,
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

