/**
 * Which deny rules a runtime can enforce. A deny that a runtime silently ignores is worse than none: the team believes
 * the call is refused. So each runtime declares, as data next to its other capabilities, how it can refuse a tool call,
 * and sessions are refused (at start, and at each turn for rules added later) when a deny rule falls outside it.
 * Pure: the API, the activities and the adapters call the same function.
 */
import type { CanonicalTool, PolicyRule } from './types';

/**
 * - `any`: every tool call comes to agentplane's policy before it runs, so any rule (with or without a pattern) holds;
 * - `whole-tool`: the runtime can take whole tools away (those in `denyTools`), but cannot refuse a single call;
 * - `none`: the runtime runs tool calls without asking and cannot be told to refuse any.
 */
export type DenySupport = 'any' | 'whole-tool' | 'none';

export interface DenyCapability {
  denies: DenySupport;
  /**
   * For `whole-tool`: the canonical tools the runtime maps its own tools to, each of which it can deny whole. Its
   * other tools reach the policy as `other:<name>` and cannot be denied.
   */
  denyTools?: readonly CanonicalTool[];
}

/** A deny rule as the team writes it (no action: team rules only deny), or any policy rule. */
export type DenyRule = Pick<PolicyRule, 'tool' | 'pattern'> & Partial<Pick<PolicyRule, 'action' | 'source'>>;

export interface UnenforceableDeny {
  /** the rule's index in the list it came from */
  index: number;
  rule: DenyRule;
  /** why the runtime cannot enforce it, for a person */
  reason: string;
}

/** The deny rules among `rules` that a runtime with these capabilities cannot enforce (allow and ask rules are skipped). */
export function unenforceableDenies(caps: DenyCapability, rules: ReadonlyArray<DenyRule>): UnenforceableDeny[] {
  const out: UnenforceableDeny[] = [];
  for (const [index, rule] of rules.entries()) {
    if ((rule.action ?? 'deny') !== 'deny') continue;
    const reason = whyUnenforceable(caps, rule);
    if (reason) out.push({ index, rule, reason });
  }
  return out;
}

function whyUnenforceable(caps: DenyCapability, rule: DenyRule): string | null {
  if (caps.denies === 'any') return null;
  if (caps.denies === 'none') return 'it runs tool calls without asking and cannot refuse any';
  if (rule.pattern !== undefined && rule.pattern !== '') return 'it can only deny whole tools, not the calls a pattern matches';
  // every tool the runtime does not map is `other:<name>` (MCP tools, `mcp:…`, likewise): a rule that can name one of
  // those names a tool the runtime has no way to take away
  if (globCanMatchPrefix(rule.tool, 'other:') || globCanMatchPrefix(rule.tool, 'mcp:')) {
    return `it can only deny ${(caps.denyTools ?? []).join(', ') || 'no tool'}, not its other tools`;
  }
  return null;
}

/** `team.rules[0] bash "rm *"`: the rule as its owner numbered it. */
export function denyRuleLabel(entry: Pick<UnenforceableDeny, 'index' | 'rule'>, list: 'team.rules' | 'rules' = 'team.rules'): string {
  const pattern = entry.rule.pattern === undefined ? '' : ` ${JSON.stringify(entry.rule.pattern)}`;
  return `${list}[${entry.index}] ${entry.rule.tool}${pattern}`;
}

/** One sentence per rule: `team.rules[0] bash "rm *" cannot be enforced on the cursor runtime: it runs tool calls …`. */
export function describeUnenforceable(runtime: string, found: ReadonlyArray<UnenforceableDeny>, list: 'team.rules' | 'rules' = 'team.rules'): string {
  return found.map((f) => `${denyRuleLabel(f, list)} cannot be enforced on the ${runtime} runtime: ${f.reason}`).join('; ');
}

/**
 * Whether some string that starts with `prefix` matches the tool glob (`*` any run, `?` one character, the rest
 * literal). Walks the glob's positions over the prefix (no backtracking, so no pathological patterns); whatever glob
 * is left after the prefix can always be satisfied by some suffix.
 */
export function globCanMatchPrefix(glob: string, prefix: string): boolean {
  const closure = (states: Set<number>) => {
    // a `*` may match nothing: its position also stands for the one after it
    for (const s of [...states]) for (let i = s; glob[i] === '*'; i++) states.add(i + 1);
    return states;
  };
  let states = closure(new Set([0]));
  for (const ch of prefix) {
    const next = new Set<number>();
    for (const s of states) {
      const g = glob[s];
      if (g === undefined) continue;
      if (g === '*') next.add(s);
      else if (g === '?' || g === ch) next.add(s + 1);
    }
    states = closure(next);
    if (states.size === 0) return false;
  }
  return states.size > 0;
}
