/**
 * A model provider for the gateway's tests: OpenAI chat completions and responses, Anthropic messages and
 * count_tokens, streaming and not, answered byte for byte the same every time (fixed ids and timestamps), so that a
 * test can compare what came through the gateway with what came directly. Like OpenAI, it sends a streamed chat
 * completion's usage chunk only when `stream_options.include_usage` asks for it. It records every request (headers
 * and body) and can hold a stream after its first event, or after its headers, until released (`hold`), to show that
 * nothing waits for the whole answer.
 *
 * Usage: 120 prompt tokens of which 20 cached, 30 completion tokens (Anthropic: 100 input, 20 cache reads, 5 cache
 * writes, 30 output).
 */
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface UpstreamRequest {
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: Record<string, unknown> | null;
}

export interface ModelUpstream {
  url: string;
  requests: UpstreamRequest[];
  /** the next stream sends its first event, then waits for the returned release */
  hold(at?: 'first-event' | 'headers'): () => void;
  /** the next request is answered with this status and an error body */
  failNext(status: number): void;
  close(): Promise<void>;
}

const sse = (event: string | null, data: unknown) => `${event ? `event: ${event}\n` : ''}data: ${JSON.stringify(data)}\n\n`;

function chatStream(model: string, includeUsage: boolean): string[] {
  const base = { id: 'chatcmpl-up-1', object: 'chat.completion.chunk', created: 1_700_000_000, model };
  const events = [
    sse(null, { ...base, choices: [{ index: 0, delta: { role: 'assistant', content: '' }, finish_reason: null }] }),
    sse(null, { ...base, choices: [{ index: 0, delta: { content: 'hello ' }, finish_reason: null }] }),
    sse(null, { ...base, choices: [{ index: 0, delta: { content: 'there' }, finish_reason: null }] }),
    sse(null, { ...base, choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] }),
  ];
  if (includeUsage) events.push(sse(null, { ...base, choices: [], usage: { prompt_tokens: 120, completion_tokens: 30, total_tokens: 150, prompt_tokens_details: { cached_tokens: 20 } } }));
  events.push('data: [DONE]\n\n');
  return events;
}

function chatJson(model: string) {
  return {
    id: 'chatcmpl-up-1',
    object: 'chat.completion',
    created: 1_700_000_000,
    model,
    choices: [{ index: 0, message: { role: 'assistant', content: 'hello there', refusal: null }, finish_reason: 'stop', logprobs: null }],
    usage: { prompt_tokens: 120, completion_tokens: 30, total_tokens: 150, prompt_tokens_details: { cached_tokens: 20 } },
  };
}

function responseObject(model: string, status: string) {
  return {
    id: 'resp_up_1',
    object: 'response',
    created_at: 1_700_000_000,
    status,
    model,
    output: status === 'completed' ? [{ id: 'msg_up_1', type: 'message', role: 'assistant', status: 'completed', content: [{ type: 'output_text', text: 'hello there', annotations: [] }] }] : [],
    usage: status === 'completed' ? { input_tokens: 120, output_tokens: 30, total_tokens: 150, input_tokens_details: { cached_tokens: 20 }, output_tokens_details: { reasoning_tokens: 0 } } : null,
  };
}

function responsesStream(model: string): string[] {
  return [
    sse('response.created', { type: 'response.created', sequence_number: 0, response: responseObject(model, 'in_progress') }),
    sse('response.output_text.delta', { type: 'response.output_text.delta', sequence_number: 1, item_id: 'msg_up_1', output_index: 0, content_index: 0, delta: 'hello there' }),
    sse('response.completed', { type: 'response.completed', sequence_number: 2, response: responseObject(model, 'completed') }),
  ];
}

function messageJson(model: string) {
  return {
    id: 'msg_up_1',
    type: 'message',
    role: 'assistant',
    model,
    content: [{ type: 'text', text: 'hello there' }],
    stop_reason: 'end_turn',
    stop_sequence: null,
    usage: { input_tokens: 100, output_tokens: 30, cache_read_input_tokens: 20, cache_creation_input_tokens: 5 },
  };
}

function messagesStream(model: string): string[] {
  return [
    sse('message_start', { type: 'message_start', message: { ...messageJson(model), content: [], stop_reason: null, usage: { input_tokens: 100, output_tokens: 1, cache_read_input_tokens: 20, cache_creation_input_tokens: 5 } } }),
    sse('content_block_start', { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }),
    sse('content_block_delta', { type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'hello there' } }),
    sse('content_block_stop', { type: 'content_block_stop', index: 0 }),
    sse('message_delta', { type: 'message_delta', delta: { stop_reason: 'end_turn', stop_sequence: null }, usage: { output_tokens: 30 } }),
    sse('message_stop', { type: 'message_stop' }),
  ];
}

export async function startModelUpstream(): Promise<ModelUpstream> {
  const requests: UpstreamRequest[] = [];
  let held: { until: Promise<void>; at: 'first-event' | 'headers' } | null = null;
  let failing: number | null = null;

  const server: Server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    let body: Record<string, unknown> | null = null;
    try {
      body = chunks.length ? (JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown>) : null;
    } catch {
      body = null;
    }
    const path = (req.url ?? '/').replace(/\?.*$/, '');
    requests.push({ method: req.method ?? 'GET', path, headers: req.headers, body });
    const model = typeof body?.model === 'string' ? body.model : 'upstream-model';
    const json = (status: number, value: unknown) => {
      const text = JSON.stringify(value);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'x-upstream': 'yes' });
      res.end(text);
    };
    if (failing !== null) {
      const status = failing;
      failing = null;
      return json(status, { error: { message: 'upstream refused', type: 'invalid_request_error', code: 'upstream_refused' } });
    }
    const stream = async (events: string[]) => {
      res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', 'x-upstream': 'yes' });
      const wait = held;
      held = null;
      if (wait?.at === 'headers') {
        res.flushHeaders();
        await wait.until;
      }
      for (const [i, event] of events.entries()) {
        res.write(event);
        if (i === 0 && wait?.at === 'first-event') await wait.until;
      }
      res.end();
    };
    if (req.method === 'GET' && path === '/v1/models') return json(200, { object: 'list', data: [{ id: 'upstream-model', object: 'model', created: 1_700_000_000, owned_by: 'test' }] });
    if (req.method !== 'POST') return json(404, { error: { message: 'not found', type: 'invalid_request_error' } });
    const streaming = body?.stream === true;
    switch (path) {
      case '/v1/chat/completions':
        return streaming ? stream(chatStream(model, (body?.stream_options as { include_usage?: boolean } | undefined)?.include_usage === true)) : json(200, chatJson(model));
      case '/v1/responses':
        return streaming ? stream(responsesStream(model)) : json(200, responseObject(model, 'completed'));
      case '/v1/messages':
        return streaming ? stream(messagesStream(model)) : json(200, messageJson(model));
      case '/v1/messages/count_tokens':
        return json(200, { input_tokens: 42 });
      default:
        return json(404, { error: { message: 'not found', type: 'invalid_request_error' } });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    hold(at = 'first-event') {
      let release!: () => void;
      held = { until: new Promise<void>((resolve) => (release = resolve)), at };
      return release;
    },
    failNext(status) {
      failing = status;
    },
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
