/**
 * The agent definition: Managed-Agents-compatible fields (name, model, system, description, tools, metadata)
 * plus agentplane's own (runtime, model_provider, tool_policy, budget, timeouts).
 */
import { z } from '@hono/zod-openapi';
import { POLICY_LIMITS, policyFromDefinition } from '../../governance/policy';
import type { AgentSnapshot, ToolPolicy } from '../../governance/types';
import { descriptorOf, RUNTIME_KINDS } from '../../runtimes/registry';
import { Metadata, Version } from './common';

const Action = z.enum(['allow', 'ask', 'deny']);

const stars = (glob: string) => glob.split('*').length - 1;

/** A rule's pattern, wherever a policy is written (agent, team, dry run): capped so matching stays cheap. */
export const PolicyPattern = z
  .string()
  .min(1)
  .max(POLICY_LIMITS.patternLength)
  .refine((glob) => stars(glob) <= POLICY_LIMITS.patternStars, `at most ${POLICY_LIMITS.patternStars} "*" wildcards`)
  .openapi({ example: 'git *', description: 'glob over the call\'s subject: `*` any run of characters, `?` one character' });

/** A rule's tool: a canonical name, `*`, or a glob such as `mcp:github:*`. */
export const ToolGlob = z
  .string()
  .min(1)
  .max(POLICY_LIMITS.toolLength)
  .refine((glob) => stars(glob) <= POLICY_LIMITS.toolStars, `at most ${POLICY_LIMITS.toolStars} "*" wildcards`)
  .openapi({ example: 'bash' });

export const ToolPolicySchema = z
  .object({
    rules: z.array(z.object({ tool: ToolGlob, pattern: PolicyPattern.optional(), action: Action })).max(200),
    default: Action,
  })
  .openapi('ToolPolicy');

/** Managed Agents' toolset permission settings, mapped onto a tool policy when no tool_policy is given. */
const ManagedToolset = z
  .object({
    type: z.string(),
    default_config: z.object({ permission_policy: z.object({ type: z.enum(['always_allow', 'always_ask', 'auto']) }).optional() }).passthrough().optional(),
    configs: z.array(z.object({ name: ToolGlob, permission_policy: z.object({ type: z.enum(['always_allow', 'always_ask', 'auto']) }).optional() }).passthrough()).optional(),
  })
  .passthrough();

/**
 * Model ids and base URLs are written into runtime configs, and OpenCode expands `{env:…}` and `{file:…}` in its own
 * (a model id `{env:AGENTPLANE_MASTER_KEY}` would become the worker's secret): ids keep to a plain character set, URLs
 * carry no braces or whitespace.
 */
const ModelId = z
  .string()
  .min(1)
  .max(200)
  .regex(/^[A-Za-z0-9._:/@+-]+$/, 'a model id of letters, digits and . _ - : / @ + only');
const BaseUrl = z
  .string()
  .url()
  .regex(/^[^{}\s]+$/, 'a URL without braces or whitespace');

export const AgentDefinitionSchema = z.object({
  name: z.string().min(1).max(256),
  model: z.union([ModelId, z.object({ id: ModelId }).passthrough()]),
  system: z.string().max(100_000).nullable().optional(),
  description: z.string().max(2048).nullable().optional(),
  metadata: Metadata.optional(),
  tools: z.array(ManagedToolset).max(20).optional(),
  runtime: z
    .object({ type: z.enum(RUNTIME_KINDS), config: z.record(z.string(), z.unknown()).optional() })
    // each runtime's descriptor says what its config may hold (runtimes/<kind>/descriptor.ts): no `cost` anywhere,
    // no `{` where OpenCode reads it, no command line for ACP, and no setting the adapter does not read where it says so
    .superRefine((runtime, ctx) => {
      const checked = descriptorOf(runtime.type).configSchema.safeParse(runtime.config ?? {});
      if (checked.success) return;
      for (const issue of checked.error.issues) ctx.addIssue({ code: 'custom', path: ['config', ...issue.path], message: issue.message });
    })
    .optional()
    .openapi({ description: 'which runtime runs the agent (default opencode)' }),
  model_provider: z
    .object({ base_url: BaseUrl, credential_id: z.string().startsWith('cred_').optional() })
    .optional()
    .openapi({ description: 'an OpenAI-compatible endpoint for the model, and the credential holding its key' }),
  tool_policy: ToolPolicySchema.optional(),
  budget: z
    .object({
      max_cost_usd: z.number().positive().max(1_000_000).optional().openapi({ description: 'cap for one session' }),
      turn_reserve_usd: z.number().positive().max(10_000).optional().openapi({ description: "held on the team's and agent's budgets before each turn (default 0.10)" }),
    })
    .optional(),
  approval_timeout_seconds: z.number().int().min(1).max(30 * 86400).optional(),
  idle_timeout_seconds: z.number().int().min(1).max(365 * 86400).optional(),
  approvals: z
    .object({ separation_of_duties: z.boolean() })
    .optional()
    .openapi({ description: 'separation_of_duties: the key that started a session may not decide its tool calls (default false)' }),
});
export type AgentDefinition = z.infer<typeof AgentDefinitionSchema>;

export const AgentUpdateSchema = AgentDefinitionSchema.partial().extend({
  version: Version.optional().openapi({ description: 'the version this update is based on; a stale one is refused (409)' }),
});

export const DEFAULT_APPROVAL_TIMEOUT_SECONDS = 24 * 3600;
export const DEFAULT_IDLE_TIMEOUT_SECONDS = 7 * 86400;

/** The agent's own policy: its tool_policy, else its Managed Agents toolset settings (see governance/policy.ts). */
export function effectivePolicy(def: AgentDefinition): ToolPolicy {
  return policyFromDefinition(def);
}

export function modelId(def: AgentDefinition): string {
  return typeof def.model === 'string' ? def.model : def.model.id;
}

/**
 * What governs a session rather than what its agent is: the tool policy, separation of duties and the budget fields.
 * A session takes these from the agent's current version whatever version it pins (see planSession), so pinning an
 * old version never brings back an old, looser policy, cap or approval rule.
 */
export function governanceOf(def: AgentDefinition): Pick<AgentSnapshot, 'toolPolicy' | 'budget' | 'separationOfDuties'> {
  return { toolPolicy: effectivePolicy(def), budget: def.budget ?? {}, separationOfDuties: def.approvals?.separation_of_duties ?? false };
}

/** A definition with no policy fields at all: what `agents:write` alone may create. */
const UNGOVERNED = governanceOf({ name: '', model: '' });

/** The request fields `policies:write` guards: what decides an agent's tool calls and who may approve them. */
export type PolicyField = 'tool_policy' | 'tools' | 'approvals.separation_of_duties';

/**
 * The policy fields that `next` changes from `previous` (from the defaults for a new agent). A changed effective
 * policy is blamed on `tool_policy` when the definition has one, else on the toolset settings in `tools` it came from.
 */
export function changedPolicyFields(previous: AgentDefinition | null, next: AgentDefinition): PolicyField[] {
  const before = previous ? governanceOf(previous) : UNGOVERNED;
  const after = governanceOf(next);
  const changed: PolicyField[] = [];
  if (!samePolicy(before.toolPolicy, after.toolPolicy)) changed.push(next.tool_policy ? 'tool_policy' : 'tools');
  if (before.separationOfDuties !== after.separationOfDuties) changed.push('approvals.separation_of_duties');
  return changed;
}

function samePolicy(a: ToolPolicy, b: ToolPolicy): boolean {
  const canonical = (p: ToolPolicy) => JSON.stringify([p.default, p.rules.map((r) => [r.tool, r.pattern ?? null, r.action])]);
  return canonical(a) === canonical(b);
}

export function toSnapshot(params: { agentId: string; version: number; teamId: string; def: AgentDefinition }): AgentSnapshot {
  const { def } = params;
  return {
    agentId: params.agentId,
    version: params.version,
    teamId: params.teamId,
    name: def.name,
    runtime: { type: def.runtime?.type ?? 'opencode', config: def.runtime?.config ?? {} },
    model: modelId(def),
    modelProvider: def.model_provider ? { baseUrl: def.model_provider.base_url, credentialId: def.model_provider.credential_id ?? null } : null,
    system: def.system ?? null,
    approvalTimeoutSeconds: def.approval_timeout_seconds ?? DEFAULT_APPROVAL_TIMEOUT_SECONDS,
    idleTimeoutSeconds: def.idle_timeout_seconds ?? DEFAULT_IDLE_TIMEOUT_SECONDS,
    ...governanceOf(def),
  };
}

export const AgentSchema = z
  .object({
    id: z.string(),
    type: z.literal('agent'),
    version: z.number().int(),
    name: z.string(),
    model: z.object({ id: z.string() }),
    system: z.string().nullable(),
    description: z.string().nullable(),
    metadata: z.record(z.string(), z.string()),
    tools: z.array(z.any()),
    mcp_servers: z.array(z.any()),
    skills: z.array(z.any()),
    runtime: z.object({ type: z.string(), config: z.record(z.string(), z.unknown()) }),
    model_provider: z.object({ base_url: z.string(), credential_id: z.string().nullable() }).nullable(),
    tool_policy: ToolPolicySchema,
    budget: z.object({ max_cost_usd: z.number().optional(), turn_reserve_usd: z.number().optional() }),
    approval_timeout_seconds: z.number().int(),
    idle_timeout_seconds: z.number().int(),
    approvals: z.object({ separation_of_duties: z.boolean() }),
    created_at: z.string(),
    updated_at: z.string(),
    archived_at: z.string().nullable(),
  })
  .openapi('Agent');

export function toAgentResponse(agent: { id: string; createdAt: Date; updatedAt: Date; archivedAt: Date | null }, version: { version: number; definition: unknown; createdAt: Date }): z.infer<typeof AgentSchema> {
  const def = version.definition as AgentDefinition;
  const snapshot = toSnapshot({ agentId: agent.id, version: version.version, teamId: '', def });
  return {
    id: agent.id,
    type: 'agent' as const,
    version: version.version,
    name: def.name,
    model: { id: snapshot.model },
    system: snapshot.system,
    description: def.description ?? null,
    metadata: def.metadata ?? {},
    tools: def.tools ?? [],
    mcp_servers: [] as unknown[],
    skills: [] as unknown[],
    runtime: snapshot.runtime,
    model_provider: def.model_provider ? { base_url: def.model_provider.base_url, credential_id: def.model_provider.credential_id ?? null } : null,
    tool_policy: snapshot.toolPolicy,
    budget: snapshot.budget,
    approval_timeout_seconds: snapshot.approvalTimeoutSeconds,
    idle_timeout_seconds: snapshot.idleTimeoutSeconds,
    approvals: { separation_of_duties: snapshot.separationOfDuties },
    created_at: agent.createdAt.toISOString(),
    updated_at: version.createdAt.toISOString(),
    archived_at: agent.archivedAt?.toISOString() ?? null,
  };
}
