/**
 * Schedule activities: a fired schedule becomes a session, started the way POST /v1/sessions starts one.
 */
import { ApplicationFailure, Context } from '@temporalio/activity';
import { stableId, stableTimedId } from '../db/ids';
import { getSchedule } from '../db/queries/schedules';
import { planSession, recordSession, SessionStartError, sessionWorkflowInput } from '../db/queries/session-start';
import { getSessionById } from '../db/queries/sessions';
import { getApiKey } from '../db/queries/teams';
import { can } from '../governance/permissions';
import type { Actor, Role } from '../governance/types';
import type { SessionSettled, SessionStatus, StopReason } from '../workflows/definitions';
import { DEFAULT_SANDBOX, type ActivityDeps } from './session.activities';
import type { CreateScheduledSessionInput, ScheduleActivities, ScheduledSession } from './types';

const SETTLE_POLL_MS = 500;

export function createScheduleActivities(deps: Pick<ActivityDeps, 'db' | 'runtimes' | 'sandboxKind'>): ScheduleActivities {
  const { db } = deps;
  // the runtimes this worker runs: where their charges come from and which deny rules they enforce (a session's
  // runtime must be one of them)
  const capabilities = Object.fromEntries(Object.entries(deps.runtimes).map(([kind, adapter]) => [kind, adapter?.capabilities]));

  async function createScheduledSession(input: CreateScheduledSessionInput): Promise<ScheduledSession> {
    const schedule = await getSchedule(db, { teamId: input.teamId, scheduleId: input.scheduleId });
    if (!schedule) throw ApplicationFailure.create({ type: 'schedule.not_found', message: `schedule ${input.scheduleId} was not found`, nonRetryable: true });
    // runs are started on behalf of the key that last changed what they start (see schedules.routes.ts): a key
    // revoked since, or one whose role no longer starts sessions, starts nothing
    const key = await getApiKey(db, { teamId: input.teamId, keyId: schedule.runAsKeyId });
    if (!key || key.revokedAt || !can(key.role as Role, 'sessions:write')) {
      throw ApplicationFailure.create({ type: 'schedule.initiator_revoked', message: `the key ${schedule.runAsKeyId} that schedule ${schedule.id} runs as may no longer start sessions`, nonRetryable: true });
    }
    const actor: Actor = { keyId: key.id, role: key.role as Role, teamId: input.teamId };
    const { max_cost_usd } = schedule.budget as { max_cost_usd?: number };
    let plan;
    try {
      plan = await planSession(db, {
        teamId: input.teamId,
        agentId: schedule.agentId,
        agentVersion: schedule.agentVersion ?? undefined,
        environmentId: schedule.environmentId,
        budget: max_cost_usd === undefined ? undefined : { max_cost_usd },
        fieldPrefix: 'schedule',
        capabilities,
      });
    } catch (err) {
      if (err instanceof SessionStartError) throw ApplicationFailure.create({ type: err.code, message: err.message, nonRetryable: true });
      throw err;
    }
    // one session per fire: the id derives from the fire's workflow id, so a retried activity finds its own row
    const sessionId = stableTimedId('sesn', new Date(input.scheduledAt), input.teamId, input.runId);
    const record = {
      id: sessionId,
      actor,
      plan,
      environmentId: schedule.environmentId,
      // a scheduled run is started by the worker: its own setting
      sandbox: deps.runtimes[plan.snapshot.runtime.type]?.capabilities.sandbox === 'none' ? 'none' : (deps.sandboxKind ?? DEFAULT_SANDBOX),
      title: schedule.title,
      metadata: schedule.metadata as Record<string, string>,
      trigger: 'schedule' as const,
      scheduleId: schedule.id,
      scheduledAt: new Date(input.scheduledAt),
    };
    await recordSession(db, record);
    return { sessionId, input: sessionWorkflowInput(record, [{ eventId: stableId('sevt', sessionId, 'initial', '0'), text: schedule.prompt }]) };
  }

  async function awaitSessionSettled(input: { sessionId: string }): Promise<SessionSettled> {
    const activity = Context.current();
    for (;;) {
      const row = await getSessionById(db, input.sessionId);
      // a new session is idle with no stop reason; after a turn it is idle with one (or waiting for a person)
      if (row && (row.status === 'terminated' || (row.status === 'idle' && row.stopReason))) {
        return { status: row.status as SessionStatus, stopReason: row.stopReason as StopReason | null };
      }
      activity.heartbeat();
      // throws when the run is cancelled (overlap "cancel other", or a deleted schedule's run)
      await activity.sleep(SETTLE_POLL_MS);
    }
  }

  async function sessionOutcome(input: { sessionId: string }): Promise<SessionSettled> {
    const row = await getSessionById(db, input.sessionId);
    if (!row) throw ApplicationFailure.create({ type: 'session.not_found', message: `session ${input.sessionId} is gone`, nonRetryable: true });
    return { status: row.status as SessionStatus, stopReason: row.stopReason as StopReason | null };
  }

  return { createScheduledSession, awaitSessionSettled, sessionOutcome };
}
