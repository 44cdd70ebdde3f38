/**
 * A runtime's sessions in their sandboxes, attacked from inside (`describeSandboxAttacks`, one call per runtime that
 * starts a local process or runs tools): the attack list run as a bash tool call in a session whose worker is
 * a real process (its environment held the master key and the database URL when it started), with the output
 * base64-encoded inside so that redaction cannot hide a leak; a fork bomb and a memory hog bounded while the worker
 * keeps serving another session; and `limited` networking through the session's egress proxy.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RuntimeKind, RuntimeRegistry } from '../../runtimes/runtime-adapter';
import { attackToolCall, decodeAttackOutput, echoToolResult, expectNothingFound, FORK_BOMB, MEMORY_HOG, type AttackTargets } from './attack';
import { startScriptedModel, type RecordedRequest, type ScriptedModel } from './scripted-model';
import { RUNTIME_CAPABILITIES } from '../../runtimes/registry';
import { eventsOf, eventually, LOCAL_RECEIVERS, startStack, type Stack } from './stack';
import { spawnWorker, type WorkerProcess } from './worker-process';

const REPO = fileURLToPath(new URL('../..', import.meta.url));

export interface SandboxedRuntime {
  kind: RuntimeKind;
  /** the model name its agents use (priced by the team in the suite) */
  model: string;
  /** its agents' `runtime.config` (default `{}`) */
  config?: Record<string, unknown>;
  /** the runtime's adapter for an in-process worker, on the stack's sandboxes */
  adapter(stack: Stack): RuntimeRegistry;
  /** the tool names it offers for a shell command, and the argument the command goes in */
  shell?: { tool: string[]; input: (command: string) => Record<string, unknown> };
  /** its agents' `model_provider.base_url` on the scripted model (default: the OpenAI-compatible one) */
  modelUrl?: (model: ScriptedModel) => string;
  /** how long one turn may take, the start of the session's runtime server included (default 120 s) */
  turnMs?: number;
  /** stops what outlives a worker by design (a persistent runtime server in a sandbox), before the stack goes */
  cleanup?(stack: Stack): Promise<void>;
}
const OTHER_KEY = `sk-other-session-${Math.random().toString(36).slice(2)}`;
/** the attacking session's own provider key: the gateway puts it on the model's requests, and nothing inside holds it */
const ATTACKER_KEY = `sk-attacker-${Math.random().toString(36).slice(2)}`;
const MARKER = `marker-of-another-session-${Math.random().toString(36).slice(2)}`;

async function lastMessage(stack: Stack, sessionId: string): Promise<string> {
  const messages = (await eventsOf(stack, sessionId)).filter((e) => e.type === 'agent.message');
  return messages.at(-1)?.content[0].text ?? '';
}

async function agentWith(rt: SandboxedRuntime, stack: Stack, model: ScriptedModel, name: string, secret: string): Promise<string> {
  const credential = await stack.call('POST', '/v1/credentials', { name: `${name} key`, secret });
  const agent = await stack.call('POST', '/v1/agents', {
    name,
    model: rt.model,
    runtime: { type: rt.kind, config: rt.config ?? {} },
    model_provider: { base_url: rt.modelUrl?.(model) ?? model.openaiBaseUrl, credential_id: credential.body.id },
    tool_policy: { rules: [], default: 'allow' },
  });
  expect(agent.status, JSON.stringify(agent.body)).toBe(200);
  return agent.body.id;
}

/** A session's events, short, for a failure message. */
async function timeline(stack: Stack, sessionId: string): Promise<string> {
  return JSON.stringify((await eventsOf(stack, sessionId)).map((e) => [e.type, e.error?.message ?? e.stop_reason?.type ?? e.name ?? ''])).slice(0, 3000);
}

async function runTurn(stack: Stack, agentId: string, prompt: string, extra: Record<string, unknown> = {}, timeoutMs = 120_000): Promise<string> {
  const session = await stack.call('POST', '/v1/sessions', { agent: agentId, ...extra, initial_events: [{ type: 'user.message', content: prompt }] });
  expect(session.status, JSON.stringify(session.body)).toBe(200);
  // the turn's end: its session.status_idle (the session is idle before its first turn starts, too)
  await eventually(async () => ((await eventsOf(stack, session.body.id)).some((e) => e.type === 'session.status_idle') ? true : undefined), { timeoutMs, what: `the turn "${prompt}"` });
  return session.body.id;
}

export function describeSandboxAttacks(rt: SandboxedRuntime): void {
const turnMs = rt.turnMs ?? 120_000;
// a test runs up to three turns, each in a new session
const testMs = Math.max(300_000, 3 * turnMs);
const run = (stack: Stack, agentId: string, prompt: string, extra: Record<string, unknown> = {}) => runTurn(stack, agentId, prompt, extra, turnMs);
const shell = (command: string, description: string) => ({ tool: rt.shell?.tool ?? ['bash', 'Bash', 'execute', 'terminal'], input: rt.shell?.input(command) ?? { command, description } });

describe(`a ${rt.kind} session attacking its sandbox, on a worker process`, () => {
  let stack: Stack;
  let model: ScriptedModel;
  let worker: WorkerProcess;
  let attacker: string;
  let other: string;

  beforeAll(async () => {
    stack = await startStack({ worker: false, allowPrivateEgress: LOCAL_RECEIVERS });
    model = await startScriptedModel();
    await stack.price(rt.model, { input: 3, output: 15 });
    worker = await spawnWorker(stack, { AGENTPLANE_RUNTIMES: rt.kind });
    attacker = await agentWith(rt, stack, model, 'attacker', ATTACKER_KEY);
    other = await agentWith(rt, stack, model, 'other', OTHER_KEY);
  }, 180_000);

  afterAll(async () => {
    await worker?.stop();
    if (stack) await rt.cleanup?.(stack);
    await stack?.stop();
    await model?.close();
  }, 60_000);

  it('the attack list finds nothing: no environment, key, other workspace, checkout, platform port, write outside, or ptrace', { timeout: testMs }, async () => {
    model.setScript([{ match: 'leave a marker', steps: [shell(`echo ${MARKER} > /workspace/marker.txt`, 'marker'), { text: 'marked' }] }]);
    const otherSession = await run(stack, other, 'leave a marker');
    expect(await lastMessage(stack, otherSession)).toBe('marked');

    const database = new URL(stack.databaseUrl);
    const [temporalHost, temporalPort] = stack.temporalAddress.split(':');
    const targets: AttackTargets = {
      secrets: [stack.masterKey, stack.masterKey.slice(stack.masterKey.indexOf(':') + 1), stack.adminKey, stack.databaseUrl, OTHER_KEY, ATTACKER_KEY],
      otherSessionMarker: MARKER,
      otherSessionWorkspace: `${stack.dataDir}/sessions/${otherSession}`,
      checkout: REPO.replace(/\/$/, ''),
      dataDir: stack.dataDir,
      tcp: [
        [database.hostname, Number(database.port || 5432)],
        [temporalHost!, Number(temporalPort)],
        ['127.0.0.1', Number(new URL(stack.url).port)],
      ],
      workerPid: worker.child.pid!,
    };
    model.setScript([{ match: 'run the attack list', steps: [{ ...attackToolCall(targets), ...shell(attackToolCall(targets).input.command, 'attack list') }, echoToolResult] }]);
    const session = await run(stack, attacker, 'run the attack list');
    const decoded = decodeAttackOutput(await lastMessage(stack, session));
    expectNothingFound(decoded, targets);
    // the probe did run as the tool call, inside: the sandbox's user
    expect(decoded).toContain('USER=agent');
    // and the session's own key, which nothing inside holds, did reach the model with its requests
    const keyOf = (r: RecordedRequest) => [r.headers.authorization, r.headers['x-api-key']].join(' ');
    const own = model.requests.filter((r) => keyOf(r).includes(ATTACKER_KEY) && r.protocol !== null);
    expect(own.length).toBeGreaterThan(0);

    // the session's cost is the sum of its model requests at the table's price ($3 / $15 per million tokens), each
    // metered from the provider's answer by the gateway, one event for each request the model received
    const spans = (await eventsOf(stack, session)).filter((e) => e.type === 'span.model_request_end');
    const gateway = RUNTIME_CAPABILITIES[rt.kind].gateway;
    if (gateway) {
      expect(spans.map((e) => e.metered_by)).toEqual(own.map(() => 'gateway'));
    }
    expect(spans.length).toBeGreaterThan(0);
    const u = (e: Record<string, any>) => e.model_usage as { input_tokens: number; output_tokens: number; cache_read_input_tokens: number; cache_creation_input_tokens: number };
    const priced = spans.reduce((sum, e) => sum + (u(e).input_tokens + u(e).cache_read_input_tokens + u(e).cache_creation_input_tokens) * 3 + u(e).output_tokens * 15, 0);
    const usage = (await stack.call('GET', `/v1/sessions/${session}`)).body.usage;
    expect(Math.round(usage.cost_usd * 1e6)).toBe(priced);
    expect(priced).toBeGreaterThan(0);
  });

  it('a fork bomb and a memory hog each end at the sandbox\'s limits, and the worker still serves another session', { timeout: testMs }, async () => {
    model.setScript([
      { match: 'fork bomb', steps: [shell(FORK_BOMB, 'fork bomb'), echoToolResult] },
      { match: 'memory hog', steps: [shell(MEMORY_HOG, 'memory hog'), echoToolResult] },
      { match: 'still there', steps: [{ text: 'still serving' }] },
    ]);
    const bomb = await run(stack, attacker, 'fork bomb');
    expect((await eventsOf(stack, bomb)).some((e) => e.type === 'agent.tool_use'), await timeline(stack, bomb)).toBe(true);
    // it ran, inside a sandbox (FORK_BOMB refuses to run anywhere else), and the turn ended: with the tool's result, with
    // a session.error, or (a runtime whose own process shares the limit, as Claude Code's does, died and was started
    // again) with end_turn
    const said = await lastMessage(stack, bomb);
    const bombEvents = await eventsOf(stack, bomb);
    const ended = bombEvents.filter((e) => e.type === 'session.status_idle').at(-1);
    expect(said.includes('ATTACK-RESULT<') || ended?.stop_reason?.type === 'end_turn' || bombEvents.some((e) => e.type === 'session.error'), JSON.stringify(ended)).toBe(true);
    expect(said).not.toContain('not in a sandbox');
    // archiving the bomb's session ends its sandbox, and every process the bomb left in it
    expect((await stack.call('POST', `/v1/sessions/${bomb}/archive`)).status).toBe(200);

    // the hog's turn ends with the allocation's failure, or with a clear session.error
    const hog = await run(stack, attacker, 'memory hog');
    const hogEvents = await eventsOf(stack, hog);
    expect(/MemoryError|Cannot allocate|memory-hog-returned/.test(await lastMessage(stack, hog)) || hogEvents.some((e) => e.type === 'session.error'), await timeline(stack, hog)).toBe(true);
    expect(await lastMessage(stack, hog)).not.toContain('not in a sandbox');
    const fine = await run(stack, other, 'still there');
    expect(await lastMessage(stack, fine)).toBe('still serving');
    expect(worker.child.exitCode).toBeNull();
  });
});

describe(`limited networking for a ${rt.kind} session`, () => {
  let stack: Stack;
  let model: ScriptedModel;
  let site: Server;
  let port: number;

  beforeAll(async () => {
    // both names resolve to the local site; only the environment's policy tells them apart
    stack = await startStack({
      worker: false,
      allowPrivateEgress: LOCAL_RECEIVERS,
      egressLookup: async (host) => (host === 'allowed.test' || host === 'refused.test' || host === '127.0.0.1' ? [{ address: '127.0.0.1', family: 4 }] : []),
    });
    await stack.startWorker(rt.adapter(stack));
    model = await startScriptedModel();
    await stack.price(rt.model, { input: 3, output: 15 });
    site = createServer((_req, res) => res.end('hello from the allowed host\n'));
    await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve));
    port = (site.address() as AddressInfo).port;
  }, 180_000);

  afterAll(async () => {
    await stack?.stop();
    await model?.close();
    await new Promise((resolve) => site?.close(resolve));
  }, 60_000);

  it('an allowed host is reached through the proxy, another is refused with a sandbox.egress_denied event naming it', { timeout: testMs }, async () => {
    const env = await stack.call('POST', '/v1/environments', { name: 'limited', config: { type: 'cloud', networking: { type: 'limited', allowed_hosts: ['allowed.test'] } } });
    expect(env.status, JSON.stringify(env.body)).toBe(200);
    const agent = await agentWith(rt, stack, model, 'limited', 'sk-limited');
    const command = `curl -s -m 10 http://allowed.test:${port}/; echo; curl -s -m 10 -o /dev/null -w 'refused:%{http_code}' http://refused.test:${port}/`;
    model.setScript([{ match: 'fetch two hosts', steps: [shell(command, 'curl'), echoToolResult] }]);
    const session = await run(stack, agent, 'fetch two hosts', { environment_id: env.body.id });
    const said = await lastMessage(stack, session);
    expect(said).toContain('hello from the allowed host');
    expect(said).toContain('refused:403');
    // (OpenCode's own attempts to reach its package registry are refused and recorded too)
    const denied = await eventually(async () => (await eventsOf(stack, session)).find((e) => e.type === 'sandbox.egress_denied' && e.host === 'refused.test'), { timeoutMs: 10_000 });
    expect(denied).toMatchObject({ host: 'refused.test', port, reason: expect.any(String) });
    expect((await eventsOf(stack, session)).some((e) => e.type === 'sandbox.egress_denied' && e.host === 'allowed.test')).toBe(false);
  });
});
}
