/**
 * The platform the API fuzzer (scripts/fuzz-api.ts) runs against: a private Temporal dev server, a fresh Postgres
 * database, the API on a random port and an in-process worker with the scripted runtime (bench/support.ts
 * startPlatform). It seeds one object of every kind a path names, so generated requests reach real rows and not
 * only 404s, and makes a key of every kind the fuzzer sends.
 *
 *   npx tsx scripts/fuzz-target.ts      # starts it, prints { url, keys, params } as JSON, serves until Ctrl-C
 */
import { sql } from 'drizzle-orm';
import { pathToFileURL } from 'node:url';
import { hashKey } from '../db/queries/teams';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { startPlatform, type BenchPlatform } from '../bench/support';
import { waitForStatus, type Stack } from '../test/support/stack';

/**
 * The keys the fuzzer sends, one Schemathesis run each. `null`: no key at all.
 * - admin: every permission, the run that reaches the handlers and their validation
 * - viewer: a low-privilege role (reads, no writes): writes must answer 403
 * - other_team: a valid admin key of another team: every seeded id must answer 404
 * - revoked, unknown, malformed, missing: 401 everywhere under /v1
 */
export const KEY_KINDS = ['admin', 'viewer', 'other_team', 'revoked', 'unknown', 'malformed', 'missing'] as const;
export type KeyKind = (typeof KEY_KINDS)[number];

export interface FuzzTarget {
  url: string;
  keys: Record<KeyKind, string | null>;
  /** path parameter name → a seeded id of the stack's own team */
  params: Record<string, string>;
  platform: BenchPlatform;
  stop(): Promise<void>;
}

export async function startFuzzTarget(): Promise<FuzzTarget> {
  const platform = await startPlatform({ scripted: createScriptedAdapter() });
  const { stack } = platform;
  const post = async (path: string, body: unknown): Promise<Record<string, any>> => {
    const res = await stack.call('POST', path, body);
    if (res.status !== 200) throw new Error(`seeding ${path}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body;
  };

  const agent = await post('/v1/agents', {
    name: 'fuzz agent',
    model: 'scripted',
    runtime: { type: 'scripted' },
    tool_policy: { rules: [{ tool: 'write', action: 'ask' }], default: 'allow' },
  });
  const environment = await post('/v1/environments', { name: 'fuzz environment' });
  const credential = await post('/v1/credentials', { name: 'fuzz credential', secret: `sk-fuzz-${Math.random().toString(36).slice(2)}` });
  // parked in requires_action on one tool call, so the approvals routes and tool confirmations have a real tool_use_id
  const waiting = await post('/v1/sessions', { agent: agent.id, initial_events: [{ type: 'user.message', content: 'tool write /tmp/fuzz.md\nsay written' }] });
  const parked = await waitForStatus(stack, waiting.id, 'requires_action');
  // a schedule on a leap-day cron, paused: nothing it does starts a session during a run
  const schedule = await post('/v1/schedules', { agent: agent.id, prompt: 'say scheduled', spec: { cron: ['0 0 29 2 *'] }, paused: true });
  const webhook = await post('/v1/webhooks', { url: 'http://203.0.113.10:9/fuzz-webhook' });
  const budget = await post('/v1/budgets', { scope: 'team', period: 'month', limit_usd: 1000 });
  // a key the revoke route may point at (the fuzzer's own keys must stay usable)
  const spareKeyId = await keyIdOf(stack, await stack.key('viewer'));

  const revoked = await stack.key('admin');
  const revokedRes = await stack.call('POST', `/v1/keys/${await keyIdOf(stack, revoked)}/revoke`);
  if (revokedRes.status !== 200) throw new Error(`revoking a key: ${revokedRes.status}`);

  const keys: Record<KeyKind, string | null> = {
    admin: stack.adminKey,
    viewer: await stack.key('viewer'),
    other_team: await stack.key('admin', 'other'),
    revoked,
    // the shape of a real key, never issued
    unknown: `${stack.adminKey.slice(0, 7)}${'0'.repeat(Math.max(8, stack.adminKey.length - 7))}`,
    malformed: 'not a key \u00e9',
    missing: null,
  };
  return {
    url: stack.url,
    keys,
    params: {
      agent_id: agent.id,
      environment_id: environment.id,
      credential_id: credential.id,
      session_id: waiting.id,
      tool_use_id: parked.pending_approvals[0].tool_use_id,
      schedule_id: schedule.id,
      webhook_id: webhook.id,
      budget_id: budget.id,
      key_id: spareKeyId,
      model: 'scripted',
    },
    platform,
    stop: () => platform.stop(),
  };
}

async function keyIdOf(stack: Stack, plain: string): Promise<string> {
  const result = (await stack.db.db.execute(sql`select id from api_keys where hash = ${hashKey(plain)}`)) as unknown as { rows: Array<{ id: string }> };
  return result.rows[0]!.id;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const target = await startFuzzTarget();
  console.log(JSON.stringify({ url: target.url, keys: target.keys, params: target.params }, null, 2));
  console.error('fuzz target: serving until Ctrl-C');
  const stop = async () => {
    await target.stop();
    process.exit(0);
  };
  process.once('SIGINT', () => void stop());
  process.once('SIGTERM', () => void stop());
}
