/**
 * Claude Code through the Claude Agent SDK (claude-code.adapter.ts): the SDK starts the bundled `claude` binary, one
 * process per session while the worker lives.
 *
 * `runtime.config`: `maxTurns` (the SDK's cap on agent turns in one prompt). Nothing else is read, so anything else is
 * refused: a setting that looks like it would apply (a permission mode, an allowed-tools list) must not silently not.
 */
import { z } from 'zod';
import { runtimeConfig } from '../kit/config';
import type { RuntimeCapabilities, RuntimeDescriptor } from '../runtime-adapter';

export const CLAUDE_CODE_CAPABILITIES = { approvals: true, interrupt: true, reattach: true, cost: 'priced', streaming: true, denies: 'any', sandbox: 'session', gateway: true, portable: 'snapshot' } as const satisfies RuntimeCapabilities;

const configSchema = runtimeConfig('claude-code', { maxTurns: z.number().int().positive().optional() }, { unknownKeys: 'refuse' });
export type ClaudeCodeConfig = z.infer<typeof configSchema>;

export const descriptor: RuntimeDescriptor<'claude-code'> = {
  kind: 'claude-code',
  capabilities: CLAUDE_CODE_CAPABILITIES,
  configSchema,
  create: async (o) => (await import('./claude-code.adapter')).createClaudeCodeAdapter({ dataDir: o.dataDir, logger: o.logger, sandboxes: o.sandboxes }),
};
