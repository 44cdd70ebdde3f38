/**
 * Portable sessions: a session survives losing its host. Two workers, each its own OS process with its own data dir
 * (two hosts on one machine); worker A and every process it started get SIGKILL and its data dir is deleted, and
 * worker B continues the session from its snapshot: the model sees the whole conversation, the workspace has turn 1's
 * file, and nothing was sent twice. Real OpenCode, real Temporal, real Postgres.
 */
import { existsSync } from 'node:fs';
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../db/client';
import { createGate, startScriptedModel, type ScriptedModel } from './support/scripted-model';
import { eventsOf, eventually, LOCAL_RECEIVERS, startStack, waitForStatus, type Stack } from './support/stack';
import { killHostProcesses } from './support/host-kill';
import { scriptedOpenCodeAgent } from './support/opencode-agent';
import { spawnWorker, type WorkerProcess } from './support/worker-process';
import { alive } from '../runtimes/kit/process';

let stack: Stack;
let model: ScriptedModel;
let agentId: string;
let hostsDir: string;
const workers: Host[] = [];
type Host = WorkerProcess & { dataDir: string };

beforeAll(async () => {
  stack = await startStack({ worker: false, allowPrivateEgress: LOCAL_RECEIVERS });
  model = await startScriptedModel();
  hostsDir = await mkdtemp(join(tmpdir(), 'agentplane-hosts-'));
  await chmod(hostsDir, 0o711);
  agentId = await scriptedOpenCodeAgent(stack, model, { name: 'portable opencode', secret: 'sk-portable-secret-000', toolPolicy: { rules: [], default: 'allow' } });
}, 180_000);

// each test starts the workers it needs: none of an earlier test's takes its sessions
afterEach(async () => {
  for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) await w.stop();
}, 60_000);

afterAll(async () => {
  // one worker to end the sessions: each one's runtime is closed where it ran, or here once that host is found gone
  const cleanup = await host('cleanup').catch(() => null);
  const ids = rowsOf<{ id: string }>(await stack.db.db.execute(sql`select id from sessions`)).map((r) => r.id);
  for (const id of ids) await stack.call('POST', `/v1/sessions/${id}/archive`).catch(() => undefined);
  await Promise.race([Promise.all(ids.map((id) => stack.temporal.workflow.getHandle(id).result().catch(() => undefined))), new Promise((r) => setTimeout(r, 90_000))]);
  await cleanup?.stop();
  for (const w of workers) killHost(w.dataDir);
  await stack?.stop();
  await model?.close();
  await rm(hostsDir, { recursive: true, force: true });
}, 180_000);

/** A worker on a host of its own: its own data dir, nothing shared with the others but Postgres and Temporal. */
async function host(name: string, env: Record<string, string> = {}): Promise<Host> {
  const dataDir = join(hostsDir, name);
  const w = Object.assign(await spawnWorker({ ...stack, dataDir }, env), { dataDir });
  workers.push(w);
  return w;
}

/**
 * The host is lost: SIGKILL to the worker and to every process it started (each runtime server in its sandbox, its
 * model bridges, its gateway daemon: test/support/host-kill.ts), then its disk goes.
 */
async function loseHost(w: Host): Promise<void> {
  await w.kill();
  killHost(w.dataDir);
  await rm(w.dataDir, { recursive: true, force: true });
}

function killHost(dataDir: string): void {
  killHostProcesses(dataDir);
}

async function start(prompt: string) {
  const res = await stack.call('POST', '/v1/sessions', { agent: agentId, initial_events: [{ type: 'user.message', content: prompt }] });
  expect(res.status).toBe(200);
  return res.body.id as string;
}

/** The text of every message the model was sent in one request (OpenAI chat shape), in order. */
function conversation(body: unknown): string {
  const messages = (body as { messages?: Array<{ role: string; content: unknown }> }).messages ?? [];
  return messages.map((m) => `${m.role}: ${typeof m.content === 'string' ? m.content : JSON.stringify(m.content)}`).join('\n');
}

describe('portable sessions', () => {
  it('continues on another host after its host is lost between turns: history, workspace, and no prompt sent twice', async () => {
    model.setScript([
      { match: 'portable turn one', steps: [{ tool: 'bash', input: { command: 'printf portable-file-content-42 > notes.txt', description: 'write a note' } }, { text: 'wrote the note' }] },
      { match: 'portable turn two', steps: [{ tool: 'bash', input: { command: 'cat notes.txt', description: 'read the note' } }, { text: (c) => `the note says ${c.lastToolResult}` }] },
    ]);
    const a = await host('a');
    const id = await start('portable turn one');
    await waitForStatus(stack, id, 'idle', 'end_turn', 120_000);
    await loseHost(a);

    await host('b');
    const res = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'portable turn two' }] });
    expect(res.status).toBe(200);
    // turn 2 has ended when its status event is in the log (the session was idle before it too)
    await eventually(async () => ((await eventsOf(stack, id)).filter((e) => e.type === 'session.status_idle').length === 2 ? true : undefined), { timeoutMs: 120_000, what: 'turn 2 to end' }).catch(async (err) => {
      throw new Error(`${(err as Error).message}\n${JSON.stringify(await eventsOf(stack, id), null, 1).slice(0, 4000)}\n${workers[1]?.output().slice(-4000)}`);
    });
    expect((await stack.call('GET', `/v1/sessions/${id}`)).body.stop_reason).toEqual({ type: 'end_turn' });

    // the model's first request of turn 2 carries turn 1: its prompt, its tool call and its answer
    const firstOfTurnTwo = model.requestsFor('portable turn two')[0];
    const sent = conversation(firstOfTurnTwo?.body);
    expect(sent).toContain('portable turn one');
    expect(sent).toContain('wrote the note');
    expect(sent).toContain('portable turn two');
    // turn 1's prompt went to the model once
    expect(model.countPrompts('portable turn one')).toBe(1);
    expect(model.countPrompts('portable turn two')).toBe(1);

    const events = await eventsOf(stack, id);
    // the tool of turn 2 read the file turn 1 wrote, on the other host
    const results = events.filter((e) => e.type === 'agent.tool_result').map((e) => JSON.stringify(e.content));
    expect(results.at(-1)).toContain('portable-file-content-42');
    expect(events.filter((e) => e.type === 'agent.message').at(-1).content[0].text).toContain('portable-file-content-42');
    // the move is on the record, and nothing failed
    expect(events.filter((e) => e.type === 'session.restored')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'session.error' || e.type === 'session.snapshot_failed')).toEqual([]);
  }, 300_000);

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

  it('carries out a call approved after the host where it waited was lost: the tool runs once, the turn ends end_turn', async () => {
    const append = { command: 'echo approved-run >> runs.txt; cat runs.txt', description: 'append a line' };
    model.setScript([
      { match: 'parked turn', steps: [{ tool: 'bash', input: append }, { text: 'not reached: the host is lost first' }] },
      // told what became of its call, the model makes it again, as a real one would
      { match: (p) => p.includes('moved to another machine'), steps: [{ tool: 'bash', input: append }, { text: (c) => `ran after the move: ${c.lastToolResult}` }] },
    ]);
    const asking = await scriptedOpenCodeAgent(stack, model, { name: 'portable, asks', secret: 'sk-portable-secret-001', toolPolicy: { rules: [{ tool: 'bash', action: 'ask' }], default: 'allow' } });
    const a = await host('park-a');
    const res = await stack.call('POST', '/v1/sessions', { agent: asking, initial_events: [{ type: 'user.message', content: 'parked turn' }] });
    const id = res.body.id as string;
    const waiting = await waitForStatus(stack, id, 'requires_action', undefined, 120_000);
    await loseHost(a);

    await host('park-c');
    const approved = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: waiting.pending_approvals[0].tool_use_id, result: 'allow' }] });
    expect(approved.status).toBe(200);
    await waitForStatus(stack, id, 'idle', 'end_turn', 180_000);

    const events = await eventsOf(stack, id);
    // the tool ran once: the file it appends to has one line
    expect(events.filter((e) => e.type === 'agent.message').at(-1).content[0].text).toBe('ran after the move: approved-run\n');
    const uses = events.filter((e) => e.type === 'agent.tool_use');
    expect(uses.map((e) => e.evaluated_permission)).toEqual(['ask', 'allow']);
    expect(uses[1].evaluation.rule).toContain(`approved as ${waiting.pending_approvals[0].tool_use_id}`);
    expect(events.filter((e) => e.type === 'session.restored')).toHaveLength(1);
    expect(events.filter((e) => e.type === 'session.error' || e.type === 'session.snapshot_failed')).toEqual([]);
    expect(model.countPrompts('parked turn')).toBe(1);
  }, 300_000);

  it('drains on SIGTERM: the turn in flight ends on the stopping worker, and another host continues the session', async () => {
    const gate = createGate();
    model.setScript([
      { match: 'drain turn one', steps: [{ tool: 'bash', input: { command: 'printf drained-note-43 > drained.txt', description: 'write a note' } }, { text: 'finished while draining', waitFor: gate.promise }] },
      { match: 'drain turn two', steps: [{ tool: 'bash', input: { command: 'cat drained.txt', description: 'read the note' } }, { text: (c) => `still there: ${c.lastToolResult}` }] },
    ]);
    const a = await host('drain-a');
    const id = await start('drain turn one');
    // the turn is in flight: its tool ran, and the model's answer is held
    await model.waitForRequest((r) => r.prompt === 'drain turn one' && r.stepIndex === 1, 120_000);
    const stopping = a.stop();
    await new Promise((r) => setTimeout(r, 1_000));
    gate.release();
    await stopping;
    // it stopped by itself, once its turn was over (stop() would have used SIGKILL after 15 s)
    expect(a.child.signalCode).toBeNull();
    await loseHost(a);

    await host('drain-b');
    await waitForStatus(stack, id, 'idle', 'end_turn', 120_000);
    const res = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'drain turn two' }] });
    expect(res.status).toBe(200);
    await eventually(async () => ((await eventsOf(stack, id)).filter((e) => e.type === 'session.status_idle').length === 2 ? true : undefined), { timeoutMs: 120_000, what: 'turn 2 to end' });
    const events = await eventsOf(stack, id);
    expect(events.filter((e) => e.type === 'agent.message').map((e) => e.content[0].text)).toEqual(['finished while draining', 'still there: drained-note-43']);
    expect(events.filter((e) => e.type === 'session.status_idle').map((e) => e.stop_reason.type)).toEqual(['end_turn', 'end_turn']);
    expect(events.filter((e) => e.type === 'session.error' || e.type === 'session.snapshot_failed')).toEqual([]);
    expect(model.countPrompts('drain turn one')).toBe(1);
    expect(conversation(model.requestsFor('drain turn two')[0]?.body)).toContain('finished while draining');
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
});
