/**
 * What every benchmark shares: the real platform on this machine (a Temporal dev server started here, a fresh
 * Postgres database, the API on a random port, a worker), flags, and how figures are printed.
 *
 * Benchmarks print figures; they never assert timings. Each one measures a baseline in the same process against
 * the same servers, so the ratio it prints is comparable across machines even when the milliseconds are not.
 */
import { execFileSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { startTemporalDevServer, type TemporalDevServer } from '../scripts/temporal-dev-server';
import { newId } from '../db/ids';
import type { Db } from '../db/client';
import { sessions } from '../db/schema/index';
import { startStack, type Stack } from '../test/support/stack';
import type { RuntimeRegistry } from '../runtimes/runtime-adapter';

export interface BenchPlatform {
  temporal: TemporalDevServer;
  stack: Stack;
  stop(): Promise<void>;
}

/** Postgres from DATABASE_URL, else the local Debian cluster (scripts/ensure-postgres.sh), as the tests do. */
export function ensureDatabaseUrl(): void {
  if (process.env.DATABASE_URL) return;
  const out = execFileSync('bash', ['scripts/ensure-postgres.sh'], { stdio: ['ignore', 'pipe', 'inherit'] }).toString().trim();
  process.env.DATABASE_URL = out.split('\n').at(-1);
}

/**
 * `worker: false`: no in-process worker (the API alone, or a benchmark that runs its worker as its own process).
 * `allowPrivateEgress`: what the stack lets agents reach on private addresses (the scripted model on 127.0.0.1).
 */
export async function startPlatform(runtimes: RuntimeRegistry, opts: { worker?: boolean; allowPrivateEgress?: readonly string[] } = {}): Promise<BenchPlatform> {
  ensureDatabaseUrl();
  const temporal = await startTemporalDevServer();
  const stack = await startStack({ temporalAddress: temporal.address, runtimes, worker: opts.worker, allowPrivateEgress: opts.allowPrivateEgress });
  return {
    temporal,
    stack,
    async stop() {
      await stack.stop();
      await temporal.stop();
    },
  };
}

/** `--name value` flags with numeric defaults: `flags({ turns: 50 })`. */
export function flags<T extends Record<string, number>>(defaults: T): T {
  const { values } = parseArgs({ options: Object.fromEntries(Object.keys(defaults).map((k) => [k, { type: 'string' as const }])), strict: true });
  const out = { ...defaults };
  for (const [k, v] of Object.entries(values)) {
    const n = Number(v);
    if (!Number.isFinite(n) || n < 0) throw new Error(`--${k} must be a number ≥ 0 (0 skips what it counts, where a benchmark says so), got ${String(v)}`);
    (out as Record<string, number>)[k] = n;
  }
  return out;
}

export interface Summary {
  n: number;
  p50: number;
  p99: number;
  mean: number;
}

export function summarize(samples: number[]): Summary {
  const sorted = [...samples].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? NaN;
  return { n: sorted.length, p50: at(0.5), p99: at(0.99), mean: sorted.reduce((a, b) => a + b, 0) / (sorted.length || 1) };
}

export const ms = (x: number) => `${x.toFixed(2)} ms`;

/** One header line naming the machine, so a figure is never read without its context. */
export function printMachine(title: string): void {
  console.log(`# ${title}`);
  console.log(`machine: ${cpus().length} cores (${cpus()[0]?.model ?? 'unknown'}), ${(totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}`);
}

export function printTable(header: string[], rows: Array<Array<string | number>>): void {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  console.log(line(header));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const r of cells.slice(1)) console.log(line(r));
}

const SEED_STATUSES = ['idle', 'running', 'requires_action', 'terminated'] as const;

/**
 * Inserts `count` session rows straight into the index, 4,000 to a statement (15 parameters a row: under Postgres' 65,535): rows as `POST /v1/sessions` writes
 * them (time-ordered ids, every NOT NULL column), spread over 20 agents, two runtimes and the four statuses, but
 * with no Temporal workflow behind them. For reads of the fleet (the list, one session); nothing signals them.
 */
export async function seedSessions(db: Db, opts: { teamId: string; count: number }): Promise<string[]> {
  const ids: string[] = [];
  for (let start = 0; start < opts.count; start += 4000) {
    const rows = Array.from({ length: Math.min(4000, opts.count - start) }, (_, j) => {
      const i = start + j;
      const id = newId('sesn');
      ids.push(id);
      return {
        id,
        teamId: opts.teamId,
        agentId: `agent_seed${i % 20}`,
        agentVersion: 1,
        runtime: i % 3 === 0 ? 'opencode' : 'scripted',
        title: `seeded ${i}`,
        metadata: { seeded: 'true' },
        status: SEED_STATUSES[i % 4]!,
        initiatorKeyId: 'key_seed',
        trigger: 'api',
        budget: {},
        inputTokens: i % 1000,
        outputTokens: i % 100,
        costMicros: i * 10,
      };
    });
    await db.insert(sessions).values(rows);
  }
  return ids;
}

/** CPU seconds (user + system) that process `pid` has used so far, from /proc (Linux; 100 ticks a second). 0 once it is gone. */
export function cpuSecondsOf(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the fields after the command's closing parenthesis start at the third (state); utime and stime are the 14th and 15th
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/** The pids of every process whose command name is `comm` (e.g. every Postgres backend: `postgres`). */
export function pidsNamed(comm: string): number[] {
  return readdirSync('/proc')
    .filter((entry) => /^\d+$/.test(entry))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/comm`, 'utf8').trim() === comm;
      } catch {
        return false;
      }
    })
    .map(Number);
}
