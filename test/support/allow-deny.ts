/**
 * The allow/deny pair an adapter test with a real runtime runs: two turns in one runtime session, an allowed bash
 * call that runs and a denied one that is refused, the model seeing the refusal. Returns the sink and both
 * requests so the test can check what is particular to its runtime.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { RuntimeAdapter, RuntimeSessionRef, TurnContext } from '../../runtimes/runtime-adapter';
import { MemorySink } from './memory-sink';
import type { ScriptedModel } from './scripted-model';

export async function runAllowedThenDeniedBash(opts: { adapter: RuntimeAdapter; model: ScriptedModel; ctx: TurnContext; ref: RuntimeSessionRef; bashTool: string }) {
  const { adapter, model, ctx, ref } = opts;
  model.setScript({
    'run the allowed command': [{ tool: opts.bashTool, input: { command: 'echo allowed-ran', description: 'echo' } }, { text: (c) => `tool said: ${c.lastToolResult}` }],
    'run the denied command': [{ tool: opts.bashTool, input: { command: 'touch denied-marker', description: 'touch' } }, { text: (c) => `tool said: ${c.lastToolResult}` }],
  });
  const sink = new MemorySink((r) => (String(r.input.command).startsWith('touch') ? 'deny' : 'allow'));

  const allowed = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_1', messageId: 'smsg_1', text: 'run the allowed command' }, sink);
  expect(allowed).toEqual({ status: 'end_turn' });
  const first = sink.requests[0];
  // every call goes through decide, even one the runtime's own rules would approve
  expect(first).toMatchObject({ tool: 'bash', input: { command: 'echo allowed-ran' } });
  const ok = sink.of('agent.tool_result').find((e) => e.tool_use_id === first?.callId);
  expect(ok?.is_error).toBe(false);
  expect(ok?.content[0]?.text).toContain('allowed-ran');
  expect(sink.of('agent.message').at(-1)?.content[0]?.text).toContain('tool said: allowed-ran');

  const denied = await adapter.runTurn(ctx, ref, { kind: 'message', turnId: 'turn_2', messageId: 'smsg_2', text: 'run the denied command' }, sink);
  expect(denied).toEqual({ status: 'end_turn' });
  const second = sink.requests[1];
  expect(second).toMatchObject({ tool: 'bash', input: { command: 'touch denied-marker' } });
  const refused = sink.of('agent.tool_result').find((e) => e.tool_use_id === second?.callId);
  expect(refused?.is_error).toBe(true);
  expect(refused?.content[0]?.text).toContain('denied by test policy');
  expect(sink.of('agent.message').at(-1)?.content[0]?.text).toContain('denied by test policy');
  expect(existsSync(join(ctx.workdir, 'denied-marker'))).toBe(false);
  return { sink, first, second };
}
