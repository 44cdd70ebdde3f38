/**
 * Observability, end to end: the API runs in this process with tracing on, the worker runs as its own process
 * (`worker/main.ts`) exporting to the same OTLP/HTTP receiver, which this test serves. One session with a tool call
 * that waits for a person must leave one trace from the API request through the workflow and its activities to
 * the runtime calls; its events and audit rows carry that trace's id (but for the decision, which carries the trace of
 * the request that made it); both processes' /metrics move with it; and
 * the JSON logs carry request, session and trace ids but never a secret.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countSessionsByState } from '../db/queries/sessions';
import { createJsonLog } from '../observability/logger';
import { createApiMetrics, serveMetrics } from '../observability/metrics';
import { startTracing, type Tracing } from '../observability/tracing';
import { eventsOf, startStack, waitForStatus, type Stack } from './support/stack';
import { spawnWorker, type WorkerProcess } from './support/worker-process';

const SECRET = `sk-otel-${Math.random().toString(36).slice(2)}-DO-NOT-LOG`;

interface OtlpSpan {
  traceId: string;
  spanId: string;
  parentSpanId?: string;
  name: string;
  attributes?: Array<{ key: string; value: Record<string, unknown> }>;
}

/** A minimal OTLP/HTTP receiver: JSON-encoded `POST /v1/traces`, every span kept with its service name. */
async function startOtlpReceiver() {
  const spans: Array<OtlpSpan & { service: string }> = [];
  const contentTypes = new Set<string>();
  /** the Authorization header of each export, by the services whose spans it carried */
  const authorizations = new Map<string, Set<string>>();
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString()));
    req.on('end', () => {
      if (req.method !== 'POST' || req.url !== '/v1/traces') {
        res.writeHead(404).end();
        return;
      }
      contentTypes.add(String(req.headers['content-type']));
      const payload = JSON.parse(body) as { resourceSpans: Array<{ resource: { attributes: OtlpSpan['attributes'] }; scopeSpans: Array<{ spans: OtlpSpan[] }> }> };
      for (const resourceSpans of payload.resourceSpans) {
        const service = String(resourceSpans.resource.attributes?.find((a) => a.key === 'service.name')?.value.stringValue);
        for (const scope of resourceSpans.scopeSpans) for (const span of scope.spans) spans.push({ ...span, service });
        authorizations.set(service, (authorizations.get(service) ?? new Set()).add(String(req.headers.authorization)));
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, spans, contentTypes, authorizations, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** Prometheus text format → samples. Enough of the format for prom-client's output: `name{l="v",...} value`. */
function parsePrometheus(text: string): Array<{ name: string; labels: Record<string, string>; value: number }> {
  const samples = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) throw new Error(`not a Prometheus sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[key!] = value!;
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

async function scrape(url: string) {
  const res = await fetch(url);
  expect(res.status).toBe(200);
  expect(res.headers.get('content-type')).toContain('text/plain');
  return parsePrometheus(await res.text());
}

/** The sum of the samples of `name` whose labels include `labels` (0 when none: a counter not yet moved). */
function sample(samples: ReturnType<typeof parsePrometheus>, name: string, labels: Record<string, string> = {}): number {
  return samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v)).reduce((sum, s) => sum + s.value, 0);
}

const OTLP_TOKEN = `otlp-${Math.random().toString(36).slice(2)}`;
let receiver: Awaited<ReturnType<typeof startOtlpReceiver>>;
let tracing: Tracing;
let stack: Stack;
let worker: WorkerProcess;
let apiMetricsUrl: string;
let closeApiMetrics: () => Promise<void>;
const apiLogLines: string[] = [];

beforeAll(async () => {
  receiver = await startOtlpReceiver();
  tracing = startTracing({ endpoint: receiver.url, serviceName: 'agentplane-api' });
  let stackDb: Stack['db'] | null = null;
  const apiMetrics = createApiMetrics({ sessionsByState: () => countSessionsByState(stackDb!.db) });
  stack = await startStack({ worker: false, tracing, apiMetrics, apiLog: createJsonLog((line) => apiLogLines.push(line)) });
  stackDb = stack.db;
  const served = await serveMetrics(apiMetrics.registry, { port: 0, host: '127.0.0.1' });
  apiMetricsUrl = served.url;
  closeApiMetrics = served.close;
  worker = await spawnWorker(stack, {
    AGENTPLANE_RUNTIMES: 'scripted',
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_SERVICE_NAME: 'agentplane-worker',
    // a receiver's key: read by the worker's config, then gone from its environment (test/secrets-env.test.ts)
    OTEL_EXPORTER_OTLP_HEADERS: `authorization=Bearer%20${OTLP_TOKEN}`,
    AGENTPLANE_METRICS_PORT: '0',
    AGENTPLANE_METRICS_HOST: '127.0.0.1',
    // a loaded 2-core machine can take more than a minute to load and bundle
  }, 150_000);
}, 240_000);

afterAll(async () => {
  await worker?.stop();
  await closeApiMetrics?.();
  await stack?.stop();
  await tracing?.shutdown();
  await receiver?.close();
});

function workerMetricsUrl(): string {
  const started = worker
    .output()
    .split('\n')
    .map((line) => (line.startsWith('{') ? (JSON.parse(line) as Record<string, unknown>) : null))
    .find((entry) => entry?.msg === 'worker started');
  expect(started?.metrics).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
  return started!.metrics as string;
}

describe('observability', () => {
  it('one session is one trace from the API request to the runtime calls; events, audit, metrics and logs agree', async () => {
    const workerMetricsBefore = await scrape(workerMetricsUrl());
    const apiMetricsBefore = await scrape(apiMetricsUrl);

    const credential = await stack.call('POST', '/v1/credentials', { name: 'model key', secret: SECRET });
    expect(credential.status).toBe(200);
    const agent = await stack.call('POST', '/v1/agents', {
      name: 'traced',
      model: 'scripted',
      runtime: { type: 'scripted' },
      model_provider: { base_url: 'http://203.0.113.10/v1', credential_id: credential.body.id },
      tool_policy: { rules: [{ tool: 'bash', pattern: 'ls*', action: 'allow' }, { tool: 'write', action: 'ask' }], default: 'deny' },
    });
    expect(agent.status).toBe(200);
    const created = await stack.call('POST', '/v1/sessions', {
      agent: agent.body.id,
      initial_events: [{ type: 'user.message', content: 'tool bash ls -la\ntool write a.txt\ncost 0.25\nsay done' }],
    });
    expect(created.status).toBe(200);
    const id = created.body.id as string;
    const createRequestId = created.headers.get('x-request-id');
    const waiting = await waitForStatus(stack, id, 'requires_action');
    const approve = await stack.call('POST', `/v1/sessions/${id}/events`, { events: [{ type: 'user.tool_confirmation', tool_use_id: waiting.pending_approvals[0].tool_use_id, result: 'allow' }] });
    expect(approve.status).toBe(200);
    await waitForStatus(stack, id, 'idle', 'end_turn');

    // ---- metrics: the worker counted the turn, the decisions, the wait and the spend; the API the requests
    const workerMetrics = await scrape(workerMetricsUrl());
    const moved = (name: string, labels: Record<string, string> = {}) => sample(workerMetrics, name, labels) - sample(workerMetricsBefore, name, labels);
    expect(moved('agentplane_turns_total', { runtime: 'scripted' })).toBe(1);
    expect(moved('agentplane_tool_decisions_total', { runtime: 'scripted', source: 'policy', outcome: 'allow' })).toBe(1);
    expect(moved('agentplane_tool_decisions_total', { runtime: 'scripted', source: 'policy', outcome: 'ask' })).toBe(1);
    expect(moved('agentplane_tool_decisions_total', { runtime: 'scripted', source: 'approval', outcome: 'allowed' })).toBe(1);
    expect(moved('agentplane_approval_wait_seconds_count', { outcome: 'allowed' })).toBe(1);
    expect(moved('agentplane_spend_usd_total', { runtime: 'scripted' })).toBeCloseTo(0.25, 6);
    expect(moved('agentplane_turn_legs_total', { runtime: 'scripted', status: 'end_turn' })).toBe(1);
    expect(moved('agentplane_runtime_errors_total', { runtime: 'scripted' })).toBe(0);

    const apiMetrics = await scrape(apiMetricsUrl);
    const requests = (labels: Record<string, string>) =>
      sample(apiMetrics, 'agentplane_http_request_duration_seconds_count', labels) - sample(apiMetricsBefore, 'agentplane_http_request_duration_seconds_count', labels);
    expect(requests({ method: 'POST', route: '/v1/sessions', status: '200' })).toBe(1);
    expect(requests({ method: 'POST', route: '/v1/sessions/:session_id/events', status: '200' })).toBe(1);
    // the template, never the id: no series per session
    expect(apiMetrics.some((s) => s.labels.route?.includes(id))).toBe(false);
    expect(sample(apiMetrics, 'agentplane_sessions', { state: 'idle', runtime: 'scripted' })).toBe(1);

    await stack.call('POST', `/v1/sessions/${id}/archive`);
    await stack.temporal.workflow.getHandle(id).result();
    // the worker sends its last spans as it stops; the API's are flushed here
    await worker.stop();
    await tracing.flush();

    // ---- one trace: API request → StartWorkflow → RunWorkflow → StartActivity → RunActivity → runtime call
    expect([...receiver.contentTypes].every((type) => type.startsWith('application/json'))).toBe(true);
    // the worker's exports carry the OTLP headers it was configured with, passed from its config, not its environment
    expect([...(receiver.authorizations.get('agentplane-worker') ?? [])]).toEqual([`Bearer ${OTLP_TOKEN}`]);
    const byId = new Map(receiver.spans.map((span) => [span.spanId, span]));
    const parentOf = (span: OtlpSpan) => (span.parentSpanId ? byId.get(span.parentSpanId) : undefined);
    const root = receiver.spans.find((span) => span.name === 'POST /v1/sessions' && span.attributes?.some((a) => a.key === 'agentplane.session_id' && a.value.stringValue === id));
    expect(root, 'the API span of the create request').toBeDefined();
    expect(root!.service).toBe('agentplane-api');
    expect(root!.parentSpanId ?? '').toBe('');
    const traceId = root!.traceId;
    const inTrace = receiver.spans.filter((span) => span.traceId === traceId);

    const start = inTrace.find((span) => span.name === 'StartWorkflow:agentSession');
    expect(parentOf(start!)?.spanId).toBe(root!.spanId);
    const run = inTrace.find((span) => span.name === 'RunWorkflow:agentSession');
    expect(run?.service).toBe('agentplane-worker');
    expect(parentOf(run!)?.spanId).toBe(start!.spanId);
    const runtimeTurns = inTrace.filter((span) => span.name === 'runtime.turn scripted');
    // the first leg stops for the approval, the second finishes the turn
    expect(runtimeTurns).toHaveLength(2);
    for (const turn of runtimeTurns) {
      const activity = parentOf(turn);
      expect(activity?.name).toBe('RunActivity:runTurn');
      const scheduled = parentOf(activity!);
      expect(scheduled?.name).toBe('StartActivity:runTurn');
      expect(parentOf(scheduled!)?.spanId).toBe(run!.spanId);
    }
    expect(inTrace.some((span) => span.name === 'runtime.open scripted')).toBe(true);
    const bookkeeping = inTrace.filter((span) => span.name === 'RunActivity:recordEvents');
    expect(bookkeeping.length).toBeGreaterThan(0);
    // a span of every kind reached the receiver from its own process, and each has a parent in the trace but the root
    for (const span of inTrace) if (span !== root) expect(parentOf(span), span.name).toBeDefined();

    // ---- the trace id on every event and on the session's audit rows
    const events = await eventsOf(stack, id);
    expect(events.length).toBeGreaterThan(5);
    // a decision is a request of its own (an update the workflow records before it answers): its event and audit row
    // carry that request's trace, which goes on into the workflow's update handler and the activity that writes them
    const approveSpan = receiver.spans.find((span) => span.name === 'POST /v1/sessions/:session_id/events');
    expect(approveSpan?.traceId).toBeDefined();
    expect(approveSpan!.traceId).not.toBe(traceId);
    expect(events.filter((event) => event.trace_id !== traceId).map((event) => [event.type, event.trace_id])).toEqual([['user.tool_confirmation', approveSpan!.traceId]]);
    const audit = await stack.call('GET', '/v1/audit?limit=500');
    expect(audit.status).toBe(200);
    const sessionRows = (audit.body.data as any[]).filter((row) => row.target.startsWith(id) || row.data?.session_id === id);
    expect(sessionRows.map((row) => row.action)).toEqual(expect.arrayContaining(['session.create', 'credential.use', 'tool.evaluate', 'tool.approval', 'session.archive']));
    const archiveRow = sessionRows.find((row) => row.action === 'session.archive');
    expect(sessionRows.filter((row) => row !== archiveRow && row.trace_id !== traceId).map((row) => [row.action, row.trace_id])).toEqual([['tool.approval', approveSpan!.traceId]]);
    // archiving is a request of its own: its row carries that request's trace
    const archiveSpan = receiver.spans.find((span) => span.name === 'POST /v1/sessions/:session_id/archive');
    expect(archiveRow.trace_id).toBe(archiveSpan?.traceId);
    expect(archiveRow.trace_id).not.toBe(traceId);

    // ---- JSON logs: ids on the lines, no secret anywhere
    const apiLog = apiLogLines.map((line) => JSON.parse(line) as Record<string, unknown>);
    const createLine = apiLog.find((entry) => entry.msg === 'request' && entry.route === '/v1/sessions' && entry.method === 'POST');
    expect(createLine).toMatchObject({ requestId: createRequestId, sessionId: id, traceId, status: 200 });
    const workerLog = worker
      .output()
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
    const decisionLines = workerLog.filter((entry) => entry.msg === 'tool decision' && entry.sessionId === id);
    expect(decisionLines).toHaveLength(2);
    for (const line of decisionLines) expect(line.traceId).toBe(traceId);
    const everything = apiLogLines.join('\n') + worker.output();
    expect(everything).not.toContain(SECRET);
    expect(everything).not.toContain(stack.adminKey);
  });

  it('masks fields named like secrets and values shaped like keys, whatever a caller passes', () => {
    const lines: string[] = [];
    const log = createJsonLog((line) => lines.push(line));
    log({ level: 'WARN', msg: 'careless', authorization: `Bearer ${SECRET}`, nested: { apiKey: SECRET, note: `used ap_${'x'.repeat(24)} here` }, keyId: 'key_123' });
    const entry = JSON.parse(lines[0]!);
    expect(lines[0]).not.toContain(SECRET);
    expect(entry).toMatchObject({ level: 'WARN', msg: 'careless', authorization: '[redacted]', nested: { apiKey: '[redacted]', note: 'used [redacted] here' }, keyId: 'key_123' });
  });
});
