import { sql } from 'drizzle-orm';
import type { App, AppDeps } from '../create-app';

type ComponentState = 'ok' | 'unavailable';

/** a probe must answer before its prober gives up: a Temporal call otherwise retries for many seconds */
const TEMPORAL_CHECK_MS = 2_000;

export function registerHealthRoutes(app: App, deps: AppDeps): void {
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  /**
   * Ready when both the database and Temporal answer. Anyone may ask, so the answer is each component's state and
   * nothing else: a driver's error text names hosts, ports, users and versions. That text goes to the log. The
   * sandbox setting is reported too: `none` is visible to whoever probes.
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
    const ready = database === 'ok' && temporal === 'ok';
    // no sandbox is a choice the operator made (AGENTPLANE_SANDBOX=none), not a fault: ready, and saying so
    const unsandboxed = deps.sandboxKind === 'none' ? { warning: 'AGENTPLANE_SANDBOX=none: sessions run without a sandbox, as the worker\'s own user, with its network and files' } : {};
    return c.json({ status: ready ? 'ready' : 'not_ready', checks: { database, temporal, sandbox: deps.sandboxKind }, ...unsandboxed }, ready ? 200 : 503);
  });
}
