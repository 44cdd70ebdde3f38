/**
 * Hermes Agent, through its API server's Runs API (hermes.adapter.ts), with the agentplane gate plugin (gate/) loaded
 * by that server to hold every tool call for a decision.
 *
 * `runtime.config`: nothing is read (Hermes picks its LLM from its own config; the agent's `model` names the route and
 * the price), so any key is refused.
 */
import { runtimeConfig } from '../kit/config';
import type { RuntimeCapabilities, RuntimeDescriptor } from '../runtime-adapter';

/** `any` with the gate plugin loaded; without it a turn under a deny rule is refused (hermes.adapter.ts, `denialsWithoutGate`). */
export const HERMES_CAPABILITIES = { approvals: true, interrupt: true, reattach: true, cost: 'priced', streaming: true, denies: 'any', sandbox: 'none' } as const satisfies RuntimeCapabilities;

export const descriptor: RuntimeDescriptor<'hermes'> = {
  kind: 'hermes',
  capabilities: HERMES_CAPABILITIES,
  configSchema: runtimeConfig('hermes', {}, { unknownKeys: 'refuse' }),
  create: async (o) => (await import('./hermes.adapter')).createHermesAdapter({ logger: o.logger, egress: o.egress }),
};
