/**
 * Environments and their network policy (`config.networking`, Managed Agents' shape), on the real stack: create, read,
 * update and list; the 400s that name the field; another team's environment; and the policy reaching the worker's
 * turn, read live so a change applies from the session's next turn.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../api/create-app';
import { rowsOf } from '../db/client';
import { allowsHost, type Networking } from '../governance/networking';
import { can } from '../governance/permissions';
import { RUNTIME_CAPABILITIES } from '../runtimes/registry';
import { createEgressGuard } from '../runtimes/kit/egress';
import type { RuntimeAdapter, TurnContext } from '../runtimes/runtime-adapter';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { startStack, waitForStatus, type Stack } from './support/stack';

let stack: Stack;
/** the networking each turn of each session was given, in order */
const seen = new Map<string, Networking[]>();

/** The scripted runtime, noting what each turn was told it may reach. */
function recordingAdapter(): RuntimeAdapter {
  const scripted = createScriptedAdapter();
  return {
    ...scripted,
    async runTurn(ctx, ref, input, sink) {
      const networking = (ctx as TurnContext & { networking?: Networking }).networking;
      if (input.kind === 'message') seen.set(ctx.sessionId, [...(seen.get(ctx.sessionId) ?? []), networking!]);
      return scripted.runTurn(ctx, ref, input, sink);
    },
  };
}

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: recordingAdapter() } });
});
afterAll(async () => {
  await stack?.stop();
});

const limited = (hosts: string[], extra: Record<string, unknown> = {}) => ({ type: 'cloud', networking: { type: 'limited', allowed_hosts: hosts, ...extra } });

async function createEnvironment(body: Record<string, unknown>, key?: string) {
  const res = await stack.call('POST', '/v1/environments', { name: 'env', ...body }, key);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body;
}

async function environmentRow(id: string) {
  return rowsOf<{ name: string; config: unknown; metadata: unknown; updated_at: string }>(await stack.db.db.execute(sql`select name, config, metadata, updated_at::text from environments where id = ${id}`))[0];
}

async function auditRows(target: string) {
  return rowsOf<{ action: string; data: any }>(await stack.db.db.execute(sql`select action, data from audit_log where target = ${target} order by seq`));
}

describe('environments', () => {
  it('creates, reads, updates and lists an environment in Managed Agents\' shape, a limited policy normalised', async () => {
    const env = await createEnvironment({ name: 'ci', description: 'for CI', config: limited(['Example.COM.', '*.GitHub.com', 'example.com', '203.0.113.7', '[2001:db8::7]']), metadata: { owner: 'ci' } });
    expect(env).toMatchObject({
      id: expect.stringMatching(/^env_/),
      type: 'environment',
      name: 'ci',
      description: 'for CI',
      config: {
        type: 'cloud',
        // lower case, no trailing dot, IPv6 unbracketed, each host once
        networking: { type: 'limited', allowed_hosts: ['example.com', '*.github.com', '203.0.113.7', '2001:db8::7'], allow_package_managers: false, allow_mcp_servers: false },
        packages: { type: 'packages', apt: [], cargo: [], gem: [], go: [], npm: [], pip: [] },
      },
      metadata: { owner: 'ci' },
      archived_at: null,
    });
    expect(env.updated_at).toBe(env.created_at);
    expect((await stack.call('GET', `/v1/environments/${env.id}`)).body).toEqual(env);

    // an update keeps what it does not name: the hosts stay when only the package managers are opened
    const opened = await stack.call('POST', `/v1/environments/${env.id}`, { config: { type: 'cloud', networking: { type: 'limited', allow_package_managers: true } }, metadata: { owner: null, team: 'build' } });
    expect(opened.status, JSON.stringify(opened.body)).toBe(200);
    expect(opened.body).toMatchObject({ name: 'ci', description: 'for CI', metadata: { team: 'build' }, config: { networking: { type: 'limited', allowed_hosts: env.config.networking.allowed_hosts, allow_package_managers: true } } });
    expect(opened.body.metadata).not.toHaveProperty('owner');
    expect(Date.parse(opened.body.updated_at)).toBeGreaterThan(Date.parse(env.updated_at));

    // what snapshots leave out of the workspace (none by default); an update that names no networking keeps it
    expect(env.config.workspace).toEqual({ snapshot_ignore: [] });
    const ignoring = await stack.call('POST', `/v1/environments/${env.id}`, { config: { type: 'cloud', workspace: { snapshot_ignore: ['node_modules/**', '**/*.log', 'node_modules/**'] } } });
    expect(ignoring.status, JSON.stringify(ignoring.body)).toBe(200);
    expect(ignoring.body.config).toMatchObject({ networking: { type: 'limited', allow_package_managers: true }, workspace: { snapshot_ignore: ['node_modules/**', '**/*.log'] } });

    const renamed = await stack.call('POST', `/v1/environments/${env.id}`, { name: 'ci 2', description: null, config: { type: 'cloud', networking: { type: 'unrestricted' } } });
    expect(renamed.body).toMatchObject({ name: 'ci 2', description: null, config: { networking: { type: 'unrestricted' }, workspace: { snapshot_ignore: ['node_modules/**', '**/*.log'] } } });

    // each change has its audit row, with the policy it replaced
    const audit = await auditRows(env.id);
    expect(audit.map((r) => r.action)).toEqual(['environment.create', 'environment.update', 'environment.update', 'environment.update']);
    expect(audit[3]!.data).toMatchObject({ fields: ['name', 'description', 'config'], networking: { before: { type: 'limited', allow_package_managers: true }, after: { type: 'unrestricted' } } });

    // an update that changes nothing writes nothing
    const before = await environmentRow(env.id);
    expect((await stack.call('POST', `/v1/environments/${env.id}`, { name: 'ci 2' })).status).toBe(200);
    expect(await environmentRow(env.id)).toEqual(before);
    expect(await auditRows(env.id)).toHaveLength(4);

    // the default environment: no config is unrestricted; the list pages by cursor
    const plain = await createEnvironment({ name: 'plain' });
    expect(plain.config.networking).toEqual({ type: 'unrestricted' });
    const first = await stack.call('GET', '/v1/environments?limit=1');
    expect(first.body.data.map((e: any) => e.id)).toEqual([plain.id]);
    const second = await stack.call('GET', `/v1/environments?limit=1&page=${first.body.next_page}`);
    expect(second.body.data.map((e: any) => e.id)).toEqual([env.id]);
  });

  it('refuses an allowed_hosts entry that is a URL, a port, a bare or top-level wildcard, a single-label or localhost name, or not ASCII, with a 400 naming the entry, and writes nothing', async () => {
    const env = await createEnvironment({ name: 'strict', config: limited(['example.com']) });
    const before = await environmentRow(env.id);
    const bad = ['https://example.com', 'example.com/path', 'example.com:443', '*', '*.com', 'foo.*.com', 'postgres', 'localhost', 'api.localhost', 'exämple.com', 'under score-.com', '1.2.3.999', 'a..b.com', '', `${'a'.repeat(64)}.com`];
    for (const host of bad) {
      for (const [method, path, body] of [
        ['POST', '/v1/environments', { name: 'x', config: limited(['ok.example.com', host]) }],
        ['POST', `/v1/environments/${env.id}`, { config: limited(['ok.example.com', host]) }],
      ] as const) {
        const res = await stack.call(method, path, body);
        expect(res.status, `${host}: ${JSON.stringify(res.body)}`).toBe(400);
        expect(res.body.invalid_params.map((p: any) => p.name), host).toEqual(['body.config.networking.allowed_hosts.1']);
        expect(res.body.detail).toContain('body.config.networking.allowed_hosts.1');
      }
    }
    // too many, a typo in a field name (which would otherwise leave the network open), packages it would not install
    const tooMany = Array.from({ length: 257 }, (_, i) => `h${i}.example.com`);
    const refusals: Array<[unknown, string]> = [
      [limited(tooMany), 'body.config.networking.allowed_hosts'],
      [{ type: 'cloud', networking: { type: 'limited', allowed_host: ['example.com'] } }, 'body.config.networking'],
      [{ type: 'cloud', networking: { type: 'open' } }, 'body.config.networking.type'],
      [{ type: 'cloud', netwerking: { type: 'limited' } }, 'body.config'],
      [{ type: 'cloud', packages: { pip: ['requests'] } }, 'body.config.packages.pip'],
      [{ type: 'self_hosted' }, 'body.config.type'],
      [{ type: 'cloud', workspace: { snapshot_ignore: ['../outside/**'] } }, 'body.config.workspace.snapshot_ignore.0'],
      [{ type: 'cloud', workspace: { snapshot_ignore: ['ok/**', '/etc/**'] } }, 'body.config.workspace.snapshot_ignore.1'],
    ];
    for (const [config, field] of refusals) {
      const res = await stack.call('POST', `/v1/environments/${env.id}`, { config });
      expect(res.status, JSON.stringify(res.body)).toBe(400);
      expect(res.body.invalid_params.map((p: any) => p.name), JSON.stringify(config)).toEqual([field]);
    }
    const crowded = await stack.call('POST', `/v1/environments/${env.id}`, { metadata: Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v'])) });
    expect(crowded.status).toBe(400);
    expect(crowded.body.invalid_params.map((p: any) => p.name)).toEqual(['body.metadata']);
    expect(await environmentRow(env.id)).toEqual(before);
  });

  it('refuses a private, loopback or metadata address in allowed_hosts unless the operator allows its range', async () => {
    for (const host of ['10.0.0.5', '127.0.0.1', '169.254.169.254', '::1', '[fd00::1]', '::ffff:127.0.0.1']) {
      const res = await stack.call('POST', '/v1/environments', { name: 'x', config: limited([host]) });
      expect(res.status, `${host}: ${JSON.stringify(res.body)}`).toBe(400);
      expect(res.body.invalid_params, host).toEqual([{ name: 'body.config.networking.allowed_hosts.0', reason: expect.stringMatching(/address/) }]);
    }
    // the same rule as every URL a tenant saves: AGENTPLANE_EGRESS_ALLOW_PRIVATE lets a listed range through
    const app = createApp({ db: stack.db.db, vault: stack.vault, temporal: stack.temporal, taskQueue: stack.taskQueue, capabilities: RUNTIME_CAPABILITIES, sandboxKind: stack.sandboxKind, egress: createEgressGuard({ allowPrivate: ['10.20.0.0/16'] }) });
    const post = (host: string) =>
      app.request('/v1/environments', { method: 'POST', headers: { authorization: `Bearer ${stack.adminKey}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'x', config: limited([host]) }) });
    expect((await post('10.20.0.5')).status).toBe(200);
    expect((await post('10.21.0.5')).status).toBe(400);
  });

  it("another team's key cannot read, change, list or start a session in an environment: 404, and nothing is written", async () => {
    const env = await createEnvironment({ name: 'ours', config: limited(['example.com']) });
    const before = await environmentRow(env.id);
    const theirs = await stack.key('admin', 'other');
    expect((await stack.call('GET', `/v1/environments/${env.id}`, undefined, theirs)).status).toBe(404);
    const widen = await stack.call('POST', `/v1/environments/${env.id}`, { config: { type: 'cloud', networking: { type: 'unrestricted' } } }, theirs);
    expect(widen.status).toBe(404);
    expect(widen.body.code).toBe('resource.not_found');
    // what the route judges once it has the environment (an address the platform refuses) is not judged for them
    expect((await stack.call('POST', `/v1/environments/${env.id}`, { config: limited(['127.0.0.1']) }, theirs)).status).toBe(404);
    expect((await stack.call('GET', '/v1/environments?limit=1000', undefined, theirs)).body.data.map((e: any) => e.id)).not.toContain(env.id);
    const agent = await stack.call('POST', '/v1/agents', { name: 'theirs', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' } }, theirs);
    expect((await stack.call('POST', '/v1/sessions', { agent: agent.body.id, environment_id: env.id }, theirs)).status).toBe(404);
    expect(await environmentRow(env.id)).toEqual(before);
    expect((await auditRows(env.id)).map((r) => r.action)).toEqual(['environment.create']);
  });

  it("a viewer, approver or service key cannot open an environment's network: 403, and the policy stays", async () => {
    const env = await createEnvironment({ name: 'narrow', config: limited(['example.com']) });
    const before = await environmentRow(env.id);
    for (const role of ['viewer', 'approver', 'service'] as const) {
      const key = await stack.key(role);
      expect((await stack.call('GET', `/v1/environments/${env.id}`, undefined, key)).status, role).toBe(can(role, 'environments:read') ? 200 : 403);
      const res = await stack.call('POST', `/v1/environments/${env.id}`, { config: { type: 'cloud', networking: { type: 'unrestricted' } } }, key);
      expect(res.status, role).toBe(403);
      expect(res.body.detail).toContain('environments:write');
    }
    expect(await environmentRow(env.id)).toEqual(before);
  });
});

describe("a session's network policy reaches its turns", () => {
  async function agentId() {
    const res = await stack.call('POST', '/v1/agents', { name: 'net', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' } });
    expect(res.status).toBe(200);
    return res.body.id as string;
  }
  async function turn(sessionId: string, text: string, count: number) {
    expect((await stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.message', content: text }] })).status).toBe(200);
    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
    await expect.poll(() => seen.get(sessionId)?.length ?? 0).toBe(count);
  }

  it('a narrowed environment applies to a running session from its next turn, without a restart', async () => {
    const env = await createEnvironment({ name: 'live', config: limited(['example.com']) });
    const session = await stack.call('POST', '/v1/sessions', { agent: await agentId(), environment_id: env.id });
    expect(session.status).toBe(200);
    await turn(session.body.id, 'say one', 1);
    expect(seen.get(session.body.id)).toEqual([{ type: 'limited', allowed_hosts: ['example.com'], allow_package_managers: false, allow_mcp_servers: false }]);

    expect((await stack.call('POST', `/v1/environments/${env.id}`, { config: limited(['api.example.com']) })).status).toBe(200);
    await turn(session.body.id, 'say two', 2);
    expect(seen.get(session.body.id)![1]).toEqual({ type: 'limited', allowed_hosts: ['api.example.com'], allow_package_managers: false, allow_mcp_servers: false });
  });

  it('a session without an environment runs in the default one: unrestricted (still inside the address rule)', async () => {
    const session = await stack.call('POST', '/v1/sessions', { agent: await agentId(), initial_events: [{ type: 'user.message', content: 'say hi' }] });
    await waitForStatus(stack, session.body.id, 'idle', 'end_turn');
    await expect.poll(() => seen.get(session.body.id)).toEqual([{ type: 'unrestricted' }]);
  });

  it('a session whose environment holds a policy that does not read (saved before it was checked) runs with no network, not all of it', async () => {
    const env = await createEnvironment({ name: 'legacy' });
    // what POST /v1/environments accepted before its config was checked
    await stack.db.db.execute(sql`update environments set config = ${JSON.stringify({ type: 'local', networking: { type: 'limited', allowed_hosts: 'everything' } })}::jsonb where id = ${env.id}`);
    const session = await stack.call('POST', '/v1/sessions', { agent: await agentId(), environment_id: env.id, initial_events: [{ type: 'user.message', content: 'say hi' }] });
    await waitForStatus(stack, session.body.id, 'idle', 'end_turn');
    const none = { type: 'limited', allowed_hosts: [], allow_package_managers: false, allow_mcp_servers: false };
    await expect.poll(() => seen.get(session.body.id)).toEqual([none]);
    // the API shows the policy the worker enforces; an update replaces it
    expect((await stack.call('GET', `/v1/environments/${env.id}`)).body.config.networking).toEqual(none);
    // a config saved before networking existed ({type: "local"}) is the default
    await stack.db.db.execute(sql`update environments set config = '{"type": "local"}'::jsonb where id = ${env.id}`);
    expect((await stack.call('GET', `/v1/environments/${env.id}`)).body.config).toMatchObject({ type: 'cloud', networking: { type: 'unrestricted' } });
  });
});

describe('what a policy lets through (governance/networking.ts, for the egress proxy)', () => {
  it('a *.example.com entry lets names below example.com through, but not example.com itself nor a look-alike such as evilexample.com', () => {
    const policy: Networking = { type: 'limited', allowed_hosts: ['*.example.com', 'api.github.com', '203.0.113.7', '2001:db8::7'], allow_package_managers: false, allow_mcp_servers: false };
    for (const host of ['a.example.com', 'A.B.Example.COM.', 'api.github.com', '203.0.113.7', '[2001:db8::7]']) expect(allowsHost(policy, host), host).toBe(true);
    for (const host of ['example.com', 'evilexample.com', 'example.com.evil.net', 'github.com', 'x.api.github.com', '203.0.113.8', 'registry.npmjs.org']) expect(allowsHost(policy, host), host).toBe(false);
    expect(allowsHost({ ...policy, allow_package_managers: true }, 'registry.npmjs.org')).toBe(true);
    expect(allowsHost({ type: 'limited', allowed_hosts: [], allow_package_managers: false, allow_mcp_servers: false }, 'example.com')).toBe(false);
    expect(allowsHost({ type: 'unrestricted' }, 'example.com')).toBe(true);
  });
});
