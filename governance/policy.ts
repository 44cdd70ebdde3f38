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
  for (const [index, rule] of policy.rules.entries()) {
    if (!globMatch(rule.tool, tool)) continue;
    if (rule.pattern !== undefined && !globMatch(rule.pattern, subject)) continue;
    return { action: rule.action, ruleIndex: index, reason: describeRule(index, rule) };
  }
  return { action: policy.default, ruleIndex: null, reason: `default → ${policy.default}` };
}

export function describeRule(index: number, rule: PolicyRule): string {
  const pattern = rule.pattern === undefined ? '' : ` ${JSON.stringify(rule.pattern)}`;
  return `rules[${index}] ${rule.tool}${pattern} → ${rule.action}`;
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
