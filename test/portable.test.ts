/**
 * Portable sessions on one host, with OpenCode: a session's turns go to the worker holding its runtime while two
 * workers run (no restore), and an idle session hibernates (its runtime stopped, started again on the next message).
 * The cases every portable runtime runs (a host lost, a call that waited for a person, a drain) are in test/portable/.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { alive } from '../runtimes/kit/process';
import { scriptedAgent } from './support/scripted-agent';
import { conversation, host, model, stack, start as startOn, usePortableHosts } from './support/portable';
import { eventsOf, eventually, waitForStatus } from './support/stack';

usePortableHosts();
let agentId: string;
const start = (prompt: string) => startOn(prompt, agentId);

describe('portable sessions: OpenCode on one host', () => {
  beforeAll(async () => {
    agentId = await scriptedAgent(stack, model, { runtime: 'opencode', name: 'portable opencode', secret: 'sk-portable-secret-000', toolPolicy: { rules: [], default: 'allow' } });
  });

  it('sends a session\'s turns to the worker holding its runtime while two workers run: no restore, one server', async () => {
    model.setScript([{ match: /^affine turn/, steps: [{ text: (c) => `answered ${c.prompt}` }] }]);
    const [one, two] = [await host('affine-1'), await host('affine-2')];
    const id = await start('affine turn 1');
    await waitForStatus(stack, id, 'idle', 'end_turn', 120_000);
    const holder = [one, two].find((w) => existsSync(join(w.dataDir, 'opencode', id, 'server.json')));
    expect(holder).toBeDefined();
    const { pid } = JSON.parse(await readFile(join(holder!.dataDir, 'opencode', id, 'server.json'), 'utf8')) as { pid: number };
    for (let turn = 2; turn <= 4; turn++) {
      expect((await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: `affine turn ${turn}` }] })).status).toBe(200);
      await eventually(async () => ((await eventsOf(stack, id)).filter((e) => e.type === 'session.status_idle').length === turn ? true : undefined), { timeoutMs: 120_000, what: `turn ${turn} to end` });
    }
    const events = await eventsOf(stack, id);
    expect(events.filter((e) => e.type === 'agent.message').map((e) => e.content[0].text)).toEqual([1, 2, 3, 4].map((n) => `answered affine turn ${n}`));
    // every leg ran where the runtime was: the same server all along, nothing restored, the other worker never had it
    expect(events.filter((e) => e.type === 'session.restored')).toEqual([]);
    expect((JSON.parse(await readFile(join(holder!.dataDir, 'opencode', id, 'server.json'), 'utf8')) as { pid: number }).pid).toBe(pid);
    const other = holder === one ? two : one;
    expect(existsSync(join(other.dataDir, 'opencode', id))).toBe(false);
  }, 300_000);

  it('hibernates an idle session: its runtime is stopped, and the next message starts it again with its history', async () => {
    model.setScript([
      { match: 'sleepy turn one', steps: [{ tool: 'bash', input: { command: 'printf kept-while-asleep > sleepy.txt', description: 'write' } }, { text: 'going idle' }] },
      { match: 'sleepy turn two', steps: [{ tool: 'bash', input: { command: 'cat sleepy.txt', description: 'read' } }, { text: (c) => `woke with ${c.lastToolResult}` }] },
    ]);
    const w = await host('sleepy', { AGENTPLANE_HIBERNATE_SECONDS: '2' });
    const id = await start('sleepy turn one');
    await waitForStatus(stack, id, 'idle', 'end_turn', 120_000);
    const serverFile = join(w.dataDir, 'opencode', id, 'server.json');
    const { pid } = JSON.parse(await readFile(serverFile, 'utf8')) as { pid: number };
    // idle past the grace period: the server is stopped, nothing of the session runs
    await eventually(async () => (w.output().includes('session hibernated') ? true : undefined), { timeoutMs: 30_000, what: 'the idle runtime to stop' });
    expect(alive(pid)).toBe(false);
    expect(existsSync(serverFile)).toBe(false);

    const res = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'sleepy turn two' }] });
    expect(res.status).toBe(200);
    await eventually(async () => ((await eventsOf(stack, id)).filter((e) => e.type === 'session.status_idle').length === 2 ? true : undefined), { timeoutMs: 120_000, what: 'turn 2 to end' });
    const events = await eventsOf(stack, id);
    expect(events.filter((e) => e.type === 'agent.message').map((e) => e.content[0].text)).toEqual(['going idle', 'woke with kept-while-asleep']);
    expect(conversation(model.requestsFor('sleepy turn two')[0]?.body)).toContain('going idle');
    // the same host: its files were current, nothing was restored
    expect(events.filter((e) => e.type === 'session.restored' || e.type === 'session.error')).toEqual([]);
    const next = JSON.parse(await readFile(serverFile, 'utf8')) as { pid: number };
    expect(next.pid).not.toBe(pid);
  }, 300_000);

  it('a worker restarted on the same disk puts to sleep the idle runtimes the one before left running', async () => {
    model.setScript([{ match: 'left running', steps: [{ text: 'idle now' }] }]);
    const before = await host('restarted', { AGENTPLANE_HIBERNATE_SECONDS: '600' });
    const id = await start('left running');
    await waitForStatus(stack, id, 'idle', 'end_turn', 120_000);
    const serverFile = join(before.dataDir, 'opencode', id, 'server.json');
    const { pid } = JSON.parse(await readFile(serverFile, 'utf8')) as { pid: number };
    // the worker dies; its OpenCode server outlives it, as it does by design (a restart reattaches)
    await before.kill();
    expect(alive(pid)).toBe(true);

    const after = await host('restarted', { AGENTPLANE_HIBERNATE_SECONDS: '2' });
    await eventually(async () => (after.output().includes('session hibernated') ? true : undefined), { timeoutMs: 30_000, what: 'the runtime left running to stop' });
    expect(alive(pid)).toBe(false);
    expect(existsSync(serverFile)).toBe(false);
  }, 300_000);
});
