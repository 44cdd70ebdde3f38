/**
 * The event streams of one API process (`GET /v1/sessions/{id}/events/stream`) share their database work. A stream
 * follows its session, reads the log after its cursor through its follower, and then waits for its session's
 * wake-up; while it waits it costs the database nothing.
 *
 * Wake-ups come from the process's LISTEN connection (db/notifications.ts): `appendEvents` notifies `CHANNELS.events`
 * with the session id and its highest seq in the transaction that writes the events, so a stream wakes when they
 * commit. Reads are shared: the new events of a session are read once (`listEvents`, the query a stream used to run
 * on its own) and given to every stream of the session in this process. A stream further behind than those rows (a
 * client replaying from an old Last-Event-ID) reads on its own until it has caught up.
 *
 * What keeps a stream from ever missing an event:
 * - it follows its session before its first read: an event that read did not see commits later, and is notified later;
 * - the log of one session commits in seq order (appends serialise on the session row), so a read after seq n that
 *   returns fewer rows than it asked for has everything committed after n when it began;
 * - one sweep per process reads the head (`event_seq`) of every followed session at once and wakes the streams
 *   behind it: every `safetyReadMs` (a lost notification delays an event by at most that), at once when the LISTEN
 *   connection is made again (whatever was notified while it was down was lost), and every `pollMs` while
 *   notifications are not heard (an app built without them, or the connection is down);
 * - one read per `keyCheckMs` checks every key that holds a stream, and wakes the streams of revoked keys.
 * So the database sees one read per followed session per batch of new events, one sweep and one key check per
 * interval, and the reads of streams replaying history: the same for 10 streams of a session as for 1,000.
 *
 * PGlite (the embedded dev database) fits as it is: the dev process is the only one on it, its `listen` hears that
 * process's own NOTIFY, and db/notifications.ts listens there the same way.
 */
import type { Db } from '../db/client';
import { CHANNELS, type Notifications } from '../db/notifications';
import { eventHeads, listEvents, type EventRow } from '../db/queries/events';
import { activeKeyIds } from '../db/queries/teams';
import type { ApiMetrics } from '../observability/metrics';

/** the most events one read returns; a full page means there may be more */
export const EVENT_PAGE = 500;
/** the most rows kept for a session's streams; a stream further behind reads on its own */
const KEPT_ROWS_MAX = 2_000;
/** the longest a new LISTEN connection goes unnoticed (the sweep it calls for waits for the next tick) */
const TICK_MS = 100;

export interface EventStreams {
  /** Follows a session for one stream, from before its first read until `close`; `seq` is the session's head as read. */
  follow(params: { teamId: string; keyId: string; sessionId: string; seq: number }): Follower;
}

export interface Follower {
  /** the session has events this stream has not been given */
  readonly behind: boolean;
  /** the stream's key was found revoked: the stream must end */
  readonly revoked: boolean;
  /** The session's events after `afterSeq`, in order, at most EVENT_PAGE of them (a full page: there may be more). */
  read(afterSeq: number): Promise<EventRow[]>;
  /** Resolves when the stream falls `behind`, its key is found revoked, it is closed, or after `timeoutMs`. */
  wait(timeoutMs: number): Promise<void>;
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
  /** open streams, and the reads made for them by kind */
  metrics: Pick<ApiMetrics, 'eventStreams' | 'eventStreamReads'>;
}

interface FollowerState {
  teamId: string;
  keyId: string;
  /** the seq of the last event it was given (or its Last-Event-ID) */
  cursor: number;
  /** everything up to this seq has been given to it or does not exist: only a head past it wakes it */
  known: number;
  revoked: boolean;
  closed: boolean;
  wake: (() => void) | null;
}

/** Rows (from, to] of a session's log, in order and without gaps (`to` may lie past the last row: nothing is there). */
interface Kept {
  from: number;
  to: number;
  rows: EventRow[];
  /** the read that ended at `to` came back short: nothing more was committed when it began */
  complete: boolean;
}

interface Followed {
  teamId: string;
  sessionId: string;
  /** the highest seq known to be committed */
  head: number;
  followers: Set<FollowerState>;
  kept: Kept | null;
  /** the read of new rows under way, shared by every stream that needs it */
  reading: Promise<void> | null;
}

export function createEventStreams(opts: EventStreamsOptions): EventStreams {
  const sessions = new Map<string, Followed>();
  const followers = new Set<FollowerState>();
  const { db, notifications, metrics } = opts;
  let timer: NodeJS.Timeout | null = null;
  let sweeping = false;
  let sweptAt = 0;
  /** the LISTEN connection's epoch the last sweep started in: a new one means notifications may have been lost */
  let sweptEpoch = -1;
  let checkingKeys = false;
  let keysCheckedAt = 0;
  /** a sweep or key check failed and nothing has worked since: said once in the log, not at every tick */
  let failing = false;

  function failed(what: string, err: unknown): void {
    if (!failing) opts.log({ level: 'WARN', msg: `event streams: ${what} failed; trying again`, error: String(err) });
    failing = true;
  }

  function advance(followed: Followed | undefined, head: number): void {
    if (!followed || head <= followed.head) return;
    followed.head = head;
    for (const follower of followed.followers) if (head > follower.known) follower.wake?.();
  }

  notifications?.on(CHANNELS.events, (payload) => {
    let heard: { session_id?: unknown; seq?: unknown };
    try {
      heard = JSON.parse(payload) as typeof heard;
    } catch {
      return;
    }
    if (typeof heard.session_id === 'string' && typeof heard.seq === 'number') advance(sessions.get(heard.session_id), heard.seq);
  });

  /** Reads the rows after what is kept (or after `after`, when nothing is), once for every stream waiting on them. */
  async function readNew(followed: Followed, after: number): Promise<void> {
    const head = followed.head;
    const start = followed.kept?.to ?? after;
    metrics.eventStreamReads.inc({ kind: 'shared' });
    const rows = await listEvents(db, { sessionId: followed.sessionId, afterSeq: start, limit: EVENT_PAGE, order: 'asc' });
    const kept = followed.kept ?? (followed.kept = { from: start, to: start, rows: [], complete: false });
    kept.rows.push(...rows);
    kept.complete = rows.length < EVENT_PAGE;
    // a short read has everything committed before it began, the head it knew of included
    kept.to = Math.max(rows.at(-1)?.seq ?? start, kept.complete ? head : 0);
    // rows every stream has been given are dropped, and the oldest beyond the cap (a stream that far behind reads on its own)
    let drop = 0;
    const slowest = Math.min(...[...followed.followers].map((f) => f.cursor));
    while (drop < kept.rows.length && (kept.rows[drop]!.seq <= slowest || kept.rows.length - drop > KEPT_ROWS_MAX)) drop++;
    if (drop > 0) {
      kept.from = kept.rows[drop - 1]!.seq;
      kept.rows.splice(0, drop);
    }
  }

  async function sweep(): Promise<void> {
    sweeping = true;
    sweptAt = Date.now();
    // taken before the read: had the connection been made again during it, the next tick sweeps once more
    const epoch = notifications?.epoch ?? -1;
    try {
      metrics.eventStreamReads.inc({ kind: 'sweep' });
      const heads = await eventHeads(db, { sessions: [...sessions.values()].map((s) => ({ teamId: s.teamId, sessionId: s.sessionId })) });
      for (const [sessionId, head] of heads) advance(sessions.get(sessionId), head);
      sweptEpoch = epoch;
      failing = false;
    } catch (err) {
      // the next one due tries again (while no notifications are heard, the next tick); streams keep what they have
      failed('the sweep of followed sessions', err);
    } finally {
      sweeping = false;
    }
  }

  async function checkKeys(): Promise<void> {
    checkingKeys = true;
    keysCheckedAt = Date.now();
    try {
      const held = new Map([...followers].map((f) => [f.keyId, { teamId: f.teamId, keyId: f.keyId }]));
      metrics.eventStreamReads.inc({ kind: 'keys' });
      const active = await activeKeyIds(db, { keys: [...held.values()] });
      for (const follower of followers) {
        if (active.has(follower.keyId)) continue;
        follower.revoked = true;
        follower.wake?.();
      }
      failing = false;
    } catch (err) {
      // tried again in a second, not a whole interval later: a key revoked before the failure must still lose its streams
      keysCheckedAt = Date.now() - opts.keyCheckMs + 1_000;
      failed('the check of the keys holding streams', err);
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
    follow({ teamId, keyId, sessionId, seq }) {
      let followed = sessions.get(sessionId);
      if (!followed) sessions.set(sessionId, (followed = { teamId, sessionId, head: 0, followers: new Set(), kept: null, reading: null }));
      const session = followed;
      advance(session, seq);
      const state: FollowerState = { teamId, keyId, cursor: seq, known: -1, revoked: false, closed: false, wake: null };
      session.followers.add(state);
      followers.add(state);
      metrics.eventStreams.set(followers.size);
      started();

      /** gives the stream what it asked for, and remembers how far that takes it */
      const given = (afterSeq: number, rows: EventRow[], upTo: number): EventRow[] => {
        state.cursor = rows.at(-1)?.seq ?? afterSeq;
        state.known = rows.length === EVENT_PAGE ? state.cursor : Math.max(state.cursor, upTo);
        return rows;
      };

      return {
        get behind() {
          return session.head > state.known;
        },
        get revoked() {
          return state.revoked;
        },
        async read(afterSeq) {
          state.cursor = afterSeq;
          for (;;) {
            const kept = session.kept;
            if (kept && afterSeq < kept.from) {
              // behind what is kept: on its own, as every stream used to read
              const head = session.head;
              metrics.eventStreamReads.inc({ kind: 'own' });
              const rows = await listEvents(db, { sessionId, afterSeq, limit: EVENT_PAGE, order: 'asc' });
              return given(afterSeq, rows, head);
            }
            if (kept) {
              const first = firstAfter(kept.rows, afterSeq);
              const rows = kept.rows.slice(first, first + EVENT_PAGE);
              if (rows.length === EVENT_PAGE || (kept.complete && session.head <= kept.to)) return given(afterSeq, rows, kept.to);
            }
            // nothing kept yet: from this stream's cursor, or from the head as read when it opened if that is lower
            // (a Last-Event-ID past the end must not leave the rows before it unkept)
            session.reading ??= readNew(session, Math.min(afterSeq, seq)).finally(() => (session.reading = null));
            await session.reading;
          }
        },
        wait(timeoutMs) {
          if (state.closed || state.revoked || session.head > state.known) return Promise.resolve();
          return new Promise<void>((resolve) => {
            const timeout = setTimeout(() => state.wake?.(), Math.max(0, timeoutMs));
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
          metrics.eventStreams.set(followers.size);
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

/** The index of the first row whose seq is past `seq` (rows in seq order); `rows.length` when there is none. */
function firstAfter(rows: EventRow[], seq: number): number {
  let lo = 0;
  let hi = rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (rows[mid]!.seq > seq) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}
