/**
 * What the API fuzzer (npm run fuzz: Schemathesis against /openapi.json) found, kept as plain tests so CI needs no
 * Schemathesis. Each test names the failure it was (docs/reliability.md, "API fuzzing") and fails on the old code.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { startStack, type Stack } from './support/stack';

let stack: Stack;
let agentId: string;

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: createScriptedAdapter() } });
  const agent = await stack.call('POST', '/v1/agents', { name: 'fuzz regressions', model: 'scripted', runtime: { type: 'scripted' } });
  expect(agent.status, JSON.stringify(agent.body)).toBe(200);
  agentId = agent.body.id;
});
afterAll(async () => {
  await stack?.stop();
});

/** fetch with the admin key, the body sent as given (so a test can put a NUL escape in it) */
async function raw(method: string, path: string, opts: { body?: string; key?: string | null } = {}) {
  const key = opts.key === undefined ? stack.adminKey : opts.key;
  const res = await fetch(`${stack.url}${path}`, {
    method,
    headers: { ...(key === null ? {} : { authorization: `Bearer ${key}` }), ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: opts.body,
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, contentType: res.headers.get('content-type'), body: text ? JSON.parse(text) : null };
}

const paramNames = (body: { invalid_params?: Array<{ name: string }> }) => (body.invalid_params ?? []).map((p) => p.name);

describe('a NUL character (U+0000), which Postgres cannot store, is a 400 naming the field (was a 500)', () => {
  it('in a query value: GET /v1/sessions?schedule_id=%00', async () => {
    const res = await raw('GET', '/v1/sessions?schedule_id=%00&initiator=ok');
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(res.contentType).toBe('application/problem+json');
    expect(paramNames(res.body)).toEqual(['query.schedule_id']);
  });

  it('in a path parameter: GET /v1/agents/agent_%00', async () => {
    const res = await raw('GET', '/v1/agents/agent_%00x');
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(paramNames(res.body)).toEqual(['path.agent_id']);
  });

  it('in a body field and in a metadata key: POST /v1/agents', async () => {
    const body = '{"name":"a\\u0000b","model":"scripted","runtime":{"type":"scripted"},"metadata":{"k\\u0000":"v","fine":"x\\u0000"}}';
    const res = await raw('POST', '/v1/agents', { body });
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(paramNames(res.body).sort()).toEqual(['body.metadata.fine', 'body.metadata.k\\u0000', 'body.name']);
    expect(res.body.detail).toContain('NUL');
  });

  it('but not in an unknown field the schema drops before anything is stored: PUT /v1/agents/{id}/policy', async () => {
    const body = '{"tool_policy":{"rules":[{"tool":"bash","action":"allow","\\u0000extra":"x\\u0000"}],"default":"allow"}}';
    const res = await raw('PUT', `/v1/agents/${agentId}/policy`, { body });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
  });
});

describe('versions are bounded by what a Postgres integer holds, and the document says so', () => {
  it('GET /v1/agents/{id}?version=319531887545 is a 400 naming query.version (was a 500: integer out of range)', async () => {
    const res = await raw('GET', `/v1/agents/${agentId}?version=319531887545`);
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(paramNames(res.body)).toEqual(['query.version']);
  });

  it('the largest version is looked up (404: no such version), not refused', async () => {
    const res = await raw('GET', `/v1/agents/${agentId}?version=2147483647`);
    expect(res.status, JSON.stringify(res.body)).toBe(404);
  });

  it('POST /v1/sessions with agent.version 2^53 is a 400 naming body.agent.version, and the schema declares the maximum (was schema-valid)', async () => {
    const res = await raw('POST', '/v1/sessions', { body: JSON.stringify({ agent: { type: 'agent', id: agentId, version: 2 ** 53 } }) });
    expect(res.status, JSON.stringify(res.body)).toBe(400);
    expect(new Set(paramNames(res.body))).toEqual(new Set(['body.agent.version']));
    const doc = (await raw('GET', '/openapi.json', { key: null })).body;
    const text = JSON.stringify(doc.paths['/v1/sessions'].post.requestBody);
    expect(text).toContain('"maximum":2147483647');
    expect(JSON.stringify(doc.paths['/v1/agents/{agent_id}'].get.parameters)).toContain('"maximum":2147483647');
  });
});

describe('a method a resource does not take is a 405 with an Allow header (was a 404 "no route")', () => {
  it('PUT /v1/agents answers 405, Allow: GET, POST', async () => {
    const res = await raw('PUT', '/v1/agents', { body: '{}' });
    expect(res.status, JSON.stringify(res.body)).toBe(405);
    expect(res.headers.get('allow')).toBe('GET, POST');
    expect(res.contentType).toBe('application/problem+json');
    expect(res.body.code).toBe('request.method_not_allowed');
  });

  it('a concrete path lists only its own methods: OPTIONS /v1/credentials/rewrap → Allow: POST (not the GET of /v1/credentials/{id})', async () => {
    const res = await raw('OPTIONS', '/v1/credentials/rewrap');
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('POST');
  });

  it('a templated path lists every method its template takes: DELETE /v1/schedules/{id} exists, PUT does not', async () => {
    const res = await raw('PUT', '/v1/schedules/sched_x', { body: '{}' });
    expect(res.status).toBe(405);
    expect(res.headers.get('allow')).toBe('DELETE, GET, PATCH');
  });

  it('a path no route has is still a 404, and no key is still a 401 before any of this', async () => {
    expect((await raw('GET', '/v1/nothing-here')).status).toBe(404);
    expect((await raw('PUT', '/v1/agents', { key: null, body: '{}' })).status).toBe(401);
  });
});

describe('the document declares what every /v1 operation answers', () => {
  it('needs a bearer key (so a fuzzer checks that a request without one is refused) and documents 400, 401, 403 and 404', async () => {
    const doc = (await raw('GET', '/openapi.json', { key: null })).body;
    expect(doc.security).toEqual([{ bearer: [] }]);
    expect(doc.components.securitySchemes.bearer).toEqual({ type: 'http', scheme: 'bearer' });
    for (const [path, item] of Object.entries(doc.paths as Record<string, Record<string, { responses: Record<string, unknown> }>>)) {
      for (const [method, op] of Object.entries(item)) {
        for (const status of ['400', '401', '403', '404']) expect(op.responses[status], `${method.toUpperCase()} ${path} ${status}`).toBeDefined();
      }
    }
  });
});
