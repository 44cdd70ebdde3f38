/**
 * The sandbox provider the configuration names (config/env.ts `sandboxEnv`). The worker builds one at start and
 * prepares a sandbox per session with it; see ./provider.ts for what a sandbox guarantees.
 */
import { createBubblewrapProvider } from './bubblewrap';
import { createNoneProvider } from './none';
import type { SandboxLimits, SandboxProvider } from './provider';

export interface SandboxSettings {
  AGENTPLANE_SANDBOX: 'bubblewrap' | 'none';
  AGENTPLANE_SANDBOX_PROCESSES: number;
  AGENTPLANE_SANDBOX_MEMORY_MB: number;
  AGENTPLANE_SANDBOX_CPU_SECONDS: number;
  AGENTPLANE_SANDBOX_FILE_SIZE_MB: number;
  AGENTPLANE_SANDBOX_OPEN_FILES: number;
  AGENTPLANE_SANDBOX_TMP_MB: number;
  AGENTPLANE_SANDBOX_UID_BASE: number;
  AGENTPLANE_SANDBOX_UID_COUNT: number;
}

export function sandboxLimits(settings: SandboxSettings): SandboxLimits {
  const mib = 1024 ** 2;
  return {
    processes: settings.AGENTPLANE_SANDBOX_PROCESSES,
    memoryBytes: settings.AGENTPLANE_SANDBOX_MEMORY_MB * mib,
    cpuSeconds: settings.AGENTPLANE_SANDBOX_CPU_SECONDS,
    fileSizeBytes: settings.AGENTPLANE_SANDBOX_FILE_SIZE_MB * mib,
    openFiles: settings.AGENTPLANE_SANDBOX_OPEN_FILES,
    tmpBytes: settings.AGENTPLANE_SANDBOX_TMP_MB * mib,
  };
}

export function createSandboxProvider(
  settings: SandboxSettings,
  logger: { info(msg: string, meta?: Record<string, unknown>): void; warn(msg: string, meta?: Record<string, unknown>): void },
): SandboxProvider {
  const limits = sandboxLimits(settings);
  if (settings.AGENTPLANE_SANDBOX === 'none') return createNoneProvider({ limits, logger });
  return createBubblewrapProvider({ limits, uidBase: settings.AGENTPLANE_SANDBOX_UID_BASE, uidCount: settings.AGENTPLANE_SANDBOX_UID_COUNT, logger });
}

export type { Sandbox, SandboxExit, SandboxKind, SandboxLimits, SandboxProcess, SandboxProvider, SandboxSpawnOptions, SandboxSpec } from './provider';
export { DEFAULT_LIMITS, sandboxDispatcher } from './provider';
export { createEgressProxy, createModelBridge, proxyEnv, type EgressDenial, type EgressProxy, type ModelBridge } from './egress-proxy';
