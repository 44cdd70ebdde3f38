/**
 * Hibernation: a session of a `portable: 'snapshot'` runtime whose turn ended holds no process once it has been idle
 * `hibernateAfterMs` on this worker (its runtime is stopped; its files stay, and the next leg starts it again on them).
 * The activities arm it when a turn ends and call it off when a leg starts; the worker arms it at start-up for the idle
 * sessions whose runtime the worker before it left running on this disk (worker/create-worker.ts).
 */
import type { Db } from '../db/client';
import { getRuntimeRef } from '../db/queries/sessions';
import type { AdapterLogger, RuntimeAdapter } from '../runtimes/runtime-adapter';

export interface Hibernation {
  /** the session is idle: its runtime is stopped after the grace period from now, unless a leg starts first */
  later(sessionId: string, adapter: RuntimeAdapter): void;
  /** the session is busy again: its hibernation is called off, or waited for when its runtime is being stopped */
  wake(sessionId: string): Promise<void>;
}

export function createHibernation(deps: { db: Db; hibernateAfterMs?: number; logger?: AdapterLogger }): Hibernation {
  const { db } = deps;
  /**
   * The idle sessions this worker will stop the runtime of, by session id: the timer, and once it has fired, the
   * stopping, which a leg starting meanwhile waits for before it opens the runtime again.
   */
  const pending = new Map<string, { timer: NodeJS.Timeout; stopping: Promise<void> | null }>();

  function later(sessionId: string, adapter: RuntimeAdapter): void {
    const after = deps.hibernateAfterMs ?? 0;
    if (after <= 0) return;
    clearTimeout(pending.get(sessionId)?.timer);
    const entry: { timer: NodeJS.Timeout; stopping: Promise<void> | null } = {
      stopping: null,
      timer: setTimeout(() => {
        entry.stopping = (async () => {
          const stored = await getRuntimeRef(db, sessionId);
          if (!stored) return;
          await adapter.close({ sessionId, runtimeSessionId: stored.runtimeSessionId, state: stored.state as Record<string, unknown> });
          deps.logger?.info('session hibernated: its runtime is stopped until its next message', { sessionId, runtime: adapter.kind, idleMs: after });
        })()
          .catch((err: unknown) => deps.logger?.warn('hibernating a session failed', { sessionId, error: (err as Error).message }))
          .finally(() => {
            if (pending.get(sessionId) === entry) pending.delete(sessionId);
          });
      }, after),
    };
    entry.timer.unref();
    pending.set(sessionId, entry);
  }

  async function wake(sessionId: string): Promise<void> {
    const entry = pending.get(sessionId);
    if (!entry) return;
    clearTimeout(entry.timer);
    pending.delete(sessionId);
    await entry.stopping;
  }

  return { later, wake };
}
