/**
 * Postgres notifications (LISTEN/NOTIFY) for one process: one connection of its own, outside the pool, carries every
 * channel the process listens on. A writer sends `pg_notify` in the transaction that makes the change, so the
 * notification goes out when (and only if) the change commits.
 *
 * What a cache built on it must know: a notification sent while the connection was down is lost. `epoch` changes
 * whenever the connection is lost or made again, and `listening` is false in between; a cache entry made in one epoch
 * is not trusted in another, and nothing is trusted while not listening. The connection is made again with backoff.
 *
 * PGlite (the embedded dev database) is one process's own database: its `listen` hears the same process's NOTIFY,
 * which is every writer there is.
 */
import type { Database } from './client';

export interface Notifications {
  /** calls `handler` with each notification's payload on `channel`; answers a function that stops it */
  on(channel: string, handler: (payload: string) => void): () => void;
  /** whether notifications are being received now */
  readonly listening: boolean;
  /** changes whenever the connection is lost or made again: what was cached before may have missed a notification */
  readonly epoch: number;
  close(): Promise<void>;
}

/** Channel names: one per kind of change. */
export const CHANNELS = {
  /** a team's policy revision moved (team rules or an agent's policy changed); payload: the team id */
  policy: 'agentplane_policy',
  /** an API key was revoked or its role changed; payload: the key id */
  keys: 'agentplane_keys',
  /** events were appended to a session's log (db/queries/events.ts); payload: `{"session_id": …, "seq": …}`, seq the highest written */
  events: 'agentplane_events',
} as const;

export function listenForNotifications(database: Database, opts: { url?: string; retryMs?: { min: number; max: number } } = {}): Notifications {
  if (database.kind === 'postgres' && !opts.url) throw new Error('listening on Postgres needs its URL');
  const handlers = new Map<string, Set<(payload: string) => void>>();
  const dispatch = (channel: string, payload: string) => {
    for (const handler of handlers.get(channel) ?? []) handler(payload);
  };
  const state = { listening: false, epoch: 0, closed: false };
  const retry = opts.retryMs ?? { min: 250, max: 5_000 };
  let connection: Connection | null = null;
  /** moves at every start over: a connection attempt of an older one gives up */
  let generation = 0;
  let connecting: Promise<void> = Promise.resolve();

  /** Connects, listening on every channel there is, with backoff; `listening` once all are. */
  async function connect(gen: number): Promise<void> {
    let delayMs = retry.min;
    while (!state.closed && gen === generation) {
      const attempt: Connection = database.kind === 'pglite' ? pgliteConnection(database, dispatch) : postgresConnection(opts.url!, dispatch, () => lost(attempt));
      try {
        await attempt.open();
        for (const channel of handlers.keys()) await attempt.listen(channel);
      } catch {
        await attempt.end().catch(() => undefined);
        await new Promise((r) => setTimeout(r, delayMs));
        delayMs = Math.min(retry.max, delayMs * 2);
        continue;
      }
      if (state.closed || gen !== generation) {
        await attempt.end().catch(() => undefined);
        return;
      }
      connection = attempt;
      state.epoch++;
      state.listening = true;
      return;
    }
  }

  /** Starts over: whatever is heard on the old connection may have gaps from now on. */
  function restart(): void {
    generation++;
    state.listening = false;
    state.epoch++;
    const old = connection;
    connection = null;
    void old?.end().catch(() => undefined);
    if (!state.closed) connecting = connect(generation);
  }

  /** the connection was lost (an error, or it ended): only the current one counts */
  function lost(which: Connection): void {
    if (which === connection) restart();
  }

  connecting = connect(generation);

  return {
    on(channel, handler) {
      let set = handlers.get(channel);
      if (!set) {
        handlers.set(channel, (set = new Set()));
        // a new channel: until it is listened on, nothing heard so far covers it, so start over with it included
        restart();
      }
      set.add(handler);
      return () => set.delete(handler);
    },
    get listening() {
      return state.listening;
    },
    get epoch() {
      return state.epoch;
    },
    async close() {
      state.closed = true;
      generation++;
      state.listening = false;
      await connecting;
      await connection?.end().catch(() => undefined);
      connection = null;
    },
  };
}

interface Connection {
  open(): Promise<void>;
  listen(channel: string): Promise<void>;
  end(): Promise<void>;
}

function postgresConnection(url: string, dispatch: (channel: string, payload: string) => void, lost: () => void): Connection {
  let client: import('pg').Client | null = null;
  return {
    async open() {
      const { default: pg } = await import('pg');
      client = new pg.Client({ connectionString: url, keepAlive: true });
      client.on('notification', (n) => dispatch(n.channel, n.payload ?? ''));
      client.on('error', lost);
      client.on('end', lost);
      await client.connect();
    },
    // channel names are ours (CHANNELS), never input: quoted as identifiers all the same
    listen: async (channel) => void (await client!.query(`LISTEN "${channel.replaceAll('"', '""')}"`)),
    end: async () => void (await client?.end()),
  };
}

function pgliteConnection(database: Database, dispatch: (channel: string, payload: string) => void): Connection {
  const client = database.pglite;
  const stops: Array<() => Promise<void>> = [];
  return {
    async open() {
      if (!client) throw new Error('no PGlite client to listen on');
    },
    listen: async (channel) => void stops.push(await client!.listen(channel, (payload) => dispatch(channel, payload))),
    end: async () => void (await Promise.all(stops.splice(0).map((stop) => stop()))),
  };
}

/**
 * Values read from the database and kept until a notification on `channel` names their group (the payload). An entry
 * is trusted only while notifications are heard and in the epoch it was read in; a read that raced a notification on
 * the channel is not kept; nothing is kept without `changes` (every call reads). The live policy and verified API keys
 * are held this way.
 */
export function notifiedCache<V>(channel: string, max = 10_000) {
  const entries = new Map<string, { value: V; epoch: number; group: string }>();
  /** notifications heard on the channel (and local forgets): a read that started before one is not kept */
  let heard = 0;
  const watched = new WeakSet<Notifications>();

  /** forgets every entry of `group` (what the notification names, or a change this process made itself) */
  function forget(group: string): void {
    heard++;
    for (const [key, entry] of entries) if (entry.group === group) entries.delete(key);
  }

  async function get(changes: Notifications | undefined, key: string, read: () => Promise<V | null>, groupOf: (value: V) => string): Promise<V | null> {
    if (!changes) return read();
    if (!watched.has(changes)) {
      watched.add(changes);
      changes.on(channel, forget);
    }
    const epoch = changes.epoch;
    const known = entries.get(key);
    if (changes.listening && known && known.epoch === epoch) return known.value;
    const before = heard;
    const value = await read();
    if (value !== null && changes.listening && changes.epoch === epoch && heard === before) {
      if (entries.size >= max) entries.clear();
      entries.set(key, { value, epoch, group: groupOf(value) });
    }
    return value;
  }

  return { get, forget };
}
