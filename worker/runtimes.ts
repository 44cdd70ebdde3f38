import { RUNTIME_KINDS, type RuntimeKind } from '../governance/types';
import type { AcpAgentSpec } from '../runtimes/acp/descriptor';
import type { EgressGuard } from '../runtimes/kit/egress';
import { forRuntime } from '../runtimes/kit/log';
import { descriptor as acp } from '../runtimes/acp/descriptor';
import { descriptor as claudeCode } from '../runtimes/claude-code/descriptor';
import { descriptor as cursor } from '../runtimes/cursor/descriptor';
import { descriptor as deepagents } from '../runtimes/deepagents/descriptor';
import { descriptor as hermes } from '../runtimes/hermes/descriptor';
import { descriptor as managedAgents } from '../runtimes/managed-agents/descriptor';
import { descriptor as openclaw } from '../runtimes/openclaw/descriptor';
import { descriptor as opencode } from '../runtimes/opencode/descriptor';
import { descriptor as scripted } from '../runtimes/scripted/descriptor';
import type { AdapterLogger, RuntimeAdapter, RuntimeRegistry } from '../runtimes/runtime-adapter';

export const RUNTIME_NAMES = RUNTIME_KINDS;

export interface RuntimeOptions {
  dataDir: string;
  opencodeBin?: string;
  acpAgents?: Record<string, AcpAgentSpec>;
  openclaw?: { nodeBin: string; openclawBin: string };
  /** the scripted runtime appends one JSON line per prompt it "sends" here (chaos runs count them across worker processes) */
  scriptedPromptLog?: string;
  /** the worker's structured log; each adapter gets it with its `runtime` named */
  logger?: AdapterLogger;
  /** the connections adapters open themselves (remote runtimes, DeepAgents' model) go through it */
  egress?: EgressGuard;
}

/**
 * Each adapter module is imported only when the worker runs that runtime: the SDKs behind them (LangChain, the
 * Claude Agent SDK, ...) take seconds to load, and a replacement worker should start polling as soon as it can.
 */
const LOADERS: Record<RuntimeKind, (opts: RuntimeOptions) => Promise<RuntimeAdapter>> = {
  opencode: (o) => opencode.create(o),
  'claude-code': (o) => claudeCode.create(o),
  'managed-agents': (o) => managedAgents.create(o),
  cursor: (o) => cursor.create(o),
  deepagents: (o) => deepagents.create(o),
  hermes: (o) => hermes.create(o),
  acp: (o) => acp.create(o),
  openclaw: (o) => openclaw.create(o),
  scripted: (o) => scripted.create(o),
};

export async function buildRuntimes(names: ReadonlyArray<RuntimeKind>, opts: RuntimeOptions): Promise<RuntimeRegistry> {
  const registry: RuntimeRegistry = {};
  for (const name of names) registry[name] = await LOADERS[name]({ ...opts, logger: opts.logger && forRuntime(opts.logger, name) });
  return registry;
}
