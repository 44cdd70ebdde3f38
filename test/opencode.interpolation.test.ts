/**
 * OpenCode expands `{env:…}` and `{file:…}` in its config, and agentplane writes tenant strings into it (model id,
 * base URL, runtime.config): a `{` from a tenant could read the worker's environment or files. The API refuses them,
 * naming the field; the OpenCode and ACP adapters refuse them again before writing (definitions stored earlier), and
 * the turn fails without retrying.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentVersions } from '../db/schema/index';
import { createAcpAdapter } from '../runtimes/acp/acp.adapter';
import { findBrace } from '../runtimes/kit/interpolation';
import { buildOpenCodeConfig } from '../runtimes/opencode/config';
import { createOpenCodeAdapter } from '../runtimes/opencode/opencode.adapter';
import { RuntimeRefusedError, type TurnContext } from '../runtimes/runtime-adapter';
import { testSandboxes } from './support/sandboxes';
import { eventually, startStack, type Stack } from './support/stack';
import { testAgent } from './support/test-agent';

const SMUGGLED = ['{env:AGENTPLANE_MASTER_KEY}', '{file:/etc/passwd}'];

function context(overrides: Partial<TurnContext['agent']>): TurnContext {
  const agent = testAgent({ runtime: { type: 'opencode', config: {} }, model: 'gpt-4.1', modelProvider: { baseUrl: 'http://203.0.113.10:9/v1', credentialId: null }, ...overrides });
  return { sessionId: 'sesn_interpolation', agent, workdir: tmpdir(), secrets: {} };
}

describe('the adapters refuse a "{" in any tenant string they write into OpenCode config', () => {
  it('a model id, base URL or runtime.config value smuggling {env:…} or {file:…} is refused by the OpenCode config builder, naming where', () => {
    for (const smuggled of SMUGGLED) {
      const cases: Array<[Partial<TurnContext['agent']>, string]> = [
        [{ model: `gpt${smuggled}` }, 'model'],
        [{ modelProvider: { baseUrl: `http://203.0.113.10:9/${smuggled}`, credentialId: null } }, 'model_provider.base_url'],
        [{ runtime: { type: 'opencode', config: { contextLimit: 1000, extra: { nested: [1, smuggled] } } } }, 'runtime.config.extra.nested.1'],
        [{ runtime: { type: 'opencode', config: { [smuggled]: 1 } } }, `runtime.config.${smuggled}`],
      ];
      for (const [overrides, where] of cases) {
        expect(() => buildOpenCodeConfig(context(overrides), undefined), where).toThrow(RuntimeRefusedError);
        expect(() => buildOpenCodeConfig(context(overrides), undefined), where).toThrow(`${where} contains "{"`);
      }
    }
    // the config's own reference to the key is ours, and stays
    expect(JSON.stringify(buildOpenCodeConfig(context({}), undefined))).toContain('{env:AGENTPLANE_MODEL_API_KEY}');
  });

  it('the OpenCode adapter refuses such a definition before it starts a server, and the ACP adapter before it passes the values to an agent', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'agentplane-interpolation-'));
    try {
      const { sandboxes } = await testSandboxes(dataDir);
      const opencode = createOpenCodeAdapter({ dataDir, binaryPath: '/nonexistent/opencode', sandboxes });
      await expect(opencode.open(context({ model: 'x{file:/etc/passwd}' }), null)).rejects.toThrow(RuntimeRefusedError);
      const acpCtx = (overrides: Partial<TurnContext['agent']>) => context({ runtime: { type: 'acp', config: { agent: 'custom' } }, ...overrides });
      const acp = createAcpAdapter({ dataDir, sandboxes, agents: { custom: { command: '/nonexistent/agent', args: [], env: {}, modelEnv: 'MODEL', baseUrlEnv: 'BASE_URL' } } });
      await expect(acp.open(acpCtx({ model: '{env:AGENTPLANE_MASTER_KEY}' }), null)).rejects.toThrow('model contains "{"');
      const builtIn = createAcpAdapter({ dataDir, sandboxes });
      await expect(builtIn.open(context({ runtime: { type: 'acp', config: { agent: 'opencode', x: '{env:HOME}' } } }), null)).rejects.toThrow('runtime.config.x contains "{"');
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  });

  it('finds a "{" at any depth without recursion', () => {
    let deep: unknown = '{env:X}';
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(findBrace(deep, 'c')).toBe(`c${'.0'.repeat(100_000)}`);
    expect(findBrace({ a: [1, 'ok', { b: true }] }, 'c')).toBeNull();
  });
});

describe('the API refuses a "{" where OpenCode would expand it', () => {
  let stack: Stack;
  let dataDir: string;
  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'agentplane-interpolation-worker-'));
    // the worker never starts an OpenCode server here: every turn is refused before that
    const { sandboxes } = await testSandboxes(dataDir);
    stack = await startStack({ runtimes: { opencode: createOpenCodeAdapter({ dataDir, binaryPath: '/nonexistent/opencode', sandboxes }) } });
  }, 120_000);
  afterAll(async () => {
    await stack?.stop();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  }, 60_000);

  const base = { name: 'smuggler', model: 'gpt-4.1', runtime: { type: 'opencode', config: {} }, model_provider: { base_url: 'http://203.0.113.10:9/v1' } };

  it('an agent whose model, base URL or runtime.config smuggles {env:AGENTPLANE_MASTER_KEY} or {file:/etc/passwd} is refused with 400 naming the field', async () => {
    for (const smuggled of SMUGGLED) {
      const cases: Array<[Record<string, unknown>, string]> = [
        [{ model: smuggled }, 'body.model'],
        [{ model: { id: `gpt-4.1${smuggled}` } }, 'body.model.id'],
        [{ model_provider: { base_url: `http://203.0.113.10:9/${smuggled}` } }, 'body.model_provider.base_url'],
        [{ runtime: { type: 'opencode', config: { foo: { bar: smuggled } } } }, 'body.runtime.config.foo.bar'],
        [{ runtime: { type: 'opencode', config: { list: ['fine', smuggled] } } }, 'body.runtime.config.list.1'],
        [{ runtime: { type: 'acp', config: { agent: 'opencode', [smuggled]: 1 } } }, `body.runtime.config.${smuggled}`],
        // no runtime named (the default, opencode)
        [{ runtime: undefined, model: `m${smuggled}` }, 'body.model'],
      ];
      for (const [change, field] of cases) {
        const res = await stack.call('POST', '/v1/agents', { ...base, ...change });
        expect(res.status, `${field}: ${JSON.stringify(res.body)}`).toBe(400);
        expect(res.body.invalid_params.map((p: { name: string }) => p.name), field).toContain(field);
      }
    }
    // an update is checked the same way
    const agent = await stack.call('POST', '/v1/agents', base);
    expect(agent.status).toBe(200);
    const update = await stack.call('POST', `/v1/agents/${agent.body.id}`, { runtime: { type: 'opencode', config: { a: '{env:AGENTPLANE_MASTER_KEY}' } } });
    expect(update.status).toBe(400);
    expect(update.body.invalid_params[0].name).toBe('body.runtime.config.a');
    // ordinary ids and URLs pass, and other runtimes keep their own config
    for (const model of ['openai/gpt-4.1', 'claude-sonnet-4-5@20250929', 'llama3.1:8b-instruct+q4', 'scripted-model']) {
      expect((await stack.call('POST', '/v1/agents', { ...base, model })).status, model).toBe(200);
    }
    expect((await stack.call('POST', '/v1/agents', { ...base, runtime: { type: 'scripted', config: { say: '{not opencode}' } } })).status).toBe(200);
  });

  it('a definition stored before the API refused it fails its turn without retries, and no OpenCode server is started', async () => {
    const agent = await stack.call('POST', '/v1/agents', base);
    expect(agent.status).toBe(200);
    await stack.db.db
      .update(agentVersions)
      .set({ definition: { ...base, model: '{env:AGENTPLANE_MASTER_KEY}' } })
      .where(eq(agentVersions.agentId, agent.body.id));
    // the session must get as far as the runtime: a price for the smuggled model id, or the start is refused for want of one
    await stack.price('{env:AGENTPLANE_MASTER_KEY}', { input: 0, output: 0 });
    const session = await stack.call('POST', '/v1/sessions', { agent: agent.body.id });
    expect(session.status, JSON.stringify(session.body)).toBe(200);
    const id = session.body.id as string;
    await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'hello' }] });
    const stopped = await eventually(async () => {
      const res = await stack.call('GET', `/v1/sessions/${id}`);
      return res.body.status === 'idle' && res.body.stop_reason ? res.body.stop_reason : undefined;
    }, { timeoutMs: 60_000 });
    // an error, not retries_exhausted: the refusal is not retried
    expect(stopped).toEqual({ type: 'error', message: expect.stringContaining('model contains "{"') });
    expect(JSON.stringify(stopped)).not.toContain(stack.masterKey);
  }, 90_000);
});
