/**
 * Every runtime agentplane can drive: the one list. Adding a runtime is its folder (`runtimes/<kind>/descriptor.ts`
 * and its adapter) and one line here; the kinds the API accepts, `GET /v1/runtimes`, the README's capability table,
 * the worker's runtimes and the conformance-file check all derive from this list (test/registry.test.ts checks it
 * against the folders).
 *
 * Descriptors are data and a lazy `create`: importing this module loads no adapter and no SDK, so the API process
 * imports it freely (test/registry.test.ts proves what an API process loads).
 */
import { descriptor as acp } from './acp/descriptor';
import { descriptor as claudeCode } from './claude-code/descriptor';
import { descriptor as cursor } from './cursor/descriptor';
import { descriptor as deepagents } from './deepagents/descriptor';
import { descriptor as hermes } from './hermes/descriptor';
import { descriptor as managedAgents } from './managed-agents/descriptor';
import { descriptor as openclaw } from './openclaw/descriptor';
import { descriptor as opencode } from './opencode/descriptor';
import { descriptor as scripted } from './scripted/descriptor';
import type { RuntimeCapabilities, RuntimeDescriptor } from './runtime-adapter';

/** In the order the API and the README list them; `opencode` is the default runtime of an agent. */
export const RUNTIMES = [
  opencode,
  claudeCode,
  scripted,
  managedAgents,
  cursor,
  deepagents,
  acp,
  hermes,
  openclaw,
] as const;

export type RuntimeKind = (typeof RUNTIMES)[number]['kind'];

export const RUNTIME_KINDS = RUNTIMES.map((d) => d.kind) as [RuntimeKind, ...RuntimeKind[]];

const BY_KIND = new Map<string, RuntimeDescriptor<RuntimeKind>>(RUNTIMES.map((d) => [d.kind, d]));

export function descriptorOf(kind: RuntimeKind): RuntimeDescriptor<RuntimeKind> {
  return BY_KIND.get(kind)!;
}

/** What each runtime can do, as its descriptor declares it: served by `GET /v1/runtimes`, the README table's source. */
export const RUNTIME_CAPABILITIES = Object.fromEntries(RUNTIMES.map((d) => [d.kind, d.capabilities])) as Record<RuntimeKind, RuntimeCapabilities>;
