/**
 * Any agent that speaks the Agent Client Protocol over stdio (acp.adapter.ts), one process per session. The definition
 * names the agent; the worker holds the command lines (the built-in `opencode`, plus AGENTPLANE_ACP_AGENTS).
 *
 * `runtime.config`: `agent` (required: a name, never a command; `command` and `args` are refused), and for the built-in
 * OpenCode agent the settings of the `opencode` runtime. Other keys are allowed and ignored, as they always were, but
 * no `{` anywhere (keys too): OpenCode, behind ACP as well, would expand `{env:…}` and `{file:…}` in it.
 */
import { z } from 'zod';
import { runtimeConfig } from '../kit/config';
import { openCodeSettings } from '../opencode/descriptor';
import type { RuntimeCapabilities, RuntimeDescriptor } from '../runtime-adapter';

export const ACP_CAPABILITIES = { approvals: true, interrupt: true, reattach: false, cost: 'priced', streaming: true, denies: 'any', sandbox: 'session', gateway: true, portable: 'snapshot' } as const satisfies RuntimeCapabilities;

/** An ACP agent the worker allows, as `AGENTPLANE_ACP_AGENTS` describes it (config/env.ts validates it). */
export interface AcpAgentSpec {
  command: string;
  args: string[];
  /** fixed environment for the agent (no secrets: the worker's config is not a vault) */
  env: Record<string, string>;
  /** the variable the model key is passed in, if the agent takes one */
  keyEnv?: string;
  /** the variable the agent's `model_provider.base_url` is passed in */
  baseUrlEnv?: string;
  /** the variable the agent's model id is passed in */
  modelEnv?: string;
  /**
   * host directories the agent needs read-only in its sandbox besides its command's own directory (an interpreter, its
   * libraries), at the same paths
   */
  mounts?: string[];
}

const AGENT_NAME = 'the acp runtime needs the name of an ACP agent the worker allows, e.g. "opencode": lowercase letters, digits, ".", "_" or "-" (at most 64)';
const NO_COMMAND = "an ACP agent's command line is set by the worker (AGENTPLANE_ACP_AGENTS), not by the API: pick an agent by name";

const configSchema = runtimeConfig(
  'acp',
  {
    // which names a worker allows is its own configuration: an unknown one is reported by the session (session.error)
    agent: z.string({ error: AGENT_NAME }).regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, { error: AGENT_NAME }),
    command: z.undefined({ error: NO_COMMAND }).optional(),
    args: z.undefined({ error: NO_COMMAND }).optional(),
    ...openCodeSettings,
  },
  { unknownKeys: 'allow', refuseBraces: true },
);
export type AcpConfig = z.infer<typeof configSchema>;

export const descriptor: RuntimeDescriptor<'acp'> = {
  kind: 'acp',
  capabilities: ACP_CAPABILITIES,
  configSchema,
  create: async (o) => (await import('./acp.adapter')).createAcpAdapter({ sandboxes: o.sandboxes, dataDir: o.dataDir, opencodeBin: o.opencodeBin, agents: o.acpAgents, logger: o.logger }),
};
