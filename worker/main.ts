/**
 * The worker process: composition root. Reads config once, builds the real dependencies, runs the worker.
 */
import { resolve } from 'node:path';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { z } from 'zod';
import { databaseEnv, masterKeyEnv, parseEnv, temporalEnv } from '../config/env';
import { openDatabase } from '../db/client';
import { createVault } from '../db/vault';
import { buildRuntimes, RUNTIME_NAMES } from './runtimes';
import { createSessionWorker } from './create-worker';

const env = parseEnv({
  ...temporalEnv,
  ...databaseEnv,
  ...masterKeyEnv,
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
const connection = await NativeConnection.connect({ address: env.TEMPORAL_ADDRESS });
const worker = await createSessionWorker({
  connection,
  namespace: env.TEMPORAL_NAMESPACE,
  taskQueue: env.AGENTPLANE_TASK_QUEUE,
  deps: {
    db: database.db,
    vault: createVault(env.AGENTPLANE_MASTER_KEY),
    runtimes: buildRuntimes(env.AGENTPLANE_RUNTIMES, { dataDir, opencodeBin: env.OPENCODE_BIN }),
    dataDir,
  },
});
process.stdout.write(`${JSON.stringify({ level: 'INFO', msg: 'worker started', taskQueue: env.AGENTPLANE_TASK_QUEUE, runtimes: env.AGENTPLANE_RUNTIMES })}\n`);
await worker.run();
await connection.close();
await database.close();
