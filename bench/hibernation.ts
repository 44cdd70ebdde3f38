/**
 * Hibernation (AGENTPLANE_HIBERNATE_SECONDS): what an idle session costs a worker host, and what its next message pays.
 *
 *   npx tsx bench/hibernation.ts [--turns 5] [--sessions 40] [--live 8] [--concurrency 4] [--cache 300] [--every 100]
 *   npx tsx bench/hibernation.ts --turns 0 --sessions 1000 --live 0     # 1,000 idle sessions, measured (~40 min)
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
 *    (measured before the first session) divided by the sessions; a session the worker's workflow cache keeps
 *    (`--cache`, AGENTPLANE_WORKER_CACHED_SESSIONS) costs more than one it evicted (replayed on its next message). The
 *    figure for 1,000 is printed only when `--sessions` is 1,000 or more. `--every` prints the host's memory on the
 *    way; `--turns 0` or `--live 0` skips that part.
 */
import { chmod, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { stopOpenCodeServers } from '../runtimes/opencode/opencode.adapter';
import { DEFAULT_CACHED_SESSIONS } from '../worker/create-worker';
import { hostProcesses, killHostProcesses } from '../test/support/host-kill';
import { scriptedAgent } from '../test/support/scripted-agent';
import { startScriptedModel } from '../test/support/scripted-model';
import { eventsOf, eventually, LOCAL_RECEIVERS } from '../test/support/stack';
import { spawnWorker, type WorkerProcess } from '../test/support/worker-process';
import { flags, printMachine, printTable, startPlatform } from './support';

const opts = flags({ turns: 5, sessions: 40, live: 8, concurrency: 4, cache: DEFAULT_CACHED_SESSIONS, every: 100 });
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
  const w = await spawnWorker({ ...stack, dataDir }, { AGENTPLANE_RUNTIMES: 'opencode', AGENTPLANE_HIBERNATE_SECONDS: String(hibernateSeconds), AGENTPLANE_WORKER_CACHED_SESSIONS: String(opts.cache) });
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

/** turns that ended in an error on the way (a loaded machine can fail one); such a session is idle all the same */
const failedTurns: string[] = [];

async function startSession(text: string): Promise<string> {
  const res = await stack.call('POST', '/v1/sessions', { agent, initial_events: [{ type: 'user.message', content: text }] });
  if (res.status !== 200) throw new Error(`session refused: ${res.status}`);
  // generous: a thousand first turns on two cores queue behind each other
  // idle with a stop reason: its first turn ended (a new session is idle, with none, until the turn starts)
  const idle = await eventually(
    async () => {
      const session = await stack.call('GET', `/v1/sessions/${res.body.id}`);
      return session.body.status === 'idle' && session.body.stop_reason ? session.body : undefined;
    },
    { timeoutMs: 600_000, intervalMs: 200, what: `the first turn of ${res.body.id}` },
  );
  if (idle.stop_reason?.type !== 'end_turn') failedTurns.push(`${res.body.id}: ${JSON.stringify(idle.stop_reason)}`);
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
  if (opts.turns > 0) {
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
  }

  // 2. memory, with hibernation on and off
  const rows: Array<Array<string | number>> = [];
  for (const [name, seconds, count] of [
    ['on (2 s)', 2, opts.sessions],
    ['off', 0, opts.live],
  ] as const) {
    if (count === 0) continue;
    const host = await worker(`memory-${seconds}`, seconds);
    await new Promise((r) => setTimeout(r, 3_000));
    const alone = await memoryOf(host.w, host.dataDir);
    const ids: string[] = [];
    const t0 = performance.now();
    for (let i = 0; i < count; i += opts.concurrency) {
      const batch = Array.from({ length: Math.min(opts.concurrency, count - i) }, (_, k) => startSession(`bench idle ${seconds} ${i + k}`));
      ids.push(...(await Promise.all(batch)));
      // on the way: every `--every` sessions, once they have hibernated, what the host holds (a run cut short still tells)
      if (seconds > 0 && ids.length % opts.every < opts.concurrency) {
        await eventually(async () => (hibernations(host.w) >= ids.length - failedTurns.length ? true : undefined), { timeoutMs: 120_000, what: 'the sessions so far to hibernate' }).catch(() => undefined);
        const now = await memoryOf(host.w, host.dataDir);
        console.log(`  ${ids.length} sessions (${((performance.now() - t0) / 1000).toFixed(0)} s): ${now.processes} processes, RSS ${mib(now.rss)}, PSS ${mib(now.pss)}`);
      }
    }
    if (seconds > 0) await eventually(async () => (hibernations(host.w) >= ids.length - failedTurns.length ? true : undefined), { timeoutMs: 120_000, what: 'every session to hibernate' });
    await new Promise((r) => setTimeout(r, 3_000));
    const idle = await memoryOf(host.w, host.dataDir);
    const perSession = { rss: (idle.rss - alone.rss) / ids.length, pss: (idle.pss - alone.pss) / ids.length };
    // 1,000 sessions only when that many ran: a cached session and an evicted one cost different amounts, so one
    // slope does not project (docs/performance.md "Hibernation" separates the two)
    const thousand = ids.length >= 1000 ? `${mib(idle.rss)} / ${mib(idle.pss)}` : '–';
    rows.push([name, ids.length, idle.processes, mib(alone.rss), mib(idle.rss), mib(idle.pss), mib(perSession.rss), mib(perSession.pss), thousand]);
    await host.w.stop();
    await stopOpenCodeServers(host.dataDir);
    killHostProcesses(host.dataDir);
  }
  console.log(`\nmemory of idle OpenCode sessions on one worker host (worker + every process of its host; workflow cache ${opts.cache}):`);
  if (failedTurns.length > 0) console.log(`${failedTurns.length} first turns failed (their sessions are idle and counted):\n  ${failedTurns.slice(0, 10).join('\n  ')}`);
  printTable(['hibernation', 'sessions', 'processes', 'worker alone (RSS)', 'idle (RSS)', 'idle (PSS)', 'per session (RSS)', 'per session (PSS)', '1,000 sessions (RSS / PSS)'], rows);
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
