/**
 * Tool decisions as a Temporal Update, on the real stack: the session's workflow takes a decision or refuses it, and
 * the API answers with what it did. Two people deciding one call at once get 200 and 409; a second decision is
 * refused naming the first; an unknown call is a 404 naming the field; the workflow refuses on its own what the API's
 * table check cannot see (a race, a separation of duties the agent dropped since the session started); a decision sent
 * before the leg that asked has returned is taken; and a signal, as an older API sent, still decides.
 */
import { WorkflowUpdateFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rowsOf } from '../db/client';
import { hashKey } from '../db/queries/teams';
import type { RuntimeAdapter } from '../runtimes/runtime-adapter';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { toolConfirmationSignal, toolConfirmationUpdate, type ToolConfirmation } from '../workflows/definitions';
import { eventsOf, eventually, startStack, waitForStatus, type Stack } from './support/stack';

/** a turn whose message has this line keeps its leg running this long after the call it asks about is pending */
const SLOW_ASK = '#slow-ask';
const SLOW_ASK_MS = 3000;

/** The scripted runtime, with a leg that returns its approval request late when asked to. */
function slowToReturnAsks(adapter: RuntimeAdapter): RuntimeAdapter {
  return {
    ...adapter,
    async runTurn(ctx, ref, input, sink) {
      const result = await adapter.runTurn(ctx, ref, input, sink);
      if (result.status === 'requires_action' && input.kind === 'message' && input.text.includes(SLOW_ASK)) await new Promise((r) => setTimeout(r, SLOW_ASK_MS));
      return result;
    },
  };
}

let stack: Stack;
let agentId: string;
/** two people who may decide, neither of whom started the sessions below */
const approvers: Array<{ key: string; keyId: string }> = [];

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: slowToReturnAsks(createScriptedAdapter()) } });
  agentId = await createAgent({ name: 'approvals' });
  for (let i = 0; i < 2; i++) {
    const key = await stack.key('approver');
    approvers.push({ key, keyId: await keyIdOf(key) });
  }
});
afterAll(async () => {
  await stack?.stop();
});

async function createAgent(extra: Record<string, unknown> = {}): Promise<string> {
  const res = await stack.call('POST', '/v1/agents', { model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [{ tool: 'write', action: 'ask' }], default: 'allow' }, ...extra });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body.id;
}

async function keyIdOf(plain: string): Promise<string> {
  return rowsOf<{ id: string }>(await stack.db.db.execute(sql`select id from api_keys where hash = ${hashKey(plain)}`))[0]!.id;
}

/** A session (of `agent`, started by `key`) waiting for a decision on one `write` call. */
async function waitingSession(agent = agentId, key?: string): Promise<{ sessionId: string; toolUseId: string }> {
  const res = await stack.call('POST', '/v1/sessions', { agent, initial_events: [{ type: 'user.message', content: `tool write /tmp/${Math.random().toString(36).slice(2)}.md\nsay written` }] }, key);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  const session = await waitForStatus(stack, res.body.id, 'requires_action');
  expect(session.pending_approvals).toHaveLength(1);
  return { sessionId: res.body.id, toolUseId: session.pending_approvals[0].tool_use_id };
}

const confirm = (toolUseId: string, result: 'allow' | 'deny') => ({ events: [{ type: 'user.tool_confirmation', tool_use_id: toolUseId, result }] });

/** The decision sent straight to the workflow, past every check of the API: what it answers, or how it refuses. */
async function updateDirectly(sessionId: string, confirmation: Omit<ToolConfirmation, 'eventId'>): Promise<ApplicationFailure | unknown> {
  try {
    return await stack.temporal.workflow.getHandle(sessionId).executeUpdate(toolConfirmationUpdate, { args: [{ confirmations: [{ ...confirmation, eventId: `sevt_direct_${Math.random().toString(36).slice(2)}` }] }] });
  } catch (err) {
    expect(err).toBeInstanceOf(WorkflowUpdateFailedError);
    expect((err as WorkflowUpdateFailedError).cause).toBeInstanceOf(ApplicationFailure);
    return (err as WorkflowUpdateFailedError).cause;
  }
}

async function approvalAudits(sessionId: string, toolUseId: string) {
  const res = await stack.call('GET', `/v1/audit?action=tool.approval&target=${encodeURIComponent(`${sessionId}/${toolUseId}`)}&limit=100`);
  expect(res.status).toBe(200);
  return res.body.data as any[];
}

describe('tool decisions', () => {
  it('gives one of two approvers deciding the same call at once 200, and the other 409 naming the decision that was taken', async () => {
    // three calls, each raced by both approvers: one allows, the other denies
    const waiting = await Promise.all([waitingSession(), waitingSession(), waitingSession()]);
    await Promise.all(
      waiting.map(async ({ sessionId, toolUseId }) => {
        const [a, b] = await Promise.all([
          stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(toolUseId, 'allow'), approvers[0]!.key),
          stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(toolUseId, 'deny'), approvers[1]!.key),
        ]);
        expect([a.status, b.status].sort(), JSON.stringify([a.body, b.body])).toEqual([200, 409]);
        const [won, lost] = a.status === 200 ? [a, b] : [b, a];
        const winner = a.status === 200 ? { keyId: approvers[0]!.keyId, result: 'allow' } : { keyId: approvers[1]!.keyId, result: 'deny' };
        expect(lost.body).toMatchObject({ code: 'approval.not_pending', status: 409, detail: `tool call ${toolUseId} was already decided by ${winner.keyId} (${winner.result})` });

        // the 200 carries the decision as recorded, and it is the only one: in the log, the approval and the audit trail
        const [recorded] = won.body.data;
        expect(recorded).toMatchObject({ type: 'user.tool_confirmation', tool_use_id: toolUseId, result: winner.result, decided_by: winner.keyId, processed_at: expect.any(String) });
        await waitForStatus(stack, sessionId, 'idle', 'end_turn');
        const confirmations = (await eventsOf(stack, sessionId)).filter((e) => e.type === 'user.tool_confirmation');
        expect(confirmations).toEqual([expect.objectContaining({ id: recorded.id, result: winner.result, decided_by: winner.keyId })]);
        const approval = await stack.call('GET', `/v1/approvals?session_id=${sessionId}`);
        expect(approval.body.data).toEqual([]);
        const audits = await approvalAudits(sessionId, toolUseId);
        expect(audits).toEqual([expect.objectContaining({ decision: winner.result, actor: expect.objectContaining({ key_id: winner.keyId }) })]);
        const result = (await eventsOf(stack, sessionId)).find((e) => e.type === 'agent.tool_result');
        expect(result.is_error).toBe(winner.result === 'deny');
      }),
    );
  });

  it('refuses a deny after an approval with 409 naming the approval, in the API and in the workflow itself', async () => {
    const { sessionId, toolUseId } = await waitingSession();
    const approved = await stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(toolUseId, 'allow'), approvers[0]!.key);
    expect(approved.status, JSON.stringify(approved.body)).toBe(200);
    const denied = await stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(toolUseId, 'deny'), approvers[1]!.key);
    expect(denied.status).toBe(409);
    expect(denied.body).toMatchObject({ code: 'approval.not_pending', detail: `tool call ${toolUseId} was already decided by ${approvers[0]!.keyId} (allow)` });

    // past the API's table check, the workflow's validator refuses it the same way
    const refused = await updateDirectly(sessionId, { toolUseId, result: 'deny', actor: { keyId: approvers[1]!.keyId, role: 'approver', teamId: stack.teamId } });
    expect(refused).toMatchObject({ type: 'approval.not_pending', message: `tool call ${toolUseId} was already decided by ${approvers[0]!.keyId} (allow)` });
    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
    expect((await eventsOf(stack, sessionId)).filter((e) => e.type === 'user.tool_confirmation')).toEqual([expect.objectContaining({ id: approved.body.data[0].id, result: 'allow' })]);
    expect(await approvalAudits(sessionId, toolUseId)).toHaveLength(1);
  });

  it('answers a decision on a call the session never made with 404 naming the field, and the workflow refuses it too', async () => {
    const { sessionId, toolUseId } = await waitingSession();
    // with a message beside it (the admin's key may send both): neither is taken
    const unknown = await stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [{ type: 'user.message', content: 'say later' }, ...confirm('toolu_never_made', 'allow').events] });
    expect(unknown.status, JSON.stringify(unknown.body)).toBe(404);
    expect(unknown.body).toMatchObject({ code: 'resource.not_found', invalid_params: [{ name: 'body.events[1].tool_use_id' }] });
    expect(unknown.body.detail).toContain('toolu_never_made');

    const refused = await updateDirectly(sessionId, { toolUseId: 'toolu_never_made', result: 'allow', actor: { keyId: approvers[0]!.keyId, role: 'approver', teamId: stack.teamId } });
    expect(refused).toMatchObject({ type: 'approval.unknown_call' });
    // nothing of either request was taken: the call still waits, and the message was not sent
    expect((await stack.call('GET', `/v1/sessions/${sessionId}`)).body).toMatchObject({ status: 'requires_action', pending_approvals: [{ tool_use_id: toolUseId }] });
    expect((await eventsOf(stack, sessionId)).filter((e) => e.type === 'user.message')).toHaveLength(1);

    // a request that decides one call twice is refused before anything is sent
    const twice = await stack.call('POST', `/v1/sessions/${sessionId}/events`, { events: [...confirm(toolUseId, 'allow').events, ...confirm(toolUseId, 'deny').events] }, approvers[0]!.key);
    expect(twice.status).toBe(400);
    expect(twice.body.invalid_params).toEqual([{ name: 'body.events[1].tool_use_id', reason: expect.stringContaining('body.events[0]') }]);
    expect((await stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(toolUseId, 'allow'), approvers[0]!.key)).status).toBe(200);
    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
  });

  it('takes a decision sent while the leg that asked is still running, and answers once it is recorded', async () => {
    const started = await stack.call('POST', '/v1/sessions', { agent: agentId, initial_events: [{ type: 'user.message', content: `tool write /tmp/early.md\n${SLOW_ASK}\nsay written` }] });
    const sessionId = started.body.id as string;
    // the call is pending in the inbox while the workflow has not heard of it: the session still says running
    const pending = await eventually(async () => (await stack.call('GET', `/v1/approvals?session_id=${sessionId}`)).body.data[0]);
    expect((await stack.call('GET', `/v1/sessions/${sessionId}`)).body.status).toBe('running');
    const sent = Date.now();
    const res = await stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(pending.tool_use_id, 'allow'), approvers[0]!.key);
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body.data[0]).toMatchObject({ tool_use_id: pending.tool_use_id, result: 'allow', decided_by: approvers[0]!.keyId });
    // it was answered after the leg returned the call, not before
    expect(Date.now() - sent).toBeGreaterThan(SLOW_ASK_MS / 2);
    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
    const events = await eventsOf(stack, sessionId);
    expect(events.find((e) => e.type === 'agent.tool_result')).toMatchObject({ tool_use_id: pending.tool_use_id, is_error: false });
  });

  it("refuses the initiator's decision with 403 in the workflow, which holds the separation of duties the session started with", async () => {
    const strict = await createAgent({ name: 'four eyes at the start', approvals: { separation_of_duties: true } });
    const initiator = await stack.key('admin');
    const { sessionId, toolUseId } = await waitingSession(strict, initiator);
    // the agent drops the rule: the API, which reads the agent's current version, lets the initiator through
    const relaxed = await stack.call('POST', `/v1/agents/${strict}`, { approvals: { separation_of_duties: false } });
    expect(relaxed.status, JSON.stringify(relaxed.body)).toBe(200);
    const self = await stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(toolUseId, 'allow'), initiator);
    expect(self.status, JSON.stringify(self.body)).toBe(403);
    expect(self.body).toMatchObject({ code: 'approval.self_approval' });
    expect((await stack.call('GET', `/v1/sessions/${sessionId}`)).body).toMatchObject({ status: 'requires_action' });
    expect((await stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(toolUseId, 'deny'), approvers[0]!.key)).status).toBe(200);
    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
  });

  it('answers a decision for a session whose workflow ended behind the API with 409', async () => {
    const { sessionId, toolUseId } = await waitingSession();
    await stack.temporal.workflow.getHandle(sessionId).terminate('test: ended outside the API');
    const res = await stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(toolUseId, 'allow'), approvers[0]!.key);
    expect(res.status, JSON.stringify(res.body)).toBe(409);
    expect(res.body.code).toBe('session.not_accepting');
  });

  it('still takes a decision sent as a signal, as an API from before updates sent it', async () => {
    const { sessionId, toolUseId } = await waitingSession();
    await stack.temporal.workflow.getHandle(sessionId).signal(toolConfirmationSignal, {
      toolUseId,
      result: 'allow',
      actor: { keyId: approvers[0]!.keyId, role: 'approver', teamId: stack.teamId },
      eventId: 'sevt_decided_by_signal',
    });
    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
    expect((await eventsOf(stack, sessionId)).find((e) => e.type === 'user.tool_confirmation')).toMatchObject({ id: 'sevt_decided_by_signal', result: 'allow', decided_by: approvers[0]!.keyId });
    // and a decision after it is refused naming it
    const late = await stack.call('POST', `/v1/sessions/${sessionId}/events`, confirm(toolUseId, 'deny'), approvers[1]!.key);
    expect(late.body).toMatchObject({ code: 'approval.not_pending', detail: `tool call ${toolUseId} was already decided by ${approvers[0]!.keyId} (allow)` });
  });
});
