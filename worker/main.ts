/**
 * The worker process: composition root. Reads config once, builds the real dependencies, runs the worker.
 */
import { resolve } from 'node:path';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { z } from 'zod';
import { databaseEnv, masterKeyEnv, openclawEnv, parseEnv, publicUrlEnv, temporalEnv } from '../config/env';
import { openDatabase } from '../db/client';
import { createVault } from '../db/vault';
import { buildRuntimes, RUNTIME_NAMES } from './runtimes';
import { createSessionWorker } from './create-worker';
import { createNotifier } from './notifier';

const env = parseEnv({
  ...temporalEnv,
  ...databaseEnv,
  ...masterKeyEnv,
  ...publicUrlEnv,
  ...openclawEnv,
  AGENTPLANE_RUNTIMES: z
    .string()
    .default('opencode')
    .transform((value) => value.split(',').map((s) => s.trim()).filter(Boolean))
    .pipe(z.array(z.enum(RUNTIME_NAMES)).min(1)),
  OPENCODE_BIN: z.string().optional(),
  AGENTPLANE_LOG_LEVEL: z.enum(['TRACE', 'DEBUG', 'INFO', 'WARN', 'ERROR']).default('INFO'),
});

Runtime.install({
  logger: new DefaultLogger(env.AGENTPLANE_LOG_LEVEL, (entry) => {
    process.stdout.write(`${JSON.stringify({ level: entry.level, msg: entry.message, time: new Date(Number(entry.timestampNanos / 1_000_000n)).toISOString(), ...entry.meta })}\n`);
  }),
});

const dataDir = resolve(env.AGENTPLANE_DATA_DIR);
const database = await openDatabase({ url: env.DATABASE_URL, pgliteDir: resolve(dataDir, 'pglite') });
const vault = createVault(env.AGENTPLANE_MASTER_KEY);
const connection = await NativeConnection.connect({ address: env.TEMPORAL_ADDRESS });
const worker = await createSessionWorker({
  connection,
  namespace: env.TEMPORAL_NAMESPACE,
  taskQueue: env.AGENTPLANE_TASK_QUEUE,
  deps: {
    db: database.db,
    vault,
    runtimes: buildRuntimes(env.AGENTPLANE_RUNTIMES, { dataDir, opencodeBin: env.OPENCODE_BIN, openclaw: { nodeBin: env.AGENTPLANE_NODE24_BIN, openclawBin: env.AGENTPLANE_OPENCLAW_BIN } }),
    dataDir,
    publicUrl: env.AGENTPLANE_PUBLIC_URL,
  },
});
const writeLog = (entry: Record<string, unknown>) => process.stdout.write(`${JSON.stringify({ time: new Date().toISOString(), ...entry })}\n`);
// the webhook outbox is sent from every worker replica; claims keep them from sending one delivery twice at once
const notifier = createNotifier({ db: database.db, vault, log: writeLog });
const running = worker.run();
notifier.start();
writeLog({ level: 'INFO', msg: 'worker started', taskQueue: env.AGENTPLANE_TASK_QUEUE, runtimes: env.AGENTPLANE_RUNTIMES });
// the worker stops on SIGINT/SIGTERM (the Temporal runtime's shutdown signals); the notifier finishes its poll
await running.finally(() => notifier.stop());
await connection.close();
await database.close();
