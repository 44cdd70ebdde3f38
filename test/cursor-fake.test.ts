/**
 * The Cursor contract fake against the documented v1 shapes (research: runtimes.md §4), with plain fetch.
 * test/cursor-sdk.test.ts runs the official `@cursor/sdk` against the same fake (create, stream, follow-up, cancel,
 * auth), so the fake is checked both against the documented shapes and against the real client.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCursorFake, type CursorFake } from './support/cursor-fake';

let fake: CursorFake;
beforeAll(async () => {
  fake = await startCursorFake();
});
afterAll(async () => {
  await fake?.close();
});

const call = async (method: string, path: string, body?: unknown, auth = `Bearer ${fake.apiKey}`, extra: Record<string, string> = {}) => {
  const res = await fetch(`${fake.url}${path}`, { method, headers: { authorization: auth, 'content-type': 'application/json', ...extra }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as any };
};

async function frames(agentId: string, runId: string, lastEventId?: string) {
  const res = await fetch(`${fake.url}/v1/agents/${agentId}/runs/${runId}/stream`, { headers: { authorization: `Bearer ${fake.apiKey}`, accept: 'text/event-stream', ...(lastEventId ? { 'last-event-id': lastEventId } : {}) } });
  const text = await res.text();
  return text
    .split('\n\n')
    .filter(Boolean)
    .map((f) => Object.fromEntries(f.split('\n').map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 1).trim()])))
    .filter((f) => f.event !== 'heartbeat')
    .map((f) => ({ id: f.id as string, event: f.event as string, data: JSON.parse(f.data as string) }));
}

describe('the cursor contract fake', () => {
  it('refuses a missing or wrong key, accepts Bearer and Basic', async () => {
    expect((await call('GET', '/v1/agents/none', undefined, 'Bearer nope')).status).toBe(401);
    expect((await call('GET', '/v1/agents/none', undefined, `Basic ${Buffer.from(`${fake.apiKey}:`).toString('base64')}`)).status).toBe(404);
  });

  it('creates an agent with a run, streams id/event/data frames, replays after Last-Event-ID', async () => {
    const created = await call('POST', '/v1/agents', { prompt: { text: 'hello' }, model: { id: 'composer-1' }, repos: [{ url: 'https://github.com/a/b' }] });
    expect(created.status).toBe(200);
    expect(created.body).toMatchObject({ agent: { id: expect.any(String), status: 'ACTIVE', latestRunId: created.body.run.id }, run: { id: expect.any(String), agentId: created.body.agent.id } });
    const { agent, run } = created.body;
    const all = await frames(agent.id, run.id);
    expect(all.map((f) => f.event)).toEqual(['status', 'thinking', 'tool_call', 'tool_call', 'assistant', 'interaction_update', 'result', 'done']);
    expect(all[3]!.data).toMatchObject({ name: 'read_file', status: 'completed' });
    expect(all[5]!.data).toEqual({ type: 'turn-ended', usage: { inputTokens: 1000, outputTokens: 200, cacheReadTokens: 0, cacheWriteTokens: 0 } });
    expect(all[6]!.data).toMatchObject({ status: 'FINISHED', text: 'done: hello' });
    const rest = await frames(agent.id, run.id, all[4]!.id);
    expect(rest.map((f) => f.event)).toEqual(['interaction_update', 'result', 'done']);
    expect((await call('GET', `/v1/agents/${agent.id}/runs/${run.id}`)).body).toMatchObject({ id: run.id, status: 'FINISHED' });

    const follow = await call('POST', `/v1/agents/${agent.id}/runs`, { prompt: { text: 'again' } });
    expect(follow.body.run).toMatchObject({ agentId: agent.id });
    expect(fake.prompts).toEqual(['hello', 'again']);
  });

  it('holds a run at the gate, refuses a second run while busy, cancels, and honours Idempotency-Key', async () => {
    fake.hold();
    const a = await call('POST', '/v1/agents', { prompt: { text: 'long' } }, undefined, { 'idempotency-key': 'k1' });
    const again = await call('POST', '/v1/agents', { prompt: { text: 'long' } }, undefined, { 'idempotency-key': 'k1' });
    expect(again.body.run.id).toBe(a.body.run.id);
    expect(fake.prompts.filter((p) => p === 'long')).toHaveLength(1);
    expect((await call('POST', `/v1/agents/${a.body.agent.id}/runs`, { prompt: { text: 'more' } })).status).toBe(409);
    expect((await call('POST', `/v1/agents/${a.body.agent.id}/runs/${a.body.run.id}/cancel`, {})).body).toEqual({ id: a.body.run.id });
    fake.release();
    const all = await frames(a.body.agent.id, a.body.run.id);
    expect(all.at(-2)!.data).toMatchObject({ status: 'CANCELLED' });
    expect(all.at(-1)!.event).toBe('done');
  });
});
