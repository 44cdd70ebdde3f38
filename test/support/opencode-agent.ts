/**
 * An agent on the scripted model, as the process-level tests (durability, portable sessions) create it: a credential
 * holding `secret`, the scripted model priced for the team (it is in no catalogue; runtimes that report tokens are
 * priced from them), and the agent. Answers the agent's id.
 */
import { expect } from 'vitest';
import type { RuntimeKind } from '../../runtimes/runtime-adapter';
import type { ScriptedModel } from './scripted-model';
import type { Stack } from './stack';

export interface ScriptedAgentOptions {
  name: string;
  secret: string;
  toolPolicy: Record<string, unknown>;
  /** default: OpenCode */
  runtime?: RuntimeKind;
  /** the runtime's own config (`runtime.config`) */
  config?: Record<string, unknown>;
  /** the model name the agent asks for (default `scripted-model`, priced here) */
  model?: string;
  /** where the runtime sends model requests (default: the scripted model's OpenAI-compatible base URL) */
  baseUrl?: string;
}

export async function scriptedAgent(stack: Stack, model: ScriptedModel, opts: ScriptedAgentOptions): Promise<string> {
  const credential = await stack.call('POST', '/v1/credentials', { name: 'model key', secret: opts.secret });
  expect(credential.status).toBeLessThan(300);
  await stack.price('scripted-model', { input: 3, output: 15 });
  const agent = await stack.call('POST', '/v1/agents', {
    name: opts.name,
    model: opts.model ?? 'scripted-model',
    runtime: { type: opts.runtime ?? 'opencode', config: opts.config ?? {} },
    model_provider: { base_url: opts.baseUrl ?? model.openaiBaseUrl, credential_id: credential.body.id },
    tool_policy: opts.toolPolicy,
  });
  expect(agent.status).toBe(200);
  return agent.body.id as string;
}

export const scriptedOpenCodeAgent = (stack: Stack, model: ScriptedModel, opts: { name: string; secret: string; toolPolicy: Record<string, unknown> }): Promise<string> => scriptedAgent(stack, model, opts);
