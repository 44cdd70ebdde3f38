/**
 * OpenCode: one `opencode serve` per session (opencode.adapter.ts), the model at any OpenAI-compatible endpoint.
 *
 * `runtime.config`: `contextLimit` and `outputLimit` (tokens, written into the model's entry of OpenCode's config) and
 * `mcp` (its server names are how OpenCode's `<server>_<tool>` names are read back as `mcp:<server>:<tool>`). Other
 * keys are allowed and ignored, as they always were, but no `{` anywhere (keys too): OpenCode would expand
 * `{env:…}` and `{file:…}` in it.
 */
import { z } from 'zod';
import { runtimeConfig } from '../kit/config';
import type { RuntimeCapabilities, RuntimeDescriptor } from '../runtime-adapter';

export const OPENCODE_CAPABILITIES = { approvals: true, interrupt: true, reattach: true, cost: 'priced', streaming: true, denies: 'any', sandbox: 'session', gateway: true, portable: 'snapshot' } as const satisfies RuntimeCapabilities;

const Tokens = z.number().int().positive();

/** The settings OpenCode reads; the `acp` runtime's built-in OpenCode agent reads the same. */
export const openCodeSettings = {
  contextLimit: Tokens.optional(),
  outputLimit: Tokens.optional(),
  mcp: z.record(z.string(), z.unknown()).optional(),
};

const configSchema = runtimeConfig('opencode', openCodeSettings, { unknownKeys: 'allow', refuseBraces: true });
export type OpenCodeConfig = z.infer<typeof configSchema>;

export const descriptor: RuntimeDescriptor<'opencode'> = {
  kind: 'opencode',
  capabilities: OPENCODE_CAPABILITIES,
  configSchema,
  create: async (o) => (await import('./opencode.adapter')).createOpenCodeAdapter({ dataDir: o.dataDir, binaryPath: o.opencodeBin, logger: o.logger, sandboxes: o.sandboxes }),
};
