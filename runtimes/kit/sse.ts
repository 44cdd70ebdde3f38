/**
 * Server-sent events, read event by event from a fetch body with `eventsource-parser` (the WHATWG rules: CR, LF or
 * CRLF line ends, one leading space dropped after the colon, `data:` lines joined by newlines, comments skipped, and a
 * block without `data:` never dispatched). Every remote-runtime adapter and the CLI read their streams through this;
 * each decides what to do with `event`, `id` and `data` (skip pings, parse JSON, resume from `id`). The dashboard,
 * which has no build step, loads the same package's module (api/routes/dashboard.routes.ts).
 */
import { EventSourceParserStream } from 'eventsource-parser/stream';

export interface SseFrame {
  /** the event's `id:` field, or null when it has none */
  id: string | null;
  /** the event's `event:` field, or null when it has none */
  event: string | null;
  /** the `data:` lines joined by newlines */
  data: string;
}

export async function* readSseFrames(body: ReadableStream<Uint8Array>): AsyncGenerator<SseFrame> {
  const reader = body.pipeThrough(new TextDecoderStream()).pipeThrough(new EventSourceParserStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      yield { id: value.id ?? null, event: value.event ?? null, data: value.data };
    }
  } finally {
    // a reader that stops early closes the connection (the cancel runs up the pipe to the body)
    await reader.cancel().catch(() => {});
  }
}
