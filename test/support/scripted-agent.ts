/**
 * An agent on the scripted model, as the process-level tests (durability, portable sessions) and the benchmarks create
 * it: a credential holding `secret`, the scripted model priced for the team when the agent asks for it by that name (it
 * is in no catalogue; runtimes that report tokens are priced from them), and the agent. Answers the agent's id.
 */
import { expect } from 'vitest';
import type { RuntimeKind } from '../../runtimes/runtime-adapter';
import type { ScriptedModel } from './scripted-model';
import type { Stack } from './stack';

export interface ScriptedAgentOptions {
  runtime: RuntimeKind;
  name: string;
  secret: string;
  toolPolicy: Record<string, unknown>;
  /** the model the agent asks for: `scripted-model` unless the runtime needs one it knows (a catalogue model is priced already) */
  model?: string;
  /** where the runtime sends its requests: the scripted model's OpenAI-compatible base URL unless given */
  baseUrl?: string;
  /** the runtime's config */
  config?: Record<string, unknown>;
}

export async function scriptedAgent(stack: Stack, scripted: ScriptedModel, opts: ScriptedAgentOptions): Promise<string> {
  const model = opts.model ?? 'scripted-model';
  const credential = await stack.call('POST', '/v1/credentials', { name: 'model key', secret: opts.secret });
  expect(credential.status).toBeLessThan(300);
  if (model === 'scripted-model') await stack.price(model, { input: 3, output: 15 });
  const agent = await stack.call('POST', '/v1/agents', {
    name: opts.name,
    model,
    runtime: { type: opts.runtime, config: opts.config ?? {} },
    model_provider: { base_url: opts.baseUrl ?? scripted.openaiBaseUrl, credential_id: credential.body.id },
    tool_policy: opts.toolPolicy,
  });
  expect(agent.status).toBe(200);
  return agent.body.id as string;
}
