/**
 * SSRF: a URL a tenant chooses (a webhook receiver, `model_provider.base_url`, a remote runtime's server) must not
 * reach the platform's own network, and what such a server answers must not be copied back to the tenant.
 *
 * The rule itself (runtimes/kit/egress.ts) on addresses in every spelling; refusals when a URL is saved (POST
 * /v1/webhooks, POST /v1/agents and its update) on the real stack with nothing allowed, as the default is; an
 * operator's allowance; DNS rebinding defeated where connections are opened (webhook deliveries, the turn's check of
 * the model provider, the remote runtimes' own requests), with real receivers on 127.0.0.1 that must get nothing; and
 * remote error bodies that never reach a turn's error. The same for whole sessions and delivery rows is in
 * test/cursor.adapter.test.ts and test/webhooks.test.ts, which have the receivers.
 */
import { promises as dns, type LookupAddress } from 'node:dns';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { isIP, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../api/create-app';
import { ConfigError, egressEnv, parseEnv } from '../config/env';
import { rowsOf } from '../db/client';
import { enqueueNotification } from '../db/queries/webhooks';
import { budgetThreshold } from '../governance/notifications';
import { RUNTIME_CAPABILITIES } from '../runtimes/registry';
import { createCursorAdapter } from '../runtimes/cursor/cursor.adapter';
import { createDeepAgentsAdapter } from '../runtimes/deepagents/deepagents.adapter';
import { createEgressGuard, describeStatus, egressRefusal, errorToken, type EgressGuard, type Resolve } from '../runtimes/kit/egress';
import { createManagedAgentsAdapter } from '../runtimes/managed-agents/managed-agents.adapter';
import type { SessionSandboxes } from '../runtimes/kit/session-sandbox';
import type { RuntimeAdapter } from '../runtimes/runtime-adapter';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { createNotifier } from '../worker/notifier';
import { MemorySink } from './support/memory-sink';
import { testSandboxes } from './support/sandboxes';
import { eventsOf, startStack, waitForStatus, type Stack } from './support/stack';
import { testAgent } from './support/test-agent';

// ---- a resolver the test controls -------------------------------------------------------------------------------

/** names the test answers itself; any other name (localhost) goes to the system resolver */
const names = new Map<string, string[]>();
const lookup: Resolve = async (hostname) => {
  const known = names.get(hostname);
  if (!known) return dns.lookup(hostname, { all: true, verbatim: true });
  return known.map((address): LookupAddress => ({ address, family: isIP(address) }));
};
/** a guard with the test's resolver, where another resolver (`answers`) decides what a name is at connect time */
function guardAnswering(answers: Record<string, string>, allowPrivate: string[] = []): EgressGuard {
  return createEgressGuard({ allowPrivate, lookup: async (hostname) => [{ address: answers[hostname] ?? '0.0.0.0', family: 4 }] });
}

// ---- receivers on 127.0.0.1 that count what reaches them --------------------------------------------------------

interface Receiver {
  server: Server;
  port: number;
  url: string;
  requests: string[];
}

async function startReceiver(answer: (path: string) => { status: number; type?: string; body: string; headers?: Record<string, string> } = () => ({ status: 200, body: 'ok' }), host = '127.0.0.1'): Promise<Receiver> {
  const requests: string[] = [];
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      requests.push(`${req.method} ${req.url}`);
      const a = answer(req.url ?? '/');
      res.writeHead(a.status, { 'content-type': a.type ?? 'text/plain', ...a.headers }).end(a.body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, host, resolve));
  const port = (server.address() as AddressInfo).port;
  return { server, port, url: `http://${host}:${port}`, requests };
}

const receivers: Receiver[] = [];
async function receiver(...args: Parameters<typeof startReceiver>): Promise<Receiver> {
  const r = await startReceiver(...args);
  receivers.push(r);
  return r;
}

afterAll(async () => {
  for (const r of receivers) {
    r.server.closeAllConnections();
    await new Promise((resolve) => r.server.close(resolve));
  }
});

// ---- the rule ---------------------------------------------------------------------------------------------------

describe('the egress rule', () => {
  const guard = createEgressGuard({ allowPrivate: [], lookup });
  const refused = async (url: string) =>
    guard.checkUrl(url, 'body.url').then(
      () => null,
      (err: Error) => err.message,
    );

  it('refuses loopback, private, link-local (cloud metadata), shared, multicast and reserved addresses in every spelling a URL allows', async () => {
    const urls = [
      'http://127.0.0.1/',
      'http://127.1.2.3:8080/x',
      'http://2130706433/', // 127.0.0.1 as one number
      'http://0x7f.1/', // and in hex, short form
      'http://10.1.2.3/',
      'http://172.16.0.1/',
      'http://172.31.255.255/',
      'http://192.168.1.1/',
      'http://169.254.169.254/latest/meta-data/',
      'http://100.64.0.1/',
      'http://0.0.0.0/',
      'http://192.0.0.10/',
      'http://198.18.0.1/',
      'http://224.0.0.1/',
      'http://255.255.255.255/',
      'http://[::]/',
      'http://[::1]/',
      'http://[fc00::1]/',
      'http://[fd00:ec2::254]/', // AWS's IPv6 metadata address
      'http://[fe80::1]/',
      'http://[ff02::1]/',
    ];
    for (const url of urls) expect(await refused(url), url).toMatch(/^body\.url: the address \S+ is (an?|the) .* in \S+\/\d+, which agentplane does not connect to/);
    expect(await refused('http://169.254.169.254/')).toContain('link-local (cloud metadata) address in 169.254.0.0/16');
  });

  it('refuses an IPv6 address that carries a refused IPv4 one (IPv4-mapped, NAT64, 6to4), judged by the IPv4 address', async () => {
    for (const [url, range] of [
      ['http://[::ffff:127.0.0.1]/', '127.0.0.0/8'],
      ['http://[::ffff:a9fe:a9fe]/', '169.254.0.0/16'],
      ['http://[64:ff9b::a9fe:a9fe]/', '169.254.0.0/16'],
      ['http://[64:ff9b::10.0.0.1]/', '10.0.0.0/8'],
      ['http://[2002:7f00:1::1]/', '127.0.0.0/8'],
      ['http://[2002:c0a8:101::]/', '192.168.0.0/16'],
    ]) {
      expect(await refused(url!), url).toContain(`in ${range}`);
    }
  });

  it('lets public addresses through, including the ones right next to the refused ranges', async () => {
    for (const url of [
      'http://8.8.8.8/',
      'http://11.0.0.1/',
      'http://172.15.255.255/',
      'http://172.32.0.1/',
      'http://100.63.255.255/',
      'http://100.128.0.1/',
      'http://169.253.255.255/',
      'http://198.20.0.1/',
      'http://203.0.113.10/',
      'http://223.255.255.255/',
      'http://[2001:4860:4860::8888]/',
      'http://[::ffff:8.8.8.8]/',
      'http://[2002:808:808::1]/',
      'http://[fbff::1]/',
    ]) {
      expect(await refused(url), url).toBeNull();
    }
  });

  it('refuses a name that resolves to loopback (localhost), a name with one refused address among public ones, and a name that does not resolve', async () => {
    names.set('mixed.test', ['203.0.113.1', '10.0.0.5']);
    expect(await refused('http://localhost:8080/hook')).toBe(
      'body.url: the host localhost resolves to a loopback address in 127.0.0.0/8, which agentplane does not connect to unless the operator allows it (AGENTPLANE_EGRESS_ALLOW_PRIVATE)',
    );
    expect(await refused('https://mixed.test/hook')).toContain('the host mixed.test resolves to a private address in 10.0.0.0/8');
    // the refusal names the range, never the internal address the name resolved to
    expect(await refused('https://mixed.test/hook')).not.toContain('10.0.0.5');
    expect(await refused('https://nowhere.invalid/hook')).toBe('body.url: the host nowhere.invalid does not resolve');
    expect(await refused('file:///etc/passwd')).toBe('body.url: must be an http or https URL');
  });

  it('allows exactly the ranges the operator lists, and nothing next to them', async () => {
    const allowing = createEgressGuard({ allowPrivate: ['127.0.0.1/32', '10.20.0.0/16', 'fd00:1::/32'], lookup });
    const ok = (url: string) => allowing.checkUrl(url, 'body.url').then(() => true, () => false);
    expect(await ok('http://127.0.0.1:9/')).toBe(true);
    expect(await ok('http://[::ffff:127.0.0.1]:9/')).toBe(true);
    expect(await ok('http://localhost:9/')).toBe(true);
    expect(await ok('http://10.20.5.5/')).toBe(true);
    expect(await ok('http://[fd00:1::5]/')).toBe(true);
    expect(await ok('http://127.0.0.2/')).toBe(false);
    expect(await ok('http://10.21.0.1/')).toBe(false);
    expect(await ok('http://[fd00:2::5]/')).toBe(false);
    expect(await ok('http://169.254.169.254/')).toBe(false);
    expect(() => createEgressGuard({ allowPrivate: ['localhost'] })).toThrow('not an address range');
  });

  it('AGENTPLANE_EGRESS_ALLOW_PRIVATE is empty by default, takes comma-separated ranges, and stops the process on anything else, naming the variable', () => {
    expect(parseEnv(egressEnv, {}).AGENTPLANE_EGRESS_ALLOW_PRIVATE).toEqual([]);
    expect(parseEnv(egressEnv, { AGENTPLANE_EGRESS_ALLOW_PRIVATE: '127.0.0.1/32, 10.0.0.0/8,::1' }).AGENTPLANE_EGRESS_ALLOW_PRIVATE).toEqual(['127.0.0.1/32', '10.0.0.0/8', '::1']);
    for (const bad of ['localhost', '10.0.0.0/33', '10.0.0.0/8/1', '10.0.0.0/x', '*']) {
      expect(() => parseEnv(egressEnv, { AGENTPLANE_EGRESS_ALLOW_PRIVATE: bad }), bad).toThrow(ConfigError);
      expect(() => parseEnv(egressEnv, { AGENTPLANE_EGRESS_ALLOW_PRIVATE: bad }), bad).toThrow('AGENTPLANE_EGRESS_ALLOW_PRIVATE');
    }
  });

  it('describes a remote error by its status and at most a short token, never its words, and never a token that is the key', () => {
    expect(describeStatus(503)).toBe('503 Service Unavailable');
    expect(describeStatus(404, errorToken({ error: { type: 'not_found_error', message: 'the secret sk-123 is wrong' } }))).toBe('404 not_found_error');
    expect(errorToken({ error: { code: 'model_not_found', message: 'x' } })).toBe('model_not_found');
    expect(errorToken({ error: 'invalid_key' })).toBe('invalid_key');
    expect(errorToken({ error: { type: 'has spaces and <html>' } })).toBeNull();
    expect(errorToken({ error: { type: 'x'.repeat(65) } })).toBeNull();
    expect(errorToken({ error: { type: 'sk-the-key-itself' } }, ['sk-the-key-itself'])).toBeNull();
    expect(errorToken('not json')).toBeNull();
  });
});

// ---- connections ------------------------------------------------------------------------------------------------

describe('connections through the guard', () => {
  it('refuse a redirect from an allowed server to a refused address: the second server gets nothing', async () => {
    const inner = await receiver(() => ({ status: 200, body: 'internal' }), '127.0.0.2');
    const outer = await receiver(() => ({ status: 302, body: '', headers: { location: `${inner.url}/admin` } }));
    const guard = createEgressGuard({ allowPrivate: ['127.0.0.1/32'] });
    const err = await guard.fetch(`${outer.url}/start`).then(() => null, (e: Error) => e);
    expect(err?.cause).toMatchObject({ code: 'egress.refused', reason: 'the address 127.0.0.2 is a loopback address in 127.0.0.0/8' });
    expect(outer.requests).toEqual(['GET /start']);
    expect(inner.requests).toEqual([]);
    // the same redirect is followed where the operator allows the second address: the refusal above was the guard's
    const wider = createEgressGuard({ allowPrivate: ['127.0.0.0/8'] });
    expect(await (await wider.fetch(`${outer.url}/start`)).text()).toBe('internal');
    expect(inner.requests).toEqual(['GET /admin']);
  });

  it('refuse an IP literal at connect time, whatever was checked before', async () => {
    const target = await receiver();
    const err = await createEgressGuard({ allowPrivate: [] }).fetch(`${target.url}/`).then(() => null, (e: Error) => e);
    expect(err?.cause).toMatchObject({ code: 'egress.refused' });
    expect(target.requests).toEqual([]);
  });
});

// ---- the stack: nothing allowed, as by default ------------------------------------------------------------------

describe('on the stack with nothing allowed', () => {
  let stack: Stack;
  const prompts: string[] = [];

  beforeAll(async () => {
    stack = await startStack({ runtimes: { scripted: createScriptedAdapter({ onPromptSent: (_id, text) => prompts.push(text) }) }, egressLookup: lookup });
  });
  afterAll(async () => {
    await stack?.stop();
  });

  async function count(table: 'webhooks' | 'agents' | 'audit_log', teamId: string): Promise<number> {
    const [row] = rowsOf<{ n: number }>(await stack.db.db.execute(sql`select count(*)::int as n from ${sql.identifier(table)} where team_id = ${teamId}`));
    return row!.n;
  }

  it('POST /v1/webhooks refuses a receiver on loopback, cloud metadata, IPv6 loopback, unique-local or a name resolving to loopback, naming body.url, and writes nothing', async () => {
    const team = await stack.newTeam();
    const admin = await team.key('admin');
    for (const [url, what] of [
      ['http://127.0.0.1:8080/hook', 'loopback'],
      ['http://169.254.169.254/latest/meta-data/iam/security-credentials/', 'link-local (cloud metadata)'],
      ['http://[::1]:8080/hook', 'loopback'],
      ['http://[fc00::1]/hook', 'unique local'],
      ['http://localhost:8080/hook', 'loopback'],
    ]) {
      const res = await stack.call('POST', '/v1/webhooks', { url }, admin);
      expect(res.status, url).toBe(400);
      expect(res.body.invalid_params, url).toEqual([{ name: 'body.url', reason: expect.stringContaining(what!) }]);
      expect(res.body.detail).toMatch(/^body\.url: /);
    }
    expect(await count('webhooks', team.teamId)).toBe(0);
    expect(await count('audit_log', team.teamId)).toBe(0);
    names.set('hooks.public.test', ['203.0.113.20']);
    expect((await stack.call('POST', '/v1/webhooks', { url: 'https://hooks.public.test/hook' }, admin)).status).toBe(200);
  });

  it('POST /v1/agents and POST /v1/agents/{id} refuse a model_provider.base_url on a private address, naming the field, and write nothing', async () => {
    const team = await stack.newTeam();
    const dev = await team.key('developer');
    const agent = (base_url: string) => ({ name: 'provider', model: 'scripted', runtime: { type: 'scripted' }, model_provider: { base_url } });
    for (const url of ['http://127.0.0.1:11434/v1', 'http://169.254.169.254/v1', 'http://[::1]/v1', 'http://[fd12::1]/v1', 'http://localhost:8642']) {
      const res = await stack.call('POST', '/v1/agents', agent(url), dev);
      expect(res.status, url).toBe(400);
      expect(res.body.invalid_params.map((p: { name: string }) => p.name), url).toEqual(['body.model_provider.base_url']);
    }
    expect(await count('agents', team.teamId)).toBe(0);

    names.set('models.public.test', ['203.0.113.21']);
    const created = await stack.call('POST', '/v1/agents', agent('https://models.public.test/v1'), dev);
    expect(created.status, JSON.stringify(created.body)).toBe(200);
    const moved = await stack.call('POST', `/v1/agents/${created.body.id}`, { model_provider: { base_url: 'http://10.0.0.7:8000/v1' } }, dev);
    expect(moved.status).toBe(400);
    expect(moved.body.invalid_params).toEqual([{ name: 'body.model_provider.base_url', reason: expect.stringContaining('private address in 10.0.0.0/8') }]);
    const current = await stack.call('GET', `/v1/agents/${created.body.id}`, undefined, dev);
    expect(current.body).toMatchObject({ version: 1, model_provider: { base_url: 'https://models.public.test/v1' } });
  });

  it("lets an operator's allowance (AGENTPLANE_EGRESS_ALLOW_PRIVATE) save exactly the listed range", async () => {
    const app = createApp({ db: stack.db.db, vault: stack.vault, temporal: stack.temporal, taskQueue: stack.taskQueue, capabilities: RUNTIME_CAPABILITIES, sandboxKind: stack.sandboxKind, egress: createEgressGuard({ allowPrivate: ['127.0.0.1/32'] }) });
    const post = (path: string, body: unknown) => app.request(path, { method: 'POST', headers: { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect((await post('/v1/webhooks', { url: 'http://127.0.0.1:9000/hook' })).status).toBe(200);
    expect((await post('/v1/webhooks', { url: 'http://127.0.0.2:9000/hook' })).status).toBe(400);
    expect((await post('/v1/agents', { name: 'local model', model: 'scripted', runtime: { type: 'scripted' }, model_provider: { base_url: 'http://127.0.0.1:11434/v1' } })).status).toBe(200);
  });

  it('a webhook whose name resolves to a public address when saved and to loopback when sent (DNS rebinding) is not delivered: the receiver gets nothing and the delivery fails with a short reason', async () => {
    const local = await receiver();
    const team = await stack.newTeam();
    names.set('rebind.test', ['203.0.113.30']);
    const hook = await stack.call('POST', '/v1/webhooks', { url: `http://rebind.test:${local.port}/hook` }, await team.key('admin'));
    expect(hook.status, JSON.stringify(hook.body)).toBe(200);
    const notify = (percent: number) =>
      stack.db.db.transaction((tx) =>
        enqueueNotification(tx, { teamId: team.teamId, type: 'budget.threshold', payload: budgetThreshold({ teamId: team.teamId, budgetId: 'bud_rebind', scope: 'team', agentId: null, percent, spentUsd: 1, limitUsd: 2, periodStart: new Date() }) }),
      );

    // by the time the notifier sends, the attacker's DNS answers 127.0.0.1
    const [refusedId] = await notify(50);
    const refusing = createNotifier({ db: stack.db.db, vault: stack.vault, egress: guardAnswering({ 'rebind.test': '127.0.0.1' }), maxAttempts: 1 });
    expect(await refusing.runOnce()).toMatchObject({ claimed: 1, failed: 1 });
    expect(local.requests).toEqual([]);
    const [row] = rowsOf<{ status: string; last_error: string }>(await stack.db.db.execute(sql`select status, last_error from webhook_deliveries where id = ${refusedId}`));
    expect(row).toEqual({ status: 'failed', last_error: 'request failed: egress refused: the host rebind.test resolves to a loopback address in 127.0.0.0/8' });

    // where the operator allows that address, the same delivery path reaches the receiver: the refusal was the guard's
    await notify(80);
    const allowing = createNotifier({ db: stack.db.db, vault: stack.vault, egress: guardAnswering({ 'rebind.test': '127.0.0.1' }, ['127.0.0.1/32']) });
    expect(await allowing.runOnce()).toMatchObject({ claimed: 1, delivered: 1 });
    expect(local.requests).toEqual(['POST /hook']);
  });

  it('a model provider whose name resolves to loopback by the time a turn starts fails the turn for good, before the runtime is called (DNS rebinding after save)', async () => {
    names.set('model.rebind.test', ['203.0.113.31']);
    const agent = await stack.call('POST', '/v1/agents', { name: 'rebound', model: 'scripted', runtime: { type: 'scripted' }, model_provider: { base_url: 'http://model.rebind.test:11434/v1' }, tool_policy: { rules: [], default: 'allow' } });
    expect(agent.status, JSON.stringify(agent.body)).toBe(200);
    names.set('model.rebind.test', ['127.0.0.1']);
    const session = await stack.call('POST', '/v1/sessions', { agent: agent.body.id, initial_events: [{ type: 'user.message', content: 'say rebound' }] });
    expect(session.status).toBe(200);
    const stopped = await waitForStatus(stack, session.body.id, 'idle', 'error');
    expect(stopped.stop_reason.message).toBe('egress refused: model_provider.base_url: the host model.rebind.test resolves to a loopback address in 127.0.0.0/8, which agentplane does not connect to unless the operator allows it (AGENTPLANE_EGRESS_ALLOW_PRIVATE)');
    const errors = (await eventsOf(stack, session.body.id)).filter((e) => e.type === 'session.error');
    expect(errors.map((e) => e.error.message)).toEqual([stopped.stop_reason.message]);
    expect(prompts).not.toContain('say rebound');
  });
});

// ---- remote runtimes --------------------------------------------------------------------------------------------

const LEAK = `sk-live-${Math.random().toString(36).slice(2)}-internal-page-DO-NOT-ECHO`;
/** what an internal service (or a hostile server) answers: a body the tenant must never see again */
const leakyJson = (status: number) => () => ({ status, type: 'application/json', body: JSON.stringify({ error: { type: 'internal_error', message: `database password is ${LEAK}` }, detail: LEAK, title: LEAK }) });
const leakyHtml = (status: number) => () => ({ status, type: 'text/html', body: `<html><body><h1>Admin</h1><pre>${LEAK}</pre></body></html>` });

interface RuntimeCase {
  name: string;
  runtime: 'managed-agents' | 'cursor' | 'deepagents';
  adapter: (url: string) => RuntimeAdapter;
}

/** `local`: where DeepAgents keeps its sessions, and their sandboxes */
function cases(egress: (url: string) => EgressGuard, local: () => { dataDir: string; sandboxes: SessionSandboxes }): RuntimeCase[] {
  return [
    { name: 'managed-agents', runtime: 'managed-agents', adapter: (url) => createManagedAgentsAdapter({ egress: egress(url), settleMs: 10 }) },
    { name: 'cursor', runtime: 'cursor', adapter: (url) => createCursorAdapter({ egress: egress(url), reconnectMs: 10, maxReconnects: 1 }) },
    { name: 'deepagents', runtime: 'deepagents', adapter: (url) => createDeepAgentsAdapter({ egress: egress(url), ...local() }) },
  ];
}

/** one turn's outcome: its result, or what `open` threw (Managed Agents creates its remote session there) */
async function oneTurn(adapter: RuntimeAdapter, runtime: RuntimeCase['runtime'], baseUrl: string, workdir: string): Promise<{ message: string; retryable: boolean | null; thrown: unknown }> {
  const agent = testAgent({ runtime: { type: runtime, config: {} }, model: 'gpt-4.1', modelProvider: { baseUrl, credentialId: 'cred_1' } });
  const ctx = { sessionId: `sesn_egress${Math.random().toString(36).slice(2, 8)}`, agent, workdir, secrets: { modelApiKey: 'sk-tenant-key-0123456789' } };
  try {
    const ref = await adapter.open(ctx, null);
    const result = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 't1', messageId: 'm1', text: 'hello' }, new MemorySink());
    expect(result.status).toBe('error');
    return result.status === 'error' ? { message: result.message, retryable: result.retryable, thrown: null } : { message: '', retryable: null, thrown: null };
  } catch (err) {
    return { message: (err as Error).message, retryable: null, thrown: err };
  }
}

describe('remote runtimes', () => {
  let root: string;
  let sandboxes: SessionSandboxes;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'agentplane-egress-'));
    ({ sandboxes } = await testSandboxes(join(root, 'data')));
  });
  afterAll(async () => {
    await sandboxes?.closeAll();
    await rm(root, { recursive: true, force: true });
  });
  const local = () => ({ dataDir: join(root, 'data'), sandboxes });

  for (const c of cases(() => createEgressGuard({ allowPrivate: ['127.0.0.1/32'] }), local)) {
    it(`${c.name}: a server answering an error with a secret-looking body (JSON or an HTML page) gets only its status and error type into the turn's error`, { timeout: 60_000 }, async () => {
      for (const [answer, expected] of [
        [leakyJson(c.runtime === 'deepagents' ? 400 : 500), c.runtime === 'deepagents' ? '400 internal_error' : '500 internal_error'],
        [leakyHtml(403), '403 Forbidden'],
      ] as const) {
        const server = await receiver(answer);
        const { message } = await oneTurn(c.adapter(server.url), c.runtime, c.runtime === 'deepagents' ? `${server.url}/v1` : server.url, join(root, 'work'));
        expect(server.requests.length, c.name).toBeGreaterThan(0);
        expect(message).toContain(expected);
        expect(message).not.toContain(LEAK);
        expect(message).not.toContain('database password');
        expect(message).not.toContain('<html>');
      }
    });
  }

  for (const c of cases((url) => guardAnswering({ [new URL(url).hostname]: '127.0.0.1' }), local)) {
    it(`${c.name}: a server name that resolves to loopback at connect time (DNS rebinding) gets no request, and the turn fails for good with the refusal`, { timeout: 60_000 }, async () => {
      const server = await receiver(() => ({ status: 200, type: 'application/json', body: '{}' }));
      const base = `http://runtime.rebind.test:${server.port}${c.runtime === 'deepagents' ? '/v1' : ''}`;
      const outcome = await oneTurn(c.adapter(base), c.runtime, base, join(root, 'work'));
      expect(server.requests).toEqual([]);
      const refusal = 'the host runtime.rebind.test resolves to a loopback address in 127.0.0.0/8';
      if (c.runtime === 'managed-agents') {
        // its remote session is created in `open`, which throws: the turn activity turns the refusal into a final failure
        expect(egressRefusal(outcome.thrown)?.reason).toBe(refusal);
      } else {
        expect(outcome).toMatchObject({ retryable: false, message: `egress refused: ${refusal}` });
      }
    });
  }
});
