/**
 * An in-process runtime that follows a script written in the user message. It is the no-op runtime of the
 * benchmarks and the fast runtime of workflow tests; it is registered only when a worker asks for it.
 *
 * Each line of a message is one step:
 *   say <text>            agent.message
 *   tool <name> <subject> a gated tool call (bash → {command}, read/write/edit → {file_path}, else {input})
 *   cost <usd>            one model request with that reported cost
 *   tokens <in> <out>     one model request with token usage only (priced by the pricing table)
 *   sleep <ms>            wait (interruptible)
 * A message with no known step is answered with `say echo: <message>` and 100/20 tokens.
 */
import type { CanonicalTool } from '../../governance/types';
import { appendFileSync, readFileSync } from 'node:fs';
import type { RuntimeAdapter, RuntimeEvent, TurnInput, TurnResult, TurnSink } from '../runtime-adapter';
import { descriptor } from './descriptor';

type Step =
  | { kind: 'say'; text: string }
  | { kind: 'tool'; tool: CanonicalTool; input: Record<string, unknown> }
  | { kind: 'cost'; usd: number }
  | { kind: 'tokens'; input: number; output: number }
  | { kind: 'sleep'; ms: number };

/** the canonical input key that carries each tool's subject (what a policy pattern matches) */
const SUBJECT_KEYS: Record<string, string> = { bash: 'command', read: 'file_path', write: 'file_path', edit: 'file_path', web_fetch: 'url', web_search: 'query', grep: 'pattern', glob: 'pattern' };

export function parseScript(text: string): Step[] {
  const steps: Step[] = [];
  for (const line of text.split('\n').map((l) => l.trim()).filter(Boolean)) {
    const [word, ...rest] = line.split(' ');
    const arg = rest.join(' ');
    if (word === 'say') steps.push({ kind: 'say', text: arg });
    else if (word === 'cost') steps.push({ kind: 'cost', usd: Number(rest[0]) });
    else if (word === 'tokens') steps.push({ kind: 'tokens', input: Number(rest[0]), output: Number(rest[1]) });
    else if (word === 'sleep') steps.push({ kind: 'sleep', ms: Number(rest[0]) });
    else if (word === 'tool') {
      const [name = 'bash', ...subject] = rest;
      const value = subject.join(' ');
      const key = SUBJECT_KEYS[name] ?? 'input';
      steps.push({ kind: 'tool', tool: name as CanonicalTool, input: { [key]: value } });
    }
  }
  if (steps.length === 0) steps.push({ kind: 'say', text: `echo: ${text}` }, { kind: 'tokens', input: 100, output: 20 });
  return steps;
}

export interface ScriptedAdapterOptions {
  /** counts how often each turn's prompt was "sent to the model", so tests can prove nothing was sent twice */
  onPromptSent?: (messageId: string, text: string) => void;
  /**
   * Whether the prompt of `messageId` was sent: the runtime's own memory of what it received, which a real runtime's
   * server keeps and this in-process one does not. With it, a turn whose worker died after recording the prompt and
   * before sending it sends it on retry (exactly once); without it, a recorded prompt counts as sent (at most once).
   */
  wasPromptSent?: (messageId: string) => boolean;
}

interface ScriptState extends Record<string, unknown> {
  turnId?: string;
  text?: string;
  /** index of the next step to run */
  next?: number;
  /** the step waiting for a decision */
  waiting?: { step: number; requestId: string } | null;
}


/**
 * The runtime's memory of what it received, in a file shared by successive worker processes (chaos runs): one short
 * line per write with O_APPEND, so lines from different processes never interleave, and a retried turn can ask it
 * whether its prompt got through.
 */
export function promptLog(path: string): Required<ScriptedAdapterOptions> {
  return {
    onPromptSent: (messageId, text) => appendFileSync(path, `${JSON.stringify({ messageId, text })}\n`),
    wasPromptSent: (messageId) => readFileSync(path, 'utf8').includes(`{"messageId":${JSON.stringify(messageId)},`),
  };
}

export function createScriptedAdapter(options: ScriptedAdapterOptions = {}): RuntimeAdapter {
  return {
    kind: descriptor.kind,
    capabilities: descriptor.capabilities,
    async open(ctx, previous) {
      return previous ?? { sessionId: ctx.sessionId, runtimeSessionId: `scripted_${ctx.sessionId}`, state: {} };
    },
    async runTurn(_ctx, ref, input, sink) {
      let state = ref.state as ScriptState;
      if (input.kind === 'message' && state.turnId !== input.turnId) {
        // record what is about to be sent before "sending" it: a retry finds it and does not send again
        state = { turnId: input.turnId, text: input.text, next: 0, waiting: null };
        await sink.checkpoint(state);
        options.onPromptSent?.(input.messageId, input.text);
      } else if (input.kind === 'message' && options.wasPromptSent && !options.wasPromptSent(input.messageId)) {
        // recorded, and the worker died before sending it: a reattaching adapter asks its runtime the same question
        options.onPromptSent?.(input.messageId, input.text);
      }
      return run(state, input, sink);
    },
    async close() {},
  };
}

async function run(state: ScriptState, input: TurnInput, sink: TurnSink): Promise<TurnResult> {
  const steps = parseScript(state.text ?? '');
  const turnId = state.turnId as string;
  let next = state.next ?? 0;
  if (input.kind === 'resume' && state.waiting) {
    const decision = input.decisions.find((d) => d.requestId === state.waiting?.requestId);
    await sink.emit([toolResult(turnId, state.waiting.step, decision?.behavior === 'allow', decision?.message)]);
    next = state.waiting.step + 1;
    state = { ...state, next, waiting: null };
    await sink.checkpoint(state);
  }
  for (let i = next; i < steps.length; i++) {
    if (sink.signal.aborted) return { status: 'interrupted' };
    const step = steps[i] as Step;
    const sourceId = `${turnId}:${i}`;
    if (step.kind === 'say') await sink.emit([{ sourceId, type: 'agent.message', content: [{ type: 'text', text: step.text }] }]);
    else if (step.kind === 'cost' || step.kind === 'tokens') await sink.emit([usage(sourceId, step)]);
    else if (step.kind === 'sleep') {
      const finished = await sleep(step.ms, sink.signal);
      if (!finished) return { status: 'interrupted' };
    } else {
      const requestId = `${turnId}:req:${i}`;
      const decision = await sink.decide({ requestId, callId: `${turnId}:call:${i}`, tool: step.tool, input: step.input });
      if (decision.action === 'ask') {
        await sink.checkpoint({ ...state, next: i, waiting: { step: i, requestId } });
        return { status: 'requires_action', pending: [{ requestId, toolUseId: decision.toolUseId }] };
      }
      await sink.emit([toolResult(turnId, i, decision.action === 'allow', decision.message)]);
    }
    await sink.checkpoint({ ...state, next: i + 1, waiting: null });
  }
  return { status: 'end_turn' };
}

function toolResult(turnId: string, step: number, allowed: boolean, message?: string): RuntimeEvent {
  return {
    sourceId: `${turnId}:${step}:result`,
    type: 'agent.tool_result',
    tool_use_id: `${turnId}:call:${step}`,
    content: [{ type: 'text', text: allowed ? 'ok' : (message ?? 'denied') }],
    is_error: !allowed,
  };
}

function usage(sourceId: string, step: { kind: 'cost'; usd: number } | { kind: 'tokens'; input: number; output: number }): RuntimeEvent {
  const tokens = step.kind === 'tokens' ? { input: step.input, output: step.output } : { input: 100, output: 20 };
  return {
    sourceId,
    type: 'span.model_request_end',
    model: 'scripted',
    is_error: false,
    model_usage: { input_tokens: tokens.input, output_tokens: tokens.output, cache_read_input_tokens: 0, cache_creation_input_tokens: 0 },
    ...(step.kind === 'cost' ? { cost_usd: step.usd } : {}),
  };
}

function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const timer = setTimeout(() => resolve(true), ms);
    signal.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve(false);
    }, { once: true });
  });
}
