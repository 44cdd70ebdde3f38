/**
 * A session on the Claude Code runtime through the whole stack (API, Temporal workflow, worker, real Agent SDK and
 * `claude` binary, scripted Anthropic Messages model): the agent's policy denies bash, asks for write and allows the
 * rest; a person approves the write. The model key comes from the vault and reaches the model, nowhere else. The
 * worker runs `claude` in the session's sandbox, where the session's workspace is /workspace.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createClaudeCodeAdapter } from '../runtimes/claude-code/claude-code.adapter';
import { expectDenyAskAllow } from './support/conformance';
import { readFilesUnder } from './support/files';
import { startScriptedModel, type ScriptedModel } from './support/scripted-model';
import { eventsOf, eventually, LOCAL_RECEIVERS, startStack, waitForStatus, type Stack } from './support/stack';

const SECRET = 'sk-ant-stack-0123456789abcdefSECRET';

let stack: Stack;
let model: ScriptedModel;

beforeAll(async () => {
  model = await startScriptedModel();
  // the scripted model listens on 127.0.0.1
  stack = await startStack({ worker: false, allowPrivateEgress: LOCAL_RECEIVERS });
  await stack.startWorker({ 'claude-code': createClaudeCodeAdapter({ dataDir: stack.dataDir, sandboxes: stack.sandboxes }) });
}, 120_000);
afterAll(async () => {
  await stack?.stop();
  await model?.close();
}, 60_000);

describe('Claude Code through the whole stack', () => {
  it('denies bash, asks for write (approved by a person), allows read', async () => {
    const file = '/workspace/claude-written.txt';
    model.setScript([
      {
        match: 'do three things',
        steps: [
          { tool: 'Bash', input: { command: 'echo should-not-run', description: 'echo' } },
          { tool: 'Write', input: { file_path: file, content: 'written by claude\n' } },
          { tool: 'Read', input: { file_path: file } },
          { text: (c) => `done: ${c.lastToolResult}` },
        ],
      },
    ]);
    const credential = await stack.call('POST', '/v1/credentials', { name: 'anthropic key', secret: SECRET });
    expect(credential.status).toBeLessThan(300);
    const agent = await stack.call('POST', '/v1/agents', {
      name: 'claude code agent',
      model: 'claude-sonnet-4-5',
      runtime: { type: 'claude-code', config: {} },
      model_provider: { base_url: model.url, credential_id: credential.body.id },
      tool_policy: { rules: [{ tool: 'bash', action: 'deny' }, { tool: 'write', action: 'ask' }], default: 'allow' },
    });
    expect(agent.status).toBeLessThan(300);
    const session = await stack.call('POST', '/v1/sessions', { agent: agent.body.id });
    const id = session.body.id as string;
    await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'do three things' }] });

    await waitForStatus(stack, id, 'requires_action', 'requires_action', 60_000);
    const asked = (await eventsOf(stack, id)).filter((e) => e.type === 'agent.tool_use' && e.evaluated_permission === 'ask');
    expect(asked).toHaveLength(1);
    await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: asked[0].id, result: 'allow' }] });
    await waitForStatus(stack, id, 'idle', 'end_turn', 90_000);
    await eventually(async () => ((await eventsOf(stack, id)).some((e) => e.type === 'agent.message') ? true : undefined), { timeoutMs: 10_000 });

    const events = await eventsOf(stack, id);
    const results = expectDenyAskAllow(events);
    expect(JSON.stringify(results[2].content)).toContain('written by claude');
    expect(events.filter((e) => e.type === 'agent.message').at(-1)?.content[0].text).toContain('written by claude');
    expect(events.some((e) => e.type === 'span.model_request_end')).toBe(true);
    expect(model.requests.filter((r) => r.prompt?.endsWith('do three things') && r.stepIndex === 0)).toHaveLength(1);

    // the key reached the model and is in no event and no file under the worker's data dir
    expect(model.requests.find((r) => r.protocol === 'anthropic')?.headers['x-api-key']).toBe(SECRET);
    expect(JSON.stringify(events)).not.toContain(SECRET);
    const files = await readFilesUnder(stack.dataDir);
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) expect(file.content.includes(SECRET), file.path).toBe(false);
  }, 240_000);
});
