/**
 * Releases budget holds that no turn will settle (db/queries/budgets.ts `releaseOrphanedHolds`), every `everyMs`, for
 * holds older than `maxAgeMs`: a worker killed mid-turn on a session that then ended leaves its hold behind, and the
 * team's budget would stay that much smaller for the rest of its period. Each release is an audit row of the system's
 * (`budget.release`). Every worker runs one; releases are idempotent under the reservation's row lock.
 */
import type { Db } from '../db/client';
import { appendAudit } from '../db/queries/audit';
import { releaseOrphanedHolds } from '../db/queries/budgets';
import { microsToUsd } from '../governance/budget';

export interface HoldSweeperOptions {
  db: Db;
  /** how often to look (default 60 s) */
  everyMs?: number;
  /** how old a hold must be (default 15 min: longer than a turn's heartbeat timeout and retries between attempts) */
  maxAgeMs?: number;
  log?(level: 'INFO' | 'WARN', msg: string, fields: Record<string, unknown>): void;
}

export interface HoldSweeper {
  /** one sweep now; answers how many holds it released */
  sweep(): Promise<number>;
  start(): void;
  stop(): void;
}

export function createHoldSweeper(opts: HoldSweeperOptions): HoldSweeper {
  const maxAgeMs = opts.maxAgeMs ?? 15 * 60_000;
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<number> | null = null;

  async function sweep(): Promise<number> {
    const released = await releaseOrphanedHolds(opts.db, {
      olderThan: new Date(Date.now() - maxAgeMs),
      record: (tx, hold) =>
        appendAudit(tx, {
          teamId: hold.teamId,
          actorKeyId: 'system',
          actorRole: 'system',
          action: 'budget.release',
          target: hold.reservationId,
          decision: 'ok',
          reason: `orphaned hold of $${microsToUsd(hold.releasedMicros)} released: its session is not running and its turn never settled it`,
          data: { session_id: hold.sessionId, released_usd: microsToUsd(hold.releasedMicros) },
        }).then(() => undefined),
    });
    for (const hold of released) {
      opts.log?.('INFO', 'orphaned budget hold released', { reservationId: hold.reservationId, sessionId: hold.sessionId, releasedUsd: microsToUsd(hold.releasedMicros) });
    }
    return released.length;
  }

  /** one sweep at a time: a tick while one runs joins it */
  const once = () => (running ??= sweep().finally(() => (running = null)));

  return {
    sweep: once,
    start() {
      timer ??= setInterval(() => {
        once().catch((err: Error) => opts.log?.('WARN', 'budget hold sweep failed', { error: err.message }));
      }, opts.everyMs ?? 60_000);
      timer.unref();
    },
    stop() {
      if (timer) clearInterval(timer);
      timer = null;
    },
  };
}
