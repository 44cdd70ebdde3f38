/**
 * scheduledRun: what a Temporal Schedule starts each time it fires (workflow id `<schedule>-run-<scheduled time>`,
 * set by the server, so a fire happens once however many workers and APIs there are).
 *
 * It creates the run's session (an activity whose session id derives from this workflow's id, so a retry lands on
 * the same row), starts the session's `agentSession` workflow, and waits until the session's first turn has settled
 * (idle after a turn, or terminated; the session tells it, see SETTLED_BY_SIGNAL_PATCH): that is what makes the
 * schedule's overlap policy mean "a run is still going".
 * The session outlives this workflow: it takes follow-ups and ends on its idle timeout like any other.
 */
import { WorkflowExecutionAlreadyStartedError, defineSearchAttributeKey } from '@temporalio/common';
import {
  CancellationScope,
  ParentClosePolicy,
  WorkflowIdReusePolicy,
  condition,
  getExternalWorkflowHandle,
  isCancellation,
  patched,
  proxyActivities,
  setHandler,
  startChild,
  workflowInfo,
} from '@temporalio/workflow';
import type { ScheduleActivities } from '../activities/types';
import { agentSession } from './agent-session.workflow';
import { interruptSignal, sessionSettledSignal, sessionWatchSignal, type ScheduledRunInput, type ScheduledRunResult, type SessionSettled } from './definitions';

const bookkeeping = proxyActivities<ScheduleActivities>({
  startToCloseTimeout: '30 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '30 seconds' },
});

/**
 * How a run learns that its session's first turn has settled. The run tells the session whom to tell
 * (`sessionWatchSignal`, with this run's id) and waits for its `sessionSettledSignal`, which the session sends right
 * after it wrote the status: nothing polls, and the answer comes from the workflow that decided it. Why this and not:
 * - the session's workflow result: the session outlives the run (it takes follow-ups until its idle timeout);
 * - the parent link (`workflowInfo().parent` in the session): a fire the server starts again finds the session an
 *   earlier run of the same fire started, whose parent it is not; the watch signal serves both;
 * - an update sent by the run: a workflow cannot send one.
 * A session whose workflow has ended cannot be signalled: its row (terminated) is read once. A session that does not
 * answer within SETTLE_WITHIN (a worker older than the watch signal took it and left it unanswered, see
 * SESSION_WATCH_PATCH) is left to itself: its row is read once and the run ends with what it says, as the polling
 * activity's day-long limit meant.
 * Runs started before this polled the session's row every 500 ms (awaitSessionSettled), and still do when replayed.
 */
const SETTLED_BY_SIGNAL_PATCH = 'settled-by-signal';
const SETTLE_WITHIN = '24 hours';

/** Runs started before SETTLED_BY_SIGNAL_PATCH only. */
const watching = proxyActivities<ScheduleActivities>({
  // a first turn may wait for a person's approval; a run that has not settled in a day is left to its session
  startToCloseTimeout: '24 hours',
  heartbeatTimeout: '10 seconds',
  retry: { initialInterval: '1 second', maximumInterval: '10 seconds' },
});

const SCHEDULED_START_TIME = defineSearchAttributeKey('TemporalScheduledStartTime', 'DATETIME');

export async function scheduledRun(input: ScheduledRunInput): Promise<ScheduledRunResult> {
  const info = workflowInfo();
  let settled: SessionSettled | null = null;
  setHandler(sessionSettledSignal, (state) => {
    settled ??= state;
  });
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
    if (!patched(SETTLED_BY_SIGNAL_PATCH)) return { sessionId, ...(await watching.awaitSessionSettled({ sessionId })) };
    return { sessionId, ...(await sessionSettled()) };
  } catch (err) {
    if (isCancellation(err)) {
      await CancellationScope.nonCancellable(() => session.signal(interruptSignal, { actor: run.input.initiator, eventId: `${sessionId}:run-cancelled` }));
    }
    throw err;
  }

  async function sessionSettled(): Promise<SessionSettled> {
    try {
      await session.signal(sessionWatchSignal, { workflowId: info.workflowId, runId: info.runId });
    } catch (err) {
      if (isCancellation(err)) throw err;
      // its workflow has ended (a fire started again long after its session): the row has the last word
      return bookkeeping.sessionOutcome({ sessionId });
    }
    if (await condition(() => settled !== null, SETTLE_WITHIN)) return settled as SessionSettled;
    return bookkeeping.sessionOutcome({ sessionId });
  }
}
