/**
 * A capability an adapter does not declare is refused clearly by the API: a runtime without an approval hook
 * cannot be given a policy that asks a person.
 */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { RUNTIME_KINDS } from '../governance/types';
import { checkEnforceable } from '../api/routes/agents.routes';
import { ApiError } from '../api/errors';
import { RUNTIME_CAPABILITIES } from '../runtimes/capabilities';

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
    for (const caps of Object.values(RUNTIME_CAPABILITIES)) expect(Object.keys(caps).sort()).toEqual(['approvals', 'cost', 'interrupt', 'reattach', 'streaming']);
  });
});
