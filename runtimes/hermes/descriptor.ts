/**
 * Hermes Agent: one `hermes gateway run` per session in the session's sandbox, driven through its API server's Runs API
 * (hermes.adapter.ts), with the agentplane gate plugin (gate/) loaded to hold every tool call for a decision.
 *
 * `runtime.config`: nothing is read (the LLM is the agent's model provider, like every runtime's), so any key is refused.
 */
import { runtimeConfig } from '../kit/config';
import type { RuntimeCapabilities, RuntimeDescriptor } from '../runtime-adapter';

/** `any` with the gate plugin loaded; without it a turn under a deny rule is refused (hermes.adapter.ts, `denialsWithoutGate`). */
export const HERMES_CAPABILITIES = { approvals: true, interrupt: true, reattach: true, cost: 'priced', streaming: true, denies: 'any', sandbox: 'session', gateway: true, portable: 'snapshot' } as const satisfies RuntimeCapabilities;

export const descriptor: RuntimeDescriptor<'hermes'> = {
  kind: 'hermes',
  capabilities: HERMES_CAPABILITIES,
  configSchema: runtimeConfig('hermes', {}, { unknownKeys: 'refuse' }),
  create: async (o) => {
    if (!o.hermesBin) throw new Error('the hermes runtime needs the hermes binary (HERMES_BIN)');
    return (await import('./hermes.adapter')).createHermesAdapter({ binaryPath: o.hermesBin, dataDir: o.dataDir, sandboxes: o.sandboxes, logger: o.logger });
  },
};
