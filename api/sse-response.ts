/**
 * A `text/event-stream` response written straight to Node's socket.
 *
 * Hono's `streamSSE` pipes every frame through a TransformStream that @hono/node-server reads back and writes to the
 * socket: a write, a read and about a dozen promises per frame on every stream. With 1,000 streams on one session,
 * every event is 1,000 frames, and those web streams were 40 % of the API's CPU (docs/performance.md, issue 15). Here a
 * frame is one `ServerResponse.write`, and the handler answers @hono/node-server's "already sent" response.
 *
 * Served any other way (`app.request` in process has no Node response), the same stream goes through `streamSSE`.
 */
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { Context } from 'hono';
import { streamSSE } from 'hono/streaming';
import { nodeResponse } from './context';

export interface EventSink {
  /** resolves once the socket takes more (Node's backpressure), or at once when the client has gone */
  write(frame: Uint8Array | string): Promise<void>;
  /** called once when the client goes away before the stream ends */
  onAbort(listener: () => void): void;
}

/** the headers `streamSSE` sends, so the answer is the same whichever way it was served */
const HEADERS = { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive', 'transfer-encoding': 'chunked' };

/**
 * Answers with an event stream that `run` writes; the response ends when `run` returns or throws (a throw is passed
 * to `onError`, as `streamSSE` would print it). Served by Node, the headers are these and those set on Node's response
 * (the request id, api/create-app.ts); headers set on the context are not sent.
 */
export function eventStreamResponse(c: Context, run: (sink: EventSink) => Promise<void>, onError: (err: unknown) => void): Response {
  const outgoing = nodeResponse(c);
  if (!outgoing) {
    return streamSSE(c, (stream) => run({ write: (frame) => stream.write(frame).then(() => undefined), onAbort: (listener) => stream.onAbort(listener) }), async (err) => onError(err));
  }

  // with those set on Node's response before (the request id)
  outgoing.writeHead(200, HEADERS);
  outgoing.flushHeaders();

  let gone = false;
  let waiting: (() => void) | null = null;
  const aborted: Array<() => void> = [];
  outgoing.on('drain', () => waiting?.());
  outgoing.once('close', () => {
    // `close` before `end` was called: the client went away (or the socket failed)
    gone = !outgoing.writableEnded;
    waiting?.();
    if (gone) for (const listener of aborted.splice(0)) listener();
  });
  const sink: EventSink = {
    write(frame) {
      if (gone || outgoing.destroyed || outgoing.write(frame)) return Promise.resolve();
      return new Promise<void>((resolve) => {
        waiting = () => {
          waiting = null;
          resolve();
        };
      });
    },
    onAbort(listener) {
      if (gone) listener();
      else aborted.push(listener);
    },
  };
  void run(sink)
    .catch(onError)
    .finally(() => {
      if (!outgoing.writableEnded) outgoing.end();
    });
  return RESPONSE_ALREADY_SENT;
}
