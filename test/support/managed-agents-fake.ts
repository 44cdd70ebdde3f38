/**
 * A contract fake of Claude Managed Agents (beta `managed-agents-2026-04-01`), in process on 127.0.0.1 and a
 * random port. It speaks the documented REST and SSE shapes closely enough for the official `@anthropic-ai/sdk`:
 * agents, environments, sessions, `POST/GET /v1/sessions/{id}/events` (a `PageCursor` of `{data, next_page}`) and
 * `GET /v1/sessions/{id}/events/stream` (every frame has an `event:` line; no replay: only events after connect;
 * heartbeats are `event: ping`).
 *
 * Its "agent loop" is scripted: each prompt runs the steps of the first script whose `match` it contains. A tool
 * step's `evaluated_permission` follows the agent's toolset permission policy; `always_ask` idles the session
 * with `requires_action` until a `user.tool_confirmation` arrives. Every request is recorded (prompts can be
 * counted) and a step can wait on a gate, so a test can stop a worker mid-turn. A session's container is a map of
 * files: a `write` or `read` step given without a `result` writes or reads it, as the vendor's own tools would.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export const MANAGED_AGENTS_BETA = 'managed-agents-2026-04-01';

export type FakeStep =
  | { say: string }
  | { think: string }
  | { tool: string; input: Record<string, unknown>; result?: string }
  /** one model request: span.model_request_end, then a cumulative session.usage with list_cost */
  | { usage: { input: number; output: number; costUsd: number } }
  /** one model request whose span carries its own `cost_usd` (a Managed-Agents-protocol server may report any figure) */
  | { span: { input: number; output: number; costUsd: number } }
  /** wait until the test opens the gate (or the turn is interrupted) */
  | { gate: string }
  | { sleep: number }
  /** end the turn idle with this stop reason instead of end_turn */
  | { stop: 'budget_reached' | 'retries_exhausted' }
  | { error: string };

export interface RecordedRequest {
  method: string;
  path: string;
  body: any;
}

interface FakeSession {
  id: string;
  agent: any;
  environment_id: string;
  status: 'idle' | 'running' | 'terminated';
  archived_at: string | null;
  budget: unknown;
  title: string | null;
  metadata: Record<string, string>;
  created_at: string;
  usage: { input_tokens: number; output_tokens: number; cache_read_input_tokens: number; list_cost: { amount: string; currency: 'USD' } };
  events: any[];
  subscribers: Set<ServerResponse>;
  inbox: any[];
  wake: (() => void) | null;
  interrupted: boolean;
  confirmations: Map<string, { result: 'allow' | 'deny'; deny_message?: string }>;
  /** the session's container: what its `write` steps wrote, by `file_path` */
  files: Map<string, string>;
}

export interface ManagedAgentsFake {
  url: string;
  apiKey: string;
  requests: RecordedRequest[];
  /** prompts whose steps come from `steps` (first match wins); others are echoed */
  script(match: string, steps: FakeStep[]): void;
  /** user.message events received whose text contains `text` */
  countPrompts(text: string): number;
  /** resolves when a turn reaches `gate`; `open` lets it go on */
  gate(name: string): { reached: Promise<void>; open(): void };
  session(id: string): FakeSession | undefined;
  close(): Promise<void>;
}

export async function startManagedAgentsFake(opts: { apiKey?: string; heartbeatMs?: number } = {}): Promise<ManagedAgentsFake> {
  const apiKey = opts.apiKey ?? `sk-fake-${Math.random().toString(36).slice(2)}`;
  const requests: RecordedRequest[] = [];
  const scripts: Array<{ match: string; steps: FakeStep[] }> = [];
  const agents = new Map<string, any>();
  const environments = new Map<string, any>();
  const sessions = new Map<string, FakeSession>();
  const gates = new Map<string, { reached: Promise<void>; reach: () => void; opened: Promise<void>; open: () => void }>();
  let seq = 0;
  const id = (prefix: string) => `${prefix}_${(++seq).toString().padStart(6, '0')}${Math.random().toString(36).slice(2, 8)}`;
  const now = () => new Date().toISOString();

  function gateOf(name: string) {
    let g = gates.get(name);
    if (!g) {
      let reach!: () => void;
      let open!: () => void;
      const reached = new Promise<void>((r) => (reach = r));
      const opened = new Promise<void>((r) => (open = r));
      g = { reached, reach, opened, open };
      gates.set(name, g);
    }
    return g;
  }

  function publish(s: FakeSession, body: Record<string, unknown>) {
    const event: Record<string, unknown> & { id: string } = { id: id('sevt'), processed_at: now(), ...body };
    s.events.push(event);
    for (const res of s.subscribers) res.write(`event: ${String(event.type)}\ndata: ${JSON.stringify(event)}\n\n`);
    return event;
  }

  function waitInbox(s: FakeSession): Promise<void> {
    return new Promise((resolve) => {
      s.wake = () => {
        s.wake = null;
        resolve();
      };
    });
  }

  function poke(s: FakeSession) {
    s.wake?.();
  }

  /** the toolset's permission for a tool: per-tool config, else the default, else always_allow */
  function permissionFor(agent: any, tool: string): 'allow' | 'ask' {
    for (const toolset of agent.tools ?? []) {
      if (toolset.type !== 'agent_toolset_20260401') continue;
      const config = (toolset.configs ?? []).find((c: any) => c.name === tool);
      const policy = config?.permission_policy?.type ?? toolset.default_config?.permission_policy?.type ?? 'always_allow';
      return policy === 'always_ask' ? 'ask' : 'allow';
    }
    return 'allow';
  }

  async function runTurn(s: FakeSession, text: string) {
    const script = scripts.find((x) => text.includes(x.match));
    const steps: FakeStep[] = script?.steps ?? [{ say: `echo: ${text}` }, { usage: { input: 100, output: 20, costUsd: 0.001 } }];
    s.status = 'running';
    s.interrupted = false;
    publish(s, { type: 'session.status_running' });
    let stop: Record<string, unknown> = { type: 'end_turn' };
    for (const step of steps) {
      if (s.interrupted) break;
      if ('say' in step) publish(s, { type: 'agent.message', content: [{ type: 'text', text: step.say }] });
      else if ('think' in step) publish(s, { type: 'agent.thinking', content: [{ type: 'text', text: step.think }] });
      else if ('usage' in step) {
        const start = publish(s, { type: 'span.model_request_start' });
        publish(s, { type: 'span.model_request_end', model_request_start_id: start.id, is_error: false, model_usage: { input_tokens: step.usage.input, output_tokens: step.usage.output, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 } });
        s.usage.input_tokens += step.usage.input;
        s.usage.output_tokens += step.usage.output;
        s.usage.list_cost = { amount: (Number(s.usage.list_cost.amount) + step.usage.costUsd).toFixed(6), currency: 'USD' };
        publish(s, { type: 'session.usage', usage: structuredClone(s.usage), budget: s.budget });
      } else if ('span' in step) {
        const start = publish(s, { type: 'span.model_request_start' });
        publish(s, { type: 'span.model_request_end', model_request_start_id: start.id, is_error: false, cost_usd: step.span.costUsd, model_usage: { input_tokens: step.span.input, output_tokens: step.span.output, cache_creation_input_tokens: 0, cache_read_input_tokens: 0 } });
      } else if ('gate' in step) {
        const g = gateOf(step.gate);
        g.reach();
        await Promise.race([g.opened, until(() => s.interrupted)]);
      } else if ('sleep' in step) await Promise.race([new Promise((r) => setTimeout(r, step.sleep)), until(() => s.interrupted)]);
      else if ('stop' in step) {
        stop = { type: step.stop };
        break;
      } else if ('error' in step) publish(s, { type: 'session.error', error: { type: 'unknown_error', message: step.error } });
      else {
        const permission = permissionFor(s.agent, step.tool);
        const use = publish(s, { type: 'agent.tool_use', name: step.tool, input: step.input, evaluated_permission: permission });
        let verdict: { result: 'allow' | 'deny'; deny_message?: string } = { result: 'allow' };
        if (permission === 'ask') {
          s.status = 'idle';
          publish(s, { type: 'session.status_idle', stop_reason: { type: 'requires_action', event_ids: [use.id] } });
          await until(() => s.confirmations.has(use.id as string) || s.interrupted);
          if (s.interrupted) break;
          verdict = s.confirmations.get(use.id as string)!;
          s.status = 'running';
          publish(s, { type: 'session.status_running' });
        }
        const allowed = verdict.result === 'allow';
        const ran = allowed ? (step.result ?? container(s, step.tool, step.input)) : { text: verdict.deny_message ?? 'denied', error: true };
        publish(s, { type: 'agent.tool_result', tool_use_id: use.id, content: [{ type: 'text', text: typeof ran === 'string' ? ran : ran.text }], is_error: typeof ran !== 'string' && ran.error });
      }
    }
    s.status = 'idle';
    publish(s, { type: 'session.status_idle', stop_reason: stop });
  }

  /** a tool step without a scripted result, run on the session's files: `write` stores, `read` answers what it stored */
  function container(s: FakeSession, tool: string, input: Record<string, unknown>): { text: string; error: boolean } {
    const path = String(input.file_path ?? '');
    if (tool === 'write') {
      s.files.set(path, String(input.content ?? ''));
      return { text: `wrote ${path}`, error: false };
    }
    if (tool === 'read') {
      const content = s.files.get(path);
      return content === undefined ? { text: `${path}: no such file`, error: true } : { text: content, error: false };
    }
    return { text: 'ok', error: false };
  }

  /** polls a condition; the loop is tiny and in process */
  function until(check: () => boolean): Promise<void> {
    return new Promise((resolve) => {
      const tick = () => (check() ? resolve() : setTimeout(tick, 10));
      tick();
    });
  }

  async function loop(s: FakeSession) {
    for (;;) {
      if (s.status === 'terminated') return;
      const next = s.inbox.shift();
      if (!next) {
        await waitInbox(s);
        continue;
      }
      if (next.type === 'user.message') await runTurn(s, (next.content ?? []).map((c: any) => c.text ?? '').join('\n'));
    }
  }

  function toSession(s: FakeSession) {
    return {
      id: s.id,
      type: 'session',
      status: s.status,
      agent: s.agent,
      environment_id: s.environment_id,
      title: s.title,
      metadata: s.metadata,
      resources: [],
      vault_ids: [],
      budget: s.budget,
      outcome_evaluations: [],
      stats: { active_seconds: 0, duration_seconds: 0 },
      usage: s.usage,
      archived_at: s.archived_at,
      created_at: s.created_at,
      updated_at: now(),
    };
  }

  function accept(s: FakeSession, events: any[]) {
    const echoed = [];
    for (const event of events) {
      const echo = publish(s, { ...event });
      echoed.push(echo);
      if (event.type === 'user.tool_confirmation') s.confirmations.set(event.tool_use_id, { result: event.result, deny_message: event.deny_message });
      else if (event.type === 'user.interrupt') s.interrupted = true;
      else s.inbox.push(event);
    }
    poke(s);
    return echoed;
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const raw = await readBody(req);
    let body: any = undefined;
    if (raw) {
      try {
        body = JSON.parse(raw);
      } catch {
        return send(res, 400, error('invalid_request_error', 'body is not JSON'));
      }
    }
    requests.push({ method: req.method ?? 'GET', path: url.pathname, body });
    // the documented header is x-api-key; @anthropic-ai/sdk 1.14 sends its apiKey as a bearer token, so both count
    const bearer = String(req.headers.authorization ?? '').replace(/^Bearer /i, '');
    if (req.headers['x-api-key'] !== apiKey && bearer !== apiKey) return send(res, 401, error('authentication_error', 'invalid x-api-key'));
    const betas = String(req.headers['anthropic-beta'] ?? '').split(',').map((b) => b.trim());
    if (!betas.includes(MANAGED_AGENTS_BETA)) return send(res, 400, error('invalid_request_error', `this endpoint needs anthropic-beta: ${MANAGED_AGENTS_BETA}`));

    const parts = url.pathname.split('/').filter(Boolean);
    const method = req.method;
    if (parts[0] !== 'v1') return send(res, 404, error('not_found_error', 'no such route'));
    const [, kind, rid, sub, sub2] = parts;

    if (kind === 'agents') {
      if (method === 'POST' && !rid) {
        if (!body?.name || !body?.model) return send(res, 400, error('invalid_request_error', 'name and model are required'));
        const agent = {
          id: id('agent'),
          type: 'agent',
          name: body.name,
          model: typeof body.model === 'string' ? { id: body.model } : body.model,
          system: body.system ?? null,
          description: body.description ?? null,
          tools: body.tools ?? [],
          mcp_servers: body.mcp_servers ?? [],
          skills: body.skills ?? [],
          metadata: body.metadata ?? {},
          multiagent: null,
          execution_identity: { type: 'service_account' },
          version: 1,
          archived_at: null,
          created_at: now(),
          updated_at: now(),
        };
        agents.set(agent.id, agent);
        return send(res, 200, agent);
      }
      if (method === 'GET' && !rid) return send(res, 200, { data: [...agents.values()], next_page: null });
      if (method === 'GET' && rid) return agents.has(rid) ? send(res, 200, agents.get(rid)) : send(res, 404, error('not_found_error', `no agent ${rid}`));
    }
    if (kind === 'environments' && method === 'POST' && !rid) {
      if (!body?.name) return send(res, 400, error('invalid_request_error', 'name is required'));
      const env = { id: id('env'), type: 'environment', name: body.name, config: body.config ?? { type: 'cloud', networking: { type: 'unrestricted' }, packages: {} }, description: body.description ?? null, metadata: body.metadata ?? {}, archived_at: null, created_at: now(), updated_at: now() };
      environments.set(env.id, env);
      return send(res, 200, env);
    }
    if (kind === 'sessions') {
      if (method === 'POST' && !rid) {
        const agentId = typeof body?.agent === 'string' ? body.agent : body?.agent?.id;
        const agent = agents.get(agentId);
        if (!agent) return send(res, 404, error('not_found_error', `no agent ${agentId}`));
        if (!environments.has(body?.environment_id)) return send(res, 404, error('not_found_error', `no environment ${body?.environment_id}`));
        const s: FakeSession = {
          id: id('sesn'),
          agent: structuredClone(agent),
          environment_id: body.environment_id,
          status: 'idle',
          archived_at: null,
          budget: body.budget ?? null,
          title: body.title ?? null,
          metadata: body.metadata ?? {},
          created_at: now(),
          usage: { input_tokens: 0, output_tokens: 0, cache_read_input_tokens: 0, list_cost: { amount: '0.000000', currency: 'USD' } },
          events: [],
          subscribers: new Set(),
          inbox: [],
          wake: null,
          interrupted: false,
          confirmations: new Map(),
          files: new Map(),
        };
        sessions.set(s.id, s);
        void loop(s);
        if (Array.isArray(body.initial_events) && body.initial_events.length > 0) accept(s, body.initial_events);
        return send(res, 200, toSession(s));
      }
      const s = rid ? sessions.get(rid) : undefined;
      if (!s) return send(res, 404, error('not_found_error', `no session ${rid}`));
      if (method === 'GET' && !sub) return send(res, 200, toSession(s));
      if (method === 'POST' && sub === 'archive') {
        s.archived_at = now();
        s.status = 'terminated';
        poke(s);
        return send(res, 200, toSession(s));
      }
      if (sub === 'events' && method === 'POST' && !sub2) {
        if (s.archived_at) return send(res, 409, error('invalid_request_error', 'session is archived'));
        const events = body?.events;
        if (!Array.isArray(events) || events.length === 0) return send(res, 400, error('invalid_request_error', 'events: at least one'));
        for (const event of events) {
          if (!['user.message', 'user.tool_confirmation', 'user.interrupt'].includes(event?.type)) return send(res, 400, error('invalid_request_error', `unsupported event ${event?.type}`));
          if (event.type === 'user.tool_confirmation' && !s.events.some((e) => e.id === event.tool_use_id && e.type === 'agent.tool_use')) {
            return send(res, 404, error('not_found_error', `no tool use ${event.tool_use_id}`));
          }
        }
        return send(res, 200, { data: accept(s, events) });
      }
      if (sub === 'events' && method === 'GET' && !sub2) {
        const limit = Math.min(Number(url.searchParams.get('limit') ?? 100), 1000);
        const start = Number(url.searchParams.get('page') ?? 0);
        const data = s.events.slice(start, start + limit);
        return send(res, 200, { data, next_page: start + limit < s.events.length ? String(start + limit) : null });
      }
      if (sub === 'events' && sub2 === 'stream' && method === 'GET') {
        res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
        res.flushHeaders();
        s.subscribers.add(res);
        const beat = setInterval(() => res.write('event: ping\ndata: {}\n\n'), opts.heartbeatMs ?? 1000);
        res.on('close', () => {
          clearInterval(beat);
          s.subscribers.delete(res);
        });
        return;
      }
    }
    return send(res, 404, error('not_found_error', `no route ${method} ${url.pathname}`));
  }

  const server: Server = createServer((req, res) => {
    handle(req, res).catch((err) => send(res, 500, error('api_error', String(err))));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

  return {
    url,
    apiKey,
    requests,
    script(match, steps) {
      scripts.push({ match, steps });
    },
    countPrompts(text) {
      return requests.filter((r) => r.method === 'POST' && /\/events$/.test(r.path)).flatMap((r) => r.body?.events ?? []).filter((e: any) => e.type === 'user.message' && JSON.stringify(e.content).includes(text)).length;
    },
    gate(name) {
      const g = gateOf(name);
      return { reached: g.reached, open: g.open };
    },
    session: (sid) => sessions.get(sid),
    async close() {
      for (const s of sessions.values()) {
        s.status = 'terminated';
        s.interrupted = true;
        poke(s);
        for (const res of s.subscribers) res.end();
      }
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

function error(type: string, message: string) {
  return { type: 'error', error: { type, message } };
}

function send(res: ServerResponse, status: number, body: unknown) {
  if (res.headersSent) return;
  res.writeHead(status, { 'content-type': 'application/json', 'request-id': `req_${Math.random().toString(36).slice(2)}` });
  res.end(JSON.stringify(body));
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => (data += chunk));
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });
}
