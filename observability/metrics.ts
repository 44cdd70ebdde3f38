/**
 * Prometheus metrics. Each process has its own registry and serves it on its own port (AGENTPLANE_METRICS_PORT):
 * the worker counts what happens in turns (turns, tool decisions, spend, approval waits, runtime errors), the API
 * times requests and reads the sessions by state from the database at scrape time. A counter lives in the
 * process that sees the event, so nothing is shipped between processes; Prometheus adds up the replicas.
 * Sessions by state is a gauge over the whole fleet, which no single worker knows, hence the database.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export type WorkerMetrics = ReturnType<typeof createWorkerMetrics>;
export type ApiMetrics = ReturnType<typeof createApiMetrics>;

export function createWorkerMetrics() {
  const registry = new Registry();
  const registers = [registry];
  return {
    registry,
    turns: new Counter({ name: 'agentplane_turns_total', help: 'Turns started (user messages sent to a runtime)', labelNames: ['runtime'] as const, registers }),
    turnLegs: new Counter({
      name: 'agentplane_turn_legs_total',
      help: 'Runtime calls that ended, by how (a turn that stops for an approval has several)',
      labelNames: ['runtime', 'status'] as const,
      registers,
    }),
    runtimeErrors: new Counter({ name: 'agentplane_runtime_errors_total', help: 'Runtime calls that failed or ended in error', labelNames: ['runtime'] as const, registers }),
    toolDecisions: new Counter({
      name: 'agentplane_tool_decisions_total',
      help: 'Tool-call decisions: by policy (allow, deny, ask) and by person or deadline (allowed, denied, expired)',
      labelNames: ['runtime', 'source', 'outcome'] as const,
      registers,
    }),
    approvalWait: new Histogram({
      name: 'agentplane_approval_wait_seconds',
      help: 'From an approval request to its decision',
      labelNames: ['outcome'] as const,
      buckets: [1, 5, 15, 30, 60, 300, 900, 1800, 3600, 14_400, 86_400],
      registers,
    }),
    egressDenied: new Counter({ name: 'agentplane_sandbox_egress_denied_total', help: 'Connections out of a session sandbox that its egress proxy refused (each is a sandbox.egress_denied event)', registers }),
    spend: new Counter({ name: 'agentplane_spend_usd_total', help: 'Model spend charged to sessions, in USD', labelNames: ['runtime'] as const, registers }),
    snapshotSeconds: new Histogram({
      name: 'agentplane_snapshot_seconds',
      help: "Writing a session's snapshot at a turn's stop",
      labelNames: ['runtime'] as const,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    snapshotRestores: new Counter({ name: 'agentplane_snapshot_restores_total', help: "Sessions restored from their snapshot on a worker that was not current (each is a session.restored event)", labelNames: ['runtime'] as const, registers }),
  };
}

export function createApiMetrics(opts: { sessionsByState?: () => Promise<Array<{ state: string; runtime: string; count: number }>> } = {}) {
  const registry = new Registry();
  const registers = [registry];
  const sessionsByState = opts.sessionsByState;
  return {
    registry,
    requestDuration: new Histogram({
      name: 'agentplane_http_request_duration_seconds',
      help: 'API request latency by route template and status',
      labelNames: ['method', 'route', 'status'] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    }),
    sessions: new Gauge({
      name: 'agentplane_sessions',
      help: 'Sessions not archived, by state and runtime (read from the database at scrape time)',
      labelNames: ['state', 'runtime'] as const,
      registers,
      async collect() {
        if (!sessionsByState) return;
        this.reset();
        for (const row of await sessionsByState()) this.set({ state: row.state, runtime: row.runtime }, row.count);
      },
    }),
    eventStreams: new Gauge({ name: 'agentplane_event_streams', help: 'Event streams open on this API process', registers }),
    eventStreamReads: new Counter({
      name: 'agentplane_event_stream_reads_total',
      help: "Database reads for this process's event streams: a session's new events read once for all its streams (shared), a stream's own while it replays (own), the heads of every followed session (sweep), the keys holding streams (keys)",
      labelNames: ['kind'] as const,
      registers,
    }),
  };
}

/** Serves `GET /metrics` from the registry on its own port; anything else is 404. */
export async function serveMetrics(registry: Registry, opts: { port: number; host: string }): Promise<{ url: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url?.split('?')[0] !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      (err: Error) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics failed: ${err.message}\n`),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return { url: `http://${opts.host === '0.0.0.0' ? '127.0.0.1' : opts.host}:${port}/metrics`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}
