import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createGate, startScriptedModel, type ScriptedModel } from './support/scripted-model';

const TOOLS_OPENAI = [{ type: 'function', function: { name: 'bash', parameters: { type: 'object' } } }];
const TOOLS_ANTHROPIC = [{ name: 'Bash', input_schema: { type: 'object' } }];

/** Reads an SSE body into frames of `{ event?, data }`. */
async function sse(res: Response): Promise<Array<{ event?: string; data: string }>> {
  const text = await res.text();
  return text
    .split('\n\n')
    .filter((f) => f.trim())
    .map((frame) => {
      const lines = frame.split('\n');
      const event = lines.find((l) => l.startsWith('event: '))?.slice(7);
      const data = lines.filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
      return { event, data };
    });
}

function post(model: ScriptedModel, path: string, body: unknown): Promise<Response> {
  return fetch(`${model.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

describe('scripted model', () => {
  let model: ScriptedModel;

  beforeAll(async () => {
    model = await startScriptedModel({
      script: {
        'list files': [{ tool: ['bash', 'Bash'], input: { command: 'ls' } }, { text: (ctx) => `the tool said ${ctx.lastToolResult}` }],
      },
    });
  });
  afterAll(() => model.close());

  it('answers an unknown prompt with an echo over OpenAI streaming, with a finish chunk, a usage chunk and [DONE]', async () => {
    const res = await post(model, '/v1/chat/completions', { model: 'm', stream: true, messages: [{ role: 'user', content: 'hello' }] });
    expect(res.headers.get('content-type')).toContain('text/event-stream');
    const frames = await sse(res);
    expect(frames.at(-1)?.data).toBe('[DONE]');
    const chunks = frames.slice(0, -1).map((f) => JSON.parse(f.data));
    const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
    expect(text).toBe('echo: hello');
    expect(chunks.some((c) => c.choices[0]?.finish_reason === 'stop')).toBe(true);
    const usage = chunks.find((c) => c.choices.length === 0)?.usage;
    expect(usage).toEqual({ prompt_tokens: 100, completion_tokens: 20, total_tokens: 120 });
  });

  it('calls a tool until its result follows the user message, then answers with what the tool returned (OpenAI)', async () => {
    const first = await post(model, '/v1/chat/completions', { stream: false, tools: TOOLS_OPENAI, messages: [{ role: 'system', content: 's' }, { role: 'user', content: 'list files' }] });
    const call = ((await first.json()) as { choices: Array<{ finish_reason: string; message: { tool_calls: Array<{ id: string; function: unknown }> } }> }).choices[0]!;
    expect(call.finish_reason).toBe('tool_calls');
    const toolCall = call.message.tool_calls[0]!;
    expect(toolCall.function).toEqual({ name: 'bash', arguments: '{"command":"ls"}' });

    const history = [
      { role: 'user', content: 'list files' },
      { role: 'assistant', content: null, tool_calls: call.message.tool_calls },
      { role: 'tool', tool_call_id: toolCall.id, content: 'a.txt' },
      // a harness's synthetic follow-up must not restart the exchange
      { role: 'user', content: 'Continue.' },
    ];
    const second = await post(model, '/v1/chat/completions', { stream: true, tools: TOOLS_OPENAI, messages: history });
    const chunks = (await sse(second)).slice(0, -1).map((f) => JSON.parse(f.data));
    expect(chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('')).toBe('the tool said a.txt');

    expect(model.countPrompts('list files')).toBe(1);
    expect(model.requestsFor('list files').map((r) => r.stepIndex)).toEqual([0, 1]);
  });

  it('speaks Anthropic Messages SSE with event and data lines, tool_use blocks and usage', async () => {
    const res = await post(model, '/v1/messages', { model: 'claude', stream: true, max_tokens: 100, tools: TOOLS_ANTHROPIC, messages: [{ role: 'user', content: [{ type: 'text', text: 'list files' }] }] });
    const frames = await sse(res);
    expect(frames.every((f) => f.event && f.data)).toBe(true);
    expect(frames.map((f) => f.event)).toEqual([
      'message_start',
      'content_block_start',
      'content_block_delta',
      'content_block_delta',
      'content_block_stop',
      'message_delta',
      'message_stop',
    ]);
    const data = frames.map((f) => JSON.parse(f.data));
    expect(data[0].message.usage.input_tokens).toBe(100);
    expect(data[1].content_block).toMatchObject({ type: 'tool_use', name: 'Bash' });
    const json = data.filter((d) => d.type === 'content_block_delta').map((d) => d.delta.partial_json).join('');
    expect(JSON.parse(json)).toEqual({ command: 'ls' });
    expect(data[5]).toMatchObject({ delta: { stop_reason: 'tool_use' }, usage: { output_tokens: 20 } });

    const toolUseId = data[1].content_block.id;
    const after = await post(model, '/v1/messages', {
      stream: true,
      tools: TOOLS_ANTHROPIC,
      messages: [
        { role: 'user', content: 'list files' },
        { role: 'assistant', content: [{ type: 'tool_use', id: toolUseId, name: 'Bash', input: { command: 'ls' } }] },
        { role: 'user', content: [{ type: 'tool_result', tool_use_id: toolUseId, content: 'b.txt' }, { type: 'text', text: 'system reminder' }] },
      ],
    });
    const text = (await sse(after))
      .map((f) => JSON.parse(f.data))
      .filter((d) => d.type === 'content_block_delta')
      .map((d) => d.delta.text)
      .join('');
    expect(text).toBe('the tool said b.txt');
  });

  it('holds a step until its gate opens and serves GET /v1/models', async () => {
    const gate = createGate();
    model.setScript({ 'wait for me': [{ text: 'released', waitFor: gate.promise }] });
    const pending = post(model, '/v1/chat/completions', { stream: false, messages: [{ role: 'user', content: 'wait for me' }] });
    await model.waitForRequest((r) => r.prompt === 'wait for me');
    let settled = false;
    void pending.then(() => (settled = true));
    await new Promise((r) => setTimeout(r, 150));
    expect(settled).toBe(false);
    gate.release();
    const answer = (await (await pending).json()) as { choices: Array<{ message: { content: string } }> };
    expect(answer.choices[0]?.message.content).toBe('released');

    const models = (await (await fetch(`${model.openaiBaseUrl}/models`)).json()) as { data: Array<{ id: string }> };
    expect(models.data[0]?.id).toBe('scripted-model');
  });
});
