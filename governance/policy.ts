/**
 * Tool policy evaluation: ordered rules, first match wins, then the default.
 * Pure and deterministic: the workflow and the activities call the same function.
 */
import { readCommandLine, UNSAFE, type CommandLine } from './shell-command';
import { CANONICAL_TOOLS, type CanonicalTool, type PolicyAction, type PolicyRule, type ToolPolicy } from './types';

export interface PolicyDecision {
  action: PolicyAction;
  /** index of the rule that decided (an allow refused for its line counts), or null when the default applied */
  ruleIndex: number | null;
  /** a human-readable name of what decided: `rules[2] bash "git *" → allow` or `default → ask` */
  reason: string;
}

export const ALLOW_ALL: ToolPolicy = { rules: [], default: 'allow' };

/**
 * Caps on a policy, checked by the API (a 400 naming the field). The matcher is linear whatever the pattern; the
 * caps bound the constant: a pattern's length and its stars, a tool glob's, and the subject of a dry run.
 */
export const POLICY_LIMITS = { patternLength: 500, patternStars: 16, toolLength: 200, toolStars: 4, subjectLength: 8_192 } as const;

/** The keys of a tool call's input that hold its subject, in order of preference. */
const SUBJECT_KEYS = ['command', 'file_path', 'filePath', 'path', 'url', 'pattern', 'query'];

/** The key of the input a rule's `pattern` is matched against, or null when there is none. */
export function subjectKey(input: Record<string, unknown>): string | null {
  return SUBJECT_KEYS.find((key) => typeof input[key] === 'string') ?? null;
}

/** The string a rule's `pattern` is matched against. */
export function toolSubject(input: Record<string, unknown>): string {
  const key = subjectKey(input);
  return key === null ? '' : (input[key] as string);
}

/**
 * First match wins, then the default; team rules come first. For `bash`, a rule's pattern is matched against the
 * commands of the line (governance/shell-command.ts):
 * - a deny or ask rule matches when the pattern matches any one command (or a reading of it, or the whole line),
 *   or when the line is nested too deeply to be read whole;
 * - an allow rule matches when the line has commands and the pattern matches every one. If the line holds what
 *   an allow cannot vouch for (a substitution, a write outside the workspace, …), the allow is refused: later
 *   rules still apply (a deny or ask that matches decides; no later allow can), else the stricter neighbour,
 *   `ask` if the policy has an ask anywhere, otherwise its default.
 * An unknown tool (`other:…`) is denied unless a rule names it: a `*` rule's allow or ask and the default's do
 * not reach it.
 */
export function evaluatePolicy(policy: ToolPolicy, tool: CanonicalTool, input: Record<string, unknown>): PolicyDecision {
  const subject = toolSubject(input);
  const teamRules = policy.rules.filter((r) => r.source === 'team').length;
  // team rules come first; each kind is numbered within its own list, as its owner wrote it
  const describe = (index: number, rule: PolicyRule) => describeRule(rule.source === 'team' ? index : index - teamRules, rule);
  const unknown = isUnknownTool(tool);
  let line: CommandLine | null = null;
  let refused: { index: number; rule: PolicyRule; why: string } | null = null;
  for (const [index, rule] of policy.rules.entries()) {
    if (!globMatch(rule.tool, tool)) continue;
    if (unknown && rule.action !== 'deny' && /^\*+$/.test(rule.tool)) continue;
    let note = '';
    if (rule.pattern !== undefined) {
      if (tool === 'bash') {
        line ??= readCommandLine(subject);
        if (rule.action === 'allow') {
          if (!matchesEvery(rule.pattern, line)) continue;
          if (line.unsafe.length > 0) {
            refused ??= { index, rule, why: line.unsafe.join(', ') };
            continue;
          }
        } else if (!matchesAny(rule.pattern, subject, line)) {
          // a line too deeply nested to read whole may hide the very command this rule names
          if (line.complete) continue;
          note = ` (${UNSAFE.nested})`;
        }
      } else if (!globMatch(rule.pattern, subject)) continue;
    }
    // a line one allow could not vouch for is vouched for by no later allow either
    if (refused && rule.action === 'allow') continue;
    return { action: rule.action, ruleIndex: index, reason: describe(index, rule) + note };
  }
  if (refused) {
    const neighbour = policy.default === 'ask' || policy.rules.some((r) => r.action === 'ask') ? 'ask' : policy.default;
    return { action: neighbour, ruleIndex: refused.index, reason: `${describe(refused.index, refused.rule)} refused: ${refused.why}; → ${neighbour}` };
  }
  if (unknown && policy.default !== 'deny') return { action: 'deny', ruleIndex: null, reason: `unknown tool ${tool}: denied unless a rule names it (default → ${policy.default})` };
  return { action: policy.default, ruleIndex: null, reason: `default → ${policy.default}` };
}

/** A tool no runtime mapping knows: neither canonical nor MCP (adapters name them `other:<name>`). */
export function isUnknownTool(tool: string): boolean {
  return !(CANONICAL_TOOLS as readonly string[]).includes(tool) && !tool.startsWith('mcp:');
}

function matchesEvery(pattern: string, line: CommandLine): boolean {
  const glob = compileGlob(pattern);
  return line.commands.length > 0 && line.commands.every((command) => glob(command));
}

function matchesAny(pattern: string, subject: string, line: CommandLine): boolean {
  const glob = compileGlob(pattern);
  return glob(subject) || line.commands.some((command) => glob(command)) || line.variants.some((variant) => glob(variant));
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

/**
 * `*` matches any run of characters (including `/`, spaces and newlines), `?` exactly one (one UTF-16 code unit,
 * as before), everything else is literal; the whole value must match. No RegExp is built from the glob.
 */
export function globMatch(glob: string, value: string): boolean {
  return compileGlob(glob)(value);
}

/**
 * Linear, no backtracking: the glob splits on `*` into segments; the first must be a prefix, the last a suffix,
 * and each one between is placed at its leftmost match after the one before. Leftmost is always right, because a
 * segment has a fixed length and what follows it only gains room. Each segment is found in one pass over the
 * value: `indexOf` for a literal one, a bit-parallel scan for one with `?`. So the work is
 * O(len(value) × (1 + len(segment) / 32)) per segment, never more than O(len(value) × len(glob)).
 */
export function compileGlob(glob: string): (value: string) => boolean {
  const segments = glob.split('*').map(compileSegment);
  const first = segments[0]!;
  if (segments.length === 1) return (value) => value.length === first.length && first.at(value, 0);
  const last = segments[segments.length - 1]!;
  const middle = segments.slice(1, -1).filter((s) => s.length > 0);
  return (value) => {
    const end = value.length - last.length;
    if (end < first.length || !first.at(value, 0) || !last.at(value, end)) return false;
    let from = first.length;
    for (const segment of middle) {
      const found = segment.find(value, from, end);
      if (found < 0) return false;
      from = found + segment.length;
    }
    return true;
  };
}

interface Segment {
  length: number;
  /** whether the segment matches the value at `index` */
  at(value: string, index: number): boolean;
  /** the leftmost index in [from, end - length] where the segment matches, or -1 */
  find(value: string, from: number, end: number): number;
}

function compileSegment(text: string): Segment {
  const length = text.length;
  if (!text.includes('?')) {
    return {
      length,
      at: (value, index) => value.startsWith(text, index),
      find: (value, from, end) => {
        const found = value.indexOf(text, from);
        return found >= 0 && found + length <= end ? found : -1;
      },
    };
  }
  // Shift-And: bit j of the state is set when the segment's first j+1 characters end at the current position.
  // The mask of a character has bit j set where the segment may take it there; `?` takes any character.
  const words = Math.ceil(length / 32);
  const any = new Uint32Array(words);
  for (let j = 0; j < length; j += 1) if (text[j] === '?') any[j >>> 5]! |= 1 << (j & 31);
  const ascii = new Uint32Array(128 * words);
  for (let c = 0; c < 128; c += 1) ascii.set(any, c * words);
  const others = new Map<number, Uint32Array>();
  for (let j = 0; j < length; j += 1) {
    if (text[j] === '?') continue;
    const code = text.charCodeAt(j);
    if (code < 128) ascii[code * words + (j >>> 5)]! |= 1 << (j & 31);
    else {
      const mask = others.get(code) ?? any.slice();
      mask[j >>> 5]! |= 1 << (j & 31);
      others.set(code, mask);
    }
  }
  const lastWord = (length - 1) >>> 5;
  const lastBit = 1 << ((length - 1) & 31);
  const state = new Uint32Array(words);
  const find = (value: string, from: number, end: number): number => {
    state.fill(0);
    for (let i = from; i < end; i += 1) {
      const code = value.charCodeAt(i);
      let mask: Uint32Array = any;
      let offset = 0;
      if (code < 128) {
        mask = ascii;
        offset = code * words;
      } else mask = others.get(code) ?? any;
      let carry = 1;
      for (let w = 0; w < words; w += 1) {
        const before = state[w]!;
        state[w] = ((before << 1) | carry) & mask[offset + w]!;
        carry = before >>> 31;
      }
      if ((state[lastWord]! & lastBit) !== 0) return i - length + 1;
    }
    return -1;
  };
  return {
    length,
    at: (value, index) => {
      if (index < 0 || index + length > value.length) return false;
      for (let j = 0; j < length; j += 1) if (text[j] !== '?' && text.charCodeAt(j) !== value.charCodeAt(index + j)) return false;
      return true;
    },
    find,
  };
}
