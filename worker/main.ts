/**
 * The worker process: composition root. Reads config once, builds the real dependencies, runs the worker.
 */
import { resolve } from 'node:path';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { z } from 'zod';
import { acpAgentsEnv, databaseEnv, egressEnv, hermesEnv, masterKeyEnv, openclawEnv, parseEnv, publicUrlEnv, sandboxEnv, snapshotEnv, telemetryEnv, temporalEnv } from '../config/env';
import { openDatabase } from '../db/client';
import { listenForNotifications } from '../db/notifications';
import { createVault } from '../db/vault';
import { createAdapterLog, createJsonLog, fromTemporalEntry } from '../observability/logger';
import { createWorkerMetrics, serveMetrics } from '../observability/metrics';
import { startTracing } from '../observability/tracing';
import { createEgressGuard } from '../runtimes/kit/egress';
import { createSandboxProvider } from '../runtimes/kit/sandbox';
import { createWorkerSandboxes } from './sandboxes';
import { createWorkerGateway } from './gateway';
import { createWorkerSnapshots } from './snapshots';
import { buildRuntimes, RUNTIME_NAMES } from './runtimes';
import { createSessionWorker, DEFAULT_CACHED_SESSIONS } from './create-worker';
import { createHoldSweeper } from './hold-sweeper';
import { createNotifier } from './notifier';

// the platform's secrets (config/env.ts SECRET_VARIABLES) leave the environment here: what needs one gets it from `env`
const env = parseEnv({
  ...temporalEnv,
  ...databaseEnv,
  ...masterKeyEnv,
  ...publicUrlEnv,
  ...acpAgentsEnv,
  ...telemetryEnv,
  ...openclawEnv,
  ...hermesEnv,
  ...egressEnv,
  ...sandboxEnv,
  ...snapshotEnv,
  AGENTPLANE_RUNTIMES: z
    .string()
    .default('opencode')
    .transform((value) => value.split(',').map((s) => s.trim()).filter(Boolean))
    .pipe(z.array(z.enum(RUNTIME_NAMES)).min(1)),
  OPENCODE_BIN: z.string().optional(),
  /** a workflow bundle written by `npm run build` (dist/workflow-bundle.js): the worker starts without bundling */
  AGENTPLANE_WORKFLOW_BUNDLE: z.string().optional(),
  /** the scripted runtime (tests, benchmarks) logs each prompt it sends to this file: `bench/chaos.ts` counts them */
  AGENTPLANE_SCRIPTED_PROMPT_LOG: z.string().optional(),
  AGENTPLANE_LOG_LEVEL: z.enum(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR']).default('INFO'),
  /** sessions kept in memory between turns (~1.5–2 MiB each); the others replay from history on their next message */
  AGENTPLANE_WORKER_CACHED_SESSIONS: z.coerce.number().int().min(0).default(DEFAULT_CACHED_SESSIONS),
  /** threads that run workflows, the cache split among them: 2 pays off with a large cache (docs/performance.md "Scale") */
  AGENTPLANE_WORKER_WORKFLOW_THREADS: z.coerce.number().int().min(1).max(16).default(1),
  /** on SIGTERM, how long running turns may go on (to their end, or to a call parked for a person) before they are cut */
  AGENTPLANE_WORKER_DRAIN_SECONDS: z.coerce.number().int().min(0).default(120),
});

const tracing = env.OTEL_EXPORTER_OTLP_ENDPOINT ? startTracing({ endpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT, serviceName: env.OTEL_SERVICE_NAME ?? 'agentplane-worker', headers: { ...env.OTEL_EXPORTER_OTLP_HEADERS, ...env.OTEL_EXPORTER_OTLP_TRACES_HEADERS } }) : null;
const writeLog = createJsonLog();
Runtime.install({ logger: new DefaultLogger(env.AGENTPLANE_LOG_LEVEL, (entry) => writeLog(fromTemporalEntry(entry))) });
const metrics = createWorkerMetrics();
const metricsServer = env.AGENTPLANE_METRICS_PORT === undefined ? null : await serveMetrics(metrics.registry, { port: env.AGENTPLANE_METRICS_PORT, host: env.AGENTPLANE_METRICS_HOST });

const dataDir = resolve(env.AGENTPLANE_DATA_DIR);
const database = await openDatabase({ url: env.DATABASE_URL, pgliteDir: resolve(dataDir, 'pglite') });
const vault = createVault(env.AGENTPLANE_MASTER_KEY);
// one LISTEN connection: policy changes reach the live policy this worker keeps in memory
const notifications = listenForNotifications(database, { url: env.DATABASE_URL });
// one guard for every connection the worker opens to a tenant's URL: webhook receivers, remote runtimes, model providers
const egress = createEgressGuard({ allowPrivate: env.AGENTPLANE_EGRESS_ALLOW_PRIVATE });
const adapterLog = createAdapterLog(writeLog, env.AGENTPLANE_LOG_LEVEL);
// every process a session runs goes in its own sandbox (AGENTPLANE_SANDBOX, bubblewrap by default)
// the sessions' model endpoint: runtimes hold a session token, the gateway daemon the key (gateway/); the daemon is
// started on first use and outlives this process, as the runtime servers do. Each model request through it is held on
// the budgets before it leaves and charged when it ends.
const { gateway, meter } = createWorkerGateway({ db: database.db, vault, dataDir, allowPrivate: env.AGENTPLANE_EGRESS_ALLOW_PRIVATE, metrics, warn: (msg, fields) => adapterLog.warn(msg, fields) });
const sandboxes = createWorkerSandboxes({ db: database.db, provider: createSandboxProvider(env, adapterLog), egress, dataDir, gateway, metrics, logger: adapterLog });
const connection = await NativeConnection.connect({ address: env.TEMPORAL_ADDRESS });
const worker = await createSessionWorker({
  connection,
  namespace: env.TEMPORAL_NAMESPACE,
  taskQueue: env.AGENTPLANE_TASK_QUEUE,
  maxCachedWorkflows: env.AGENTPLANE_WORKER_CACHED_SESSIONS,
  workflowThreads: env.AGENTPLANE_WORKER_WORKFLOW_THREADS,
  drainSeconds: env.AGENTPLANE_WORKER_DRAIN_SECONDS,
  ...(env.AGENTPLANE_WORKFLOW_BUNDLE ? { workflowBundle: { codePath: resolve(env.AGENTPLANE_WORKFLOW_BUNDLE) } } : {}),
  deps: {
    db: database.db,
    vault,
    runtimes: await buildRuntimes(env.AGENTPLANE_RUNTIMES, {
      dataDir,
      opencodeBin: env.OPENCODE_BIN,
      acpAgents: env.AGENTPLANE_ACP_AGENTS,
      openclaw: { nodeBin: env.AGENTPLANE_NODE24_BIN, openclawBin: env.AGENTPLANE_OPENCLAW_BIN },
      hermesBin: env.HERMES_BIN,
      scriptedPromptLog: env.AGENTPLANE_SCRIPTED_PROMPT_LOG,
      logger: adapterLog,
      egress,
      sandboxes,
    }),
    dataDir,
    publicUrl: env.AGENTPLANE_PUBLIC_URL,
    metrics,
    egress,
    sandboxKind: env.AGENTPLANE_SANDBOX,
    gateway,
    meter,
    // each session's files, at every turn's stop: another worker continues it when this one is gone
    snapshots: await createWorkerSnapshots({ db: database.db, dataDir, settings: env }),
    hibernateAfterMs: env.AGENTPLANE_HIBERNATE_SECONDS * 1000,
    logger: adapterLog,
    policyChanges: notifications,
  },
  tracing,
});
// the webhook outbox is sent from every worker replica; claims keep them from sending one delivery twice at once
const notifier = createNotifier({ db: database.db, vault, egress, log: writeLog });
// budget holds a killed worker's turn never settled, on sessions that have since stopped (every worker sweeps; idempotent)
const holdSweeper = createHoldSweeper({ db: database.db, log: (level, msg, fields) => writeLog({ level, msg, ...fields }) });
const running = worker.run();
notifier.start();
holdSweeper.start();
writeLog({ level: 'INFO', msg: 'worker started', taskQueue: env.AGENTPLANE_TASK_QUEUE, runtimes: env.AGENTPLANE_RUNTIMES, metrics: metricsServer?.url ?? null, tracing: tracing ? 'otlp' : 'off', sandbox: env.AGENTPLANE_SANDBOX });
if (env.AGENTPLANE_SANDBOX === 'none') writeLog({ level: 'WARN', msg: 'AGENTPLANE_SANDBOX=none: sessions run as this worker, with its files and network; each session it runs is marked sandbox none' });
// the worker stops on SIGINT/SIGTERM (the Temporal runtime's shutdown signals); the notifier finishes its poll
// (sessions' sandboxes are left as they are: a persistent runtime server and its model bridge outlive this process,
// as after a crash, and the next worker reattaches; the rest ends with it)
await running.finally(() => {
  notifier.stop();
  holdSweeper.stop();
});
// the spans of the last turns are still in the batch: send them before the process goes
await tracing?.shutdown();
gateway.close();
await metricsServer?.close();
await connection.close();
await notifications.close();
await database.close();
