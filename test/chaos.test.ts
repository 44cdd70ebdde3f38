/**
 * The short chaos run (the full one is `npx tsx bench/chaos.ts`, see docs/reliability.md): 20 sessions with an
 * approval each while the worker process is SIGKILLed 3 times (once with its whole host: every process it started, and
 * its data dir), the API process is SIGKILLed and restarted, and a private Postgres is restarted; two OpenCode sessions
 * of two turns each run through it. It asserts correctness only: every session finished its turn, no event lost or
 * doubled, no charge lost or doubled, each prompt sent once, and no OpenCode session lost its history. Timings are printed by the CLI, never asserted here.
 */
import { describe, expect, it } from 'vitest';
import { inject } from 'vitest';
import { EXPECTED_TYPES, runChaos } from '../bench/chaos/run-chaos';

describe('chaos run (short)', () => {
  it('finishes every session exactly once through worker SIGKILLs (one a host loss), an API SIGKILL and a Postgres restart; no OpenCode session loses its history', { timeout: 420_000 }, async () => {
    const report = await runChaos({
      temporalAddress: inject('temporalAddress'),
      sessions: 20,
      kills: 3,
      killEveryMs: 2000,
      apiRestarts: 1,
      pgRestarts: 1,
      hostLosses: 1,
      portableSessions: 2,
      settleTimeoutMs: 180_000,
      log: (line) => console.error(`[chaos] ${line}`),
    });
    expect(report.violations).toEqual([]);
    expect(report.faults).toEqual({ workerKills: 3, hostLosses: 1, apiRestarts: 1, pgRestarts: 1 });
    expect(report.portable).toEqual({ requested: 2, completed: 2 });
    expect(report.sessions).toEqual({ requested: 20, created: 20, completed: 20 });
    expect(report.events).toBe(20 * EXPECTED_TYPES.length);
    expect(report.ledgerRows).toBe(20 * 2);
  });
});
