/**
 * Server-sent events, read frame by frame from a fetch body. Every remote-runtime adapter reads its stream through
 * this; each decides what to do with `event`, `id` and `data` (skip pings, parse JSON, resume from `id`).
 */
export interface SseFrame {
  /** the frame's `id:` line, or null */
  id: string | null;
  /** the frame's `event:` line, or null when the frame has none */
  event: string | null;
  /** the `data:` lines joined by newlines ('' when none) */
  data: string;
}

export async function* readSseFrames(body: ReadableStream<Uint8Array>): AsyncGenerator<SseFrame> {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer = (buffer + value).replace(/\r\n/g, '\n');
      let end: number;
      while ((end = buffer.indexOf('\n\n')) >= 0) {
        const frame = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        let id: string | null = null;
        let event: string | null = null;
        const data: string[] = [];
        for (const line of frame.split('\n')) {
          if (line.startsWith('id:')) id = line.slice(3).trim();
          else if (line.startsWith('event:')) event = line.slice(6).trim();
          else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
        }
        yield { id, event, data: data.join('\n') };
      }
    }
  } finally {
    reader.releaseLock();
    await body.cancel().catch(() => {});
  }
}
