/**
 * Claude Code sessions in their sandboxes, attacked from inside: the attack list run as a Bash tool call in a
 * session whose worker is a real process (its environment held the master key and the database URL when it started),
 * with the output base64-encoded inside so that redaction cannot hide a leak; a fork bomb and a memory hog bounded
 * while the worker keeps serving another session; `limited` networking through the session's egress proxy; and the
 * transcript the worker reads from the sandbox-writable state, which must not lead it out of that state.
 *
 * Needs bubblewrap (the worker's default sandbox); skipped, saying so, on a machine without it.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClaudeCodeAdapter, readTranscript } from '../runtimes/claude-code/claude-code.adapter';
import { attackToolCall, decodeAttackOutput, echoToolResult, expectNothingFound, FORK_BOMB, MEMORY_HOG, type AttackTargets } from './support/attack';
import { startScriptedModel, type ScriptedModel } from './support/scripted-model';
import { eventsOf, eventually, LOCAL_RECEIVERS, startStack, type Stack } from './support/stack';
import { spawnWorker, type WorkerProcess } from './support/worker-process';

const REPO = fileURLToPath(new URL('..', import.meta.url));
const OTHER_KEY = `sk-ant-other-session-${Math.random().toString(36).slice(2)}`;
const MARKER = `marker-of-another-session-${Math.random().toString(36).slice(2)}`;
const HAS_BWRAP = existsSync('/usr/bin/bwrap');
if (!HAS_BWRAP) console.warn('claude-code.sandbox.test.ts: skipped, /usr/bin/bwrap is not installed (apt-get install bubblewrap)');

async function lastMessage(stack: Stack, sessionId: string): Promise<string> {
  const messages = (await eventsOf(stack, sessionId)).filter((e) => e.type === 'agent.message');
  return messages.at(-1)?.content[0].text ?? '';
}

async function agentWith(stack: Stack, model: ScriptedModel, name: string, secret: string): Promise<string> {
  const credential = await stack.call('POST', '/v1/credentials', { name: `${name} key`, secret });
  const agent = await stack.call('POST', '/v1/agents', {
    name,
    model: 'claude-sonnet-4-5',
    runtime: { type: 'claude-code', config: {} },
    model_provider: { base_url: model.url, credential_id: credential.body.id },
    tool_policy: { rules: [], default: 'allow' },
  });
  expect(agent.status, JSON.stringify(agent.body)).toBe(200);
  return agent.body.id;
}

/** A new session of `agentId` whose first turn is `prompt`; resolves once that turn has ended (its status_idle). */
async function runTurn(stack: Stack, agentId: string, prompt: string, extra: Record<string, unknown> = {}): Promise<string> {
  const session = await stack.call('POST', '/v1/sessions', { agent: agentId, ...extra, initial_events: [{ type: 'user.message', content: prompt }] });
  expect(session.status, JSON.stringify(session.body)).toBe(200);
  await eventually(async () => ((await eventsOf(stack, session.body.id)).some((e) => e.type === 'session.status_idle') ? true : undefined), { timeoutMs: 240_000, intervalMs: 250, what: `the turn "${prompt}"` });
  return session.body.id;
}

describe.skipIf(!HAS_BWRAP)('a Claude Code session attacking its sandbox, on a worker process', () => {
  let stack: Stack;
  let model: ScriptedModel;
  let worker: WorkerProcess;
  let attacker: string;
  let other: string;

  beforeAll(async () => {
    stack = await startStack({ worker: false, allowPrivateEgress: LOCAL_RECEIVERS });
    model = await startScriptedModel();
    worker = await spawnWorker(stack, { AGENTPLANE_RUNTIMES: 'claude-code' });
    attacker = await agentWith(stack, model, 'attacker', `sk-ant-attacker-${Math.random().toString(36).slice(2)}`);
    other = await agentWith(stack, model, 'other', OTHER_KEY);
  }, 180_000);

  afterAll(async () => {
    await worker?.stop();
    await stack?.stop();
    await model?.close();
  }, 60_000);

  it('the attack list from a Bash call finds nothing: no environment, key, other workspace, checkout, data dir, platform port, write outside, or ptrace', { timeout: 400_000 }, async () => {
    model.setScript([{ match: 'leave a marker', steps: [{ tool: 'Bash', input: { command: `echo ${MARKER} > /workspace/marker.txt`, description: 'marker' } }, { text: 'marked' }] }]);
    const otherSession = await runTurn(stack, other, 'leave a marker');
    expect(await lastMessage(stack, otherSession)).toBe('marked');
    expect(existsSync(join(stack.dataDir, 'sessions', otherSession, 'marker.txt')), 'the marker is in the other session\'s workspace').toBe(true);

    const database = new URL(stack.databaseUrl);
    const [temporalHost, temporalPort] = stack.temporalAddress.split(':');
    const targets: AttackTargets = {
      secrets: [stack.masterKey, stack.masterKey.slice(stack.masterKey.indexOf(':') + 1), stack.adminKey, stack.databaseUrl, OTHER_KEY],
      otherSessionMarker: MARKER,
      otherSessionWorkspace: join(stack.dataDir, 'sessions', otherSession),
      checkout: REPO.replace(/\/$/, ''),
      dataDir: stack.dataDir,
      tcp: [
        [database.hostname, Number(database.port || 5432)],
        [temporalHost!, Number(temporalPort)],
        ['127.0.0.1', Number(new URL(stack.url).port)],
      ],
      workerPid: worker.child.pid!,
    };
    // Claude Code's shell shadows grep and find with the ugrep and bfs built into its binary, and that ugrep reads
    // /dev/random forever in a recursive search of /: the probe uses the system's tools, as the list means it to
    const attack = attackToolCall(targets);
    model.setScript([{ match: 'run the attack list', steps: [{ ...attack, input: { ...attack.input, command: `unset -f grep find; ${attack.input.command}` } }, echoToolResult] }]);
    const session = await runTurn(stack, attacker, 'run the attack list');
    const decoded = decodeAttackOutput(await lastMessage(stack, session));
    expectNothingFound(decoded, targets);
    // the probe ran as the tool call, in the sandbox with claude: the processes it saw are claude's, whose model URL
    // is the sandbox's bridge
    expect(decoded).toMatch(/ANTHROPIC_BASE_URL=http:\/\/127\.0\.0\.1:\d+/);
  });

  it('a fork bomb and a memory hog each end their turn at the sandbox\'s limits, and the worker still serves another session', { timeout: 600_000 }, async () => {
    model.setScript([
      { match: 'fork bomb', steps: [{ tool: 'Bash', input: { command: FORK_BOMB, description: 'fork bomb' } }, { text: 'after the fork bomb' }] },
      { match: 'memory hog', steps: [{ tool: 'Bash', input: { command: MEMORY_HOG, description: 'memory hog' } }, echoToolResult] },
      { match: 'still there', steps: [{ text: 'still serving' }] },
    ]);
    const bomb = await runTurn(stack, attacker, 'fork bomb');
    const bombEvents = await eventsOf(stack, bomb);
    expect(bombEvents.some((e) => e.type === 'agent.tool_use' && e.name === 'bash')).toBe(true);
    const ended = bombEvents.filter((e) => e.type === 'session.status_idle').at(-1);
    // the turn ended: normally (the bomb hit the process limit and the call returned), or with a clear error
    expect(ended.stop_reason?.type === 'end_turn' || bombEvents.some((e) => e.type === 'session.error'), JSON.stringify(ended)).toBe(true);

    // while the bomb's processes may still be in its sandbox, another session on the same worker is served
    const fine = await runTurn(stack, other, 'still there');
    expect(await lastMessage(stack, fine)).toBe('still serving');
    // archiving the bomb's session ends its claude process and everything in its sandbox
    expect((await stack.call('POST', `/v1/sessions/${bomb}/archive`)).status).toBe(200);

    const hog = await runTurn(stack, attacker, 'memory hog');
    expect(await lastMessage(stack, hog)).toMatch(/MemoryError|Cannot allocate|memory-hog-returned/);
    expect(worker.child.exitCode).toBeNull();
    expect(worker.child.signalCode).toBeNull();
  });
});

describe.skipIf(!HAS_BWRAP)('limited networking for a Claude Code session', () => {
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
    await stack.startWorker({ 'claude-code': createClaudeCodeAdapter({ dataDir: stack.dataDir, sandboxes: stack.sandboxes }) });
    model = await startScriptedModel();
    site = createServer((_req, res) => res.end('hello from the allowed host\n'));
    await new Promise<void>((resolve) => site.listen(0, '127.0.0.1', resolve));
    port = (site.address() as AddressInfo).port;
  }, 180_000);

  afterAll(async () => {
    await stack?.stop();
    await model?.close();
    await new Promise((resolve) => site?.close(resolve));
  }, 60_000);

  it('a Bash call reaches an allowed host through the proxy, and another host is refused with a sandbox.egress_denied event naming it', { timeout: 300_000 }, async () => {
    const env = await stack.call('POST', '/v1/environments', { name: 'limited', config: { type: 'cloud', networking: { type: 'limited', allowed_hosts: ['allowed.test'] } } });
    expect(env.status, JSON.stringify(env.body)).toBe(200);
    const agent = await agentWith(stack, model, 'limited', 'sk-ant-limited');
    const command = `curl -s -m 10 http://allowed.test:${port}/; echo; curl -s -m 10 -o /dev/null -w 'refused:%{http_code}' http://refused.test:${port}/`;
    model.setScript([{ match: 'fetch two hosts', steps: [{ tool: 'Bash', input: { command, description: 'curl' } }, echoToolResult] }]);
    const session = await runTurn(stack, agent, 'fetch two hosts', { environment_id: env.body.id });
    const said = await lastMessage(stack, session);
    expect(said).toContain('hello from the allowed host');
    expect(said).toContain('refused:403');
    const denied = await eventually(async () => (await eventsOf(stack, session)).find((e) => e.type === 'sandbox.egress_denied' && e.host === 'refused.test'), { timeoutMs: 10_000 });
    expect(denied).toMatchObject({ host: 'refused.test', port, reason: expect.any(String) });
    expect((await eventsOf(stack, session)).some((e) => e.type === 'sandbox.egress_denied' && e.host === 'allowed.test')).toBe(false);
  });
});

describe('the transcript the worker reads from a session\'s sandbox-writable state', () => {
  let root: string;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'agentplane-claude-transcript-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('a link planted in the state to another session\'s transcript (or a linked projects directory) is not read, so it is never replayed as this session\'s events', async () => {
    const victim = join(root, 'victim', 'config', 'projects', '-workspace');
    await mkdir(victim, { recursive: true });
    const secret = join(victim, 'other.jsonl');
    await writeFile(secret, `${JSON.stringify({ type: 'assistant', message: { id: 'm1', content: [{ type: 'text', text: 'the other session\'s words' }] } })}\n`);

    const state = join(root, 'attacker');
    const projects = join(state, 'config', 'projects');
    await mkdir(join(projects, '-workspace'), { recursive: true });
    // the final name a link
    await symlink(secret, join(projects, '-workspace', 'mine.jsonl'));
    expect(await readTranscript(join(projects, '-workspace', 'mine.jsonl'), state)).toBeNull();
    // a directory on the way a link
    await symlink(victim, join(projects, 'linked'));
    expect(await readTranscript(join(projects, 'linked', 'other.jsonl'), state)).toBeNull();
    // the session's own transcript is read
    await writeFile(join(projects, '-workspace', 'own.jsonl'), '{"type":"user"}\n');
    expect(await readTranscript(join(projects, '-workspace', 'own.jsonl'), state)).toBe('{"type":"user"}\n');
  });
});
