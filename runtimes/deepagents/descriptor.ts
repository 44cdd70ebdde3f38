/**
 * DeepAgents JS on LangGraph, inside the worker (deepagents.adapter.ts): `ChatOpenAI` at the agent's endpoint, file
 * tools and a shell rooted in the session's folder.
 *
 * `runtime.config`: nothing is read (the model, endpoint and system prompt are the agent's own fields), so any key is
 * refused.
 */
import { runtimeConfig } from '../kit/config';
import type { RuntimeCapabilities, RuntimeDescriptor } from '../runtime-adapter';

export const DEEPAGENTS_CAPABILITIES = { approvals: true, interrupt: true, reattach: true, cost: 'priced', streaming: true, denies: 'any', sandbox: 'session', gateway: true, portable: 'snapshot' } as const satisfies RuntimeCapabilities;

export const descriptor: RuntimeDescriptor<'deepagents'> = {
  kind: 'deepagents',
  capabilities: DEEPAGENTS_CAPABILITIES,
  configSchema: runtimeConfig('deepagents', {}, { unknownKeys: 'refuse' }),
  create: async (o) => (await import('./deepagents.adapter')).createDeepAgentsAdapter({ dataDir: o.dataDir, logger: o.logger, egress: o.egress, sandboxes: o.sandboxes }),
};
