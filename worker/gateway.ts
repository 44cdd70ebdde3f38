/**
 * A worker's model gateway: its client of the gateway daemon (gateway/client.ts), whose admissions and records go to
 * the worker's meter (activities/model-meter.ts), so each model request is held on the budgets before it leaves and
 * charged when it ends. `start` starts a daemon when none answers: by default a detached process (it outlives the
 * worker, as the runtime servers do); a test starts one in its own process.
 */
import { join } from 'node:path';
import type { Db } from '../db/client';
import type { Vault } from '../db/vault';
import type { WorkerMetrics } from '../observability/metrics';
import { createModelMeter, type ModelMeter } from '../activities/model-meter';
import { createGatewayClient, spawnGatewayDaemon, type GatewayClient } from '../gateway/client';
import { createSessionTokens, TOKEN_PURPOSE } from '../gateway/tokens';

export function createWorkerGateway(deps: {
  db: Db;
  vault: Vault;
  dataDir: string;
  /** the workers' address rule (AGENTPLANE_EGRESS_ALLOW_PRIVATE), which a spawned daemon applies to providers */
  allowPrivate: readonly string[];
  start?(controlPath: string): Promise<void>;
  metrics?: Pick<WorkerMetrics, 'spend'>;
  warn?(msg: string, fields: Record<string, unknown>): void;
}): { gateway: GatewayClient; meter: ModelMeter } {
  const meter = createModelMeter({ db: deps.db, metrics: deps.metrics, warn: deps.warn });
  const gateway = createGatewayClient({
    runDir: join(deps.dataDir, 'run'),
    tokens: createSessionTokens(deps.vault.deriveKeys(TOKEN_PURPOSE)),
    onAdmit: meter.admit,
    onRecord: meter.record,
    start: deps.start ?? ((controlPath) => spawnGatewayDaemon(controlPath, deps.allowPrivate)),
  });
  return { gateway, meter };
}
