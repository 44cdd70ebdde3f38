/**
 * One database handle for both backends: Postgres through `pg` (production, tests) and PGlite (the embedded dev
 * default). Query functions take `Db`, which a transaction also satisfies.
 */
import { fileURLToPath } from 'node:url';
import { sql } from 'drizzle-orm';
import { PgTransaction, type PgDatabase, type PgQueryResultHKT } from 'drizzle-orm/pg-core';
import * as schema from './schema/index';

export type Schema = typeof schema;
export type Db = PgDatabase<PgQueryResultHKT, Schema>;

export interface Database {
  db: Db;
  kind: 'postgres' | 'pglite';
  /** the embedded database itself (PGlite only): its `listen` carries notifications (db/notifications.ts) */
  pglite?: import('@electric-sql/pglite').PGlite;
  close(): Promise<void>;
}

const MIGRATIONS = fileURLToPath(new URL('./migrations', import.meta.url));
/** Any constant: it only has to be the same in every process that migrates this database. */
const MIGRATION_LOCK = 7_114_229;

export async function openDatabase(opts: { url?: string; pgliteDir?: string; migrate?: boolean }): Promise<Database> {
  const database = opts.url ? await openPostgres(opts.url) : await openPglite(opts.pgliteDir);
  if (opts.migrate !== false) await migrateDatabase(database);
  return database;
}

async function openPostgres(url: string): Promise<Database> {
  const { default: pg } = await import('pg');
  const { drizzle } = await import('drizzle-orm/node-postgres');
  // bigint sums come back as strings by default; our amounts fit in a double (micro-dollars)
  pg.types.setTypeParser(20, (value) => Number(value));
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  // A connection lost to a Postgres restart must not crash the process. The pool listens on idle clients only; a
  // client lent out (a transaction between two queries) emits 'error' with nobody listening, which throws. The
  // query or transaction using it still fails, and the pool drops the client when it is released.
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  const db = drizzle(pool, { schema }) as unknown as Db;
  return { db, kind: 'postgres', close: () => pool.end() };
}

async function openPglite(dir: string | undefined): Promise<Database> {
  const { PGlite } = await import('@electric-sql/pglite');
  const { drizzle } = await import('drizzle-orm/pglite');
  const client = new PGlite(dir);
  const db = drizzle(client, { schema }) as unknown as Db;
  return { db, kind: 'pglite', pglite: client, close: () => client.close() };
}

/** Applies committed migrations; concurrent processes (API and worker) serialise on an advisory lock. */
export async function migrateDatabase(database: Database): Promise<void> {
  if (database.kind === 'pglite') {
    const { migrate } = await import('drizzle-orm/pglite/migrator');
    await migrate(database.db as never, { migrationsFolder: MIGRATIONS });
    return;
  }
  const { migrate } = await import('drizzle-orm/node-postgres/migrator');
  await database.db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(${MIGRATION_LOCK})`);
    await migrate(tx as never, { migrationsFolder: MIGRATIONS });
  });
}

const preparedByDb = new WeakMap<Db, Map<string, unknown>>();

/**
 * A hot query built once per database handle and prepared under `name` (drizzle's `.prepare`, a named statement on
 * each pooled connection): each call then binds its values, instead of building the SQL again and having Postgres
 * parse and plan it again. `build` must depend on nothing but `db` and the name (values go in `sql.placeholder`s).
 */
export function preparedQuery<T>(db: Db, name: string, build: (db: Db) => T): T {
  let byName = preparedByDb.get(db);
  if (!byName) preparedByDb.set(db, (byName = new Map()));
  let query = byName.get(name) as T | undefined;
  if (!query) byName.set(name, (query = build(db)));
  return query;
}

/** Rows of a raw `db.execute(sql…)`, whichever driver ran it. */
export function rowsOf<T>(result: unknown): T[] {
  return (result as { rows: T[] }).rows;
}

/** Whether `db` is a transaction already: a write that must be atomic runs in it as is, without a savepoint. */
export function isTransaction(db: Db): boolean {
  return db instanceof PgTransaction;
}
