/**
 * Builds a session worker from its dependencies. Used by worker/main.ts, the dev command and the tests.
 */
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { NativeConnection, Worker, bundleWorkflowCode, type WorkflowBundleOption, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { createActivities, type ActivityDeps } from '../activities/index';
import { createHibernation, type Hibernation } from '../activities/hibernation';
import { idleSessionIds } from '../db/queries/sessions';
import type { RuntimeRegistry } from '../runtimes/runtime-adapter';
import type { Snapshotter } from '../snapshots/snapshotter';
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
export const DEFAULT_CACHED_SESSIONS = 300;

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
  /**
   * threads that run workflows, the cache split among them (default 1, the SDK's). Each cached workflow's
   * AsyncLocalStorage instances tag every promise created on its thread (temporalio/sdk-typescript#1432), so a
   * workflow step costs more the more workflows its thread holds: two threads halve that (docs/performance.md "Scale").
   */
  workflowThreads?: number;
  /** spans for activities and the workflow sandbox's exporter; null or absent: tracing off */
  tracing?: Tracing | null;
  /**
   * how long a stopping worker (SIGTERM: a deploy, a drained node) lets its running turns go on before cancelling them
   * (default 10 s; worker/main.ts: AGENTPLANE_WORKER_DRAIN_SECONDS). It polls for nothing new meanwhile; a turn that
   * ends or parks for a person in time writes its snapshot, and another worker continues the session.
   */
  drainSeconds?: number;
}

/**
 * The task queue of this worker's host: the session queue's name, then a hash of the host's name and the data dir.
 * Stable across restarts of a worker on the same host and disk, which find their sessions' runtimes (and files) again;
 * two workers on one host and data dir share it, as they share those.
 */
export function hostQueueFor(taskQueue: string, dataDir: string): string {
  return `${taskQueue}@${createHash('sha256').update(`${hostname()}\0${dataDir}`).digest('hex').slice(0, 16)}`;
}

/** The session worker: the shared task queue (workflows and activities), and its host's own queue (a session's legs). */
export interface SessionWorker {
  readonly hostQueue: string;
  /** the shared queue's worker (its status and options, for the benchmarks) */
  readonly shared: Worker;
  run(): Promise<void>;
  shutdown(): void;
}

/**
 * Two Temporal workers in one process. The shared queue's runs every session's workflow and any leg of a session no
 * worker holds; the host queue's runs only `runTurn` and `closeRuntime`, for the sessions whose runtime lives here (affinity, as in
 * Temporal's worker-specific task queues sample): the workflow sends a session's legs to the queue its last leg named,
 * and back to the shared one when nobody takes them there in time (this host is gone).
 */
export async function createSessionWorker(opts: SessionWorkerOptions): Promise<SessionWorker> {
  const tracing = workerTracing(opts.tracing ?? null);
  const hostQueue = hostQueueFor(opts.taskQueue, opts.deps.dataDir);
  const hibernation = createHibernation(opts.deps);
  const activities = createActivities({ ...opts.deps, hostQueue, hibernation });
  const common = {
    connection: opts.connection,
    namespace: opts.namespace,
    maxConcurrentActivityTaskExecutions: opts.maxConcurrentActivityTaskExecutions ?? 200,
    // a killed worker's turns move to another worker after the heartbeat timeout; a stopping one finishes its own
    shutdownGraceTime: `${opts.drainSeconds ?? 10} seconds`,
    // an interrupt reaches a running turn with the next heartbeat the server sees: send them at most 1 s apart
    // (the default throttle is 0.8 × the 10 s heartbeat timeout, which made interrupts take ~8 s)
    maxHeartbeatThrottleInterval: '1 second',
    defaultHeartbeatThrottleInterval: '1 second',
  } as const;
  const host = await Worker.create({ ...common, taskQueue: hostQueue, activities: { runTurn: activities.runTurn, closeRuntime: activities.closeRuntime }, interceptors: { activity: tracing.activityInterceptors } });
  const shared = await Worker.create({
    ...common,
    taskQueue: opts.taskQueue,
    activities,
    // a given bundle was built by bundleWorkflows(), which includes the workflow interceptors
    ...(opts.workflowBundle ? { workflowBundle: opts.workflowBundle } : { workflowsPath: WORKFLOWS_PATH }),
    interceptors: { activity: tracing.activityInterceptors, ...(opts.workflowBundle ? {} : { workflowModules: [WORKFLOW_INTERCEPTORS_PATH] }) },
    sinks: tracing.sinks,
    maxCachedWorkflows: opts.maxCachedWorkflows ?? DEFAULT_CACHED_SESSIONS,
    workflowThreadPoolSize: opts.workflowThreads ?? 1,
  });
  if (opts.deps.snapshots && (opts.deps.hibernateAfterMs ?? 0) > 0) {
    void hibernateHeld(opts.deps.snapshots, opts.deps, hibernation).catch((err: unknown) => opts.deps.logger?.warn('arming hibernation for the sessions held here failed', { error: (err as Error).message }));
  }
  return {
    hostQueue,
    shared,
    async run() {
      // one stopping stops both: a process that no longer runs workflows does not keep taking legs
      const [a, b] = await Promise.allSettled([shared.run().finally(() => stop(host)), host.run().finally(() => stop(shared))]);
      if (a.status === 'rejected') throw a.reason;
      if (b.status === 'rejected') throw b.reason;
    },
    shutdown() {
      stop(shared);
      stop(host);
    },
  };
}

/**
 * A worker restarted on this disk: the idle sessions whose runtime the one before left running here (a runtime server
 * outlives its worker) hibernate after the grace period from now. A parked session keeps its runtime: it holds a call.
 */
async function hibernateHeld(snapshots: Snapshotter, deps: ActivityDeps, hibernation: Hibernation): Promise<void> {
  const held = await snapshots.held();
  const idle = await idleSessionIds(deps.db, held.map((h) => h.sessionId));
  for (const { sessionId, runtime } of held) {
    const adapter = deps.runtimes[runtime as keyof RuntimeRegistry];
    if (adapter && idle.has(sessionId)) hibernation.later(sessionId, adapter);
  }
}

function stop(worker: Worker): void {
  if (worker.getState() === 'RUNNING') worker.shutdown();
}

const quietBundlerLogger = {
  trace: () => undefined,
  debug: () => undefined,
  info: () => undefined,
  warn: (message: string, meta?: unknown) => console.warn(message, meta ?? ''),
  error: (message: string, meta?: unknown) => console.error(message, meta ?? ''),
  log: () => undefined,
};
