/**
 * The worker's runtimes, built from runtimes/registry.ts: each descriptor's `create` imports its adapter module only
 * when the worker runs that runtime. The SDKs behind them (LangChain, the Claude Agent SDK, ...) take seconds to load,
 * and a replacement worker should start polling as soon as it can.
 */
import { forRuntime } from '../runtimes/kit/log';
import { descriptorOf, RUNTIME_KINDS, type RuntimeKind } from '../runtimes/registry';
import type { RuntimeOptions, RuntimeRegistry } from '../runtimes/runtime-adapter';

export type { RuntimeOptions } from '../runtimes/runtime-adapter';

export const RUNTIME_NAMES = RUNTIME_KINDS;

export async function buildRuntimes(names: ReadonlyArray<RuntimeKind>, opts: RuntimeOptions): Promise<RuntimeRegistry> {
  const registry: RuntimeRegistry = {};
  for (const name of names) registry[name] = await descriptorOf(name).create({ ...opts, logger: opts.logger && forRuntime(opts.logger, name) });
  return registry;
}
