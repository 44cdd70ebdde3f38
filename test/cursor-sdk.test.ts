/**
 * The official Cursor SDK (`@cursor/sdk@1.0.18`) against our Cursor contract fake, through `CURSOR_BACKEND_URL`: if
 * the SDK accepts the fake, the fake speaks the real API. The SDK is not a project dependency; it is installed by
 * `scripts/ensure-cursor-sdk.sh` (which `.ci/run` calls, and which runs here when it has not run yet: about a minute,
 * for its sqlite3 addon). If it cannot be installed these tests are skipped with the reason, except in CI, where
 * they fail.
 */
import { execFileSync } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCursorFake, type CursorFake } from './support/cursor-fake';

function cursorSdkEntry(): { entry: string | null; reason: string } {
  try {
    const out = execFileSync('bash', ['scripts/ensure-cursor-sdk.sh'], { stdio: ['ignore', 'pipe', 'inherit'] });
    return { entry: out.toString().trim().split('\n').at(-1)!, reason: '' };
  } catch (err) {
    const reason = `scripts/ensure-cursor-sdk.sh failed: ${(err as Error).message}`;
    if (process.env.CI) throw new Error(`the Cursor SDK is required in CI: ${reason}`);
    console.error(`[cursor-sdk] SKIPPING the Cursor SDK tests: ${reason}`);
    return { entry: null, reason };
  }
}

const sdk = process.env.AGENTPLANE_CURSOR_SDK ? { entry: process.env.AGENTPLANE_CURSOR_SDK, reason: '' } : cursorSdkEntry();

let fake: CursorFake;
let Agent: any;
const backendUrl = process.env.CURSOR_BACKEND_URL;
beforeAll(async () => {
  if (!sdk.entry) return;
  fake = await startCursorFake();
  process.env.CURSOR_BACKEND_URL = fake.url;
  ({ Agent } = await import(sdk.entry));
});
afterAll(async () => {
  await fake?.close();
  if (backendUrl === undefined) delete process.env.CURSOR_BACKEND_URL;
  else process.env.CURSOR_BACKEND_URL = backendUrl;
});

const createAgent = () => Agent.create({ apiKey: fake.apiKey, model: { id: 'composer-1' }, cloud: { repos: [{ url: 'https://github.com/a/b' }] } });

describe.skipIf(!sdk.entry)('the official Cursor SDK against the contract fake', () => {
  it('creates an agent, streams its run to the end (tool call, text, usage), then sends a follow-up', async () => {
    const agent = await createAgent();
    const deltas: any[] = [];
    const run = await agent.send('hello', { onDelta: ({ update }: { update: unknown }) => void deltas.push(update) });
    const messages: any[] = [];
    for await (const message of run.stream()) messages.push(message);

    expect(messages.map((m) => m.type)).toEqual(['status', 'thinking', 'tool_call', 'tool_call', 'assistant']);
    expect(messages[3]).toMatchObject({ agent_id: agent.agentId, run_id: run.id, name: 'read_file', status: 'completed', args: { path: 'README.md' }, result: '# readme' });
    expect(messages[4].message.content).toEqual([{ type: 'text', text: 'done: hello' }]);
    expect(deltas).toContainEqual({ type: 'turn-ended', usage: { inputTokens: 1000, outputTokens: 200, cacheReadTokens: 0, cacheWriteTokens: 0 } });
    expect(await run.wait()).toMatchObject({ id: run.id, status: 'finished', result: 'done: hello' });
    expect(fake.agents.get(agent.agentId)?.body).toMatchObject({ prompt: { text: 'hello' }, model: { id: 'composer-1' }, repos: [{ url: 'https://github.com/a/b' }] });

    const followUp = await agent.send('again');
    expect(await followUp.wait()).toMatchObject({ status: 'finished', result: 'done: again' });
    expect(fake.agents.get(agent.agentId)?.runs).toEqual([run.id, followUp.id]);
  });

  it('cancels a run the fake is holding', async () => {
    fake.hold();
    try {
      const agent = await createAgent();
      const run = await agent.send('long');
      await run.cancel();
      expect(await run.wait()).toMatchObject({ id: run.id, status: 'cancelled' });
      expect(run.status).toBe('cancelled');
      expect(fake.runs.get(run.id)?.status).toBe('CANCELLED');
    } finally {
      fake.release();
    }
  });

  it('sent every request with the API key as a Bearer token and its SDK headers', () => {
    const seen = fake.requests.map((r) => `${r.method} ${r.path.replace(/\/(bc|run)-[^/]+/g, '/$1-*')}`);
    expect(new Set(seen)).toEqual(
      new Set([
        'POST /auth/exchange_user_api_key',
        'GET /v1/models',
        'POST /v1/agents',
        'GET /v1/agents/bc-*/runs/run-*/stream',
        'POST /v1/agents/bc-*/runs',
        'POST /v1/agents/bc-*/runs/run-*/cancel',
      ]),
    );
    for (const r of fake.requests) expect(r.headers.authorization).toBe(`Bearer ${fake.apiKey}`);
    for (const r of fake.requests.filter((r) => r.path.startsWith('/v1/'))) expect(r.headers['x-cursor-client-type']).toBe('sdk');
  });

  it('surfaces a wrong API key as an authentication error', async () => {
    // Agent.create is lazy: the agent is created on the server with its first run
    const agent = await Agent.create({ apiKey: 'wrong', model: { id: 'composer-1' }, cloud: {} });
    await expect(agent.send('hello')).rejects.toMatchObject({ name: 'AuthenticationError' });
  });
});
