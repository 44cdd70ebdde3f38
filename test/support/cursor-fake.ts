/**
 * A contract fake of the Cursor Cloud Agents v1 API (see /work/shared/research/runtimes.md §4):
 * `POST /v1/agents` → `{agent, run}`, `POST /v1/agents/{id}/runs` → `{run}`, `GET /v1/agents/{id}`,
 * `GET /v1/agents/{id}/runs/{runId}`, `GET …/stream` (SSE `id:`/`event:`/`data:`, replayed after `Last-Event-ID`),
 * `POST …/cancel`. Auth: `Authorization: Bearer <key>` or Basic with the key as user name.
 *
 * Runs are scripted from the prompt by `script(prompt)`; a gate (`hold()` / `release()`) parks new runs after their
 * first event. `Idempotency-Key` on a create returns the run it already created. Every request is recorded. An
 * agent's repository is a map of files: an `edit_file` or `read_file` step without a `result` writes or reads it.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type CursorStep =
  | { assistant: string }
  | { thinking: string }
  | { tool: string; args?: Record<string, unknown>; result?: string; error?: boolean }
  | { usage: { inputTokens: number; outputTokens: number } }
  | { fail: string };

interface Frame {
  id: string;
  event: string;
  data: unknown;
}

interface Run {
  id: string;
  agentId: string;
  prompt: string;
  status: 'CREATING' | 'RUNNING' | 'FINISHED' | 'ERROR' | 'CANCELLED';
  frames: Frame[];
  listeners: Set<() => void>;
  createdAt: string;
}

export interface CursorFake {
  url: string;
  apiKey: string;
  requests: Array<{ method: string; path: string; body: any; headers: Record<string, string | string[] | undefined> }>;
  /** every prompt text received by a create or follow-up that started a run */
  prompts: string[];
  agents: Map<string, { id: string; body: any; runs: string[]; files: Map<string, string> }>;
  runs: Map<string, Run>;
  script: (prompt: string) => CursorStep[];
  /** served by `GET /v1/models` (the SDK checks the model there) */
  models: string[];
  hold(): void;
  release(): void;
  /** drop every open stream (as a network failure would) */
  dropStreams(): void;
  close(): Promise<void>;
}

export function defaultScript(prompt: string): CursorStep[] {
  return [
    { thinking: `thinking about ${prompt}` },
    { tool: 'read_file', args: { path: 'README.md' }, result: '# readme' },
    { assistant: `done: ${prompt}` },
    { usage: { inputTokens: 1000, outputTokens: 200 } },
  ];
}

export async function startCursorFake(opts: { apiKey?: string; stepMs?: number } = {}): Promise<CursorFake> {
  const apiKey = opts.apiKey ?? 'cursor-test-key';
  const stepMs = opts.stepMs ?? 5;
  let held = false;
  const gateWaiters = new Set<() => void>();
  const openResponses = new Set<ServerResponse>();
  const idempotent = new Map<string, { agentId: string; runId: string }>();
  let seq = 0;
  const nextId = (prefix: string) => `${prefix}-${(++seq).toString(36)}${Math.random().toString(36).slice(2, 6)}`;

  const fake: CursorFake = {
    url: '',
    apiKey,
    requests: [],
    prompts: [],
    agents: new Map(),
    runs: new Map(),
    script: defaultScript,
    models: ['composer-1', 'claude-sonnet-4-5'],
    hold: () => (held = true),
    release: () => {
      held = false;
      for (const w of gateWaiters) w();
      gateWaiters.clear();
    },
    dropStreams: () => {
      for (const r of openResponses) r.destroy();
      openResponses.clear();
    },
    close: async () => {
      fake.release();
      fake.dropStreams();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };

  function push(run: Run, event: string, data: unknown) {
    run.frames.push({ id: `${run.id}:${run.frames.length + 1}`, event, data });
    for (const l of run.listeners) l();
  }

  function terminal(run: Run) {
    return run.status === 'FINISHED' || run.status === 'ERROR' || run.status === 'CANCELLED';
  }

  async function play(run: Run) {
    const sleep = () => new Promise((r) => setTimeout(r, stepMs));
    run.status = 'RUNNING';
    push(run, 'status', { status: 'RUNNING' });
    let first = true;
    const texts: string[] = [];
    for (const step of fake.script(run.prompt)) {
      await sleep();
      if (!first && held) await new Promise<void>((r) => gateWaiters.add(r));
      first = false;
      if (terminal(run)) return;
      if ('assistant' in step) {
        texts.push(step.assistant);
        push(run, 'assistant', { text: step.assistant });
      } else if ('thinking' in step) push(run, 'thinking', { text: step.thinking });
      else if ('tool' in step) {
        const callId = nextId('call');
        const ran = step.result === undefined && !step.error ? repository(run, step.tool, step.args ?? {}) : { result: step.result ?? '', error: step.error === true };
        push(run, 'tool_call', { callId, name: step.tool, status: 'running', args: step.args ?? {} });
        push(run, 'tool_call', { callId, name: step.tool, status: ran.error ? 'error' : 'completed', args: step.args ?? {}, result: ran.result });
      } else if ('usage' in step) {
        push(run, 'interaction_update', { type: 'turn-ended', usage: { ...step.usage, cacheReadTokens: 0, cacheWriteTokens: 0 } });
      } else if ('fail' in step) {
        run.status = 'ERROR';
        push(run, 'error', { code: 'internal', message: step.fail });
        push(run, 'result', { status: 'ERROR', text: step.fail, durationMs: 1 });
        push(run, 'done', {});
        return;
      }
    }
    await sleep();
    if (terminal(run)) return;
    run.status = 'FINISHED';
    push(run, 'result', { status: 'FINISHED', text: texts.join('\n'), durationMs: 10, git: { branches: [] } });
    push(run, 'done', {});
  }

  /** a tool step without a scripted result, on the agent's files: `edit_file` stores, `read_file` answers what it stored */
  function repository(run: Run, tool: string, args: Record<string, unknown>): { result: string; error: boolean } {
    const files = fake.agents.get(run.agentId)!.files;
    const path = String(args.path ?? '');
    if (tool === 'edit_file') {
      files.set(path, String(args.content ?? ''));
      return { result: `edited ${path}`, error: false };
    }
    if (tool === 'read_file' && files.has(path)) return { result: files.get(path)!, error: false };
    return { result: '', error: false };
  }

  function startRun(agentId: string, prompt: string): Run {
    const run: Run = { id: nextId('run'), agentId, prompt, status: 'CREATING', frames: [], listeners: new Set(), createdAt: new Date().toISOString() };
    fake.runs.set(run.id, run);
    fake.agents.get(agentId)!.runs.push(run.id);
    fake.prompts.push(prompt);
    void play(run);
    return run;
  }

  const runJson = (run: Run) => ({ id: run.id, agentId: run.agentId, status: run.status, createdAt: run.createdAt, updatedAt: new Date().toISOString() });
  const agentJson = (a: { id: string; body: any; runs: string[] }) => ({
    id: a.id,
    name: a.body.name,
    status: 'ACTIVE',
    repos: a.body.repos,
    url: `https://cursor.com/agents/${a.id}`,
    createdAt: new Date().toISOString(),
    updatedAt: new Date().toISOString(),
    latestRunId: a.runs.at(-1),
  });

  function authorized(req: IncomingMessage): boolean {
    const h = req.headers.authorization ?? '';
    if (h === `Bearer ${apiKey}`) return true;
    if (h.startsWith('Basic ')) return Buffer.from(h.slice(6), 'base64').toString().split(':')[0] === apiKey;
    return false;
  }

  function send(res: ServerResponse, status: number, body: unknown) {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  }

  function stream(req: IncomingMessage, res: ServerResponse, run: Run) {
    const last = req.headers['last-event-id'];
    let index = 0;
    if (typeof last === 'string' && last !== '') {
      const at = run.frames.findIndex((f) => f.id === last);
      if (at < 0) return send(res, 400, { error: { code: 'invalid_last_event_id', message: '[invalid_last_event_id]' } });
      index = at + 1;
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    openResponses.add(res);
    const flush = () => {
      while (index < run.frames.length) {
        const f = run.frames[index++]!;
        res.write(`id: ${f.id}\nevent: ${f.event}\ndata: ${JSON.stringify(f.data)}\n\n`);
        if (f.event === 'done') {
          run.listeners.delete(flush);
          openResponses.delete(res);
          res.end();
          return;
        }
      }
    };
    run.listeners.add(flush);
    const heartbeat = setInterval(() => res.write(`event: heartbeat\ndata: {}\n\n`), 1000);
    res.on('close', () => {
      clearInterval(heartbeat);
      run.listeners.delete(flush);
      openResponses.delete(res);
    });
    flush();
  }

  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString();
    let body: any = undefined;
    try {
      body = raw ? JSON.parse(raw) : undefined;
    } catch {
      return send(res, 400, { error: { code: 'bad_request', message: 'invalid JSON' } });
    }
    const url = new URL(req.url ?? '/', 'http://fake');
    const path = url.pathname;
    fake.requests.push({ method: req.method ?? 'GET', path, body, headers: req.headers });
    if (!authorized(req)) return send(res, 401, { error: { code: 'unauthorized', message: 'invalid API key' } });
    if (req.method === 'GET' && path === '/v1/models') return send(res, 200, { items: fake.models.map((id) => ({ id })) });
    if (req.method === 'GET' && path === '/v1/me') return send(res, 200, { apiKeyName: 'test', userEmail: 'test@example.com' });
    const m = path.match(/^\/v1\/agents(?:\/([^/]+)(?:\/runs(?:\/([^/]+)(?:\/(stream|cancel))?)?)?)?$/);
    if (!m) return send(res, 404, { error: { code: 'not_found', message: `no route ${path}` } });
    const [, agentId, runId, action] = m;
    const idemKey = req.headers['idempotency-key'];
    const idem = typeof idemKey === 'string' ? idempotent.get(idemKey) : undefined;

    if (req.method === 'POST' && !agentId) {
      if (typeof body?.prompt?.text !== 'string') return send(res, 400, { error: { code: 'bad_request', message: 'prompt.text is required' } });
      if (idem) return send(res, 200, { agent: agentJson(fake.agents.get(idem.agentId)!), run: runJson(fake.runs.get(idem.runId)!) });
      const agent = { id: body.agentId ?? nextId('bc'), body, runs: [] as string[], files: new Map<string, string>() };
      fake.agents.set(agent.id, agent);
      const run = startRun(agent.id, body.prompt.text);
      if (typeof idemKey === 'string') idempotent.set(idemKey, { agentId: agent.id, runId: run.id });
      return send(res, 200, { agent: agentJson(agent), run: runJson(run) });
    }
    const agent = agentId ? fake.agents.get(agentId) : undefined;
    if (!agent) return send(res, 404, { error: { code: 'not_found', message: 'agent not found' } });
    if (req.method === 'GET' && !runId && path.endsWith(agent.id)) return send(res, 200, agentJson(agent));
    if (req.method === 'POST' && !runId && path.endsWith('/runs')) {
      if (typeof body?.prompt?.text !== 'string') return send(res, 400, { error: { code: 'bad_request', message: 'prompt.text is required' } });
      if (idem) return send(res, 200, { run: runJson(fake.runs.get(idem.runId)!) });
      const busy = agent.runs.map((id) => fake.runs.get(id)!).find((r) => !terminal(r));
      if (busy) return send(res, 409, { error: { code: 'agent_busy', message: 'agent is busy' } });
      const run = startRun(agent.id, body.prompt.text);
      if (typeof idemKey === 'string') idempotent.set(idemKey, { agentId: agent.id, runId: run.id });
      return send(res, 200, { run: runJson(run) });
    }
    const run = runId ? fake.runs.get(runId) : undefined;
    if (!run || run.agentId !== agent.id) return send(res, 404, { error: { code: 'not_found', message: 'run not found' } });
    if (req.method === 'GET' && !action) return send(res, 200, runJson(run));
    if (req.method === 'GET' && action === 'stream') return stream(req, res, run);
    if (req.method === 'POST' && action === 'cancel') {
      if (!terminal(run)) {
        run.status = 'CANCELLED';
        push(run, 'status', { status: 'CANCELLED' });
        push(run, 'result', { status: 'CANCELLED', durationMs: 1 });
        push(run, 'done', {});
      }
      return send(res, 200, { id: run.id });
    }
    return send(res, 405, { error: { code: 'method_not_allowed', message: `${req.method} ${path}` } });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  fake.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return fake;
}
