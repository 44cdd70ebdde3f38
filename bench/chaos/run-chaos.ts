/**
 * The chaos run: many sessions on the scripted runtime, each with a tool call a person must approve, while the
 * worker process is SIGKILLed and restarted again and again, the API process is killed and restarted, and Postgres
 * is restarted. Then it checks that nothing was lost and nothing happened twice:
 *
 * - every session was created once (a retried create carries the same Idempotency-Key) and finished its turn;
 * - each session's event log is gapless (seq 1..N), has no duplicate event id or source id, and is exactly the
 *   expected sequence of event types (so no event is missing and none is repeated);
 * - each session has one ledger row per model call that reported usage, and its cost is the sum of its ledger rows;
 * - the runtime sent each session's prompt exactly once (the scripted runtime logs every prompt it sends to a file
 *   that outlives the worker processes: AGENTPLANE_SCRIPTED_PROMPT_LOG);
 * - no session lost its history: some kills are host losses (the worker and every process it started get SIGKILL, its
 *   data dir is deleted, and its replacement runs on a new one), and OpenCode sessions with two turns each run through
 *   them; the scripted model's first request of each one's second turn must carry its first turn.
 *
 * It also measures recovery after each worker kill (definitions in `RecoveryReport`). Timings are reported, never
 * asserted: the invariants are the result.
 *
 * The driver talks to the API over HTTP only (plus read-only SQL at the end for the ledger and source ids), and
 * retries every request that fails while the API or Postgres is down.
 */
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'drizzle-orm';
import { openDatabase, rowsOf, type Database } from '../../db/client';
import { createApiKey, createTeam } from '../../db/queries/teams';
import { generateMasterKeySpec } from '../../db/vault';
import { findFreePort } from '../../scripts/temporal-dev-server';
import { killHostProcesses } from '../../test/support/host-kill';
import { startPrivatePostgres, type PrivatePostgres } from '../../test/support/private-postgres';
import { startScriptedModel, type ScriptedModel } from '../../test/support/scripted-model';
import { spawnApi, spawnWorker, type PlatformTarget, type ServiceProcess } from '../../test/support/worker-process';
import { summarize, type Summary } from '../support';

export interface ChaosOptions {
  temporalAddress: string;
  sessions: number;
  /** worker SIGKILLs, one every `killEveryMs` after the previous replacement is up */
  kills: number;
  killEveryMs: number;
  apiRestarts: number;
  pgRestarts: number;
  /** of the kills, how many are host losses (every process of the worker's host killed, its data dir deleted) */
  hostLosses?: number;
  /** OpenCode sessions (two turns each, on the scripted model) that run through the faults: their history is checked */
  portableSessions?: number;
  /** how long the sessions may take to finish after the last fault */
  settleTimeoutMs?: number;
  /** `immediate` is a crash (no checkpoint); `fast` a clean shutdown that cuts every connection */
  pgRestartMode?: 'fast' | 'immediate';
  log?: (line: string) => void;
}

export interface RecoveryReport {
  /**
   * Per kill: from the SIGKILL to the first event any session appended after it (the dead worker cannot append, so
   * this is the replacement worker's first write: process start, Temporal handing it work, one database write).
   */
  fleet: Summary;
  /**
   * Per session in flight at a kill (its last event before the kill was not an idle/terminated status, i.e. a turn
   * was running): from the SIGKILL to that session's next event. This includes Temporal noticing the lost turn
   * (the activity heartbeat timeout, 10 s) and the step that was running when the worker died.
   */
  inFlight: Summary;
  /** of those (session, kill) pairs, how many had their next event before the following kill */
  inFlightBeforeNextKill: { recovered: number; of: number };
  /** from the SIGKILL to the replacement worker polling (`worker started`) */
  workerRestart: Summary;
}

export interface ChaosReport {
  options: Omit<ChaosOptions, 'log'>;
  durationMs: number;
  faults: { workerKills: number; hostLosses: number; apiRestarts: number; pgRestarts: number };
  /** the OpenCode sessions: how many finished both turns with their first turn in the second's model request */
  portable: { requested: number; completed: number };
  sessions: { requested: number; created: number; completed: number };
  /** requests the driver had to retry (API or Postgres down) */
  retriedRequests: number;
  /** tool confirmations whose retry found the call already decided (the first attempt got through) */
  confirmationsAlreadyDecided: number;
  events: number;
  ledgerRows: number;
  recovery: RecoveryReport;
  /** every broken invariant, one line each; empty when the run is clean */
  violations: string[];
}

/** the event types of one session, in order: the turn, the approval, the rest of the turn */
export const EXPECTED_TYPES = [
  'user.message',
  'session.status_running',
  'agent.message',
  'span.model_request_end',
  'agent.tool_use',
  'session.status_idle',
  'user.tool_confirmation',
  'session.status_running',
  'agent.tool_result',
  'agent.message',
  'span.model_request_end',
  'session.status_idle',
];
/** model calls per session that report usage (the `tokens` and `cost` steps) */
const USAGE_CALLS = 2;

const POLICY = { rules: [{ tool: 'write', action: 'ask' }], default: 'allow' };

/** The scripted runtime's message: a pause before and after the approval so kills land mid-turn. */
function promptFor(runId: string, i: number): string {
  return [`say chaos ${runId} session ${i} started`, 'tokens 100 20', 'sleep 400', `tool write /tmp/chaos-${runId}-${i}.txt`, 'sleep 400', `say chaos ${runId} session ${i} done`, 'cost 0.001'].join('\n');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface HttpResult {
  status: number;
  body: any;
}

/** The API over HTTP; a request that fails because the API or its database is down is tried again until `deadline`. */
function createClient(baseUrl: () => string, key: string, counters: { retried: number }, givenUp: () => string | null) {
  return async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}, timeoutMs = 120_000): Promise<HttpResult> {
    const deadline = Date.now() + timeoutMs;
    for (let attempt = 0; ; attempt++) {
      let outcome: HttpResult | Error;
      try {
        const res = await fetch(`${baseUrl()}${path}`, {
          method,
          headers: { authorization: `Bearer ${key}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(30_000),
        });
        const text = await res.text();
        let parsed: unknown = text;
        try {
          parsed = JSON.parse(text);
        } catch {
          // not JSON: keep the text
        }
        outcome = { status: res.status, body: parsed };
      } catch (err) {
        outcome = err as Error;
      }
      // 5xx: the API is up but Postgres or Temporal is not (yet); a network error: the API is down
      const retry = outcome instanceof Error || outcome.status >= 500;
      if (!retry) return outcome as HttpResult;
      const reason = givenUp();
      if (reason) throw new Error(`${method} ${path}: run given up (${reason})`);
      if (Date.now() > deadline) {
        throw new Error(`${method} ${path} kept failing: ${outcome instanceof Error ? outcome.message : `${outcome.status} ${JSON.stringify(outcome.body)}`}`);
      }
      counters.retried++;
      await sleep(Math.min(1000, 100 * 2 ** Math.min(attempt, 4)));
    }
  };
}

/** The kill numbers after which `count` faults happen, spread evenly over the fraction [from, to) of `total` kills. */
function slots(count: number, total: number, from: number, to: number): Set<number> {
  const out = new Set<number>();
  for (let j = 0; j < count; j++) out.add(Math.min(total, Math.max(1, Math.round(total * (from + ((to - from) * (j + 0.5)) / count)))));
  return out;
}

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const log = options.log ?? (() => undefined);
  const started = Date.now();
  const runId = Math.random().toString(36).slice(2, 8);
  const violations: string[] = [];
  const counters = { retried: 0 };

  const workDir = await mkdtemp(join(tmpdir(), 'agentplane-chaos-'));
  const promptLog = join(workDir, 'prompts.jsonl');
  await writeFile(promptLog, '');
  let pg: PrivatePostgres | undefined;
  let model: ScriptedModel | undefined;
  let database: Database | undefined;
  let api: ServiceProcess | undefined;
  let worker: ServiceProcess | undefined;
  /** hosts the run has made (each a data dir under workDir/hosts) */
  let hosts = 0;
  /** set when a process died without the run killing it: the run stops waiting and reports */
  let crashed: string | null = null;
  /** processes the run killed or stopped itself */
  const deliberate = new Set<ServiceProcess>();
  try {
    pg = await startPrivatePostgres();
    log(`postgres: private instance on port ${pg.port}`);
    database = await openDatabase({ url: pg.url });
    const team = await createTeam(database.db, { name: 'default' });
    const admin = await createApiKey(database.db, { teamId: team.id, name: 'chaos admin', role: 'admin' });
    const target: PlatformTarget = {
      temporalAddress: options.temporalAddress,
      taskQueue: `chaos-${runId}`,
      databaseUrl: pg.url,
      masterKey: generateMasterKeySpec(),
      dataDir: workDir,
      // the scripted model of the OpenCode sessions listens on loopback
      allowPrivateEgress: ['127.0.0.1/32'],
    };
    const workerEnv = { AGENTPLANE_RUNTIMES: 'scripted,opencode', AGENTPLANE_SCRIPTED_PROMPT_LOG: promptLog, AGENTPLANE_LOG_LEVEL: 'WARN' };
    // each worker runs on a host of its own: a data dir nothing else uses, which a host loss deletes
    const newHost = async () => {
      const dir = join(workDir, 'hosts', String(hosts++));
      await mkdir(dir, { recursive: true });
      // searchable (not listable) by others, as a worker's data dir is: a session's sandbox user must reach its dirs
      for (const d of [workDir, join(workDir, 'hosts'), dir]) await chmod(d, 0o711);
      return dir;
    };
    let hostDir = await newHost();
    const port = await findFreePort();
    // a process that exits when the run did not kill it is a finding: say so, with what it printed last
    const watch = (name: string, proc: ServiceProcess) => {
      proc.child.once('exit', (code, signal) => {
        if (deliberate.has(proc)) return;
        violations.push(`${name} exited on its own (code ${code}, signal ${signal})`);
        crashed ??= `${name} exited on its own`;
        log(`${name} exited on its own (code ${code}, signal ${signal}):\n${proc.output().slice(-4000)}`);
      });
      return proc;
    };
    const startApi = async () => watch('api', await spawnApi(target, port));
    const startWorker = async () => watch('worker', await spawnWorker({ ...target, dataDir: hostDir }, workerEnv));
    const kill = async (proc: ServiceProcess) => {
      deliberate.add(proc);
      await proc.kill();
    };
    [api, worker] = await Promise.all([startApi(), startWorker()]);
    log(`api on 127.0.0.1:${port}, worker on task queue ${target.taskQueue}`);
    const call = createClient(() => `http://127.0.0.1:${port}`, admin.plain, counters, () => crashed);

    const agent = await call('POST', '/v1/agents', { name: `chaos ${runId}`, model: 'scripted', runtime: { type: 'scripted', config: {} }, tool_policy: POLICY });
    if (agent.status !== 200) throw new Error(`agent not created: ${agent.status} ${JSON.stringify(agent.body)}`);

    /**
     * OpenCode sessions on the scripted model, started before the first fault: each sends its second message once its
     * first turn has ended, whatever worker (or host) runs it. `check` reads the model's request log: the first request
     * of each second turn must carry the first turn's prompt and answer.
     */
    async function startPortableSessions(count: number) {
      const none = { settled: () => true, driver: Promise.resolve(), check: async () => 0 };
      if (count === 0) return none;
      model = await startScriptedModel();
      const scripted = model;
      scripted.setScript([{ match: /^chaos portable/, steps: [{ text: (c) => `noted: ${c.prompt}` }] }]);
      const credential = await call('POST', '/v1/credentials', { name: 'chaos model', secret: `sk-chaos-${runId}` });
      await call('PUT', '/v1/pricing/scripted-model', { input: 3, output: 15 });
      const oc = await call('POST', '/v1/agents', { name: `chaos portable ${runId}`, model: 'scripted-model', runtime: { type: 'opencode', config: {} }, model_provider: { base_url: scripted.openaiBaseUrl, credential_id: credential.body.id }, tool_policy: { rules: [], default: 'allow' } });
      if (oc.status !== 200) throw new Error(`opencode agent not created: ${oc.status} ${JSON.stringify(oc.body)}`);
      const turn = (i: number, n: 'one' | 'two') => `chaos portable ${runId} ${i} turn ${n}`;
      const ids = new Map<number, string>();
      for (let i = 0; i < count; i++) {
        const res = await call('POST', '/v1/sessions', { agent: oc.body.id, initial_events: [{ type: 'user.message', content: turn(i, 'one') }] }, { 'idempotency-key': `chaos-portable-${runId}-${i}` }, 300_000);
        if (res.status === 200) ids.set(i, res.body.id);
        else violations.push(`portable session ${i}: create answered ${res.status} ${JSON.stringify(res.body)}`);
      }
      const messages = async (id: string) => {
        const res = await call('GET', `/v1/sessions/${id}/events?limit=1000`).catch(() => null);
        return res?.status === 200 ? (res.body.data as Array<{ type: string; content?: Array<{ text: string }>; stop_reason?: { type: string } }>) : null;
      };
      const sent = new Set<number>();
      const finished = new Set<number>();
      const driver = (async () => {
        while (!stopDriving) {
          for (const [i, id] of ids) {
            if (finished.has(i)) continue;
            const log = await messages(id);
            if (!log) continue;
            const idles = log.filter((e) => e.type === 'session.status_idle').length;
            const users = log.filter((e) => e.type === 'user.message').length;
            // the second message goes once the first turn has ended and a host was lost since (so the second turn runs
            // elsewhere than the first), and once only (checked in the log before a retry)
            const moved = hostLosses > 0 || (options.hostLosses ?? 0) === 0;
            if (idles >= 1 && users === 1 && moved && !sent.has(i)) {
              const res = await call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.message', content: turn(i, 'two') }] }, {}, 1_000).catch(() => null);
              if (res?.status === 200) sent.add(i);
            }
            if (users >= 2 && idles >= 2) finished.add(i);
          }
          await sleep(500);
        }
      })();
      return {
        settled: () => finished.size === ids.size,
        driver,
        async check(out: string[]): Promise<number> {
          let ok = 0;
          for (const [i, id] of ids) {
            const log = (await messages(id)) ?? [];
            const answers = log.filter((e) => e.type === 'agent.message').map((e) => e.content?.[0]?.text);
            const wanted = [`noted: ${turn(i, 'one')}`, `noted: ${turn(i, 'two')}`];
            if (answers.join('|') !== wanted.join('|')) {
              const stops = log.filter((e) => e.type === 'session.status_idle' || e.type === 'session.error').map((e) => JSON.stringify(e.stop_reason ?? e));
              out.push(`portable session ${i}: answers ${JSON.stringify(answers)} (expected ${JSON.stringify(wanted)}); stops: ${stops.join(', ')}`);
              continue;
            }
            if (log.some((e) => e.type === 'session.error')) out.push(`portable session ${i}: a session.error event`);
            const first = scripted.requestsFor(turn(i, 'two'))[0];
            const body = JSON.stringify(first?.body ?? {});
            if (!body.includes(turn(i, 'one')) || !body.includes(`noted: ${turn(i, 'one')}`)) {
              out.push(`portable session ${i}: lost its history (the first request of its second turn does not carry its first)`);
              continue;
            }
            ok++;
          }
          return ok;
        },
      };
    }

    // ---- the load: sessions started at a steady pace over the fault window, approvals answered as they appear
    const prompts = new Map<number, string>();
    const sessionIds = new Map<number, string>();
    const done = new Map<string, { stopReason: string }>();
    let stopDriving = false;
    let hostLosses = 0;
    const portable = await startPortableSessions(options.portableSessions ?? 0);
    // sessions start throughout the faults: session i waits for kill number ⌊i·kills/sessions⌋
    let killsDone = 0;
    const startEveryMs = options.killEveryMs / Math.max(1, options.sessions / Math.max(1, options.kills));
    const creator = (async () => {
      const inflight: Array<Promise<void>> = [];
      for (let i = 0; i < options.sessions; i++) {
        while (killsDone < Math.floor((i * options.kills) / options.sessions)) await sleep(100);
        const prompt = promptFor(runId, i);
        prompts.set(i, prompt);
        inflight.push(
          (async () => {
            // the same key on every retry: a create that got through before the API died is found, not repeated
            const res = await call('POST', '/v1/sessions', { agent: agent.body.id, initial_events: [{ type: 'user.message', content: prompt }] }, { 'idempotency-key': `chaos-${runId}-${i}` }, 300_000).catch((err: Error) => ({ status: 0, body: err.message }));
            if (res.status !== 200) violations.push(`session ${i}: create answered ${res.status} ${JSON.stringify(res.body)}`);
            else sessionIds.set(i, res.body.id);
          })(),
        );
        await sleep(startEveryMs);
      }
      await Promise.all(inflight);
    })();

    const decided = new Set<string>();
    let alreadyDecided = 0;
    const approver = (async () => {
      while (!stopDriving) {
        const pending = await call('GET', '/v1/approvals?limit=1000').catch(() => null);
        const fresh = (pending?.status === 200 ? (pending.body.data as Array<{ session_id: string; tool_use_id: string }>) : []).filter((a) => !decided.has(`${a.session_id}/${a.tool_use_id}`));
        await Promise.all(
          fresh.map(async (a) => {
            const res = await call('POST', `/v1/sessions/${a.session_id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: a.tool_use_id, result: 'allow' }] }, {}, 300_000);
            // a retry after a confirmation that got through finds the call decided: that is the same decision, once
            if (res.status === 409 && res.body?.code === 'approval.not_pending') alreadyDecided++;
            else if (res.status !== 200) violations.push(`approval ${a.tool_use_id}: answered ${res.status} ${JSON.stringify(res.body)}`);
            decided.add(`${a.session_id}/${a.tool_use_id}`);
          }),
        );
        await sleep(250);
      }
    })();

    const watcher = (async () => {
      while (!stopDriving) {
        let page: string | null = null;
        do {
          const res: HttpResult | null = await call('GET', `/v1/sessions?limit=1000${page ? `&page=${page}` : ''}`).catch(() => null);
          if (res?.status !== 200) break;
          for (const s of res.body.data as Array<{ id: string; status: string; stop_reason: { type: string } | null }>) {
            if (s.status === 'idle' && s.stop_reason && s.stop_reason.type !== 'requires_action') done.set(s.id, { stopReason: s.stop_reason.type });
            if (s.status === 'terminated') done.set(s.id, { stopReason: `terminated/${s.stop_reason?.type ?? '?'}` });
          }
          page = res.body.next_page;
        } while (page);
        await sleep(500);
      }
    })();

    // ---- the faults
    const kills: Array<{ at: number; up: number }> = [];
    // API restarts in the first half of the kills, Postgres restarts in the second
    const apiSlots = slots(options.apiRestarts, options.kills, 0, 0.5);
    const hostSlots = slots(options.hostLosses ?? 0, options.kills, 0, 1);
    const pgSlots = slots(options.pgRestarts, options.kills, 0.5, 1);
    let apiRestarts = 0;
    let pgRestarts = 0;
    for (let k = 1; k <= options.kills && !crashed; k++) {
      await sleep(options.killEveryMs);
      const at = Date.now();
      await kill(worker);
      if (hostSlots.has(k) && hostLosses < (options.hostLosses ?? 0)) {
        // the host is gone: every process it ran, and its disk; the replacement is a new host
        killHostProcesses(hostDir);
        await rm(hostDir, { recursive: true, force: true });
        hostDir = await newHost();
        hostLosses++;
        log(`kill ${k}: a host loss (its runtimes killed, its data dir deleted)`);
      }
      worker = await startWorker();
      kills.push({ at, up: Date.now() });
      killsDone = k;
      // the next kill waits for the fleet to move again: a worker killed before it has done anything leaves every
      // session where it was (on a loaded 2-core machine a kill 3 s after the process started did exactly that)
      const progressed = await waitForProgress(database.db, at, 60_000);
      log(`kill ${k}/${options.kills}: worker back after ${kills.at(-1)!.up - at} ms, ${progressed ? `first event ${Math.round(progressed - at)} ms after the kill` : 'no event within 60 s'} (${sessionIds.size} created, ${done.size} finished)`);
      if (apiSlots.has(k) && apiRestarts < options.apiRestarts) {
        const t = Date.now();
        await kill(api);
        api = await startApi();
        apiRestarts++;
        log(`api: SIGKILLed and back after ${Date.now() - t} ms`);
      }
      if (pgSlots.has(k) && pgRestarts < options.pgRestarts) {
        const t = Date.now();
        await pg.restart(options.pgRestartMode ?? 'immediate');
        pgRestarts++;
        log(`postgres: restarted (${options.pgRestartMode ?? 'immediate'}) in ${Date.now() - t} ms`);
      }
    }
    // faults not placed by the slots (more restarts than kills): at the end
    for (; apiRestarts < options.apiRestarts; apiRestarts++) {
      await kill(api);
      api = await startApi();
    }
    for (; pgRestarts < options.pgRestarts; pgRestarts++) await pg.restart(options.pgRestartMode ?? 'immediate');

    // ---- settle: every session created and finished
    await creator;
    const settleDeadline = Date.now() + (options.settleTimeoutMs ?? 180_000);
    while (([...sessionIds.values()].some((id) => !done.has(id)) || !portable.settled()) && Date.now() < settleDeadline && !crashed) await sleep(500);
    stopDriving = true;
    await Promise.all([approver, watcher, portable.driver]);
    const scriptedIds = new Set(sessionIds.values());
    log(`settled: ${[...scriptedIds].filter((id) => done.has(id)).length}/${sessionIds.size} finished`);
    if (crashed) throw new Error(`chaos run stopped: ${violations.join('; ')}`);

    // ---- the invariants
    const db = database.db;
    const created = rowsOf<{ count: number }>(await db.execute(sql`select count(*)::int as count from sessions where team_id = ${team.id} and runtime = 'scripted'`))[0]?.count ?? 0;
    if (created !== options.sessions) violations.push(`${created} sessions in the database for ${options.sessions} creates`);
    const portableCompleted = await portable.check(violations);
    const promptLines = (await readFile(promptLog, 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { messageId: string; text: string });
    const ledgerRows = rowsOf<{ session_id: string; rows: number; micros: number }>(
      await db.execute(sql`select session_id, count(*)::int as rows, sum(amount_micros)::bigint as micros from ledger group by session_id`),
    );
    const ledgerBySession = new Map(ledgerRows.map((r) => [r.session_id, r]));
    const costBySession = new Map(
      rowsOf<{ id: string; cost_micros: number }>(await db.execute(sql`select id, cost_micros from sessions where team_id = ${team.id}`)).map((r) => [r.id, Number(r.cost_micros)]),
    );
    const dupSources = rowsOf<{ n: number }>(await db.execute(sql`select count(*)::int as n from (select session_id, source_id from session_events group by 1, 2 having count(*) > 1) d`));
    if ((dupSources[0]?.n ?? 0) > 0) violations.push(`${dupSources[0]!.n} (session, source id) pairs appear twice in the event log`);

    let events = 0;
    const eventTimes = new Map<string, Array<{ type: string; at: number }>>();
    for (const [i, sessionId] of sessionIds) {
      const stop = done.get(sessionId);
      if (!stop) {
        violations.push(`session ${i} (${sessionId}): did not finish`);
      } else if (stop.stopReason !== 'end_turn') {
        violations.push(`session ${i} (${sessionId}): stopped with ${stop.stopReason}, not end_turn`);
      }
      const res = await call('GET', `/v1/sessions/${sessionId}/events?limit=1000`);
      const log = res.body.data as Array<{ id: string; seq: number; type: string; evaluated_permission?: string; is_error?: boolean; created_at?: string }>;
      events += log.length;
      const seqs = log.map((e) => e.seq);
      if (seqs.some((s, n) => s !== n + 1)) violations.push(`session ${i}: seq not gapless 1..${log.length}: ${seqs.join(',')}`);
      if (new Set(log.map((e) => e.id)).size !== log.length) violations.push(`session ${i}: duplicate event ids`);
      const types = log.map((e) => e.type);
      if (types.join() !== EXPECTED_TYPES.join()) violations.push(`session ${i}: events ${types.join(',')} (expected ${EXPECTED_TYPES.join(',')})`);
      const toolUse = log.find((e) => e.type === 'agent.tool_use');
      if (toolUse && toolUse.evaluated_permission !== 'ask') violations.push(`session ${i}: tool_use evaluated ${toolUse.evaluated_permission}, not ask`);
      const result = log.find((e) => e.type === 'agent.tool_result');
      if (result && result.is_error !== false) violations.push(`session ${i}: the approved tool call failed`);
      const usageEvents = types.filter((t) => t === 'span.model_request_end').length;
      const ledger = ledgerBySession.get(sessionId);
      if ((ledger?.rows ?? 0) !== usageEvents || usageEvents !== USAGE_CALLS) violations.push(`session ${i}: ${ledger?.rows ?? 0} ledger rows for ${usageEvents} model calls with usage (expected ${USAGE_CALLS})`);
      if (Number(ledger?.micros ?? 0) !== costBySession.get(sessionId)) violations.push(`session ${i}: cost ${costBySession.get(sessionId)} µ$ but ledger sum ${ledger?.micros ?? 0} µ$`);
      const sent = promptLines.filter((p) => p.text === prompts.get(i)).length;
      if (sent !== 1) violations.push(`session ${i}: the runtime sent its prompt ${sent} times`);
    }
    const eventRows = rowsOf<{ session_id: string; type: string; at: number }>(
      await db.execute(sql`select session_id, type, (extract(epoch from created_at) * 1000)::float8 as at from session_events order by session_id, seq`),
    );
    for (const r of eventRows) {
      if (!eventTimes.has(r.session_id)) eventTimes.set(r.session_id, []);
      eventTimes.get(r.session_id)!.push({ type: r.type, at: Number(r.at) });
    }

    return {
      options: { temporalAddress: options.temporalAddress, sessions: options.sessions, kills: options.kills, killEveryMs: options.killEveryMs, apiRestarts: options.apiRestarts, pgRestarts: options.pgRestarts, settleTimeoutMs: options.settleTimeoutMs, pgRestartMode: options.pgRestartMode ?? 'immediate' },
      durationMs: Date.now() - started,
      faults: { workerKills: kills.length, hostLosses, apiRestarts, pgRestarts },
      portable: { requested: options.portableSessions ?? 0, completed: portableCompleted },
      sessions: { requested: options.sessions, created, completed: [...sessionIds.values()].filter((id) => done.get(id)?.stopReason === 'end_turn').length },
      retriedRequests: counters.retried,
      confirmationsAlreadyDecided: alreadyDecided,
      events,
      // the scripted sessions' (the OpenCode sessions' charges are checked by their own tests)
      ledgerRows: ledgerRows.filter((r) => scriptedIds.has(r.session_id)).reduce((n, r) => n + r.rows, 0),
      recovery: recoveryTimes(kills, eventTimes),
      violations,
    };
  } finally {
    for (const proc of [worker, api]) if (proc) deliberate.add(proc);
    await worker?.stop();
    await api?.stop();
    for (let h = 0; h < hosts; h++) killHostProcesses(join(workDir, 'hosts', String(h)));
    await model?.close();
    await database?.close().catch(() => undefined);
    await pg?.stop();
    await rm(workDir, { recursive: true, force: true });
  }
}

/** The commit time of the first event appended after `since` (ms), or null if none came within `timeoutMs`. */
async function waitForProgress(db: Database['db'], since: number, timeoutMs: number): Promise<number | null> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const rows = await db
      .execute(sql`select (extract(epoch from min(created_at)) * 1000)::float8 as at from session_events where created_at > to_timestamp(${since / 1000})`)
      .then(rowsOf<{ at: number | null }>, () => []); // Postgres restarting: ask again
    const at = rows[0]?.at;
    if (at !== null && at !== undefined) return Number(at);
    await sleep(200);
  }
  return null;
}

/** Recovery after each kill, from the event log's `created_at` times (see `RecoveryReport`). */
export function recoveryTimes(kills: Array<{ at: number; up: number }>, eventTimes: Map<string, Array<{ type: string; at: number }>>): RecoveryReport {
  const fleet: number[] = [];
  const inFlight: number[] = [];
  const all = [...eventTimes.values()].flat().map((e) => e.at).sort((a, b) => a - b);
  let recovered = 0;
  for (const [k, kill] of kills.entries()) {
    const nextKill = kills[k + 1]?.at ?? Infinity;
    const first = all.find((t) => t > kill.at);
    if (first !== undefined) fleet.push(first - kill.at);
    for (const log of eventTimes.values()) {
      const before = log.filter((e) => e.at <= kill.at);
      const next = log.find((e) => e.at > kill.at);
      const last = before.at(-1);
      if (!last || !next) continue;
      // resting: idle (end of turn or waiting for a person) or ended; anything else means a turn was running
      if (last.type === 'session.status_idle' || last.type === 'session.status_terminated') continue;
      inFlight.push(next.at - kill.at);
      if (next.at < nextKill) recovered++;
    }
  }
  return { fleet: summarize(fleet), inFlight: summarize(inFlight), inFlightBeforeNextKill: { recovered, of: inFlight.length }, workerRestart: summarize(kills.map((k) => k.up - k.at)) };
}
