/**
 * `npm run dev`: the whole platform on the embedded defaults, in one process.
 *
 * A Temporal dev server (its SQLite file under the data folder), PGlite under the data folder (or Postgres when
 * DATABASE_URL is set), the worker and the API. Prints the URL and the admin key. Dev only: the master key and
 * a generated admin key are kept in the data folder so a restart finds its own data again.
 */
import { chmod, mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { serve } from '@hono/node-server';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection } from '@temporalio/worker';
import { z } from 'zod';
import { createApp } from '../api/create-app';
import { Registry } from 'prom-client';
import { adminKeyEnv, databaseEnv, egressEnv, openclawEnv, parseEnv, sandboxEnv, snapshotEnv, telemetryEnv } from '../config/env';
import { openDatabase } from '../db/client';
import { countSessionsByState, unterminatedSessionIds } from '../db/queries/sessions';
import { bootstrapAdmin } from '../db/queries/teams';
import { createVault, generateMasterKeySpec } from '../db/vault';
import { createApiMetrics, createWorkerMetrics, serveMetrics } from '../observability/metrics';
import { clientInterceptors, startTracing } from '../observability/tracing';
import { RUNTIME_CAPABILITIES } from '../runtimes/registry';
import { createEgressGuard } from '../runtimes/kit/egress';
import { stopGatewayDaemons } from '../gateway/client';
import { stopOpenCodeServers } from '../runtimes/opencode/opencode.adapter';
import { createSandboxProvider } from '../runtimes/kit/sandbox';
import { createSessionWorker } from '../worker/create-worker';
import { listenForNotifications } from '../db/notifications';
import { createWorkerSandboxes } from '../worker/sandboxes';
import { createWorkerSnapshots } from '../worker/snapshots';
import { createWorkerGateway } from '../worker/gateway';
import { createNotifier } from '../worker/notifier';
import { buildRuntimes, RUNTIME_NAMES } from '../worker/runtimes';
import { startOrAdoptTemporalDevServer } from './temporal-dev-server';

/** A predicate for stopOpenCodeServers: the sessions found on disk that may still run a turn. */
async function sessionsWithServers(dir: string): Promise<(sessionId: string) => boolean> {
  const onDisk = await readdir(join(dir, 'opencode')).catch(() => [] as string[]);
  const live = await unterminatedSessionIds(database.db, onDisk);
  return (sessionId) => live.has(sessionId);
}

// the platform's secrets (config/env.ts SECRET_VARIABLES) leave the environment here, before the Temporal dev server (a
// child process) is started: it gets none of them
const env = parseEnv({
  ...databaseEnv,
  ...telemetryEnv,
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().default('127.0.0.1'),
  /** an existing Temporal server; when absent a dev server is started on TEMPORAL_PORT */
  TEMPORAL_ADDRESS: z.string().optional(),
  TEMPORAL_PORT: z.coerce.number().int().min(0).max(65535).default(7233),
  AGENTPLANE_TASK_QUEUE: z.string().default('agentplane-sessions'),
  /** generated and kept in the data folder when absent */
  AGENTPLANE_MASTER_KEY: z.string().optional(),
  ...adminKeyEnv,
  AGENTPLANE_RUNTIMES: z
    .string()
    .default('opencode,scripted')
    .transform((value) => value.split(',').map((s) => s.trim()).filter(Boolean))
    .pipe(z.array(z.enum(RUNTIME_NAMES)).min(1)),
  OPENCODE_BIN: z.string().optional(),
  ...openclawEnv,
  // not set by dev mode: a local model server or webhook receiver is allowed only when the developer lists it
  ...egressEnv,
  ...sandboxEnv,
  ...snapshotEnv,
  /** the base of the action links in webhook notifications; this server's own URL when absent */
  AGENTPLANE_PUBLIC_URL: z.url({ protocol: /^https?$/, error: 'must be the http(s) URL the API is reached at' }).optional(),
});

const dataDir = resolve(env.AGENTPLANE_DATA_DIR);
await mkdir(dataDir, { recursive: true });

async function keptSecret(file: string, make: () => string): Promise<string> {
  const path = join(dataDir, file);
  const existing = await readFile(path, 'utf8').catch(() => null);
  if (existing) return existing.trim();
  const value = make();
  await writeFile(path, `${value}\n`, { mode: 0o600 });
  await chmod(path, 0o600);
  return value;
}

const masterKey = env.AGENTPLANE_MASTER_KEY ?? (await keptSecret('master.key', () => generateMasterKeySpec()));
// A run that was killed (not stopped) leaves its Temporal dev server running on the SQLite file: that one is adopted
// (and stopped by this run), never doubled.
const temporalServer = env.TEMPORAL_ADDRESS
  ? null
  : await startOrAdoptTemporalDevServer({ dbFile: join(dataDir, 'temporal.db'), stateFile: join(dataDir, 'temporal.json'), port: env.TEMPORAL_PORT || undefined });
const temporalAddress = env.TEMPORAL_ADDRESS ?? temporalServer!.address;

const database = await openDatabase({ url: env.DATABASE_URL, pgliteDir: join(dataDir, 'pglite') });
// It may also leave OpenCode servers (they outlive a worker on purpose, so a new one reattaches): those of sessions
// that can still run a turn stay; the rest belong to nobody and are stopped.
const orphansStopped = await stopOpenCodeServers(dataDir, await sessionsWithServers(dataDir));
const savedAdminKey = await readFile(join(dataDir, 'admin.key'), 'utf8').then((s) => s.trim()).catch(() => undefined);
const admin = await bootstrapAdmin(database.db, env.AGENTPLANE_ADMIN_KEY ?? savedAdminKey);
if (admin.plain) await keptSecret('admin.key', () => admin.plain as string);
const adminKey = env.AGENTPLANE_ADMIN_KEY ?? admin.plain ?? savedAdminKey ?? '(set AGENTPLANE_ADMIN_KEY: the generated key was shown on first start)';

const vault = createVault(masterKey);
const tracing = env.OTEL_EXPORTER_OTLP_ENDPOINT ? startTracing({ endpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT, serviceName: env.OTEL_SERVICE_NAME ?? 'agentplane-dev', headers: { ...env.OTEL_EXPORTER_OTLP_HEADERS, ...env.OTEL_EXPORTER_OTLP_TRACES_HEADERS } }) : null;
const workerMetrics = createWorkerMetrics();
const apiMetrics = createApiMetrics({ sessionsByState: () => countSessionsByState(database.db) });
// one process, one /metrics: the worker's and the API's registries together
const metricsServer =
  env.AGENTPLANE_METRICS_PORT === undefined ? null : await serveMetrics(Registry.merge([workerMetrics.registry, apiMetrics.registry]), { port: env.AGENTPLANE_METRICS_PORT, host: env.AGENTPLANE_METRICS_HOST });
const publicUrl = env.AGENTPLANE_PUBLIC_URL ?? `http://${env.HOST}:${env.PORT}`;
const egress = createEgressGuard({ allowPrivate: env.AGENTPLANE_EGRESS_ALLOW_PRIVATE });
// every session's processes in its own sandbox (AGENTPLANE_SANDBOX, bubblewrap by default), as in production
// runtimes hold a session token, the gateway daemon (a process of its own, which outlives this one) the key; each model
// request through it is held on the budgets before it leaves and charged when it ends
const { gateway, meter } = createWorkerGateway({ db: database.db, vault, dataDir, allowPrivate: env.AGENTPLANE_EGRESS_ALLOW_PRIVATE, metrics: workerMetrics, warn: (msg, fields) => console.warn(msg, fields) });
const sandboxes = createWorkerSandboxes({ db: database.db, provider: createSandboxProvider(env, { info() {}, warn: (msg) => console.warn(msg) }), egress, dataDir, gateway, metrics: workerMetrics });
const workerConnection = await NativeConnection.connect({ address: temporalAddress });
// one LISTEN for the whole platform in this process (PGlite: its own listen; Postgres: one connection): the live policy
// the worker keeps, the keys the API verified, and the event streams hear of changes when they commit
const notifications = listenForNotifications(database, { url: env.DATABASE_URL });
const worker = await createSessionWorker({
  connection: workerConnection,
  namespace: 'default',
  taskQueue: env.AGENTPLANE_TASK_QUEUE,
  deps: {
    db: database.db,
    vault,
    runtimes: await buildRuntimes(env.AGENTPLANE_RUNTIMES, { dataDir, opencodeBin: env.OPENCODE_BIN, openclaw: { nodeBin: env.AGENTPLANE_NODE24_BIN, openclawBin: env.AGENTPLANE_OPENCLAW_BIN }, egress, sandboxes }),
    dataDir,
    publicUrl,
    metrics: workerMetrics,
    egress,
    sandboxKind: env.AGENTPLANE_SANDBOX,
    gateway,
    meter,
    snapshots: await createWorkerSnapshots({ db: database.db, dataDir, settings: env }),
    hibernateAfterMs: env.AGENTPLANE_HIBERNATE_SECONDS * 1000,
    policyChanges: notifications,
  },
  tracing,
});
const workerRun = worker.run();
const notifier = createNotifier({ db: database.db, vault, egress });
notifier.start();

const connection = await Connection.connect({ address: temporalAddress });
const app = createApp({
  notifications,
  db: database.db,
  vault,
  temporal: new Client({ connection, interceptors: clientInterceptors(tracing) }),
  taskQueue: env.AGENTPLANE_TASK_QUEUE,
  capabilities: RUNTIME_CAPABILITIES,
  egress,
  sandboxKind: env.AGENTPLANE_SANDBOX,
  tracer: tracing?.tracer,
  metrics: apiMetrics,
});
const server = serve({ fetch: app.fetch, port: env.PORT, hostname: env.HOST }, (info) => {
  const url = `http://${env.HOST}:${info.port}`;
  process.stdout.write(
    [
      '',
      'agentplane is up (embedded defaults)',
      `  API        ${url}   (OpenAPI: ${url}/openapi.json)`,
      `  dashboard  ${url}/ui/   (sign in with the admin key)`,
      `  admin key  ${adminKey}`,
      `  Temporal   ${temporalAddress}${temporalServer ? ` (dev server, ${join(dataDir, 'temporal.db')}${temporalServer.adopted ? `; adopted: pid ${temporalServer.pid}, left running by an earlier run` : ''})` : ''}`,
      ...(orphansStopped > 0 ? [`  cleanup    stopped ${orphansStopped} OpenCode server(s) an earlier run left with no live session`] : []),
      `  database   ${database.kind === 'pglite' ? `PGlite (${join(dataDir, 'pglite')})` : 'Postgres (DATABASE_URL)'}`,
      `  runtimes   ${env.AGENTPLANE_RUNTIMES.join(', ')}`,
      env.AGENTPLANE_SANDBOX === 'none' ? '  sandbox    NONE (AGENTPLANE_SANDBOX=none): sessions run as this process, with its files and network' : '  sandbox    bubblewrap',
      `  webhooks   sent by the worker; action links point at ${publicUrl}`,
      `  egress     private and loopback addresses refused${env.AGENTPLANE_EGRESS_ALLOW_PRIVATE.length > 0 ? `, except ${env.AGENTPLANE_EGRESS_ALLOW_PRIVATE.join(', ')}` : ' (a local model or receiver: AGENTPLANE_EGRESS_ALLOW_PRIVATE)'}`,
      ...(metricsServer ? [`  metrics    ${metricsServer.url}`] : []),
      ...(tracing ? [`  traces     OTLP/HTTP to ${env.OTEL_EXPORTER_OTLP_ENDPOINT}`] : []),
      '',
    ].join('\n') + '\n',
  );
});

let stopping = false;
async function shutdown() {
  if (stopping) return;
  stopping = true;
  server.close();
  worker.shutdown();
  await workerRun.catch(() => undefined);
  await notifier.stop();
  await sandboxes.closeAll();
  // the whole platform stops: the sessions' runtimes did just now, and the gateway daemon goes with them
  gateway.close();
  await stopGatewayDaemons(join(dataDir, 'run'));
  await tracing?.shutdown();
  await metricsServer?.close();
  await workerConnection.close();
  await connection.close();
  await notifications.close();
  await database.close();
  await temporalServer?.stop();
  process.exit(0);
}
process.once('SIGINT', () => void shutdown());
process.once('SIGTERM', () => void shutdown());
