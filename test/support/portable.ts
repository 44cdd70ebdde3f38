/**
 * Portable sessions: a session survives losing its host. Workers are OS processes, each with its own data dir (hosts
 * on one machine); a lost host's worker and every process it started get SIGKILL and its data dir is deleted, and
 * another worker continues the session from its snapshot. Every runtime that snapshots its sessions
 * (`portable: 'snapshot'`) runs the same cases (`describePortable`, one file per runtime in test/portable/, so two run
 * at once): a host lost between turns, a host lost while a call waited for a person, a worker drained by SIGTERM.
 * Real runtimes, real Temporal, real Postgres, the scripted model.
 */
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../../db/client';
import { createGate, startScriptedModel, type ScriptedModel, type ScriptStep } from './scripted-model';
import { ensureHermes } from './hermes';
import { eventsOf, eventually, LOCAL_RECEIVERS, startStack, waitForStatus, type Stack } from './stack';
import { killHostProcesses } from './host-kill';
import { scriptedAgent } from './scripted-agent';
import { RUNTIME_CAPABILITIES } from '../../runtimes/registry';
import type { RuntimeKind } from '../../runtimes/runtime-adapter';
import { spawnWorker, type WorkerProcess } from './worker-process';
import { decodeChunk } from '../../snapshots/snapshotter';

export let stack: Stack;
export let model: ScriptedModel;
let hostsDir: string;
const workers: Host[] = [];
export type Host = WorkerProcess & { dataDir: string };
/** every worker can run each runtime under test */
const RUNTIMES = 'opencode,claude-code,deepagents,hermes,openclaw,acp';

/** How a portable runtime's agent is made, and how its model requests read. */
interface PortableRuntime {
  kind: RuntimeKind;
  /** creates an agent on the scripted model with this policy; answers its id */
  agent(opts: { name: string; secret: string; toolPolicy: Record<string, unknown> }): Promise<string>;
  /**
   * how a call that waited for a person is carried out after its host was lost: the runtime is told the decision and
   * makes the call again (`notice`: its process held the call), or the restored state holds the pending call itself
   * (`state`: DeepAgents' graph checkpoint)
   */
  inFlight: 'notice' | 'state';
  /** the model's step that runs a shell command with this runtime's tool */
  bash?(command: string): ScriptStep;
  /** the runtime's events carry no tool output (Hermes 0.19's `tool.completed`): the agent's answer shows it */
  resultsWithoutContent?: true;
}

/** OpenCode's bash, Claude Code's Bash, DeepAgents' execute: the model calls the one the runtime offers */
const bashStep = (rt: PortableRuntime, command: string): ScriptStep => rt.bash?.(command) ?? { tool: ['bash', 'Bash', 'execute'], input: { command, description: 'a shell command' } };

const PORTABLE: PortableRuntime[] = [
  { kind: 'opencode', agent: (opts) => scriptedAgent(stack, model, { ...opts, runtime: 'opencode' }), inFlight: 'notice' },
  // Claude Code speaks the Anthropic Messages API: the scripted model's root URL
  { kind: 'claude-code', agent: (opts) => scriptedAgent(stack, model, { ...opts, runtime: 'claude-code', model: 'claude-sonnet-4-5', baseUrl: model.url }), inFlight: 'notice' },
  // a model in the default pricing table: DeepAgents reports tokens, the ledger prices them
  { kind: 'deepagents', agent: (opts) => scriptedAgent(stack, model, { ...opts, runtime: 'deepagents', model: 'gpt-4.1' }), inFlight: 'state' },
  // Hermes keeps a run in its server's process only: a run that waited for a person is lost with its host
  {
    kind: 'hermes',
    agent: (opts) => {
      ensureHermes();
      return scriptedAgent(stack, model, { ...opts, runtime: 'hermes', model: 'claude-sonnet-4-5' });
    },
    inFlight: 'notice',
    bash: (command) => ({ tool: 'terminal', input: { command } }),
    resultsWithoutContent: true,
  },
  // the built-in OpenCode agent over ACP: `session/load` on the other host; a parked call's process is lost with it
  {
    kind: 'acp',
    agent: (opts) => scriptedAgent(stack, model, { ...opts, runtime: 'acp', config: { agent: 'opencode' } }),
    inFlight: 'notice',
  },
  // no approvals (its gateway cannot hold a call for a person): no call can wait when its host is lost
  {
    kind: 'openclaw',
    agent: (opts) => scriptedAgent(stack, model, { ...opts, runtime: 'openclaw' }),
    inFlight: 'notice',
    bash: (command) => ({ tool: 'exec', input: { command } }),
  },
];

/** A stack and the scripted model for the file, and the hosts its tests start, all gone after it. */
export function usePortableHosts(): void {
  beforeAll(async () => {
    stack = await startStack({ worker: false, allowPrivateEgress: LOCAL_RECEIVERS });
    model = await startScriptedModel();
    hostsDir = await mkdtemp(join(tmpdir(), 'agentplane-hosts-'));
    await chmod(hostsDir, 0o711);
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
}

/** A worker on a host of its own: its own data dir, nothing shared with the others but Postgres and Temporal. */
export async function host(name: string, env: Record<string, string> = {}): Promise<Host> {
  const dataDir = join(hostsDir, name);
  const w = Object.assign(await spawnWorker({ ...stack, dataDir }, { AGENTPLANE_RUNTIMES: RUNTIMES, ...env }), { dataDir });
  workers.push(w);
  return w;
}

/**
 * The host is lost: SIGKILL to the worker and to every process it started (each runtime server in its sandbox, its
 * model bridges, its gateway daemon: test/support/host-kill.ts), then its disk goes.
 */
export async function loseHost(w: Host): Promise<void> {
  await w.kill();
  killHost(w.dataDir);
  await rm(w.dataDir, { recursive: true, force: true });
}

function killHost(dataDir: string): void {
  killHostProcesses(dataDir);
}

export async function start(prompt: string, agent: string) {
  const res = await stack.call('POST', '/v1/sessions', { agent, initial_events: [{ type: 'user.message', content: prompt }] });
  expect(res.status).toBe(200);
  return res.body.id as string;
}

/** The text of every message the model was sent in one request (OpenAI chat or Anthropic Messages shape), in order. */
export function conversation(body: unknown): string {
  const messages = (body as { messages?: Array<{ role: string; content: unknown }> }).messages ?? [];
  return messages.map((m) => `${m.role}: ${typeof m.content === 'string' ? m.content : JSON.stringify(m.content)}`).join('\n');
}

/** The model's first request of the exchange a prompt starts (Claude Code puts system reminders before a prompt, OpenClaw a timestamp). */
export function firstRequestOf(prompt: string) {
  return model.requests.find((r) => r.stepIndex === 0 && r.prompt?.includes(prompt) === true);
}

/**
 * How often a prompt started an exchange with the model: more than once means it was sent twice. Only the agent's own
 * requests count, the ones that offer it tools: a runtime's side requests (OpenCode behind ACP and Hermes ask the model
 * for a session title, with the first prompt in it) do not. Nor does the exchange the loss notice starts: Hermes joins
 * it to the turn's prompt, the last user message of the conversation it restored, into one message.
 */
export function timesSent(prompt: string): number {
  const offersTools = (body: unknown) => ((body as { tools?: unknown[] }).tools?.length ?? 0) > 0;
  return model.requests.filter((r) => r.stepIndex === 0 && r.prompt?.includes(prompt) === true && !r.prompt.includes(LOSS_NOTICE) && offersTools(r.body)).length;
}

/** what every runtime's loss notice says (runtimes/kit/lost-calls.ts) */
const LOSS_NOTICE = 'moved to another machine';

/** Waits for the session's `n`th `session.status_idle` (a turn after the first starts from idle). */
export async function turnsEnded(id: string, n: number, host?: Host): Promise<void> {
  await eventually(async () => ((await eventsOf(stack, id)).filter((e) => e.type === 'session.status_idle').length === n ? true : undefined), { timeoutMs: 180_000, what: `turn ${n} to end` }).catch(async (err) => {
    throw new Error(`${(err as Error).message}\n${JSON.stringify(await eventsOf(stack, id), null, 1).slice(0, 4000)}\n${host?.output().slice(-4000) ?? ''}`);
  });
}

export const messagesOf = (events: any[]) => events.filter((e) => e.type === 'agent.message').map((e) => e.content[0].text as string);
export const failures = (events: any[]) => events.filter((e) => e.type === 'session.error' || e.type === 'session.snapshot_failed');

/** The portable-session cases for one runtime (its file in test/portable/ calls this). */
export function describePortable(kind: RuntimeKind): void {
  const rt = PORTABLE.find((r) => r.kind === kind);
  if (!rt) throw new Error(`no portable-session case for ${kind}`);
  usePortableHosts();
  describe(`portable sessions: ${kind}`, () => {
    const allowAll = { rules: [], default: 'allow' };
    it('is declared portable by snapshot', () => {
      expect(RUNTIME_CAPABILITIES[rt.kind].portable).toBe('snapshot');
    });

    it('continues on another host after its host is lost between turns: history, workspace, and no prompt sent twice', async () => {
      const [one, two] = [`${rt.kind} portable turn one`, `${rt.kind} portable turn two`];
      model.setScript([
        { match: one, steps: [bashStep(rt, 'printf portable-file-content-42 > notes.txt'), { text: 'wrote the note' }] },
        { match: two, steps: [bashStep(rt, 'cat notes.txt'), { text: (c) => `the note says ${c.lastToolResult}` }] },
      ]);
      const agent = await rt.agent({ name: `portable ${rt.kind}`, secret: `sk-portable-${rt.kind}-000`, toolPolicy: allowAll });
      const a = await host(`${rt.kind}-a`);
      const id = await start(one, agent);
      await waitForStatus(stack, id, 'idle', 'end_turn', 180_000);
      await loseHost(a);

      const b = await host(`${rt.kind}-b`);
      const res = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: two }] });
      expect(res.status).toBe(200);
      await turnsEnded(id, 2, b);
      expect((await stack.call('GET', `/v1/sessions/${id}`)).body.stop_reason).toEqual({ type: 'end_turn' });

      // the model's first request of turn 2 carries turn 1: its prompt, its tool call and its answer
      const sent = conversation(firstRequestOf(two)?.body);
      expect(sent).toContain(one);
      expect(sent).toContain('wrote the note');
      expect(sent).toContain(two);
      // each prompt went to the model once
      expect([timesSent(one), timesSent(two)]).toEqual([1, 1]);

      const events = await eventsOf(stack, id);
      // the tool of turn 2 read the file turn 1 wrote, on the other host
      const results = events.filter((e) => e.type === 'agent.tool_result').map((e) => JSON.stringify(e.content));
      if (!rt.resultsWithoutContent) expect(results.at(-1)).toContain('portable-file-content-42');
      expect(messagesOf(events).at(-1)).toContain('portable-file-content-42');
      // the move is on the record, and nothing failed
      expect(events.filter((e) => e.type === 'session.restored')).toHaveLength(1);
      expect(failures(events)).toEqual([]);
      // what moved holds no copy of the model key: every chunk decoded, and the manifests
      const chunks = rowsOf<{ data: Uint8Array }>(await stack.db.db.execute(sql`select data from snapshot_chunks where session_id = ${id}`));
      expect(chunks.length).toBeGreaterThan(0);
      for (const chunk of chunks) expect((await decodeChunk(chunk.data)).includes(`sk-portable-${rt.kind}-000`), 'a snapshot chunk').toBe(false);
      expect(JSON.stringify(rowsOf(await stack.db.db.execute(sql`select manifest from session_snapshots where session_id = ${id}`)))).not.toContain(`sk-portable-${rt.kind}-000`);
    }, 420_000);

    it.skipIf(!RUNTIME_CAPABILITIES[rt.kind].approvals)('carries out a call approved after the host where it waited was lost: the tool runs once, the turn ends end_turn', async () => {
      const prompt = `${rt.kind} parked turn`;
      const append = bashStep(rt, 'echo approved-run >> runs.txt; cat runs.txt');
      const ran = { text: (c: { lastToolResult?: string }) => `ran after the move: ${c.lastToolResult}` };
      model.setScript([
        // a runtime that holds the pending call in its restored state runs it and carries on from here
        { match: prompt, steps: [append, ran] },
        // one whose process held the call is told what became of it and makes it again, as a real model would
        { match: (p) => p.includes(LOSS_NOTICE), steps: [append, ran] },
      ]);
      const asking = await rt.agent({ name: `portable ${rt.kind}, asks`, secret: `sk-portable-${rt.kind}-001`, toolPolicy: { rules: [{ tool: 'bash', action: 'ask' }], default: 'allow' } });
      const a = await host(`${rt.kind}-park-a`);
      const id = await start(prompt, asking);
      const waiting = await waitForStatus(stack, id, 'requires_action', undefined, 180_000);
      await loseHost(a);

      const c = await host(`${rt.kind}-park-c`);
      const asked = waiting.pending_approvals[0].tool_use_id as string;
      const approved = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: asked, result: 'allow' }] });
      expect(approved.status).toBe(200);
      await waitForStatus(stack, id, 'idle', 'end_turn', 240_000).catch((err) => {
        throw new Error(`${(err as Error).message}\n${c.output().slice(-4000)}`);
      });

      const events = await eventsOf(stack, id);
      // the tool ran once: the file it appends to has one line
      const answer = messagesOf(events).at(-1) ?? '';
      expect(answer).toMatch(/^ran after the move: /);
      expect(answer.match(/approved-run/g)).toHaveLength(1);
      const uses = events.filter((e) => e.type === 'agent.tool_use');
      if (rt.inFlight === 'notice') {
        // the call made again was allowed on the person's approval, and says so
        expect(uses.map((e) => e.evaluated_permission)).toEqual(['ask', 'allow']);
        expect(uses[1].evaluation.rule).toContain(`approved as ${asked}`);
        // the agent told of the decision still has its task: the turn's prompt is in the conversation it is sent
        const told = model.requests.find((r) => r.stepIndex === 0 && r.prompt?.includes(LOSS_NOTICE) === true);
        expect(conversation(told?.body)).toContain(prompt);
      } else {
        expect(uses.map((e) => e.evaluated_permission)).toEqual(['ask']);
      }
      expect(events.filter((e) => e.type === 'session.restored')).toHaveLength(1);
      expect(failures(events)).toEqual([]);
      expect(timesSent(prompt)).toBe(1);
    }, 420_000);

    it('drains on SIGTERM: the turn in flight ends on the stopping worker, and another host continues the session', async () => {
      const gate = createGate();
      const [one, two] = [`${rt.kind} drain turn one`, `${rt.kind} drain turn two`];
      model.setScript([
        { match: one, steps: [bashStep(rt, 'printf drained-note-43 > drained.txt'), { text: 'finished while draining', waitFor: gate.promise }] },
        { match: two, steps: [bashStep(rt, 'cat drained.txt'), { text: (c) => `still there: ${c.lastToolResult}` }] },
      ]);
      const agent = await rt.agent({ name: `draining ${rt.kind}`, secret: `sk-portable-${rt.kind}-002`, toolPolicy: allowAll });
      const a = await host(`${rt.kind}-drain-a`);
      const id = await start(one, agent);
      // the turn is in flight: its tool ran, and the model's answer is held
      await model.waitForRequest((r) => r.prompt?.includes(one) === true && r.stepIndex === 1, 180_000);
      const stopping = a.stop();
      await new Promise((r) => setTimeout(r, 1_000));
      gate.release();
      await stopping;
      // it stopped by itself, once its turn was over (stop() would have used SIGKILL after 15 s)
      expect(a.child.signalCode).toBeNull();
      await loseHost(a);

      const b = await host(`${rt.kind}-drain-b`);
      await waitForStatus(stack, id, 'idle', 'end_turn', 180_000);
      const res = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: two }] });
      expect(res.status).toBe(200);
      await turnsEnded(id, 2, b);
      const events = await eventsOf(stack, id);
      const [first, second] = messagesOf(events);
      expect(first).toBe('finished while draining');
      expect(second).toContain('still there: ');
      expect(second).toContain('drained-note-43');
      expect(events.filter((e) => e.type === 'session.status_idle').map((e) => e.stop_reason.type)).toEqual(['end_turn', 'end_turn']);
      expect(failures(events)).toEqual([]);
      expect(timesSent(one)).toBe(1);
      expect(conversation(firstRequestOf(two)?.body)).toContain('finished while draining');
    }, 420_000);
  });
}
