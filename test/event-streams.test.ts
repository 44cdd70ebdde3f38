/**
 * Event streams woken by LISTEN/NOTIFY (api/event-streams.ts): 200 streams on one session get every event once and in
 * order, across a restart of the API process they follow (clients resume with Last-Event-ID, as EventSource does); a
 * LISTEN connection that is cut loses no event, even one committed while it was down; the embedded PGlite database
 * wakes streams the same way. Events are written with `appendEvents`, as the worker writes them.
 */
import { createServer, type AddressInfo } from 'node:net';
import { serve, type ServerType } from '@hono/node-server';
import { sql } from 'drizzle-orm';
import { drizzle } from 'drizzle-orm/node-postgres';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp, type AppDeps } from '../api/create-app';
import { openDatabase, rowsOf, type Db } from '../db/client';
import { newId } from '../db/ids';
import { listenForNotifications } from '../db/notifications';
import { appendEvents } from '../db/queries/events';
import { createApiKey, createTeam } from '../db/queries/teams';
import * as schema from '../db/schema/index';
import { sessions } from '../db/schema/index';
import { createApiMetrics } from '../observability/metrics';
import { RUNTIME_CAPABILITIES } from '../runtimes/registry';
import { eventually, startStack, type Stack } from './support/stack';
import { spawnApi, type ServiceProcess } from './support/worker-process';

let stack: Stack;
const cleanups: Array<() => Promise<void>> = [];

beforeAll(async () => {
  stack = await startStack({ worker: false });
});
afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
  await stack?.stop();
});

// ---- helpers --------------------------------------------------------------------------------------------------

/** A session row as `POST /v1/sessions` writes it, with no workflow behind it: the streams only read its log. */
async function newSession(db: Db, teamId: string): Promise<string> {
  const id = newId('sesn');
  await db.insert(sessions).values({ id, teamId, agentId: 'agent_streams', agentVersion: 1, runtime: 'scripted', metadata: {}, status: 'idle', initiatorKeyId: 'key_streams', trigger: 'api', budget: {} });
  return id;
}

/** Appends `count` events numbered from `from`, `perAppend` to a statement, as a runtime turn writes them. */
async function append(db: Db, sessionId: string, from: number, count: number, perAppend = 1): Promise<void> {
  for (let i = from; i < from + count; i += perAppend) {
    const events = Array.from({ length: Math.min(perAppend, from + count - i) }, (_, j) => ({ sourceId: `e${i + j}`, type: 'agent.message', payload: { content: [{ type: 'text', text: `event ${i + j}` }] } }));
    await appendEvents(db, { sessionId, events });
  }
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i + 1);

/**
 * A client that follows a session's stream as EventSource does: when the connection ends or cannot be made, it
 * connects again after a moment, sending the last id it received as Last-Event-ID (`lastEventId` on the first
 * connection, if given). `ids` holds the id of every event frame received, over every connection, in the order received.
 */
function follow(base: string, sessionId: string, key: string, lastEventId?: number) {
  const ids: number[] = [];
  let connections = 0;
  let stopped = false;
  let controller = new AbortController();
  const run = (async () => {
    while (!stopped) {
      controller = new AbortController();
      try {
        const headers: Record<string, string> = { authorization: `Bearer ${key}` };
        const last = ids.at(-1) ?? lastEventId;
        if (last !== undefined) headers['last-event-id'] = String(last);
        const res = await fetch(`${base}/v1/sessions/${sessionId}/events/stream`, { headers, signal: controller.signal });
        if (res.status !== 200) throw new Error(`stream answered ${res.status}: ${await res.text()}`);
        connections++;
        const reader = res.body!.getReader();
        const decoder = new TextDecoder();
        let buffer = '';
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          for (let end = buffer.indexOf('\n\n'); end >= 0; end = buffer.indexOf('\n\n')) {
            const id = /^id: (\d+)$/m.exec(buffer.slice(0, end))?.[1];
            if (id !== undefined) ids.push(Number(id));
            buffer = buffer.slice(end + 2);
          }
        }
      } catch {
        // refused or cut off (the API is restarting), or stopped
      }
      if (!stopped) await new Promise((r) => setTimeout(r, 250));
    }
  })();
  const client = {
    ids,
    get connections() {
      return connections;
    },
    async stop() {
      stopped = true;
      controller.abort();
      await run;
    },
  };
  cleanups.push(() => client.stop());
  return client;
}

type Client = ReturnType<typeof follow>;

async function allReceived(clients: Client[], count: number, what: string, timeoutMs = 30_000): Promise<void> {
  await eventually(async () => (clients.every((c) => c.ids.length >= count) ? true : undefined), { timeoutMs, intervalMs: 50, what });
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Another API on the stack's database and Temporal, in this process, with its own settings. */
async function serveApp(overrides: Partial<AppDeps>): Promise<string> {
  const app = createApp({ db: stack.db.db, vault: stack.vault, temporal: stack.temporal, taskQueue: stack.taskQueue, capabilities: RUNTIME_CAPABILITIES, egress: stack.egress, sandboxKind: stack.sandboxKind, maxStreamsPerKey: 100, ...overrides });
  const server: ServerType = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** Runs `sql` on the server's maintenance connection (the stack's database cannot alter itself while connected to). */
async function onServer(statement: string): Promise<void> {
  const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
  await client.connect();
  try {
    await client.query(statement);
  } finally {
    await client.end();
  }
}

/** Ends every LISTEN connection to the stack's database, as a network cut or a failover would: how many there were. */
async function terminateListeners(): Promise<number> {
  const rows = rowsOf<{ ended: boolean }>(
    await stack.db.db.execute(sql`select pg_terminate_backend(pid) as ended from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid() and query ilike 'listen %'`),
  );
  return rows.filter((r) => r.ended).length;
}

// ---- the tests ------------------------------------------------------------------------------------------------

describe('event streams woken by notification', () => {
  it('200 streams on one session each get every event once and in order, and resume across an API restart with Last-Event-ID', { timeout: 240_000 }, async () => {
    const sessionId = await newSession(stack.db.db, stack.teamId);
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    const env = { AGENTPLANE_MAX_STREAMS_PER_KEY: '1000' };
    let api: ServiceProcess = await spawnApi(stack, port, env);
    cleanups.push(() => api.stop());

    const clients = Array.from({ length: 200 }, () => follow(base, sessionId, stack.adminKey));
    await eventually(async () => (clients.every((c) => c.connections === 1) ? true : undefined), { what: 'every stream to be open' });
    // single events and batches of three, one statement each: every append wakes the streams once
    await append(stack.db.db, sessionId, 1, 10);
    await append(stack.db.db, sessionId, 11, 15, 3);
    await allReceived(clients, 25, 'the first 25 events on every stream');
    for (const client of clients) expect(client.ids).toEqual(range(25));

    // a rolling restart: the process ends (cutting every stream), events are written while no API runs, another
    // process takes the same port, and the clients come back to it with the last id each received
    await api.stop();
    await append(stack.db.db, sessionId, 26, 10);
    api = await spawnApi(stack, port, env);
    await eventually(async () => (clients.every((c) => c.connections === 2) ? true : undefined), { timeoutMs: 30_000, what: 'every stream to resume' });
    await append(stack.db.db, sessionId, 36, 15, 3);
    await allReceived(clients, 50, 'all 50 events on every stream');
    await new Promise((r) => setTimeout(r, 300)); // nothing more may come
    for (const client of clients) {
      expect(client.ids).toEqual(range(50));
      expect(client.connections).toBe(2);
    }
    for (const client of clients) await client.stop();
  });

  it('the streams of a session share one read per append, idle streams read nothing, and a replaying stream joins them once caught up', { timeout: 120_000 }, async () => {
    // the app's own pool, so that its queries can be counted: one per connection lent out
    const pool = new pg.Pool({ connectionString: stack.databaseUrl, max: 10 });
    cleanups.push(() => pool.end());
    let queries = 0;
    pool.on('acquire', () => queries++);
    const db = drizzle(pool, { schema }) as unknown as Db;
    const metrics = createApiMetrics();
    const sharedReads = async () => (await metrics.eventStreamReads.get()).values.find((v) => v.labels.kind === 'shared')?.value ?? 0;
    const base = await serveApp({ db, notifications: stack.notifications, streamPollMs: 600_000, streamSafetyReadMs: 600_000, metrics });
    const sessionId = await newSession(stack.db.db, stack.teamId);
    await append(stack.db.db, sessionId, 1, 5);
    await eventually(async () => (stack.notifications.listening ? true : undefined), { what: 'the LISTEN connection' });

    const clients = Array.from({ length: 50 }, () => follow(base, sessionId, stack.adminKey));
    await eventually(async () => (clients.every((c) => c.connections === 1) ? true : undefined), { what: 'every stream to be open' });
    await new Promise((r) => setTimeout(r, 300));
    expect((await metrics.eventStreams.get()).values[0]?.value).toBe(50);
    queries = 0;
    const sharedBefore = await sharedReads();
    for (let i = 6; i <= 15; i++) {
      await append(stack.db.db, sessionId, i, 1);
      await allReceived(clients, i - 5, `event ${i} on every stream`, 10_000);
    }
    expect(queries).toBe(10);
    expect((await sharedReads()) - sharedBefore).toBe(10); // and the process's metrics say so
    queries = 0;
    await new Promise((r) => setTimeout(r, 1_000));
    expect(queries).toBe(0);

    // a client replaying from the start reads on its own until it has caught up, and then shares again
    const replaying = follow(base, sessionId, stack.adminKey, 0);
    await eventually(async () => (replaying.ids.length === 15 ? true : undefined), { what: 'the replay' });
    await new Promise((r) => setTimeout(r, 300));
    queries = 0;
    await append(stack.db.db, sessionId, 16, 4, 2);
    await allReceived(clients, 14, 'the events after the replay', 10_000);
    await allReceived([replaying], 19, 'the events after the replay, on the replaying stream', 10_000);
    expect(queries).toBeGreaterThanOrEqual(1);
    expect(queries).toBeLessThanOrEqual(2); // two appends: one read each, or one for both
    await new Promise((r) => setTimeout(r, 300));
    for (const client of clients) expect(client.ids).toEqual(range(19).slice(5));
    expect(replaying.ids).toEqual(range(19));
    for (const client of [...clients, replaying]) await client.stop();
  });

  it('a LISTEN connection cut while events commit loses none: the events of the outage arrive when it is back', { timeout: 120_000 }, async () => {
    // neither a poll nor the safety read within the test: only a notification, or the sweep a new connection makes, can deliver
    const base = await serveApp({ notifications: stack.notifications, streamPollMs: 600_000, streamSafetyReadMs: 600_000 });
    const sessionId = await newSession(stack.db.db, stack.teamId);
    await eventually(async () => (stack.notifications.listening ? true : undefined), { what: 'the LISTEN connection' });
    const clients = Array.from({ length: 20 }, () => follow(base, sessionId, stack.adminKey));
    await eventually(async () => (clients.every((c) => c.connections === 1) ? true : undefined), { what: 'every stream to be open' });
    await append(stack.db.db, sessionId, 1, 5);
    await allReceived(clients, 5, 'the events before the cut', 10_000);

    // the pool's connections stay; no new one, the LISTEN connection's included, can be made until it is allowed again
    await Promise.all(Array.from({ length: 10 }, () => stack.db.db.execute(sql`select pg_sleep(0.05)`)));
    const name = rowsOf<{ name: string }>(await stack.db.db.execute(sql`select current_database() as name`))[0]!.name;
    await onServer(`alter database "${name}" allow_connections false`);
    try {
      expect(await terminateListeners()).toBeGreaterThanOrEqual(1);
      await eventually(async () => (stack.notifications.listening ? undefined : true), { what: 'the cut to be noticed' });
      await append(stack.db.db, sessionId, 6, 5);
      await new Promise((r) => setTimeout(r, 500));
      expect(clients.every((c) => c.ids.length === 5)).toBe(true); // nothing heard while cut off (this app does not poll)
    } finally {
      await onServer(`alter database "${name}" allow_connections true`);
    }
    await eventually(async () => (stack.notifications.listening ? true : undefined), { timeoutMs: 15_000, what: 'the LISTEN connection to be made again' });
    await allReceived(clients, 10, 'the events committed during the outage', 10_000);

    // a cut and events written at once, while the connection is being made again
    expect(await terminateListeners()).toBeGreaterThanOrEqual(1);
    await append(stack.db.db, sessionId, 11, 10);
    await allReceived(clients, 20, 'the events written across the second cut', 15_000);
    await new Promise((r) => setTimeout(r, 300));
    for (const client of clients) {
      expect(client.ids).toEqual(range(20));
      expect(client.connections).toBe(1); // the streams themselves were never cut
    }
    for (const client of clients) await client.stop();
  });

  it('an event whose notification is lost arrives all the same, with the safety read', { timeout: 60_000 }, async () => {
    const base = await serveApp({ notifications: stack.notifications, streamPollMs: 600_000, streamSafetyReadMs: 500 });
    const sessionId = await newSession(stack.db.db, stack.teamId);
    await eventually(async () => (stack.notifications.listening ? true : undefined), { what: 'the LISTEN connection' });
    const client = follow(base, sessionId, stack.adminKey);
    await eventually(async () => (client.connections === 1 ? true : undefined), { what: 'the stream to be open' });
    await append(stack.db.db, sessionId, 1, 2);
    // written as appendEvents writes it, less its notification
    await stack.db.db.transaction(async (tx) => {
      await tx.execute(sql`update sessions set event_seq = 3 where id = ${sessionId}`);
      await tx.execute(sql`insert into session_events (id, session_id, seq, source_id, type, payload) values (${newId('sevt')}, ${sessionId}, 3, 'e3', 'agent.message', '{}')`);
    });
    await allReceived([client], 3, 'the event without a notification', 5_000);
    await append(stack.db.db, sessionId, 4, 2);
    await allReceived([client], 5, 'the events after it', 5_000);
    expect(client.ids).toEqual(range(5));
    await client.stop();
  });

  it("on the embedded PGlite database a stream is woken through the process's own listen, as in `npm run dev`", { timeout: 60_000 }, async () => {
    const database = await openDatabase({});
    const notifications = listenForNotifications(database);
    cleanups.push(async () => {
      await notifications.close();
      await database.close();
    });
    const team = await createTeam(database.db, { name: 'embedded' });
    const key = await createApiKey(database.db, { teamId: team.id, name: 'admin', role: 'admin' });
    const base = await serveApp({ db: database.db, notifications, streamPollMs: 600_000, streamSafetyReadMs: 600_000 });
    const sessionId = await newSession(database.db, team.id);
    await eventually(async () => (notifications.listening ? true : undefined), { what: 'listening on PGlite' });
    const client = follow(base, sessionId, key.plain);
    await eventually(async () => (client.connections === 1 ? true : undefined), { what: 'the stream to be open' });
    await append(database.db, sessionId, 1, 6, 2);
    await allReceived([client], 6, 'the events, woken by notification');
    expect(client.ids).toEqual(range(6));
    await client.stop();
  });
});
