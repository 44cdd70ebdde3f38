/**
 * Session sandboxes for a test that drives an adapter without a stack (no database to record refusals in): the same
 * provider and egress rule a worker uses, bubblewrap unless told otherwise, refusals kept in `denied`. Adapters start
 * their processes only through a sandbox, so their own tests run them in one too.
 */
import { chmod, mkdir, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { parseEnv, sandboxEnv } from '../../config/env';
import { createEgressGuard } from '../../runtimes/kit/egress';
import { SILENT_LOGGER } from '../../runtimes/kit/log';
import { createSandboxProvider, type EgressDenial, type SandboxKind } from '../../runtimes/kit/sandbox';
import { createSessionSandboxes, type SessionSandboxes } from '../../runtimes/kit/session-sandbox';

export interface TestSandboxes {
  sandboxes: SessionSandboxes;
  denied: Array<EgressDenial & { sessionId: string }>;
}

/**
 * Sandboxes whose sessions keep their directories under `dataDir`. The test's temporary directories between tmpdir
 * and `dataDir` are made searchable by others (never listable), as a worker's data dir is, so that a session's
 * sandbox user can reach its own directories. The platform's address rule allows loopback (`allowPrivate`, default
 * 127.0.0.1/32), where a test's scripted model listens, as a stack's LOCAL_RECEIVERS do.
 */
export async function testSandboxes(dataDir: string, opts: { kind?: SandboxKind; allowPrivate?: string[] } = {}): Promise<TestSandboxes> {
  await mkdir(dataDir, { recursive: true });
  const kind = opts.kind ?? 'bubblewrap';
  if (kind === 'bubblewrap' && !relative(tmpdir(), dataDir).startsWith('..')) {
    for (let dir = dataDir; dir !== tmpdir() && dir !== dirname(dir); dir = dirname(dir)) {
      await chmod(dir, (await stat(dir)).mode & 0o777 | 0o011);
    }
  }
  const denied: TestSandboxes['denied'] = [];
  const sandboxes = createSessionSandboxes({
    provider: createSandboxProvider({ ...parseEnv(sandboxEnv, {}), AGENTPLANE_SANDBOX: kind }, SILENT_LOGGER),
    egress: createEgressGuard({ allowPrivate: opts.allowPrivate ?? ['127.0.0.1/32'] }),
    runDir: join(dataDir, 'run'),
    onDenied: (sessionId, denial) => denied.push({ sessionId, ...denial }),
  });
  return { sandboxes, denied };
}
