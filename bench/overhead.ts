/**
 * Control-plane overhead per turn: an agentplane session on a no-op runtime against a bare Temporal workflow that
 * runs one activity per turn, N turns each, in this process against the same Temporal dev server.
 *
 *   npx tsx bench/overhead.ts [--turns 50] [--warmup 5]
 *
 * (a) bare: a workflow update → one activity → its result back in the workflow → the update's reply to the client;
 *     the turn ends when the client has the reply.
 * (b) agentplane: `POST /v1/sessions/{id}/events` (user.message) → API validation and event write → signal →
 *     `agentSession` → the runTurn activity (budget reserve/settle, policy, credential, events) on the in-process
 *     `scripted` runtime saying one line → idle; the turn ends when the `session.status_idle` event is written
 *     (its `created_at`, same machine clock).
 * Target: p50 ratio b/a ≤ 1.5.
 */
import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker } from '@temporalio/worker';
import pg from 'pg';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { bareStop, bareTurnUpdate, type BareActivities } from './workflows/bare.workflow';
import { flags, ms, printMachine, printTable, startPlatform, summarize } from './support';

const opts = flags({ turns: 50, warmup: 5 });
printMachine(`overhead: agentplane turn vs bare Temporal turn (${opts.turns} turns each, ${opts.warmup} warm-up)`);

const platform = await startPlatform({ scripted: createScriptedAdapter() });
const { stack } = platform;

// (a) the bare baseline, on its own task queue
const activities: BareActivities = {
  async bareTurn(turn) {
    return turn;
  },
};
const connection = await NativeConnection.connect({ address: platform.temporal.address });
const bareWorker = await Worker.create({
  connection,
  taskQueue: 'bench-bare',
  workflowsPath: fileURLToPath(new URL('./workflows/bare.workflow.ts', import.meta.url)),
  activities,
});
const bareRun = bareWorker.run();

async function bare(turns: number): Promise<number[]> {
  const handle = await stack.temporal.workflow.start('bareSession', { taskQueue: 'bench-bare', workflowId: `bare-${Date.now()}` });
  const samples: number[] = [];
  for (let turn = 0; turn < turns; turn++) {
    const t0 = Date.now();
    await handle.executeUpdate(bareTurnUpdate, { args: [turn] });
    samples.push(Date.now() - t0);
  }
  await handle.signal(bareStop);
  await handle.result();
  return samples;
}

// (b) agentplane, through the API
const agent = await stack.call('POST', '/v1/agents', { name: 'bench no-op', model: 'scripted', runtime: { type: 'scripted', config: {} }, tool_policy: { rules: [], default: 'allow' } });
if (agent.status !== 200) throw new Error(`agent: ${JSON.stringify(agent.body)}`);

// The end of a turn is read straight from the event log on a connection of its own: one indexed query, where polling
// the events API (key lookup, session, the whole log as JSON, every few ms) would load the very process being measured.
const watcher = new pg.Client({ connectionString: stack.databaseUrl });
await watcher.connect();
async function idleEventAt(sessionId: string, turn: number): Promise<Date | undefined> {
  const { rows } = await watcher.query<{ created_at: Date }>(
    `select created_at from session_events where session_id = $1 and type = 'session.status_idle' order by seq offset $2 limit 1`,
    [sessionId, turn],
  );
  return rows[0]?.created_at;
}

async function agentplane(turns: number): Promise<number[]> {
  const session = await stack.call('POST', '/v1/sessions', { agent: agent.body.id });
  if (session.status !== 200) throw new Error(`session: ${JSON.stringify(session.body)}`);
  const id = session.body.id as string;
  const samples: number[] = [];
  for (let turn = 0; turn < turns; turn++) {
    const t0 = Date.now();
    const sent = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: `say turn ${turn}` }] });
    if (sent.status !== 200) throw new Error(`message: ${JSON.stringify(sent.body)}`);
    let idle: Date | undefined;
    while (!idle) {
      idle = await idleEventAt(id, turn);
      if (!idle) await new Promise((r) => setTimeout(r, 2));
    }
    samples.push(idle.getTime() - t0);
  }
  await stack.call('POST', `/v1/sessions/${id}/archive`);
  return samples;
}

await bare(opts.warmup);
await agentplane(opts.warmup);
const a = summarize(await bare(opts.turns));
const b = summarize(await agentplane(opts.turns));

printTable(
  ['path', 'turns', 'p50', 'p99', 'mean'],
  [
    ['(a) bare Temporal: update + 1 activity', a.n, ms(a.p50), ms(a.p99), ms(a.mean)],
    ['(b) agentplane: API + agentSession + runTurn', b.n, ms(b.p50), ms(b.p99), ms(b.mean)],
  ],
);
console.log(`ratio b/a: p50 ${(b.p50 / a.p50).toFixed(2)}, p99 ${(b.p99 / a.p99).toFixed(2)}, mean ${(b.mean / a.mean).toFixed(2)} (target p50 ≤ 1.5)`);

bareWorker.shutdown();
await bareRun;
await connection.close();
await watcher.end();
await platform.stop();
