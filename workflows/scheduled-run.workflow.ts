/**
 * scheduledRun: what a Temporal Schedule starts each time it fires (workflow id `<schedule>-run-<scheduled time>`,
 * set by the server, so a fire happens once however many workers and APIs there are).
 *
 * It creates the run's session (an activity whose session id derives from this workflow's id, so a retry lands on
 * the same row), starts the session's `agentSession` workflow, and waits until the session's first turn has settled
 * (idle after a turn, or terminated): that is what makes the schedule's overlap policy mean "a run is still going".
 * The session outlives this workflow: it takes follow-ups and ends on its idle timeout like any other.
 */
import { WorkflowExecutionAlreadyStartedError, defineSearchAttributeKey } from '@temporalio/common';
import {
  CancellationScope,
  ParentClosePolicy,
  WorkflowIdReusePolicy,
  getExternalWorkflowHandle,
  isCancellation,
  proxyActivities,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import type { ScheduleActivities } from '../activities/types';
import { agentSession } from './agent-session.workflow';
import { interruptSignal, type ScheduledRunInput, type ScheduledRunResult } from './definitions';

const bookkeeping = proxyActivities<ScheduleActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
});

const watching = proxyActivities<ScheduleActivities>({
  // a first turn may wait for a person's approval; a run that has not settled in a day is left to its session
  startToCloseTimeout: '24 hours',
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '10 seconds' },
});

const SCHEDULED_START_TIME = defineSearchAttributeKey('TemporalScheduledStartTime', 'DATETIME');

export async function scheduledRun(input: ScheduledRunInput): Promise<ScheduledRunResult> {
  const info = workflowInfo();
  const scheduledAt = info.typedSearchAttributes.get(SCHEDULED_START_TIME) ?? info.startTime;
  const run = await bookkeeping.createScheduledSession({ ...input, runId: info.workflowId, scheduledAt: scheduledAt.toISOString() });
  const { sessionId } = run;

  // started outside the run's cancellation scope: cancelling a run (overlap "cancel other") interrupts the
  // session's turn below rather than cancelling the session's workflow, and the session outlives the run
  const session = getExternalWorkflowHandle(sessionId);
  try {
    await CancellationScope.nonCancellable(() =>
      startChild(agentSession, {
        workflowId: sessionId,
        args: [run.input],
        parentClosePolicy: ParentClosePolicy.ABANDON,
        // a fire the server starts again (the same backfill twice) never runs a finished session again
        workflowIdReusePolicy: WorkflowIdReusePolicy.REJECT_DUPLICATE,
        memo: { teamId: input.teamId, agentId: run.input.agent.agentId, scheduleId: input.scheduleId },
      }),
    );
  } catch (err) {
    // the session of this fire already runs (or ran): wait for it like the first run did
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
  try {
    const settled = await watching.awaitSessionSettled({ sessionId });
    return { sessionId, ...settled };
  } catch (err) {
    if (isCancellation(err)) {
      await CancellationScope.nonCancellable(() => session.signal(interruptSignal, { actor: run.input.initiator, eventId: `${sessionId}:run-cancelled` }));
    }
    throw err;
  }
}
