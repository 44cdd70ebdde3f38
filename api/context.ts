import type { ServerResponse } from 'node:http';
import type { HttpBindings } from '@hono/node-server';
import type { Context } from 'hono';
import type { Actor } from '../governance/types';

export interface AppEnv {
  Variables: {
    requestId: string;
    actor: Actor;
    /** set by routes that create a session, for the request log line (others read it from the path) */
    sessionId?: string;
  };
}

/** Node's own response for this request when @hono/node-server serves it; absent in process (`app.request`). */
export function nodeResponse(c: Context): ServerResponse | undefined {
  return (c.env as Partial<HttpBindings> | undefined)?.outgoing;
}
