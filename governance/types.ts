/**
 * Types shared by the workflow sandbox, the activities and the API. Pure data: no I/O, no Node built-ins.
 */
import type { RuntimeKind } from '../runtimes/registry';

/** Canonical tool names, the same on every runtime, so one policy governs them all. */
export const CANONICAL_TOOLS = ['bash', 'read', 'write', 'edit', 'glob', 'grep', 'web_fetch', 'web_search', 'todo', 'task'] as const;
/** `mcp:<server>:<tool>` names MCP tools; anything else a runtime invents is passed through as `other:<name>`. */
export type CanonicalTool = (typeof CANONICAL_TOOLS)[number] | `mcp:${string}` | `other:${string}`;

/** Every runtime agentplane can drive, as runtimes/registry.ts lists them (a type only: nothing of runtimes/ is loaded). */
export type { RuntimeKind };

/**
 * What a session's processes run in: `bubblewrap` (the default: own namespaces, no network but its egress proxy) or
 * `none` (the worker's own user and network; only behind AGENTPLANE_SANDBOX=none, and every session run so says so).
 */
export const SANDBOX_KINDS = ['bubblewrap', 'none'] as const;
export type SandboxKind = (typeof SANDBOX_KINDS)[number];

export type PolicyAction = 'allow' | 'ask' | 'deny';

export interface PolicyRule {
  /** a canonical tool name, `*` for any, or a prefix glob such as `mcp:github:*` */
  tool: string;
  /** glob over the call's subject (the bash command, the file path, the URL); absent = any */
  pattern?: string;
  action: PolicyAction;
  /** set on rules that come from the team's policy (see composePolicy) */
  source?: 'team';
}

export interface ToolPolicy {
  rules: PolicyRule[];
  default: PolicyAction;
}

export interface SessionBudget {
  /** hard cap on what one session may spend, in USD */
  max_cost_usd?: number;
  /** held from the team's and agent's budgets before each turn (default DEFAULT_TURN_RESERVE_USD) */
  turn_reserve_usd?: number;
}

export interface AgentSnapshot {
  agentId: string;
  version: number;
  teamId: string;
  name: string;
  runtime: { type: RuntimeKind; config: Record<string, unknown> };
  model: string;
  /** an OpenAI-compatible endpoint for runtimes that take one; the key is a credential id, never a value */
  modelProvider: { baseUrl: string; credentialId: string | null } | null;
  system: string | null;
  toolPolicy: ToolPolicy;
  budget: SessionBudget;
  approvalTimeoutSeconds: number;
  idleTimeoutSeconds: number;
  /**
   * The key that started the session may not decide its tool calls. Default false; absent (falsy) in snapshots
   * taken before it existed, which running sessions and recorded histories still carry.
   */
  separationOfDuties: boolean;
}

export interface Actor {
  keyId: string;
  role: Role;
  teamId: string;
}

/**
 * `platform_admin` runs the installation: everything an admin may do in its own team, plus what spans teams (creating
 * teams, walking the whole audit chain). The bootstrap key holds it; a team's own admins do not.
 */
export const ROLES = ['platform_admin', 'admin', 'developer', 'approver', 'viewer', 'service'] as const;
export type Role = (typeof ROLES)[number];
