/**
 * Host loss for the runtimes that declare reattach and keep nothing on the worker's host: Managed Agents and Cursor
 * keep a session on the vendor's side (`portable: 'remote'`, their contract fakes here), the in-process scripted
 * runtime keeps a turn in its checkpoint (`portable: 'stateless'`). The same three cases as test/support/portable.ts,
 * on the same hosts (a worker per data dir, a lost one SIGKILLed with every process it started and its disk deleted):
 * a host lost between turns, a host lost while a call waited for a person, a worker drained by SIGTERM. What carries
 * the session over is the record the platform keeps (the remote session's id, the turn's checkpoint), so nothing is
 * restored: the next worker reattaches to the vendor's session, or continues the script where the checkpoint left it.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RUNTIME_CAPABILITIES } from '../../runtimes/registry';
import { startCursorFake, type CursorFake, type CursorStep } from './cursor-fake';
import { startManagedAgentsFake, type FakeStep, type ManagedAgentsFake } from './managed-agents-fake';
import { failures, host, loseHost, messagesOf, stack, start, turnsEnded, usePortableHosts } from './portable';
import { eventsOf, eventually, waitForStatus } from './stack';

type RemoteKind = 'managed-agents' | 'cursor' | 'scripted';

/** What a turn does, in every runtime's own script. `hold` waits until `release` (the scripted runtime: 3 s). */
type Step = { write: string; content: string } | { read: string } | { say: string } | { hold: true };

interface RemoteRuntime {
  kind: RemoteKind;
  /** starts what the runtime talks to, and stops it */
  backend(): Promise<() => Promise<void>>;
  /** an agent on that backend with this policy: its id */
  agent(name: string, toolPolicy: Record<string, unknown>): Promise<string>;
  /** scripts the turn `prompt`; answers the user message that runs it */
  script(prompt: string, steps: Step[]): string;
  /** the held step of `prompt`'s turn (in session `sessionId`) was reached */
  held(prompt: string, sessionId: string): Promise<void>;
  release(prompt: string): void;
  /** how often the runtime received `prompt` */
  timesSent(prompt: string): Promise<number>;
  /**
   * the conversation the runtime held when `prompt` reached it (the vendor's record of the session: prompts and
   * answers before it); null for the scripted runtime, whose turns have no memory of each other
   */
  heldBefore(prompt: string): string[] | null;
  /** the runtime ran tools on files it keeps (the vendor's container); the scripted runtime's tools touch none */
  files: boolean;
}

let fake: ManagedAgentsFake;
let cursor: CursorFake;
const cursorScripts = new Map<string, CursorStep[]>();
/** the scripted runtime's record of what it received, shared by every host (worker/main.ts AGENTPLANE_SCRIPTED_PROMPT_LOG) */
let promptLog: string;

async function credential(secret: string): Promise<string> {
  const res = await stack.call('POST', '/v1/credentials', { name: 'vendor key', secret });
  expect(res.status).toBeLessThan(300);
  return res.body.id as string;
}

async function agentWith(name: string, toolPolicy: Record<string, unknown>, body: Record<string, unknown>): Promise<string> {
  const res = await stack.call('POST', '/v1/agents', { name, tool_policy: toolPolicy, ...body });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.id as string;
}

const REMOTE: RemoteRuntime[] = [
  {
    kind: 'managed-agents',
    async backend() {
      fake = await startManagedAgentsFake({ heartbeatMs: 200 });
      return () => fake.close();
    },
    agent: async (name, toolPolicy) => agentWith(name, toolPolicy, { model: 'claude-sonnet-4-6', runtime: { type: 'managed-agents', config: {} }, model_provider: { base_url: fake.url, credential_id: await credential(fake.apiKey) } }),
    script(prompt, steps) {
      const fakeSteps = steps.map((s): FakeStep => {
        if ('hold' in s) return { gate: `hold:${prompt}` };
        if ('say' in s) return { say: s.say };
        if ('write' in s) return { tool: 'write', input: { file_path: s.write, content: s.content } };
        return { tool: 'read', input: { file_path: s.read } };
      });
      fake.script(prompt, [...fakeSteps, { usage: { input: 100, output: 20, costUsd: 0.001 } }]);
      return prompt;
    },
    held: (prompt) => fake.gate(`hold:${prompt}`).reached,
    release: (prompt) => fake.gate(`hold:${prompt}`).open(),
    timesSent: async (prompt) => fake.countPrompts(prompt),
    heldBefore(prompt) {
      const texts = (e: any): string => (e.content ?? []).map((c: { text?: string }) => c.text ?? '').join('');
      const remote = fake.requests.map((r) => /^\/v1\/sessions\/([^/]+)\/events$/.exec(r.path)?.[1]).find((id) => id && fake.session(id)?.events.some((e) => e.type === 'user.message' && texts(e).includes(prompt)));
      const events = fake.session(remote ?? '')?.events ?? [];
      const at = events.findIndex((e) => e.type === 'user.message' && texts(e).includes(prompt));
      return events.slice(0, at).filter((e) => e.type === 'user.message' || e.type === 'agent.message').map(texts);
    },
    files: true,
  },
  {
    kind: 'cursor',
    async backend() {
      cursor = await startCursorFake();
      cursor.script = (prompt) => cursorScripts.get(prompt) ?? [{ assistant: `echo: ${prompt}` }];
      return () => cursor.close();
    },
    agent: async (name, toolPolicy) => agentWith(name, toolPolicy, { model: 'claude-sonnet-4-5', runtime: { type: 'cursor', config: {} }, model_provider: { base_url: cursor.url, credential_id: await credential(cursor.apiKey) } }),
    script(prompt, steps) {
      // the fake parks a run after its first event while held: a held turn's first step runs, the rest wait
      if (steps.some((s) => 'hold' in s)) cursor.hold();
      const cursorSteps = steps.flatMap((s): CursorStep[] => {
        if ('hold' in s) return [];
        if ('say' in s) return [{ assistant: s.say }];
        if ('write' in s) return [{ tool: 'edit_file', args: { path: s.write, content: s.content } }];
        return [{ tool: 'read_file', args: { path: s.read } }];
      });
      cursorScripts.set(prompt, [...cursorSteps, { usage: { inputTokens: 100, outputTokens: 20 } }]);
      return prompt;
    },
    held: async (prompt) => {
      const ranFirst = () => [...cursor.runs.values()].some((r) => r.prompt === prompt && r.frames.some((f) => f.event === 'tool_call' && (f.data as { status?: string }).status === 'completed'));
      await eventually(async () => (ranFirst() ? true : undefined), { timeoutMs: 60_000, what: `cursor: held ${prompt}` });
    },
    release: () => cursor.release(),
    timesSent: async (prompt) => cursor.prompts.filter((p) => p.includes(prompt)).length,
    heldBefore(prompt) {
      const run = [...cursor.runs.values()].find((r) => r.prompt.includes(prompt));
      const agent = run && cursor.agents.get(run.agentId);
      if (!agent || !run) return [];
      const earlier = agent.runs.slice(0, agent.runs.indexOf(run.id)).map((id) => cursor.runs.get(id)!);
      return earlier.flatMap((r) => [r.prompt, ...r.frames.filter((f) => f.event === 'assistant').map((f) => (f.data as { text: string }).text)]);
    },
    files: true,
  },
  {
    kind: 'scripted',
    async backend() {
      const dir = await mkdtemp(join(tmpdir(), 'agentplane-scripted-log-'));
      promptLog = join(dir, 'prompts.jsonl');
      await writeFile(promptLog, '');
      return () => rm(dir, { recursive: true, force: true });
    },
    agent: (name, toolPolicy) => agentWith(name, toolPolicy, { model: 'scripted', runtime: { type: 'scripted', config: {} } }),
    script(prompt, steps) {
      const lines = steps.flatMap((s) => ('hold' in s ? [`say held ${prompt}`, 'sleep 3000'] : 'say' in s ? [`say ${s.say}`] : 'write' in s ? [`tool write ${s.write}`] : [`tool read ${s.read}`]));
      return [`say ${prompt}`, ...lines, 'cost 0.001'].join('\n');
    },
    async held(prompt, sessionId) {
      const said = async () => ((await eventsOf(stack, sessionId)).some((e) => e.type === 'agent.message' && e.content[0].text === `held ${prompt}`) ? true : undefined);
      await eventually(said, { timeoutMs: 60_000, what: `scripted: held ${prompt}` });
    },
    release() {},
    timesSent: async (prompt) => (await readFile(promptLog, 'utf8')).split('\n').filter((line) => line.includes(prompt)).length,
    heldBefore: () => null,
    files: false,
  },
];

/** The host-loss cases for a runtime whose sessions live off the worker's host (its file in test/portable/ calls this). */
export function describeRemoteHostLoss(kind: RemoteKind): void {
  const rt = REMOTE.find((r) => r.kind === kind)!;
  usePortableHosts();
  let stopBackend: () => Promise<void>;
  beforeAll(async () => {
    stopBackend = await rt.backend();
  }, 60_000);
  afterAll(async () => {
    rt.release('');
    await stopBackend?.();
  });
  const onHost = (name: string) => host(`${kind}-${name}`, { AGENTPLANE_RUNTIMES: kind, ...(kind === 'scripted' ? { AGENTPLANE_SCRIPTED_PROMPT_LOG: promptLog } : {}) });
  const resultsOf = (events: any[]) => events.filter((e) => e.type === 'agent.tool_result').map((e) => ({ text: (e.content ?? []).map((c: { text?: string }) => c.text ?? '').join(''), error: e.is_error === true }));

  describe(`portable sessions: ${kind}`, () => {
    const allowAll = { rules: [], default: 'allow' };
    it(`declares reattach, and keeps its sessions off the worker (${RUNTIME_CAPABILITIES[kind].portable})`, () => {
      expect(RUNTIME_CAPABILITIES[kind].reattach).toBe(true);
      expect(['remote', 'stateless']).toContain(RUNTIME_CAPABILITIES[kind].portable);
    });

    it('continues on another host after its host is lost between turns: history, files, and no prompt sent twice', async () => {
      const [one, two] = [`${kind} remote turn one`, `${kind} remote turn two`];
      const agent = await rt.agent(`remote ${kind}`, allowAll);
      const a = await onHost('a');
      const id = await start(rt.script(one, [{ write: 'notes.txt', content: 'portable-file-content-42' }, { say: 'wrote the note' }]), agent);
      await waitForStatus(stack, id, 'idle', 'end_turn', 120_000);
      await loseHost(a);

      const b = await onHost('b');
      const res = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: rt.script(two, [{ read: 'notes.txt' }, { say: 'read the note' }]) }] });
      expect(res.status).toBe(200);
      await turnsEnded(id, 2, b);
      expect((await stack.call('GET', `/v1/sessions/${id}`)).body.stop_reason).toEqual({ type: 'end_turn' });

      // turn 2 went to the session that holds turn 1: the vendor's record of it has turn 1's prompt and answer
      const before = rt.heldBefore(two);
      if (before !== null) {
        expect(before.join('\n')).toContain(one);
        expect(before.join('\n')).toContain('wrote the note');
      }
      expect([await rt.timesSent(one), await rt.timesSent(two)]).toEqual([1, 1]);
      const events = await eventsOf(stack, id);
      // the tool of turn 2 read what turn 1 wrote
      const results = resultsOf(events);
      expect(results.map((r) => r.error)).toEqual([false, false]);
      if (rt.files) expect(results[1]!.text).toBe('portable-file-content-42');
      expect(messagesOf(events)).toEqual(expect.arrayContaining(['wrote the note', 'read the note']));
      // nothing on the lost host was needed: nothing to restore, and nothing failed
      expect(events.filter((e) => e.type === 'session.restored')).toEqual([]);
      expect(failures(events)).toEqual([]);
    }, 300_000);

    it.skipIf(!RUNTIME_CAPABILITIES[kind].approvals)('carries out a call approved after the host where it waited was lost: the tool runs once, the turn ends end_turn', async () => {
      const prompt = `${kind} remote parked turn`;
      const asking = await rt.agent(`remote ${kind}, asks`, { rules: [{ tool: 'write', action: 'ask' }], default: 'allow' });
      const a = await onHost('park-a');
      const id = await start(rt.script(prompt, [{ write: 'runs.txt', content: 'approved-run' }, { read: 'runs.txt' }, { say: 'ran after the move' }]), asking);
      const waiting = await waitForStatus(stack, id, 'requires_action', undefined, 120_000);
      await loseHost(a);

      const c = await onHost('park-c');
      const approved = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: waiting.pending_approvals[0].tool_use_id, result: 'allow' }] });
      expect(approved.status).toBe(200);
      await waitForStatus(stack, id, 'idle', 'end_turn', 180_000).catch((err) => {
        throw new Error(`${(err as Error).message}\n${c.output().slice(-4000)}`);
      });

      const events = await eventsOf(stack, id);
      // the approved call ran once, and the call after it saw what it wrote
      const uses = events.filter((e) => e.type === 'agent.tool_use');
      expect(uses.map((e) => [e.name, e.evaluated_permission])).toEqual([
        ['write', 'ask'],
        ['read', 'allow'],
      ]);
      const results = resultsOf(events);
      expect(results.map((r) => r.error)).toEqual([false, false]);
      if (rt.files) expect(results[1]!.text).toBe('approved-run');
      expect(messagesOf(events).at(-1)).toBe('ran after the move');
      expect(failures(events)).toEqual([]);
      expect(await rt.timesSent(prompt)).toBe(1);
    }, 300_000);

    it('drains on SIGTERM: the turn in flight ends on the stopping worker, and another host continues the session', async () => {
      const [one, two] = [`${kind} remote drain one`, `${kind} remote drain two`];
      const agent = await rt.agent(`remote ${kind}, drained`, allowAll);
      const a = await onHost('drain-a');
      const id = await start(rt.script(one, [{ write: 'drained.txt', content: 'drained-note-43' }, { hold: true }, { say: 'finished while draining' }]), agent);
      await rt.held(one, id);
      const stopping = a.stop();
      await new Promise((r) => setTimeout(r, 1_000));
      rt.release(one);
      await stopping;
      // it stopped by itself, once its turn was over (stop() would have used SIGKILL after 15 s)
      expect(a.child.signalCode).toBeNull();
      await loseHost(a);

      const b = await onHost('drain-b');
      await waitForStatus(stack, id, 'idle', 'end_turn', 120_000);
      const res = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: rt.script(two, [{ read: 'drained.txt' }, { say: 'still there' }]) }] });
      expect(res.status).toBe(200);
      await turnsEnded(id, 2, b);
      const events = await eventsOf(stack, id);
      expect(messagesOf(events)).toEqual(expect.arrayContaining(['finished while draining', 'still there']));
      if (rt.files) expect(resultsOf(events).at(-1)?.text).toBe('drained-note-43');
      expect(events.filter((e) => e.type === 'session.status_idle').map((e) => e.stop_reason.type)).toEqual(['end_turn', 'end_turn']);
      expect(failures(events)).toEqual([]);
      expect(await rt.timesSent(one)).toBe(1);
    }, 300_000);
  });
}
