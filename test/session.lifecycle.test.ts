/**
 * Long-lived session behaviour: idle timeout, continue-as-new with state carried forward, the state query.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { sessionStateQuery, userMessageSignal, type SessionWorkflowInput } from '../workflows/definitions';
import { eventsOf, eventually, startStack, waitForStatus, type Stack } from './support/stack';

let stack: Stack;
const closed: string[] = [];

beforeAll(async () => {
  const scripted = createScriptedAdapter();
  stack = await startStack({
    runtimes: {
      scripted: {
        ...scripted,
        async close(ref) {
          closed.push(ref.sessionId);
        },
      },
    },
  });
});
afterAll(async () => {
  await stack?.stop();
});

async function agentWith(extra: Record<string, unknown>) {
  const res = await stack.call('POST', '/v1/agents', { name: 'lifecycle', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' }, ...extra });
  expect(res.status).toBe(200);
  return res.body.id as string;
}

describe('session lifecycle', () => {
  it('terminates a session that stays idle past its idle timeout and releases its runtime', async () => {
    const agent = await agentWith({ idle_timeout_seconds: 2 });
    const created = await stack.call('POST', '/v1/sessions', { agent, initial_events: [{ type: 'user.message', content: 'say hi' }] });
    const id = created.body.id;
    const ended = await waitForStatus(stack, id, 'terminated', 'idle_timeout', 20_000);
    expect(ended.stop_reason).toEqual({ type: 'idle_timeout' });
    // releasing the runtime is the workflow's last step, after the status change
    await stack.temporal.workflow.getHandle(id).result();
    expect(closed).toContain(id);
    const late = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'too late' }] });
    expect(late.status).toBe(409);
  });

  it('continues as new every few turns, carrying spend and policy, and loses no message', { timeout: 180_000 }, async () => {
    const agent = await agentWith({ budget: { max_cost_usd: 0.45 } });
    const created = await stack.call('POST', '/v1/sessions', { agent });
    const id = created.body.id as string;
    // restart the same session's workflow with a small turnsPerRun, as an operator could configure it
    const handle = stack.temporal.workflow.getHandle(id);
    const original = (await handle.describe()).runId;
    const history = await handle.fetchHistory();
    const input = history.events![0]!.workflowExecutionStartedEventAttributes!.input!.payloads![0]!;
    const startInput = JSON.parse(Buffer.from(input.data as Uint8Array).toString('utf8')) as SessionWorkflowInput;
    await handle.terminate('restart with turnsPerRun=2');
    await stack.temporal.workflow.start('agentSession', {
      workflowId: id,
      taskQueue: stack.taskQueue,
      args: [{ ...startInput, turnsPerRun: 2 }],
    });
    for (let i = 1; i <= 5; i++) {
      await handle.signal(userMessageSignal, { eventId: `sevt_test_${i}`, text: `say turn ${i}\ncost 0.1` });
    }
    await eventually(async () => ((await eventsOf(stack, id)).filter((e) => e.type === 'user.message').length === 5 ? true : undefined), { timeoutMs: 90_000 });
    await eventually(async () => ((await eventsOf(stack, id)).filter((e) => e.type === 'agent.message').length === 5 ? true : undefined), { timeoutMs: 90_000 });
    const fifth = await waitForStatus(stack, id, 'idle', 'end_turn', 90_000);
    // 0.1 per turn against a 0.45 cap: after four turns 0.4 is spent, so the fifth runs (and finishes) past the cap
    expect(fifth.usage.cost_usd).toBeCloseTo(0.5);
    // ... and the spend carried across runs refuses a sixth before it is sent
    await handle.signal(userMessageSignal, { eventId: 'sevt_test_6', text: 'say turn 6\ncost 0.1' });
    const final = await waitForStatus(stack, id, 'idle', 'budget_reached', 90_000);
    expect(final.usage.cost_usd).toBeCloseTo(0.5);
    const state = await handle.query(sessionStateQuery);
    expect(state.turn).toBe(6);
    expect(state.spentMicros).toBe(500_000);
    // six turns at two per run: the restarted session continued as new three times
    const continued = await eventually(async () => {
      let count = 0;
      for await (const run of stack.temporal.workflow.list({ query: `WorkflowId = '${id}'` })) {
        if (run.runId !== original && run.status.name === 'CONTINUED_AS_NEW') count += 1;
      }
      return count >= 3 ? count : undefined;
    });
    expect(continued).toBe(3);
    const texts = (await eventsOf(stack, id)).filter((e) => e.type === 'agent.message').map((e) => e.content[0].text);
    expect(texts).toEqual(['turn 1', 'turn 2', 'turn 3', 'turn 4', 'turn 5']);
  });
});
