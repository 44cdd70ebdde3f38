/**
 * Live policy on a real runtime: a running OpenCode session whose agent policy is changed by an admin denies the
 * very next bash call, naming the rule in the event log and the audit log, with the same worker still running.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../db/client';
import { createOpenCodeAdapter } from '../runtimes/opencode/opencode.adapter';
import { startScriptedModel, type ScriptedModel } from './support/scripted-model';
import { eventsOf, eventually, LOCAL_RECEIVERS, startStack, waitForStatus, type Stack } from './support/stack';

let stack: Stack;
let model: ScriptedModel;

beforeAll(async () => {
  model = await startScriptedModel();
  // the scripted model listens on 127.0.0.1
  stack = await startStack({ worker: false, allowPrivateEgress: LOCAL_RECEIVERS });
  await stack.startWorker({ opencode: createOpenCodeAdapter({ dataDir: stack.dataDir, sandboxes: stack.sandboxes }) });
  // the scripted model is in no catalogue: the team prices it (OpenCode's sessions are priced from their tokens)
  await stack.price('scripted-model', { input: 3, output: 15 });
}, 120_000);
afterAll(async () => {
  await stack?.stop();
  await model?.close();
}, 60_000);

describe('live policy on OpenCode', () => {
  it('denies the next bash call after an admin changes the policy, with the rule in the event and the audit row', async () => {
    model.setScript([
      { match: 'first listing', steps: [{ tool: 'bash', input: { command: 'echo first-run', description: 'list' } }, { text: 'listed' }] },
      { match: 'second listing', steps: [{ tool: 'bash', input: { command: 'echo second-run', description: 'list' } }, { text: 'tried again' }] },
    ]);
    const agent = await stack.call('POST', '/v1/agents', {
      name: 'live policy',
      model: 'scripted-model',
      runtime: { type: 'opencode', config: {} },
      model_provider: { base_url: model.openaiBaseUrl },
      tool_policy: { rules: [{ tool: 'bash', action: 'allow' }], default: 'deny' },
    });
    const session = await stack.call('POST', '/v1/sessions', { agent: agent.body.id, initial_events: [{ type: 'user.message', content: 'first listing' }] });
    const id = session.body.id as string;
    await waitForStatus(stack, id, 'idle', 'end_turn', 90_000);

    const changed = await stack.call('PUT', `/v1/agents/${agent.body.id}/policy`, { tool_policy: { rules: [{ tool: 'bash', action: 'deny' }], default: 'deny' } });
    expect(changed.status).toBe(200);
    await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'second listing' }] });
    await eventually(async () => ((await eventsOf(stack, id)).filter((e) => e.type === 'agent.message').length === 2 ? true : undefined), { timeoutMs: 90_000 });

    const events = await eventsOf(stack, id);
    const uses = events.filter((e) => e.type === 'agent.tool_use');
    expect(uses.map((u) => [u.input.command, u.evaluated_permission, u.evaluation.rule])).toEqual([
      ['echo first-run', 'allow', 'rules[0] bash → allow'],
      ['echo second-run', 'deny', 'rules[0] bash → deny'],
    ]);
    const results = events.filter((e) => e.type === 'agent.tool_result');
    expect(results.map((r) => r.is_error)).toEqual([false, true]);
    expect(JSON.stringify(results[0].content)).toContain('first-run');
    const audit = rowsOf<{ decision: string; reason: string; data: { policy_version: number } }>(
      await stack.db.db.execute(sql`select decision, reason, data from audit_log where action = 'tool.evaluate' and target = ${`${id}/${uses[1].id}`}`),
    );
    expect(audit).toEqual([{ decision: 'deny', reason: 'rules[0] bash → deny', data: expect.objectContaining({ policy_version: 1 }) }]);
  }, 180_000);
});
