/**
 * What the session sandbox adds to a session's first turn, end to end with a real runtime: an OpenCode session's first
 * turn (the adapter's `open`, which starts `opencode serve`, then one message answered by the scripted model) in its
 * bubblewrap sandbox (with the egress proxy and the model bridge) and unsandboxed, alternating, in the same run. The
 * difference of the medians is the figure to hold against the target (≤ 300 ms); the ratio travels between
 * machines. A tool call inside pays nothing more: the runtime's tools are its children, inside the same sandbox (the
 * per-spawn cost is bench/sandbox.ts).
 *
 *   npx tsx bench/sandbox-first-turn.ts [--rounds 5]
 */
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { createEgressGuard } from '../runtimes/kit/egress';
import { createBubblewrapProvider } from '../runtimes/kit/sandbox/bubblewrap';
import { createNoneProvider } from '../runtimes/kit/sandbox/none';
import { createSessionSandboxes } from '../runtimes/kit/session-sandbox';
import { createOpenCodeAdapter } from '../runtimes/opencode/opencode.adapter';
import type { RuntimeAdapter, TurnContext } from '../runtimes/runtime-adapter';
import { MemorySink } from '../test/support/memory-sink';
import { startScriptedModel } from '../test/support/scripted-model';
import { testAgent } from '../test/support/test-agent';
import { flags, ms, printMachine, printTable, summarize } from './support';

const opts = flags({ rounds: 5 });
printMachine(`an OpenCode session's first turn, sandboxed and not (${opts.rounds} rounds each, alternating, after one warm-up each)`);

const root = mkdtempSync(join(tmpdir(), 'agentplane-bench-first-turn-'));
chmodSync(root, 0o711);
const model = await startScriptedModel();
model.setScript([{ match: 'first turn', steps: [{ text: 'ready' }] }]);
const egress = createEgressGuard({ allowPrivate: ['127.0.0.1/32'] });
const sandboxes = createSessionSandboxes({ provider: createBubblewrapProvider({ logger: { info() {}, warn() {} } }), egress, runDir: join(root, 'run'), onDenied: () => {} });
const PRICES = { 'scripted-model': { input: 3, output: 15 } };
const adapters: Record<'sandboxed' | 'unsandboxed', RuntimeAdapter> = {
  sandboxed: createOpenCodeAdapter({ dataDir: join(root, 'sandboxed'), prices: PRICES, sandboxes }),
  // the baseline: the same adapter on the `none` provider (no namespaces, no bridges: the host's loopback)
  unsandboxed: createOpenCodeAdapter({ dataDir: join(root, 'unsandboxed'), prices: PRICES, sandboxes: createSessionSandboxes({ provider: createNoneProvider({ logger: { warn() {} } }), egress, runDir: join(root, 'run-none'), onDenied: () => {} }) }),
};

let counter = 0;
async function firstTurn(kind: keyof typeof adapters): Promise<number> {
  const adapter = adapters[kind];
  const sessionId = `sesn_bench${kind}${++counter}`;
  const ctx: TurnContext = {
    sessionId,
    agent: testAgent({ name: 'bench', runtime: { type: 'opencode', config: {} }, model: 'scripted-model', modelProvider: { baseUrl: model.openaiBaseUrl, credentialId: 'cred_bench' } }),
    workdir: join(root, kind, 'sessions', sessionId),
    secrets: { modelApiKey: 'sk-bench' },
  };
  const started = performance.now();
  const ref = await adapter.open(ctx, null);
  const sink = new MemorySink();
  const result = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 't1', messageId: `m_${sessionId}`, text: 'first turn' }, sink);
  const elapsed = performance.now() - started;
  if (result.status !== 'end_turn') throw new Error(`${kind}: the turn ended ${JSON.stringify(result)}`);
  await adapter.close(ref);
  return elapsed;
}

try {
  await firstTurn('sandboxed');
  await firstTurn('unsandboxed');
  const samples = { sandboxed: [] as number[], unsandboxed: [] as number[] };
  for (let i = 0; i < opts.rounds; i++) {
    samples.sandboxed.push(await firstTurn('sandboxed'));
    samples.unsandboxed.push(await firstTurn('unsandboxed'));
  }
  const s = summarize(samples.sandboxed);
  const u = summarize(samples.unsandboxed);
  printTable(
    ['first turn (open + one message)', 'p50', 'mean'],
    [
      ['unsandboxed (baseline)', ms(u.p50), ms(u.mean)],
      ['in its bubblewrap sandbox', ms(s.p50), ms(s.mean)],
    ],
  );
  console.log(`added by the sandbox: ${ms(s.p50 - u.p50)} at p50 (target ≤ 300 ms), ratio ${(s.p50 / u.p50).toFixed(2)}x`);
} finally {
  await sandboxes.closeAll();
  await model.close();
  rmSync(root, { recursive: true, force: true });
}
