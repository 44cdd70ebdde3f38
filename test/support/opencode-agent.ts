/**
 * An OpenCode agent on the scripted model, as the process-level tests (durability, portable sessions) create it: a
 * credential holding `secret`, the scripted model priced for the team (it is in no catalogue; OpenCode's sessions are
 * priced from their tokens), and the agent. Answers the agent's id.
 */
import { expect } from 'vitest';
import type { ScriptedModel } from './scripted-model';
import type { Stack } from './stack';

export async function scriptedOpenCodeAgent(stack: Stack, model: ScriptedModel, opts: { name: string; secret: string; toolPolicy: Record<string, unknown> }): Promise<string> {
  const credential = await stack.call('POST', '/v1/credentials', { name: 'model key', secret: opts.secret });
  await stack.price('scripted-model', { input: 3, output: 15 });
  const agent = await stack.call('POST', '/v1/agents', {
    name: opts.name,
    model: 'scripted-model',
    runtime: { type: 'opencode', config: {} },
    model_provider: { base_url: model.openaiBaseUrl, credential_id: credential.body.id },
    tool_policy: opts.toolPolicy,
  });
  expect(agent.status).toBe(200);
  return agent.body.id as string;
}
