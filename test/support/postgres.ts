// A fresh, uniquely named Postgres database per test file, on the server that DATABASE_URL points at
// (scripts/ensure-postgres.sh sets one up locally; .ci/run exports it).
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { inject } from 'vitest';

export interface TestDatabase {
  /** Connection string for the new database. */
  url: string;
  /** The database's name (`agentplane_test_…`). */
  name: string;
  /** Drops the database, closing any connections still open to it. */
  drop(): Promise<void>;
}

export async function createTestDatabase(): Promise<TestDatabase> {
  const baseUrl = process.env.DATABASE_URL ?? inject('databaseUrl');
  if (!baseUrl) {
    throw new Error(
      'DATABASE_URL is not set: the tests need a real Postgres server. Run ' +
        '`export DATABASE_URL="$(bash scripts/ensure-postgres.sh | tail -n 1)"` and try again.',
    );
  }
  // Lowercase and short enough for Postgres' 63-byte identifiers; time first so leftovers sort by age.
  const name = `agentplane_test_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
  await withAdminClient(baseUrl, (client) => client.query(`CREATE DATABASE "${name}"`));

  const url = new URL(baseUrl);
  url.pathname = `/${name}`;
  let dropped = false;
  return {
    url: url.toString(),
    name,
    async drop() {
      if (dropped) return;
      dropped = true;
      // WITH (FORCE) (Postgres 13+): a pool a test forgot to end must not make the drop fail. It cannot end an
      // autovacuum worker busy in the database (a superuser's process; 42501 for our role): that one ends by itself
      // in moments, so the drop is tried again
      for (let attempt = 1; ; attempt++) {
        try {
          await withAdminClient(baseUrl, (client) => client.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`));
          return;
        } catch (err) {
          if ((err as { code?: string }).code !== '42501' || attempt >= 40) throw err;
          await new Promise((r) => setTimeout(r, 250));
        }
      }
    },
  };
}

async function withAdminClient<T>(url: string, run: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect().catch((error: Error) => {
    const redacted = new URL(url);
    if (redacted.password) redacted.password = '***';
    throw new Error(`cannot connect to Postgres at ${redacted.toString()}: ${error.message}`);
  });
  try {
    return await run(client);
  } finally {
    await client.end();
  }
}
