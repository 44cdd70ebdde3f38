/**
 * OpenClaw: one `openclaw gateway run` per session under Node 24 (openclaw.adapter.ts), driven over its WebSocket
 * protocol; no approvals, so denies are compiled into OpenClaw's own `tools.deny`.
 *
 * `runtime.config`: `api` (OpenClaw's provider API, default `openai-completions`), `contextWindow` and `maxTokens`
 * (written into the model's entry of its config). Nothing else is read, so anything else is refused.
 */
import { z } from 'zod';
import type { CanonicalTool } from '../../governance/types';
import { runtimeConfig } from '../kit/config';
import type { RuntimeCapabilities, RuntimeDescriptor } from '../runtime-adapter';

/** OpenClaw's tools (as offered to the model) → canonical names */
export const OPENCLAW_TOOLS: Record<string, CanonicalTool> = {
  exec: 'bash',
  process: 'bash',
  // provider-backed Python: it runs code like exec does, so a bash deny must take it away too
  code_execution: 'bash',
  read: 'read',
  write: 'write',
  edit: 'edit',
  apply_patch: 'edit',
  ls: 'glob',
  web_fetch: 'web_fetch',
  web_search: 'web_search',
};

/**
 * Denies are compiled into OpenClaw's `tools.deny`, which takes whole tools away: a rule with a pattern, or one that
 * names a tool OpenClaw has no canonical name for (`other:…`), cannot be enforced and sessions under one are refused.
 */
export const OPENCLAW_CAPABILITIES = {
  approvals: false,
  interrupt: true,
  reattach: true,
  cost: 'priced',
  streaming: true,
  denies: 'whole-tool',
  sandbox: 'session',
  gateway: true,
  portable: 'snapshot',
  denyTools: [...new Set(Object.values(OPENCLAW_TOOLS))],
} as const satisfies RuntimeCapabilities;

const Tokens = z.number().int().positive();
const configSchema = runtimeConfig(
  'openclaw',
  { api: z.string().min(1).max(64).regex(/^[a-z0-9-]+$/, 'an OpenClaw provider API such as openai-completions').optional(), contextWindow: Tokens.optional(), maxTokens: Tokens.optional() },
  { unknownKeys: 'refuse' },
);
export type OpenClawConfig = z.infer<typeof configSchema>;

export const descriptor: RuntimeDescriptor<'openclaw'> = {
  kind: 'openclaw',
  capabilities: OPENCLAW_CAPABILITIES,
  configSchema,
  create: async (o) => {
    if (!o.openclaw) throw new Error('the openclaw runtime needs the Node 24 and openclaw binaries (AGENTPLANE_NODE24_BIN, AGENTPLANE_OPENCLAW_BIN)');
    return (await import('./openclaw.adapter')).createOpenClawAdapter({ ...o.openclaw, dataDir: o.dataDir, sandboxes: o.sandboxes, logger: o.logger });
  },
};
