/**
 * Tracing: one trace per session, from the API request that starts it through the workflow, its activities and
 * the runtime calls. Temporal's OpenTelemetry interceptors carry the context across the server in workflow and
 * activity headers; this module builds the exporter and the pieces the API and the worker plug in.
 *
 * Off (no endpoint) means no provider is registered: the OpenTelemetry API then hands out no-op spans, so the
 * spans below cost a function call and `activeTraceId()` is null. The workflow-side interceptors are in the
 * workflow bundle either way (workflows/interceptors.ts), so a history replays the same with tracing on or off.
 */
import { context, isSpanContextValid, propagation, SpanKind, SpanStatusCode, trace, type Attributes, type Context, type Tracer } from '@opentelemetry/api';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { Resource } from '@opentelemetry/resources';
import { BatchSpanProcessor, type SpanProcessor } from '@opentelemetry/sdk-trace-base';
import { NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import type { ClientInterceptors } from '@temporalio/client';
import {
  makeWorkflowExporter,
  OpenTelemetryActivityInboundInterceptor,
  OpenTelemetryActivityOutboundInterceptor,
  OpenTelemetryWorkflowClientInterceptor,
} from '@temporalio/interceptors-opentelemetry';
import type { InjectedSinks, WorkerOptions } from '@temporalio/worker';

const TRACER_NAME = 'agentplane';

export interface Tracing {
  tracer: Tracer;
  spanProcessor: SpanProcessor;
  resource: Resource;
  /** sends what is buffered; tests call it before reading the receiver */
  flush(): Promise<void>;
  shutdown(): Promise<void>;
}

/**
 * Registers the process-wide tracer provider (OpenTelemetry's context and propagation are global by design: the
 * Temporal interceptors find them there). Call once, from a composition root.
 */
export function startTracing(opts: { endpoint: string; serviceName: string; headers?: Record<string, string> }): Tracing {
  const resource = new Resource({ 'service.name': opts.serviceName });
  // the headers come from the config (OTEL_EXPORTER_OTLP_HEADERS), which has taken them out of the environment
  const exporter = new OTLPTraceExporter({ url: `${opts.endpoint.replace(/\/+$/, '')}/v1/traces`, headers: opts.headers });
  const spanProcessor = new BatchSpanProcessor(exporter);
  const provider = new NodeTracerProvider({ resource, spanProcessors: [spanProcessor] });
  provider.register();
  return {
    tracer: provider.getTracer(TRACER_NAME),
    spanProcessor,
    resource,
    flush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}

/** The trace the caller runs in, or null (tracing off, or no span). Written on every event and audit row. */
export function activeTraceId(): string | null {
  const span = trace.getActiveSpan()?.spanContext();
  return span && isSpanContextValid(span) ? span.traceId : null;
}

/** Runs `fn` in a child span of the active one; a throw marks the span as failed and is rethrown. */
export async function inSpan<T>(name: string, attributes: Attributes, fn: () => Promise<T>): Promise<T> {
  return trace.getTracer(TRACER_NAME).startActiveSpan(name, { kind: SpanKind.INTERNAL, attributes }, async (span) => {
    try {
      return await fn();
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: SpanStatusCode.ERROR, message: (err as Error).message });
      throw err;
    } finally {
      span.end();
    }
  });
}

/** The caller's trace context from W3C `traceparent` headers, so a request that is part of a trace continues it. */
export function extractContext(headers: Record<string, string>): Context {
  return propagation.extract(context.active(), headers);
}

/** Client interceptors: starting or signalling a workflow carries the active trace to it. */
export function clientInterceptors(tracing: Tracing | null): ClientInterceptors | undefined {
  return tracing ? { workflow: [new OpenTelemetryWorkflowClientInterceptor({ tracer: tracing.tracer })] } : undefined;
}

/**
 * What a worker adds: activity spans (children of the workflow's "StartActivity" spans) and the sink through
 * which the workflow sandbox hands its spans out. With tracing off the sink drops them.
 */
export function workerTracing(tracing: Tracing | null): Pick<WorkerOptions, 'sinks'> & { activityInterceptors: NonNullable<NonNullable<WorkerOptions['interceptors']>['activity']> } {
  const sinks: InjectedSinks<any> = {
    exporter: tracing ? makeWorkflowExporter(tracing.spanProcessor, tracing.resource) : { export: { fn: () => undefined } },
  };
  if (!tracing) return { sinks, activityInterceptors: [] };
  return {
    sinks,
    activityInterceptors: [
      (ctx) => ({
        inbound: new OpenTelemetryActivityInboundInterceptor(ctx, { tracer: tracing.tracer }),
        outbound: new OpenTelemetryActivityOutboundInterceptor(ctx),
      }),
    ],
  };
}
