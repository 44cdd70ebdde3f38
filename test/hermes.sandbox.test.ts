/** Hermes sessions attacked from inside their sandboxes: see test/support/sandbox-suite.ts. */
import { createHermesAdapter } from '../runtimes/hermes/hermes.adapter';
import { ensureHermes, hermesBin } from './support/hermes';
import { describeSandboxAttacks } from './support/sandbox-suite';

// (also puts the binary in HERMES_BIN, for the suite's worker process)
const installed = ensureHermes();
if ('error' in installed) console.error(`\n!!! Hermes sandbox tests SKIPPED: ${installed.error}\n`);

describeSandboxAttacks({
  kind: 'hermes',
  model: 'claude-sonnet-4-5',
  adapter: (stack) => ({ hermes: createHermesAdapter({ binaryPath: hermesBin(), dataDir: stack.dataDir, sandboxes: stack.sandboxes, pollMs: 200, settleMs: 500 }) }),
  shell: { tool: ['terminal'], input: (command) => ({ command }) },
});
