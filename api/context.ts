import type { Actor } from '../governance/types';

export interface AppEnv {
  Variables: {
    requestId: string;
    actor: Actor;
  };
}
