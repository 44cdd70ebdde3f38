/**
 * The HTTP API route by route, on the real stack (Postgres, the shared Temporal dev server, a worker with the
 * scripted runtime): who may call what (walked from the OpenAPI document and governance/permissions.ts, so a new
 * route or role cannot be forgotten), authentication, validation, the agent lifecycle, the fleet query's
 * pagination, write-only credentials, the SSE stream's replay and Idempotency-Key.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openCredential } from '../db/queries/credentials';
import { getTeamPolicy } from '../db/queries/policies';
import { listPrices } from '../db/queries/pricing';
import { hashKey } from '../db/queries/teams';
import { can, type Permission } from '../governance/permissions';
import { ROLES, type Role } from '../governance/types';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { eventsOf, eventually, startStack, waitForStatus, type Stack } from './support/stack';

let stack: Stack;

type Team = 'own' | 'other';
const TEAMS: Team[] = ['own', 'other'];
const keys = { own: {}, other: {} } as Record<Team, Record<Role, string>>;

/** Resources of the stack's own team that the tables below point at; created once, left as they are. */
/** SSE responses still open: a failed test must not leave one behind */
const openStreams = new Set<{ close(): Promise<void> }>();

const fx = {
  agentId: '',
  environmentId: '',
  credentialId: '',
  credentialSecret: '',
  /** idle, no turn yet: read by the GET routes */
  sessionId: '',
  /** takes the user.message events of the access table */
  messageSessionId: '',
  /** parked in requires_action with one pending tool call that nobody decides */
  waitingSessionId: '',
  waitingToolUseId: '',
  /** a key of the own team that the revoke route points at; only fresh keys are actually revoked */
  keyId: '',
  /** the audit row of the fixture agent's creation */
  auditId: '',
  /** paused, on a cron that fires once in four years: nothing it does starts a session in this file */
  scheduleId: '',
};

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: createScriptedAdapter() } });
  for (const team of TEAMS) for (const role of ROLES) keys[team][role] = await stack.key(role, team);
  fx.agentId = await createAgent();
  fx.environmentId = (await stack.call('POST', '/v1/environments', { name: 'fixture environment' })).body.id;
  fx.credentialSecret = `sk-fixture-${Math.random().toString(36).slice(2)}`;
  fx.credentialId = (await stack.call('POST', '/v1/credentials', { name: 'fixture credential', secret: fx.credentialSecret })).body.id;
  fx.sessionId = await startSession(fx.agentId);
  fx.messageSessionId = await startSession(fx.agentId);
  const waiting = await waitingSession();
  fx.waitingSessionId = waiting.sessionId;
  fx.waitingToolUseId = waiting.toolUseId;
  fx.keyId = await keyIdOf(await stack.key('viewer'));
  fx.auditId = (await stack.db.db.execute(sql`select id from audit_log where target = ${fx.agentId} and action = 'agent.create'`) as unknown as { rows: Array<{ id: string }> }).rows[0]!.id;
  fx.scheduleId = await createSchedule(fx.agentId);
  for (const id of Object.values(fx)) expect(id).toBeTruthy();
});
afterAll(async () => {
  // an open SSE response would keep the server from closing
  for (const stream of [...openStreams]) await stream.close();
  await stack?.stop();
});

// ---- helpers --------------------------------------------------------------------------------------------------

/** A scripted agent: `write` asks a person, everything else runs; at most $5 a session. */
function agentDefinition(extra: Record<string, unknown> = {}) {
  return {
    name: 'api test agent',
    model: 'scripted',
    runtime: { type: 'scripted' },
    tool_policy: { rules: [{ tool: 'write', action: 'ask' }], default: 'allow' },
    budget: { max_cost_usd: 5 },
    ...extra,
  };
}

async function createAgent(extra: Record<string, unknown> = {}, key?: string): Promise<string> {
  const res = await stack.call('POST', '/v1/agents', agentDefinition(extra), key);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.id;
}

async function keyIdOf(plain: string): Promise<string> {
  const result = (await stack.db.db.execute(sql`select id from api_keys where hash = ${hashKey(plain)}`)) as unknown as { rows: Array<{ id: string }> };
  return result.rows[0]!.id;
}

/** JSON lines (the audit export) as the items they hold. */
const jsonLines = (res: { text: string }) => res.text.split('\n').filter((line) => line.length > 0).map((line) => JSON.parse(line));

/** Without initial events a scripted session just waits, idle: cheap. */
async function startSession(agent: string, text?: string, extra: Record<string, unknown> = {}): Promise<string> {
  const body = { agent, ...(text ? { initial_events: [{ type: 'user.message', content: text }] } : {}), ...extra };
  const res = await stack.call('POST', '/v1/sessions', body);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.id;
}

/** A session (started by the stack's admin key, not by any key of the tables) waiting for a decision on one tool call. */
async function waitingSession(): Promise<{ sessionId: string; toolUseId: string }> {
  const sessionId = await startSession(fx.agentId, `tool write /tmp/${Math.random().toString(36).slice(2)}.md\nsay written`);
  const session = await waitForStatus(stack, sessionId, 'requires_action');
  expect(session.pending_approvals).toHaveLength(1);
  return { sessionId, toolUseId: session.pending_approvals[0].tool_use_id };
}

interface Sent {
  status: number;
  contentType: string;
  text: string;
  body: any;
  headers: Headers;
}

/** fetch with the raw text kept; a stream answer is checked for its headers and then hung up on. */
async function send(
  method: string,
  path: string,
  opts: { key?: string | null; body?: unknown; rawBody?: string; headers?: Record<string, string>; auth?: 'bearer' | 'x-api-key' } = {},
): Promise<Sent> {
  const key = opts.key === undefined ? stack.adminKey : opts.key;
  const headers: Record<string, string> = { ...opts.headers };
  if (key !== null) {
    if (opts.auth === 'x-api-key') headers['x-api-key'] = key;
    else headers.authorization = `Bearer ${key}`;
  }
  const payload = opts.rawBody ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
  if (payload !== undefined && !Object.keys(headers).some((h) => h.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json';
  const controller = new AbortController();
  const res = await fetch(`${stack.url}${path}`, { method, headers, body: payload, signal: controller.signal });
  const contentType = res.headers.get('content-type') ?? '';
  if (contentType.startsWith('text/event-stream')) {
    controller.abort();
    return { status: res.status, contentType, text: '', body: null, headers: res.headers };
  }
  const text = await res.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: keep the text
  }
  return { status: res.status, contentType, text, body, headers: res.headers };
}

function expectProblem(res: Sent, status: number, code: string) {
  expect(res.status, res.text).toBe(status);
  expect(res.contentType).toBe('application/problem+json');
  expect(res.body).toMatchObject({ status, code, type: `https://agentplane.dev/problems/${code}`, error: { type: code } });
  expect(res.body.title).toEqual(expect.any(String));
  expect(res.body.detail).toEqual(expect.any(String));
  expect(res.body.request_id).toBe(res.headers.get('x-request-id'));
}

/** Everything a refused request could have written: rows the API inserts, and the flags it sets. */
interface Writes {
  agents: number;
  archived_agents: number;
  agent_versions: number;
  environments: number;
  /** an update moves an environment's updated_at */
  environments_updated: string | null;
  credentials: number;
  /** the sum of every credential's secret_version: a rotation adds one */
  credential_secret_versions: number;
  revoked_credentials: number;
  sessions: number;
  archived_sessions: number;
  audit_rows: number;
  teams: number;
  api_keys: number;
  revoked_keys: number;
  webhooks: number;
  disabled_webhooks: number;
  /** budgets, price overrides and team rules are upserted: their newest updated_at moves on an update in place */
  budgets: number;
  budgets_updated: string | null;
  model_prices: number;
  model_prices_updated: string | null;
  team_policies: number;
  team_policies_updated: string | null;
  /** the sum of every team's policy revision: every policy change (team rules or an agent's) bumps its team's */
  policy_revisions: number;
  schedules: number;
  /** an update, pause or delete moves a schedule's updated_at */
  schedules_updated: string | null;
}

async function writes(): Promise<Writes> {
  const result = (await stack.db.db.execute(sql`
    select
      (select count(*) from agents) as agents,
      (select count(*) from agents where archived_at is not null) as archived_agents,
      (select count(*) from agent_versions) as agent_versions,
      (select count(*) from environments) as environments,
      (select max(updated_at)::text from environments) as environments_updated,
      (select count(*) from credentials) as credentials,
      (select coalesce(sum(secret_version), 0) from credentials) as credential_secret_versions,
      (select count(*) from credentials where revoked_at is not null) as revoked_credentials,
      (select count(*) from sessions) as sessions,
      (select count(*) from sessions where archived_at is not null) as archived_sessions,
      (select count(*) from audit_log where action not like 'tool.%') as audit_rows,
      (select count(*) from teams) as teams,
      (select count(*) from api_keys) as api_keys,
      (select count(*) from api_keys where revoked_at is not null) as revoked_keys,
      (select count(*) from webhooks) as webhooks,
      (select count(*) from webhooks where disabled_at is not null) as disabled_webhooks,
      (select count(*) from budgets) as budgets,
      (select max(updated_at)::text from budgets) as budgets_updated,
      (select count(*) from model_prices) as model_prices,
      (select max(updated_at)::text from model_prices) as model_prices_updated,
      (select count(*) from team_policies) as team_policies,
      (select max(updated_at)::text from team_policies) as team_policies_updated,
      (select coalesce(sum(policy_revision), 0) from teams) as policy_revisions,
      (select count(*) from schedules) as schedules,
      (select max(updated_at)::text from schedules) as schedules_updated
  `)) as unknown as { rows: Writes[] };
  return result.rows[0]!;
}

async function ownIds(table: 'agents' | 'environments' | 'credentials' | 'sessions' | 'api_keys' | 'audit_log' | 'webhooks' | 'budgets' | 'schedules'): Promise<Set<string>> {
  const result = (await stack.db.db.execute(sql`select id from ${sql.identifier(table)} where team_id = ${stack.teamId}`)) as unknown as { rows: Array<{ id: string }> };
  return new Set(result.rows.map((r) => r.id));
}

async function teamOf(table: 'agents' | 'environments' | 'credentials' | 'api_keys' | 'teams' | 'webhooks' | 'budgets', id: string): Promise<string | undefined> {
  // a team is its own team
  const column = sql.identifier(table === 'teams' ? 'id' : 'team_id');
  const result = (await stack.db.db.execute(sql`select ${column} as team_id from ${sql.identifier(table)} where id = ${id}`)) as unknown as { rows: Array<{ team_id: string }> };
  return result.rows[0]?.team_id;
}

async function approvalStatus(sessionId: string, toolUseId: string): Promise<string | undefined> {
  const result = (await stack.db.db.execute(sql`select status from approvals where session_id = ${sessionId} and tool_use_id = ${toolUseId}`)) as unknown as {
    rows: Array<{ status: string }>;
  };
  return result.rows[0]?.status;
}

interface OpenApiDoc {
  paths: Record<string, Record<string, { parameters?: Array<{ in: string; name: string }>; requestBody?: unknown }>>;
}

async function openApiRoutes(): Promise<Array<{ route: string; method: string; path: string; params: Array<{ in: string; name: string }>; hasBody: boolean }>> {
  const res = await send('GET', '/openapi.json', { key: null });
  expect(res.status).toBe(200);
  const doc = res.body as OpenApiDoc;
  return Object.entries(doc.paths).flatMap(([path, ops]) =>
    Object.entries(ops).map(([method, op]) => ({
      route: `${method.toUpperCase()} ${path}`,
      method: method.toUpperCase(),
      path,
      params: op.parameters ?? [],
      hasBody: op.requestBody !== undefined,
    })),
  );
}

// ---- the access table -----------------------------------------------------------------------------------------

interface Call {
  path: string;
  body?: unknown;
  headers?: Record<string, string>;
}

interface AccessCase {
  /** what the call is, when a route has more than one permission */
  label?: string;
  /**
   * null: any valid key may call it. Several: the call needs all of them — the route's own (first, checked before the
   * body is read) and what this body asks for on top (checked by the handler: after the resource is found, so another
   * team's key that holds the route's permission gets the 404 of `not_found` first).
   */
  permission: Permission | [Permission, ...Permission[]] | null;
  /**
   * The request, against the own team's resources. `fresh` is set for an allowed call of an own-team key: the
   * call will succeed, so it gets resources of its own to use up (archive, decide).
   */
  request(fresh: boolean): Promise<Call>;
  /**
   * What an allowed key of another team gets: `not_found` — the call names an own-team resource, which does not
   * exist for it; `list` — a list without any own-team resource; `created` — the thing is made in its own team;
   * `answered` — the call names no resource, so it answers for the caller's own team (`check` says how).
   */
  otherTeam: 'not_found' | 'list' | 'created' | 'answered';
  /**
   * for `list`: how to name an item, the own-team item an own-team key must see, and every own-team item;
   * `items` reads an answer that is not `{ data }`
   */
  list?: { itemId(item: any): string; reference(): string; own(): Promise<Set<string>>; emptyForOtherTeam: boolean; items?(res: Sent): any[] };
  /** for `created`: the table the new row lands in */
  table?: 'agents' | 'environments' | 'credentials' | 'api_keys' | 'teams' | 'webhooks' | 'budgets';
  /** more checks on an allowed own-team answer (and, for `answered`, on another team's) */
  check?(res: Sent, team: Team): Promise<void> | void;
}

const byId = (item: { id: string }) => item.id;

/** A webhook of the own team (nobody listens at its URL: nothing is sent in this file). */
async function createWebhook(): Promise<string> {
  const res = await send('POST', '/v1/webhooks', { body: { url: 'http://203.0.113.10:9/access-table' } });
  expect(res.status, res.text).toBe(200);
  return res.body.id;
}
/** the webhook the tables read, made on first use; never deleted (a deleting call that may succeed gets a fresh one) */
let fixtureWebhookId = '';
async function webhookId(): Promise<string> {
  fixtureWebhookId ||= await createWebhook();
  return fixtureWebhookId;
}

/** Made on first use and kept: a promise, so that concurrent first uses (the authentication walk) share one. */
function once<T>(make: () => Promise<T>): () => Promise<T> {
  let made: Promise<T> | undefined;
  return () => (made ??= make());
}

async function createBudget(body: Record<string, unknown>): Promise<string> {
  const res = await send('POST', '/v1/budgets', { body });
  expect(res.status, res.text).toBe(200);
  return res.body.id;
}
/**
 * The agent the own team's budgets are set on. It never runs: a team budget, or one on an agent that runs, would
 * hold money on the turns of this file's sessions.
 */
const budgetAgentId = once(() => createAgent({ name: 'budgeted, never run' }));
/** the budget the tables read; never deleted (a deleting call that may succeed gets a budget of its own) */
let fixtureBudgetId = '';
const budgetId = once(async () => (fixtureBudgetId = await createBudget({ scope: 'agent', agent_id: await budgetAgentId(), period: 'day', limit_usd: 10 })));

/** The first of February 29: a schedule on it fires nothing while this file runs. */
const LEAP_DAY_CRON = '0 0 29 2 *';
/** A paused schedule of the own team on the given agent. */
async function createSchedule(agentId: string): Promise<string> {
  const res = await send('POST', '/v1/schedules', { body: { agent: agentId, prompt: 'say scheduled', spec: { cron: [LEAP_DAY_CRON] }, paused: true } });
  expect(res.status, res.text).toBe(200);
  return res.body.id;
}
/**
 * A schedule whose agent was archived after it was made: a run it fires fails before it writes a session, so a
 * trigger that succeeds leaves no session appearing later, under another role's check that nothing was written.
 */
async function inertSchedule(): Promise<string> {
  const agentId = await createAgent({ name: 'scheduled, then archived' });
  const scheduleId = await createSchedule(agentId);
  expect((await send('POST', `/v1/agents/${agentId}/archive`)).status).toBe(200);
  return scheduleId;
}

/** A credential of the own team, for a call that rotates or revokes it. */
async function createCredential(): Promise<string> {
  const res = await send('POST', '/v1/credentials', { body: { name: 'used up by the access table', secret: `sk-${Math.random().toString(36).slice(2)}` } });
  expect(res.status, res.text).toBe(200);
  return res.body.id;
}
const ROTATED_SECRET = `sk-rotated-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;

/** Spend in the own team's ledger: one turn with a reported cost. Returns the session it was spent in. */
const ownSpend = once(async () => {
  const sessionId = await startSession(fx.agentId, 'cost 0.01');
  await waitForStatus(stack, sessionId, 'idle', 'end_turn');
  await eventually(
    async () => {
      const result = (await stack.db.db.execute(sql`select count(*)::int as n from ledger where session_id = ${sessionId}`)) as unknown as { rows: Array<{ n: number }> };
      return result.rows[0]!.n > 0 ? true : undefined;
    },
    { what: 'the turn to reach the ledger' },
  );
  return sessionId;
});

/** A price override of the own team, for the model nobody else names. */
const FIXTURE_MODEL = 'access-table-fixture-model';
const ownPriceOverride = once(async () => {
  const res = await send('PUT', `/v1/pricing/${FIXTURE_MODEL}`, { body: { input: 1, output: 2 } });
  expect(res.status, res.text).toBe(200);
});
const ownOverrides = async () => Object.fromEntries((await listPrices(stack.db.db, { teamId: stack.teamId })).map((o) => [o.model, o.price]));

/**
 * Team deny rules for the own team, when it has none yet. They name a tool nobody calls in this file with a pattern
 * nothing matches: the file's sessions run as if there were none.
 */
async function ownTeamRules() {
  const current = await getTeamPolicy(stack.db.db, stack.teamId);
  if (current.rules.length > 0) return current;
  const res = await send('PUT', '/v1/policies/team', { body: { rules: [{ tool: 'web_fetch', pattern: 'https://fixture.invalid/*' }] } });
  expect(res.status, res.text).toBe(200);
  return getTeamPolicy(stack.db.db, stack.teamId);
}
/** rules that are unique to one call, so that whose they are can be told */
const markedRules = () => [{ tool: 'web_fetch', pattern: `https://${Math.random().toString(36).slice(2)}.invalid/*` }];

/** A policy unlike the fixtures' own, so that sending it is a change. */
const LOOSER_POLICY = { rules: [{ tool: 'bash', action: 'allow' }], default: 'allow' };

const ACCESS: Record<string, AccessCase[]> = {
  'POST /v1/agents': [
    {
      label: 'no policy fields',
      permission: 'agents:write',
      // without a tool_policy: the default one (ask for everything), which agents:write alone may make
      request: async () => ({ path: '/v1/agents', body: agentDefinition({ name: 'made by the access table', tool_policy: undefined }) }),
      otherTeam: 'created',
      table: 'agents',
      check: (res) => expect(res.body).toMatchObject({ type: 'agent', version: 1, name: 'made by the access table', tool_policy: { rules: [], default: 'ask' } }),
    },
    {
      label: 'a tool_policy',
      permission: ['agents:write', 'policies:write'],
      request: async () => ({ path: '/v1/agents', body: agentDefinition({ name: 'made with a policy by the access table', tool_policy: LOOSER_POLICY }) }),
      otherTeam: 'created',
      table: 'agents',
      check: (res) => expect(res.body).toMatchObject({ type: 'agent', version: 1, tool_policy: LOOSER_POLICY }),
    },
    {
      label: 'separation_of_duties',
      permission: ['agents:write', 'policies:write'],
      request: async () => ({ path: '/v1/agents', body: agentDefinition({ name: 'made strict by the access table', approvals: { separation_of_duties: true } }) }),
      otherTeam: 'created',
      table: 'agents',
      check: (res) => expect(res.body).toMatchObject({ type: 'agent', version: 1, approvals: { separation_of_duties: true } }),
    },
  ],
  'GET /v1/agents': [
    {
      permission: 'agents:read',
      request: async () => ({ path: '/v1/agents?limit=1000' }),
      otherTeam: 'list',
      list: { itemId: byId, reference: () => fx.agentId, own: () => ownIds('agents'), emptyForOtherTeam: false },
    },
  ],
  'GET /v1/agents/{agent_id}': [
    {
      permission: 'agents:read',
      request: async () => ({ path: `/v1/agents/${fx.agentId}` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body.id).toBe(fx.agentId),
    },
  ],
  'POST /v1/agents/{agent_id}': [
    {
      label: 'no policy fields',
      permission: 'agents:write',
      request: async (fresh) => ({ path: `/v1/agents/${fresh ? await createAgent() : fx.agentId}`, body: { description: 'changed by the access table' } }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toMatchObject({ version: 2, description: 'changed by the access table' }),
    },
    {
      label: 'the tool_policy changed',
      permission: ['agents:write', 'policies:write'],
      request: async (fresh) => ({ path: `/v1/agents/${fresh ? await createAgent() : fx.agentId}`, body: { tool_policy: LOOSER_POLICY } }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toMatchObject({ version: 2, tool_policy: LOOSER_POLICY }),
    },
    {
      label: 'separation_of_duties changed',
      permission: ['agents:write', 'policies:write'],
      request: async (fresh) => ({ path: `/v1/agents/${fresh ? await createAgent() : fx.agentId}`, body: { approvals: { separation_of_duties: true } } }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toMatchObject({ version: 2, approvals: { separation_of_duties: true } }),
    },
  ],
  'POST /v1/agents/{agent_id}/archive': [
    {
      permission: 'agents:write',
      request: async (fresh) => ({ path: `/v1/agents/${fresh ? await createAgent() : fx.agentId}/archive` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body.archived_at).toEqual(expect.any(String)),
    },
  ],
  'GET /v1/agents/{agent_id}/versions': [
    {
      permission: 'agents:read',
      request: async () => ({ path: `/v1/agents/${fx.agentId}/versions` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body.data.map((v: any) => v.version)).toEqual([1]),
    },
  ],
  'POST /v1/environments': [
    {
      permission: 'environments:write',
      request: async () => ({ path: '/v1/environments', body: { name: 'made by the access table' } }),
      otherTeam: 'created',
      table: 'environments',
      check: (res) => expect(res.body).toMatchObject({ type: 'environment', name: 'made by the access table' }),
    },
  ],
  'GET /v1/environments': [
    {
      permission: 'environments:read',
      request: async () => ({ path: '/v1/environments?limit=1000' }),
      otherTeam: 'list',
      list: { itemId: byId, reference: () => fx.environmentId, own: () => ownIds('environments'), emptyForOtherTeam: false },
    },
  ],
  'GET /v1/environments/{environment_id}': [
    {
      permission: 'environments:read',
      request: async () => ({ path: `/v1/environments/${fx.environmentId}` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toMatchObject({ id: fx.environmentId, type: 'environment', config: { type: 'cloud', networking: { type: 'unrestricted' } } }),
    },
  ],
  'POST /v1/environments/{environment_id}': [
    {
      permission: 'environments:write',
      // a policy of its own for every call: whose change it is can be told
      request: async () => ({ path: `/v1/environments/${fx.environmentId}`, body: { config: { type: 'cloud', networking: { type: 'limited', allowed_hosts: [`${Math.random().toString(36).slice(2)}.example.com`] } } } }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toMatchObject({ id: fx.environmentId, config: { networking: { type: 'limited', allowed_hosts: [expect.stringMatching(/\.example\.com$/)] } } }),
    },
  ],
  'POST /v1/credentials': [
    {
      permission: 'credentials:write',
      request: async () => ({ path: '/v1/credentials', body: { name: 'made by the access table', secret: 'sk-access-table' } }),
      otherTeam: 'created',
      table: 'credentials',
      check: (res) => expect(res.text).not.toContain('sk-access-table'),
    },
  ],
  'GET /v1/credentials': [
    {
      permission: 'credentials:read',
      request: async () => ({ path: '/v1/credentials?limit=1000' }),
      otherTeam: 'list',
      list: { itemId: byId, reference: () => fx.credentialId, own: () => ownIds('credentials'), emptyForOtherTeam: false },
    },
  ],
  'GET /v1/credentials/{credential_id}': [
    {
      permission: 'credentials:read',
      request: async () => ({ path: `/v1/credentials/${fx.credentialId}` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body.id).toBe(fx.credentialId),
    },
  ],
  'POST /v1/credentials/{credential_id}/rotate': [
    {
      permission: 'credentials:write',
      request: async (fresh) => ({ path: `/v1/credentials/${fresh ? await createCredential() : fx.credentialId}/rotate`, body: { secret: ROTATED_SECRET } }),
      otherTeam: 'not_found',
      check: async (res) => {
        expect(res.body).toMatchObject({ type: 'credential', secret_version: 2, rotated_at: expect.any(String), revoked_at: null });
        expect(res.text).not.toContain(ROTATED_SECRET);
        expect(res.text).not.toContain(ROTATED_SECRET.slice(10));
        // the next turn opens the new secret
        expect(await openCredential(stack.db.db, stack.vault, { teamId: stack.teamId, credentialId: res.body.id })).toBe(ROTATED_SECRET);
      },
    },
  ],
  'POST /v1/credentials/{credential_id}/revoke': [
    {
      permission: 'credentials:write',
      request: async (fresh) => ({ path: `/v1/credentials/${fresh ? await createCredential() : fx.credentialId}/revoke` }),
      otherTeam: 'not_found',
      check: async (res) => {
        expect(res.body).toMatchObject({ type: 'credential', revoked_at: expect.any(String) });
        await expect(openCredential(stack.db.db, stack.vault, { teamId: stack.teamId, credentialId: res.body.id })).rejects.toThrow(res.body.id);
      },
    },
  ],
  'POST /v1/credentials/rewrap': [
    {
      permission: 'keys:admin',
      request: async () => ({ path: '/v1/credentials/rewrap' }),
      otherTeam: 'answered',
      // the stack has one master key: nothing is sealed under an older one
      check: (res) => expect(res.body).toEqual({ rewrapped: 0, master_key_id: stack.vault.currentKeyId }),
    },
  ],
  'POST /v1/sessions': [
    {
      permission: 'sessions:write',
      request: async () => ({ path: '/v1/sessions', body: { agent: fx.agentId, title: 'started by the access table' } }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toMatchObject({ type: 'session', agent: { id: fx.agentId }, title: 'started by the access table' }),
    },
  ],
  'GET /v1/sessions': [
    {
      permission: 'sessions:read',
      request: async () => ({ path: '/v1/sessions?limit=1000' }),
      otherTeam: 'list',
      list: { itemId: byId, reference: () => fx.sessionId, own: () => ownIds('sessions'), emptyForOtherTeam: true },
    },
  ],
  'GET /v1/sessions/{session_id}': [
    {
      permission: 'sessions:read',
      request: async () => ({ path: `/v1/sessions/${fx.sessionId}` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body.id).toBe(fx.sessionId),
    },
  ],
  'POST /v1/sessions/{session_id}/archive': [
    {
      permission: 'sessions:write',
      request: async (fresh) => ({ path: `/v1/sessions/${fresh ? await startSession(fx.agentId) : fx.sessionId}/archive` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body.archived_at).toEqual(expect.any(String)),
    },
  ],
  'POST /v1/sessions/{session_id}/events': [
    {
      label: 'user.message',
      permission: 'sessions:write',
      request: async () => ({ path: `/v1/sessions/${fx.messageSessionId}/events`, body: { events: [{ type: 'user.message', content: 'say ok' }] } }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body.data).toMatchObject([{ type: 'user.message', id: expect.stringMatching(/^sevt_/) }]),
    },
    {
      label: 'user.interrupt',
      permission: 'sessions:write',
      request: async () => ({ path: `/v1/sessions/${fx.messageSessionId}/events`, body: { events: [{ type: 'user.interrupt' }] } }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body.data).toMatchObject([{ type: 'user.interrupt' }]),
    },
    {
      label: 'user.tool_confirmation',
      permission: 'approvals:decide',
      request: async (fresh) => {
        const target = fresh ? await waitingSession() : { sessionId: fx.waitingSessionId, toolUseId: fx.waitingToolUseId };
        return { path: `/v1/sessions/${target.sessionId}/events`, body: { events: [{ type: 'user.tool_confirmation', tool_use_id: target.toolUseId, result: 'allow' }] } };
      },
      otherTeam: 'not_found',
      check: (res) => expect(res.body.data).toMatchObject([{ type: 'user.tool_confirmation', result: 'allow' }]),
    },
  ],
  'GET /v1/sessions/{session_id}/events': [
    {
      permission: 'sessions:read',
      request: async () => ({ path: `/v1/sessions/${fx.waitingSessionId}/events` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body.data.map((e: any) => e.type)).toContain('agent.tool_use'),
    },
  ],
  'GET /v1/sessions/{session_id}/events/stream': [
    {
      permission: 'sessions:read',
      request: async () => ({ path: `/v1/sessions/${fx.sessionId}/events/stream` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.contentType).toMatch(/^text\/event-stream/),
    },
  ],
  'GET /v1/approvals': [
    {
      permission: 'approvals:read',
      request: async () => ({ path: '/v1/approvals?limit=1000' }),
      otherTeam: 'list',
      list: {
        itemId: (a) => `${a.session_id}/${a.tool_use_id}`,
        reference: () => `${fx.waitingSessionId}/${fx.waitingToolUseId}`,
        own: async () => {
          const result = (await stack.db.db.execute(sql`select session_id, tool_use_id from approvals where team_id = ${stack.teamId}`)) as unknown as {
            rows: Array<{ session_id: string; tool_use_id: string }>;
          };
          return new Set(result.rows.map((r) => `${r.session_id}/${r.tool_use_id}`));
        },
        emptyForOtherTeam: true,
      },
    },
  ],
  'POST /v1/keys': [
    {
      label: 'a viewer key',
      permission: 'keys:admin',
      request: async () => ({ path: '/v1/keys', body: { name: 'made by the access table', role: 'viewer' } }),
      otherTeam: 'created',
      table: 'api_keys',
      check: async (res) => {
        expect(res.body).toMatchObject({ type: 'api_key', name: 'made by the access table', role: 'viewer', revoked_at: null, key: expect.stringMatching(/^ap_/) });
        expect(res.body.key.startsWith(res.body.prefix)).toBe(true);
        expect(res.text).not.toContain(hashKey(res.body.key));
        // the new key works, in its team, with its role
        expect((await send('GET', '/v1/agents', { key: res.body.key })).status).toBe(200);
        expectProblem(await send('POST', '/v1/environments', { key: res.body.key, body: { name: 'nope' } }), 403, 'auth.forbidden');
      },
    },
    {
      label: 'a platform_admin key',
      // a key mints no role stronger than its own: this one needs every permission of platform_admin
      permission: ['keys:admin', 'teams:create', 'audit:verify_full'],
      request: async () => ({ path: '/v1/keys', body: { name: 'platform key made by the access table', role: 'platform_admin' } }),
      otherTeam: 'created',
      table: 'api_keys',
      check: (res) => expect(res.body).toMatchObject({ type: 'api_key', role: 'platform_admin', key: expect.stringMatching(/^ap_/) }),
    },
  ],
  'GET /v1/keys': [
    {
      permission: 'keys:admin',
      request: async () => ({ path: '/v1/keys?limit=1000' }),
      otherTeam: 'list',
      list: { itemId: byId, reference: () => fx.keyId, own: () => ownIds('api_keys'), emptyForOtherTeam: false },
      check: (res) => {
        for (const key of res.body.data) expect(Object.keys(key).sort()).toEqual(['created_at', 'id', 'name', 'prefix', 'revoked_at', 'role', 'type']);
      },
    },
  ],
  'POST /v1/keys/{key_id}/revoke': [
    {
      permission: 'keys:admin',
      request: async (fresh) => ({ path: `/v1/keys/${fresh ? await keyIdOf(await stack.key('developer')) : fx.keyId}/revoke` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toMatchObject({ type: 'api_key', role: 'developer', revoked_at: expect.any(String) }),
    },
  ],
  'GET /v1/runtimes': [
    {
      permission: null,
      request: async () => ({ path: '/v1/runtimes' }),
      otherTeam: 'answered',
      check: (res) => expect(res.body.data.map((r: { type: string }) => r.type)).toEqual(expect.arrayContaining(['opencode', 'claude-code', 'managed-agents', 'scripted'])),
    },
  ],
  'GET /v1/teams/current': [
    {
      permission: null,
      request: async () => ({ path: '/v1/teams/current' }),
      otherTeam: 'answered',
      check: (res, team) => {
        expect(res.body).toMatchObject({ type: 'team', id: expect.stringMatching(/^team_/) });
        if (team === 'own') expect(res.body).toMatchObject({ id: stack.teamId, name: 'acme' });
        else expect(res.body.id).not.toBe(stack.teamId);
      },
    },
  ],
  'POST /v1/teams': [
    {
      permission: 'teams:create',
      request: async () => ({ path: '/v1/teams', body: { name: `made by the access table ${Math.random().toString(36).slice(2)}` } }),
      otherTeam: 'created',
      table: 'teams',
      check: (res) => {
        expect(res.body).toMatchObject({ type: 'team', id: expect.stringMatching(/^team_/), admin_key: { type: 'api_key', role: 'admin', key: expect.stringMatching(/^ap_/) } });
      },
    },
  ],
  'GET /v1/audit': [
    {
      permission: 'audit:read',
      request: async () => ({ path: '/v1/audit?limit=1000' }),
      otherTeam: 'list',
      list: { itemId: byId, reference: () => fx.auditId, own: () => ownIds('audit_log'), emptyForOtherTeam: false },
    },
  ],
  'GET /v1/audit/export': [
    {
      permission: 'audit:read',
      request: async () => ({ path: '/v1/audit/export' }),
      otherTeam: 'list',
      list: { itemId: byId, reference: () => fx.auditId, own: () => ownIds('audit_log'), emptyForOtherTeam: false, items: jsonLines },
      check: (res) => expect(res.contentType).toBe('application/x-ndjson'),
    },
  ],
  'GET /v1/audit/verify': [
    {
      label: 'from the last checkpoint',
      permission: 'audit:read',
      request: async () => ({ path: '/v1/audit/verify' }),
      otherTeam: 'answered',
      check: (res) => expect(res.body).toMatchObject({ ok: true, from: 'checkpoint', rows: expect.any(Number) }),
    },
    {
      label: 'from=start: the whole chain, every team\'s rows',
      permission: 'audit:verify_full',
      request: async () => ({ path: '/v1/audit/verify?from=start' }),
      otherTeam: 'answered',
      check: (res) => expect(res.body).toMatchObject({ ok: true, from: 'start', rows: expect.any(Number) }),
    },
  ],
  'POST /v1/webhooks': [
    {
      permission: 'webhooks:admin',
      request: async () => ({ path: '/v1/webhooks', body: { url: 'http://203.0.113.10:9/made-by-the-access-table', events: ['approval.requested'] } }),
      otherTeam: 'created',
      table: 'webhooks',
      check: (res) => expect(res.body).toMatchObject({ type: 'webhook', events: ['approval.requested'], disabled_at: null, secret: expect.stringMatching(/^whsec_/) }),
    },
  ],
  'GET /v1/webhooks': [
    {
      permission: 'webhooks:admin',
      request: async () => {
        await webhookId();
        return { path: '/v1/webhooks?limit=1000' };
      },
      otherTeam: 'list',
      list: { itemId: byId, reference: () => fixtureWebhookId, own: () => ownIds('webhooks'), emptyForOtherTeam: false },
      check: (res) => {
        for (const hook of res.body.data) expect(Object.keys(hook).sort()).toEqual(['created_at', 'disabled_at', 'events', 'id', 'type', 'url']);
      },
    },
  ],
  'DELETE /v1/webhooks/{webhook_id}': [
    {
      permission: 'webhooks:admin',
      request: async (fresh) => ({ path: `/v1/webhooks/${fresh ? await createWebhook() : await webhookId()}` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toMatchObject({ type: 'webhook', disabled_at: expect.any(String) }),
    },
  ],
  'GET /v1/webhooks/{webhook_id}/deliveries': [
    {
      permission: 'webhooks:admin',
      request: async () => ({ path: `/v1/webhooks/${await webhookId()}/deliveries` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toMatchObject({ data: expect.any(Array), next_page: null }),
    },
  ],
  'POST /v1/budgets': [
    {
      permission: 'budgets:write',
      // an own-team call that succeeds budgets the agent that never runs; any other call (refused, or another
      // team's, which lands in its own team) sets a team budget
      request: async (fresh) => ({
        path: '/v1/budgets',
        body: fresh
          ? { scope: 'agent', agent_id: await budgetAgentId(), period: 'month', limit_usd: 25, thresholds: [80, 50, 80] }
          : { scope: 'team', period: 'total', limit_usd: 1000, thresholds: [80, 50, 80] },
      }),
      otherTeam: 'created',
      table: 'budgets',
      check: async (res) => {
        expect(res.body).toEqual({
          id: expect.stringMatching(/^bud_/),
          type: 'budget',
          scope: 'agent',
          agent_id: await budgetAgentId(),
          period: 'month',
          limit_usd: 25,
          thresholds: [50, 80],
          current: { period_start: expect.any(String), spent_usd: 0, reserved_usd: 0, remaining_usd: 25 },
        });
        expect(Date.parse(res.body.current.period_start)).toBeLessThanOrEqual(Date.now());
      },
    },
  ],
  'GET /v1/budgets': [
    {
      permission: 'budgets:read',
      request: async () => {
        await budgetId();
        return { path: '/v1/budgets' };
      },
      otherTeam: 'list',
      list: { itemId: byId, reference: () => fixtureBudgetId, own: () => ownIds('budgets'), emptyForOtherTeam: false },
      check: (res) => {
        expect(res.body.next_page).toBeNull();
        for (const budget of res.body.data) expect(budget).toMatchObject({ type: 'budget', current: { spent_usd: expect.any(Number) } });
      },
    },
  ],
  'DELETE /v1/budgets/{budget_id}': [
    {
      permission: 'budgets:write',
      request: async (fresh) => ({
        path: `/v1/budgets/${fresh ? await createBudget({ scope: 'agent', agent_id: await createAgent({ name: 'budgeted, then not' }), period: 'total', limit_usd: 1 }) : await budgetId()}`,
      }),
      otherTeam: 'not_found',
      check: async (res) => {
        expect(res.body).toEqual({ id: expect.stringMatching(/^bud_/), deleted: true });
        expect(await teamOf('budgets', res.body.id)).toBeUndefined();
      },
    },
  ],
  'GET /v1/usage': [
    {
      permission: 'budgets:read',
      request: async () => {
        await ownSpend();
        return { path: '/v1/usage?group_by=team' };
      },
      otherTeam: 'answered',
      check: (res, team) => {
        expect(res.body).toMatchObject({ group_by: 'team', from: null, to: null });
        const keys = res.body.data.map((row: any) => row.key);
        if (team === 'own') {
          expect(keys).toEqual([stack.teamId]);
          expect(res.body.data[0]).toMatchObject({ day: null, cost_usd: expect.any(Number), requests: expect.any(Number) });
          expect(res.body.data[0].cost_usd).toBeGreaterThanOrEqual(0.01);
        } else expect(keys).not.toContain(stack.teamId);
      },
    },
    {
      label: 'by session and day',
      permission: 'budgets:read',
      request: async () => {
        await ownSpend();
        return { path: `/v1/usage?group_by=session&bucket=day&from=${encodeURIComponent(new Date(Date.now() - 86_400_000).toISOString())}` };
      },
      otherTeam: 'answered',
      check: async (res, team) => {
        const keys = res.body.data.map((row: any) => row.key);
        if (team === 'own') {
          const spendSessionId = await ownSpend();
          const spent = res.body.data.find((row: any) => row.key === spendSessionId);
          expect(spent).toMatchObject({ day: expect.stringMatching(/^\d{4}-\d{2}-\d{2}$/), requests: 1 });
          expect(spent.cost_usd).toBeCloseTo(0.01, 6);
        } else {
          const own = await ownIds('sessions');
          expect(keys.filter((key: string) => own.has(key))).toEqual([]);
        }
      },
    },
  ],
  'GET /v1/pricing': [
    {
      permission: 'budgets:read',
      request: async () => {
        await ownPriceOverride();
        return { path: `/v1/pricing?model=${FIXTURE_MODEL}` };
      },
      otherTeam: 'answered',
      check: async (res, team) => {
        const own = await ownOverrides();
        expect(own[FIXTURE_MODEL]).toEqual({ input: 1, output: 2 });
        if (team === 'own') {
          expect(res.body.overrides).toEqual(own);
          expect(res.body.resolved).toEqual({ model: FIXTURE_MODEL, source: 'override', price: { input: 1, output: 2 }, catalogue: null });
        } else {
          expect(Object.keys(res.body.overrides).filter((model) => model in own)).toEqual([]);
          expect(res.body.resolved).toEqual({ model: FIXTURE_MODEL, source: 'none', price: null, catalogue: null });
        }
      },
    },
  ],
  'PUT /v1/pricing/{model}': [
    {
      permission: 'budgets:write',
      // a model of its own for every call: whose override it is can be told
      request: async () => ({ path: `/v1/pricing/access-table-${Math.random().toString(36).slice(2)}`, body: { input: 3, output: 15 } }),
      otherTeam: 'answered',
      check: async (res, team) => {
        expect(res.body).toEqual({ model: expect.stringMatching(/^access-table-/), price: { input: 3, output: 15 } });
        const own = await ownOverrides();
        if (team === 'own') expect(own[res.body.model]).toEqual({ input: 3, output: 15 });
        else expect(own).not.toHaveProperty([res.body.model]);
      },
    },
  ],
  'GET /v1/policies/team': [
    {
      permission: 'agents:read',
      request: async () => {
        await ownTeamRules();
        return { path: '/v1/policies/team' };
      },
      otherTeam: 'answered',
      check: async (res, team) => {
        const own = await getTeamPolicy(stack.db.db, stack.teamId);
        if (team === 'own') expect(res.body).toEqual(own);
        else {
          expect(res.body).toEqual({ rules: expect.any(Array), revision: expect.any(Number) });
          for (const rule of own.rules) expect(res.body.rules).not.toContainEqual(rule);
        }
      },
    },
  ],
  'PUT /v1/policies/team': [
    {
      permission: 'policies:write',
      request: async () => ({ path: '/v1/policies/team', body: { rules: markedRules() } }),
      otherTeam: 'answered',
      check: async (res, team) => {
        expect(res.body).toEqual({ rules: [{ tool: 'web_fetch', pattern: expect.stringMatching(/\.invalid\/\*$/) }], revision: expect.any(Number), sessions_notified: expect.any(Number) });
        const own = await getTeamPolicy(stack.db.db, stack.teamId);
        if (team === 'own') {
          expect(own).toEqual({ rules: res.body.rules, revision: res.body.revision });
          // the own team has sessions that are still live (the fixtures): each was sent the new policy
          expect(res.body.sessions_notified).toBeGreaterThan(0);
        } else expect(own.rules).not.toContainEqual(res.body.rules[0]);
      },
    },
  ],
  'PUT /v1/agents/{agent_id}/policy': [
    {
      permission: 'policies:write',
      request: async (fresh) => ({
        path: `/v1/agents/${fresh ? await createAgent() : fx.agentId}/policy`,
        body: { tool_policy: { rules: [{ tool: 'bash', pattern: 'rm *', action: 'deny' }], default: 'allow' } },
      }),
      otherTeam: 'not_found',
      check: (res) =>
        expect(res.body).toMatchObject({
          type: 'agent',
          version: 2,
          tool_policy: { rules: [{ tool: 'bash', pattern: 'rm *', action: 'deny' }], default: 'allow' },
          budget: { max_cost_usd: 5 },
          sessions_notified: 0,
        }),
    },
  ],
  'POST /v1/policies/evaluate': [
    {
      permission: 'agents:read',
      request: async () => ({ path: '/v1/policies/evaluate', body: { agent_id: fx.agentId, tool: 'bash', input: { command: 'ls' } } }),
      otherTeam: 'not_found',
      check: async (res) => {
        // the fixture agent asks only for write; the team's rules name web_fetch
        const { revision } = await getTeamPolicy(stack.db.db, stack.teamId);
        expect(res.body).toEqual({ action: 'allow', rule: 'default → allow', rule_index: null, policy_version: revision });
      },
    },
  ],
  'POST /v1/schedules': [
    {
      permission: 'schedules:write',
      // the body names the own team's agent: another team's key does not find it
      request: async () => ({ path: '/v1/schedules', body: { agent: fx.agentId, prompt: 'say scheduled', spec: { cron: [LEAP_DAY_CRON] }, paused: true } }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toMatchObject({ type: 'schedule', agent: { id: fx.agentId }, state: { paused: true }, policies: { overlap: 'skip' } }),
    },
  ],
  'GET /v1/schedules': [
    {
      permission: 'schedules:read',
      request: async () => ({ path: '/v1/schedules?limit=1000' }),
      otherTeam: 'list',
      list: { itemId: byId, reference: () => fx.scheduleId, own: () => ownIds('schedules'), emptyForOtherTeam: true },
    },
  ],
  'GET /v1/schedules/{schedule_id}': [
    {
      permission: 'schedules:read',
      request: async () => ({ path: `/v1/schedules/${fx.scheduleId}` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toMatchObject({ id: fx.scheduleId, info: { runs_started: 0 } }),
    },
  ],
  'PATCH /v1/schedules/{schedule_id}': [
    {
      permission: 'schedules:write',
      request: async () => ({ path: `/v1/schedules/${fx.scheduleId}`, body: { prompt: 'say changed by the access table' } }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toMatchObject({ id: fx.scheduleId, prompt: 'say changed by the access table' }),
    },
  ],
  'DELETE /v1/schedules/{schedule_id}': [
    {
      permission: 'schedules:write',
      request: async (fresh) => ({ path: `/v1/schedules/${fresh ? await createSchedule(fx.agentId) : fx.scheduleId}` }),
      otherTeam: 'not_found',
      check: async (res) => expect((await send('GET', `/v1/schedules/${res.body.id}`)).status).toBe(404),
    },
  ],
  'POST /v1/schedules/{schedule_id}/pause': [
    {
      permission: 'schedules:write',
      request: async () => ({ path: `/v1/schedules/${fx.scheduleId}/pause`, body: { note: 'paused by the access table' } }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body.state).toEqual({ paused: true, note: 'paused by the access table' }),
    },
  ],
  'POST /v1/schedules/{schedule_id}/unpause': [
    {
      permission: 'schedules:write',
      // unpausing the fixture would leave it firing on leap days only; a fresh one is unpaused and deleted
      request: async (fresh) => ({ path: `/v1/schedules/${fresh ? await createSchedule(fx.agentId) : fx.scheduleId}/unpause` }),
      otherTeam: 'not_found',
      check: async (res) => {
        expect(res.body.state.paused).toBe(false);
        expect((await send('DELETE', `/v1/schedules/${res.body.id}`)).status).toBe(200);
      },
    },
  ],
  'POST /v1/schedules/{schedule_id}/trigger': [
    {
      permission: 'schedules:write',
      request: async (fresh) => ({ path: `/v1/schedules/${fresh ? await inertSchedule() : fx.scheduleId}/trigger` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toEqual({ schedule_id: expect.stringMatching(/^sched_/), triggered: true }),
    },
  ],
  'POST /v1/schedules/{schedule_id}/backfill': [
    {
      permission: 'schedules:write',
      // a minute of 2026 with no leap day in it: the backfill fires nothing
      request: async () => ({ path: `/v1/schedules/${fx.scheduleId}/backfill`, body: { start: '2026-01-01T00:00:00Z', end: '2026-01-01T00:01:00Z' } }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toEqual({ schedule_id: fx.scheduleId, backfilled: true }),
    },
  ],
  'GET /v1/schedules/{schedule_id}/runs': [
    {
      permission: 'schedules:read',
      request: async () => ({ path: `/v1/schedules/${fx.scheduleId}/runs` }),
      otherTeam: 'not_found',
      check: (res) => expect(res.body).toEqual({ data: [], next_page: null }),
    },
  ],
};

const PUBLIC_ROUTES = ['/healthz', '/readyz', '/openapi.json'];

describe('access control', () => {
  it('has a row in the access table for every route of the OpenAPI document, and none for a route that is gone', async () => {
    const documented = (await openApiRoutes()).map((r) => r.route).sort();
    expect(documented.length).toBeGreaterThan(0);
    expect(Object.keys(ACCESS).sort()).toEqual(documented);
  });

  it('answers the health, readiness and OpenAPI routes without a key', async () => {
    for (const path of PUBLIC_ROUTES) {
      const res = await send('GET', path, { key: null });
      expect(res.status, `${path}: ${res.text}`).toBe(200);
    }
    expect((await send('GET', '/readyz', { key: null })).body).toMatchObject({ status: 'ready', checks: { database: 'ok', temporal: 'ok' } });
  });

  for (const [route, cases] of Object.entries(ACCESS)) {
    const [method, template] = route.split(' ') as [string, string];
    for (const access of cases) {
      const name = access.label ? `${route} (${access.label})` : route;
      it(`${name} follows the permission matrix for every role, in the own team and in another`, async () => {
        const needed = access.permission === null ? [] : [access.permission].flat();
        for (const role of ROLES) {
          for (const team of TEAMS) {
            const missing = needed.find((permission) => !can(role, permission));
            const allowed = missing === undefined;
            const where = `${role} of the ${team} team`;
            const call = await access.request(allowed && team === 'own');
            expect(call.path.startsWith(template.replace(/\{.*$/, '').replace(/\?.*$/, ''))).toBe(true);
            const before = await writes();
            const res = await send(method, call.path, { key: keys[team][role], body: call.body, headers: call.headers });

            // the route's own permission admits it; what the body asks for is checked on a resource it does not see
            const unseen = team === 'other' && access.otherTeam === 'not_found' && can(role, needed[0]!);
            if (!allowed && unseen) {
              expectProblem(res, 404, 'resource.not_found');
              expect(await writes(), `${where} wrote something`).toEqual(before);
              continue;
            }
            if (!allowed) {
              expectProblem(res, 403, 'auth.forbidden');
              expect(res.body.detail, where).toContain(missing);
              expect(await writes(), `${where} wrote something`).toEqual(before);
              continue;
            }
            if (team === 'own') {
              expect(res.status, `${where}: ${res.text}`).toBe(200);
              if (access.list) expect((access.list.items?.(res) ?? res.body.data).map(access.list.itemId), where).toContain(access.list.reference());
              await access.check?.(res, team);
              continue;
            }
            if (access.otherTeam === 'not_found') {
              expectProblem(res, 404, 'resource.not_found');
              expect(await writes(), `${where} wrote something`).toEqual(before);
            } else if (access.otherTeam === 'list') {
              expect(res.status, `${where}: ${res.text}`).toBe(200);
              const own = await access.list!.own();
              expect(own.size).toBeGreaterThan(0);
              const items = access.list!.items?.(res) ?? res.body.data;
              const seen = items.map(access.list!.itemId) as string[];
              expect(seen.filter((id) => own.has(id)), where).toEqual([]);
              if (access.list!.emptyForOtherTeam) expect(items, where).toEqual([]);
            } else if (access.otherTeam === 'answered') {
              expect(res.status, `${where}: ${res.text}`).toBe(200);
              await access.check?.(res, team);
            } else {
              expect(res.status, `${where}: ${res.text}`).toBe(200);
              const owner = await teamOf(access.table!, res.body.id);
              expect(owner).toBeDefined();
              expect(owner, `${where} created in the wrong team`).not.toBe(stack.teamId);
            }
          }
        }
        // a refused decision leaves the shared tool call waiting
        expect(await approvalStatus(fx.waitingSessionId, fx.waitingToolUseId)).toBe('pending');
      });
    }
  }
});

// ---- authentication -------------------------------------------------------------------------------------------

describe('authentication', () => {
  async function everyRoute() {
    const routes = await openApiRoutes();
    return Promise.all(
      routes.map(async (r) => {
        const call = await ACCESS[r.route]![0]!.request(false);
        return { ...r, call };
      }),
    );
  }

  it('refuses every /v1 route without a key with 401 auth.missing_key', async () => {
    for (const { route, method, call } of await everyRoute()) {
      const before = await writes();
      const res = await send(method, call.path, { key: null, body: call.body });
      expectProblem(res, 401, 'auth.missing_key');
      expect(res.body.detail, route).toContain('Authorization: Bearer');
      expect(await writes()).toEqual(before);
    }
  });

  it('refuses every /v1 route with an unknown key with 401 auth.invalid_key, in either header', async () => {
    for (const { method, call } of await everyRoute()) {
      for (const auth of ['bearer', 'x-api-key'] as const) {
        const res = await send(method, call.path, { key: 'ap_not-a-key-anyone-was-given', body: call.body, auth });
        expectProblem(res, 401, 'auth.invalid_key');
      }
    }
  });

  it('takes the key as Authorization: Bearer (any case) or as x-api-key', async () => {
    const viewer = keys.own.viewer;
    expect((await send('GET', `/v1/agents/${fx.agentId}`, { key: viewer, auth: 'bearer' })).status).toBe(200);
    expect((await send('GET', `/v1/agents/${fx.agentId}`, { key: viewer, auth: 'x-api-key' })).status).toBe(200);
    const lower = await send('GET', `/v1/agents/${fx.agentId}`, { key: null, headers: { authorization: `bearer ${viewer}` } });
    expect(lower.status).toBe(200);
    // the x-api-key key acts with its own role: a viewer cannot write through either header
    expectProblem(await send('POST', '/v1/environments', { key: viewer, auth: 'x-api-key', body: { name: 'nope' } }), 403, 'auth.forbidden');
  });

  it('refuses a revoked key with 401 auth.invalid_key', async () => {
    const key = await stack.key('admin');
    expect((await send('GET', '/v1/agents', { key })).status).toBe(200);
    // revoked with psql, behind the API's back: the API holds verified keys in memory, and hears of it within a second
    await stack.db.db.execute(sql`update api_keys set revoked_at = now() where hash = ${hashKey(key)}`);
    await eventually(async () => ((await send('GET', '/v1/agents', { key })).status === 401 ? true : undefined), { timeoutMs: 1_000, intervalMs: 20, what: 'the revoked key to be refused' });
    expectProblem(await send('GET', '/v1/agents', { key }), 401, 'auth.invalid_key');
  });
});

// ---- validation -----------------------------------------------------------------------------------------------

interface Malformed {
  /** what is wrong, for the failure message */
  what: string;
  call(): Call;
  /** the name of the field, as `invalid_params[].name` gives it */
  field: string;
}

const tooManyKeys = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`k${i}`, 'v']));

const MALFORMED: Record<string, Malformed[]> = {
  'POST /v1/agents': [
    { what: 'an empty name', call: () => ({ path: '/v1/agents', body: agentDefinition({ name: '' }) }), field: 'body.name' },
    {
      what: 'an unknown rule action',
      call: () => ({ path: '/v1/agents', body: agentDefinition({ tool_policy: { rules: [{ tool: 'bash', action: 'perhaps' }], default: 'allow' } }) }),
      field: 'body.tool_policy.rules.0.action',
    },
    { what: 'a negative budget', call: () => ({ path: '/v1/agents', body: agentDefinition({ budget: { max_cost_usd: -1 } }) }), field: 'body.budget.max_cost_usd' },
    { what: 'no model', call: () => ({ path: '/v1/agents', body: { name: 'x' } }), field: 'body.model' },
    // SSRF: the worker (or its runtime) would connect to it; the route refuses private addresses after resolving them
    { what: 'a model provider on the cloud metadata address', call: () => ({ path: '/v1/agents', body: agentDefinition({ model_provider: { base_url: 'http://169.254.169.254/v1' } }) }), field: 'body.model_provider.base_url' },
    { what: 'a price of its own', call: () => ({ path: '/v1/agents', body: agentDefinition({ runtime: { type: 'opencode', config: { cost: { input: 0, output: 0 } } } }) }), field: 'body.runtime.config.cost' },
  ],
  'GET /v1/agents': [
    { what: 'a zero limit', call: () => ({ path: '/v1/agents?limit=0' }), field: 'query.limit' },
    { what: 'include_archived that is not a boolean', call: () => ({ path: '/v1/agents?include_archived=yes' }), field: 'query.include_archived' },
  ],
  'GET /v1/agents/{agent_id}': [{ what: 'version 0', call: () => ({ path: `/v1/agents/${fx.agentId}?version=0` }), field: 'query.version' }],
  'POST /v1/agents/{agent_id}': [
    { what: 'a version that is not a number', call: () => ({ path: `/v1/agents/${fx.agentId}`, body: { version: 'latest' } }), field: 'body.version' },
    { what: 'an unknown runtime', call: () => ({ path: `/v1/agents/${fx.agentId}`, body: { runtime: { type: 'mainframe' } } }), field: 'body.runtime.type' },
    { what: 'a model provider on a loopback address', call: () => ({ path: `/v1/agents/${fx.agentId}`, body: { model_provider: { base_url: 'http://127.0.0.1:11434/v1' } } }), field: 'body.model_provider.base_url' },
  ],
  'POST /v1/environments': [
    { what: 'a name that is a number', call: () => ({ path: '/v1/environments', body: { name: 5 } }), field: 'body.name' },
    { what: 'too many metadata keys', call: () => ({ path: '/v1/environments', body: { name: 'x', metadata: tooManyKeys } }), field: 'body.metadata' },
    { what: 'a self_hosted config', call: () => ({ path: '/v1/environments', body: { name: 'x', config: { type: 'self_hosted' } } }), field: 'body.config.type' },
    {
      what: 'an allowed host on a loopback address',
      call: () => ({ path: '/v1/environments', body: { name: 'x', config: { type: 'cloud', networking: { type: 'limited', allowed_hosts: ['example.com', '127.0.0.1'] } } } }),
      field: 'body.config.networking.allowed_hosts.1',
    },
  ],
  'GET /v1/environments': [
    { what: 'a limit that is not a number', call: () => ({ path: '/v1/environments?limit=many' }), field: 'query.limit' },
    { what: 'include_archived that is not a boolean', call: () => ({ path: '/v1/environments?include_archived=yes' }), field: 'query.include_archived' },
  ],
  'POST /v1/environments/{environment_id}': [
    { what: 'a name that is empty', call: () => ({ path: `/v1/environments/${fx.environmentId}`, body: { name: '' } }), field: 'body.name' },
    {
      what: 'an allowed host with a scheme',
      call: () => ({ path: `/v1/environments/${fx.environmentId}`, body: { config: { type: 'cloud', networking: { type: 'limited', allowed_hosts: ['https://example.com'] } } } }),
      field: 'body.config.networking.allowed_hosts.0',
    },
  ],
  'POST /v1/credentials': [
    { what: 'an empty secret', call: () => ({ path: '/v1/credentials', body: { name: 'x', secret: '' } }), field: 'body.secret' },
    { what: 'an unknown kind', call: () => ({ path: '/v1/credentials', body: { name: 'x', kind: 'password', secret: 's' } }), field: 'body.kind' },
  ],
  'GET /v1/credentials': [{ what: 'a limit above 1000', call: () => ({ path: '/v1/credentials?limit=1001' }), field: 'query.limit' }],
  'POST /v1/credentials/{credential_id}/rotate': [
    { what: 'no secret', call: () => ({ path: `/v1/credentials/${fx.credentialId}/rotate`, body: {} }), field: 'body.secret' },
    { what: 'an empty secret', call: () => ({ path: `/v1/credentials/${fx.credentialId}/rotate`, body: { secret: '' } }), field: 'body.secret' },
  ],
  'POST /v1/sessions': [
    { what: 'a zero budget', call: () => ({ path: '/v1/sessions', body: { agent: fx.agentId, budget: { max_cost_usd: 0 } } }), field: 'body.budget.max_cost_usd' },
    { what: 'no agent', call: () => ({ path: '/v1/sessions', body: { title: 'x' } }), field: 'body.agent' },
    {
      what: 'an initial event that is not a message',
      call: () => ({ path: '/v1/sessions', body: { agent: fx.agentId, initial_events: [{ type: 'user.interrupt' }] } }),
      field: 'body.initial_events.0.type',
    },
    {
      what: 'an Idempotency-Key of 201 characters',
      call: () => ({ path: '/v1/sessions', body: { agent: fx.agentId }, headers: { 'idempotency-key': 'k'.repeat(201) } }),
      field: 'header.idempotency-key',
    },
  ],
  'GET /v1/sessions': [
    { what: 'an unknown status', call: () => ({ path: '/v1/sessions?status=sleeping' }), field: 'query.status' },
    { what: 'a date that is not ISO 8601', call: () => ({ path: '/v1/sessions?created_after=yesterday' }), field: 'query.created_after' },
  ],
  'POST /v1/sessions/{session_id}/events': [
    { what: 'no events', call: () => ({ path: `/v1/sessions/${fx.messageSessionId}/events`, body: { events: [] } }), field: 'body.events' },
    {
      what: 'an empty message',
      call: () => ({ path: `/v1/sessions/${fx.messageSessionId}/events`, body: { events: [{ type: 'user.message', content: '' }] } }),
      field: 'body.events.0.content',
    },
    {
      what: 'a decision that is neither allow nor deny',
      call: () => ({ path: `/v1/sessions/${fx.waitingSessionId}/events`, body: { events: [{ type: 'user.tool_confirmation', tool_use_id: fx.waitingToolUseId, result: 'maybe' }] } }),
      field: 'body.events.0.result',
    },
  ],
  'GET /v1/sessions/{session_id}/events': [
    { what: 'an unknown order', call: () => ({ path: `/v1/sessions/${fx.sessionId}/events?order=sideways` }), field: 'query.order' },
    { what: 'a cursor this endpoint never gave', call: () => ({ path: `/v1/sessions/${fx.sessionId}/events?page=abc` }), field: 'query.page' },
  ],
  'GET /v1/sessions/{session_id}/events/stream': [
    { what: 'a Last-Event-ID that is not a frame id', call: () => ({ path: `/v1/sessions/${fx.sessionId}/events/stream`, headers: { 'last-event-id': 'abc' } }), field: 'header.last-event-id' },
  ],
  'GET /v1/approvals': [{ what: 'a negative limit', call: () => ({ path: '/v1/approvals?limit=-1' }), field: 'query.limit' }],
  'POST /v1/keys': [
    { what: 'an unknown role', call: () => ({ path: '/v1/keys', body: { name: 'x', role: 'owner' } }), field: 'body.role' },
    { what: 'an empty name', call: () => ({ path: '/v1/keys', body: { name: '', role: 'viewer' } }), field: 'body.name' },
  ],
  'GET /v1/keys': [{ what: 'a zero limit', call: () => ({ path: '/v1/keys?limit=0' }), field: 'query.limit' }],
  'POST /v1/teams': [
    { what: 'a blank name', call: () => ({ path: '/v1/teams', body: { name: '   ' } }), field: 'body.name' },
    { what: 'no name', call: () => ({ path: '/v1/teams', body: {} }), field: 'body.name' },
  ],
  'GET /v1/audit': [
    { what: 'a since that is not ISO 8601', call: () => ({ path: '/v1/audit?since=yesterday' }), field: 'query.since' },
    { what: 'a cursor this endpoint never gave', call: () => ({ path: '/v1/audit?page=abc' }), field: 'query.page' },
  ],
  'GET /v1/audit/export': [{ what: 'an until that is not ISO 8601', call: () => ({ path: '/v1/audit/export?until=soon' }), field: 'query.until' }],
  'GET /v1/audit/verify': [{ what: 'a from that is neither checkpoint nor start', call: () => ({ path: '/v1/audit/verify?from=genesis' }), field: 'query.from' }],
  'POST /v1/webhooks': [
    { what: 'an ftp URL', call: () => ({ path: '/v1/webhooks', body: { url: 'ftp://127.0.0.1/hook' } }), field: 'body.url' },
    { what: 'an unknown event type', call: () => ({ path: '/v1/webhooks', body: { url: 'http://127.0.0.1:9/x', events: ['session.created'] } }), field: 'body.events.0' },
    { what: 'a secret too short to sign with', call: () => ({ path: '/v1/webhooks', body: { url: 'http://127.0.0.1:9/x', secret: 'short' } }), field: 'body.secret' },
    { what: 'a receiver on a loopback address (SSRF)', call: () => ({ path: '/v1/webhooks', body: { url: 'http://127.0.0.1:9/x' } }), field: 'body.url' },
    { what: 'a receiver on an IPv6 unique-local address (SSRF)', call: () => ({ path: '/v1/webhooks', body: { url: 'http://[fd00::1]/x' } }), field: 'body.url' },
  ],
  'GET /v1/webhooks': [{ what: 'a zero limit', call: () => ({ path: '/v1/webhooks?limit=0' }), field: 'query.limit' }],
  'GET /v1/webhooks/{webhook_id}/deliveries': [{ what: 'a limit that is not a number', call: () => ({ path: '/v1/webhooks/whk_01jzzzzzzzzzzzzzzzzzzzzzzz/deliveries?limit=many' }), field: 'query.limit' }],
  'POST /v1/budgets': [
    { what: 'a negative limit', call: () => ({ path: '/v1/budgets', body: { scope: 'team', period: 'day', limit_usd: -1 } }), field: 'body.limit_usd' },
    { what: 'an unknown period', call: () => ({ path: '/v1/budgets', body: { scope: 'team', period: 'year', limit_usd: 1 } }), field: 'body.period' },
    { what: 'an unknown scope', call: () => ({ path: '/v1/budgets', body: { scope: 'session', period: 'day', limit_usd: 1 } }), field: 'body.scope' },
    { what: 'a threshold of 0%', call: () => ({ path: '/v1/budgets', body: { scope: 'team', period: 'day', limit_usd: 1, thresholds: [0] } }), field: 'body.thresholds.0' },
    { what: 'an agent budget without an agent', call: () => ({ path: '/v1/budgets', body: { scope: 'agent', period: 'day', limit_usd: 1 } }), field: 'body.agent_id' },
  ],
  'GET /v1/usage': [
    { what: 'an unknown grouping', call: () => ({ path: '/v1/usage?group_by=x' }), field: 'query.group_by' },
    { what: 'an unknown bucket', call: () => ({ path: '/v1/usage?bucket=week' }), field: 'query.bucket' },
    { what: 'a from that is not ISO 8601', call: () => ({ path: '/v1/usage?from=yesterday' }), field: 'query.from' },
  ],
  'GET /v1/pricing': [{ what: 'a model name longer than any', call: () => ({ path: `/v1/pricing?model=${'m'.repeat(201)}` }), field: 'query.model' }],
  'PUT /v1/pricing/{model}': [
    { what: 'a negative input price', call: () => ({ path: '/v1/pricing/access-table-malformed', body: { input: -1, output: 1 } }), field: 'body.input' },
    { what: 'no output price', call: () => ({ path: '/v1/pricing/access-table-malformed', body: { input: 1 } }), field: 'body.output' },
  ],
  'PUT /v1/policies/team': [
    { what: 'a rule without a tool', call: () => ({ path: '/v1/policies/team', body: { rules: [{}] } }), field: 'body.rules.0.tool' },
    { what: 'rules that are not a list', call: () => ({ path: '/v1/policies/team', body: { rules: { tool: 'bash' } } }), field: 'body.rules' },
  ],
  'PUT /v1/agents/{agent_id}/policy': [
    { what: 'a default that is no action', call: () => ({ path: `/v1/agents/${fx.agentId}/policy`, body: { tool_policy: { rules: [], default: 'maybe' } } }), field: 'body.tool_policy.default' },
    { what: 'no tool_policy', call: () => ({ path: `/v1/agents/${fx.agentId}/policy`, body: {} }), field: 'body.tool_policy' },
  ],
  'POST /v1/policies/evaluate': [
    { what: 'neither agent_id nor tool_policy', call: () => ({ path: '/v1/policies/evaluate', body: { tool: 'bash', input: { command: 'ls' } } }), field: 'body.agent_id' },
    { what: 'no tool', call: () => ({ path: '/v1/policies/evaluate', body: { agent_id: fx.agentId } }), field: 'body.tool' },
    {
      what: 'a policy rule with an unknown action',
      call: () => ({ path: '/v1/policies/evaluate', body: { tool_policy: { rules: [{ tool: 'bash', action: 'perhaps' }], default: 'allow' }, tool: 'bash' } }),
      field: 'body.tool_policy.rules.0.action',
    },
  ],
  'POST /v1/schedules': [
    { what: 'a cron hour of 25', call: () => ({ path: '/v1/schedules', body: { agent: fx.agentId, prompt: 'x', spec: { cron: ['0 25 * * *'] } } }), field: 'body.spec.cron.0' },
    { what: 'an unknown time zone', call: () => ({ path: '/v1/schedules', body: { agent: fx.agentId, prompt: 'x', spec: { cron: ['0 3 * * *'], time_zone: 'Mars/Olympus_Mons' } } }), field: 'body.spec.time_zone' },
    { what: 'neither cron nor intervals', call: () => ({ path: '/v1/schedules', body: { agent: fx.agentId, prompt: 'x', spec: {} } }), field: 'body.spec.cron' },
    {
      what: 'an overlap policy that is not offered',
      call: () => ({ path: '/v1/schedules', body: { agent: fx.agentId, prompt: 'x', spec: { cron: ['0 3 * * *'] }, policies: { overlap: 'terminate_other' } } }),
      field: 'body.policies.overlap',
    },
    { what: 'no prompt', call: () => ({ path: '/v1/schedules', body: { agent: fx.agentId, spec: { cron: ['0 3 * * *'] } } }), field: 'body.prompt' },
  ],
  'GET /v1/schedules': [{ what: 'a zero limit', call: () => ({ path: '/v1/schedules?limit=0' }), field: 'query.limit' }],
  'PATCH /v1/schedules/{schedule_id}': [
    { what: 'an interval of 0 seconds', call: () => ({ path: `/v1/schedules/${fx.scheduleId}`, body: { spec: { intervals: [{ every_seconds: 0 }] } } }), field: 'body.spec.intervals.0.every_seconds' },
    { what: 'a catch-up window under 10 seconds', call: () => ({ path: `/v1/schedules/${fx.scheduleId}`, body: { policies: { catchup_window_seconds: 1 } } }), field: 'body.policies.catchup_window_seconds' },
  ],
  'POST /v1/schedules/{schedule_id}/pause': [{ what: 'a note that is a number', call: () => ({ path: `/v1/schedules/${fx.scheduleId}/pause`, body: { note: 5 } }), field: 'body.note' }],
  'POST /v1/schedules/{schedule_id}/unpause': [{ what: 'a note that is a list', call: () => ({ path: `/v1/schedules/${fx.scheduleId}/unpause`, body: { note: ['x'] } }), field: 'body.note' }],
  'POST /v1/schedules/{schedule_id}/trigger': [{ what: 'an unknown overlap policy', call: () => ({ path: `/v1/schedules/${fx.scheduleId}/trigger`, body: { overlap: 'maybe' } }), field: 'body.overlap' }],
  'POST /v1/schedules/{schedule_id}/backfill': [
    { what: 'a start that is not ISO 8601', call: () => ({ path: `/v1/schedules/${fx.scheduleId}/backfill`, body: { start: 'yesterday', end: '2026-01-01T00:01:00Z' } }), field: 'body.start' },
    { what: 'an end before the start', call: () => ({ path: `/v1/schedules/${fx.scheduleId}/backfill`, body: { start: '2026-01-01T00:01:00Z', end: '2026-01-01T00:00:00Z' } }), field: 'body.end' },
  ],
  'GET /v1/schedules/{schedule_id}/runs': [{ what: 'a limit above 1000', call: () => ({ path: `/v1/schedules/${fx.scheduleId}/runs?limit=1001` }), field: 'query.limit' }],
};

/** A well-formed body for each route that takes one, so that only the id is wrong. */
const GOOD_BODY: Record<string, unknown> = {
  'POST /v1/agents/{agent_id}': { description: 'x' },
  'POST /v1/environments/{environment_id}': { name: 'x' },
  'POST /v1/sessions/{session_id}/events': { events: [{ type: 'user.message', content: 'say hi' }] },
  'POST /v1/credentials/{credential_id}/rotate': { secret: 'sk-never-stored' },
  'PUT /v1/agents/{agent_id}/policy': { tool_policy: { rules: [], default: 'allow' } },
  'PATCH /v1/schedules/{schedule_id}': { prompt: 'say x' },
  'POST /v1/schedules/{schedule_id}/backfill': { start: '2026-01-01T00:00:00Z', end: '2026-01-01T00:01:00Z' },
};

const ID_PREFIX: Record<string, string> = { agent_id: 'agent', environment_id: 'env', credential_id: 'cred', session_id: 'sesn', key_id: 'key', webhook_id: 'whk', budget_id: 'bud', schedule_id: 'sched' };
/**
 * Path parameters that are names, not ids: every value is valid, so there is no unknown one to answer 404 for.
 * `PUT /v1/pricing/{model}` sets a price for any model name, also one no agent uses yet (the access table calls
 * it with made-up names).
 */
const NOT_AN_ID = new Set(['model']);

/**
 * A key that may call the route, so that its body is read: the stack's admin key, or a platform admin's for a route
 * only platform admins call (the permission is checked before the body).
 */
function callerOf(route: string): string {
  const permission = [ACCESS[route]![0]!.permission ?? []].flat()[0];
  return permission && !can('admin', permission) ? keys.own.platform_admin : stack.adminKey;
}

describe('validation', () => {
  it('has malformed inputs for every route that takes a body, a query or a header', async () => {
    const needing = (await openApiRoutes()).filter((r) => r.hasBody || r.params.some((p) => p.in === 'query' || p.in === 'header')).map((r) => r.route);
    expect(needing.filter((route) => !MALFORMED[route]?.length)).toEqual([]);
    expect(Object.keys(MALFORMED).filter((route) => !needing.includes(route))).toEqual([]);
  });

  for (const [route, inputs] of Object.entries(MALFORMED)) {
    const method = route.split(' ')[0]!;
    it(`${route} answers malformed input with a 400 that names the field, and writes nothing`, async () => {
      for (const input of inputs) {
        const call = input.call();
        const before = await writes();
        const res = await send(method, call.path, { key: callerOf(route), body: call.body, headers: call.headers });
        expectProblem(res, 400, 'request.invalid');
        expect(res.body.detail, input.what).toContain(input.field);
        expect(res.body.invalid_params?.map((p: { name: string }) => p.name), input.what).toContain(input.field);
        for (const p of res.body.invalid_params) expect(p.reason).toEqual(expect.any(String));
        expect(await writes(), input.what).toEqual(before);
      }
    });
  }

  it('answers a body that is not JSON, or not sent as JSON, with a 400 problem on every route that takes a body', async () => {
    const routes = (await openApiRoutes()).filter((r) => r.hasBody);
    expect(routes.length).toBeGreaterThan(0);
    for (const r of routes) {
      const { path } = await ACCESS[r.route]![0]!.request(false);
      const before = await writes();
      const broken = await send(r.method, path, { key: callerOf(r.route), rawBody: '{"name": "half' });
      expectProblem(broken, 400, 'request.invalid');
      const plain = await send(r.method, path, { key: callerOf(r.route), rawBody: 'name=x', headers: { 'content-type': 'text/plain' } });
      expect(plain.status, `${r.route}: ${plain.text}`).toBe(400);
      expect(plain.contentType).toBe('application/problem+json');
      expect(await writes(), r.route).toEqual(before);
    }
  });

  it('answers an unknown or malformed id with 404 on every route that takes one', async () => {
    const routes = (await openApiRoutes()).filter((r) => r.params.some((p) => p.in === 'path' && !NOT_AN_ID.has(p.name)));
    expect(routes.length).toBeGreaterThan(0);
    for (const r of routes) {
      const param = r.params.find((p) => p.in === 'path')!;
      const prefix = ID_PREFIX[param.name];
      expect(prefix, `no id prefix for ${param.name}`).toBeDefined();
      for (const id of [`${prefix}_01jzzzzzzzzzzzzzzzzzzzzzzz`, 'not-an-id', `${prefix === 'agent' ? 'sesn' : 'agent'}_01jzzzzzzzzzzzzzzzzzzzzzzz`]) {
        const path = r.path.replace(`{${param.name}}`, id);
        const before = await writes();
        const res = await send(r.method, path, { body: r.hasBody ? GOOD_BODY[r.route] : undefined });
        expectProblem(res, 404, 'resource.not_found');
        expect(await writes(), `${r.route} ${id}`).toEqual(before);
      }
    }
  });

  it('answers a session for an unknown agent, agent version or environment with 404, and writes nothing', async () => {
    for (const body of [
      { agent: 'agent_01jzzzzzzzzzzzzzzzzzzzzzzz' },
      { agent: { type: 'agent', id: fx.agentId, version: 99 } },
      { agent: fx.agentId, environment_id: 'env_01jzzzzzzzzzzzzzzzzzzzzzzz' },
    ]) {
      const before = await writes();
      const res = await send('POST', '/v1/sessions', { body });
      expectProblem(res, 404, 'resource.not_found');
      expect(await writes(), JSON.stringify(body)).toEqual(before);
    }
  });

  it("refuses a session budget above the agent's cap with a 400 naming body.budget.max_cost_usd, and starts nothing", async () => {
    const before = await writes();
    const res = await send('POST', '/v1/sessions', { body: { agent: fx.agentId, budget: { max_cost_usd: 5.01 } } });
    expectProblem(res, 400, 'request.invalid');
    expect(res.body.detail).toContain('body.budget.max_cost_usd');
    expect(res.body.invalid_params.map((p: { name: string }) => p.name)).toEqual(['body.budget.max_cost_usd']);
    expect(await writes()).toEqual(before);
    // at the cap is fine
    const atCap = await send('POST', '/v1/sessions', { body: { agent: fx.agentId, budget: { max_cost_usd: 5 } } });
    expect(atCap.status, atCap.text).toBe(200);
    expect(atCap.body.budget).toEqual({ max_cost_usd: 5 });
  });

  it("refuses an agent that names another team's credential, and writes nothing", async () => {
    const otherAdmin = keys.other.admin;
    const theirs = await send('POST', '/v1/credentials', { key: otherAdmin, body: { name: 'theirs', secret: 'sk-theirs' } });
    expect(theirs.status).toBe(200);
    const before = await writes();
    const res = await send('POST', '/v1/agents', { body: agentDefinition({ model_provider: { base_url: 'http://203.0.113.10/v1', credential_id: theirs.body.id } }) });
    expectProblem(res, 400, 'request.invalid');
    expect(res.body.invalid_params.map((p: { name: string }) => p.name)).toEqual(['body.model_provider.credential_id']);
    expect(await writes()).toEqual(before);
    const ours = await send('POST', '/v1/agents', { body: agentDefinition({ model_provider: { base_url: 'http://203.0.113.10/v1', credential_id: fx.credentialId } }) });
    expect(ours.status, ours.text).toBe(200);
    expect(ours.body.model_provider).toEqual({ base_url: 'http://203.0.113.10/v1', credential_id: fx.credentialId });
  });

  it('refuses events for an archived session, and for one whose workflow has ended, with 409', async () => {
    const message = { events: [{ type: 'user.message', content: 'say too late' }] };
    const archivedId = await startSession(fx.agentId);
    expect((await send('POST', `/v1/sessions/${archivedId}/archive`)).status).toBe(200);
    expectProblem(await send('POST', `/v1/sessions/${archivedId}/events`, { body: message }), 409, 'session.not_accepting');
    await waitForStatus(stack, archivedId, 'terminated', 'archived');
    expectProblem(await send('POST', `/v1/sessions/${archivedId}/events`, { body: message }), 409, 'session.not_accepting');
    expect((await eventsOf(stack, archivedId)).filter((e) => e.type === 'user.message')).toEqual([]);

    // the workflow ended behind the API's back: the row still says idle, Temporal says it is gone
    const endedId = await startSession(fx.agentId);
    await stack.temporal.workflow.getHandle(endedId).terminate('test: ended outside the API');
    const res = await send('POST', `/v1/sessions/${endedId}/events`, { body: message });
    expectProblem(res, 409, 'session.not_accepting');
  });

  it('answers a decision on a tool call the session never made with 404, and one already decided with 409', async () => {
    const res = await send('POST', `/v1/sessions/${fx.waitingSessionId}/events`, {
      body: { events: [{ type: 'user.tool_confirmation', tool_use_id: 'toolu_never_made', result: 'allow' }] },
    });
    expectProblem(res, 404, 'resource.not_found');
    expect(res.body.detail).toContain('toolu_never_made');
    expect(await approvalStatus(fx.waitingSessionId, fx.waitingToolUseId)).toBe('pending');

    // a batch is taken whole or not at all: a good decision next to a bad one is not sent either
    const batch = await send('POST', `/v1/sessions/${fx.waitingSessionId}/events`, {
      body: {
        events: [
          { type: 'user.tool_confirmation', tool_use_id: fx.waitingToolUseId, result: 'allow' },
          { type: 'user.tool_confirmation', tool_use_id: 'toolu_never_made', result: 'allow' },
        ],
      },
    });
    expectProblem(batch, 404, 'resource.not_found');
    await new Promise((r) => setTimeout(r, 300));
    expect(await approvalStatus(fx.waitingSessionId, fx.waitingToolUseId)).toBe('pending');
    expect((await send('GET', `/v1/sessions/${fx.waitingSessionId}`)).body.status).toBe('requires_action');

    const { sessionId, toolUseId } = await waitingSession();
    const first = await send('POST', `/v1/sessions/${sessionId}/events`, { body: { events: [{ type: 'user.tool_confirmation', tool_use_id: toolUseId, result: 'deny' }] } });
    expect(first.status, first.text).toBe(200);
    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
    const second = await send('POST', `/v1/sessions/${sessionId}/events`, { body: { events: [{ type: 'user.tool_confirmation', tool_use_id: toolUseId, result: 'allow' }] } });
    expectProblem(second, 409, 'approval.not_pending');
  });
});

// ---- agents ---------------------------------------------------------------------------------------------------

describe('agents', () => {
  it('keeps every version of an agent, refuses a stale update, and refuses sessions once it is archived', async () => {
    const created = await send('POST', '/v1/agents', { body: agentDefinition({ name: 'lifecycle v1', system: 'be brief' }) });
    expect(created.status).toBe(200);
    expect(created.body).toMatchObject({ type: 'agent', version: 1, name: 'lifecycle v1', system: 'be brief', model: { id: 'scripted' }, archived_at: null });
    const id = created.body.id as string;
    expect(id).toMatch(/^agent_/);
    expect((await send('GET', `/v1/agents/${id}`)).body).toMatchObject({ id, version: 1, name: 'lifecycle v1' });

    const updated = await send('POST', `/v1/agents/${id}`, { body: { version: 1, name: 'lifecycle v2' } });
    expect(updated.status, updated.text).toBe(200);
    // an update changes what it names and keeps the rest
    expect(updated.body).toMatchObject({ id, version: 2, name: 'lifecycle v2', system: 'be brief', budget: { max_cost_usd: 5 } });

    const before = await writes();
    const stale = await send('POST', `/v1/agents/${id}`, { body: { version: 1, name: 'lifecycle lost update' } });
    expectProblem(stale, 409, 'resource.conflict');
    expect(stale.body.detail).toContain('version 2');
    expect(await writes()).toEqual(before);

    const versions = await send('GET', `/v1/agents/${id}/versions`);
    expect(versions.body.data.map((v: any) => [v.version, v.name])).toEqual([
      [1, 'lifecycle v1'],
      [2, 'lifecycle v2'],
    ]);
    expect((await send('GET', `/v1/agents/${id}?version=1`)).body).toMatchObject({ version: 1, name: 'lifecycle v1' });
    expectProblem(await send('GET', `/v1/agents/${id}?version=3`), 404, 'resource.not_found');
    expect((await send('GET', `/v1/agents/${id}`)).body).toMatchObject({ version: 2, name: 'lifecycle v2' });

    // a session pins the version it asked for
    const pinned = await send('POST', '/v1/sessions', { body: { agent: { type: 'agent', id, version: 1 } } });
    expect(pinned.body.agent).toEqual({ id, version: 1, runtime: 'scripted' });

    const archived = await send('POST', `/v1/agents/${id}/archive`);
    expect(archived.status).toBe(200);
    expect(archived.body.archived_at).toEqual(expect.any(String));
    expect((await send('GET', '/v1/agents?limit=1000')).body.data.map(byId)).not.toContain(id);
    expect((await send('GET', '/v1/agents?limit=1000&include_archived=true')).body.data.map(byId)).toContain(id);

    const beforeRefusals = await writes();
    expectProblem(await send('POST', `/v1/agents/${id}`, { body: { name: 'lifecycle v3' } }), 409, 'resource.conflict');
    const session = await send('POST', '/v1/sessions', { body: { agent: id } });
    expectProblem(session, 409, 'resource.conflict');
    expect(session.body.detail).toContain('archived');
    expect(await writes()).toEqual(beforeRefusals);
  });

  it('an acp agent names a worker-side ACP agent: a missing name or a command line is refused, naming the field', async () => {
    const before = await writes();
    const missing = await send('POST', '/v1/agents', { body: { name: 'acp without agent', model: 'scripted', runtime: { type: 'acp', config: {} } } });
    expectProblem(missing, 400, 'request.invalid');
    expect(missing.body.detail).toContain('body.runtime.config.agent');
    const command = await send('POST', '/v1/agents', { body: { name: 'acp with a command', model: 'scripted', runtime: { type: 'acp', config: { agent: 'opencode', command: '/bin/sh', args: ['-c', 'id'] } } } });
    expectProblem(command, 400, 'request.invalid');
    expect(command.body.detail).toContain('body.runtime.config.command');
    expect(await writes()).toEqual(before);

    const ok = await send('POST', '/v1/agents', { body: { name: 'acp opencode', model: 'scripted', runtime: { type: 'acp', config: { agent: 'opencode' } } } });
    expect(ok.status, ok.text).toBe(200);
    const sneaky = await send('POST', `/v1/agents/${ok.body.id}`, { body: { runtime: { type: 'acp', config: { agent: '../../bin/sh' } } } });
    expectProblem(sneaky, 400, 'request.invalid');
    expect(sneaky.body.detail).toContain('body.runtime.config.agent');
  });

  it('maps a Managed Agents toolset permission config onto the tool policy, and the session follows it', async () => {
    const tools = [
      {
        type: 'agent_toolset_20250822',
        default_config: { permission_policy: { type: 'always_ask' } },
        configs: [
          { name: 'bash', permission_policy: { type: 'always_allow' } },
          { name: 'web_fetch', permission_policy: { type: 'auto' } },
          { name: 'read', enabled: true },
        ],
      },
    ];
    const res = await send('POST', '/v1/agents', { body: { name: 'managed style', model: 'scripted', runtime: { type: 'scripted' }, tools } });
    expect(res.status, res.text).toBe(200);
    expect(res.body.tools).toEqual(tools);
    expect(res.body.tool_policy).toEqual({
      rules: [
        { tool: 'bash', action: 'allow' },
        { tool: 'web_fetch', action: 'ask' },
      ],
      default: 'ask',
    });

    const allowAll = await send('POST', '/v1/agents', { body: { name: 'allow all', model: 'scripted', tools: [{ type: 'agent_toolset_20250822' }] } });
    expect(allowAll.body.tool_policy).toEqual({ rules: [], default: 'allow' });
    const noToolset = await send('POST', '/v1/agents', { body: { name: 'no toolset', model: 'scripted' } });
    expect(noToolset.body.tool_policy).toEqual({ rules: [], default: 'ask' });
    // an explicit tool_policy wins over the toolset config
    const explicit = await send('POST', '/v1/agents', {
      body: { name: 'explicit', model: 'scripted', tools, tool_policy: { rules: [{ tool: 'bash', action: 'deny' }], default: 'deny' } },
    });
    expect(explicit.body.tool_policy).toEqual({ rules: [{ tool: 'bash', action: 'deny' }], default: 'deny' });

    const sessionId = await startSession(res.body.id, 'tool bash ls\ntool write /tmp/managed.md');
    const waiting = await waitForStatus(stack, sessionId, 'requires_action');
    expect(waiting.pending_approvals.map((a: any) => a.tool)).toEqual(['write']);
    const uses = (await eventsOf(stack, sessionId)).filter((e) => e.type === 'agent.tool_use');
    expect(uses.map((u) => [u.name, u.evaluated_permission])).toEqual([
      ['bash', 'allow'],
      ['write', 'ask'],
    ]);
    await send('POST', `/v1/sessions/${sessionId}/archive`);
  });
});

// ---- the fleet query ------------------------------------------------------------------------------------------

describe('sessions list', () => {
  it('pages 25 sessions by next_page, 10 at a time, returning each exactly once', async () => {
    const agent = await createAgent({ name: 'pager' });
    const started = new Set<string>();
    for (let i = 0; i < 25; i++) started.add(await startSession(agent));
    expect(started.size).toBe(25);

    const seen: string[] = [];
    const sizes: number[] = [];
    let cursor: string | null = null;
    for (let pages = 0; pages < 10; pages++) {
      const res: Sent = await send('GET', `/v1/sessions?agent_id=${agent}&limit=10${cursor ? `&page=${cursor}` : ''}`);
      expect(res.status, res.text).toBe(200);
      sizes.push(res.body.data.length);
      seen.push(...res.body.data.map(byId));
      cursor = res.body.next_page;
      if (!cursor) break;
    }
    expect(sizes).toEqual([10, 10, 5]);
    expect(new Set(seen).size).toBe(seen.length);
    expect(new Set(seen)).toEqual(started);
    expect(seen).toEqual([...seen].sort().reverse());
  });

  it('filters by agent, status and runtime', async () => {
    const agent = await createAgent({ name: 'filtered' });
    const idle = [await startSession(agent), await startSession(agent)];
    const opencodeAgent = await createAgent({ name: 'opencode, never run', runtime: { type: 'opencode' } });
    // OpenCode's sessions are priced from their tokens: its model needs a price to start one
    await stack.price('scripted', { input: 0, output: 0 });
    // no initial events: the session waits idle and the opencode runtime is never asked for
    const opencodeSession = await startSession(opencodeAgent);

    const byAgent = (await send('GET', `/v1/sessions?agent_id=${agent}&limit=1000`)).body.data;
    expect(byAgent.map(byId).sort()).toEqual([...idle].sort());
    expect(byAgent.every((s: any) => s.agent.id === agent)).toBe(true);

    const waiting = (await send('GET', '/v1/sessions?status=requires_action&limit=1000')).body.data;
    expect(waiting.map(byId)).toContain(fx.waitingSessionId);
    expect(waiting.every((s: any) => s.status === 'requires_action')).toBe(true);
    expect(waiting.map(byId)).not.toContain(idle[0]);
    const idleList = (await send('GET', `/v1/sessions?status=idle&agent_id=${agent}&limit=1000`)).body.data;
    expect(idleList.map(byId).sort()).toEqual([...idle].sort());
    expect((await send('GET', `/v1/sessions?status=terminated&agent_id=${agent}`)).body.data).toEqual([]);

    const opencode = (await send('GET', '/v1/sessions?runtime=opencode&limit=1000')).body.data;
    expect(opencode.map(byId)).toEqual([opencodeSession]);
    expect(opencode[0].agent.runtime).toBe('opencode');
    const scripted = (await send('GET', '/v1/sessions?runtime=scripted&limit=1000')).body.data;
    expect(scripted.map(byId)).toEqual(expect.arrayContaining(idle));
    expect(scripted.map(byId)).not.toContain(opencodeSession);
    expect(scripted.every((s: any) => s.agent.runtime === 'scripted')).toBe(true);

    // archived sessions leave the list unless asked for
    await send('POST', `/v1/sessions/${idle[0]}/archive`);
    expect((await send('GET', `/v1/sessions?agent_id=${agent}`)).body.data.map(byId)).toEqual([idle[1]]);
    expect((await send('GET', `/v1/sessions?agent_id=${agent}&include_archived=true`)).body.data.map(byId).sort()).toEqual([...idle].sort());
    await send('POST', `/v1/sessions/${opencodeSession}/archive`);
  });
});

// ---- credentials ----------------------------------------------------------------------------------------------

describe('credentials', () => {
  it('never returns the secret, from create, list or get, and does not store it in the clear', async () => {
    const secret = `sk-live-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
    const created = await send('POST', '/v1/credentials', { body: { name: 'model key', secret } });
    expect(created.status).toBe(200);
    expect(created.body).toMatchObject({ type: 'credential', name: 'model key', kind: 'api_key', secret_version: 1, revoked_at: null });
    expect(created.body.id).toMatch(/^cred_/);
    const listed = await send('GET', '/v1/credentials?limit=1000');
    expect(listed.body.data.map(byId)).toContain(created.body.id);
    const got = await send('GET', `/v1/credentials/${created.body.id}`);
    expect(got.status).toBe(200);
    for (const res of [created, listed, got]) {
      expect(res.text).not.toContain(secret);
      expect(res.text).not.toContain(secret.slice(8));
    }
    const stored = (await stack.db.db.execute(sql`select * from credentials where id = ${created.body.id}`)) as unknown as { rows: unknown[] };
    expect(stored.rows).toHaveLength(1);
    expect(JSON.stringify(stored.rows)).not.toContain(secret.slice(8));
    const audit = (await stack.db.db.execute(sql`select * from audit_log where target = ${created.body.id}`)) as unknown as { rows: unknown[] };
    expect(audit.rows).toHaveLength(1);
    expect(JSON.stringify(audit.rows)).not.toContain(secret.slice(8));
  });
});

// ---- the event stream -----------------------------------------------------------------------------------------

interface Frame {
  id?: string;
  event?: string;
  data?: string;
}

function parseFrame(block: string): Frame {
  const frame: Frame = {};
  for (const line of block.split(/\r?\n/)) {
    const match = /^([^:]+):? ?(.*)$/.exec(line);
    if (!match) continue;
    const [, field, value] = match as unknown as [string, string, string];
    if (field === 'data') frame.data = frame.data === undefined ? value : `${frame.data}\n${value}`;
    else if (field === 'id' || field === 'event') frame[field] = value;
  }
  return frame;
}

/** Opens the stream and collects frames in the background until closed (or the server ends it). */
async function openStream(sessionId: string, lastEventId?: string) {
  const controller = new AbortController();
  const res = await fetch(`${stack.url}/v1/sessions/${sessionId}/events/stream`, {
    headers: { authorization: `Bearer ${stack.adminKey}`, ...(lastEventId === undefined ? {} : { 'last-event-id': lastEventId }) },
    signal: controller.signal,
  });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
  const frames: Frame[] = [];
  const raw: string[] = [];
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
        for (let match = /\r?\n\r?\n/.exec(buffer); match; match = /\r?\n\r?\n/.exec(buffer)) {
          const block = buffer.slice(0, match.index);
          buffer = buffer.slice(match.index + match[0].length);
          raw.push(block);
          frames.push(parseFrame(block));
        }
      }
    } catch (err) {
      if (!controller.signal.aborted) throw err;
    } finally {
      ended = true;
    }
  })();
  const events = () => frames.filter((f) => f.event !== 'ping');
  const stream = {
    frames,
    raw,
    events,
    get ended() {
      return ended;
    },
    async waitFor(count: number, what: string) {
      await eventually(async () => (events().length >= count ? true : undefined), { timeoutMs: 15_000, intervalMs: 20, what });
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

const quiet = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('event stream', () => {
  it('sends id, event and data on every frame, and replays exactly what came after Last-Event-ID', async () => {
    const sessionId = await startSession(fx.agentId, 'say one\nsay two\ncost 0.01');
    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
    const history = await eventsOf(stack, sessionId);
    expect(history.map((e) => e.type)).toEqual([
      'user.message',
      'session.status_running',
      'agent.message',
      'agent.message',
      'span.model_request_end',
      'session.status_idle',
    ]);

    const all = await openStream(sessionId, '0');
    await all.waitFor(history.length, 'the whole history');
    await quiet(300); // several polls: nothing more may come
    await all.close();
    for (const block of all.raw.filter((b) => !b.includes('event: ping'))) {
      expect(block).toMatch(/^id: \d+$/m);
      expect(block).toMatch(/^event: \S+$/m);
      expect(block).toMatch(/^data: \{.*\}$/m);
    }
    expect(all.events().map((f) => [f.id, f.event, JSON.parse(f.data!)])).toEqual(history.map((e) => [String(e.seq), e.type, e]));

    const n = 3;
    const rest = await openStream(sessionId, String(n));
    await rest.waitFor(history.length - n, 'the events after Last-Event-ID');
    await quiet(300);
    await rest.close();
    expect(rest.events().map((f) => Number(f.id))).toEqual(history.filter((e) => e.seq > n).map((e) => e.seq));
    expect(rest.events().map((f) => JSON.parse(f.data!).id)).toEqual(history.slice(n).map((e) => e.id));

    const upToDate = await openStream(sessionId, String(history.at(-1).seq));
    await quiet(300);
    await upToDate.close();
    expect(upToDate.events()).toEqual([]);
  });

  it('starts at now without Last-Event-ID, delivers new events live, and ends after the session terminates', async () => {
    const sessionId = await startSession(fx.agentId, 'say before');
    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
    const lastSeq = (await eventsOf(stack, sessionId)).at(-1).seq as number;

    const live = await openStream(sessionId);
    await quiet(200);
    expect(live.events()).toEqual([]);
    expect((await send('POST', `/v1/sessions/${sessionId}/events`, { body: { events: [{ type: 'user.message', content: 'say three' }] } })).status).toBe(200);
    await eventually(async () => (live.events().some((f) => f.event === 'session.status_idle') ? true : undefined), { what: 'the live turn', timeoutMs: 15_000 });
    const ids = live.events().map((f) => Number(f.id));
    expect(ids[0]).toBe(lastSeq + 1);
    expect(ids).toEqual(ids.map((_, i) => lastSeq + 1 + i)); // in order, no gaps, no repeats
    expect(live.events().map((f) => f.event)).toEqual(['user.message', 'session.status_running', 'agent.message', 'session.status_idle']);
    expect(JSON.parse(live.events()[2]!.data!).content).toEqual([{ type: 'text', text: 'three' }]);

    expect((await send('POST', `/v1/sessions/${sessionId}/archive`)).status).toBe(200);
    await eventually(async () => (live.ended ? true : undefined), { what: 'the stream to end', timeoutMs: 15_000 });
    expect(live.events().at(-1)?.event).toBe('session.status_terminated');
    await live.close();
  });
});

// ---- Idempotency-Key ------------------------------------------------------------------------------------------

describe('Idempotency-Key', () => {
  async function workflowRuns(sessionId: string): Promise<number> {
    let runs = 0;
    for await (const _ of stack.temporal.workflow.list({ query: `WorkflowId = '${sessionId}'` })) runs += 1;
    return runs;
  }

  it('lands a repeated POST /v1/sessions on the session the first one started, with one workflow', async () => {
    const idempotencyKey = `retry-${Math.random().toString(36).slice(2)}`;
    const body = { agent: fx.agentId, title: 'once' };
    const first = await send('POST', '/v1/sessions', { body, headers: { 'idempotency-key': idempotencyKey } });
    expect(first.status, first.text).toBe(200);
    const before = await writes();
    const second = await send('POST', '/v1/sessions', { body, headers: { 'idempotency-key': idempotencyKey } });
    expect(second.status, second.text).toBe(200);
    expect(second.body.id).toBe(first.body.id);
    expect(await writes()).toEqual(before);

    await eventually(async () => ((await workflowRuns(first.body.id)) >= 1 ? true : undefined), { what: 'the workflow to be visible' });
    expect(await workflowRuns(first.body.id)).toBe(1);
    expect((await stack.temporal.workflow.getHandle(first.body.id).describe()).status.name).toBe('RUNNING');

    // a different key is a different session; the same key in another team is that team's own session
    const other = await send('POST', '/v1/sessions', { body, headers: { 'idempotency-key': `${idempotencyKey}-2` } });
    expect(other.body.id).not.toBe(first.body.id);
    const theirAgent = await createAgent({ name: 'theirs' }, keys.other.admin);
    const theirs = await send('POST', '/v1/sessions', { key: keys.other.admin, body: { agent: theirAgent }, headers: { 'idempotency-key': idempotencyKey } });
    expect(theirs.status, theirs.text).toBe(200);
    expect(theirs.body.id).not.toBe(first.body.id);
  });

  it('lands two concurrent POST /v1/sessions with one key on one session', async () => {
    const idempotencyKey = `race-${Math.random().toString(36).slice(2)}`;
    const before = await writes();
    const results = await Promise.all(
      Array.from({ length: 4 }, () => send('POST', '/v1/sessions', { body: { agent: fx.agentId }, headers: { 'idempotency-key': idempotencyKey } })),
    );
    for (const res of results) expect(res.status, res.text).toBe(200);
    expect(new Set(results.map((r) => r.body.id)).size).toBe(1);
    expect((await writes()).sessions).toBe(before.sessions + 1);
    await eventually(async () => ((await workflowRuns(results[0]!.body.id)) >= 1 ? true : undefined), { what: 'the workflow to be visible' });
    expect(await workflowRuns(results[0]!.body.id)).toBe(1);
  });
});
