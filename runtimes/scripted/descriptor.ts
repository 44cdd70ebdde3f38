/**
 * The scripted runtime: in process, following a script written in the user message (scripted.adapter.ts). The no-op
 * runtime of the benchmarks and the fast runtime of workflow tests; a worker registers it only when asked.
 *
 * `runtime.config`: nothing is read; keys are allowed and ignored (tests give it settings other runtimes would refuse,
 * to show they do not leak into its checks). It reports its own cost, so a `cost` is refused like everywhere.
 */
import { runtimeConfig } from '../kit/config';
import type { RuntimeCapabilities, RuntimeDescriptor } from '../runtime-adapter';

export const SCRIPTED_CAPABILITIES = { approvals: true, interrupt: true, reattach: true, cost: 'reported', streaming: true, denies: 'any', sandbox: 'no-process', gateway: false, portable: 'stateless' } as const satisfies RuntimeCapabilities;

export const descriptor: RuntimeDescriptor<'scripted'> = {
  kind: 'scripted',
  capabilities: SCRIPTED_CAPABILITIES,
  configSchema: runtimeConfig('scripted', {}, { unknownKeys: 'allow' }),
  create: async (o) => {
    const { createScriptedAdapter, promptLog } = await import('./scripted.adapter');
    return createScriptedAdapter(o.scriptedPromptLog ? promptLog(o.scriptedPromptLog) : {});
  },
};
