/**
 * What the session sandbox (runtimes/kit/sandbox/) adds to starting a process: a spawn of `true`, and a tool-call-sized
 * command (`sh -c 'echo hi'`, output read), each in a bubblewrap sandbox and unsandboxed (execa, the same options the
 * sandbox's own launch uses), in the same run; the ratio is the figure that travels between machines. Also: the same
 * command when the sandbox has its two bridges (egress proxy and model bridge exposed: two socat listeners started and
 * waited for before the command), the `none` provider (prlimit only), and preparing a session's sandbox.
 *
 *   npx tsx bench/sandbox.ts [--iterations 100]
 *
 * Where it matters: a runtime server starts once per session (the first turn pays one sandboxed spawn plus the
 * bridges); tools that a runtime server runs are its children, inside the same sandbox, and pay nothing more; only a
 * runtime whose tools run in the worker (DeepAgents) pays a sandboxed spawn per tool call. Targets from issue 12:
 * ≤ 20 ms added to a tool call, ≤ 300 ms to a session's first turn (the latter is measured once runtimes run inside).
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { execa } from 'execa';
import { createBubblewrapProvider } from '../runtimes/kit/sandbox/bubblewrap';
import { createNoneProvider } from '../runtimes/kit/sandbox/none';
import type { Sandbox } from '../runtimes/kit/sandbox/provider';
import { flags, ms, printMachine, printTable, summarize } from './support';

const opts = flags({ iterations: 100 });
printMachine(`sandboxed spawn (${opts.iterations} rounds, each row once per round in turn, after 5 warm-up rounds; uid ${process.getuid?.()})`);

const quiet = { info() {}, warn() {} };
const root = mkdtempSync(join(tmpdir(), 'agentplane-bench-sandbox-'));
chmodSync(root, 0o711);
const dirs = (id: string) => ({ sessionId: id, workspace: join(root, id, 'workspace'), state: join(root, id, 'state'), run: join(root, id, 'run') });

/** Runs every row once per round, in turn, so that a change in the machine's load falls on all rows alike. */
async function timeRounds(rows: Array<[string, () => Promise<unknown>]>): Promise<Array<ReturnType<typeof summarize>>> {
  for (let i = 0; i < 5; i++) for (const [, run] of rows) await run();
  const samples: number[][] = rows.map(() => []);
  for (let i = 0; i < opts.iterations; i++) {
    for (const [j, [, run]] of rows.entries()) {
      const started = performance.now();
      await run();
      samples[j]!.push(performance.now() - started);
    }
  }
  return samples.map(summarize);
}

async function checked(sandbox: Sandbox, command: string, args: string[]): Promise<void> {
  const exit = await sandbox.spawn(command, args, { capture: true }).exited;
  if (exit.exitCode !== 0) throw new Error(`${command} failed in the sandbox: ${exit.tail}`);
}

const bubblewrap = createBubblewrapProvider({ logger: quiet });
const none = createNoneProvider({ logger: quiet });
const plain = await bubblewrap.prepare(dirs('sesn_bench_plain'));
const bridged = await bubblewrap.prepare(dirs('sesn_bench_bridged'));
const servers = [createServer((s) => s.end()), createServer((s) => s.end())];
await bridged.expose('egress', servers[0]!);
await bridged.expose('model', servers[1]!);
const unisolated = await none.prepare(dirs('sesn_bench_none'));

// the baseline: what the worker pays today for a child process, with the options the sandbox's launch uses
const execaTrue = () => execa('true', [], { cwd: root, extendEnv: false, env: { PATH: '/usr/bin:/bin' }, detached: true, reject: false });
const execaEcho = () => execa('sh', ['-c', 'echo hi'], { cwd: root, extendEnv: false, env: { PATH: '/usr/bin:/bin' }, detached: true, reject: false });

const rows: Array<[string, () => Promise<unknown>]> = [
  ['`true`, unsandboxed (execa)', execaTrue],
  ['`true`, bubblewrap', () => checked(plain, 'true', [])],
  ['`sh -c \'echo hi\'`, unsandboxed (execa)', execaEcho],
  ['`sh -c \'echo hi\'`, bubblewrap', () => checked(plain, 'sh', ['-c', 'echo hi'])],
  ['`sh -c \'echo hi\'`, bubblewrap with 2 bridges', () => checked(bridged, 'sh', ['-c', 'echo hi'])],
  ['`sh -c \'echo hi\'`, none provider (prlimit only)', () => checked(unisolated, 'sh', ['-c', 'echo hi'])],
];
const results = (await timeRounds(rows)).map((s, i) => ({ what: rows[i]![0], s }));

const baseline = (what: string) => results.find((r) => r.what.startsWith(what) && r.what.includes('unsandboxed'))!.s;
printTable(
  ['command', 'p50', 'p99', 'mean', 'added to p50', 'ratio (p50)'],
  results.map(({ what, s }) => {
    const base = baseline(what.startsWith('`true`') ? '`true`' : '`sh');
    return [what, ms(s.p50), ms(s.p99), ms(s.mean), ms(s.p50 - base.p50), `${(s.p50 / base.p50).toFixed(1)}×`];
  }),
);

let n = 0;
const [prepare] = await timeRounds([
  [
    'prepare',
    async () => {
      const sandbox = await bubblewrap.prepare(dirs(`sesn_bench_prepare_${n++}`));
      await sandbox.teardown();
    },
  ],
]);
console.log(`\nprepare + teardown of a session's sandbox (directories, ownership, checks): p50 ${ms(prepare!.p50)}, p99 ${ms(prepare!.p99)}`);

for (const sandbox of [plain, bridged, unisolated]) await sandbox.teardown();
for (const server of servers) server.close();
rmSync(root, { recursive: true, force: true });
