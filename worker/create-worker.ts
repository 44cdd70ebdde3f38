/**
 * Builds a session worker from its dependencies. Used by worker/main.ts, the dev command and the tests.
 */
import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker, bundleWorkflowCode, type WorkflowBundleOption, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { createActivities, type ActivityDeps } from '../activities/index';
import { workerTracing, type Tracing } from '../observability/tracing';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));
/** the tracing interceptors run inside every workflow, whether tracing is on or not (see workflows/interceptors.ts) */
export const WORKFLOW_INTERCEPTORS_PATH = fileURLToPath(new URL('../workflows/interceptors.ts', import.meta.url));

/** Bundling takes seconds; processes that build several workers bundle once. */
export function bundleWorkflows(): Promise<WorkflowBundleWithSourceMap> {
  return bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, workflowInterceptorModules: [WORKFLOW_INTERCEPTORS_PATH], logger: quietBundlerLogger });
}

/**
 * Sessions a worker keeps in memory between turns. The SDK's default follows the heap limit (2,310 at Node's 4 GiB),
 * which at ~1.5–2 MiB of RSS per cached session is more memory than that heap, and `bench/scale.ts` saw turns slow
 * down as the cache grew past a few hundred (docs/performance.md, "Scale"). A session outside the cache is not lost:
 * its next turn replays it from history first.
 */
export const DEFAULT_CACHED_SESSIONS = 500;

export interface SessionWorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  deps: ActivityDeps;
  /** a bundle built by bundleWorkflows() (in memory, or written to a file: `{ codePath }`) */
  workflowBundle?: WorkflowBundleOption;
  maxConcurrentActivityTaskExecutions?: number;
  /** sessions whose workflow stays in memory between turns (default DEFAULT_CACHED_SESSIONS) */
  maxCachedWorkflows?: number;
  /** spans for activities and the workflow sandbox's exporter; null or absent: tracing off */
  tracing?: Tracing | null;
  /**
   * how long a stopping worker (SIGTERM: a deploy, a drained node) lets its running turns go on before cancelling them
   * (default 10 s; worker/main.ts: AGENTPLANE_WORKER_DRAIN_SECONDS). It polls for nothing new meanwhile; a turn that
   * ends or parks for a person in time writes its snapshot, and another worker continues the session.
   */
  drainSeconds?: number;
}

export async function createSessionWorker(opts: SessionWorkerOptions): Promise<Worker> {
  const tracing = workerTracing(opts.tracing ?? null);
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: opts.taskQueue,
    activities: createActivities(opts.deps),
    // a given bundle was built by bundleWorkflows(), which includes the workflow interceptors
    ...(opts.workflowBundle ? { workflowBundle: opts.workflowBundle } : { workflowsPath: WORKFLOWS_PATH }),
    interceptors: { activity: tracing.activityInterceptors, ...(opts.workflowBundle ? {} : { workflowModules: [WORKFLOW_INTERCEPTORS_PATH] }) },
    sinks: tracing.sinks,
    maxConcurrentActivityTaskExecutions: opts.maxConcurrentActivityTaskExecutions ?? 200,
    maxCachedWorkflows: opts.maxCachedWorkflows ?? DEFAULT_CACHED_SESSIONS,
    // a killed worker's turns move to another worker after the heartbeat timeout; a stopping one finishes its own
    shutdownGraceTime: `${opts.drainSeconds ?? 10} seconds`,
    // an interrupt reaches a running turn with the next heartbeat the server sees: send them at most 1 s apart
    // (the default throttle is 0.8 × the 10 s heartbeat timeout, which made interrupts take ~8 s)
    maxHeartbeatThrottleInterval: '1 second',
    defaultHeartbeatThrottleInterval: '1 second',
  });
}

const quietBundlerLogger = {
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (message: string, meta?: unknown) => console.warn(message, meta ?? ''),
  error: (message: string, meta?: unknown) => console.error(message, meta ?? ''),
  log: () => undefined,
};
