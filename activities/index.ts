import { createScheduleActivities } from './schedule.activities';
import { createSessionActivities, type ActivityDeps } from './session.activities';
import type { ScheduleActivities, SessionActivities } from './types';

export type { ActivityDeps } from './session.activities';

export function createActivities(deps: ActivityDeps): SessionActivities & ScheduleActivities {
  return { ...createSessionActivities(deps), ...createScheduleActivities(deps) };
}
