/**
 * Tool policy evaluation: ordered rules, first match wins, then the default.
 * Pure and deterministic: the workflow and the activities call the same function.
 */
import type { CanonicalTool, PolicyAction, PolicyRule, ToolPolicy } from './types';

export interface PolicyDecision {
  action: PolicyAction;
  /** index of the rule that matched, or null when the default applied */
  ruleIndex: number | null;
  /** a human-readable name of what decided: `rules[2] bash "git *" → allow` or `default → ask` */
  reason: string;
}

export const ALLOW_ALL: ToolPolicy = { rules: [], default: 'allow' };

/** The string a rule's `pattern` is matched against. */
export function toolSubject(input: Record<string, unknown>): string {
  for (const key of ['command', 'file_path', 'filePath', 'path', 'url', 'pattern', 'query']) {
    const value = input[key];
    if (typeof value === 'string') return value;
  }
  return '';
}

export function evaluatePolicy(policy: ToolPolicy, tool: CanonicalTool, input: Record<string, unknown>): PolicyDecision {
  const subject = toolSubject(input);
  const teamRules = policy.rules.filter((r) => r.source === 'team').length;
  for (const [index, rule] of policy.rules.entries()) {
    if (!globMatch(rule.tool, tool)) continue;
    if (rule.pattern !== undefined && !globMatch(rule.pattern, subject)) continue;
    // team rules come first; each kind is numbered within its own list, as its owner wrote it
    const own = rule.source === 'team' ? index : index - teamRules;
    return { action: rule.action, ruleIndex: index, reason: describeRule(own, rule) };
  }
  return { action: policy.default, ruleIndex: null, reason: `default → ${policy.default}` };
}

export function describeRule(index: number, rule: PolicyRule): string {
  const pattern = rule.pattern === undefined ? '' : ` ${JSON.stringify(rule.pattern)}`;
  return `${rule.source === 'team' ? 'team.' : ''}rules[${index}] ${rule.tool}${pattern} → ${rule.action}`;
}

/**
 * The policy a session runs under: the team's deny rules first (a team deny beats any agent rule), then the
 * agent's own rules and default.
 */
export function composePolicy(teamDenies: Array<{ tool: string; pattern?: string }>, agent: ToolPolicy): ToolPolicy {
  return {
    rules: [...teamDenies.map((r) => ({ tool: r.tool, ...(r.pattern ? { pattern: r.pattern } : {}), action: 'deny' as const, source: 'team' as const })), ...agent.rules.filter((r) => r.source !== 'team')],
    default: agent.default,
  };
}

const MANAGED_TOOL_NAMES: Record<string, string> = { web_fetch: 'web_fetch', web_search: 'web_search' };
type ManagedPermission = { permission_policy?: { type: 'always_allow' | 'always_ask' | 'auto' } };

/** An agent definition's own policy: `tool_policy`, else its Managed Agents toolset permission settings, else ask. */
export function policyFromDefinition(def: {
  tool_policy?: ToolPolicy;
  tools?: Array<{ type: string; default_config?: ManagedPermission; configs?: Array<ManagedPermission & { name: string }> }>;
}): ToolPolicy {
  if (def.tool_policy) return def.tool_policy;
  const toolset = def.tools?.find((t) => t.type.startsWith('agent_toolset'));
  if (!toolset) return { rules: [], default: 'ask' };
  const map = (type: string | undefined) => (type === 'always_allow' ? 'allow' : 'ask') as 'allow' | 'ask';
  return {
    rules: (toolset.configs ?? [])
      .filter((c) => c.permission_policy)
      .map((c) => ({ tool: MANAGED_TOOL_NAMES[c.name] ?? c.name, action: map(c.permission_policy?.type) })),
    default: map(toolset.default_config?.permission_policy?.type ?? 'always_allow'),
  };
}

/** `*` matches any run of characters (including `/` and spaces), `?` one character; everything else is literal. */
export function globMatch(glob: string, value: string): boolean {
  let source = '^';
  for (const ch of glob) {
    if (ch === '*') source += '.*';
    else if (ch === '?') source += '.';
    else source += ch.replace(/[.+^${}()|[\]\\]/g, '\\$&');
  }
  return new RegExp(source + '$', 's').test(value);
}
