import { RUNTIME_KINDS } from '../governance/types';
import { createAcpAdapter, type AcpAgentSpec } from '../runtimes/acp.adapter';
import { createClaudeCodeAdapter } from '../runtimes/claude-code.adapter';
import { createCursorAdapter } from '../runtimes/cursor.adapter';
import { createDeepAgentsAdapter } from '../runtimes/deepagents.adapter';
import { createHermesAdapter } from '../runtimes/hermes.adapter';
import { createManagedAgentsAdapter } from '../runtimes/managed-agents.adapter';
import { createOpenClawAdapter } from '../runtimes/openclaw.adapter';
import { createOpenCodeAdapter } from '../runtimes/opencode.adapter';
import type { RuntimeRegistry } from '../runtimes/runtime-adapter';
import { createScriptedAdapter } from '../runtimes/scripted.adapter';

export const RUNTIME_NAMES = RUNTIME_KINDS;

export function buildRuntimes(
  names: ReadonlyArray<(typeof RUNTIME_NAMES)[number]>,
  opts: { dataDir: string; opencodeBin?: string; acpAgents?: Record<string, AcpAgentSpec>; openclaw?: { nodeBin: string; openclawBin: string } },
): RuntimeRegistry {
  const registry: RuntimeRegistry = {};
  for (const name of names) {
    if (name === 'opencode') registry.opencode = createOpenCodeAdapter({ dataDir: opts.dataDir, binaryPath: opts.opencodeBin });
    if (name === 'claude-code') registry['claude-code'] = createClaudeCodeAdapter({ dataDir: opts.dataDir });
    if (name === 'scripted') registry.scripted = createScriptedAdapter();
    if (name === 'managed-agents') registry['managed-agents'] = createManagedAgentsAdapter();
    if (name === 'cursor') registry.cursor = createCursorAdapter();
    if (name === 'deepagents') registry.deepagents = createDeepAgentsAdapter({ dataDir: opts.dataDir });
    if (name === 'acp') registry.acp = createAcpAdapter({ dataDir: opts.dataDir, opencodeBin: opts.opencodeBin, agents: opts.acpAgents });
    if (name === 'hermes') registry.hermes = createHermesAdapter();
    if (name === 'openclaw') {
      if (!opts.openclaw) throw new Error('the openclaw runtime needs the Node 24 and openclaw binaries (AGENTPLANE_NODE24_BIN, AGENTPLANE_OPENCLAW_BIN)');
      registry.openclaw = createOpenClawAdapter(opts.openclaw);
    }
  }
  return registry;
}
