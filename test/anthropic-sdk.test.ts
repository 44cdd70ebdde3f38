/**
 * The official Anthropic SDK (`@anthropic-ai/sdk`), pointed at agentplane by changing only `baseURL` and `apiKey`,
 * drives a session on the OpenCode runtime: agent, environment, session, live event stream, one tool call allowed
 * and one refused by a person, and the Managed Agents event vocabulary with the right stop reasons.
 */
import Anthropic from '@anthropic-ai/sdk';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createOpenCodeAdapter } from '../runtimes/opencode/opencode.adapter';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { startScriptedModel, type ScriptedModel } from './support/scripted-model';
import { LOCAL_RECEIVERS, startStack, type Stack } from './support/stack';

let stack: Stack;
let model: ScriptedModel;

beforeAll(async () => {
  model = await startScriptedModel();
  // the scripted model listens on 127.0.0.1
  stack = await startStack({ worker: false, allowPrivateEgress: LOCAL_RECEIVERS });
  await stack.startWorker({ opencode: createOpenCodeAdapter({ dataDir: stack.dataDir, sandboxes: stack.sandboxes }), scripted: createScriptedAdapter() });
}, 120_000);
afterAll(async () => {
  await stack?.stop();
  await model?.close();
}, 60_000);

describe('the official Anthropic SDK against agentplane', () => {
  it('runs an OpenCode session with one tool call allowed and one denied by a person', async () => {
    model.setScript([
      {
        match: 'list then clean',
        steps: [
          { tool: 'bash', input: { command: 'echo sdk-allowed', description: 'list' } },
          { tool: 'bash', input: { command: 'echo sdk-refused', description: 'clean' } },
          { text: 'one ran, one was refused' },
        ],
      },
    ]);
    const client = new Anthropic({ baseURL: stack.url, apiKey: stack.adminKey });
    // the scripted model is in no catalogue: the team prices it (OpenCode's sessions are priced from their tokens)
    await stack.price('scripted-model', { input: 3, output: 15 });

    // Managed Agents fields, plus agentplane's runtime and model endpoint (extra body fields the SDK passes through)
    const agent = await client.beta.agents.create({
      name: 'sdk agent',
      model: 'scripted-model',
      system: 'You are careful.',
      tools: [{ type: 'agent_toolset_20260401', default_config: { permission_policy: { type: 'always_ask' } } }],
      runtime: { type: 'opencode', config: {} },
      model_provider: { base_url: model.openaiBaseUrl },
    } as unknown as Anthropic.Beta.AgentCreateParams);
    expect(agent.id).toMatch(/^agent_/);
    expect(agent.version).toBe(1);

    const environment = await client.beta.environments.create({ name: 'sdk env', config: { type: 'cloud', networking: { type: 'unrestricted' } } });
    const session = await client.beta.sessions.create({ agent: agent.id, environment_id: environment.id, title: 'SDK session' });
    expect(session.id).toMatch(/^sesn_/);
    expect(session.status).toBe('idle');

    const seen: any[] = [];
    const stream = await client.beta.sessions.events.stream(session.id);
    const decisions = ['allow', 'deny'] as const;
    let decided = 0;
    const consumed = (async () => {
      for await (const event of stream as AsyncIterable<any>) {
        seen.push(event);
        if (event.type === 'agent.tool_use' && event.evaluated_permission === 'ask') {
          const result = decisions[decided++]!;
          await client.beta.sessions.events.send(session.id, {
            events: [{ type: 'user.tool_confirmation', tool_use_id: event.id, result, ...(result === 'deny' ? { deny_message: 'not on this machine' } : {}) }],
          });
        }
        if (event.type === 'session.status_idle' && event.stop_reason?.type === 'end_turn') break;
      }
    })();

    await client.beta.sessions.events.send(session.id, { events: [{ type: 'user.message', content: [{ type: 'text', text: 'list then clean' }] }] });
    await Promise.race([consumed, new Promise((_, reject) => setTimeout(() => reject(new Error(`stream stalled; saw ${JSON.stringify(seen.map((e) => e.type))}`)), 90_000))]);

    const types = seen.map((e) => e.type);
    for (const type of ['user.message', 'session.status_running', 'agent.tool_use', 'agent.tool_result', 'agent.message', 'session.status_idle']) expect(types).toContain(type);
    const uses = seen.filter((e) => e.type === 'agent.tool_use');
    expect(uses.map((u) => [u.name, u.input.command, u.evaluated_permission])).toEqual([
      ['bash', 'echo sdk-allowed', 'ask'],
      ['bash', 'echo sdk-refused', 'ask'],
    ]);
    const results = seen.filter((e) => e.type === 'agent.tool_result');
    expect(results.map((r) => [r.tool_use_id, r.is_error])).toEqual([
      [uses[0].id, false],
      [uses[1].id, true],
    ]);
    expect(JSON.stringify(results[0].content)).toContain('sdk-allowed');
    const idles = seen.filter((e) => e.type === 'session.status_idle').map((e) => e.stop_reason.type);
    expect(idles).toEqual(['requires_action', 'requires_action', 'end_turn']);
    expect(seen.filter((e) => e.type === 'session.status_idle' && e.stop_reason.type === 'requires_action').map((e) => e.stop_reason.event_ids)).toEqual([[uses[0].id], [uses[1].id]]);
    expect(seen.find((e) => e.type === 'agent.message')?.content[0].text).toBe('one ran, one was refused');
    expect(model.countPrompts('list then clean')).toBe(1);

    // the same history through the paginated list, and the session's usage
    const listed: any[] = [];
    for await (const event of client.beta.sessions.events.list(session.id, { limit: 5 })) listed.push(event);
    expect(listed.map((e) => e.id)).toEqual(expect.arrayContaining(seen.map((e) => e.id)));
    const retrieved = await client.beta.sessions.retrieve(session.id);
    expect(retrieved.status).toBe('idle');
    expect(Number(retrieved.usage?.list_cost?.amount ?? 0)).toBeGreaterThan(0);
    await client.beta.sessions.archive(session.id);
  }, 150_000);

  it("creates, retrieves, updates and lists environments with beta.environments, a limited network policy in the SDK's own types, and another team's environment is the SDK's NotFoundError", async () => {
    const client = new Anthropic({ baseURL: stack.url, apiKey: stack.adminKey });
    const created: Anthropic.Beta.BetaEnvironment = await client.beta.environments.create({
      name: 'sdk limited',
      description: 'only GitHub',
      config: { type: 'cloud', networking: { type: 'limited', allowed_hosts: ['github.com', '*.githubusercontent.com'], allow_package_managers: true } },
      metadata: { purpose: 'sdk' },
    });
    expect(created).toMatchObject({
      id: expect.stringMatching(/^env_/),
      type: 'environment',
      description: 'only GitHub',
      config: { type: 'cloud', networking: { type: 'limited', allowed_hosts: ['github.com', '*.githubusercontent.com'], allow_package_managers: true, allow_mcp_servers: false } },
      metadata: { purpose: 'sdk' },
      archived_at: null,
    });
    expect(await client.beta.environments.retrieve(created.id)).toEqual(created);

    // an update names only what changes (the SDK's params: omitted fields keep their value)
    const updated = await client.beta.environments.update(created.id, { config: { type: 'cloud', networking: { type: 'limited', allowed_hosts: ['api.github.com'] } }, metadata: { purpose: null } });
    const networking = updated.config.type === 'cloud' ? updated.config.networking : null;
    expect(networking).toEqual({ type: 'limited', allowed_hosts: ['api.github.com'], allow_package_managers: true, allow_mcp_servers: false });
    expect(updated.metadata).toEqual({});
    expect(updated.name).toBe('sdk limited');

    // a bad host is the SDK's BadRequestError, naming the entry
    const refused = await client.beta.environments.update(created.id, { config: { type: 'cloud', networking: { type: 'limited', allowed_hosts: ['169.254.169.254'] } } }).catch((err: unknown) => err);
    expect(refused).toBeInstanceOf(Anthropic.BadRequestError);
    expect(String((refused as Error).message)).toContain('body.config.networking.allowed_hosts.0');

    // the list pages through every environment, one at a time
    const second = await client.beta.environments.create({ name: 'sdk default' });
    expect(second.config).toMatchObject({ type: 'cloud', networking: { type: 'unrestricted' } });
    const listed: string[] = [];
    for await (const env of client.beta.environments.list({ limit: 1 })) listed.push(env.id);
    expect(listed).toEqual(expect.arrayContaining([created.id, second.id]));
    expect(new Set(listed).size).toBe(listed.length);

    const other = new Anthropic({ baseURL: stack.url, apiKey: await stack.key('admin', 'other') });
    await expect(other.beta.environments.retrieve(created.id)).rejects.toBeInstanceOf(Anthropic.NotFoundError);
    await expect(other.beta.environments.update(created.id, { config: { type: 'cloud', networking: { type: 'unrestricted' } } })).rejects.toBeInstanceOf(Anthropic.NotFoundError);
    expect((await client.beta.environments.retrieve(created.id)).config).toEqual(updated.config);
  });
});
