/**
 * The session worker as its own OS process for bench/scale.ts: the same createSessionWorker as worker/main.ts with
 * the in-process `scripted` runtime, started with `--expose-gc` so a measurement is taken after a full collection,
 * and answering over IPC with its memory and the Temporal worker's own counts (cached workflows, activities in
 * flight). Run with `node --expose-gc --import tsx`: the measured pid is the worker's, not a launcher's.
 *
 * in:  { start: ScaleWorkerConfig } · 'measure' · 'status' · 'stop'
 * out: { ready, limits } · ScaleWorkerMemory · ScaleWorkerStatus · { stopped }
 */
import { tmpdir } from 'node:os';
import { getHeapStatistics } from 'node:v8';
import { DefaultLogger, NativeConnection, Runtime } from '@temporalio/worker';
import { openDatabase } from '../../db/client';
import { createVault } from '../../db/vault';
import { createScriptedAdapter } from '../../runtimes/scripted/scripted.adapter';
import { createSessionWorker } from '../../worker/create-worker';

export interface ScaleWorkerConfig {
  temporalAddress: string;
  /** the worker's session cache; the benchmark sets it above its idle sessions so that all of them are measured */
  maxCachedWorkflows: number;
  workflowThreads?: number;
  taskQueue: string;
  databaseUrl: string;
  masterKey: string;
}

export interface ScaleWorkerLimits {
  maxCachedWorkflows: number;
  maxConcurrentWorkflowTaskExecutions: number | null;
  maxConcurrentActivityTaskExecutions: number | null;
  heapLimitMiB: number;
}

export interface ScaleWorkerStatus {
  cachedWorkflows: number;
  activitiesInFlight: number;
  workflowActivationsInFlight: number;
}

export interface ScaleWorkerMemory extends ScaleWorkerStatus {
  rss: number;
  heapUsed: number;
  external: number;
}

const gc = (globalThis as { gc?: () => void }).gc;
// the SDK's state changes and per-task lines would bury the figures: warnings and errors only
Runtime.install({ logger: new DefaultLogger('WARN') });

// a benchmark that crashed must not leave its worker behind, polling a dead server with gigabytes of cache
process.once('disconnect', () => process.exit(1));

process.once('message', async (message: { start: ScaleWorkerConfig }) => {
  const config = message.start;
  const database = await openDatabase({ url: config.databaseUrl, migrate: false });
  const connection = await NativeConnection.connect({ address: config.temporalAddress });
  const worker = await createSessionWorker({
    connection,
    namespace: 'default',
    taskQueue: config.taskQueue,
    maxCachedWorkflows: config.maxCachedWorkflows,
    workflowThreads: config.workflowThreads,
    deps: { db: database.db, vault: createVault(config.masterKey), runtimes: { scripted: createScriptedAdapter() }, dataDir: tmpdir() },
  });
  const running = worker.run();
  const status = (): ScaleWorkerStatus => {
    const s = worker.shared.getStatus();
    return { cachedWorkflows: s.numCachedWorkflows, activitiesInFlight: s.numInFlightActivities, workflowActivationsInFlight: s.numInFlightWorkflowActivations };
  };
  // the compiled options hold the slot limits in the tuner (fixed-size slot suppliers unless configured otherwise)
  const tuner = (worker.shared.options as unknown as { tuner?: { workflowTaskSlotSupplier?: { numSlots?: number }; activityTaskSlotSupplier?: { numSlots?: number } } }).tuner;
  const limits: ScaleWorkerLimits = {
    maxCachedWorkflows: worker.shared.options.maxCachedWorkflows,
    maxConcurrentWorkflowTaskExecutions: tuner?.workflowTaskSlotSupplier?.numSlots ?? null,
    maxConcurrentActivityTaskExecutions: tuner?.activityTaskSlotSupplier?.numSlots ?? null,
    heapLimitMiB: Math.round(getHeapStatistics().heap_size_limit / 2 ** 20),
  };
  process.send!({ ready: true, limits });
  process.on('message', async (m: string) => {
    if (m === 'status') process.send!(status());
    if (m === 'measure') {
      gc?.();
      await new Promise((r) => setTimeout(r, 200));
      gc?.();
      const mem = process.memoryUsage();
      process.send!({ ...status(), rss: mem.rss, heapUsed: mem.heapUsed, external: mem.external } satisfies ScaleWorkerMemory);
    }
    if (m === 'stop') {
      worker.shutdown();
      await running;
      await connection.close();
      await database.close();
      process.send!({ stopped: true });
      process.exit(0);
    }
  });
});
