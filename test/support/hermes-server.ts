/**
 * A real Hermes Agent API server for tests: `hermes gateway run` with the API server on a free loopback port, a
 * throwaway HERMES_HOME (and HOME) whose config.yaml points the model at the scripted model, and, unless told
 * otherwise, the agentplane gate plugin loaded. The binary comes from scripts/ensure-hermes.sh (a cached virtualenv).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HERMES_GATE_PLUGIN_DIR } from '../../runtimes/hermes/hermes.adapter';

export interface HermesServer {
  /** the API server's base URL */
  url: string;
  /** API_SERVER_KEY: what agentplane holds as the model credential */
  apiKey: string;
  home: string;
  /** gateway output so far (for failure messages) */
  log(): string;
  close(): Promise<void>;
}

let ensured: { bin: string } | { error: string } | undefined;

/** the `hermes` binary, installing it on first use; `{ error }` with the script's output when that failed */
export function ensureHermes(): { bin: string } | { error: string } {
  if (ensured) return ensured;
  if (process.env.HERMES_BIN) return (ensured = { bin: process.env.HERMES_BIN });
  try {
    const out = execFileSync('bash', ['scripts/ensure-hermes.sh'], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 600_000 }).toString().trim();
    ensured = { bin: out.split('\n').at(-1)! };
  } catch (err) {
    const e = err as { stderr?: Buffer; message: string };
    ensured = { error: `scripts/ensure-hermes.sh failed: ${e.stderr?.toString().trim() || e.message}` };
  }
  // CI installs it (.ci/run): there a missing runtime is a failure, not a skip
  if ('error' in ensured && process.env.CI) throw new Error(`Hermes is required in CI: ${ensured.error}`);
  return ensured;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port;
      server.close(() => resolve(port));
    });
  });
}

export async function startHermes(opts: { bin: string; modelBaseUrl: string; gate?: boolean }): Promise<HermesServer> {
  const home = await mkdtemp(join(tmpdir(), 'agentplane-hermes-'));
  const apiKey = `hermes-key-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
  const port = await freePort();
  const gate = opts.gate ?? true;
  const config = [
    'model:',
    '  provider: custom',
    `  base_url: ${opts.modelBaseUrl}`,
    '  default: scripted-model',
    '  context_length: 128000',
    ...(gate ? ['plugins:', '  enabled: [agentplane_gate]'] : []),
    '',
  ].join('\n');
  await writeFile(join(home, 'config.yaml'), config);
  if (gate) {
    await mkdir(join(home, 'plugins'), { recursive: true });
    await cp(HERMES_GATE_PLUGIN_DIR, join(home, 'plugins', 'agentplane_gate'), { recursive: true });
  }
  const child: ChildProcess = spawn(opts.bin, ['gateway', 'run'], {
    cwd: home,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH,
      HOME: home,
      HERMES_HOME: home,
      API_SERVER_ENABLED: 'true',
      API_SERVER_KEY: apiKey,
      API_SERVER_HOST: '127.0.0.1',
      API_SERVER_PORT: String(port),
      OPENAI_API_KEY: 'sk-scripted-model',
      NO_COLOR: '1',
    },
  });
  let output = '';
  child.stdout?.on('data', (b: Buffer) => (output = (output + b.toString()).slice(-20_000)));
  child.stderr?.on('data', (b: Buffer) => (output = (output + b.toString()).slice(-20_000)));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const server: HermesServer = {
    url,
    apiKey,
    home,
    log: () => output,
    async close() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      await rm(home, { recursive: true, force: true });
    },
  };
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`hermes gateway exited with ${child.exitCode}:\n${output}`);
    const ok = await fetch(`${url}/health`)
      .then((r) => r.ok)
      .catch(() => false);
    if (ok) return server;
    if (Date.now() > deadline) {
      await server.close();
      throw new Error(`hermes gateway did not answer /health within 90 s:\n${output}`);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
}
