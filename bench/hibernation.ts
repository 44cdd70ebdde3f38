/**
 * Hibernation (AGENTPLANE_HIBERNATE_SECONDS): what an idle session costs a worker host, and what its next message pays.
 *
 *   npx tsx bench/hibernation.ts [--turns 5] [--sessions 40] [--live 8] [--concurrency 4]
 *
 * Real worker processes (worker/main.ts), each on a data dir of its own, real OpenCode servers in their sandboxes, the
 * scripted model, a Temporal dev server started here and Postgres from DATABASE_URL.
 *
 * 1. Turn latency, one session: from posting a message to its `session.status_idle`, with the runtime live (warm: the
 *    message follows the last turn at once) and after the session hibernated (its OpenCode server stopped; the message
 *    starts it again on the files it left). Medians of `--turns` each, alternated.
 * 2. Memory: `--sessions` sessions of one turn each on one worker, then idle. With hibernation on (2 s) every runtime
 *    is stopped; the baseline is `--live` sessions with hibernation off (AGENTPLANE_HIBERNATE_SECONDS=0), on a fresh
 *    worker (fewer: each keeps an OpenCode server of several hundred MiB, and the machine has 24 GiB). What is counted: the worker process and every process of its host (test/support/host-kill.ts: the ones
 *    that name its data dir or mount it: OpenCode servers, sandboxes, bridges, the gateway daemon). RSS double-counts
 *    pages processes share; PSS (/proc/PID/smaps_rollup) splits them. Per session: the growth over the worker alone
 *    (measured before the first session) divided by the sessions. The figure for 1,000 is that slope times 1,000 plus
 *    the worker alone: a projection, not a run of 1,000.
 */
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { stopOpenCodeServers } from '../runtimes/opencode/opencode.adapter';
import { hostProcesses, killHostProcesses } from '../test/support/host-kill';
import { scriptedAgent } from '../test/support/scripted-agent';
import { startScriptedModel } from '../test/support/scripted-model';
import { eventsOf, eventually, LOCAL_RECEIVERS, waitForStatus } from '../test/support/stack';
import { spawnWorker, type WorkerProcess } from '../test/support/worker-process';
import { flags, printMachine, printTable, startPlatform } from './support';

const opts = flags({ turns: 5, sessions: 40, live: 8, concurrency: 4 });
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;

printMachine('hibernation: the next message after an idle runtime was stopped, and the memory of idle sessions');
const platform = await startPlatform({}, { worker: false, allowPrivateEgress: LOCAL_RECEIVERS });
const { stack } = platform;
const model = await startScriptedModel();
model.setScript([{ match: /^bench /, steps: [{ text: 'ok' }] }]);
const agent = await scriptedAgent(stack, model, { runtime: 'opencode', name: 'hibernation bench', secret: 'sk-bench-hibernation', toolPolicy: { rules: [], default: 'allow' } });
const hosts = await mkdtemp(join(tmpdir(), 'agentplane-bench-hibernation-'));
// searchable by the sandboxes' users, as a data dir's parent must be
await chmod(hosts, 0o711);
const started: Array<{ worker: WorkerProcess; dataDir: string }> = [];

async function worker(name: string, hibernateSeconds: number) {
  const dataDir = join(hosts, name);
  const w = await spawnWorker({ ...stack, dataDir }, { AGENTPLANE_RUNTIMES: 'opencode', AGENTPLANE_HIBERNATE_SECONDS: String(hibernateSeconds) });
  started.push({ worker: w, dataDir });
  return { w, dataDir };
}

const idleCount = async (id: string) => (await eventsOf(stack, id)).filter((e) => e.type === 'session.status_idle').length;

/** Posts a message and answers the milliseconds until the session is idle again. */
async function turn(id: string, text: string): Promise<number> {
  const before = await idleCount(id);
  const t0 = performance.now();
  const res = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: text }] });
  if (res.status !== 200) throw new Error(`message refused: ${res.status} ${JSON.stringify(res.body)}`);
  await eventually(async () => ((await idleCount(id)) > before ? true : undefined), { timeoutMs: 120_000, intervalMs: 20, what: 'the turn to end' });
  return performance.now() - t0;
}

async function startSession(text: string): Promise<string> {
  const res = await stack.call('POST', '/v1/sessions', { agent, initial_events: [{ type: 'user.message', content: text }] });
  if (res.status !== 200) throw new Error(`session refused: ${res.status}`);
  await waitForStatus(stack, res.body.id, 'idle', 'end_turn', 180_000);
  return res.body.id as string;
}

const hibernations = (w: WorkerProcess) => w.output().split('session hibernated').length - 1;

/** RSS and PSS of the worker and every process of its host, in bytes. */
async function memoryOf(w: WorkerProcess, dataDir: string): Promise<{ rss: number; pss: number; processes: number }> {
  const pids = [w.child.pid as number, ...hostProcesses(dataDir)];
  let rss = 0;
  let pss = 0;
  for (const pid of new Set(pids)) {
    const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8').catch(() => '');
    rss += Number(/^Rss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0) * 1024;
    pss += Number(/^Pss:\s+(\d+) kB/m.exec(rollup)?.[1] ?? 0) * 1024;
  }
  return { rss, pss, processes: new Set(pids).size };
}

try {
  // 1. latency
  const { w } = await worker('latency', 2);
  const id = await startSession('bench first');
  const warm: number[] = [];
  const woken: number[] = [];
  for (let i = 0; i < opts.turns; i++) {
    warm.push(await turn(id, `bench warm ${i}`));
    const slept = hibernations(w);
    await eventually(async () => (hibernations(w) > slept ? true : undefined), { timeoutMs: 30_000, what: 'the session to hibernate' });
    woken.push(await turn(id, `bench woken ${i}`));
  }
  console.log(`\nturn latency, one OpenCode session, median of ${opts.turns}:`);
  printTable(
    ['runtime', 'p50', 'added by hibernation', 'ratio'],
    [
      ['live (warm)', `${median(warm).toFixed(0)} ms`, '', '1.00×'],
      ['hibernated, started again', `${median(woken).toFixed(0)} ms`, `+${(median(woken) - median(warm)).toFixed(0)} ms`, `${(median(woken) / median(warm)).toFixed(2)}×`],
    ],
  );
  await w.stop();

  // 2. memory, with hibernation on and off
  const rows: Array<Array<string | number>> = [];
  for (const [name, seconds, count] of [
    ['on (2 s)', 2, opts.sessions],
    ['off', 0, opts.live],
  ] as const) {
    const host = await worker(`memory-${seconds}`, seconds);
    await new Promise((r) => setTimeout(r, 3_000));
    const alone = await memoryOf(host.w, host.dataDir);
    const ids: string[] = [];
    for (let i = 0; i < count; i += opts.concurrency) {
      const batch = Array.from({ length: Math.min(opts.concurrency, count - i) }, (_, k) => startSession(`bench idle ${seconds} ${i + k}`));
      ids.push(...(await Promise.all(batch)));
    }
    if (seconds > 0) await eventually(async () => (hibernations(host.w) >= ids.length ? true : undefined), { timeoutMs: 120_000, what: 'every session to hibernate' });
    await new Promise((r) => setTimeout(r, 3_000));
    const idle = await memoryOf(host.w, host.dataDir);
    const perSession = { rss: (idle.rss - alone.rss) / ids.length, pss: (idle.pss - alone.pss) / ids.length };
    rows.push([name, ids.length, idle.processes, mib(alone.rss), mib(idle.rss), mib(idle.pss), mib(perSession.rss), mib(perSession.pss), mib(alone.pss + perSession.pss * 1000)]);
    await host.w.stop();
    await stopOpenCodeServers(host.dataDir);
    killHostProcesses(host.dataDir);
  }
  console.log(`\nmemory of idle OpenCode sessions on one worker host (worker + every process of its host):`);
  printTable(['hibernation', 'sessions', 'processes', 'worker alone (RSS)', 'idle (RSS)', 'idle (PSS)', 'per session (RSS)', 'per session (PSS)', '1,000 sessions, projected (PSS)'], rows);
} catch (err) {
  for (const { worker: w } of started) console.error(w.output().slice(-3000));
  throw err;
} finally {
  for (const { worker: w, dataDir } of started) {
    await w.stop().catch(() => undefined);
    await stopOpenCodeServers(dataDir).catch(() => 0);
    killHostProcesses(dataDir);
  }
  await rm(hosts, { recursive: true, force: true });
  await model.close();
  await platform.stop();
}
