import { createSessionActivities, type ActivityDeps } from './session.activities';
import type { SessionActivities } from './types';

export type { ActivityDeps } from './session.activities';

export function createActivities(deps: ActivityDeps): SessionActivities {
  return { ...createSessionActivities(deps) };
}
