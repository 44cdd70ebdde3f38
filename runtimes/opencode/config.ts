/**
 * What the two runtimes that start OpenCode share: the `opencode` runtime (`opencode serve`) and the `acp` runtime's
 * built-in agent (`opencode acp`). Both write the same config (one provider at the agent's base URL, its key read from
 * the environment, every tool asking), set the same switches, name tools the same way, and find the binary the same way.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { priceFor, type ModelPrice } from '../../governance/pricing';
import type { CanonicalTool } from '../../governance/types';
import { refuseInterpolation } from '../kit/interpolation';
import type { TurnContext } from '../runtime-adapter';
import type { OpenCodeConfig } from './descriptor';

/** The provider id agentplane's model is configured under. */
export const PROVIDER_ID = 'agentplane';
/** The variable the model key is passed in; the config reads it with `{env:…}`, so the key is never written to disk. */
export const OPENCODE_KEY_ENV = 'AGENTPLANE_MODEL_API_KEY';

/** What OpenCode must not do on its own for a session: fetch model lists, update itself, download LSPs, share. */
export const OPENCODE_SWITCHES = {
  OPENCODE_DISABLE_MODELS_FETCH: '1',
  OPENCODE_DISABLE_AUTOUPDATE: '1',
  OPENCODE_DISABLE_LSP_DOWNLOAD: '1',
  OPENCODE_DISABLE_SHARE: '1',
} as const;

/**
 * USD per million tokens OpenCode computes its own cost with: the given table, else the catalogue. Never
 * `agent.runtime.config.cost` (a tenant's price); what is charged is priced by the ledger either way.
 */
export function openCodePrice(ctx: TurnContext, prices?: Record<string, ModelPrice>): ModelPrice | undefined {
  return priceFor(ctx.agent.model, prices ?? {}) ?? undefined;
}

/**
 * The OpenCode config for an agent: one provider, `agentplane`, at the agent's OpenAI-compatible base URL, its key
 * read from `$AGENTPLANE_MODEL_API_KEY` by OpenCode, and every tool set to ask.
 */
export function buildOpenCodeConfig(ctx: TurnContext, price: ModelPrice | undefined): Record<string, unknown> {
  if (!ctx.agent.modelProvider) throw new Error('the opencode runtime needs agent.modelProvider.baseUrl');
  // OpenCode expands `{env:…}` and `{file:…}` in this config: no tenant string may bring its own
  refuseInterpolation({ model: ctx.agent.model, 'model_provider.base_url': ctx.agent.modelProvider.baseUrl, 'runtime.config': ctx.agent.runtime.config });
  const rc = ctx.agent.runtime.config as OpenCodeConfig;
  const model = ctx.agent.model;
  return {
    $schema: 'https://opencode.ai/config.json',
    model: `${PROVIDER_ID}/${model}`,
    small_model: `${PROVIDER_ID}/${model}`,
    autoupdate: false,
    share: 'disabled',
    // OpenCode's undo snapshots (a shadow git repository of the workspace, diffed after every step) serve its own
    // revert UI, which agentplane does not expose; they cost about a second per turn
    snapshot: false,
    enabled_providers: [PROVIDER_ID],
    provider: {
      [PROVIDER_ID]: {
        npm: '@ai-sdk/openai-compatible',
        name: 'agentplane',
        // `{env:…}` is resolved by OpenCode when it loads the config: the key stays in the process environment
        options: { baseURL: ctx.agent.modelProvider.baseUrl, apiKey: `{env:${OPENCODE_KEY_ENV}}` },
        models: {
          [model]: {
            name: model,
            tool_call: true,
            limit: { context: rc.contextLimit ?? 200_000, output: rc.outputLimit ?? 32_000 },
            ...(price ? { cost: price } : {}),
          },
        },
      },
    },
    // belt and braces: the session's own rules (see createSession) are what gate calls
    permission: { '*': 'ask', question: 'deny' },
  };
}

const TOOL_NAMES: Record<string, CanonicalTool> = {
  bash: 'bash',
  read: 'read',
  write: 'write',
  edit: 'edit',
  // OpenCode's other file-changing tools are edits for governance purposes
  multiedit: 'edit',
  patch: 'edit',
  apply_patch: 'edit',
  glob: 'glob',
  grep: 'grep',
  webfetch: 'web_fetch',
  websearch: 'web_search',
  todowrite: 'todo',
  todoread: 'todo',
  task: 'task',
};

/** OpenCode's tool name → the canonical one. MCP tools are `<server>_<tool>` in OpenCode, known from the agent's config. */
export function canonicalTool(name: string, ctx?: TurnContext): CanonicalTool {
  const known = TOOL_NAMES[name];
  if (known) return known;
  const servers = Object.keys((ctx?.agent.runtime.config as OpenCodeConfig | undefined)?.mcp ?? {});
  for (const server of servers.sort((a, b) => b.length - a.length)) {
    const prefix = `${server.replace(/[^a-zA-Z0-9_-]/g, '_')}_`;
    if (name.startsWith(prefix) && name.length > prefix.length) return `mcp:${server}:${name.slice(prefix.length)}`;
  }
  return `other:${name}`;
}

/** The `opencode` binary shipped by the `opencode-ai` package, else `opencode` on PATH. */
export function defaultOpenCodeBinary(): string {
  try {
    const require = createRequire(import.meta.url);
    const pkg = dirname(require.resolve('opencode-ai/package.json'));
    for (const candidate of [join(pkg, 'bin', 'opencode.exe'), join(pkg, 'bin', 'opencode')]) if (existsSync(candidate)) return candidate;
  } catch {
    // not installed as a dependency: fall back to PATH
  }
  return 'opencode';
}
