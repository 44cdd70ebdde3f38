/**
 * Group commit of tool decisions (db/group-commit.ts, activities/tool-decision.ts): decisions made at once share one
 * transaction, and still each decision's event and audit row commit together, the audit chain holds, and a decision
 * that cannot be written fails alone. Real Postgres, real sessions made through the API, the decision exactly as a
 * runtime's sink makes it.
 */
import { sql } from 'drizzle-orm';
import { MockActivityEnvironment } from '@temporalio/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decideToolCall } from '../activities/tool-decision';
import type { RunTurnInput } from '../activities/types';
import type { Decision } from '../runtimes/runtime-adapter';
import { toSnapshot } from '../api/schemas/agent.schema';
import { rowsOf } from '../db/client';
import { GroupCommit } from '../db/group-commit';
import { getAgent } from '../db/queries/agents';
import { rememberTip, verifyAuditChain } from '../db/queries/audit';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { startStack, type Stack } from './support/stack';

let stack: Stack;
const quiet = { log: () => undefined, trace: () => undefined, debug: () => undefined, info: () => undefined, warn: () => undefined, error: () => undefined };
const activity = new MockActivityEnvironment(undefined, { logger: quiet });
const policy = { rules: [{ tool: 'bash' as const, pattern: 'rm*', action: 'deny' as const }, { tool: 'write' as const, action: 'ask' as const }], default: 'allow' as const };

beforeAll(async () => {
  stack = await startStack({ worker: false, runtimes: { scripted: createScriptedAdapter() } });
}, 120_000);
afterAll(async () => {
  await stack?.stop();
});

/** A team with an agent and `sessions` sessions: what a decision of each session needs. */
async function teamWithSessions(sessions: number): Promise<{ teamId: string; inputs: RunTurnInput[] }> {
  const team = await stack.newTeam();
  const key = await team.key('admin');
  const created = await stack.call('POST', '/v1/agents', { name: 'group commit', model: 'scripted', runtime: { type: 'scripted', config: {} }, tool_policy: policy }, key);
  expect(created.status).toBe(200);
  const found = (await getAgent(stack.db.db, { teamId: team.teamId, agentId: created.body.id }))!;
  const agent = toSnapshot({ agentId: found.agent.id, version: found.version.version, teamId: team.teamId, def: found.version.definition as never });
  const inputs: RunTurnInput[] = [];
  for (let i = 0; i < sessions; i++) {
    const session = await stack.call('POST', '/v1/sessions', { agent: created.body.id }, key);
    expect(session.status).toBe(200);
    inputs.push({
      sessionId: session.body.id,
      turnId: 't1',
      leg: 0,
      agent,
      initiator: { keyId: 'group-commit-test', role: 'admin', teamId: team.teamId },
      input: { kind: 'message', turnId: 't1', messageId: `${session.body.id}:t1`, text: '' },
      policy,
      policyVersion: 0,
      budget: {},
    });
  }
  return { teamId: team.teamId, inputs };
}

const decide = (input: RunTurnInput, callId: string, tool: 'bash' | 'write' | 'read', subject: string): Promise<Decision> =>
  activity.run(decideToolCall, { db: stack.db.db }, input, { requestId: callId, callId, tool, input: tool === 'bash' ? { command: subject } : { file_path: subject } });

/** A group commit whose first commit waits until `release`: what is submitted meanwhile queues for the next one. */
function heldAtFirstCommit(commit: (items: number[]) => number[]) {
  const batches: number[][] = [];
  let release!: () => void;
  const first = new Promise<void>((r) => (release = r));
  const group = new GroupCommit<number, number>(async (items) => {
    batches.push(items);
    if (batches.length === 1) await first;
    return commit(items);
  });
  return { group, batches, release };
}

describe('group commit of tool decisions', () => {
  it('commits many at once in one transaction, and settles each caller after it (GroupCommit)', async () => {
    const { group, batches, release } = heldAtFirstCommit((items) => items.map((n) => n * 2));
    const results = [group.submit(1), group.submit(2), group.submit(3), group.submit(4)];
    // the first commit is in flight with item 1 alone; the rest wait for the next one, which carries all three
    release();
    expect(await Promise.all(results)).toEqual([2, 4, 6, 8]);
    expect(batches).toEqual([[1], [2, 3, 4]]);
  });

  it('fails a bad item alone: the batch is committed again one item at a time', async () => {
    const { group, batches: commits, release } = heldAtFirstCommit((items) => {
      if (items.includes(13)) throw new Error('13 cannot be written');
      return items;
    });
    const results = [1, 12, 13, 14].map((n) => group.submit(n).then((r) => ({ ok: r }), (err: Error) => ({ error: err.message })));
    release();
    expect(await Promise.all(results)).toEqual([{ ok: 1 }, { ok: 12 }, { error: '13 cannot be written' }, { ok: 14 }]);
    expect(commits).toEqual([[1], [12, 13, 14], [12], [13], [14]]);
  });

  it('10,000 concurrent decisions across 3 teams: every event has its audit row, approvals their rows, and the chain verifies', async () => {
    const teams = await Promise.all([teamWithSessions(10), teamWithSessions(10), teamWithSessions(10)]);
    const inputs = teams.flatMap((t) => t.inputs);
    const tools = ['bash', 'write', 'read'] as const;
    const decided = await Promise.all(
      Array.from({ length: 10_000 }, (_, n) => {
        const tool = tools[n % 3]!;
        return decide(inputs[n % inputs.length]!, `call-${n}`, tool, tool === 'bash' ? (n % 2 ? `rm -rf /tmp/${n}` : `ls /tmp/${n}`) : `/tmp/${n}`);
      }),
    );
    // each caller got its own decision: rm is denied, write asked, the rest allowed
    expect(decided.map((d) => d.action)).toEqual(Array.from({ length: 10_000 }, (_, n) => (n % 3 === 1 ? 'ask' : n % 3 === 0 && n % 2 ? 'deny' : 'allow')));
    // each decision's event and audit row, and nothing else: the same set of targets on both sides
    const ids = inputs.map((i) => i.sessionId);
    const events = rowsOf<{ session_id: string; id: string; verdict: string }>(
      await stack.db.db.execute(sql`select session_id, id, payload->>'evaluated_permission' as verdict from session_events where type = 'agent.tool_use' and session_id in ${ids}`),
    );
    const audits = rowsOf<{ target: string; decision: string; team_id: string }>(await stack.db.db.execute(sql`select target, decision, team_id from audit_log where action = 'tool.evaluate' and data->>'session_id' in ${ids}`));
    expect(events).toHaveLength(10_000);
    expect(audits).toHaveLength(10_000);
    const byTarget = new Map(audits.map((a) => [a.target, a.decision]));
    for (const e of events) expect(byTarget.get(`${e.session_id}/${e.id}`), e.id).toBe(e.verdict);
    // each team's rows are its own
    for (const team of teams) {
      const own = new Set(team.inputs.map((i) => i.sessionId));
      expect(audits.filter((a) => own.has(a.target.split('/')[0]!)).every((a) => a.team_id === team.teamId)).toBe(true);
    }
    // every ask left a pending approval
    const pending = rowsOf<{ n: string }>(await stack.db.db.execute(sql`select count(*) as n from approvals where status = 'pending' and session_id in ${ids}`));
    expect(Number(pending[0]!.n)).toBe(decided.filter((d) => d.action === 'ask').length);
    // the chain holds, for every team
    for (const team of teams) expect(await verifyAuditChain(stack.db.db, { from: 'start', teamId: team.teamId })).toMatchObject({ ok: true });
    // and the events of each session are numbered without gaps
    const gaps = rowsOf<{ session_id: string }>(await stack.db.db.execute(sql`select session_id from session_events where session_id in ${ids} group by session_id having max(seq) <> count(*)`));
    expect(gaps).toEqual([]);
  }, 600_000);

  it('a replayed request answers what was decided the first time and writes nothing again, in the same batch or a later one', async () => {
    const { inputs } = await teamWithSessions(1);
    const input = inputs[0]!;
    // the same call three times at once (one batch), then again under a policy that would now deny it
    const first = await Promise.all([decide(input, 'again', 'bash', 'ls /a'), decide(input, 'again', 'bash', 'ls /a'), decide(input, 'again', 'bash', 'ls /a')]);
    const later: Decision = await activity.run(decideToolCall, { db: stack.db.db }, { ...input, policy: { rules: [], default: 'deny' as const }, policyVersion: 1 }, { requestId: 'again', callId: 'again', tool: 'bash' as const, input: { command: 'ls /a' } });
    expect([...first, later].map((d) => d.action)).toEqual(['allow', 'allow', 'allow', 'allow']);
    const events = rowsOf<{ n: string }>(await stack.db.db.execute(sql`select count(*) as n from session_events where type = 'agent.tool_use' and session_id = ${input.sessionId}`));
    const audits = rowsOf<{ n: string }>(await stack.db.db.execute(sql`select count(*) as n from audit_log where action = 'tool.evaluate' and data->>'session_id' = ${input.sessionId}`));
    expect([Number(events[0]!.n), Number(audits[0]!.n)]).toEqual([1, 1]);
  });

  it('hashes again from the real tip when another writer moved the chain since this process last wrote it', async () => {
    const { teamId, inputs } = await teamWithSessions(1);
    // as if another process had appended since: this process's guess of the tip is stale
    rememberTip('f'.repeat(64));
    expect((await decide(inputs[0]!, 'stale-tip', 'read', '/a')).action).toBe('allow');
    const audits = rowsOf<{ n: string }>(await stack.db.db.execute(sql`select count(*) as n from audit_log where action = 'tool.evaluate' and data->>'session_id' = ${inputs[0]!.sessionId}`));
    expect(Number(audits[0]!.n)).toBe(1);
    expect(await verifyAuditChain(stack.db.db, { from: 'start', teamId })).toMatchObject({ ok: true });
  });

  it('a decision that cannot be written fails alone; the ones committed with it land, each with its audit row', async () => {
    const { inputs } = await teamWithSessions(2);
    const [good, other] = inputs as [RunTurnInput, RunTurnInput];
    // a session that does not exist: its event cannot be written (appendEvents throws), so the batch it joined fails
    const missing = { ...good, sessionId: 'sesn_does_not_exist' };
    const results = await Promise.all([
      decide(good, 'lone-0', 'read', '/a'),
      ...Array.from({ length: 20 }, (_, n) => decide(n === 10 ? missing : n % 2 ? good : other, `lone-${n + 1}`, 'read', `/b/${n}`).then((d) => d, (err: Error) => ({ error: err.message }))),
    ]);
    expect(results.filter((r) => 'error' in r)).toEqual([{ error: expect.stringContaining('sesn_does_not_exist') }]);
    const ids = [good.sessionId, other.sessionId];
    const events = rowsOf<{ n: string }>(await stack.db.db.execute(sql`select count(*) as n from session_events where type = 'agent.tool_use' and session_id in ${ids}`));
    const audits = rowsOf<{ n: string }>(await stack.db.db.execute(sql`select count(*) as n from audit_log where action = 'tool.evaluate' and data->>'session_id' in ${[...ids, 'sesn_does_not_exist']}`));
    expect([Number(events[0]!.n), Number(audits[0]!.n)]).toEqual([20, 20]);
  }, 120_000);
});
