/**
 * Postgres restarts (an upgrade, a failover, a crash) must not take the API or the worker down with them: a
 * connection cut while the pool has lent it out fails the query or transaction using it, which the caller retries
 * (an API client, a Temporal activity), and the pool opens fresh connections afterwards. The chaos run
 * (bench/chaos.ts) found the process crashing instead: the cut connection emitted 'error' with no listener.
 */
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, rowsOf, type Database } from '../db/client';
import { startPrivatePostgres, type PrivatePostgres } from './support/private-postgres';
import { eventually } from './support/stack';

describe('a Postgres restart', () => {
  let pg: PrivatePostgres;
  let database: Database;
  beforeAll(async () => {
    pg = await startPrivatePostgres();
    database = await openDatabase({ url: pg.url });
  }, 120_000);
  afterAll(async () => {
    await database?.close();
    await pg?.stop();
  });

  it('fails the transaction that held a connection through it, and the next queries work', { timeout: 120_000 }, async () => {
    const cut = database.db.transaction(async (tx) => {
      await tx.execute(sql`select 1`);
      // the connection is lent out and idle between two queries when the server goes away
      await pg.restart('immediate');
      await tx.execute(sql`select 1`);
    });
    await expect(cut).rejects.toThrow();
    const after = await eventually(
      async () => {
        const rows = await database.db.execute(sql`select count(*)::int as n from sessions`).then(rowsOf<{ n: number }>, () => undefined);
        return rows?.[0];
      },
      { timeoutMs: 30_000, what: 'a query after the restart' },
    );
    expect(after).toEqual({ n: 0 });
  });
});
