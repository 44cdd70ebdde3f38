/** OpenCode sessions attacked from inside their sandboxes: see test/support/sandbox-suite.ts. */
import { createOpenCodeAdapter } from '../runtimes/opencode/opencode.adapter';
import { describeSandboxAttacks } from './support/sandbox-suite';

describeSandboxAttacks({ kind: 'opencode', model: 'scripted-model', adapter: (stack) => ({ opencode: createOpenCodeAdapter({ dataDir: stack.dataDir, sandboxes: stack.sandboxes }) }) });
