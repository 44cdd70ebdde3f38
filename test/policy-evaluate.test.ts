/**
 * Policy patterns at the API, on the real stack: a tenant's worst-case pattern on the dry run does not stop the API
 * answering other tenants, and every place a policy is written refuses a pattern or tool glob over the caps with a
 * 400 naming the field.
 */
import { createServer } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { POLICY_LIMITS } from '../governance/policy';
import { startStack, type Stack } from './support/stack';
import { spawnApi, type ServiceProcess } from './support/worker-process';

let stack: Stack;
/** the API as its own process, so a blocked event loop there cannot block this test's timers */
let api: ServiceProcess;
let apiUrl: string;

beforeAll(async () => {
  stack = await startStack();
  const port = await freePort();
  api = await spawnApi(stack, port);
  apiUrl = `http://127.0.0.1:${port}`;
});
afterAll(async () => {
  // SIGKILL: on a regression the API is stuck in the matcher and would not hear SIGTERM
  await api?.kill();
  await stack?.stop();
});

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function callApi(method: string, path: string, key: string, body?: unknown) {
  const res = await fetch(`${apiUrl}${path}`, { method, headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as any };
}

/** The pattern, grown to the star cap: the old `.*` regex backtracks through every way to place the stars. */
const REDOS_PATTERN = `*${'a*'.repeat(POLICY_LIMITS.patternStars - 1)}ab`;
/** The slowest pattern for the new matcher: one long segment with `?`, scanned bit-parallel over the whole subject. */
const SCAN_PATTERN = `*${'a'.repeat(POLICY_LIMITS.patternLength - 4)}?b*`;

describe('POST /v1/policies/evaluate with a worst-case pattern', () => {
  it('a viewer\'s catastrophic-backtracking pattern on the dry run does not stop the API answering another tenant', async () => {
    const viewer = await stack.key('viewer');
    const otherTenant = await (await stack.newTeam()).key('viewer');
    const body = {
      tool_policy: { rules: [{ tool: 'bash', pattern: REDOS_PATTERN, action: 'allow' }, ...Array.from({ length: 49 }, () => ({ tool: '*', pattern: SCAN_PATTERN, action: 'deny' }))], default: 'ask' },
      tool: 'bash',
      input: { command: 'a'.repeat(POLICY_LIMITS.subjectLength) },
    };
    const evaluations = Array.from({ length: 4 }, () => callApi('POST', '/v1/policies/evaluate', viewer, body));
    // on a regression the API is killed with these still open: their failure is not this test's message
    for (const evaluation of evaluations) evaluation.catch(() => undefined);
    let outstanding = true;
    void Promise.allSettled(evaluations).then(() => (outstanding = false));
    // Ask again and again while the evaluations are outstanding: a request that arrives while the matcher holds the
    // event loop is the one that goes unanswered. The deadline only turns that hang into a clear failure; an answer
    // takes milliseconds.
    do {
      let deadline: NodeJS.Timeout | undefined;
      const blocked = new Promise<'blocked'>((resolve) => (deadline = setTimeout(() => resolve('blocked'), 30_000)));
      const answer = await Promise.race([callApi('GET', '/v1/agents', otherTenant).then((res) => res.status), blocked]);
      clearTimeout(deadline);
      expect(answer, 'the API did not answer another tenant while the worst-case pattern was evaluated: its event loop is blocked').toBe(200);
    } while (outstanding);
    for (const evaluation of evaluations) {
      expect((await evaluation).body).toMatchObject({ action: 'ask', rule: 'default → ask', rule_index: null });
    }
  });

  it('refuses a dry-run subject over the cap, naming the input field', async () => {
    const res = await stack.call('POST', '/v1/policies/evaluate', { tool_policy: { rules: [], default: 'allow' }, tool: 'bash', input: { command: 'a'.repeat(POLICY_LIMITS.subjectLength + 1) } });
    expect(res.status).toBe(400);
    expect(res.body.invalid_params).toEqual([{ name: 'body.input.command', reason: `at most ${POLICY_LIMITS.subjectLength} characters` }]);
  });
});

describe('pattern and tool glob caps', () => {
  const stars = (n: number) => `x${'*'.repeat(n)}`;
  const overCap: Array<{ what: string; rule: Record<string, string>; field: 'pattern' | 'tool' }> = [
    { what: 'a pattern over 500 characters', rule: { tool: 'bash', pattern: 'a'.repeat(POLICY_LIMITS.patternLength + 1) }, field: 'pattern' },
    { what: 'a pattern with 17 stars', rule: { tool: 'bash', pattern: stars(POLICY_LIMITS.patternStars + 1) }, field: 'pattern' },
    { what: 'a tool glob over 200 characters', rule: { tool: 'a'.repeat(POLICY_LIMITS.toolLength + 1) }, field: 'tool' },
    { what: 'a tool glob with 5 stars', rule: { tool: stars(POLICY_LIMITS.toolStars + 1) }, field: 'tool' },
  ];

  it('POST /v1/agents, PUT /v1/agents/{id}/policy, PUT /v1/policies/team and the dry run refuse a pattern or tool glob over the caps with a 400 naming the field', async () => {
    const agent = await stack.call('POST', '/v1/agents', { name: 'capped', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' } });
    expect(agent.status).toBe(200);
    for (const { what, rule, field } of overCap) {
      const ruleWithAction = { ...rule, action: 'deny' };
      const writes: Array<[string, string, unknown, string]> = [
        ['POST', '/v1/agents', { name: 'too-broad', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [ruleWithAction], default: 'allow' } }, `body.tool_policy.rules.0.${field}`],
        ['PUT', `/v1/agents/${agent.body.id}/policy`, { tool_policy: { rules: [ruleWithAction], default: 'allow' } }, `body.tool_policy.rules.0.${field}`],
        ['PUT', '/v1/policies/team', { rules: [rule] }, `body.rules.0.${field}`],
        ['POST', '/v1/policies/evaluate', { tool_policy: { rules: [ruleWithAction], default: 'allow' }, tool: 'bash', input: { command: 'ls' } }, `body.tool_policy.rules.0.${field}`],
      ];
      for (const [method, path, body, name] of writes) {
        const res = await stack.call(method, path, body);
        expect(res.status, `${method} ${path} with ${what}`).toBe(400);
        expect(res.body.invalid_params.map((p: { name: string }) => p.name), `${method} ${path} with ${what}`).toEqual([name]);
      }
    }
    // the caps themselves are allowed
    const atCap = { rules: [{ tool: stars(POLICY_LIMITS.toolStars), pattern: stars(POLICY_LIMITS.patternStars).padEnd(POLICY_LIMITS.patternLength, 'a'), action: 'deny' }], default: 'allow' };
    expect((await stack.call('PUT', `/v1/agents/${agent.body.id}/policy`, { tool_policy: atCap })).status).toBe(200);
  });
});
