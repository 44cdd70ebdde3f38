/**
 * API latency and throughput under load: one session (`GET /v1/sessions/{id}`), the fleet list (`GET /v1/sessions`,
 * default page of 20) over N sessions, and session start (`POST /v1/sessions`), driven by autocannon.
 *
 *   npx tsx bench/api.ts [--sessions 2000] [--duration 3] [--connections 10]
 *   full size: npx tsx bench/api.ts --sessions 10000 --duration 10 --connections 10
 *
 * The sessions the reads see are seeded with bulk inserts (bench/support.ts seedSessions): rows as the API writes
 * them, with no Temporal workflow behind them; the reads touch only the database. `POST /v1/sessions` is the real
 * thing: the plan, the row, the audit entry and a Temporal workflow start. No worker runs, so the started workflows
 * wait in Temporal for their first task; the figure is the API's, not a turn's.
 *
 * Baseline, in the same process on the same @hono/node-server: a bare Hono handler that answers each read path
 * with the exact bytes the real route answered (no key check, no validation, no query). The ratio is what the real
 * route costs over HTTP + JSON alone. The load generator (autocannon) runs as its own process
 * (bench/processes/load-generator.ts), so it does not share the servers' event loop; on 2 cores it still shares the
 * CPUs with them, Postgres and Temporal.
 */
import { spawn } from 'node:child_process';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { serve, type ServerType } from '@hono/node-server';
import type autocannon from 'autocannon';
import { sql } from 'drizzle-orm';
import { Hono } from 'hono';
import { toSessionResponse } from '../api/routes/sessions.routes';
import { idParam } from '../api/schemas/common';
import { getSessionWithApprovals } from '../db/queries/sessions';
import { findActiveKey } from '../db/queries/teams';
import { createJsonLog } from '../observability/logger';
import type { LoadOrder, LoadReport } from './processes/load-generator';
import { flags, ms, printMachine, printTable, seedSessions, startPlatform, summarize } from './support';

const opts = flags({ sessions: 2000, duration: 3, connections: 10 });
printMachine(`api: latency and throughput (${opts.sessions} seeded sessions, ${opts.duration} s per run, ${opts.connections} connections)`);

const platform = await startPlatform({}, { worker: false });
const { stack } = platform;
const auth = { authorization: `Bearer ${stack.adminKey}` };

const agent = await stack.call('POST', '/v1/agents', { name: 'bench api', model: 'scripted', runtime: { type: 'scripted', config: {} }, tool_policy: { rules: [], default: 'allow' } });
if (agent.status !== 200) throw new Error(`agent: ${JSON.stringify(agent.body)}`);

const seedStarted = Date.now();
const ids = await seedSessions(stack.db.db, { teamId: stack.teamId, count: opts.sessions });
await stack.db.db.execute(sql`analyze sessions`);
console.log(`seeded ${ids.length} sessions in ${Date.now() - seedStarted} ms (bulk insert, no workflows)`);

// 100 different sessions, cycled through by every connection: the reads are not all one row
const onePaths = Array.from({ length: 100 }, (_, i) => `/v1/sessions/${ids[Math.floor((i * ids.length) / 100)]}`);
const listPath = '/v1/sessions';

/** the real route's answer, byte for byte, for the bare baseline to send back */
async function realAnswer(path: string): Promise<{ body: string; contentType: string }> {
  const res = await fetch(`${stack.url}${path}`, { headers: auth });
  if (res.status !== 200) throw new Error(`${path}: ${res.status} ${await res.text()}`);
  return { body: await res.text(), contentType: res.headers.get('content-type') ?? 'application/json' };
}
const one = await realAnswer(onePaths[0]!);
const list = await realAnswer(listPath);
const listed = (JSON.parse(list.body) as { data: unknown[] }).data.length;

const bare = new Hono();
bare.get('/v1/sessions/:id', (c) => c.body(one.body, 200, { 'content-type': one.contentType }));
bare.get('/v1/sessions', (c) => c.body(list.body, 200, { 'content-type': list.contentType }));
const bareServer: ServerType = await new Promise((resolve) => {
  const s = serve({ fetch: bare.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
});
const bareUrl = `http://127.0.0.1:${(bareServer.address() as AddressInfo).port}`;

// the floor of a read that needs the database: the bare handler plus the route's one query (the same prepared
// statement through the same pool), and nothing else: no key check, no validation, no middleware, no serialisation
const bareQuery = new Hono();
bareQuery.get('/v1/sessions/:id', async (c) => {
  await getSessionWithApprovals(stack.db.db, { teamId: stack.teamId, sessionId: c.req.param('id'), limit: 100 });
  return c.body(one.body, 200, { 'content-type': one.contentType });
});
const bareQueryServer: ServerType = await new Promise((resolve) => {
  const s = serve({ fetch: bareQuery.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
});
const bareQueryUrl = `http://127.0.0.1:${(bareQueryServer.address() as AddressInfo).port}`;

const generator = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./processes/load-generator.ts', import.meta.url))], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });

interface Load {
  p50: number;
  p99: number;
  rps: number;
  requests: number;
  /** CPU of this process (the servers, the pool, pg) per request, in µs: the load generator is another process */
  cpuPerRequest: number;
}

/** One autocannon run; every answer must be a 200 (a benchmark of errors measures nothing). */
async function load(url: string, requests: autocannon.Request[], duration = opts.duration): Promise<Load> {
  const order: LoadOrder = { url, requests, connections: opts.connections, duration };
  const cpuBefore = process.cpuUsage();
  const report = await new Promise<LoadReport | { error: string }>((resolve, reject) => {
    generator.once('message', (m) => resolve(m as LoadReport | { error: string }));
    generator.once('exit', (code) => reject(new Error(`the load generator exited (${code})`)));
    generator.send(order);
  });
  const cpu = process.cpuUsage(cpuBefore);
  generator.removeAllListeners('exit');
  if ('error' in report) throw new Error(`load generator: ${report.error}`);
  if (report.errors > 0 || report.non2xx > 0) throw new Error(`${url}${requests[0]?.path}: ${report.errors} errors, ${report.non2xx} non-2xx answers`);
  const latency = summarize(report.samples);
  return { p50: latency.p50, p99: latency.p99, rps: report.rps, requests: report.requests, cpuPerRequest: (cpu.user + cpu.system) / report.requests };
}

const gets = (paths: string[]): autocannon.Request[] => paths.map((path) => ({ method: 'GET', path, headers: auth }));
const start: autocannon.Request[] = [{ method: 'POST', path: '/v1/sessions', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ agent: agent.body.id }) }];

// one short warm-up of each path (JIT, connection pools, Postgres' caches)
for (const [url, requests] of [[stack.url, gets(onePaths)], [bareUrl, gets(onePaths)], [bareQueryUrl, gets(onePaths)], [stack.url, gets([listPath])], [bareUrl, gets([listPath])], [stack.url, start]] as const) {
  await load(url, [...requests], 1);
}

const getOne = { real: await load(stack.url, gets(onePaths)), bare: await load(bareUrl, gets(onePaths)) };
const floor = await load(bareQueryUrl, gets(onePaths));
const getList = { real: await load(stack.url, gets([listPath])), bare: await load(bareUrl, gets([listPath])) };
const post = await load(stack.url, start);

const rps = (x: number) => x.toFixed(0);
printTable(
  ['request', 'body', 'p50', 'p99', 'req/s', 'requests', 'bare p50', 'bare p99', 'bare req/s', 'p50 ratio', 'req/s ratio'],
  [
    ...([['GET /v1/sessions/{id}', one.body, getOne], [`GET /v1/sessions (${listed} of ${opts.sessions})`, list.body, getList]] as const).map(([name, body, { real, bare: b }]) => [
      name,
      `${Buffer.byteLength(body)} B`,
      ms(real.p50),
      ms(real.p99),
      rps(real.rps),
      real.requests,
      ms(b.p50),
      ms(b.p99),
      rps(b.rps),
      (real.p50 / b.p50).toFixed(2),
      (b.rps / real.rps).toFixed(2),
    ]),
    ['POST /v1/sessions (row + workflow start)', '', ms(post.p50), ms(post.p99), rps(post.rps), post.requests, '', '', '', '', ''],
  ],
);
console.log(
  `floor of GET /v1/sessions/{id}: the bare handler plus its one query: p50 ${ms(floor.p50)}, p99 ${ms(floor.p99)}, ${rps(floor.rps)} req/s; ` +
    `the bare handler serves ${(getOne.bare.rps / floor.rps).toFixed(2)}× that, the real route ${(getOne.real.rps / floor.rps).toFixed(2)}× that`,
);
const cpu = (x: Load) => `${x.cpuPerRequest.toFixed(0)} µs`;
console.log(
  `CPU of the serving process per request, GET /v1/sessions/{id}: bare ${cpu(getOne.bare)}, floor ${cpu(floor)}, route ${cpu(getOne.real)} ` +
    `(the route's own code: ${(getOne.real.cpuPerRequest - floor.cpuPerRequest).toFixed(0)} µs); GET /v1/sessions: bare ${cpu(getList.bare)}, route ${cpu(getList.real)}`,
);
console.log('ratios: p50 ratio = agentplane p50 / bare p50; req/s ratio = bare req/s / agentplane req/s (how many times more the bare handler serves)');

// ---- per stage: where one `GET /v1/sessions/{id}` spends its time --------------------------------------------
// One call at a time, in this process, no HTTP: each stage of the route on its own (the same functions the route
// calls), then the whole route through `app.request` and the bare handler the same way. What the whole route costs
// beyond its stages is Hono's routing and the app's middleware (request id, body limit, role check, metrics, log).
const sessionId = ids[0]!;
const db = stack.db.db;
const found = (await getSessionWithApprovals(db, { teamId: stack.teamId, sessionId, limit: 100 }))!;
const pathSchema = idParam('session_id', 'sesn');
const jsonLog = createJsonLog(() => undefined);
const logEntry = { level: 'INFO', msg: 'request', requestId: 'req_0123456789', sessionId, method: 'GET', path: onePaths[0], route: '/v1/sessions/:session_id', status: 200, ms: 1, keyId: 'key_0123456789' };
const stageRuns = 2000;
async function stage(run: () => unknown): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < stageRuns; i++) {
    const t0 = performance.now();
    await run();
    samples.push(performance.now() - t0);
  }
  return summarize(samples).p50;
}
const staged: Array<[string, number]> = [
  ['key check (findActiveKey; verified keys held in memory)', await stage(() => findActiveKey(db, stack.adminKey, stack.notifications))],
  ['path validation (zod)', await stage(() => pathSchema.parse({ session_id: sessionId }))],
  ['query (getSessionWithApprovals, one round trip)', await stage(() => getSessionWithApprovals(db, { teamId: stack.teamId, sessionId, limit: 100 }))],
  ['serialisation (toSessionResponse + JSON.stringify)', await stage(() => JSON.stringify(toSessionResponse(found.session, found.pending)))],
  ['the request log line (createJsonLog, redacted)', await stage(() => jsonLog(logEntry))],
];
const whole = await stage(async () => (await stack.app.request(onePaths[0]!, { headers: auth })).text());
const bareWhole = await stage(async () => (await bare.request(onePaths[0]!)).text());
const sum = staged.reduce((total, [, p50]) => total + p50, 0);
const us = (x: number) => `${(x * 1000).toFixed(0)} µs`;
printTable(
  ['GET /v1/sessions/{id}, one at a time, in process', 'p50', 'share of the route'],
  [
    ...staged.map(([name, p50]) => [name, us(p50), `${((100 * p50) / whole).toFixed(0)} %`]),
    ['routing and the rest of the middleware (route − stages)', us(Math.max(0, whole - sum)), `${((100 * Math.max(0, whole - sum)) / whole).toFixed(0)} %`],
    ['the whole route (app.request)', us(whole), '100 %'],
    ['bare handler (app.request on the bare Hono app)', us(bareWhole), `ratio ${(whole / bareWhole).toFixed(1)}`],
  ],
);

generator.kill();
await new Promise((resolve) => bareServer.close(resolve));
await new Promise((resolve) => bareQueryServer.close(resolve));
await platform.stop();
