/**
 * Schedules on Temporal Schedules, against the real dev server: runs fire (on demand, by backfill, by a real cron
 * minute and by an interval), each run is a session whose trigger is the schedule, pausing stops firing, several
 * API and worker replicas never run a fire twice, and the run history shows each run's status and cost.
 */
import type { AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { NativeConnection } from '@temporalio/worker';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities } from '../activities/index';
import { createApp } from '../api/create-app';
import { RUNTIME_CAPABILITIES } from '../runtimes/registry';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { bundleWorkflows, createSessionWorker, type SessionWorker } from '../worker/create-worker';
import { eventually, startStack, type Stack } from './support/stack';

let stack: Stack;
let agentId: string;
/** a second API and a second worker on the same database and task queue, as a second replica of each */
let replicaUrl: string;
let replicaServer: ServerType;
let replicaWorker: SessionWorker;
let replicaRun: Promise<void>;
let replicaConnection: NativeConnection;

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: createScriptedAdapter() } });
  const app = createApp({ db: stack.db.db, vault: stack.vault, temporal: stack.temporal, taskQueue: stack.taskQueue, capabilities: RUNTIME_CAPABILITIES, sandboxKind: stack.sandboxKind, egress: stack.egress });
  replicaServer = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  replicaUrl = `http://127.0.0.1:${(replicaServer.address() as AddressInfo).port}`;
  replicaConnection = await NativeConnection.connect({ address: stack.temporalAddress });
  replicaWorker = await createSessionWorker({
    connection: replicaConnection,
    namespace: 'default',
    taskQueue: stack.taskQueue,
    workflowBundle: await bundleWorkflows(),
    deps: { db: stack.db.db, vault: stack.vault, runtimes: { scripted: createScriptedAdapter() }, dataDir: stack.dataDir },
  });
  replicaRun = replicaWorker.run();
  const agent = await stack.call('POST', '/v1/agents', { name: 'nightly', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' }, idle_timeout_seconds: 30 });
  expect(agent.status).toBe(200);
  agentId = agent.body.id;
});

afterAll(async () => {
  replicaWorker?.shutdown();
  await replicaRun;
  await replicaConnection?.close();
  await new Promise((resolve) => replicaServer?.close(resolve));
  await stack?.stop();
});

/** the own team's admin key against the replica API */
async function replicaCall(method: string, path: string, body?: unknown) {
  const res = await fetch(`${replicaUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${stack.adminKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as any };
}

const PROMPT = 'say nightly report\ncost 0.25';

async function createSchedule(extra: Record<string, unknown> = {}) {
  const res = await stack.call('POST', '/v1/schedules', { agent: agentId, prompt: PROMPT, spec: { cron: ['0 3 * * *'] }, ...extra });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body;
}

async function runsOf(scheduleId: string): Promise<any[]> {
  const res = await stack.call('GET', `/v1/schedules/${scheduleId}/runs?limit=100`);
  expect(res.status).toBe(200);
  return res.body.data;
}

/** Waits until the schedule has `count` runs, all settled (idle after their turn, or terminated). */
async function settledRuns(scheduleId: string, count: number, timeoutMs = 60_000) {
  return eventually(
    async () => {
      const runs = await runsOf(scheduleId);
      return runs.length >= count && runs.every((r) => r.stop_reason !== null) ? runs : undefined;
    },
    { timeoutMs, what: `${count} settled runs of ${scheduleId}` },
  );
}

describe('schedules', () => {
  it('triggers a run: a session of the agent, started with the prompt, whose trigger is the schedule', async () => {
    const schedule = await createSchedule({ title: 'nightly', metadata: { team: 'infra' }, paused: true });
    expect(schedule).toMatchObject({ type: 'schedule', agent: { id: agentId, version: null }, state: { paused: true }, spec: { cron: ['0 3 * * *'], time_zone: 'UTC' } });
    const triggered = await stack.call('POST', `/v1/schedules/${schedule.id}/trigger`);
    expect(triggered.status).toBe(200);

    const [run] = await settledRuns(schedule.id, 1);
    expect(run).toMatchObject({ status: 'idle', stop_reason: { type: 'end_turn' }, cost_usd: 0.25 });
    const session = await stack.call('GET', `/v1/sessions/${run.session_id}`);
    expect(session.body).toMatchObject({ trigger: { type: 'schedule', schedule_id: schedule.id }, title: 'nightly', metadata: { team: 'infra' }, agent: { id: agentId } });
    expect(session.body.trigger.scheduled_at).toBe(run.scheduled_at);
    const events = await stack.call('GET', `/v1/sessions/${run.session_id}/events`);
    expect(events.body.data.find((e: any) => e.type === 'user.message').content).toEqual([{ type: 'text', text: PROMPT }]);
    // the fleet list shows it as the schedule's
    const fleet = await stack.call('GET', `/v1/sessions?schedule_id=${schedule.id}`);
    expect(fleet.body.data.map((s: any) => s.id)).toEqual([run.session_id]);
    expect(fleet.body.data[0].trigger).toMatchObject({ type: 'schedule', schedule_id: schedule.id });
    // the run was started on behalf of the schedule's creator, which nobody has changed since
    expect(schedule.run_as).toEqual(schedule.created_by);
    expect(session.body.initiator.key_id).toBe(schedule.run_as.key_id);
  });

  it("a developer who changes an admin's schedule makes its runs start as the developer, not as the admin", async () => {
    const schedule = await createSchedule({ paused: true });
    const admin = schedule.created_by.key_id;
    const developer = await stack.key('developer');
    const changed = await stack.call('PATCH', `/v1/schedules/${schedule.id}`, { prompt: 'say written by the developer' }, developer);
    expect(changed.status, JSON.stringify(changed.body)).toBe(200);
    const developerId = changed.body.run_as.key_id;
    expect(developerId).not.toBe(admin);
    expect(changed.body.created_by.key_id).toBe(admin);

    // a trigger (by anyone) runs what the schedule now says, as the key that said it
    expect((await stack.call('POST', `/v1/schedules/${schedule.id}/trigger`)).status).toBe(200);
    const [run] = await settledRuns(schedule.id, 1);
    const session = await stack.call('GET', `/v1/sessions/${run.session_id}`);
    expect(session.body.initiator.key_id).toBe(developerId);
    const events = await stack.call('GET', `/v1/sessions/${run.session_id}/events`);
    expect(events.body.data.find((e: any) => e.type === 'user.message').content).toEqual([{ type: 'text', text: 'say written by the developer' }]);

    // the audit rows say who it runs as: rebound by the update, kept by the trigger
    const audit = await stack.call('GET', `/v1/audit?target=${schedule.id}&limit=100`);
    const rows = Object.fromEntries(audit.body.data.map((r: any) => [r.action, r]));
    expect(rows['schedule.update']).toMatchObject({ actor: { key_id: developerId }, data: { run_as_key_id: developerId, previous_run_as_key_id: admin } });
    expect(rows['schedule.trigger']).toMatchObject({ actor: { key_id: admin }, data: { run_as_key_id: developerId } });
    // pausing is not a change of what runs: the schedule stays the developer's
    expect((await stack.call('POST', `/v1/schedules/${schedule.id}/pause`)).body.run_as.key_id).toBe(developerId);
  });

  it('backfills one run per missed cron time, each listed in the run history with its status and cost', async () => {
    const schedule = await createSchedule({ spec: { cron: ['* * * * *'] }, paused: true, policies: { overlap: 'allow_all' } });
    const start = new Date('2026-01-01T00:00:00Z');
    const res = await stack.call('POST', `/v1/schedules/${schedule.id}/backfill`, { start: start.toISOString(), end: new Date(start.getTime() + 3 * 60_000 - 1000).toISOString() });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const runs = await settledRuns(schedule.id, 3);
    expect(runs).toHaveLength(3);
    // newest first, one per minute
    expect(runs.map((r) => r.scheduled_at)).toEqual(['2026-01-01T00:02:00.000Z', '2026-01-01T00:01:00.000Z', '2026-01-01T00:00:00.000Z']);
    for (const run of runs) expect(run).toMatchObject({ status: 'idle', stop_reason: { type: 'end_turn' }, cost_usd: 0.25 });
  });

  it('with two APIs and two workers, each fire of the schedule runs exactly once', async () => {
    // created through one API, fired through the other, run by whichever worker takes it
    const schedule = await createSchedule({ spec: { cron: ['* * * * *'] }, paused: true, policies: { overlap: 'allow_all' } });
    const start = new Date('2026-02-01T00:00:00Z');
    const backfill = { start: start.toISOString(), end: new Date(start.getTime() + 4 * 60_000 - 1000).toISOString() };
    expect((await replicaCall('POST', `/v1/schedules/${schedule.id}/backfill`, backfill)).status).toBe(200);
    // the same backfill again from the first API: the fires are the same, so nothing runs twice
    expect((await stack.call('POST', `/v1/schedules/${schedule.id}/backfill`, backfill)).status).toBe(200);
    const runs = await settledRuns(schedule.id, 4);
    const sessions = (await stack.db.db.execute(sql`select id from sessions where schedule_id = ${schedule.id}`)) as unknown as { rows: unknown[] };
    expect(sessions.rows).toHaveLength(4);
    expect(new Set(runs.map((r) => r.scheduled_at)).size).toBe(4);

    // a retried activity lands on the session it made: both workers' activities, called for the same fire
    const fire = { scheduleId: schedule.id, teamId: stack.teamId, runId: `${schedule.id}-run-2026-02-01T00:00:00Z`, scheduledAt: '2026-02-01T00:00:00.000Z' };
    const deps = { db: stack.db.db, vault: stack.vault, runtimes: { scripted: createScriptedAdapter() }, dataDir: stack.dataDir };
    const [a, b] = await Promise.all([createActivities(deps).createScheduledSession(fire), createActivities(deps).createScheduledSession(fire)]);
    expect(a.sessionId).toBe(b.sessionId);
    expect(runs.map((r) => r.session_id)).toContain(a.sessionId);
    expect(await runsOf(schedule.id)).toHaveLength(4);
    const audits = await stack.call('GET', `/v1/audit?action=session.create&target=${a.sessionId}`);
    expect(audits.body.data).toHaveLength(1);
  });

  it('fires on its own on a real cron minute', { timeout: 150_000 }, async () => {
    const schedule = await createSchedule({ spec: { cron: ['* * * * *'] } });
    const [run] = await settledRuns(schedule.id, 1, 140_000);
    expect(new Date(run.scheduled_at).getUTCSeconds()).toBe(0);
    expect(run.cost_usd).toBe(0.25);
    await stack.call('DELETE', `/v1/schedules/${schedule.id}`);
  });

  it('fires on an interval, and a paused schedule fires nothing while an unpaused one keeps firing', { timeout: 120_000 }, async () => {
    const spec = { intervals: [{ every_seconds: 2 }] };
    const paused = await createSchedule({ spec });
    const control = await createSchedule({ spec });
    await settledRuns(paused.id, 1, 60_000);
    const res = await stack.call('POST', `/v1/schedules/${paused.id}/pause`, { note: 'maintenance' });
    expect(res.status).toBe(200);
    expect(res.body.state).toEqual({ paused: true, note: 'maintenance' });
    const before = (await runsOf(paused.id)).length;
    // the control schedule has the same interval: three more of its fires are three intervals the paused one let pass
    const controlBefore = (await runsOf(control.id)).length;
    await settledRuns(control.id, controlBefore + 3, 60_000);
    const described = await stack.temporal.schedule.getHandle(paused.id).describe();
    expect(described.state.paused).toBe(true);
    // a run started just before the pause may still be finishing: count the settled ones again once it has
    const after = await eventually(async () => {
      const runs = await runsOf(paused.id);
      return runs.every((r) => r.stop_reason !== null) ? runs.length : undefined;
    });
    expect(after).toBeLessThanOrEqual(before + 1);
    await stack.call('DELETE', `/v1/schedules/${control.id}`);
    await stack.call('DELETE', `/v1/schedules/${paused.id}`);
  });

  it('passes the overlap policy and catch-up window to Temporal, and an update changes them there', async () => {
    const schedule = await createSchedule({ policies: { overlap: 'buffer_one', catchup_window_seconds: 600 }, spec: { cron: ['30 9 * * MON-FRI'], time_zone: 'Europe/Berlin', jitter_seconds: 30 } });
    expect(schedule.policies).toEqual({ overlap: 'buffer_one', catchup_window_seconds: 600 });
    const handle = stack.temporal.schedule.getHandle(schedule.id);
    let described = await handle.describe();
    expect(described.policies).toMatchObject({ overlap: 'BUFFER_ONE', catchupWindow: 600_000 });
    expect(described.spec.timezone).toBe('Europe/Berlin');
    expect(described.spec.jitter).toBe(30_000);
    expect(described.action).toMatchObject({ workflowType: 'scheduledRun', taskQueue: stack.taskQueue });

    const updated = await stack.call('PATCH', `/v1/schedules/${schedule.id}`, { policies: { overlap: 'cancel_other', catchup_window_seconds: 60 }, prompt: 'say changed' });
    expect(updated.status, JSON.stringify(updated.body)).toBe(200);
    expect(updated.body).toMatchObject({ prompt: 'say changed', policies: { overlap: 'cancel_other', catchup_window_seconds: 60 } });
    described = await handle.describe();
    expect(described.policies.overlap).toBe('CANCEL_OTHER');
    // the spec is untouched by a policy-only update
    expect(described.spec.timezone).toBe('Europe/Berlin');
    const got = await stack.call('GET', `/v1/schedules/${schedule.id}`);
    expect(got.body.policies.overlap).toBe('cancel_other');
    expect(got.body.info.next_run_times.length).toBeGreaterThan(0);
  });

  it('with overlap "cancel other", a new run interrupts the run still going; with "skip", it is not started', async () => {
    const long = 'say working\nsleep 120000\nsay done';
    const cancelling = await createSchedule({ prompt: long, paused: true, policies: { overlap: 'cancel_other' } });
    await stack.call('POST', `/v1/schedules/${cancelling.id}/trigger`);
    const first = await eventually(async () => (await runsOf(cancelling.id)).find((r) => r.status === 'running'), { what: 'the first run to be running' });
    // the second fire has its own scheduled time (fires are named by the second)
    await eventually(async () => (Date.now() - Date.parse(first.scheduled_at) > 1500 ? true : undefined), { what: 'the next second' });
    await stack.call('POST', `/v1/schedules/${cancelling.id}/trigger`);
    const interrupted = await eventually(async () => (await runsOf(cancelling.id)).find((r) => r.session_id === first.session_id && r.stop_reason?.type === 'interrupted'), {
      what: 'the first run to be interrupted',
    });
    expect(interrupted.status).toBe('idle');
    const second = await eventually(async () => (await runsOf(cancelling.id)).find((r) => r.session_id !== first.session_id && r.status === 'running'), { what: 'the second run to be running' });
    expect(second.scheduled_at > first.scheduled_at).toBe(true);
    await stack.call('POST', `/v1/sessions/${second.session_id}/events`, { events: [{ type: 'user.interrupt' }] });

    const skipping = await createSchedule({ prompt: long, paused: true, policies: { overlap: 'skip' } });
    const handle = stack.temporal.schedule.getHandle(skipping.id);
    await stack.call('POST', `/v1/schedules/${skipping.id}/trigger`);
    const only = await eventually(async () => (await runsOf(skipping.id)).find((r) => r.status === 'running'), { what: 'the run to be running' });
    await eventually(async () => (Date.now() - Date.parse(only.scheduled_at) > 1500 ? true : undefined), { what: 'the next second' });
    await stack.call('POST', `/v1/schedules/${skipping.id}/trigger`);
    // Temporal counts the fire it skipped; nothing was started for it
    await eventually(async () => ((await handle.describe()).info.numActionsSkippedOverlap === 1 ? true : undefined), { what: 'the skipped fire' });
    expect((await runsOf(skipping.id)).map((r) => r.session_id)).toEqual([only.session_id]);
    await stack.call('POST', `/v1/sessions/${only.session_id}/events`, { events: [{ type: 'user.interrupt' }] });
  });

  it('hears from the session that its first turn settled, without polling; the same fire run again finds its session, running or ended', async () => {
    const schedule = await createSchedule({ spec: { cron: ['* * * * *'] }, paused: true, policies: { overlap: 'allow_all' } });
    const handle = stack.temporal.schedule.getHandle(schedule.id);
    // one fire, backfilled: each backfill of it starts the fire's run again (same workflow id, a new run)
    const backfill = { start: '2026-03-01T00:00:00Z', end: '2026-03-01T00:00:59Z' };
    const seen = new Set<string>();
    async function fire() {
      expect((await stack.call('POST', `/v1/schedules/${schedule.id}/backfill`, backfill)).status).toBe(200);
      const action = await eventually(async () => (await handle.describe()).info.recentActions.find((a) => !seen.has(a.action.workflow.firstExecutionRunId)), { what: 'the fire' });
      seen.add(action.action.workflow.firstExecutionRunId);
      const run = stack.temporal.workflow.getHandle(action.action.workflow.workflowId, action.action.workflow.firstExecutionRunId);
      return { result: (await run.result()) as { sessionId: string; status: string; stopReason: unknown }, history: await run.fetchHistory() };
    }

    const first = await fire();
    expect(first.result).toMatchObject({ status: 'idle', stopReason: { type: 'end_turn' } });
    // the run read the schedule once and was told the rest: no activity watched the session's row
    const activities = (h: typeof first.history) => (h.events ?? []).flatMap((e) => e.activityTaskScheduledEventAttributes?.activityType?.name ?? []);
    const signals = (h: typeof first.history) => (h.events ?? []).flatMap((e) => e.workflowExecutionSignaledEventAttributes?.signalName ?? []);
    expect(activities(first.history)).toEqual(['createScheduledSession']);
    expect(signals(first.history)).toEqual(['session.settled']);

    // again while its session still runs (idle, taking follow-ups): the session answers at once with its first turn
    const again = await fire();
    expect(again.result).toEqual(first.result);
    expect(activities(again.history)).toEqual(['createScheduledSession']);

    // again once its session has ended: it cannot be signalled, and its row says how it ended
    expect((await stack.call('POST', `/v1/sessions/${first.result.sessionId}/archive`)).status).toBe(200);
    await stack.temporal.workflow.getHandle(first.result.sessionId).result();
    const ended = await fire();
    expect(ended.result).toMatchObject({ sessionId: first.result.sessionId, status: 'terminated', stopReason: { type: 'archived' } });
    expect(activities(ended.history)).toEqual(['createScheduledSession', 'sessionOutcome']);
    expect(await runsOf(schedule.id)).toHaveLength(1);
  });

  it('audits create, update, pause, unpause, trigger and delete, and a deleted schedule is gone', async () => {
    const schedule = await createSchedule({ paused: true });
    await stack.call('PATCH', `/v1/schedules/${schedule.id}`, { prompt: 'say other' });
    await stack.call('POST', `/v1/schedules/${schedule.id}/pause`);
    await stack.call('POST', `/v1/schedules/${schedule.id}/unpause`);
    await stack.call('POST', `/v1/schedules/${schedule.id}/pause`);
    expect((await stack.call('DELETE', `/v1/schedules/${schedule.id}`)).status).toBe(200);
    const audit = await stack.call('GET', `/v1/audit?target=${schedule.id}&limit=100`);
    expect(audit.body.data.map((r: any) => r.action)).toEqual(['schedule.create', 'schedule.update', 'schedule.pause', 'schedule.unpause', 'schedule.pause', 'schedule.delete']);
    expect((await stack.call('GET', `/v1/schedules/${schedule.id}`)).status).toBe(404);
    expect((await stack.call('GET', '/v1/schedules?limit=1000')).body.data.map((s: any) => s.id)).not.toContain(schedule.id);
    await expect(stack.temporal.schedule.getHandle(schedule.id).describe()).rejects.toThrow();
  });

  it('refuses a bad cron expression, an unknown time zone, a missing spec and an unknown agent, naming the field', async () => {
    const base = { agent: agentId, prompt: 'say hi' };
    const badCron = await stack.call('POST', '/v1/schedules', { ...base, spec: { cron: ['0 25 * * *'] } });
    expect(badCron.status).toBe(400);
    expect(badCron.body.invalid_params.map((p: any) => p.name)).toEqual(['body.spec.cron.0']);
    const badZone = await stack.call('POST', '/v1/schedules', { ...base, spec: { cron: ['0 3 * * *'], time_zone: 'Mars/Olympus_Mons' } });
    expect(badZone.status).toBe(400);
    expect(badZone.body.invalid_params.map((p: any) => p.name)).toEqual(['body.spec.time_zone']);
    const noSpec = await stack.call('POST', '/v1/schedules', { ...base, spec: {} });
    expect(noSpec.status).toBe(400);
    expect(noSpec.body.detail).toContain('body.spec.cron');
    const badOverlap = await stack.call('POST', '/v1/schedules', { ...base, spec: { cron: ['0 3 * * *'] }, policies: { overlap: 'terminate_other' } });
    expect(badOverlap.status).toBe(400);
    expect(badOverlap.body.detail).toContain('body.policies.overlap');
    const noAgent = await stack.call('POST', '/v1/schedules', { ...base, agent: 'agent_nope', spec: { cron: ['0 3 * * *'] } });
    expect(noAgent.status).toBe(404);
    expect(noAgent.body.invalid_params.map((p: any) => p.name)).toEqual(['body.agent']);
    const badInterval = await stack.call('POST', '/v1/schedules', { ...base, spec: { intervals: [{ every_seconds: 60, offset_seconds: 60 }] } });
    expect(badInterval.status).toBe(400);
    expect(badInterval.body.invalid_params.map((p: any) => p.name)).toEqual(['body.spec.intervals.0.offset_seconds']);
    // nothing was created by the refused calls
    const rows = (await stack.db.db.execute(sql`select count(*)::int as n from schedules where prompt = 'say hi'`)) as unknown as { rows: Array<{ n: number }> };
    expect(rows.rows[0]!.n).toBe(0);
  });

  it("keeps a team's schedules from other teams and from roles without the permission", async () => {
    const schedule = await createSchedule({ paused: true });
    const other = await stack.key('admin', 'other');
    expect((await stack.call('GET', `/v1/schedules/${schedule.id}`, undefined, other)).status).toBe(404);
    expect((await stack.call('POST', `/v1/schedules/${schedule.id}/trigger`, undefined, other)).status).toBe(404);
    expect((await stack.call('GET', `/v1/schedules/${schedule.id}/runs`, undefined, other)).status).toBe(404);
    expect((await stack.call('GET', '/v1/schedules', undefined, other)).body.data).toEqual([]);
    const viewer = await stack.key('viewer');
    expect((await stack.call('GET', `/v1/schedules/${schedule.id}`, undefined, viewer)).status).toBe(200);
    expect((await stack.call('POST', `/v1/schedules/${schedule.id}/pause`, undefined, viewer)).status).toBe(403);
    const service = await stack.key('service');
    expect((await stack.call('POST', '/v1/schedules', { agent: agentId, prompt: 'x', spec: { cron: ['0 3 * * *'] } }, service)).status).toBe(403);
  });
});
