/**
 * The event streams of one API process (`GET /v1/sessions/{id}/events/stream`) share their database work. A stream
 * follows its session, reads the log after its cursor, and then waits for its session's wake-up; while it waits it
 * costs the database nothing.
 *
 * Wake-ups come from the process's LISTEN connection (db/notifications.ts): `appendEvents` notifies `CHANNELS.events`
 * with the session id and its highest seq in the transaction that writes the events, so a stream wakes when they
 * commit. What keeps a stream from ever missing an event:
 * - it follows its session before its first read: an event that read did not see commits later, and is notified later;
 * - one sweep per process reads the head (`event_seq`) of every followed session at once and wakes the streams
 *   behind it: every `safetyReadMs` (a lost notification delays an event by at most that), at once when the LISTEN
 *   connection is made again (whatever was notified while it was down was lost), and every `pollMs` while
 *   notifications are not heard (an app built without them, or the connection is down);
 * - one read per `keyCheckMs` checks every key that holds a stream, and wakes the streams of revoked keys.
 * So the database sees a read per stream only when its session has new events, and otherwise one sweep and one key
 * check per interval, however many streams are open.
 *
 * PGlite (the embedded dev database) fits as it is: the dev process is the only one on it, its `listen` hears that
 * process's own NOTIFY, and db/notifications.ts listens there the same way.
 */
import type { Db } from '../db/client';
import { CHANNELS, type Notifications } from '../db/notifications';
import { eventHeads } from '../db/queries/events';
import { activeKeyIds } from '../db/queries/teams';

export interface EventStreams {
  /** Follows a session for one stream, from before its first read until `close`. */
  follow(params: { teamId: string; keyId: string; sessionId: string }): Follower;
}

export interface Follower {
  /** the highest seq known to be committed in the session's log (0 until one is heard of) */
  readonly head: number;
  /** the stream's key was found revoked: the stream must end */
  readonly revoked: boolean;
  /** Resolves when `head` passes `afterSeq`, the key is found revoked, the follower is closed, or after `timeoutMs`. */
  wait(afterSeq: number, timeoutMs: number): Promise<void>;
  close(): void;
}

export interface EventStreamsOptions {
  db: Db;
  /** the process's LISTEN connection; without it streams are woken by the sweep alone, every `pollMs` */
  notifications?: Notifications;
  /** how often the sweep runs while no notifications are heard */
  pollMs: number;
  /** how often the sweep runs while notifications are heard */
  safetyReadMs: number;
  /** how often the keys holding streams are checked */
  keyCheckMs: number;
  log: (entry: Record<string, unknown>) => void;
}

/** the longest a new LISTEN connection goes unnoticed (the sweep it calls for waits for the next tick) */
const TICK_MS = 100;

interface FollowerState {
  teamId: string;
  keyId: string;
  afterSeq: number;
  revoked: boolean;
  closed: boolean;
  wake: (() => void) | null;
}

interface Followed {
  teamId: string;
  head: number;
  followers: Set<FollowerState>;
}

export function createEventStreams(opts: EventStreamsOptions): EventStreams {
  const sessions = new Map<string, Followed>();
  const followers = new Set<FollowerState>();
  const { notifications } = opts;
  let timer: NodeJS.Timeout | null = null;
  let sweeping = false;
  let sweptAt = 0;
  /** the LISTEN connection's epoch the last sweep started in: a new one means notifications may have been lost */
  let sweptEpoch = -1;
  let checkingKeys = false;
  let keysCheckedAt = 0;

  function advance(sessionId: string, head: number): void {
    const followed = sessions.get(sessionId);
    if (!followed || head <= followed.head) return;
    followed.head = head;
    for (const follower of followed.followers) if (head > follower.afterSeq) follower.wake?.();
  }

  notifications?.on(CHANNELS.events, (payload) => {
    let heard: { session_id?: unknown; seq?: unknown };
    try {
      heard = JSON.parse(payload) as typeof heard;
    } catch {
      return;
    }
    if (typeof heard.session_id === 'string' && typeof heard.seq === 'number') advance(heard.session_id, heard.seq);
  });

  async function sweep(): Promise<void> {
    sweeping = true;
    sweptAt = Date.now();
    // taken before the read: had the connection been made again during it, the next tick sweeps once more
    const epoch = notifications?.epoch ?? -1;
    try {
      const heads = await eventHeads(opts.db, { sessions: [...sessions].map(([sessionId, s]) => ({ teamId: s.teamId, sessionId })) });
      for (const [sessionId, head] of heads) advance(sessionId, head);
      sweptEpoch = epoch;
    } catch (err) {
      // the next tick tries again; streams keep what they have
      opts.log({ level: 'WARN', msg: 'event streams: the sweep of followed sessions failed', error: String(err) });
    } finally {
      sweeping = false;
    }
  }

  async function checkKeys(): Promise<void> {
    checkingKeys = true;
    keysCheckedAt = Date.now();
    try {
      const held = new Map([...followers].map((f) => [f.keyId, { teamId: f.teamId, keyId: f.keyId }]));
      const active = await activeKeyIds(opts.db, { keys: [...held.values()] });
      for (const follower of followers) {
        if (active.has(follower.keyId)) continue;
        follower.revoked = true;
        follower.wake?.();
      }
    } catch (err) {
      opts.log({ level: 'WARN', msg: 'event streams: the check of their keys failed', error: String(err) });
    } finally {
      checkingKeys = false;
    }
  }

  /** Runs only while a stream is open; costs nothing but a look at the clock unless a sweep or a key check is due. */
  function tick(): void {
    const now = Date.now();
    const heard = notifications?.listening === true;
    const due = heard ? notifications.epoch !== sweptEpoch || now - sweptAt >= opts.safetyReadMs : now - sweptAt >= opts.pollMs;
    if (due && !sweeping) void sweep();
    if (now - keysCheckedAt >= opts.keyCheckMs && !checkingKeys) void checkKeys();
  }

  function started(): void {
    if (timer) return;
    // a new stream reads the log itself first: nothing is due until an interval has passed
    sweptAt = keysCheckedAt = Date.now();
    sweptEpoch = notifications?.epoch ?? -1;
    timer = setInterval(tick, Math.min(TICK_MS, opts.pollMs, opts.safetyReadMs, opts.keyCheckMs));
    timer.unref();
  }

  return {
    follow({ teamId, keyId, sessionId }) {
      let followed = sessions.get(sessionId);
      if (!followed) sessions.set(sessionId, (followed = { teamId, head: 0, followers: new Set() }));
      const state: FollowerState = { teamId, keyId, afterSeq: 0, revoked: false, closed: false, wake: null };
      followed.followers.add(state);
      followers.add(state);
      started();
      const session = followed;
      return {
        get head() {
          return session.head;
        },
        get revoked() {
          return state.revoked;
        },
        wait(afterSeq, timeoutMs) {
          if (state.closed || state.revoked || session.head > afterSeq) return Promise.resolve();
          return new Promise<void>((resolve) => {
            const timeout = setTimeout(() => state.wake?.(), Math.max(0, timeoutMs));
            state.afterSeq = afterSeq;
            state.wake = () => {
              clearTimeout(timeout);
              state.wake = null;
              resolve();
            };
          });
        },
        close() {
          if (state.closed) return;
          state.closed = true;
          state.wake?.();
          session.followers.delete(state);
          followers.delete(state);
          if (session.followers.size === 0) sessions.delete(sessionId);
          if (followers.size === 0 && timer) {
            clearInterval(timer);
            timer = null;
          }
        },
      };
    },
  };
}
