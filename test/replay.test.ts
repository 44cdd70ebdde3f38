/**
 * Determinism guard: recorded agentSession and scheduledRun histories must replay cleanly against the current workflow
 * code. A change that breaks one needs `patched()`. To record new fixtures after a deliberate change, run
 * `RECORD_HISTORIES=1 npx vitest run test/replay.test.ts` and commit test/fixtures/histories/.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { historyFromJSON, historyToJSON } from '@temporalio/common/lib/proto-utils';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { workerTracing } from '../observability/tracing';
import { bundleWorkflows } from '../worker/create-worker';
import { eventually, startStack, waitForStatus, type Stack } from './support/stack';

const FIXTURES = fileURLToPath(new URL('./fixtures/histories', import.meta.url));
/** the bundle's tracing interceptors hand spans to the `exporter` sink; a replay drops them */
const { sinks } = workerTracing(null);
let stack: Stack;

beforeAll(async () => {
  stack = await startStack({ runtimes: { scripted: createScriptedAdapter() } });
});
afterAll(async () => {
  await stack?.stop();
});

/** A session that goes through every branch that matters: allow, deny, ask → approve, usage, a second turn, archive. */
async function recordHistory() {
  const agent = await stack.call('POST', '/v1/agents', {
    name: 'replay',
    model: 'scripted',
    runtime: { type: 'scripted' },
    tool_policy: { rules: [{ tool: 'bash', pattern: 'ls*', action: 'allow' }, { tool: 'write', action: 'ask' }], default: 'deny' },
    budget: { max_cost_usd: 5 },
  });
  const session = await stack.call('POST', '/v1/sessions', {
    agent: agent.body.id,
    initial_events: [{ type: 'user.message', content: 'tool bash ls -la\ntool bash rm x\ntool write a.txt\ncost 0.01\nsay done' }],
  });
  const id = session.body.id as string;
  const waiting = await waitForStatus(stack, id, 'requires_action');
  await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: waiting.pending_approvals[0].tool_use_id, result: 'allow' }] });
  await waitForStatus(stack, id, 'idle', 'end_turn');
  await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: 'say second turn' }] });
  await waitForStatus(stack, id, 'idle', 'end_turn');
  await stack.call('POST', `/v1/sessions/${id}/archive`);
  await stack.temporal.workflow.getHandle(id).result();
  return stack.temporal.workflow.getHandle(id).fetchHistory();
}

/** A scheduled run from fire to settled, and its session (which the run started) to its idle timeout. */
async function recordScheduledRun() {
  const agent = await stack.call('POST', '/v1/agents', { name: 'replay nightly', model: 'scripted', runtime: { type: 'scripted' }, tool_policy: { rules: [], default: 'allow' }, idle_timeout_seconds: 2 });
  const schedule = await stack.call('POST', '/v1/schedules', { agent: agent.body.id, prompt: 'say nightly report\ncost 0.01', spec: { cron: ['0 3 * * *'] }, paused: true });
  expect(schedule.status, JSON.stringify(schedule.body)).toBe(200);
  expect((await stack.call('POST', `/v1/schedules/${schedule.body.id}/trigger`)).status).toBe(200);
  const described = stack.temporal.schedule.getHandle(schedule.body.id);
  const runId = await eventually(async () => (await described.describe()).info.recentActions[0]?.action.workflow.workflowId, { what: 'the fired run' });
  const run = stack.temporal.workflow.getHandle(runId);
  const { sessionId } = (await run.result()) as { sessionId: string };
  const session = stack.temporal.workflow.getHandle(sessionId);
  await session.result();
  return { run: await run.fetchHistory(), session: await session.fetchHistory() };
}

describe('workflow replay', () => {
  it('replays a history recorded just now with the current code', async () => {
    const history = await recordHistory();
    expect(history.events?.length).toBeGreaterThan(20);
    if (process.env.RECORD_HISTORIES === '1') {
      await writeFile(join(FIXTURES, `agent-session-${Date.now()}.json`), historyToJSON(history));
    }
    await Worker.runReplayHistory({ workflowBundle: await bundleWorkflows(), sinks }, history, 'fresh');
  });

  it('replays a scheduled run and its session recorded just now with the current code', async () => {
    const { run, session } = await recordScheduledRun();
    if (process.env.RECORD_HISTORIES === '1') {
      const at = Date.now();
      await writeFile(join(FIXTURES, `scheduled-run-${at}.json`), historyToJSON(run));
      await writeFile(join(FIXTURES, `agent-session-scheduled-${at}.json`), historyToJSON(session));
    }
    const bundle = await bundleWorkflows();
    await Worker.runReplayHistory({ workflowBundle: bundle, sinks }, run, 'fresh scheduled run');
    await Worker.runReplayHistory({ workflowBundle: bundle, sinks }, session, 'fresh scheduled session');
  });

  it('replays every committed history fixture', async () => {
    const files = (await readdir(FIXTURES)).filter((f) => f.endsWith('.json'));
    expect(files.length).toBeGreaterThan(0);
    const bundle = await bundleWorkflows();
    for (const file of files) {
      const history = historyFromJSON(JSON.parse(await readFile(join(FIXTURES, file), 'utf8')));
      await Worker.runReplayHistory({ workflowBundle: bundle, sinks }, history, file);
    }
  });
});
