/**
 * How far one worker and one fleet query go:
 *
 *   npx tsx bench/scale.ts [--idle 200] [--active 50] [--turn-ms 500] [--fleet 10000]
 *   full size: npx tsx bench/scale.ts --idle 2000 --active 400 --fleet 100000
 *
 * (a) idle sessions: sessions started through the API and waiting for input, held by one worker running as its own
 *     OS process (bench/processes/scale-worker.ts, the same createSessionWorker as worker/main.ts). Its memory is read
 *     inside that process after a forced full GC: RSS (the whole process: the main isolate, the workflow thread's
 *     isolate, the Rust core) and the main thread's V8 heap (which does NOT include the workflows: they live in the
 *     workflow thread's isolate). Memory per session is the RSS growth between levels divided by the sessions added.
 * (b) active sessions: k of those sessions get a message at once (`sleep <turn-ms>` on the scripted runtime: a turn
 *     that holds its activity slot like a model call would, and does no work). A turn's latency runs from just before
 *     its `POST /v1/sessions/{id}/events` to its `session.status_idle` event; overhead = latency − turn-ms. The worker
 *     is polled during the level for the most activities it had in flight.
 * (c) the fleet list: the query `GET /v1/sessions` sends (db/queries/sessions.ts listSessionsQuery), timed through
 *     listSessions against one team of 1,000 / 10,000 / 100,000 bulk-seeded sessions (no workflows), with the
 *     `EXPLAIN (ANALYZE, BUFFERS)` plans at the largest size. `--created-index 1` then adds an index on
 *     (team_id, created_at) to this database only (no migration) and explains the created_before query again: the
 *     planner keeps the id-ordered scan, so that index is not the fix (docs/performance.md).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import pg from 'pg';
import { listSessions, listSessionsQuery, type SessionFilter } from '../db/queries/sessions';
import { DEFAULT_CACHED_SESSIONS } from '../worker/create-worker';
import type { ScaleWorkerLimits, ScaleWorkerMemory, ScaleWorkerStatus } from './processes/scale-worker';
import { cpuSecondsOf, flags, ms, pidsNamed, printMachine, printTable, seedSessions, startPlatform, summarize } from './support';

const opts = flags({ idle: 200, active: 50, 'turn-ms': 500, fleet: 10_000, 'created-index': 0, cache: 0, 'workflow-threads': 1 });
const idleLevels = [1, 2, 3, 4].map((q) => Math.round((opts.idle * q) / 4));
const activeLevels = [1, 10, 50, 100, 200, 400, 800].filter((k) => k <= opts.active);
const fleetSizes = [1_000, 10_000, 100_000, 1_000_000].filter((n) => n <= opts.fleet);
printMachine(`scale: ${opts.idle} idle sessions on one worker; ${activeLevels.join(', ')} turns of ${opts['turn-ms']} ms at once; fleet list over ${fleetSizes.join(', ')} sessions`);

const platform = await startPlatform({}, { worker: false });
const { stack } = platform;

// ---- the worker, as its own process ------------------------------------------------------------------------

// AGENTPLANE_BENCH_CPU_PROF=<dir>: the worker writes a CPU profile of each of its threads there when it stops
const profileDir = process.env.AGENTPLANE_BENCH_CPU_PROF;
const child: ChildProcess = spawn(process.execPath, ['--expose-gc', ...(profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : []), '--import', 'tsx', fileURLToPath(new URL('./processes/scale-worker.ts', import.meta.url))], {
  stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
});
/** one request, one answer: the worker answers IPC messages in order */
function ask<T>(message: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`the worker process exited (${code})`));
    child.once('exit', onExit);
    child.once('message', (m) => {
      child.off('exit', onExit);
      resolve(m as T);
    });
    child.send(message as object);
  });
}
const { limits } = await ask<{ limits: ScaleWorkerLimits }>({
  start: {
    temporalAddress: stack.temporalAddress,
    taskQueue: stack.taskQueue,
    databaseUrl: stack.databaseUrl,
    masterKey: stack.masterKey,
    // every idle session stays cached, so its memory is measured (the worker's default, 500, is set for production)
    maxCachedWorkflows: opts.cache || Math.max(opts.idle + 10, DEFAULT_CACHED_SESSIONS),
    workflowThreads: opts['workflow-threads'],
  },
});
console.log(
  `worker limits: max cached workflows ${limits.maxCachedWorkflows} (--cache; worker default ${DEFAULT_CACHED_SESSIONS}; heap limit ${limits.heapLimitMiB} MiB; ${opts['workflow-threads']} workflow thread(s), --workflow-threads), ` +
    `workflow task slots ${limits.maxConcurrentWorkflowTaskExecutions}, activity slots ${limits.maxConcurrentActivityTaskExecutions} (worker/create-worker.ts)`,
);

const agent = await stack.call('POST', '/v1/agents', { name: 'bench scale', model: 'scripted', runtime: { type: 'scripted', config: {} }, tool_policy: { rules: [], default: 'allow' } });
if (agent.status !== 200) throw new Error(`agent: ${JSON.stringify(agent.body)}`);

/** Runs `work` over `items`, `concurrency` at a time. */
async function pool<T>(items: T[], concurrency: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) await work(items[next++]!);
  }));
}

/** Waits until the worker has taken every started workflow's first task and has nothing in flight. */
async function settled(expectedCached: number): Promise<void> {
  const deadline = Date.now() + 300_000;
  for (;;) {
    const s = await ask<ScaleWorkerStatus>('status');
    if (s.cachedWorkflows >= Math.min(expectedCached, limits.maxCachedWorkflows) && s.workflowActivationsInFlight === 0 && s.activitiesInFlight === 0) return;
    if (Date.now() > deadline) throw new Error(`the worker did not settle: ${JSON.stringify(s)}, expected ${expectedCached} cached`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

// ---- (a) idle sessions ---------------------------------------------------------------------------------------

const sessionIds: string[] = [];
const idleRows: Array<Array<string | number>> = [];
await settled(0);
// the workflow thread's isolate and the bundle load with the first workflow: one session before the baseline
async function startSessions(count: number) {
  await pool(Array.from({ length: count }, (_, i) => i), 10, async () => {
    const res = await stack.call('POST', '/v1/sessions', { agent: agent.body.id });
    if (res.status !== 200) throw new Error(`session: ${JSON.stringify(res.body)}`);
    sessionIds.push(res.body.id);
  });
  await settled(sessionIds.length);
}
await startSessions(1);
const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
const kib = (b: number) => `${(b / 2 ** 10).toFixed(0)} KiB`;
let previous = await ask<ScaleWorkerMemory>('measure');
const baseline = previous;
idleRows.push([1, previous.cachedWorkflows, mib(previous.rss), mib(previous.heapUsed), '', '']);
for (const level of idleLevels) {
  const started = Date.now();
  await startSessions(level - sessionIds.length);
  const now = await ask<ScaleWorkerMemory>('measure');
  const added = level - Number(idleRows.at(-1)![0]);
  idleRows.push([level, now.cachedWorkflows, mib(now.rss), mib(now.heapUsed), kib((now.rss - previous.rss) / added), `${Date.now() - started} ms`]);
  previous = now;
}
console.log('\n## (a) idle sessions on one worker (started through the API, waiting for input)');
printTable(['sessions', 'cached workflows', 'worker RSS', 'main-thread heap', 'RSS per added session', 'time to start the step'], idleRows);
const last = previous;
const perSession = (last.rss - baseline.rss) / (sessionIds.length - 1);
console.log(`RSS per idle session, 1 → ${sessionIds.length}: ${kib(perSession)}; the cache holds ${limits.maxCachedWorkflows}, beyond it idle sessions are evicted and replayed on their next message`);

// ---- (b) active sessions -------------------------------------------------------------------------------------

if (sessionIds.length < Math.max(...activeLevels)) await startSessions(Math.max(...activeLevels) - sessionIds.length);
const explainer = new pg.Client({ connectionString: stack.databaseUrl });
await explainer.connect();

/**
 * Where a turn's CPU goes: each process's CPU time over a level, divided by the turns that ended in it. This process
 * is the API (and the benchmark's own polling); Postgres is every backend of the server.
 */
const cpuRows: Array<Array<string | number>> = [];
function cpuNow(): { worker: number; temporal: number; postgres: Map<number, number>; api: number } {
  return { worker: cpuSecondsOf(child.pid!), temporal: cpuSecondsOf(platform.temporal.pid), postgres: new Map(pidsNamed('postgres').map((pid) => [pid, cpuSecondsOf(pid)])), api: cpuSecondsOf(process.pid) };
}
/** CPU seconds between two readings; a Postgres backend that ended in between is not counted (its time is lost) */
function cpuSpent(before: ReturnType<typeof cpuNow>, after: ReturnType<typeof cpuNow>) {
  let postgres = 0;
  for (const [pid, seconds] of after.postgres) postgres += seconds - (before.postgres.get(pid) ?? 0);
  return { worker: after.worker - before.worker, temporal: after.temporal - before.temporal, postgres, api: after.api - before.api };
}

/** k turns sent at once; one row of the table */
async function turnsAtOnce(k: number): Promise<Array<string | number>> {
  const chosen = sessionIds.slice(0, k);
  const cpuBefore = cpuNow();
  const levelStart = new Date();
  const sentAt = new Map<string, number>();
  let maxInFlight = 0;
  let polling = true;
  const poller = (async () => {
    while (polling) {
      maxInFlight = Math.max(maxInFlight, (await ask<ScaleWorkerStatus>('status')).activitiesInFlight);
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  const accepted: number[] = [];
  await Promise.all(
    chosen.map(async (id) => {
      sentAt.set(id, Date.now());
      const res = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: `sleep ${opts['turn-ms']}` }] });
      if (res.status !== 200) throw new Error(`message: ${JSON.stringify(res.body)}`);
      accepted.push(Date.now() - sentAt.get(id)!);
    }),
  );
  let ended: Array<{ session_id: string; at: Date }> = [];
  const deadline = Date.now() + 300_000;
  while (ended.length < k) {
    // a worker that stops keeping up is a finding, not a crash: the row says how many turns ended in 5 minutes
    if (Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 100));
    const res = await explainer.query<{ session_id: string; at: Date }>(
      `select session_id, min(created_at) as at from session_events where type = 'session.status_idle' and created_at > $1 and session_id = any($2) group by session_id`,
      [levelStart, chosen],
    );
    ended = res.rows;
  }
  polling = false;
  await poller;
  const latencies = ended.map((e) => e.at.getTime() - sentAt.get(e.session_id)!);
  const wall = Math.max(...ended.map((e) => e.at.getTime())) - Math.min(...sentAt.values());
  const l = summarize(latencies);
  if (ended.length === 0) return [`${k} (none ended in 300 s)`, maxInFlight, ms(summarize(accepted).p50), '', '', '', '', '', '0'];
  const perTurn = Object.fromEntries(Object.entries(cpuSpent(cpuBefore, cpuNow())).map(([p, seconds]) => [p, (seconds * 1000) / ended.length]));
  const total = Object.values(perTurn).reduce((a, b) => a + b, 0);
  cpuRows.push([k, ...Object.values(perTurn).map((v) => `${v.toFixed(1)} ms`), `${total.toFixed(1)} ms`, `${(2000 / total).toFixed(1)}`]);
  const row = [ended.length < k ? `${k} (${ended.length} ended in 300 s)` : k, maxInFlight, ms(summarize(accepted).p50), ms(l.p50), ms(l.p99), ms(l.p50 - opts['turn-ms']), ms(l.p99 - opts['turn-ms']), `${wall} ms`, ((ended.length * 1000) / wall).toFixed(1)];
  if (ended.length === k) await settled(sessionIds.length);
  return row;
}
await turnsAtOnce(1); // warm-up: the first turn loads the runtime and the activities' code paths
const activeRows: Array<Array<string | number>> = [];
for (const k of activeLevels) {
  const row = await turnsAtOnce(k);
  activeRows.push(row);
  if (typeof row[0] === 'string') break; // the worker did not keep up: larger levels would only pile on
}
console.log(`\n## (b) turns at once on one worker (scripted \`sleep ${opts['turn-ms']}\`; ${limits.maxConcurrentActivityTaskExecutions} activity slots)`);
printTable(['turns at once', 'max activities in flight', 'p50 accepted', 'p50', 'p99', 'p50 overhead', 'p99 overhead', 'wall', 'turns/s'], activeRows);
console.log('\nCPU per turn, by process (CPU time over the level ÷ turns ended; 2 cores give at most 2,000 ms of CPU a second):');
printTable(['turns at once', 'worker', 'Temporal server', 'Postgres', 'API (+ this benchmark)', 'all', 'turns/s the CPU allows'], cpuRows);

await ask('stop');

// ---- (c) the fleet list ----------------------------------------------------------------------------------------

const fleet = await stack.newTeam();
const db = stack.db.db;
const filters: Array<[string, Partial<SessionFilter>]> = [
  ['default page (20)', {}],
  ['status=running', { status: 'running' }],
  ['agent_id=agent_seed3', { agentId: 'agent_seed3' }],
  ['page 2 (cursor)', {}],
  ['created_before (oldest batch)', {}],
];
const fleetRows: Array<Array<string | number>> = [];
let seeded = 0;
const plans: string[] = [];
let createdBefore: SessionFilter | null = null;
for (const size of fleetSizes) {
  const started = Date.now();
  const ids = await seedSessions(db, { teamId: fleet.teamId, count: size - seeded });
  seeded = size;
  await db.execute(sql`analyze sessions`);
  const seedMs = Date.now() - started;
  const firstPage = await listSessions(db, { teamId: fleet.teamId, limit: 20, includeArchived: false });
  // the first 4,000-row insert shares one created_at; created_before it (+1 ms: a Date drops the microseconds) selects that batch
  const [{ oldest }] = (await explainer.query<{ oldest: Date }>('select min(created_at) as oldest from sessions where team_id = $1', [fleet.teamId])).rows as [{ oldest: Date }];
  for (const [name, extra] of filters) {
    const cursor = name.startsWith('page 2') ? { after: firstPage.at(-1)!.id } : name.startsWith('created_before') ? { createdBefore: new Date(oldest.getTime() + 1) } : {};
    const filter: SessionFilter = { teamId: fleet.teamId, limit: 20, includeArchived: false, ...extra, ...cursor };
    const samples: number[] = [];
    for (let i = 0; i < 55; i++) {
      const t0 = performance.now();
      const rows = await listSessions(db, filter);
      if (i >= 5) samples.push(performance.now() - t0);
      if (rows.length !== 20) throw new Error(`${name}: ${rows.length} rows`);
    }
    if (name.startsWith('created_before')) createdBefore = filter;
    const s = summarize(samples);
    fleetRows.push([size, name, ms(s.p50), ms(s.p99), name === 'default page (20)' ? `${ids.length} in ${seedMs} ms` : '']);
    if (size === fleetSizes.at(-1)) {
      const query = listSessionsQuery(db, filter).toSQL();
      const plan = await explainer.query<{ 'QUERY PLAN': string }>(`explain (analyze, buffers) ${query.sql}`, query.params);
      plans.push(`### ${name}, ${size} sessions\n\n${query.sql}\n\n${plan.rows.map((r) => r['QUERY PLAN']).join('\n')}`);
    }
  }
}
console.log(`\n## (c) the fleet list (listSessions, 50 runs after 5 warm-up; one team holds all ${seeded} sessions)`);
printTable(['sessions', 'query', 'p50', 'p99', 'seeded'], fleetRows);
console.log(`\n## EXPLAIN (ANALYZE, BUFFERS) at ${seeded} sessions\n`);
for (const plan of plans) console.log(`${plan}\n`);

if (opts['created-index'] && createdBefore) {
  await explainer.query('create index sessions_team_created_probe on sessions (team_id, created_at)');
  await explainer.query('analyze sessions');
  const query = listSessionsQuery(db, createdBefore).toSQL();
  const plan = await explainer.query<{ 'QUERY PLAN': string }>(`explain (analyze, buffers) ${query.sql}`, query.params);
  console.log(`### created_before (oldest batch), ${seeded} sessions, with an index on (team_id, created_at)\n\n${plan.rows.map((r) => r['QUERY PLAN']).join('\n')}\n`);
}

await explainer.end();
await platform.stop();
