/**
 * Structured logs: one JSON object per line, the same shape from the API and the worker. Every line carries the
 * trace it was written in (`traceId`) and, where there is one, `requestId` and `sessionId`, so a log line, a trace
 * and a session's events can be joined.
 *
 * Secrets never belong in a log entry; as a second line of defence, fields named like a secret and values shaped
 * like a key (runtimes/kit/redact.ts: provider and agentplane keys, webhook secrets, bearer tokens) are masked before
 * the line is written.
 */
import type { LogEntry as TemporalLogEntry } from '@temporalio/worker';
import { redact as redactText, REDACTED } from '../runtimes/kit/redact';
import { activeTraceId } from './tracing';

export type LogLevel = 'TRACE' | 'DEBUG' | 'INFO' | 'WARN' | 'ERROR';
/** `msg` and `level` by convention; any other fields */
export type Log = (entry: Record<string, unknown>) => void;

const SECRET_KEY = /^(authorization|x-api-key|api[_-]?key|secret|secrets|password|token|access[_-]?token|model[_-]?api[_-]?key|plain)$/i;
const MASK = REDACTED;

export function createJsonLog(write: (line: string) => void = (line) => process.stdout.write(line)): Log {
  return (entry) => {
    const traceId = entry.traceId ?? activeTraceId() ?? undefined;
    write(`${JSON.stringify(redact({ time: new Date().toISOString(), level: 'INFO', ...entry, traceId }))}\n`);
  };
}

const RANK: Record<LogLevel, number> = { TRACE: 0, DEBUG: 1, INFO: 2, WARN: 3, ERROR: 4 };

/**
 * The log as runtime adapters take it (`debug`/`info`/`warn` with fields: runtimes/runtime-adapter.ts AdapterLogger),
 * writing only what the level lets through; `debug` is absent below DEBUG, so adapters skip building its fields.
 */
export function createAdapterLog(log: Log, level: LogLevel = 'INFO') {
  const at = (lineLevel: LogLevel) => (msg: string, meta?: Record<string, unknown>) => {
    if (RANK[lineLevel] >= RANK[level]) log({ level: lineLevel, msg, ...meta });
  };
  return { ...(RANK[level] <= RANK.DEBUG ? { debug: at('DEBUG') } : {}), info: at('INFO'), warn: at('WARN') };
}

/** A Temporal SDK log entry (worker, workflow or activity) in our shape: workflow id is the session id. */
export function fromTemporalEntry(entry: TemporalLogEntry): Record<string, unknown> {
  const { trace_id: traceId, span_id: _span, trace_flags: _flags, ...meta } = (entry.meta ?? {}) as Record<string, unknown>;
  return {
    level: entry.level as LogLevel,
    msg: entry.message,
    time: new Date(Number(entry.timestampNanos / 1_000_000n)).toISOString(),
    ...meta,
    ...(meta.workflowId && !meta.sessionId ? { sessionId: meta.workflowId } : {}),
    ...(traceId ? { traceId } : {}),
  };
}

function redact(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactText(value);
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => redact(v, depth + 1));
  if (value instanceof Error) return redact({ name: value.name, message: value.message }, depth);
  return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, SECRET_KEY.test(k) ? MASK : redact(v, depth + 1)]));
}
