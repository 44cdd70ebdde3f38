/**
 * The worker's session sandboxes (runtimes/kit/session-sandbox.ts) on its configured provider, with each refused
 * connection recorded where a tenant sees it: a `sandbox.egress_denied` event in the session's timeline (host, port
 * and why) and the `agentplane_sandbox_egress_denied_total` metric.
 */
import { randomUUID } from 'node:crypto';
import { chmodSync, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Db } from '../db/client';
import { appendEvents } from '../db/queries/events';
import type { WorkerMetrics } from '../observability/metrics';
import type { GatewayClient } from '../gateway/client';
import type { EgressGuard } from '../runtimes/kit/egress';
import type { AdapterLogger } from '../runtimes/runtime-adapter';
import type { SandboxProvider } from '../runtimes/kit/sandbox/provider';
import { createSessionSandboxes, type SessionSandboxes } from '../runtimes/kit/session-sandbox';

export function createWorkerSandboxes(deps: {
  db: Db;
  provider: SandboxProvider;
  egress: Pick<EgressGuard, 'resolve'>;
  dataDir: string;
  /** the model gateway: each session's model endpoint (gateway/) */
  gateway?: Pick<GatewayClient, 'listen' | 'unlisten'>;
  metrics?: WorkerMetrics;
  logger?: AdapterLogger;
}): SessionSandboxes {
  // a sandbox's user mounts its session's directories under the data dir, so it must be able to pass through it
  // (search, never list: others' `x` bit, not `r`); a data dir made private (mkdtemp, umask 077) is opened that far
  if (deps.provider.kind === 'bubblewrap' && process.getuid?.() === 0) {
    mkdirSync(deps.dataDir, { recursive: true });
    const mode = statSync(deps.dataDir).mode & 0o777;
    if ((mode & 0o011) !== 0o011) {
      chmodSync(deps.dataDir, mode | 0o011);
      deps.logger?.info('data dir made searchable by the sandboxes\' users (not listable)', { dataDir: deps.dataDir, mode: (mode | 0o011).toString(8) });
    }
  }
  return createSessionSandboxes({
    provider: deps.provider,
    egress: deps.egress,
    runDir: join(deps.dataDir, 'run'),
    gateway: deps.gateway,
    onDenied(sessionId, denial) {
      deps.metrics?.egressDenied.inc();
      const event = { sourceId: `egress:${randomUUID()}`, type: 'sandbox.egress_denied', payload: { host: denial.host, port: denial.port, reason: denial.reason } };
      appendEvents(deps.db, { sessionId, events: [event] }).catch((err: Error) => deps.logger?.warn('could not record a refused connection', { sessionId, host: denial.host, port: denial.port, error: err.message }));
    },
  });
}
