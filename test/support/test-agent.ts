/**
 * The agent snapshot an adapter test hands its runtime: what the workflow would pass, with test defaults (allow all,
 * no budget, 60 s approvals). A test names what matters to it: runtime, model, where the model is.
 */
import type { AgentSnapshot } from '../../governance/types';

export function testAgent(fields: Pick<AgentSnapshot, 'runtime' | 'model'> & Partial<AgentSnapshot>): AgentSnapshot {
  return {
    agentId: 'agent_test',
    version: 1,
    teamId: 'team_test',
    name: `${fields.runtime.type} test agent`,
    modelProvider: null,
    system: null,
    toolPolicy: { rules: [], default: 'allow' },
    budget: {},
    approvalTimeoutSeconds: 60,
    idleTimeoutSeconds: 600,
    separationOfDuties: false,
    ...fields,
  };
}
