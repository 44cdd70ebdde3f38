/** DeepAgents sessions, whose tools run in their sandboxes, attacked from inside: see test/support/sandbox-suite.ts. */
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createDeepAgentsAdapter } from '../runtimes/deepagents/deepagents.adapter';
import { createSandboxBackend, type BaseSandboxClass } from '../runtimes/deepagents/sandbox-backend';
import { createEgressGuard } from '../runtimes/kit/egress';
import { createBubblewrapProvider } from '../runtimes/kit/sandbox/bubblewrap';
import { createSessionSandboxes, type SessionSandboxes } from '../runtimes/kit/session-sandbox';
import { describeSandboxAttacks } from './support/sandbox-suite';

describeSandboxAttacks({ kind: 'deepagents', model: 'scripted-model', adapter: (stack) => ({ deepagents: createDeepAgentsAdapter({ dataDir: stack.dataDir, egress: stack.egress, sandboxes: stack.sandboxes }) }) });

describe('DeepAgents file tools in the sandbox', () => {
  let root: string;
  let sandboxes: SessionSandboxes;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'agentplane-da-files-'));
    await chmod(root, 0o711);
    sandboxes = createSessionSandboxes({ provider: createBubblewrapProvider({ logger: { info() {}, warn() {} } }), egress: createEgressGuard({ allowPrivate: [] }), runDir: join(root, 'run'), onDenied: () => {} });
  });

  afterAll(async () => {
    await sandboxes.closeAll();
    await rm(root, { recursive: true, force: true });
  });

  it('a symlink the agent plants in its workspace is followed inside the sandbox, never on the worker: the worker\'s file is neither read nor written', async () => {
    const secret = join(root, 'worker-secret.txt');
    await writeFile(secret, 'the worker\'s secret\n');
    const session = await sandboxes.open({ sessionId: 'sesn_da_symlink', workspace: join(root, 'ws'), state: join(root, 'state'), networking: { type: 'unrestricted' } });
    const { BaseSandbox } = (await import('deepagents' as string)) as { BaseSandbox: BaseSandboxClass };
    const backend = createSandboxBackend(BaseSandbox, { sandbox: session.sandbox, env: session.env as Record<string, string>, timeoutSeconds: 30 }) as any;
    // the agent plants the link with its own shell, as a tool call would
    expect((await backend.execute(`ln -s ${secret} /workspace/link && echo planted`)).output).toContain('planted');
    const [read] = await backend.downloadFiles(['/workspace/link']);
    expect(read.content).toBeNull();
    expect(read.error).toBe('file_not_found');
    const [written] = await backend.uploadFiles([['/workspace/link', new TextEncoder().encode('overwritten\n')]]);
    expect(written.error).not.toBeNull();
    expect(await readFile(secret, 'utf8')).toBe('the worker\'s secret\n');
    // and what it writes lands in its own workspace on the host
    await backend.uploadFiles([['/workspace/notes/a.txt', new TextEncoder().encode('inside\n')]]);
    expect(await readFile(join(root, 'ws', 'notes', 'a.txt'), 'utf8')).toBe('inside\n');
    expect(new TextDecoder().decode((await backend.downloadFiles(['/workspace/notes/a.txt']))[0].content)).toBe('inside\n');
  });
});
