/**
 * A capability an adapter does not declare is refused clearly by the API: a runtime without an approval hook
 * cannot be given a policy that asks a person.
 */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { checkEnforceable } from '../api/routes/agents.routes';
import { ApiError } from '../api/errors';
import { RUNTIME_CAPABILITIES, RUNTIME_KINDS } from '../runtimes/registry';
import { describeUnenforceable, globCanMatchPrefix, unenforceableDenies } from '../governance/enforceability';

const noApprovals = { ...RUNTIME_CAPABILITIES, scripted: { ...RUNTIME_CAPABILITIES.scripted, approvals: false } };
const base = { name: 'a', model: 'm', runtime: { type: 'scripted' as const } };

describe('capabilities', () => {
  it('refuses an ask rule or an ask default for a runtime without an approval hook, naming the field', () => {
    for (const tool_policy of [
      { rules: [{ tool: 'write', action: 'ask' as const }], default: 'allow' as const },
      { rules: [], default: 'ask' as const },
    ]) {
      try {
        checkEnforceable({ ...base, tool_policy }, noApprovals);
        expect.unreachable('an ask policy was accepted');
      } catch (err) {
        expect(err).toBeInstanceOf(ApiError);
        expect((err as ApiError).status).toBe(400);
        expect((err as ApiError).invalidParams?.[0]?.name).toBe('body.tool_policy');
      }
    }
  });

  it('accepts allow and deny for such a runtime, and ask for runtimes that declare approvals', () => {
    expect(() => checkEnforceable({ ...base, tool_policy: { rules: [{ tool: 'bash', action: 'deny' }], default: 'allow' } }, noApprovals)).not.toThrow();
    expect(() => checkEnforceable({ ...base, tool_policy: { rules: [], default: 'ask' } }, RUNTIME_CAPABILITIES)).not.toThrow();
  });

  it('has a conformance file for every runtime kind, so no adapter ships without passing the suite', () => {
    for (const kind of RUNTIME_KINDS) expect(existsSync(new URL(`./conformance/${kind}.test.ts`, import.meta.url)), kind).toBe(true);
  });

  it('declares every runtime kind', () => {
    for (const caps of Object.values(RUNTIME_CAPABILITIES)) {
      expect(Object.keys(caps).filter((k) => k !== 'denyTools').sort()).toEqual(['approvals', 'cost', 'denies', 'gateway', 'interrupt', 'portable', 'reattach', 'sandbox', 'streaming']);
      // a runtime that denies whole tools says which
      expect(caps.denies === 'whole-tool').toBe(Array.isArray(caps.denyTools) && caps.denyTools.length > 0);
    }
  });

  it('names every deny rule a runtime would silently ignore: all of them on Cursor, pattern and unmapped-tool rules on OpenClaw', () => {
    const rules = [{ tool: 'bash' }, { tool: 'bash', pattern: 'rm *' }, { tool: 'mcp:github:*' }, { tool: '*' }, { tool: 'other:browser' }, { tool: 'write' }, { tool: 'grep' }, { tool: 'web_*' }];
    expect(unenforceableDenies(RUNTIME_CAPABILITIES.cursor, rules).map((f) => f.index)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(unenforceableDenies(RUNTIME_CAPABILITIES.opencode, rules)).toEqual([]);
    // OpenClaw takes whole mapped tools away (grep: it has none to call); it cannot refuse one call or an unmapped tool
    const openclaw = unenforceableDenies(RUNTIME_CAPABILITIES.openclaw, rules);
    expect(openclaw.map((f) => f.index)).toEqual([1, 2, 3, 4]);
    expect(describeUnenforceable('openclaw', openclaw.slice(0, 1))).toBe('team.rules[1] bash "rm *" cannot be enforced on the openclaw runtime: it can only deny whole tools, not the calls a pattern matches');
    // allow and ask rules are not its business
    expect(unenforceableDenies(RUNTIME_CAPABILITIES.cursor, [{ tool: 'bash', action: 'allow' }, { tool: 'bash', action: 'ask' }])).toEqual([]);
  });

  it('tells whether a tool glob can reach a name space', () => {
    expect(globCanMatchPrefix('*', 'other:')).toBe(true);
    expect(globCanMatchPrefix('o*', 'other:')).toBe(true);
    expect(globCanMatchPrefix('*:x', 'mcp:')).toBe(true);
    expect(globCanMatchPrefix('other:?', 'other:')).toBe(true);
    expect(globCanMatchPrefix('web_*', 'other:')).toBe(false);
    expect(globCanMatchPrefix('bash', 'mcp:')).toBe(false);
    expect(globCanMatchPrefix('?', 'mcp:')).toBe(false);
  });
});
