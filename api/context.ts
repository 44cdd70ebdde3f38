import type { Actor } from '../governance/types';

export interface AppEnv {
  Variables: {
    requestId: string;
    actor: Actor;
    /** set by routes that create a session, for the request log line (others read it from the path) */
    sessionId?: string;
  };
}
