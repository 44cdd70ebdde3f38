/**
 * Claude Managed Agents (or any server speaking its protocol, another agentplane included), remote
 * (managed-agents.adapter.ts): one remote agent, environment and session per session.
 *
 * `runtime.config`: `agent_id` / `environment_id` reuse remote ones instead of creating them; `agent` and `environment`
 * are merged into the remote create bodies as given (the remote server checks them). Nothing else is read, so anything
 * else is refused.
 */
import { z } from 'zod';
import { runtimeConfig } from '../kit/config';
import type { RuntimeCapabilities, RuntimeDescriptor } from '../runtime-adapter';

export const MANAGED_AGENTS_CAPABILITIES = { approvals: true, interrupt: true, reattach: true, cost: 'reported', streaming: true, denies: 'any', sandbox: 'remote', gateway: false, portable: 'remote' } as const satisfies RuntimeCapabilities;

const RemoteId = z.string().min(1).max(256);
const configSchema = runtimeConfig(
  'managed-agents',
  {
    agent_id: RemoteId.optional(),
    environment_id: RemoteId.optional(),
    agent: z.record(z.string(), z.unknown()).optional(),
    environment: z.record(z.string(), z.unknown()).optional(),
  },
  { unknownKeys: 'refuse' },
);
export type ManagedAgentsConfig = z.infer<typeof configSchema>;

export const descriptor: RuntimeDescriptor<'managed-agents'> = {
  kind: 'managed-agents',
  capabilities: MANAGED_AGENTS_CAPABILITIES,
  configSchema,
  create: async (o) => (await import('./managed-agents.adapter')).createManagedAgentsAdapter({ egress: o.egress }),
};
