import { Connection } from '@temporalio/client';
import pg from 'pg';
import { describe, expect, inject, it } from 'vitest';
import { createTestDatabase } from './support/postgres';

describe('test infrastructure', () => {
  it('provides a Temporal dev server that accepts a client connection', async () => {
    const connection = await Connection.connect({ address: inject('temporalAddress') });
    try {
      const response = await connection.workflowService.describeNamespace({ namespace: 'default' });
      expect(response.namespaceInfo?.name).toBe('default');
    } finally {
      await connection.close();
    }
  });

  it('creates a fresh Postgres database that answers queries and is gone after drop', async () => {
    const database = await createTestDatabase();
    const client = new pg.Client({ connectionString: database.url });
    await client.connect();
    try {
      const { rows } = await client.query<{ one: number }>('select 1 as one');
      expect(rows).toEqual([{ one: 1 }]);
    } finally {
      await client.end();
    }

    await database.drop();

    const admin = new pg.Client({ connectionString: process.env.DATABASE_URL });
    await admin.connect();
    try {
      const { rowCount } = await admin.query('select 1 from pg_database where datname = $1', [database.name]);
      expect(rowCount).toBe(0);
    } finally {
      await admin.end();
    }
  });
});
