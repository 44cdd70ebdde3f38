import { sql } from 'drizzle-orm';
import type { App, AppDeps } from '../create-app';

export function registerHealthRoutes(app: App, deps: AppDeps): void {
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  /** ready when both the database and Temporal answer */
  app.get('/readyz', async (c) => {
    const checks: Record<string, string> = {};
    try {
      await deps.db.execute(sql`select 1`);
      checks.database = 'ok';
    } catch (err) {
      checks.database = `unavailable: ${(err as Error).message}`;
    }
    try {
      await deps.temporal.workflowService.getSystemInfo({});
      checks.temporal = 'ok';
    } catch (err) {
      checks.temporal = `unavailable: ${(err as Error).message}`;
    }
    const ready = Object.values(checks).every((v) => v === 'ok');
    return c.json({ status: ready ? 'ready' : 'not_ready', checks }, ready ? 200 : 503);
  });
}
