/**
 * What runtimes/kit/ holds once for every adapter: the environment built from an allowlist, process start and group
 * kill (execa), ports, and SSE parsing (eventsource-parser, also the dashboard's).
 */
import { once } from 'node:events';
import { createServer } from 'node:net';
import { OpenAPIHono } from '@hono/zod-openapi';
import { afterEach, describe, expect, it } from 'vitest';
import { registerDashboardRoutes } from '../api/routes/dashboard.routes';
import { INHERITED, runtimeEnv } from '../runtimes/kit/env';
import { freePort } from '../runtimes/kit/ports';
import { alive, signalGroup, startProcess } from '../runtimes/kit/process';
import { readSseFrames } from '../runtimes/kit/sse';

const WORKER_SECRETS = { AGENTPLANE_MASTER_KEY: 'k1:c2VjcmV0LW1hc3Rlci1rZXktMDEyMzQ1Njc4OQ==', DATABASE_URL: 'postgres://root:hunter2@db/agentplane', AGENTPLANE_ADMIN_KEY: 'ap_admin0123456789abcdef' };
const saved = new Map<string, string | undefined>();

function setWorkerEnv(vars: Record<string, string>): void {
  for (const [name, value] of Object.entries(vars)) {
    if (!saved.has(name)) saved.set(name, process.env[name]);
    process.env[name] = value;
  }
}

afterEach(() => {
  for (const [name, value] of saved) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
  saved.clear();
});

function sse(...chunks: string[]): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  return new ReadableStream({
    start(controller) {
      for (const chunk of chunks) controller.enqueue(encoder.encode(chunk));
      controller.close();
    },
  });
}

async function collect<T>(items: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const item of items) out.push(item);
  return out;
}

describe('runtime environment', () => {
  it("a runtime's environment never carries the worker's master key, database URL or admin key: only the allowlist and what the adapter names", () => {
    setWorkerEnv({ ...WORKER_SECRETS, LANG: 'C.UTF-8', HOME: '/root' });
    const env = runtimeEnv({ HOME: '/data/opencode/sesn_1/home', OPENCODE_CONFIG: '/data/c.json', UNSET: undefined });
    for (const name of Object.keys(WORKER_SECRETS)) expect(env).not.toHaveProperty(name);
    expect(Object.keys(env).every((name) => (INHERITED as readonly string[]).includes(name) || ['HOME', 'OPENCODE_CONFIG'].includes(name))).toBe(true);
    // the worker's HOME never: the adapter's own
    expect(env.HOME).toBe('/data/opencode/sesn_1/home');
    expect(env.LANG).toBe('C.UTF-8');
    expect(env).not.toHaveProperty('UNSET');
    // an adapter may narrow the list
    expect(Object.keys(runtimeEnv({ HOME: '/h' }, { inherit: ['PATH'] })).sort()).toEqual(['HOME', 'PATH']);
  });

  it("a process the kit starts sees only the environment it is given, not the worker's (execa would add process.env)", async () => {
    setWorkerEnv(WORKER_SECRETS);
    const child = startProcess(process.execPath, ['-e', 'process.stdout.write(JSON.stringify(process.env))'], { cwd: process.cwd(), env: runtimeEnv({ HOME: '/tmp', MARK: '1' }), stdout: 'pipe' });
    let out = '';
    child.stdout!.on('data', (chunk) => (out += String(chunk)));
    await child;
    const seen = JSON.parse(out) as Record<string, string>;
    expect(seen.MARK).toBe('1');
    for (const name of Object.keys(WORKER_SECRETS)) expect(seen).not.toHaveProperty(name);
    expect(JSON.stringify(seen)).not.toContain('hunter2');
  });
});

describe('runtime processes', () => {
  it('a detached runtime leads its own process group, and signalGroup stops the tools it started with it', async () => {
    // the runtime starts a "tool" in the background and waits: the tool is in the runtime's group
    const child = startProcess('sh', ['-c', 'sleep 60 & echo $!; wait'], { cwd: process.cwd(), env: runtimeEnv({ HOME: '/tmp' }), detached: true, stdout: 'pipe' });
    const [line] = (await once(child.stdout!, 'data')) as [Buffer];
    const tool = Number(String(line).trim());
    const runtime = child.pid!;
    expect(alive(tool)).toBe(true);
    signalGroup(runtime, 'SIGKILL');
    await child;
    for (let waited = 0; alive(tool) && waited < 5_000; waited += 50) await new Promise((r) => setTimeout(r, 50));
    expect(alive(tool)).toBe(false);
    expect(alive(runtime)).toBe(false);
  });

  it('freePort gives a loopback port that can be listened on', async () => {
    const port = await freePort();
    const server = createServer().listen(port, '127.0.0.1');
    await once(server, 'listening');
    server.close();
    expect(port).toBeGreaterThan(0);
  });
});

describe('SSE', () => {
  it('reads events across chunk boundaries and line endings, joins data lines, and skips comments and blocks without data', async () => {
    const frames = await collect(
      readSseFrames(sse(': keepalive\n\n', 'event: ping\n\n', 'id: 7\r\nevent: message\r\ndata: {"a":\r\n', 'data:  1}\r\n\r\n', 'data: plain\n\n', 'data: unterminated')),
    );
    expect(frames).toEqual([
      { id: '7', event: 'message', data: '{"a":\n 1}' },
      { id: null, event: null, data: 'plain' },
    ]);
  });

  it('a reader that stops early cancels the body, so the connection is closed instead of left open', async () => {
    let cancelled = false;
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('data: one\n\ndata: two\n\n'));
      },
      cancel() {
        cancelled = true;
      },
    });
    for await (const frame of readSseFrames(body)) {
      expect(frame.data).toBe('one');
      break;
    }
    expect(cancelled).toBe(true);
  });

  it("the dashboard parses SSE with the runtimes' package: /ui/lib/eventsource-parser.js is eventsource-parser's module and reads a stream", async () => {
    const app = new OpenAPIHono();
    registerDashboardRoutes(app as never);
    const res = await app.request('/ui/lib/eventsource-parser.js');
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toContain('text/javascript');
    const source = await res.text();
    expect(source).not.toContain('sourceMappingURL');
    const { createParser } = (await import(`data:text/javascript;base64,${Buffer.from(source).toString('base64')}`)) as typeof import('eventsource-parser');
    const events: Array<{ id?: string; event?: string; data: string }> = [];
    const parser = createParser({ onEvent: (e) => events.push(e) });
    parser.feed('id: 3\r\nevent: error\r\ndata: {"status":401}\r\n\r\n: comment\n\nevent: ping\n\n');
    expect(events).toEqual([{ id: '3', event: 'error', data: '{"status":401}' }]);
  });
});
