/**
 * The model gateway on the whole stack, with OpenCode in its sandbox: every model request is held on the budgets
 * before it leaves and charged from the provider's usage when it ends; a budget crossed in the middle of a turn refuses
 * the next request and ends the turn `budget_reached` with the ledger at the limit; a session's token works on its
 * own socket only, and not once the session has ended.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import OpenAI from 'openai';
import { sql } from 'drizzle-orm';
import { Agent as UndiciAgent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../db/client';
import { createVault } from '../db/vault';
import { createSessionTokens, TOKEN_PURPOSE } from '../gateway/tokens';
import { createGatewayClient } from '../gateway/client';
import { startGatewayDaemon, type GatewayDaemon } from '../gateway/daemon';
import { createModelMeter } from '../activities/model-meter';
import { createOpenCodeAdapter } from '../runtimes/opencode/opencode.adapter';
import { startScriptedModel, type RecordedRequest, type ScriptedModel } from './support/scripted-model';
import { eventually, LOCAL_RECEIVERS, localEgress, startStack, type Stack } from './support/stack';

const MODEL = 'scripted-model';
/** each request: 100 input and 20 output tokens at $300 / $1500 per million = $0.06 */
const REQUEST_MICROS = 100 * 300 + 20 * 1500;
const shell = (command: string) => ({ tool: ['bash', 'Bash'], input: { command, description: command } });

let stack: Stack;
let model: ScriptedModel;

beforeAll(async () => {
  stack = await startStack({ worker: false, allowPrivateEgress: LOCAL_RECEIVERS });
  model = await startScriptedModel({ usage: { input: 100, output: 20 } });
  await stack.startWorker({ opencode: createOpenCodeAdapter({ dataDir: stack.dataDir, sandboxes: stack.sandboxes }) });
}, 120_000);
afterAll(async () => {
  await stack?.stop();
  await model?.close();
});

/** an OpenCode agent of a new team, with its own key at the provider */
async function teamWithAgent(budget: Record<string, unknown>) {
  const team = await stack.newTeam();
  const key = await team.key('admin');
  await stack.price(MODEL, { input: 300, output: 1500 }, key);
  const secret = `sk-gateway-stack-${Math.random().toString(36).slice(2)}`;
  const credential = await stack.call('POST', '/v1/credentials', { name: 'provider key', secret }, key);
  const agent = await stack.call(
    'POST',
    '/v1/agents',
    { name: 'metered', model: MODEL, runtime: { type: 'opencode' }, model_provider: { base_url: model.openaiBaseUrl, credential_id: credential.body.id }, tool_policy: { rules: [], default: 'allow' }, budget },
    key,
  );
  expect(agent.status, JSON.stringify(agent.body)).toBe(200);
  return { teamId: team.teamId, key, secret, agentId: agent.body.id as string, credentialId: credential.body.id as string };
}

/** the session's state once it is `status` (and its stop reason `stopReason`), read with a key of its team */
async function waitFor(sessionId: string, key: string, status: string, stopReason: string | undefined, timeoutMs: number) {
  return eventually(
    async () => {
      const s = (await stack.call('GET', `/v1/sessions/${sessionId}`, undefined, key)).body;
      return s.status === status && (stopReason === undefined || s.stop_reason?.type === stopReason) ? s : undefined;
    },
    { timeoutMs, what: `session ${sessionId} ${status} ${stopReason ?? ''}` },
  );
}

const eventsOf = async (sessionId: string, key: string): Promise<any[]> => (await stack.call('GET', `/v1/sessions/${sessionId}/events?limit=1000`, undefined, key)).body.data;

const withKey = (secret: string) => (r: RecordedRequest) => [r.headers.authorization, r.headers['x-api-key']].join(' ').includes(secret) && r.protocol !== null;

async function ledgerOf(sessionId: string): Promise<{ n: number; total: number }> {
  const [row] = rowsOf<{ n: number; total: string }>(await stack.db.db.execute(sql`select count(*)::int as n, coalesce(sum(amount_micros), 0)::bigint as total from ledger where session_id = ${sessionId}`));
  return { n: row!.n, total: Number(row!.total) };
}

describe('model requests through the gateway (OpenCode, sandboxed)', () => {
  it('refuses the next model request once the team budget is spent: the turn ends budget_reached, the ledger at the limit', { timeout: 180_000 }, async () => {
    // each request holds at most $0.06 (turn_reserve_usd), exactly what it costs: two fit in $0.12, a third does not
    const { key, secret, agentId } = await teamWithAgent({ turn_reserve_usd: REQUEST_MICROS / 1e6 });
    const budget = await stack.call('POST', '/v1/budgets', { scope: 'team', period: 'month', limit_usd: (2 * REQUEST_MICROS) / 1e6 }, key);
    expect(budget.status, JSON.stringify(budget.body)).toBe(200);
    model.setScript([{ match: 'spend it all', steps: [shell('echo one'), shell('echo two'), shell('echo three'), shell('echo four'), { text: 'never said' }] }]);

    const session = await stack.call('POST', '/v1/sessions', { agent: agentId, initial_events: [{ type: 'user.message', content: 'spend it all' }] }, key);
    expect(session.status).toBe(200);
    const sessionId = session.body.id as string;
    const idle = await waitFor(sessionId, key, 'idle', 'budget_reached', 150_000);
    expect(idle.stop_reason.type).toBe('budget_reached');

    // two requests reached the provider, with the real key; the third was refused before it left
    expect(model.requests.filter(withKey(secret))).toHaveLength(2);
    const events = await eventsOf(sessionId, key);
    const spans = events.filter((e) => e.type === 'span.model_request_end');
    expect(spans.map((e) => [e.metered_by, e.cost_usd, e.model_usage.input_tokens, e.model_usage.output_tokens])).toEqual([
      ['gateway', REQUEST_MICROS / 1e6, 100, 20],
      ['gateway', REQUEST_MICROS / 1e6, 100, 20],
    ]);
    expect(await ledgerOf(sessionId)).toEqual({ n: 2, total: 2 * REQUEST_MICROS });
    const exceeded = events.filter((e) => e.type === 'budget.exceeded');
    expect(exceeded).toHaveLength(1);
    expect(exceeded[0]).toMatchObject({ budget_id: budget.body.id, scope: 'team', limit_usd: (2 * REQUEST_MICROS) / 1e6, spent_usd: (2 * REQUEST_MICROS) / 1e6 });
    expect(events.some((e) => e.type === 'agent.message' && JSON.stringify(e.content).includes('never said'))).toBe(false);
    const window = (await stack.call('GET', '/v1/budgets', undefined, key)).body.data[0].current;
    expect(window).toMatchObject({ spent_usd: (2 * REQUEST_MICROS) / 1e6, reserved_usd: 0 });
    const session_ = (await stack.call('GET', `/v1/sessions/${sessionId}`, undefined, key)).body;
    expect(Math.round(session_.usage.cost_usd * 1e6)).toBe(2 * REQUEST_MICROS);
  });

  it('takes a session\'s token on its own socket only, and refuses it (401) once the session has ended', { timeout: 180_000 }, async () => {
    const { key, agentId, credentialId } = await teamWithAgent({});
    model.setScript([{ match: 'hello', steps: [{ text: 'hi' }] }]);
    const start = async () => {
      const s = await stack.call('POST', '/v1/sessions', { agent: agentId, initial_events: [{ type: 'user.message', content: 'hello' }] }, key);
      await waitFor(s.body.id, key, 'idle', 'end_turn', 120_000);
      return s.body.id as string;
    };
    const [a, b] = [await start(), await start()];
    const tokens = createSessionTokens(createVault(stack.masterKey).deriveKeys(TOKEN_PURPOSE));
    // what the runtime in session a's sandbox reaches as its model endpoint: a connection kept open, as a runtime keeps it
    const socketOf = (sessionId: string) => join(stack.dataDir, 'run', sessionId, 'model.sock');
    const held = new UndiciAgent({ connect: { socketPath: socketOf(a) }, connections: 1 });
    const models = (token: string, dispatcher: UndiciAgent) => undiciFetch('http://model/v1/models', { headers: { authorization: `Bearer ${token}` }, dispatcher });

    const own = await models(tokens.issue(a, credentialId), held);
    expect(own.status).not.toBe(401);
    await own.text();
    // a's token on b's socket
    const onB = new UndiciAgent({ connect: { socketPath: socketOf(b) } });
    const crossed = await models(tokens.issue(a, credentialId), onB);
    expect(crossed.status).toBe(401);
    expect(await crossed.json()).toMatchObject({ error: { code: 'invalid_api_key' } });

    const archived = await stack.call('POST', `/v1/sessions/${a}/archive`, undefined, key);
    expect(archived.status).toBe(200);
    await waitFor(a, key, 'terminated', undefined, 60_000);
    const after = await models(tokens.issue(a, credentialId), held);
    expect(after.status).toBe(401);
    await after.text();
    // b is still served
    const bOwn = await models(tokens.issue(b, credentialId), onB);
    expect(bOwn.status).not.toBe(401);
    await bOwn.text();
    await Promise.all([held.close(), onB.close()]);
  });

  it('holds 20 concurrent sessions\' requests on one team budget: exactly what it covers is sent, the rest refused before leaving', { timeout: 120_000 }, async () => {
    // the gateway daemon and the worker's meter as a worker has them, on this stack's database; the sessions' runtimes
    // are the OpenAI SDK, 20 of them at once, three requests each, against a budget that covers 25 requests
    const { teamId, key, agentId, credentialId } = await teamWithAgent({});
    const budget = await stack.call('POST', '/v1/budgets', { scope: 'team', period: 'month', limit_usd: (25 * REQUEST_MICROS) / 1e6 }, key);
    expect(budget.status).toBe(200);
    const scripted = await stack.call('POST', '/v1/agents', { name: 'holder', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' } }, key);
    const sessions = await Promise.all(Array.from({ length: 20 }, async () => (await stack.call('POST', '/v1/sessions', { agent: scripted.body.id }, key)).body.id as string));

    const runDir = await mkdtemp(join(tmpdir(), 'agentplane-budget-'));
    const meter = createModelMeter({ db: stack.db.db });
    const tokens = createSessionTokens(createVault(stack.masterKey).deriveKeys(TOKEN_PURPOSE));
    let daemon: GatewayDaemon | null = null;
    const client = createGatewayClient({ runDir, tokens, onAdmit: meter.admit, onRecord: meter.record, start: async (controlPath) => void (daemon = await startGatewayDaemon({ controlPath, dispatcher: localEgress().dispatcher })) });
    const before = model.requests.length;
    try {
      const outcomes = await Promise.all(
        sessions.map(async (sessionId) => {
          meter.open(sessionId, { runtime: 'opencode', teamId, agentId, agentModel: MODEL, actor: { teamId, actorKeyId: 'test', actorRole: 'admin' }, capMicros: null, holdCapMicros: REQUEST_MICROS, overrides: { [MODEL]: { input: 300, output: 1500 } } });
          const token = client.register({ sessionId, credentialId, apiKey: 'sk-concurrent' });
          const socketPath = join(runDir, `${sessionId}.sock`);
          await client.listen(sessionId, model.openaiBaseUrl, { path: socketPath, uid: process.getuid!(), gid: process.getgid!() });
          const dispatcher = new UndiciAgent({ connect: { socketPath } });
          const viaSocket = ((url: string, init: object) => undiciFetch(url, { ...init, dispatcher })) as unknown as typeof fetch;
          const openai = new OpenAI({ baseURL: 'http://model/v1', apiKey: token, maxRetries: 2, fetch: viaSocket });
          const results: Array<'sent' | 402> = [];
          for (let i = 0; i < 3; i++) {
            try {
              // ~300 tokens of input by the gateway's estimate, more than the 100 the model reports: each request holds
              // the agent's cap, $0.06, exactly what it costs
              await openai.chat.completions.create({ model: MODEL, max_tokens: 20, messages: [{ role: 'user', content: 'hello '.repeat(200) }] });
              results.push('sent');
            } catch (err) {
              results.push((err as { status: number }).status as 402);
            }
          }
          await meter.finish(sessionId);
          return results;
        }),
      );
      const flat = outcomes.flat();
      expect(flat.filter((r) => r === 'sent')).toHaveLength(25);
      expect(flat.filter((r) => r === 402)).toHaveLength(35);
      // refused requests never left, and none was retried
      expect(model.requests.length - before).toBe(25);
      const [ledger] = rowsOf<{ n: number; total: string }>(await stack.db.db.execute(sql`select count(*)::int as n, coalesce(sum(amount_micros), 0)::bigint as total from ledger where team_id = ${teamId}`));
      expect({ n: ledger!.n, total: Number(ledger!.total) }).toEqual({ n: 25, total: 25 * REQUEST_MICROS });
      const window = (await stack.call('GET', '/v1/budgets', undefined, key)).body.data[0].current;
      expect(window).toMatchObject({ spent_usd: (25 * REQUEST_MICROS) / 1e6, reserved_usd: 0, remaining_usd: 0 });
    } finally {
      client.close();
      await (daemon as GatewayDaemon | null)?.close();
      await rm(runDir, { recursive: true, force: true });
    }
  });
});
