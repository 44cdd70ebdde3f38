/**
 * The adapter logger: the worker's structured log (observability/logger.ts) as adapters take it, with the runtime
 * named on every line, or silence when a test builds an adapter without one.
 */
import type { AdapterLogger, RuntimeKind } from '../runtime-adapter';

export const SILENT_LOGGER: AdapterLogger = { info() {}, warn() {} };

/** The worker's logger with the runtime named on every line. */
export function forRuntime(logger: AdapterLogger, runtime: RuntimeKind): AdapterLogger {
  const { debug } = logger;
  return {
    ...(debug ? { debug: (msg: string, meta?: Record<string, unknown>) => debug.call(logger, msg, { runtime, ...meta }) } : {}),
    info: (msg, meta) => logger.info(msg, { runtime, ...meta }),
    warn: (msg, meta) => logger.warn(msg, { runtime, ...meta }),
  };
}
