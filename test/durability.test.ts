/**
 * Durability: the worker is SIGKILLed mid-turn and mid-approval, the Temporal dev server restarts mid-session.
 * Each time the session completes, its event log has no gap or duplicate, nothing is charged twice, and the model
 * saw each prompt exactly once. Real OpenCode, real Temporal, real Postgres; the worker is its own process.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../db/client';
import { startTemporalDevServer, type TemporalDevServer } from '../scripts/temporal-dev-server';
import { createGate, startScriptedModel, type ScriptedModel } from './support/scripted-model';
import { eventsOf, eventually, LOCAL_RECEIVERS, startStack, waitForStatus, type Stack } from './support/stack';
import { scriptedAgent } from './support/scripted-agent';
import { spawnWorker, type WorkerProcess } from './support/worker-process';

let temporal: TemporalDevServer;
let temporalDir: string;
let stack: Stack;
let model: ScriptedModel;
let agentId: string;
const workers: WorkerProcess[] = [];

beforeAll(async () => {
  temporalDir = await mkdtemp(join(tmpdir(), 'agentplane-durability-'));
  temporal = await startTemporalDevServer({ dbFile: join(temporalDir, 'temporal.db') });
  // the scripted model listens on 127.0.0.1 (the worker processes get the same allowance)
  stack = await startStack({ temporalAddress: temporal.address, worker: false, allowPrivateEgress: LOCAL_RECEIVERS });
  model = await startScriptedModel();
  agentId = await scriptedAgent(stack, model, { runtime: 'opencode', name: 'durable opencode', secret: 'sk-durability-secret-000', toolPolicy: { rules: [{ tool: 'bash', action: 'ask' }], default: 'allow' } });
}, 180_000);

afterAll(async () => {
  // close each session's runtime (an opencode server per session)
  const ids = rowsOf<{ id: string }>(await stack.db.db.execute(sql`select id from sessions`)).map((r) => r.id);
  for (const id of ids) await stack.call('POST', `/v1/sessions/${id}/archive`).catch(() => undefined);
  // archiving ends each workflow, whose last activity stops the session's opencode server
  await Promise.all(ids.map((id) => stack.temporal.workflow.getHandle(id).result().catch(() => undefined)));
  for (const w of workers) await w.stop();
  await stack?.stop();
  await model?.close();
  await temporal?.stop();
  await rm(temporalDir, { recursive: true, force: true });
}, 120_000);

async function worker() {
  const w = await spawnWorker(stack);
  workers.push(w);
  return w;
}

/** Sequence numbers 1..n with no gap, and no runtime event twice. */
async function expectCleanLog(sessionId: string) {
  const events = await eventsOf(stack, sessionId);
  expect(events.map((e) => e.seq)).toEqual(events.map((_, i) => i + 1));
  const ids = events.map((e) => e.id);
  expect(new Set(ids).size).toBe(ids.length);
  return events;
}

/** The ledger has one charge per model request the runtime reported, and the session total is their sum. */
async function expectNoDoubleCharge(sessionId: string) {
  const [ledger] = rowsOf<{ n: number; total: number }>(await stack.db.db.execute(sql`select count(*)::int as n, coalesce(sum(amount_micros), 0)::bigint as total from ledger where session_id = ${sessionId}`));
  const usageEvents = (await eventsOf(stack, sessionId)).filter((e) => e.type === 'span.model_request_end');
  const session = await stack.call('GET', `/v1/sessions/${sessionId}`);
  expect(ledger!.n).toBe(usageEvents.length);
  expect(Math.round(session.body.usage.cost_usd * 1e6)).toBe(Number(ledger!.total));
}

async function start(prompt: string) {
  const res = await stack.call('POST', '/v1/sessions', { agent: agentId, initial_events: [{ type: 'user.message', content: prompt }] });
  expect(res.status).toBe(200);
  return res.body.id as string;
}

describe('durability', () => {
  it('finishes a turn whose worker was killed mid-turn, without sending the prompt again', async () => {
    const gate = createGate();
    model.setScript([{ match: 'durable turn', steps: [{ text: 'the answer, after a crash', waitFor: gate.promise }] }]);
    const first = await worker();
    const id = await start('durable turn');
    await model.waitForRequest((r) => r.prompt === 'durable turn', 60_000);
    await first.kill();
    await worker();
    gate.release();
    await waitForStatus(stack, id, 'idle', 'end_turn', 90_000);
    expect(model.countPrompts('durable turn')).toBe(1);
    const events = await expectCleanLog(id);
    expect(events.filter((e) => e.type === 'agent.message').map((e) => e.content[0].text)).toEqual(['the answer, after a crash']);
    await expectNoDoubleCharge(id);
  }, 180_000);

  it('finishes a turn whose worker was killed while a tool call waited for approval', async () => {
    model.setScript([{ match: 'durable approval', steps: [{ tool: 'bash', input: { command: 'echo approved-after-crash', description: 'echo' } }, { text: 'done after approval' }] }]);
    const first = await worker();
    const id = await start('durable approval');
    const waiting = await waitForStatus(stack, id, 'requires_action', undefined, 90_000);
    await first.kill();
    await worker();
    const res = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: waiting.pending_approvals[0].tool_use_id, result: 'allow' }] });
    expect(res.status).toBe(200);
    await waitForStatus(stack, id, 'idle', 'end_turn', 90_000);
    expect(model.countPrompts('durable approval')).toBe(1);
    const events = await expectCleanLog(id);
    const result = events.find((e) => e.type === 'agent.tool_result');
    expect(JSON.stringify(result.content)).toContain('approved-after-crash');
    expect(events.filter((e) => e.type === 'agent.message').at(-1).content[0].text).toBe('done after approval');
    await expectNoDoubleCharge(id);
  }, 180_000);

  it('finishes a session whose Temporal dev server restarted mid-turn on the same SQLite file', async () => {
    const gate = createGate();
    model.setScript([{ match: 'durable restart', steps: [{ text: 'survived a Temporal restart', waitFor: gate.promise }] }]);
    if (workers.every((w) => w.child.exitCode !== null)) await worker();
    const id = await start('durable restart');
    await model.waitForRequest((r) => r.prompt === 'durable restart', 60_000);
    await temporal.restart();
    gate.release();
    await waitForStatus(stack, id, 'idle', 'end_turn', 120_000);
    await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'durable restart follow-up' }] });
    await eventually(async () => ((await eventsOf(stack, id)).filter((e) => e.type === 'agent.message').length === 2 ? true : undefined), { timeoutMs: 60_000 });
    await waitForStatus(stack, id, 'idle', 'end_turn', 60_000);
    expect(model.countPrompts('durable restart')).toBe(1);
    await expectCleanLog(id);
    await expectNoDoubleCharge(id);
  }, 240_000);
});
