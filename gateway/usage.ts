/**
 * What a model request used, read from the provider's own response as it passes through the gateway: never from what
 * a runtime says afterwards.
 *
 * - OpenAI chat completions: the `usage` of the JSON body, or of the last SSE chunk of a stream (the gateway asks for
 *   it with `stream_options.include_usage`; ./gateway.ts). `prompt_tokens` include the cached ones
 *   (`prompt_tokens_details.cached_tokens`), which are counted apart here.
 * - OpenAI responses: `usage` of the JSON body, or of the `response.completed` (or `.incomplete`, `.failed`) event.
 *   `input_tokens` include `input_tokens_details.cached_tokens`, counted apart the same way.
 * - Anthropic messages: `usage` of the JSON body, or `message_start`'s usage with `message_delta`'s on top (its
 *   `output_tokens` are the running total). Anthropic already counts cache reads and writes apart.
 *
 * The result is in `TokenUsage`'s meaning (governance/pricing.ts): uncached input, output, cache reads, cache writes.
 * SSE is parsed with `eventsource-parser`, as everywhere else (runtimes/kit/sse.ts); a JSON body is read whole, up to a
 * bound (the bytes themselves have already gone on to the runtime).
 */
import { createParser, type EventSourceMessage } from 'eventsource-parser';
import type { TokenUsage } from '../governance/pricing';

export type ModelProtocol = 'openai-chat' | 'openai-responses' | 'anthropic-messages' | 'anthropic-count-tokens';

/** The protocol of a request, from the end of its path (`/v1/chat/completions`, `/messages`, …); null: not metered. */
export function protocolOf(path: string): ModelProtocol | null {
  const p = path.replace(/\?.*$/, '').replace(/\/+$/, '');
  if (p.endsWith('/chat/completions')) return 'openai-chat';
  if (p.endsWith('/responses')) return 'openai-responses';
  if (p.endsWith('/messages/count_tokens')) return 'anthropic-count-tokens';
  if (p.endsWith('/messages')) return 'anthropic-messages';
  return null;
}

/** The largest JSON body read for its usage (a bigger one passes through unmetered, and is reported as such). */
const MAX_JSON_BYTES = 32 * 1024 * 1024;

export interface UsageMeter {
  /** a piece of the response body, as it went to the runtime */
  write(chunk: Uint8Array): void;
  /** the usage the provider reported, or null when it reported none */
  end(): { usage: TokenUsage | null; model: string | null };
}

type Json = Record<string, unknown>;
const num = (v: unknown): number => (typeof v === 'number' && Number.isFinite(v) && v > 0 ? Math.floor(v) : 0);
const obj = (v: unknown): Json | null => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Json) : null);

/** OpenAI's usage (chat or responses) in TokenUsage's meaning. */
function fromOpenAi(u: Json): TokenUsage {
  const input = num(u.prompt_tokens ?? u.input_tokens);
  const cached = num(obj(u.prompt_tokens_details ?? u.input_tokens_details)?.cached_tokens);
  return { input_tokens: Math.max(0, input - cached), output_tokens: num(u.completion_tokens ?? u.output_tokens), cache_read_input_tokens: cached, cache_creation_input_tokens: 0 };
}

function fromAnthropic(u: Json, base: TokenUsage | null): TokenUsage {
  const has = (k: string) => typeof u[k] === 'number';
  return {
    input_tokens: has('input_tokens') ? num(u.input_tokens) : (base?.input_tokens ?? 0),
    output_tokens: has('output_tokens') ? num(u.output_tokens) : (base?.output_tokens ?? 0),
    cache_read_input_tokens: has('cache_read_input_tokens') ? num(u.cache_read_input_tokens) : (base?.cache_read_input_tokens ?? 0),
    cache_creation_input_tokens: has('cache_creation_input_tokens') ? num(u.cache_creation_input_tokens) : (base?.cache_creation_input_tokens ?? 0),
  };
}

/** The usage and model of a whole JSON response body. */
export function usageOfJson(protocol: ModelProtocol, body: Json): { usage: TokenUsage | null; model: string | null } {
  const model = typeof body.model === 'string' ? body.model : null;
  if (protocol === 'anthropic-count-tokens') return { usage: null, model };
  const u = obj(body.usage);
  if (!u) return { usage: null, model };
  return { usage: protocol === 'anthropic-messages' ? fromAnthropic(u, null) : fromOpenAi(u), model };
}

export function createUsageMeter(protocol: ModelProtocol, streaming: boolean): UsageMeter {
  let usage: TokenUsage | null = null;
  let model: string | null = null;

  if (!streaming) {
    const chunks: Uint8Array[] = [];
    let size = 0;
    return {
      write(chunk) {
        size += chunk.byteLength;
        if (size <= MAX_JSON_BYTES) chunks.push(chunk);
      },
      end() {
        if (size > MAX_JSON_BYTES) return { usage: null, model: null };
        try {
          const body = obj(JSON.parse(Buffer.concat(chunks).toString('utf8')));
          return body ? usageOfJson(protocol, body) : { usage: null, model: null };
        } catch {
          return { usage: null, model: null };
        }
      },
    };
  }

  const onEvent = (message: EventSourceMessage) => {
    if (message.data === '[DONE]') return;
    let data: Json | null;
    try {
      data = obj(JSON.parse(message.data));
    } catch {
      return;
    }
    if (!data) return;
    switch (protocol) {
      case 'openai-chat': {
        if (typeof data.model === 'string') model = data.model;
        const u = obj(data.usage);
        if (u) usage = fromOpenAi(u);
        return;
      }
      case 'openai-responses': {
        const type = message.event ?? (typeof data.type === 'string' ? data.type : '');
        const response = obj(data.response);
        if (typeof response?.model === 'string') model = response.model;
        const u = obj(response?.usage);
        if (u && /^response\.(completed|incomplete|failed)$/.test(type)) usage = fromOpenAi(u);
        return;
      }
      case 'anthropic-messages': {
        const type = message.event ?? (typeof data.type === 'string' ? data.type : '');
        if (type === 'message_start') {
          const m = obj(data.message);
          if (typeof m?.model === 'string') model = m.model;
          const u = obj(m?.usage);
          if (u) usage = fromAnthropic(u, usage);
        } else if (type === 'message_delta') {
          const u = obj(data.usage);
          if (u) usage = fromAnthropic(u, usage);
        }
        return;
      }
      default:
        return;
    }
  };
  const parser = createParser({ onEvent });
  const decoder = new TextDecoder();
  return {
    write(chunk) {
      parser.feed(decoder.decode(chunk, { stream: true }));
    },
    end() {
      parser.feed(decoder.decode());
      return { usage, model };
    },
  };
}
