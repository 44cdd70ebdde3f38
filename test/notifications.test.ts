/**
 * LISTEN/NOTIFY (db/notifications.ts) and the live policy a worker keeps in memory on it (db/queries/policies.ts
 * `livePolicyFor`): a policy change reaches it when its transaction commits, nothing is read per call while
 * notifications are heard, and a lost connection is noticed (reads again until it is back). Real Postgres, and PGlite.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, rowsOf, type Database } from '../db/client';
import { CHANNELS, listenForNotifications, type Notifications } from '../db/notifications';
import { createAgent } from '../db/queries/agents';
import { livePolicyFor, setTeamRules } from '../db/queries/policies';
import { createTeam } from '../db/queries/teams';
import { createTestDatabase, type TestDatabase } from './support/postgres';
import { eventually } from './support/stack';

let testDb: TestDatabase;
let database: Database;
let changes: Notifications;

beforeAll(async () => {
  testDb = await createTestDatabase();
  database = await openDatabase({ url: testDb.url });
  changes = listenForNotifications(database, { url: testDb.url, retryMs: { min: 50, max: 200 } });
  // the policy channel is listened on from the start, as a worker's first decision makes it (each test can run alone)
  changes.on(CHANNELS.policy, () => undefined);
  await eventually(async () => (changes.listening ? true : undefined), { what: 'the LISTEN connection' });
});
afterAll(async () => {
  await changes?.close();
  await database?.close();
  await testDb?.drop();
});

async function teamWithAgent() {
  const team = await createTeam(database.db, { name: `notify-${Math.random().toString(36).slice(2)}` });
  const agent = await createAgent(database.db, { teamId: team.id, name: 'a', definition: { name: 'a', model: 'm', runtime: { type: 'scripted', config: {} }, tool_policy: { rules: [], default: 'allow' } }, keyId: 'k' });
  return { teamId: team.id, agentId: agent.agent.id };
}

/** moves the team's revision without its trigger telling anyone: what only a reader of the table can see */
const bumpQuietly = (teamId: string) =>
  database.db.transaction(async (tx) => {
    await tx.execute(sql`alter table teams disable trigger teams_policy_notify`);
    await tx.execute(sql`update teams set policy_revision = policy_revision + 1 where id = ${teamId}`);
    await tx.execute(sql`alter table teams enable trigger teams_policy_notify`);
  });

describe('notifications and the live policy held in memory', () => {
  it('delivers a notification when its transaction commits, and not before', async () => {
    const heard: string[] = [];
    const stop = changes.on(CHANNELS.policy, (payload) => heard.push(payload));
    // a new channel starts the connection over with it: listening again once it is listened on
    await eventually(async () => (changes.listening ? true : undefined), { what: 'listening on the new channel' });
    await database.db.transaction(async (tx) => {
      await tx.execute(sql`select pg_notify(${CHANNELS.policy}, 'inside')`);
      await new Promise((r) => setTimeout(r, 200));
      expect(heard).toEqual([]);
    });
    await eventually(async () => (heard.includes('inside') ? true : undefined), { timeoutMs: 2_000, what: 'the notification' });
    // a rolled-back change is never heard of
    await database.db.transaction(async (tx) => {
      await tx.execute(sql`select pg_notify(${CHANNELS.policy}, 'rolled back')`);
      tx.rollback();
    }).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    expect(heard).toEqual(['inside']);
    stop();
  });

  it('reads the live policy once per change: a change is heard, whoever makes it; nothing is read in between', async () => {
    const ids = await teamWithAgent();
    const first = await livePolicyFor(database.db, ids, changes);
    // behind the cache's back: while notifications are heard, the head is not read again
    await bumpQuietly(ids.teamId);
    expect((await livePolicyFor(database.db, ids, changes)).revision).toBe(first.revision);
    // without the listener every call reads it
    expect((await livePolicyFor(database.db, ids)).revision).toBe(first.revision + 1);
    // a policy change (its revision's trigger notifies) reaches the held policy within a second
    const revision = await database.db.transaction((tx) => setTeamRules(tx, { teamId: ids.teamId, rules: [{ tool: 'bash' }] }));
    const live = await eventually(async () => {
      const now = await livePolicyFor(database.db, ids, changes);
      return now.revision === revision ? now : undefined;
    }, { timeoutMs: 1_000, intervalMs: 10, what: 'the new policy' });
    expect(live.policy.rules[0]).toMatchObject({ tool: 'bash', action: 'deny' });
    // so does one made with psql, behind the code's back
    await database.db.execute(sql`update teams set policy_revision = policy_revision + 1 where id = ${ids.teamId}`);
    await eventually(async () => ((await livePolicyFor(database.db, ids, changes)).revision === revision + 1 ? true : undefined), { timeoutMs: 1_000, intervalMs: 10, what: 'the revision bumped by hand' });
  });

  it('notices a lost connection: nothing cached before it is trusted after it', async () => {
    const ids = await teamWithAgent();
    const before = await livePolicyFor(database.db, ids, changes);
    await bumpQuietly(ids.teamId);
    expect((await livePolicyFor(database.db, ids, changes)).revision).toBe(before.revision);
    // the connection is lost: a change made meanwhile would never be notified to it
    const epoch = changes.epoch;
    const killed = rowsOf<{ pid: number }>(await database.db.execute(sql`select pg_terminate_backend(pid) as pid from pg_stat_activity where query ilike 'LISTEN%' and datname = current_database()`));
    expect(killed.length).toBeGreaterThan(0);
    await eventually(async () => (changes.epoch !== epoch && changes.listening ? true : undefined), { timeoutMs: 5_000, what: 'the connection to be made again' });
    // listening again, in a new epoch: the head cached before is read again
    expect((await livePolicyFor(database.db, ids, changes)).revision).toBe(before.revision + 1);
  });

  it('reads on every call while it cannot listen', async () => {
    const ids = await teamWithAgent();
    const deaf = listenForNotifications(database, { url: 'postgres://nobody:nothing@127.0.0.1:1/none', retryMs: { min: 50, max: 100 } });
    try {
      const before = await livePolicyFor(database.db, ids, deaf);
      await bumpQuietly(ids.teamId);
      expect(deaf.listening).toBe(false);
      expect((await livePolicyFor(database.db, ids, deaf)).revision).toBe(before.revision + 1);
    } finally {
      await deaf.close();
    }
  });

  it('works on PGlite, the embedded dev database', async () => {
    const lite = await openDatabase({});
    const liteChanges = listenForNotifications(lite);
    try {
      await eventually(async () => (liteChanges.listening ? true : undefined), { what: 'PGlite listen' });
      const heard: string[] = [];
      liteChanges.on(CHANNELS.policy, (payload) => heard.push(payload));
      await eventually(async () => (liteChanges.listening ? true : undefined), { what: 'PGlite listening on the channel' });
      await lite.db.execute(sql`select pg_notify(${CHANNELS.policy}, 'from pglite')`);
      await eventually(async () => (heard.includes('from pglite') ? true : undefined), { timeoutMs: 2_000, what: 'the PGlite notification' });
    } finally {
      await liteChanges.close();
      await lite.close();
    }
  });
});
