/**
 * The `agentplane` command, run as its bin (node cli/agentplane.mjs) against a real stack: agents applied from
 * examples/agents, a scripted session followed with `sessions tail`, its tool call approved from the CLI, a schedule
 * created, paused and run by hand.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as dns } from 'node:dns';
import { cp, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { eventually, waitForStatus, startStack, type Stack } from './support/stack';

const BIN = join(import.meta.dirname, '..', 'cli', 'agentplane.mjs');
const EXAMPLES = join(import.meta.dirname, '..', 'examples', 'agents');

let stack: Stack;
let dir: string;
let config: string;

beforeAll(async () => {
  // examples/agents/coder.yaml names a model endpoint no resolver here knows: answer it as public DNS would
  const exampleHosts: Record<string, string> = { 'llm.internal.example.com': '203.0.113.40' };
  stack = await startStack({
    runtimes: { scripted: createScriptedAdapter() },
    egressLookup: async (host) => (exampleHosts[host] ? [{ address: exampleHosts[host], family: 4 }] : dns.lookup(host, { all: true })),
  });
  dir = await mkdtemp(join(tmpdir(), 'agentplane-cli-'));
  config = join(dir, 'home', 'agentplane', 'config.json');
});
afterAll(async () => {
  await stack?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** the environment of a user who has only what the test gives: no AGENTPLANE_* of the machine running the test */
function cliEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('AGENTPLANE_')));
  return { ...env, AGENTPLANE_CONFIG: config, NO_COLOR: '1', ...extra };
}

function start(args: string[], opts: { env?: Record<string, string> } = {}): ChildProcess & { output: Run; done: Promise<Run> } {
  const child = spawn(process.execPath, [BIN, ...args], { env: cliEnv(opts.env ?? {}), stdio: ['pipe', 'pipe', 'pipe'] });
  const output: Run = { code: null, stdout: '', stderr: '' };
  child.stdout.on('data', (chunk) => (output.stdout += String(chunk)));
  child.stderr.on('data', (chunk) => (output.stderr += String(chunk)));
  const done = new Promise<Run>((resolve) => child.on('close', (code) => resolve({ ...output, code })));
  return Object.assign(child, { output, done });
}

async function cli(args: string[], opts: { env?: Record<string, string>; stdin?: string } = {}): Promise<Run> {
  const child = start(args, opts);
  child.stdin!.end(opts.stdin ?? '');
  return child.done;
}

/** logs in as the admin of the stack's team (the other tests run as that user) */
async function login(): Promise<Run> {
  return cli(['login', '--url', stack.url], { stdin: `${stack.adminKey}\n` });
}

async function agentsByName(): Promise<Map<string, any>> {
  const res = await stack.call('GET', '/v1/agents?limit=100');
  return new Map(res.body.data.map((a: any) => [a.name, a]));
}

// every CLI run is a fresh node process loading TypeScript through tsx: a few seconds each on a busy 2-core machine
describe('agentplane CLI', { timeout: 180_000 }, () => {
  it('login checks the key, then stores the URL and key in an owner-only file without printing the key', async () => {
    const run = await login();
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('logged in to');
    expect(run.stdout + run.stderr).not.toContain(stack.adminKey);
    expect((await stat(config)).mode & 0o777).toBe(0o600);
    expect((await stat(join(config, '..'))).mode & 0o777).toBe(0o700);
    expect(JSON.parse(await readFile(config, 'utf8'))).toEqual({ url: stack.url, api_key: stack.adminKey });
  });

  it('login with a key the API refuses exits 4, writes nothing and does not print the key', async () => {
    const other = join(dir, 'other-config.json');
    const badKey = 'ak_live_this_is_not_a_real_key_0123456789';
    const run = await cli(['login', '--url', stack.url], { stdin: `${badKey}\n`, env: { AGENTPLANE_CONFIG: other } });
    expect(run.code).toBe(4);
    expect(run.stderr).toContain('The API key is not valid');
    expect(run.stdout + run.stderr).not.toContain(badKey);
    await expect(stat(other)).rejects.toThrow(/ENOENT/);
  });

  it('applies examples/agents: creates each agent, and a second apply changes nothing and says so', async () => {
    await login();
    const dry = await cli(['agents', 'apply', '-f', EXAMPLES, '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`create coder (${join(EXAMPLES, 'coder.yaml')})`);
    expect(dry.stdout).toContain('  + tool_policy.rules.0.tool: "bash"');
    expect(dry.stdout).toContain('dry run: 3 to create, 0 to update, 0 unchanged; nothing was written');
    expect((await agentsByName()).size).toBe(0);

    const first = await cli(['agents', 'apply', '-f', EXAMPLES]);
    expect(first.code, first.stderr).toBe(0);
    for (const name of ['reviewer', 'coder', 'triage']) expect(first.stdout).toMatch(new RegExp(`${name}\\s+created\\s+agent_\\S+\\s+v1`));
    const created = await agentsByName();
    expect([...created.keys()].sort()).toEqual(['coder', 'reviewer', 'triage']);
    expect(created.get('coder').tool_policy.rules).toContainEqual({ tool: 'bash', action: 'deny' });
    expect(created.get('reviewer').runtime.type).toBe('scripted');

    const second = await cli(['agents', 'apply', '-f', EXAMPLES]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout.trim()).toBe('no changes: 3 agents unchanged');
    const after = await agentsByName();
    for (const [name, agent] of created) expect(after.get(name).version).toBe(agent.version);
  });

  it('apply --dry-run shows each changed field and writes nothing; apply then writes exactly that', async () => {
    const edited = join(dir, 'agents');
    await cp(EXAMPLES, edited, { recursive: true });
    const file = join(edited, 'reviewer.yaml');
    const yaml = await readFile(file, 'utf8');
    await writeFile(file, yaml.replace('max_cost_usd: 1\n', 'max_cost_usd: 2\n').replace(/metadata:\n {2}team: platform\n/, ''));
    const before = (await agentsByName()).get('reviewer');

    const dry = await cli(['agents', 'apply', '-f', edited, '--dry-run']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toContain(`update reviewer (${file}) ${before.id} v${before.version}`);
    expect(dry.stdout).toContain('~ budget.max_cost_usd: 1 → 2');
    expect(dry.stdout).toContain('- metadata.team: "platform"');
    expect(dry.stdout).toContain('dry run: 0 to create, 1 to update, 2 unchanged; nothing was written');
    expect((await agentsByName()).get('reviewer')).toEqual(before);

    const json = await cli(['agents', 'apply', '-f', edited, '--dry-run', '--json']);
    const plan = JSON.parse(json.stdout);
    expect(plan.dry_run).toBe(true);
    expect(plan.results.find((r: any) => r.name === 'reviewer').changes).toContainEqual({ path: 'budget.max_cost_usd', op: '~', from: 1, to: 2 });

    const applied = await cli(['agents', 'apply', '-f', edited]);
    expect(applied.code, applied.stderr).toBe(0);
    expect(applied.stdout).toMatch(new RegExp(`reviewer\\s+updated\\s+${before.id}\\s+v${before.version + 1}`));
    const now = (await agentsByName()).get('reviewer');
    expect(now.budget.max_cost_usd).toBe(2);
    // a key removed from the file is removed from the agent, though the API merges updates
    expect(now.metadata).toEqual({});
    expect((await cli(['agents', 'apply', '-f', edited])).stdout.trim()).toBe('no changes: 3 agents unchanged');
  });

  it('agents ls prints a table, and with --json an array scripts can parse', async () => {
    const table = await cli(['agents', 'ls']);
    expect(table.code).toBe(0);
    expect(table.stdout.split('\n')[0]).toMatch(/^NAME\s+ID\s+VERSION\s+RUNTIME\s+MODEL\s+UPDATED$/);
    expect(table.stdout).toMatch(/reviewer\s+agent_\S+\s+v\d+\s+scripted\s+scripted/);
    const json = await cli(['agents', 'ls', '--json']);
    expect(json.code).toBe(0);
    const agents = JSON.parse(json.stdout);
    expect(agents.map((a: any) => a.name).sort()).toEqual(['coder', 'reviewer', 'triage']);
  });

  it('sessions start and tail show the agent message and the pending approval, and approve resolves it', async () => {
    const started = await cli(['sessions', 'start', '--agent', 'reviewer', '--json', 'say looking at the diff\ntool bash npm test\nsay tests pass']);
    expect(started.code, started.stderr).toBe(0);
    const session = JSON.parse(started.stdout);
    expect(session.id).toMatch(/^sesn_/);

    const tail = start(['sessions', 'tail', session.id]);
    try {
      const approveLine = await eventually(async () => tail.output.stdout.match(/agentplane approve (\S+) (\S+)/) ?? undefined, { what: 'the approval hint', timeoutMs: 30_000 });
      expect(tail.output.stdout).toMatch(/agent\.message\s+looking at the diff/);
      expect(tail.output.stdout).toMatch(/agent\.tool_use\s+bash \{"command":"npm test"\} → ask/);
      const [, sessionId, toolUseId] = approveLine;
      expect(sessionId).toBe(session.id);
      const pending = await waitForStatus(stack, session.id, 'requires_action');
      expect(pending.pending_approvals.map((a: any) => a.tool_use_id)).toEqual([toolUseId]);

      const approved = await cli(['approve', sessionId!, toolUseId!]);
      expect(approved.code, approved.stderr).toBe(0);
      expect(approved.stdout).toContain(`allowed tool call ${toolUseId}`);
      await eventually(async () => (/agent\.message\s+tests pass/.test(tail.output.stdout) ? true : undefined), { what: 'the message after the tool call' });
      expect(tail.output.stdout).toMatch(/user\.tool_confirmation\s+allow/);
      const done = await waitForStatus(stack, session.id, 'idle', 'end_turn');
      expect(done.pending_approvals).toEqual([]);

      // a decided call cannot be decided again: the API's 409 is exit 1, with its title and detail
      const again = await cli(['deny', sessionId!, toolUseId!]);
      expect(again.code).toBe(1);
      expect(again.stderr).toContain('The tool call is not waiting for a decision');
    } finally {
      tail.kill();
      await tail.done;
    }

    const ls = await cli(['sessions', 'ls']);
    expect(ls.stdout).toMatch(new RegExp(`${session.id}\\s+idle \\(end_turn\\)\\s+reviewer v\\d+\\s+scripted`));
  });

  it('sessions tail --json prints one JSON event per line', async () => {
    const started = await cli(['sessions', 'start', '--agent', 'reviewer', '--json', 'say hello']);
    const session = JSON.parse(started.stdout);
    await waitForStatus(stack, session.id, 'idle', 'end_turn');
    const tail = start(['sessions', 'tail', session.id, '--json']);
    try {
      const events = await eventually(async () => {
        const lines = tail.output.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
        return lines.some((e) => e.type === 'session.status_idle') ? lines : undefined;
      });
      expect(events.find((e) => e.type === 'agent.message').content).toEqual([{ type: 'text', text: 'hello' }]);
    } finally {
      tail.kill();
      await tail.done;
    }
  });

  it('schedules: create, ls (table and --json), pause shows paused, trigger starts a run that runs lists with its cost', async () => {
    // a cron that fires only on 29 February at midnight: the one run is the one the test triggers
    const created = await cli(['schedules', 'create', '--agent', 'reviewer', '--cron', '0 0 29 2 *', '--tz', 'Europe/Berlin', '--overlap', 'buffer_one', '--title', 'leap day', 'say scheduled from the cli\ncost 0.05']);
    expect(created.code, created.stderr).toBe(0);
    const [, scheduleId] = created.stdout.match(/^created (sched_\S+) \(agent reviewer, cron 0 0 29 2 \* in Europe\/Berlin, overlap buffer_one, active\)$/m) ?? [];
    expect(scheduleId, created.stdout).toBeDefined();
    expect(created.stdout).toMatch(/^next run \d{4}-02-2\dT/m);
    const live = (await stack.call('GET', `/v1/schedules/${scheduleId}`)).body;
    expect(live).toMatchObject({ prompt: 'say scheduled from the cli\ncost 0.05', title: 'leap day', spec: { cron: ['0 0 29 2 *'], time_zone: 'Europe/Berlin' }, policies: { overlap: 'buffer_one' } });

    const every = await cli(['schedules', 'create', '--agent', 'reviewer', '--every', '1h30m', '--paused', '--json', 'say every so often']);
    expect(every.code, every.stderr).toBe(0);
    const interval = JSON.parse(every.stdout);
    expect(interval).toMatchObject({ spec: { intervals: [{ every_seconds: 5400 }], time_zone: 'UTC' }, policies: { overlap: 'skip' }, state: { paused: true } });

    const json = await cli(['schedules', 'ls', '--json']);
    expect(json.code, json.stderr).toBe(0);
    const listed = JSON.parse(json.stdout);
    expect(listed.map((s: any) => s.id).sort()).toEqual([scheduleId, interval.id].sort());
    const table = await cli(['schedules', 'ls']);
    expect(table.stdout.split('\n')[0]).toMatch(/^ID\s+AGENT\s+SPEC\s+TIME ZONE\s+OVERLAP\s+STATE\s+TITLE$/);
    expect(table.stdout).toMatch(new RegExp(`${scheduleId}\\s+reviewer\\s+cron 0 0 29 2 \\*\\s+Europe/Berlin\\s+buffer_one\\s+active\\s+leap day`));
    expect(table.stdout).toMatch(new RegExp(`${interval.id}\\s+reviewer\\s+every 1h30m\\s+UTC\\s+skip\\s+paused`));

    const paused = await cli(['schedules', 'pause', scheduleId!]);
    expect(paused.code, paused.stderr).toBe(0);
    expect(paused.stdout.trim()).toBe(`${scheduleId} is paused`);
    expect((await stack.call('GET', `/v1/schedules/${scheduleId}`)).body.state.paused).toBe(true);
    expect((await cli(['schedules', 'ls'])).stdout).toMatch(new RegExp(`${scheduleId}\\s.*\\spaused\\s+leap day`));

    // a paused schedule still runs when triggered by hand
    const triggered = await cli(['schedules', 'trigger', scheduleId!]);
    expect(triggered.code, triggered.stderr).toBe(0);
    expect(triggered.stdout).toContain(`triggered ${scheduleId}`);
    const [run] = await eventually(async () => {
      const res = await stack.call('GET', `/v1/schedules/${scheduleId}/runs`);
      return res.body.data.length > 0 ? res.body.data : undefined;
    }, { what: 'the triggered run' });
    await waitForStatus(stack, run.session_id, 'idle', 'end_turn');
    const runs = await cli(['schedules', 'runs', scheduleId!, '--json']);
    expect(runs.code, runs.stderr).toBe(0);
    const runList = JSON.parse(runs.stdout);
    expect(runList).toHaveLength(1);
    expect(runList[0]).toMatchObject({ session_id: run.session_id, status: 'idle', cost_usd: 0.05 });
    const runTable = await cli(['schedules', 'runs', scheduleId!]);
    expect(runTable.stdout.split('\n')[0]).toMatch(/^SESSION\s+STATUS\s+SCHEDULED AT\s+COST USD\s+CREATED$/);
    expect(runTable.stdout).toMatch(new RegExp(`${run.session_id}\\s+idle \\(end_turn\\)\\s+\\S+\\s+0\\.0500\\s`));
    expect(runTable.stdout.trim().split('\n')).toHaveLength(2);

    const unpaused = await cli(['schedules', 'unpause', scheduleId!]);
    expect(unpaused.stdout).toContain(`${scheduleId} is active`);
    expect((await stack.call('GET', `/v1/schedules/${scheduleId}`)).body.state.paused).toBe(false);
  });

  it('schedules: a wrong command line exits 2 before any request, a bad cron is the API\'s 400 (exit 2), an unknown id exits 3', async () => {
    const offline = { AGENTPLANE_URL: 'http://127.0.0.1:9', AGENTPLANE_API_KEY: stack.adminKey };
    for (const [args, message] of [
      [['schedules', 'create', '--agent', 'reviewer', 'hi'], 'give --cron EXPR or --every DURATION'],
      [['schedules', 'create', '--agent', 'reviewer', '--cron', '@daily', '--every', '1h', 'hi'], 'not both'],
      [['schedules', 'create', '--agent', 'reviewer', '--every', 'soon', 'hi'], '--every: "soon" is not a duration'],
      [['schedules', 'create', '--agent', 'reviewer', '--every', '1h', '--overlap', 'sometimes', 'hi'], '--overlap: must be one of'],
      [['schedules', 'pause'], 'usage: agentplane schedules pause SCHEDULE_ID'],
    ] as const) {
      const run = await cli([...args], { env: offline });
      expect(run.code, args.join(' ')).toBe(2);
      expect(run.stderr).toContain(message);
    }
    const badCron = await cli(['schedules', 'create', '--agent', 'reviewer', '--cron', '61 * * * *', 'hi']);
    expect(badCron.code).toBe(2);
    expect(badCron.stderr).toContain('cron');
    expect((await cli(['schedules', 'trigger', 'sched_does_not_exist'])).code).toBe(3);
    expect((await cli(['schedules', 'runs', 'sched_does_not_exist'])).code).toBe(3);
  });

  it('usage prints spend by agent', async () => {
    const run = await cli(['usage', '--json']);
    expect(run.code, run.stderr).toBe(0);
    expect(JSON.parse(run.stdout).group_by).toBe('agent');
    const table = await cli(['usage', '--group-by', 'model']);
    expect(table.stdout.split('\n')[0]).toMatch(/^MODEL\s+COST USD\s+REQUESTS/);
    const bad = await cli(['usage', '--from', 'yesterday']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('query.from');
  });

  it('an invalid agent file exits 2 naming the file and the field, before any request', async () => {
    const bad = join(dir, 'bad.yaml');
    await writeFile(bad, 'name: broken\nmodel: scripted\nruntime:\n  type: no-such-runtime\nbudget:\n  max_cost_usd: -5\n');
    // an unreachable API: a request would fail with exit 1, so exit 2 shows none was made
    const run = await cli(['agents', 'apply', '-f', bad], { env: { AGENTPLANE_URL: 'http://127.0.0.1:9', AGENTPLANE_API_KEY: stack.adminKey } });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain(`${bad}: runtime.type:`);
    expect(run.stderr).toContain(`${bad}: budget.max_cost_usd:`);

    await writeFile(bad, 'name: broken\nmodel: scripted\ntool_polcy:\n  default: allow\n');
    const typo = await cli(['agents', 'apply', '-f', bad]);
    expect(typo.code).toBe(2);
    expect(typo.stderr).toContain('tool_polcy');
    expect((await agentsByName()).has('broken')).toBe(false);
  });

  it('a key the API refuses exits 4 without printing it; the environment overrides the stored login', async () => {
    const badKey = 'ak_live_wrong_key_never_printed_987654321';
    const run = await cli(['agents', 'ls'], { env: { AGENTPLANE_API_KEY: badKey } });
    expect(run.code).toBe(4);
    expect(run.stderr).toContain('The API key is not valid');
    expect(run.stdout + run.stderr).not.toContain(badKey);

    const viewer = await stack.key('viewer');
    const forbidden = await cli(['agents', 'apply', '-f', EXAMPLES], { env: { AGENTPLANE_API_KEY: viewer } });
    expect(forbidden.code).toBe(4);
    expect(forbidden.stdout + forbidden.stderr).not.toContain(viewer);
  });

  it('exits 3 for what does not exist and 2 for a wrong command line', async () => {
    expect((await cli(['sessions', 'tail', 'sesn_does_not_exist'])).code).toBe(3);
    const noAgent = await cli(['sessions', 'start', '--agent', 'nobody', 'hi']);
    expect(noAgent.code).toBe(3);
    expect(noAgent.stderr).toContain('no agent named "nobody"');
    expect((await cli(['agents', 'frobnicate'])).code).toBe(2);
    const missing = await cli(['approve', 'sesn_x']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('usage: agentplane approve SESSION_ID TOOL_USE_ID');
    expect((await cli(['agents', 'apply'])).stderr).toContain('--file is required');
  });
});
