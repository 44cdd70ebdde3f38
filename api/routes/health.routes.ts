import { sql } from 'drizzle-orm';
import type { App, AppDeps } from '../create-app';

type ComponentState = 'ok' | 'unavailable';

/** a probe must answer before its prober gives up: a Temporal call otherwise retries for many seconds */
const TEMPORAL_CHECK_MS = 2_000;

export function registerHealthRoutes(app: App, deps: AppDeps): void {
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  /**
   * Ready when both the database and Temporal answer. Anyone may ask, so the answer is each component's state and
   * nothing else: a driver's error text names hosts, ports, users and versions. That text goes to the log.
   */
  app.get('/readyz', async (c) => {
    const probe = async (component: string, check: () => Promise<unknown>): Promise<ComponentState> => {
      try {
        await check();
        return 'ok';
      } catch (err) {
        deps.log?.({ level: 'WARN', msg: 'readiness check failed', component, requestId: c.get('requestId'), error: String(err) });
        return 'unavailable';
      }
    };
    const [database, temporal] = await Promise.all([
      probe('database', () => deps.db.execute(sql`select 1`)),
      probe('temporal', () => deps.temporal.connection.withDeadline(Date.now() + TEMPORAL_CHECK_MS, () => deps.temporal.workflowService.getSystemInfo({}))),
    ]);
    const checks = { database, temporal };
    const ready = Object.values(checks).every((state) => state === 'ok');
    return c.json({ status: ready ? 'ready' : 'not_ready', checks }, ready ? 200 : 503);
  });
}
