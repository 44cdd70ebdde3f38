/**
 * Workflow interceptors, bundled with the workflow code (worker/create-worker.ts): a "RunWorkflow" span per run
 * under the trace the API started, and the trace context in every activity's headers. Spans leave the sandbox
 * through the `exporter` sink, which the worker always registers (it drops them when tracing is off), so the
 * bundle and the histories it writes are the same with tracing on or off.
 */
export { interceptors } from '@temporalio/interceptors-opentelemetry/lib/workflow-interceptors';
