/**
 * Event streams (`GET /v1/sessions/{id}/events/stream`): N concurrent streams on one session of one API process,
 * events appended at a steady rate as a worker appends them.
 *
 *   npx tsx bench/streams.ts [--streams 1000] [--baseline 10] [--rate 20] [--duration 10] [--idle 6] [--fetch 0|1]
 *
 * The API is api/main.ts in its own process, as deployed; the clients (one connection per stream) and the writer
 * (`appendEvents`, one event per statement) run in this one, so commit and receipt are read on one clock:
 * commit is when `appendEvents` returns (the commit acknowledged to its writer), receipt when a client has the frame.
 * For each N (the baseline, then `--streams`): a fresh session, N streams opened on it, `--idle` seconds with nothing
 * written, then `--duration` seconds of `--rate` events a second, until every stream has every event.
 *
 * Database load, two ways: the API's own count of the reads it made for its streams
 * (`agentplane_event_stream_reads_total`, scraped from its /metrics), and Postgres' count of the test database's
 * transactions (`pg_stat_database`; every statement outside a transaction is one) minus this process's appends and
 * its reads of the count: everything the API process cost the database. Postgres learns of a backend's transactions
 * up to 10 s late when the backend goes idle soon after an earlier report (PGSTAT_IDLE_INTERVAL), so the count is read
 * 11 s after the activity before it. The baseline is the same run with fewer streams: load independent of the number
 * of streams shows as the same figures in both rows. (Before LISTEN/NOTIFY each stream read every 200 ms: N × 5
 * reads a second, 5,000 at N = 1,000, idle or not.)
 *
 * The clients share this box's 2 cores with the API and Postgres, so what they cost is taken from the API. By default
 * each is a bare `node:http` request that reads only the frames' `id:` lines (about a third of the CPU of the next);
 * `--fetch 1` reads them as the project's own clients do (fetch, web streams, eventsource-parser). Both count the
 * frames that never arrived.
 */
import { request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import { readSseFrames } from '../runtimes/kit/sse';
import { sql } from 'drizzle-orm';
import { rowsOf } from '../db/client';
import { appendEvents } from '../db/queries/events';
import { eventually } from '../test/support/stack';
import { spawnApi } from '../test/support/worker-process';
import { cpuSecondsOf, flags, ms, printMachine, printTable, seedSessions, startPlatform, summarize } from './support';

const opts = flags({ streams: 1000, baseline: 10, rate: 20, duration: 10, idle: 6, fetch: 0 });
printMachine(`streams: ${opts.baseline} and ${opts.streams} streams on one session of one API process, ${opts.rate} events/s for ${opts.duration} s, clients ${opts.fetch ? 'fetch + eventsource-parser' : 'node:http, id lines only'}`);

const platform = await startPlatform({}, { worker: false });
const { stack } = platform;
const port = await freePort();
const metricsPort = await freePort();
const api = await spawnApi(stack, port, {
  AGENTPLANE_MAX_STREAMS_PER_KEY: String(Math.max(opts.streams, opts.baseline)),
  AGENTPLANE_METRICS_PORT: String(metricsPort),
  AGENTPLANE_METRICS_HOST: '127.0.0.1',
});
const base = `http://127.0.0.1:${port}`;

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port: free } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return free;
}

/** the test database's transactions so far, as Postgres counts them; each read is one more */
async function transactions(): Promise<number> {
  const [row] = rowsOf<{ n: number }>(await stack.db.db.execute(sql`select (xact_commit + xact_rollback)::float8 as n from pg_stat_database where datname = current_database()`));
  return row!.n;
}
const settle = () => new Promise((r) => setTimeout(r, 11_000));

/** the reads the API made for its event streams so far, all kinds */
async function streamReads(): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
  let reads = 0;
  for (const [, value] of text.matchAll(/^agentplane_event_stream_reads_total\{[^}]*\} (\S+)$/gm)) reads += Number(value);
  return reads;
}

interface Span {
  seconds: number;
  reads: number;
  transactions: number;
  /** CPU seconds over the span: the API process, and this one (the clients, their SSE parsing, the writer) */
  cpu: { api: number; clients: number };
}

/**
 * The API's stream reads and database transactions from the start of `activity` to 11 s after its end (it answers
 * how many transactions it made itself): the span is that long so that Postgres has heard of all of them.
 */
async function measure(activity: () => Promise<number>): Promise<Span> {
  const [readsBefore, transactionsBefore] = [await streamReads(), await transactions()];
  const cpuBefore = { api: cpuSecondsOf(api.child.pid!), clients: cpuSecondsOf(process.pid) };
  const started = performance.now();
  const own = await activity();
  const cpu = { api: cpuSecondsOf(api.child.pid!) - cpuBefore.api, clients: cpuSecondsOf(process.pid) - cpuBefore.clients };
  await settle();
  const seconds = (performance.now() - started) / 1000;
  // less this process's own: what the activity wrote, and one read of the count
  return { seconds, reads: (await streamReads()) - readsBefore, transactions: (await transactions()) - transactionsBefore - own - 1, cpu };
}

interface Stream {
  /** [seq, receipt time] of every event frame */
  received: Array<[number, number]>;
  close(): void;
}

async function openStream(sessionId: string): Promise<Stream> {
  return opts.fetch ? openFetchStream(sessionId) : openHttpStream(sessionId);
}

/** as the project's clients read a stream: fetch, then every frame parsed (eventsource-parser) */
async function openFetchStream(sessionId: string): Promise<Stream> {
  const controller = new AbortController();
  const res = await fetch(`${base}/v1/sessions/${sessionId}/events/stream`, { headers: { authorization: `Bearer ${stack.adminKey}` }, signal: controller.signal });
  if (res.status !== 200) throw new Error(`stream: ${res.status} ${await res.text()}`);
  const received: Array<[number, number]> = [];
  void (async () => {
    try {
      for await (const frame of readSseFrames(res.body!)) if (frame.id !== null) received.push([Number(frame.id), performance.now()]);
    } catch {
      // closed by close()
    }
  })();
  return { received, close: () => controller.abort() };
}

/** the least a client can do: one socket, and of each frame only its `id:` line, timed when its chunk arrives */
async function openHttpStream(sessionId: string): Promise<Stream> {
  const received: Array<[number, number]> = [];
  const req = request(`${base}/v1/sessions/${sessionId}/events/stream`, { headers: { authorization: `Bearer ${stack.adminKey}` }, agent: false });
  await new Promise<void>((resolve, reject) => {
    req.once('error', reject);
    req.once('response', (res) => {
      if (res.statusCode !== 200) return reject(new Error(`stream: ${res.statusCode}`));
      res.setEncoding('utf8');
      let rest = '';
      res.on('data', (chunk: string) => {
        const at = performance.now();
        const text = rest + chunk;
        const end = text.lastIndexOf('\n\n');
        if (end === -1) return void (rest = text);
        rest = text.slice(end + 2);
        for (const [, id] of text.slice(0, end).matchAll(/^id: (\d+)$/gm)) received.push([Number(id), at]);
      });
      res.on('error', () => undefined);
      resolve();
    });
    req.end();
  });
  return { received, close: () => req.destroy() };
}

interface Row {
  streams: number;
  events: number;
  frames: number;
  missing: number;
  latency: ReturnType<typeof summarize>;
  /** per second, with nothing written */
  idle: { reads: number; transactions: number };
  /** per event appended, over what the same span costs idle */
  perEvent: { reads: number; transactions: number };
  /** CPU while the events were written and delivered, in cores (CPU seconds ÷ wall seconds) */
  cores: { api: number; clients: number };
}

async function run(count: number): Promise<Row> {
  const [sessionId] = await seedSessions(stack.db.db, { teamId: stack.teamId, count: 1 });
  const streams = await Promise.all(Array.from({ length: count }, () => openStream(sessionId!)));
  await settle(); // the streams' opening (a key check, the session, a first read each) is not idle load

  const quiet = await measure(async () => {
    await new Promise((r) => setTimeout(r, opts.idle * 1000));
    return 0;
  });
  const idle = { reads: quiet.reads / quiet.seconds, transactions: quiet.transactions / quiet.seconds };

  const committed = new Map<number, number>();
  const total = Math.round(opts.rate * opts.duration);
  let busySeconds = 0;
  const active = await measure(async () => {
    const start = performance.now();
    for (let i = 1; i <= total; i++) {
      const wait = start + ((i - 1) * 1000) / opts.rate - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const event = { sourceId: `bench-${i}`, type: 'agent.message', payload: { content: [{ type: 'text', text: `event ${i} of ${total}` }] } };
      await appendEvents(stack.db.db, { sessionId: sessionId!, events: [event] });
      committed.set(i, performance.now());
    }
    const everything = async () => (streams.every((s) => s.received.length >= total) ? true : undefined);
    await eventually(everything, { timeoutMs: 60_000, intervalMs: 20, what: 'every event on every stream' }).catch(() => undefined);
    busySeconds = (performance.now() - start) / 1000;
    return total;
  });

  const latencies: number[] = [];
  let frames = 0;
  let missing = 0;
  for (const stream of streams) {
    frames += stream.received.length;
    missing += total - new Set(stream.received.map(([seq]) => seq)).size;
    for (const [seq, at] of stream.received) latencies.push(at - committed.get(seq)!);
    stream.close();
  }
  const perEvent = { reads: (active.reads - idle.reads * active.seconds) / total, transactions: (active.transactions - idle.transactions * active.seconds) / total };
  const cores = { api: active.cpu.api / busySeconds, clients: active.cpu.clients / busySeconds };
  return { streams: count, events: total, frames, missing, latency: summarize(latencies), idle, perEvent, cores };
}

const rows: Row[] = [];
for (const count of [opts.baseline, opts.streams]) rows.push(await run(count));

const two = (x: number) => x.toFixed(2);
printTable(
  ['streams', 'events', 'frames received', 'missing', 'delivery p50', 'delivery p99', 'stream reads/s idle', 'transactions/s idle', 'stream reads per event', 'transactions per event', 'API CPU (cores)', 'clients CPU (cores)'],
  rows.map((r) => [r.streams, r.events, r.frames, r.missing, ms(r.latency.p50), ms(r.latency.p99), two(r.idle.reads), two(r.idle.transactions), two(r.perEvent.reads), two(r.perEvent.transactions), two(r.cores.api), two(r.cores.clients)]),
);
const [low, high] = rows as [Row, Row];
const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : 'n/a');
console.log(
  `ratios (${high.streams} streams / ${low.streams}): delivery p50 ${ratio(high.latency.p50, low.latency.p50)}, p99 ${ratio(high.latency.p99, low.latency.p99)}; ` +
    `per event appended, stream reads ${ratio(high.perEvent.reads, low.perEvent.reads)}, transactions ${ratio(high.perEvent.transactions, low.perEvent.transactions)}`,
);
console.log('delivery: from appendEvents returning (commit acknowledged) to the frame read by its client, over every event on every stream');
console.log("stream reads: the API's agentplane_event_stream_reads_total; transactions: pg_stat_database for the whole API process, less this one's");
console.log('per event: what a span with appends cost over what the same span costs idle, divided by the events appended');
console.log(`before LISTEN/NOTIFY: each stream read every 200 ms, ${low.streams * 5} and ${high.streams * 5} reads/s at these sizes (arithmetic, not measured)`);

await api.stop();
await platform.stop();
