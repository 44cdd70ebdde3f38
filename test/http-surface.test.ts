/**
 * What the HTTP surface lets any key (or no key) cost the platform or learn from it: request bodies are bounded and
 * refused before they are read, a key without a route's permission learns nothing about what the route accepts, one
 * key cannot hold unbounded event streams nor keep one open after it is revoked, and /readyz names no host or error.
 * Real stack throughout; a second app on the same database and Temporal has small limits, so they are cheap to reach.
 */
import { request as httpRequest, type OutgoingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { Client, Connection } from '@temporalio/client';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, DEFAULT_MAX_BODY_BYTES, type AppDeps } from '../api/create-app';
import { openDatabase, rowsOf } from '../db/client';
import { appendEvents } from '../db/queries/events';
import { can, type Permission } from '../governance/permissions';
import { ROLES, type Role } from '../governance/types';
import { RUNTIME_CAPABILITIES } from '../runtimes/registry';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { createTestDatabase } from './support/postgres';
import { eventually, startStack, waitForStatus, type Stack } from './support/stack';

let stack: Stack;
/** the same platform behind an app with small limits: 4 KiB bodies, 2 streams per key, the key checked every 100 ms */
let small: Served;
const SMALL_BODY_BYTES = 4096;
const SMALL_STREAMS = 2;
let agentId: string;
const servers: Served[] = [];
const openStreams = new Set<{ close(): Promise<void> }>();

interface Served {
  url: string;
  close(): Promise<void>;
}

/** Another API process on the stack's database and Temporal, with its own settings. */
async function serveApp(overrides: Partial<AppDeps>): Promise<Served> {
  const app = createApp({ db: stack.db.db, vault: stack.vault, temporal: stack.temporal, taskQueue: stack.taskQueue, capabilities: RUNTIME_CAPABILITIES, egress: stack.egress, sandboxKind: stack.sandboxKind, streamPollMs: 50, ...overrides });
  const server: ServerType = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  const served = { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
  servers.push(served);
  return served;
}

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: createScriptedAdapter() } });
  small = await serveApp({ maxBodyBytes: SMALL_BODY_BYTES, maxStreamsPerKey: SMALL_STREAMS, streamKeyCheckMs: 100 });
  agentId = (await stack.call('POST', '/v1/agents', agentDefinition('http surface'))).body.id;
  expect(agentId).toMatch(/^agent_/);
});
afterAll(async () => {
  for (const stream of [...openStreams]) await stream.close();
  for (const served of servers) await served.close();
  await stack?.stop();
});

// ---- helpers --------------------------------------------------------------------------------------------------

function agentDefinition(name: string) {
  return { name, model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' } };
}

/** Everything a refused request could have written. */
async function writes() {
  const [row] = rowsOf<Record<string, string>>(
    await stack.db.db.execute(sql`
      select
        (select count(*) from agents) as agents,
        (select count(*) from agent_versions) as agent_versions,
        (select count(*) from environments) as environments,
        (select max(updated_at)::text from environments) as environments_updated,
        (select count(*) from credentials) as credentials,
        (select coalesce(sum(secret_version), 0) from credentials) as credential_versions,
        (select count(*) from sessions) as sessions,
        (select count(*) from schedules) as schedules,
        (select max(updated_at)::text from schedules) as schedules_updated,
        (select count(*) from api_keys) as api_keys,
        (select count(*) from teams) as teams,
        (select coalesce(sum(policy_revision), 0) from teams) as policy_revisions,
        (select count(*) from webhooks) as webhooks,
        (select count(*) from budgets) as budgets,
        (select count(*) from model_prices) as model_prices,
        (select count(*) from team_policies) as team_policies,
        (select count(*) from audit_log) as audit_rows
    `),
  );
  return row;
}

interface RawAnswer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: any;
}

/**
 * A request written by hand, so a test controls what reaches the socket: `declaredLength` sends a Content-Length
 * and then no body at all (an answer proves the server did not wait for it); `chunks` sends a chunked body (no
 * Content-Length) one piece at a time; `body` sends it whole with its length.
 */
function rawRequest(base: string, opts: { method: string; path: string; key?: string; body?: string; chunks?: string[]; declaredLength?: number }): Promise<RawAnswer> {
  const headers: OutgoingHttpHeaders = { 'content-type': 'application/json', authorization: `Bearer ${opts.key ?? stack.adminKey}` };
  if (opts.declaredLength !== undefined) headers['content-length'] = opts.declaredLength;
  else if (opts.body !== undefined) headers['content-length'] = Buffer.byteLength(opts.body);
  return new Promise((resolve, reject) => {
    let answered = false;
    // a connection of its own: one the server hangs up on after a refused body must not be reused by the next request
    const req = httpRequest(`${base}${opts.path}`, { method: opts.method, headers, agent: false }, (res) => {
      answered = true;
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (text += chunk));
      res.on('end', () => {
        req.destroy();
        let body: unknown = text;
        try {
          body = JSON.parse(text);
        } catch {
          // not JSON: keep the text
        }
        resolve({ status: res.statusCode!, headers: res.headers, body });
      });
    });
    // the server may answer and hang up while the body is still going out: that is the point, not a failure
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    if (opts.declaredLength !== undefined) {
      req.flushHeaders();
      return;
    }
    if (opts.chunks) {
      const write = (i: number) => {
        if (answered || i === opts.chunks!.length) return req.end();
        req.write(opts.chunks![i], () => write(i + 1));
      };
      write(0);
      return;
    }
    req.end(opts.body);
  });
}

function expectTooLarge(res: RawAnswer, limit: number) {
  expect(res.status, JSON.stringify(res.body)).toBe(413);
  expect(res.headers['content-type']).toBe('application/problem+json');
  expect(res.body).toMatchObject({ code: 'request.too_large', detail: expect.stringContaining(`${limit} bytes`) });
}

/** A valid agent definition, padded with whitespace (still valid JSON) to at least `bytes`. */
function paddedAgent(name: string, bytes: number): string {
  const json = JSON.stringify(agentDefinition(name));
  return `${' '.repeat(Math.max(0, bytes - json.length))}${json}`;
}

async function agentNamed(name: string): Promise<number> {
  return rowsOf<{ n: string }>(await stack.db.db.execute(sql`select count(*) as n from agent_versions where definition->>'name' = ${name}`)).map((r) => Number(r.n))[0]!;
}

// ---- request bodies -------------------------------------------------------------------------------------------

describe('request bodies are bounded', () => {
  it('a body that declares a Content-Length over 1 MiB is answered 413 before one byte of it is sent', async () => {
    const before = await writes();
    // the headers go out, the body never does: only an answer given without reading it can come back
    const res = await rawRequest(stack.url, { method: 'POST', path: '/v1/agents', declaredLength: DEFAULT_MAX_BODY_BYTES + 1 });
    expectTooLarge(res, DEFAULT_MAX_BODY_BYTES);
    expect(await writes()).toEqual(before);
  });

  it('a valid agent padded past the limit is refused whole: 413, neither the validator nor the handler runs, nothing is written', async () => {
    const before = await writes();
    const name = `too large ${Math.random().toString(36).slice(2)}`;
    expectTooLarge(await rawRequest(stack.url, { method: 'POST', path: '/v1/agents', body: paddedAgent(name, DEFAULT_MAX_BODY_BYTES + 1) }), DEFAULT_MAX_BODY_BYTES);
    // invalid JSON of the same size is the same 413, not the validator's 400
    expectTooLarge(await rawRequest(stack.url, { method: 'POST', path: '/v1/agents', body: `{"name": ${'['.repeat(DEFAULT_MAX_BODY_BYTES)}` }), DEFAULT_MAX_BODY_BYTES);
    expect(await agentNamed(name)).toBe(0);
    expect(await writes()).toEqual(before);
    // one byte fewer than the limit is read and taken
    const taken = await rawRequest(stack.url, { method: 'POST', path: '/v1/agents', body: paddedAgent(name, DEFAULT_MAX_BODY_BYTES) });
    expect(taken.status, JSON.stringify(taken.body)).toBe(200);
    expect(await agentNamed(name)).toBe(1);
  });

  it('a chunked body (no Content-Length) is cut off with 413 once it passes the limit, and nothing is written', async () => {
    const before = await writes();
    const name = `chunked ${Math.random().toString(36).slice(2)}`;
    const body = paddedAgent(name, DEFAULT_MAX_BODY_BYTES + 512 * 1024);
    const chunks = Array.from({ length: Math.ceil(body.length / 65_536) }, (_, i) => body.slice(i * 65_536, (i + 1) * 65_536));
    expectTooLarge(await rawRequest(stack.url, { method: 'POST', path: '/v1/agents', chunks }), DEFAULT_MAX_BODY_BYTES);
    expect(await agentNamed(name)).toBe(0);
    expect(await writes()).toEqual(before);
  });

  it('the limit is a setting: an API built with 4 KiB refuses a 5 KiB body, declared or chunked, that the default takes', async () => {
    const name = `five kib ${Math.random().toString(36).slice(2)}`;
    const body = paddedAgent(name, 5 * 1024);
    const before = await writes();
    expectTooLarge(await rawRequest(small.url, { method: 'POST', path: '/v1/agents', body }), SMALL_BODY_BYTES);
    expectTooLarge(await rawRequest(small.url, { method: 'POST', path: '/v1/agents', chunks: [body.slice(0, 2048), body.slice(2048, 4096), body.slice(4096)] }), SMALL_BODY_BYTES);
    expect(await writes()).toEqual(before);
    expect((await rawRequest(stack.url, { method: 'POST', path: '/v1/agents', body })).status).toBe(200);
  });

  it('the largest user message the schema allows (1,000,000 characters, ASCII) still fits under the default limit', async () => {
    const res = await stack.call('POST', '/v1/sessions', { agent: agentId, initial_events: [{ type: 'user.message', content: `say fits\n${'a'.repeat(1_000_000 - 9)}` }] });
    expect(res.status, JSON.stringify(res.body).slice(0, 500)).toBe(200);
    // its turn writes as it runs: let it finish before the tests that count writes
    await waitForStatus(stack, res.body.id, 'idle');
  });
});

// ---- permission before the body -------------------------------------------------------------------------------

/**
 * The permission of every route that takes a body (any one of several admits the caller). The first test checks
 * it names exactly the document's body routes, so a new one cannot be left out.
 */
const BODY_ROUTES: Record<string, [Permission, ...Permission[]]> = {
  'POST /v1/agents': ['agents:write'],
  'POST /v1/agents/{agent_id}': ['agents:write'],
  'PUT /v1/agents/{agent_id}/policy': ['policies:write'],
  'POST /v1/environments': ['environments:write'],
  'POST /v1/environments/{environment_id}': ['environments:write'],
  'POST /v1/credentials': ['credentials:write'],
  'POST /v1/credentials/{credential_id}/rotate': ['credentials:write'],
  'POST /v1/sessions': ['sessions:write'],
  'POST /v1/sessions/{session_id}/events': ['sessions:write', 'approvals:decide'],
  'POST /v1/schedules': ['schedules:write'],
  'PATCH /v1/schedules/{schedule_id}': ['schedules:write'],
  'POST /v1/schedules/{schedule_id}/pause': ['schedules:write'],
  'POST /v1/schedules/{schedule_id}/unpause': ['schedules:write'],
  'POST /v1/schedules/{schedule_id}/trigger': ['schedules:write'],
  'POST /v1/schedules/{schedule_id}/backfill': ['schedules:write'],
  'POST /v1/keys': ['keys:admin'],
  'POST /v1/teams': ['keys:admin', 'teams:create'],
  'POST /v1/webhooks': ['webhooks:admin'],
  'POST /v1/budgets': ['budgets:write'],
  'PUT /v1/pricing/{model}': ['budgets:write'],
  'PUT /v1/policies/team': ['policies:write'],
  // every role reads agents, so no key is refused here: nothing to hide from anyone
  'POST /v1/policies/evaluate': ['agents:read'],
};

describe('a key without the permission learns nothing about the body', () => {
  it('the table of body routes names exactly the routes whose operation in the OpenAPI document takes a body', async () => {
    const doc = (await stack.call('GET', '/openapi.json')).body as { paths: Record<string, Record<string, { requestBody?: unknown }>> };
    const documented = Object.entries(doc.paths).flatMap(([path, ops]) => Object.entries(ops).filter(([, op]) => op.requestBody).map(([method]) => `${method.toUpperCase()} ${path}`));
    expect(Object.keys(BODY_ROUTES).sort()).toEqual(documented.sort());
  });

  const keys = new Map<Role, string>();
  const keyOf = async (role: Role) => keys.get(role) ?? keys.set(role, await stack.key(role)).get(role)!;
  const bodies: Array<[string, string]> = [
    ['malformed JSON', '{"name": "cut off'],
    ['JSON the schema refuses', JSON.stringify({ name: 42, role: 'platform_admin', tool_policy: 'allow everything', unknown_field: [1, 2, 3] })],
    ['a body under the limit but larger than any field allows', JSON.stringify({ name: 'x'.repeat(DEFAULT_MAX_BODY_BYTES - 1024) })],
  ];

  for (const [route, permissions] of Object.entries(BODY_ROUTES)) {
    const refused = ROLES.filter((role) => permissions.every((p) => !can(role, p)));
    if (refused.length === 0) continue;
    it(`${route}: a ${refused.join(', ')} key sending a malformed, refused or oversized body gets 403, not a 400 that describes the schema`, async () => {
      const [method, template] = route.split(' ') as [string, string];
      const path = template.replace(/\{[^}]+\}/g, 'x_00000000');
      const roleKeys = await Promise.all(refused.map(async (role) => [role, await keyOf(role)] as const));
      const before = await writes();
      for (const [role, key] of roleKeys) {
        for (const [what, body] of bodies) {
          const res = await rawRequest(stack.url, { method, path, key, body });
          const where = `${role}, ${what}`;
          expect(res.status, `${where}: ${JSON.stringify(res.body).slice(0, 300)}`).toBe(403);
          expect(res.body.code, where).toBe('auth.forbidden');
          expect(res.body.invalid_params, where).toBeUndefined();
          expect(res.body.detail, where).not.toMatch(/body\.|expected|invalid/i);
        }
      }
      expect(await writes()).toEqual(before);
    });
  }
});

// ---- event streams --------------------------------------------------------------------------------------------

interface Frame {
  id?: string;
  event?: string;
  data?: string;
}

/** Opens a session's event stream and collects its frames in the background until it ends or is closed. */
async function openStream(base: string, sessionId: string, key: string) {
  const controller = new AbortController();
  const res = await fetch(`${base}/v1/sessions/${sessionId}/events/stream`, { headers: { authorization: `Bearer ${key}` }, signal: controller.signal });
  if (res.status !== 200) return { ok: false as const, status: res.status, headers: res.headers, body: await res.json() };
  const frames: Frame[] = [];
  let ended = false;
  const pump = (async () => {
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
          const frame: Frame = {};
          for (const line of buffer.slice(0, end).split('\n')) {
            const [, field, value] = /^([^:]+): ?(.*)$/.exec(line) ?? [];
            if (field === 'id' || field === 'event' || field === 'data') frame[field] = value;
          }
          frames.push(frame);
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (err) {
      if (!controller.signal.aborted) throw err;
    } finally {
      ended = true;
    }
  })();
  const stream = {
    ok: true as const,
    status: res.status,
    frames,
    get ended() {
      return ended;
    },
    async close() {
      openStreams.delete(stream);
      controller.abort();
      await pump;
    },
  };
  openStreams.add(stream);
  return stream;
}

async function startSession(): Promise<string> {
  const res = await stack.call('POST', '/v1/sessions', { agent: agentId });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.id;
}

async function newKey(role: Role): Promise<{ plain: string; id: string }> {
  const res = await stack.call('POST', '/v1/keys', { name: `${role} streaming`, role });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return { plain: res.body.key, id: res.body.id };
}

describe('event streams are bounded per key and end when the key is revoked', () => {
  it('one key cannot open more streams than the cap: the next is 429 with Retry-After and the cap named, and another key is not affected', async () => {
    const sessionId = await startSession();
    const { plain } = await newKey('viewer');
    const held = [];
    for (let i = 0; i < SMALL_STREAMS; i++) {
      const stream = await openStream(small.url, sessionId, plain);
      expect(stream.status).toBe(200);
      held.push(stream);
    }
    const refused = await openStream(small.url, sessionId, plain);
    expect(refused.status).toBe(429);
    if (refused.ok) return;
    expect(refused.headers.get('retry-after')).toMatch(/^\d+$/);
    expect(refused.headers.get('content-type')).toBe('application/problem+json');
    expect(refused.body).toMatchObject({ code: 'request.rate_limited', status: 429, detail: expect.stringContaining(`${SMALL_STREAMS} event streams`) });
    // the cap is the key's: another key of the same team streams the same session
    const other = await openStream(small.url, sessionId, (await newKey('viewer')).plain);
    expect(other.status).toBe(200);
    for (const stream of [...held, other]) if (stream.ok) await stream.close();
  });

  it('a client that goes away gives its slot back, and so does a stream that ends with its session', async () => {
    const { plain } = await newKey('admin');
    const sessionId = await startSession();
    const first = await openStream(small.url, sessionId, plain);
    const second = await openStream(small.url, sessionId, plain);
    expect([first.status, second.status]).toEqual([200, 200]);
    expect((await openStream(small.url, sessionId, plain)).status).toBe(429);

    // hang up one: its slot is free once the server notices
    if (first.ok) await first.close();
    const third = await eventually(async () => {
      const stream = await openStream(small.url, sessionId, plain);
      return stream.ok ? stream : undefined;
    }, { what: 'a slot to be given back after the client left' });

    // archiving terminates the session; both of its streams end on the terminated event and give their slots back
    await stack.call('POST', `/v1/sessions/${sessionId}/archive`, undefined, plain);
    await waitForStatus(stack, sessionId, 'terminated');
    await eventually(async () => (second.ok && second.ended && third.ended ? true : undefined), { what: 'both streams to end with the session' });
    const other = await startSession();
    const again = [await openStream(small.url, other, plain), await openStream(small.url, other, plain)];
    expect(again.map((s) => s.status)).toEqual([200, 200]);
    for (const stream of again) if (stream.ok) await stream.close();
  });

  it("a revoked key's open stream gets a last `event: error` frame holding the 401 problem, then ends; its slot is freed", async () => {
    const sessionId = await startSession();
    const { plain, id } = await newKey('viewer');
    const stream = await openStream(small.url, sessionId, plain);
    expect(stream.status).toBe(200);
    if (!stream.ok) return;

    expect((await stack.call('POST', `/v1/keys/${id}/revoke`)).status).toBe(200);
    await eventually(async () => (stream.ended ? true : undefined), { what: "the revoked key's stream to end" });
    const last = stream.frames.at(-1)!;
    expect(last.event).toBe('error');
    expect(last.id).toBeUndefined();
    expect(JSON.parse(last.data!)).toMatchObject({ status: 401, code: 'auth.invalid_key', type: 'https://agentplane.dev/problems/auth.invalid_key' });
    // and it cannot come back
    expect((await openStream(small.url, sessionId, plain)).status).toBe(401);
  });

  it('served in process (app.request, no Node response) a stream answers as over HTTP: the same headers, the replayed frames', async () => {
    const sessionId = await startSession();
    await appendEvents(stack.db.db, { sessionId, events: [{ sourceId: 'in-process-1', type: 'agent.message', payload: { content: [{ type: 'text', text: 'hello' }] } }] });
    const path = `/v1/sessions/${sessionId}/events/stream`;
    const headers = { authorization: `Bearer ${stack.adminKey}`, 'last-event-id': '0' };
    const overHttp = await fetch(`${stack.url}${path}`, { headers });
    const inProcess = await stack.app.request(path, { headers });
    for (const res of [overHttp, inProcess]) {
      expect(res.status).toBe(200);
      expect(res.headers.get('x-request-id')).toMatch(/^req_/);
    }
    for (const name of ['content-type', 'cache-control']) expect(inProcess.headers.get(name), name).toBe(overHttp.headers.get(name));

    const firstFrame = async (res: Response) => {
      const reader = res.body!.getReader();
      let text = '';
      while (!text.includes('\n\n')) text += new TextDecoder().decode((await reader.read()).value);
      await reader.cancel();
      return text.slice(0, text.indexOf('\n\n'));
    };
    const [viaHttp, viaProcess] = [await firstFrame(overHttp), await firstFrame(inProcess)];
    expect(viaProcess).toMatch(/^event: \S+\ndata: \{.*\}\nid: \d+$/);
    expect(viaProcess).toBe(viaHttp);
  });

  it('the document declares the 429 of the stream route, with its Retry-After header', async () => {
    const doc = (await stack.call('GET', '/openapi.json')).body;
    const op = doc.paths['/v1/sessions/{session_id}/events/stream'].get;
    expect(op.responses['429']).toMatchObject({ headers: { 'Retry-After': { schema: { type: 'integer' } } } });
    expect(op.description).toContain('AGENTPLANE_MAX_STREAMS_PER_KEY');
  });
});

// ---- readiness ------------------------------------------------------------------------------------------------

describe('/readyz', () => {
  it('answers component states only', async () => {
    const res = await fetch(`${stack.url}/readyz`);
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: 'ready', checks: { database: 'ok', temporal: 'ok', sandbox: 'bubblewrap' } });
  });

  it('tells an unauthenticated caller no host, port, user or driver error when the database and Temporal are down; the log has why', async () => {
    const fresh = await createTestDatabase();
    const closed = await openDatabase({ url: fresh.url });
    await closed.close();
    // nothing listens on port 1
    const deadTemporal = new Client({ connection: Connection.lazy({ address: '127.0.0.1:1' }) });
    const log: Array<Record<string, unknown>> = [];
    const down = await serveApp({ db: closed.db, temporal: deadTemporal, log: (entry) => log.push(entry) });
    try {
      const res = await fetch(`${down.url}/readyz`);
      expect(res.status).toBe(503);
      const text = await res.text();
      expect(JSON.parse(text)).toEqual({ status: 'not_ready', checks: { database: 'unavailable', temporal: 'unavailable', sandbox: 'bubblewrap' } });
      for (const leak of ['127.0.0.1', fresh.name, new URL(fresh.url).username, 'rror']) expect(text).not.toContain(leak);

      const failures = log.filter((entry) => entry.msg === 'readiness check failed');
      expect(failures.map((entry) => entry.component).sort()).toEqual(['database', 'temporal']);
      for (const entry of failures) expect(String(entry.error).length).toBeGreaterThan(0);
    } finally {
      await fresh.drop();
      await deadTemporal.connection.close().catch(() => undefined);
    }
  });
});
