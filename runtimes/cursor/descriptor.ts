/**
 * Cursor Cloud Agents, remote, over its API v1 (cursor.adapter.ts). Runs in Cursor's VMs: no local process, no approvals.
 *
 * `runtime.config`: `repos` (`[{url, startingRef?}]`, passed to Cursor as given) and `mode` (`agent` | `plan`). Nothing
 * else is read, so anything else is refused.
 */
import { z } from 'zod';
import { runtimeConfig } from '../kit/config';
import type { RuntimeCapabilities, RuntimeDescriptor } from '../runtime-adapter';

export const CURSOR_CAPABILITIES = { approvals: false, interrupt: true, reattach: true, cost: 'priced', streaming: true, denies: 'none', sandbox: 'remote', gateway: false, portable: 'remote' } as const satisfies RuntimeCapabilities;

const configSchema = runtimeConfig(
  'cursor',
  {
    repos: z
      .array(z.looseObject({ url: z.string().min(1).max(2048), startingRef: z.string().min(1).max(256).optional() }))
      .max(20)
      .optional(),
    mode: z.enum(['agent', 'plan']).optional(),
  },
  { unknownKeys: 'refuse' },
);
export type CursorConfig = z.infer<typeof configSchema>;

export const descriptor: RuntimeDescriptor<'cursor'> = {
  kind: 'cursor',
  capabilities: CURSOR_CAPABILITIES,
  configSchema,
  create: async (o) => (await import('./cursor.adapter')).createCursorAdapter({ egress: o.egress }),
};
