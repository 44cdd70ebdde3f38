/**
 * The model gateway (gateway/) in front of a provider (test/support/model-upstream.ts), driven by the vendors' own
 * SDKs (`openai`, `@anthropic-ai/sdk`) and by raw HTTP where bytes are compared: the key reaches the provider and the
 * token does not; answers come back byte for byte and unbuffered; the provider's own usage is metered for every
 * protocol; tokens of other sessions, other credentials and ended sessions are refused in the provider's error shape.
 */
import Anthropic from '@anthropic-ai/sdk';
import { request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import OpenAI from 'openai';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createVault, generateMasterKeySpec } from '../db/vault';
import { createModelGateway, type ModelGateway, type ModelRequestAsked, type ModelRequestRecord } from '../gateway/gateway';
import { createSessionTokens, TOKEN_PURPOSE } from '../gateway/tokens';
import { createUsageMeter } from '../gateway/usage';
import { createEgressGuard } from '../runtimes/kit/egress';
import { startModelUpstream, type ModelUpstream } from './support/model-upstream';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent as UndiciAgent, fetch as undiciFetch } from 'undici';
import { controlPathIn, createGatewayClient, spawnGatewayDaemon, stopGatewayDaemons } from '../gateway/client';

const KEY = 'sk-real-provider-key-7c1e9d2a4b6f8035';
const tokens = createSessionTokens(createVault(generateMasterKeySpec()).deriveKeys(TOKEN_PURPOSE));

describe('session tokens', () => {
  it('are bound to the session and the credential, and unguessable without the master key', () => {
    const token = tokens.issue('sesn_a', 'cred_1');
    expect(token).toMatch(/^apgw_[A-Za-z0-9_-]{43}$/);
    expect(tokens.issue('sesn_a', 'cred_1')).toBe(token);
    expect(tokens.all('sesn_a', 'cred_1').includes(token)).toBe(true);
    expect(tokens.all('sesn_b', 'cred_1').includes(token)).toBe(false);
    expect(tokens.all('sesn_a', 'cred_2').includes(token)).toBe(false);
    const elsewhere = createSessionTokens(createVault(generateMasterKeySpec()).deriveKeys(TOKEN_PURPOSE));
    expect(elsewhere.all('sesn_a', 'cred_1').includes(token)).toBe(false);
  });

  it('made with a master key that was rotated out of first place are still accepted, and new ones use the new key', () => {
    const old = generateMasterKeySpec('k1');
    const before = createSessionTokens(createVault(old).deriveKeys(TOKEN_PURPOSE));
    const after = createSessionTokens(createVault(`${generateMasterKeySpec('k2')},${old}`).deriveKeys(TOKEN_PURPOSE));
    const token = before.issue('sesn_a', 'cred_1');
    expect(after.all('sesn_a', 'cred_1').includes(token)).toBe(true);
    expect(after.issue('sesn_a', 'cred_1')).not.toBe(token);
  });
});

describe('usage meter', () => {
  it('reports nothing for a stream cut before its usage, and for a body that is not JSON', () => {
    const cut = createUsageMeter('openai-chat', true);
    cut.write(Buffer.from('data: {"model":"m","choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'));
    expect(cut.end()).toEqual({ usage: null, model: 'm' });
    const broken = createUsageMeter('anthropic-messages', false);
    broken.write(Buffer.from('{"usage": {"input_tok'));
    expect(broken.end()).toEqual({ usage: null, model: null });
  });
});

describe('the model gateway', () => {
  let upstream: ModelUpstream;
  let gateway: ModelGateway;
  const servers: Server[] = [];
  const records: ModelRequestRecord[] = [];
  /** the gateway's address for each session, as its sandbox would reach it */
  const at: Record<string, string> = {};

  async function serve(sessionId: string): Promise<string> {
    const server = gateway.serverFor(sessionId);
    servers.push(server);
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  beforeAll(async () => {
    upstream = await startModelUpstream();
    gateway = createModelGateway({ dispatcher: createEgressGuard({ allowPrivate: ['127.0.0.1/32'] }).dispatcher, onRequest: (r) => records.push(r) });
    for (const [sessionId, credentialId] of [['sesn_a', 'cred_1'], ['sesn_b', 'cred_2']] as const) {
      gateway.register({ sessionId, credentialId, baseUrl: `${upstream.url}/v1`, apiKey: `${KEY}-${sessionId}`, tokens: tokens.all(sessionId, credentialId) });
      at[sessionId] = await serve(sessionId);
    }
  });
  afterAll(async () => {
    await gateway?.close();
    await upstream?.close();
  });
  beforeEach(() => {
    records.length = 0;
    upstream.requests.length = 0;
  });

  const tokenA = () => tokens.issue('sesn_a', 'cred_1');
  const openai = (base = at.sesn_a!, apiKey = tokenA()) => new OpenAI({ baseURL: `${base}/v1`, apiKey, maxRetries: 0 });
  const anthropic = (base = at.sesn_a!, apiKey = tokenA()) => new Anthropic({ baseURL: base, apiKey, maxRetries: 0 });
  const USAGE = { input_tokens: 100, output_tokens: 30, cache_read_input_tokens: 20, cache_creation_input_tokens: 0 };

  it('puts the real key on the upstream request, never the token, and meters a chat completion from the provider\'s usage', async () => {
    const answer = await openai().chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }] });
    expect(answer.choices[0]!.message.content).toBe('hello there');
    expect(answer.usage?.prompt_tokens).toBe(120);
    const seen = upstream.requests[0]!;
    expect(seen.headers.authorization).toBe(`Bearer ${KEY}-sesn_a`);
    expect(JSON.stringify(seen.headers)).not.toContain(tokenA());
    expect(records).toEqual([expect.objectContaining({ sessionId: 'sesn_a', protocol: 'openai-chat', model: 'gpt-test', streaming: false, status: 200, usage: USAGE, failure: null })]);
    expect(records[0]!.latencyMs).toBeGreaterThan(0);
  });

  it('streams a chat completion byte for byte; usage it did not ask for is fetched for the meter and kept from the runtime', async () => {
    const request = { model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'hi' }] };
    const post = (base: string, auth: string) => fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${auth}`, 'content-type': 'application/json' }, body: JSON.stringify(request) });
    const direct = await (await post(upstream.url, KEY)).text();
    upstream.requests.length = 0;
    const through = await post(at.sesn_a!, tokenA());
    expect(through.status).toBe(200);
    expect(through.headers.get('content-type')).toBe('text/event-stream');
    expect(through.headers.get('x-upstream')).toBe('yes');
    expect(await through.text()).toBe(direct);
    expect(direct).not.toContain('"usage"');
    expect(upstream.requests[0]!.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
    expect(records).toEqual([expect.objectContaining({ protocol: 'openai-chat', streaming: true, usage: USAGE, failure: null })]);
    expect(records[0]!.ttfbMs).toEqual(expect.any(Number));
  });

  it('passes the usage chunk through untouched when the runtime asked for it, as the SDK reads it', async () => {
    const stream = await openai().chat.completions.create({ model: 'gpt-test', stream: true, stream_options: { include_usage: true }, messages: [{ role: 'user', content: 'hi' }] });
    let text = '';
    let usage: unknown = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      if (chunk.usage) usage = chunk.usage;
    }
    expect(text).toBe('hello there');
    expect(usage).toMatchObject({ prompt_tokens: 120, completion_tokens: 30 });
    expect(records).toEqual([expect.objectContaining({ usage: USAGE })]);
  });

  it('does not wait for the whole answer: the first event reaches the runtime while the provider still holds the rest', async () => {
    const release = upstream.hold();
    const res = await fetch(`${at.sesn_a}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': tokenA(), 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'claude-test', max_tokens: 10, stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    });
    const reader = res.body!.getReader();
    const first = new TextDecoder().decode((await reader.read()).value);
    expect(first).toContain('message_start');
    expect(records).toEqual([]);
    release();
    while (!(await reader.read()).done);
    expect(records).toEqual([expect.objectContaining({ protocol: 'anthropic-messages', streaming: true })]);
    // a token sent in x-api-key (Claude Code's way): the key goes upstream in x-api-key, and nothing in authorization
    expect(upstream.requests[0]!.headers['x-api-key']).toBe(`${KEY}-sesn_a`);
    expect(upstream.requests[0]!.headers.authorization).toBeUndefined();
  });

  it('passes the provider\'s headers on when they come, before its first token', async () => {
    const release = upstream.hold('headers');
    const res = await fetch(`${at.sesn_a}/v1/messages`, {
      method: 'POST',
      headers: { 'x-api-key': tokenA(), 'content-type': 'application/json', 'anthropic-version': '2023-06-01' },
      body: JSON.stringify({ model: 'claude-test', max_tokens: 10, stream: true, messages: [{ role: 'user', content: 'hi' }] }),
    });
    // fetch resolves on the headers: the provider has sent nothing else yet
    expect(res.status).toBe(200);
    expect(res.headers.get('x-upstream')).toBe('yes');
    release();
    expect(await res.text()).toContain('message_stop');
  });

  it('survives a runtime that hangs up mid-stream: the provider\'s answer is dropped, the exchange recorded as cut, the next request served', async () => {
    const release = upstream.hold();
    const hangUp = new AbortController();
    const res = await fetch(`${at.sesn_a}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokenA()}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
      signal: hangUp.signal,
    });
    await res.body!.getReader().read();
    hangUp.abort();
    // the gateway drops the provider's answer when the runtime hangs up: its record comes without the rest
    await eventuallyTrue(() => records.length === 1);
    release();
    expect(records).toEqual([expect.objectContaining({ streaming: true, usage: null, failure: 'client closed' })]);
    await expect(openai().chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'hi' }] })).resolves.toMatchObject({ object: 'chat.completion' });
  });

  it('meters OpenAI responses, streaming and not', async () => {
    const client = openai();
    const whole = await client.responses.create({ model: 'gpt-test', input: 'hi' });
    expect(whole.output_text).toBe('hello there');
    const stream = await client.responses.create({ model: 'gpt-test', input: 'hi', stream: true });
    const types: string[] = [];
    for await (const event of stream) types.push(event.type);
    expect(types).toEqual(['response.created', 'response.output_text.delta', 'response.completed']);
    expect(records.map((r) => [r.protocol, r.streaming, r.usage])).toEqual([
      ['openai-responses', false, USAGE],
      ['openai-responses', true, USAGE],
    ]);
  });

  it('meters Anthropic messages, streaming and not; count_tokens passes unmetered', async () => {
    const client = anthropic();
    const whole = await client.messages.create({ model: 'claude-test', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] });
    expect(whole.content[0]).toMatchObject({ type: 'text', text: 'hello there' });
    const final = await client.messages.stream({ model: 'claude-test', max_tokens: 10, messages: [{ role: 'user', content: 'hi' }] }).finalMessage();
    expect(final.usage.output_tokens).toBe(30);
    const counted = await client.messages.countTokens({ model: 'claude-test', messages: [{ role: 'user', content: 'hi' }] });
    expect(counted.input_tokens).toBe(42);
    // this SDK sends its key as a bearer token: the real key goes upstream the same way
    expect(upstream.requests.map((r) => r.headers.authorization)).toEqual([`Bearer ${KEY}-sesn_a`, `Bearer ${KEY}-sesn_a`, `Bearer ${KEY}-sesn_a`]);
    const anthropicUsage = { input_tokens: 100, output_tokens: 30, cache_read_input_tokens: 20, cache_creation_input_tokens: 5 };
    expect(records.map((r) => [r.protocol, r.streaming, r.model, r.usage])).toEqual([
      ['anthropic-messages', false, 'claude-test', anthropicUsage],
      ['anthropic-messages', true, 'claude-test', anthropicUsage],
    ]);
  });

  it('refuses a missing token, another session\'s token, and a token for another credential, in the provider\'s shape, and sends nothing', async () => {
    await expect(openai(at.sesn_a, 'not-a-token').chat.completions.create({ model: 'm', messages: [] })).rejects.toMatchObject({ status: 401, code: 'invalid_api_key' });
    // session b's own token, used on session a's server (what a's sandbox reaches)
    await expect(openai(at.sesn_a, tokens.issue('sesn_b', 'cred_2')).chat.completions.create({ model: 'm', messages: [] })).rejects.toMatchObject({ status: 401 });
    await expect(openai(at.sesn_a, tokens.issue('sesn_a', 'cred_2')).chat.completions.create({ model: 'm', messages: [] })).rejects.toMatchObject({ status: 401 });
    await expect(anthropic(at.sesn_a, 'apgw_forged').messages.create({ model: 'm', max_tokens: 1, messages: [] })).rejects.toMatchObject({ status: 401, error: { type: 'error', error: { type: 'authentication_error' } } });
    // b's token on b's server works
    await expect(openai(at.sesn_b, tokens.issue('sesn_b', 'cred_2')).chat.completions.create({ model: 'm', messages: [] })).resolves.toMatchObject({ object: 'chat.completion' });
    expect(upstream.requests).toHaveLength(1);
    expect(upstream.requests[0]!.headers.authorization).toBe(`Bearer ${KEY}-sesn_b`);
  });

  it('refuses the token of a session that ended, also on a connection its runtime still holds', async () => {
    gateway.register({ sessionId: 'sesn_c', credentialId: 'cred_3', baseUrl: `${upstream.url}/v1`, apiKey: KEY, tokens: tokens.all('sesn_c', 'cred_3') });
    const base = await serve('sesn_c');
    const token = tokens.issue('sesn_c', 'cred_3');
    await expect(openai(base, token).chat.completions.create({ model: 'm', messages: [] })).resolves.toMatchObject({ object: 'chat.completion' });
    // a connection the runtime holds across the end: its next request is refused
    const held = new UndiciAgent({ connections: 1 });
    const before = await undiciFetch(`${base}/v1/models`, { headers: { authorization: `Bearer ${token}` }, dispatcher: held });
    expect(before.status).toBe(200);
    await before.text();
    gateway.revoke('sesn_c');
    const after = await undiciFetch(`${base}/v1/models`, { headers: { authorization: `Bearer ${token}` }, dispatcher: held });
    expect(after.status).toBe(401);
    await after.text();
    await held.close();
    const again = gateway.serverFor('sesn_c');
    servers.push(again);
    await new Promise<void>((resolve) => again.listen(0, '127.0.0.1', resolve));
    const res = await fetch(`http://127.0.0.1:${(again.address() as AddressInfo).port}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: '{}' });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: { code: 'invalid_api_key' } });
  });

  it('reaches only the provider\'s model endpoints below its base URL; the model list passes', async () => {
    const models = await openai().models.list();
    expect(models.data.map((m) => m.id)).toEqual(['upstream-model']);
    // sent as written (node:http does not normalise a path, as fetch would): `..` in any form stays refused
    for (const [method, path] of [['POST', '/v1/files'], ['GET', '/v1/chat/completions'], ['POST', '/v2/chat/completions'], ['GET', '/admin'], ['POST', '/v1/../internal/chat/completions'], ['POST', '/v1/%2e%2e/internal/chat/completions'], ['POST', '/v1/./chat/completions']] as const) {
      const res = await raw(at.sesn_a!, method, path, tokenA());
      expect(res.status, `${method} ${path}`).toBe(404);
      expect(JSON.parse(res.body)).toMatchObject({ error: { type: 'not_found_error' } });
    }
    expect(upstream.requests.map((r) => r.path)).toEqual(['/v1/models']);
    expect(records).toEqual([]);
  });

  it('refuses a request body over 32 MiB with a 413 before it reaches the provider', async () => {
    const res = await fetch(`${at.sesn_a}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${tokenA()}` }, body: Buffer.alloc(33 * 1024 * 1024, 0x20) }).catch((err: Error) => err);
    // the gateway answers and closes: the client sees the 413, or the connection end while it was still sending
    if (res instanceof Response) expect(res.status).toBe(413);
    expect(upstream.requests).toEqual([]);
    expect(records).toEqual([]);
  });

  it('passes a provider error through as the provider said it, metering no usage, and answers 502 when the provider cannot be reached', async () => {
    upstream.failNext(400);
    await expect(openai().chat.completions.create({ model: 'm', messages: [] })).rejects.toMatchObject({ status: 400, code: 'upstream_refused' });
    expect(records).toEqual([expect.objectContaining({ status: 400, usage: null, failure: null })]);

    records.length = 0;
    gateway.register({ sessionId: 'sesn_d', credentialId: 'cred_4', baseUrl: 'http://127.0.0.1:9/v1', apiKey: KEY, tokens: tokens.all('sesn_d', 'cred_4') });
    const base = await serve('sesn_d');
    const failed = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${tokens.issue('sesn_d', 'cred_4')}` }, body: '{"model":"m"}' });
    expect(failed.status).toBe(502);
    const body = await failed.text();
    expect(JSON.parse(body)).toMatchObject({ error: { type: 'api_error' } });
    expect(body).not.toContain(KEY);
    expect(records).toEqual([expect.objectContaining({ sessionId: 'sesn_d', status: 0, usage: null, failure: expect.stringMatching(/^upstream: /) })]);
  });
});

describe('the model gateway asking before it forwards (budget holds)', () => {
  let upstream: ModelUpstream;
  let gateway: ModelGateway;
  let base: string;
  const asked: ModelRequestAsked[] = [];
  const settled: ModelRequestRecord[] = [];
  const token = tokens.issue('sesn_budget', 'cred_1');

  beforeAll(async () => {
    upstream = await startModelUpstream();
    gateway = createModelGateway({
      dispatcher: createEgressGuard({ allowPrivate: ['127.0.0.1/32'] }).dispatcher,
      async admit(request) {
        asked.push(request);
        if (request.model === 'over-budget') return { ok: false, status: 402, message: 'the team budget bud_1 (month, $10.00) cannot cover this request' };
        if (request.model === 'slow-down') return { ok: false, status: 429, message: 'no worker holds this session now' };
        return { ok: true };
      },
      onRequest: (record) => void settled.push(record),
    });
    gateway.register({ sessionId: 'sesn_budget', credentialId: 'cred_1', baseUrl: `${upstream.url}/v1`, apiKey: KEY, tokens: tokens.all('sesn_budget', 'cred_1') });
    const server = gateway.serverFor('sesn_budget');
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await gateway?.close();
    await upstream?.close();
  });

  it('refuses a request the budget cannot cover in the provider\'s shape, naming the budget, and sends nothing', async () => {
    // refusals say not to retry, and the SDKs obey: one request each, even with retries on
    const openai = new OpenAI({ baseURL: `${base}/v1`, apiKey: token, maxRetries: 3 });
    await expect(openai.chat.completions.create({ model: 'over-budget', max_tokens: 64, messages: [{ role: 'user', content: 'hi' }] })).rejects.toMatchObject({
      status: 402,
      code: 'insufficient_quota',
      message: expect.stringContaining('team budget bud_1'),
    });
    const anthropic = new Anthropic({ baseURL: base, apiKey: token, maxRetries: 3 });
    await expect(anthropic.messages.create({ model: 'over-budget', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] })).rejects.toMatchObject({ status: 402, error: { error: { type: 'billing_error' } } });
    await expect(anthropic.messages.create({ model: 'slow-down', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] })).rejects.toMatchObject({ status: 429, error: { error: { type: 'rate_limit_error' } } });
    expect(asked.map((a) => [a.model, a.maxOutputTokens])).toEqual([['over-budget', 64], ['over-budget', 5], ['slow-down', 5]]);
    expect(asked[0]!.bytes).toBeGreaterThan(20);
    expect(upstream.requests).toEqual([]);
    expect(settled).toEqual([]);
  });

  it('settles each admitted request once with what the provider reported, also a cut one; count_tokens is not asked about', async () => {
    const anthropic = new Anthropic({ baseURL: base, apiKey: token, maxRetries: 0 });
    await anthropic.messages.create({ model: 'claude-test', max_tokens: 5, messages: [{ role: 'user', content: 'hi' }] });
    await anthropic.messages.countTokens({ model: 'claude-test', messages: [{ role: 'user', content: 'hi' }] });
    const release = upstream.hold();
    const hangUp = new AbortController();
    const res = await fetch(`${base}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: JSON.stringify({ model: 'gpt-test', stream: true, messages: [] }), signal: hangUp.signal });
    await res.body!.getReader().read();
    hangUp.abort();
    // the gateway drops the provider's answer when the runtime hangs up: its record comes without the rest
    await eventuallyTrue(() => settled.length === 2);
    release();
    expect(asked.slice(-2).map((a) => [a.protocol, a.model])).toEqual([
      ['anthropic-messages', 'claude-test'],
      ['openai-chat', 'gpt-test'],
    ]);
    // each record is the admitted request's, by its id
    expect(settled.map((r) => r.id)).toEqual(asked.slice(-2).map((a) => a.id));
    expect(settled.map((r) => [r.protocol, r.usage?.output_tokens ?? null, r.failure])).toEqual([
      ['anthropic-messages', 30, null],
      ['openai-chat', null, 'client closed'],
    ]);
  });
});

/** A request with its path exactly as given. */
function raw(base: string, method: string, path: string, token: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${base}${path}`, { method, path, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' } }, (res) => {
      let body = '';
      res.on('data', (d) => (body += String(d)));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end(method === 'POST' ? '{}' : undefined);
  });
}

async function eventuallyTrue(check: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
  expect(check()).toBe(true);
}

describe('the gateway daemon, a process of its own that outlives the worker driving it', () => {
  let upstream: ModelUpstream;
  let runDir: string;
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;

  beforeAll(async () => {
    upstream = await startModelUpstream();
    runDir = await mkdtemp(join(tmpdir(), 'agentplane-gateway-'));
  });
  afterAll(async () => {
    await stopGatewayDaemons(runDir);
    await upstream?.close();
    await rm(runDir, { recursive: true, force: true });
  });

  /** a worker's client: it starts the daemon as worker/main.ts does, and hears the records it is sent */
  function worker(records: ModelRequestRecord[], start = true) {
    return createGatewayClient({
      runDir,
      tokens,
      start: start ? (controlPath) => spawnGatewayDaemon(controlPath, ['127.0.0.1/32']) : () => Promise.reject(new Error('no daemon was expected to start')),
      onRecord: async (record) => void records.push(record),
    });
  }

  /** a chat completion through the session's socket, as the sandbox's bridge would carry it */
  function chat(socketPath: string, token: string, signal?: AbortSignal) {
    return undiciFetch('http://gateway/v1/chat/completions', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'hi' }] }),
      dispatcher: new UndiciAgent({ connect: { socketPath } }),
      signal,
    });
  }

  it('finishes a stream whose worker went, sends its record to the next worker once, and refuses the session once revoked', async () => {
    const firstRecords: ModelRequestRecord[] = [];
    const first = worker(firstRecords);
    const socketPath = join(runDir, 'sesn_d1.sock');
    const token = first.register({ sessionId: 'sesn_d1', credentialId: 'cred_1', apiKey: KEY });
    await first.listen('sesn_d1', `${upstream.url}/v1`, { path: socketPath, uid, gid });
    const pid = Number(await readFile(`${controlPathIn(runDir)}.pid`, 'utf8'));
    expect(pid).not.toBe(process.pid);
    expect((await stat(socketPath)).mode & 0o777).toBe(0o600);

    const release = upstream.hold();
    const res = await chat(socketPath, token);
    const reader = res.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toContain('chat.completion.chunk');
    // the worker goes mid-stream (its connection to the daemon with it); the provider then sends the rest
    first.close();
    release();
    let rest = '';
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) rest += new TextDecoder().decode(chunk.value);
    expect(rest).toContain('[DONE]');
    expect(upstream.requests.at(-1)!.headers.authorization).toBe(`Bearer ${KEY}`);
    expect(firstRecords).toEqual([]);

    // the next worker serves the session again (a reattach): the same daemon, and the record nobody took
    const nextRecords: ModelRequestRecord[] = [];
    const next = worker(nextRecords, false);
    expect(next.register({ sessionId: 'sesn_d1', credentialId: 'cred_1', apiKey: KEY })).toBe(token);
    await next.listen('sesn_d1', `${upstream.url}/v1`, { path: socketPath, uid, gid });
    expect(Number(await readFile(`${controlPathIn(runDir)}.pid`, 'utf8'))).toBe(pid);
    await eventuallyTrue(() => nextRecords.length === 1);
    expect(nextRecords[0]).toMatchObject({ sessionId: 'sesn_d1', streaming: true, failure: null, usage: expect.objectContaining({ input_tokens: expect.any(Number) }) });
    // acknowledged: a third worker does not get it again
    const thirdRecords: ModelRequestRecord[] = [];
    const third = worker(thirdRecords, false);
    third.register({ sessionId: 'sesn_d1', credentialId: 'cred_1', apiKey: KEY });
    await third.listen('sesn_d1', `${upstream.url}/v1`, { path: socketPath, uid, gid });
    await new Promise((r) => setTimeout(r, 200));
    expect(thirdRecords).toEqual([]);

    await third.revoke('sesn_d1');
    const refused = await chat(socketPath, token);
    expect(refused.status).toBe(401);
    await refused.text();
    next.close();
    third.close();
  });

  it('is started again, and serves the worker\'s sessions again, when it was killed', async () => {
    const records: ModelRequestRecord[] = [];
    const client = worker(records);
    const socketPath = join(runDir, 'sesn_d2.sock');
    const token = client.register({ sessionId: 'sesn_d2', credentialId: 'cred_1', apiKey: KEY });
    await client.listen('sesn_d2', `${upstream.url}/v1`, { path: socketPath, uid, gid });
    expect((await chat(socketPath, token)).status).toBe(200);
    await stopGatewayDaemons(runDir);
    await eventuallyTrue(() => !existsSync(`${controlPathIn(runDir)}.pid`));
    // the next call finds no daemon, starts one, and serves every session of this worker there first
    client.register({ sessionId: 'sesn_d3', credentialId: 'cred_1', apiKey: KEY });
    await client.listen('sesn_d3', `${upstream.url}/v1`, { path: join(runDir, 'sesn_d3.sock'), uid, gid });
    const res = await chat(socketPath, token);
    expect(res.status).toBe(200);
    await res.text();
    client.close();
  });
});
