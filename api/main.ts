/**
 * The API process: composition root. Reads config once, builds the real dependencies, serves.
 */
import { resolve } from 'node:path';
import { serve } from '@hono/node-server';
import { Client, Connection } from '@temporalio/client';
import { z } from 'zod';
import { adminKeyEnv, databaseEnv, egressEnv, masterKeyEnv, parseEnv, sandboxEnv, telemetryEnv, temporalEnv } from '../config/env';
import { listenForNotifications } from '../db/notifications';
import { openDatabase } from '../db/client';
import { countSessionsByState } from '../db/queries/sessions';
import { bootstrapAdmin } from '../db/queries/teams';
import { createVault } from '../db/vault';
import { createJsonLog } from '../observability/logger';
import { createApiMetrics, serveMetrics } from '../observability/metrics';
import { clientInterceptors, startTracing } from '../observability/tracing';
import { RUNTIME_CAPABILITIES } from '../runtimes/registry';
import { createEgressGuard } from '../runtimes/kit/egress';
import { createApp, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_STREAMS_PER_KEY } from './create-app';

// the platform's secrets (config/env.ts SECRET_VARIABLES) leave the environment here: what needs one gets it from `env`
const env = parseEnv({
  ...temporalEnv,
  ...databaseEnv,
  ...masterKeyEnv,
  ...telemetryEnv,
  ...egressEnv,
  ...sandboxEnv,
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().default('0.0.0.0'),
  ...adminKeyEnv,
  /** the largest request body the API reads; anything larger is answered 413 unread */
  AGENTPLANE_MAX_BODY_BYTES: z.coerce.number().int().min(1024).max(1024 * 1024 * 1024).default(DEFAULT_MAX_BODY_BYTES),
  /** event streams one key may hold open at once in this process; one more is answered 429 */
  AGENTPLANE_MAX_STREAMS_PER_KEY: z.coerce.number().int().min(1).max(10_000).default(DEFAULT_MAX_STREAMS_PER_KEY),
});

const tracing = env.OTEL_EXPORTER_OTLP_ENDPOINT ? startTracing({ endpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT, serviceName: env.OTEL_SERVICE_NAME ?? 'agentplane-api', headers: { ...env.OTEL_EXPORTER_OTLP_HEADERS, ...env.OTEL_EXPORTER_OTLP_TRACES_HEADERS } }) : null;
const log = createJsonLog();
const database = await openDatabase({ url: env.DATABASE_URL, pgliteDir: resolve(env.AGENTPLANE_DATA_DIR, 'pglite') });
const admin = await bootstrapAdmin(database.db, env.AGENTPLANE_ADMIN_KEY);
// one LISTEN connection: revoked keys, changed policies and new events reach this process when they commit
const notifications = listenForNotifications(database, { url: env.DATABASE_URL });
const connection = await Connection.connect({ address: env.TEMPORAL_ADDRESS });
const temporal = new Client({ connection, namespace: env.TEMPORAL_NAMESPACE, interceptors: clientInterceptors(tracing) });
const metrics = createApiMetrics({ sessionsByState: () => countSessionsByState(database.db) });
const metricsServer = env.AGENTPLANE_METRICS_PORT === undefined ? null : await serveMetrics(metrics.registry, { port: env.AGENTPLANE_METRICS_PORT, host: env.AGENTPLANE_METRICS_HOST });
const app = createApp({
  db: database.db,
  vault: createVault(env.AGENTPLANE_MASTER_KEY),
  temporal,
  taskQueue: env.AGENTPLANE_TASK_QUEUE,
  capabilities: RUNTIME_CAPABILITIES,
  egress: createEgressGuard({ allowPrivate: env.AGENTPLANE_EGRESS_ALLOW_PRIVATE }),
  sandboxKind: env.AGENTPLANE_SANDBOX,
  maxBodyBytes: env.AGENTPLANE_MAX_BODY_BYTES,
  maxStreamsPerKey: env.AGENTPLANE_MAX_STREAMS_PER_KEY,
  log,
  tracer: tracing?.tracer,
  metrics,
  notifications,
});

const server = serve({ fetch: app.fetch, port: env.PORT, hostname: env.HOST }, (info) => {
  log({ level: 'INFO', msg: 'api listening', port: info.port, metrics: metricsServer?.url ?? null, tracing: tracing ? 'otlp' : 'off', sandbox: env.AGENTPLANE_SANDBOX });
  if (env.AGENTPLANE_SANDBOX === 'none') log({ level: 'WARN', msg: 'AGENTPLANE_SANDBOX=none: sessions are marked sandbox none and run without isolation' });
  if (admin.plain) process.stdout.write(`admin key (shown once): ${admin.plain}\n`);
});

for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.once(sig, () => {
    server.close();
    void Promise.all([metricsServer?.close(), tracing?.shutdown()])
      .then(() => connection.close())
      .then(() => notifications.close())
      .then(() => database.close())
      .then(() => process.exit(0));
  });
}
