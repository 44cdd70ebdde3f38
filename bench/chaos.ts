/**
 * The chaos run (docs/reliability.md): sessions with approvals while the worker is SIGKILLed and restarted, the API
 * killed and restarted and Postgres restarted. Prints what it checked and the recovery times; exits 1 when an
 * invariant is broken (nothing lost, nothing doubled), never because of a timing.
 *
 *   npx tsx bench/chaos.ts                      # 200 sessions, 20 worker kills (5 of them host losses), 1 API
 *                                               # restart, 1 Postgres restart; 5 OpenCode sessions of two turns
 *   npx tsx bench/chaos.ts --sessions 50 --kills 5 --kill-every-ms 2000
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTemporalDevServer } from '../scripts/temporal-dev-server';
import { bundleWorkflows } from '../worker/create-worker';
import { runChaos } from './chaos/run-chaos';
import { flags, printMachine, printTable } from './support';

const opts = flags({ sessions: 200, kills: 20, 'kill-every-ms': 3000, 'api-restarts': 1, 'pg-restarts': 1, 'host-losses': 5, 'portable-sessions': 5, 'settle-timeout-ms': 300_000 });

printMachine('chaos run');
// worker processes start from one prebuilt bundle: a restart takes a second or two, not a bundling
const bundleDir = await mkdtemp(join(tmpdir(), 'agentplane-bundle-'));
const bundlePath = join(bundleDir, 'workflow-bundle.js');
await writeFile(bundlePath, (await bundleWorkflows()).code);
process.env.AGENTPLANE_WORKFLOW_BUNDLE = bundlePath;
const temporal = await startTemporalDevServer();

let failed = true;
try {
  const report = await runChaos({
    temporalAddress: temporal.address,
    sessions: opts.sessions,
    kills: opts.kills,
    killEveryMs: opts['kill-every-ms'],
    apiRestarts: opts['api-restarts'],
    pgRestarts: opts['pg-restarts'],
    hostLosses: opts['host-losses'],
    portableSessions: opts['portable-sessions'],
    settleTimeoutMs: opts['settle-timeout-ms'],
    log: (line) => console.error(`[chaos] ${line}`),
  });
  console.log(`\nrun: ${(report.durationMs / 1000).toFixed(1)} s; faults: ${report.faults.workerKills} worker SIGKILLs (${report.faults.hostLosses} of them host losses), ${report.faults.apiRestarts} API SIGKILL+restart, ${report.faults.pgRestarts} Postgres restart (${report.options.pgRestartMode})`);
  printTable(
    ['sessions requested', 'created', 'completed (end_turn)', 'events', 'ledger rows', 'retried requests', 'confirmations found decided on retry'],
    [[report.sessions.requested, report.sessions.created, report.sessions.completed, report.events, report.ledgerRows, report.retriedRequests, report.confirmationsAlreadyDecided]],
  );
  console.log('\nrecovery after a worker SIGKILL (ms)');
  const r = report.recovery;
  printTable(
    ['measure', 'n', 'p50', 'p99', 'mean'],
    [
      ['kill → replacement worker polling', r.workerRestart.n, r.workerRestart.p50, r.workerRestart.p99, Math.round(r.workerRestart.mean)],
      ['kill → first event of any session', r.fleet.n, r.fleet.p50, r.fleet.p99, Math.round(r.fleet.mean)],
      ['kill → next event of each in-flight session', r.inFlight.n, r.inFlight.p50, r.inFlight.p99, Math.round(r.inFlight.mean)],
    ].map((row) => row.map((c) => (typeof c === 'number' ? Math.round(c) : c))),
  );
  console.log(`in-flight sessions whose next event came before the following kill: ${r.inFlightBeforeNextKill.recovered} of ${r.inFlightBeforeNextKill.of}`);
  if (report.violations.length === 0) {
    console.log('\ninvariants: all held (every session completed; event logs gapless, no duplicates, expected order; ledger = model calls; cost = ledger; each prompt sent once; no OpenCode session lost its history through host losses)');
    failed = false;
  } else {
    console.log(`\ninvariants: ${report.violations.length} BROKEN`);
    for (const v of report.violations.slice(0, 50)) console.log(`- ${v}`);
  }
} finally {
  await temporal.stop();
  await rm(bundleDir, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
