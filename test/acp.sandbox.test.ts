/** ACP agents (the built-in `opencode acp`) attacked from inside their sessions' sandboxes: see test/support/sandbox-suite.ts. */
import { createAcpAdapter } from '../runtimes/acp/acp.adapter';
import { describeSandboxAttacks } from './support/sandbox-suite';

describeSandboxAttacks({ kind: 'acp', model: 'scripted-model', config: { agent: 'opencode' }, adapter: (stack) => ({ acp: createAcpAdapter({ dataDir: stack.dataDir, sandboxes: stack.sandboxes }) }) });
