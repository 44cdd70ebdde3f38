/**
 * agentSession: one workflow per session, workflow id = session id.
 *
 * The workflow owns the session's state (status, policy version, spend) and every decision that waits for a
 * person. Everything that touches the world — the runtime, the event log, the ledger, the audit log — happens
 * in activities. Temporal history is the durable record: a worker that dies mid-turn is replaced and the turn
 * is reattached by the next attempt of `runTurn`.
 */
import {
  ActivityCancellationType,
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  isCancellation,
  log,
  patched,
  proxyActivities,
  proxyLocalActivities,
  setHandler,
  TimeoutFailure,
  workflowInfo,
} from '@temporalio/workflow';
import type { SessionActivities, TurnOutcome } from '../activities/types';
import { alreadyDecided, type DecidedCall } from '../governance/approvals';
import { checkSessionBudget } from '../governance/budget';
import type { ToolPolicy } from '../governance/types';
import type { PermissionDecision, TurnInput } from '../runtimes/runtime-adapter';
import {
  archiveSignal,
  interruptSignal,
  policyUpdateSignal,
  sessionSettledSignal,
  sessionStateQuery,
  sessionWatchSignal,
  toolConfirmationSignal,
  toolConfirmationUpdate,
  userMessageSignal,
  type PendingApproval,
  type QueuedMessage,
  type RecordedDecision,
  type SessionSettled,
  type SessionStatus,
  type SessionWorkflowInput,
  type StopReason,
  type ToolConfirmation,
  type ToolConfirmationRefusal,
} from './definitions';

/** Continue-as-new after this many turns even if the server has not suggested it: keeps replay cheap. */
const DEFAULT_TURNS_PER_RUN = 200;

const BOOKKEEPING = { startToCloseTimeout: '30 seconds', retry: { initialInterval: '1 second', maximumInterval: '30 seconds' } } as const;

/**
 * Event and decision writes are short, idempotent (deduplicated by sourceId) database writes. As local activities they
 * run in the worker that runs the workflow, without a round trip through the server's task queues: a turn costs one
 * activity task (runTurn) instead of four. Histories recorded before this change keep replaying with the old path.
 * `closeRuntime` stops runtime processes and stays a normal activity.
 */
const LOCAL_BOOKKEEPING_PATCH = 'local-bookkeeping';
const remoteBookkeeping = proxyActivities<SessionActivities>(BOOKKEEPING);
const localBookkeeping = proxyLocalActivities<SessionActivities>(BOOKKEEPING);
/** A turn's start (its user message and the status it leads to) is one write, not two. Older histories wrote two. */
const ONE_WRITE_TURN_START_PATCH = 'one-write-turn-start';
const bookkeeping = (): SessionActivities => (patched(LOCAL_BOOKKEEPING_PATCH) ? localBookkeeping : remoteBookkeeping);
/**
 * An ending session's runtime is closed (its gateway token revoked, its snapshots dropped) before it shows as
 * terminated, so that nobody sees it ended while its token still works. Older histories closed it after.
 */
const CLOSE_BEFORE_TERMINATED_PATCH = 'close-before-terminated';

const TURN_OPTIONS = {
  startToCloseTimeout: '2 hours',
  // a worker that dies mid-turn is noticed within this and the turn retried (and reattached) elsewhere
  heartbeatTimeout: '10 seconds',
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
  retry: { initialInterval: '1 second', maximumInterval: '10 seconds', maximumAttempts: 10 },
} as const;
const turns = proxyActivities<SessionActivities>(TURN_OPTIONS);

/**
 * Affinity: a session's legs go to the task queue of the worker that holds its live runtime (the outcome of its last
 * leg names it), so the common path pays no restore; when nobody takes a leg there within HOLDER_PICKUP (that worker is
 * gone, or swamped), it goes to the shared queue, where any worker restores the session's last snapshot and continues.
 * Histories recorded before this ran every leg on the shared queue, and still do.
 */
const AFFINITY_PATCH = 'affinity';
const HOLDER_PICKUP = '15 seconds';
const onHolder = (queue: string) => proxyActivities<SessionActivities>({ ...TURN_OPTIONS, taskQueue: queue, scheduleToStartTimeout: HOLDER_PICKUP });
const closeOnHolder = (queue: string) => proxyActivities<SessionActivities>({ ...BOOKKEEPING, taskQueue: queue, scheduleToStartTimeout: HOLDER_PICKUP });

/**
 * A session tells a scheduled run that watches it when its first turn has settled. A worker older than that kept a
 * watch signal unanswered (buffered, with no handler); replayed here, it must stay unanswered, and does.
 */
const SESSION_WATCH_PATCH = 'session-watch';

/** No worker took the activity from the holder's queue in time: it is not there to take it. */
function holderGone(err: unknown): boolean {
  return err instanceof ActivityFailure && err.cause instanceof TimeoutFailure && err.cause.timeoutType === 'SCHEDULE_TO_START';
}

export async function agentSession(input: SessionWorkflowInput): Promise<{ stopReason: StopReason | null }> {
  const { sessionId, agent } = input;
  const carried = input.carried;
  let status: SessionStatus = 'idle';
  let stopReason: StopReason | null = carried?.stopReason ?? null;
  let turn = carried?.turn ?? 0;
  let spentMicros = carried?.spentMicros ?? 0;
  let policy: ToolPolicy = carried?.policy ?? agent.toolPolicy;
  let policyVersion = carried?.policyVersion ?? input.policyVersion ?? 0;
  const affinity = patched(AFFINITY_PATCH);
  /** the task queue of the worker holding the session's live runtime (affinity) */
  let holder: string | null = carried?.holder ?? null;
  const queue: QueuedMessage[] = [...input.initialMessages];
  const pending = new Map<string, PendingApproval>();
  let archived = false;
  let interruptRequested = false;
  let turnScope: CancellationScope | null = null;
  /**
   * Set while a leg of a turn runs. A call the leg stops on is pending in the database (and in the approvals inbox)
   * before the leg returns it to this workflow: a confirmation for a call unknown here is only possible meanwhile.
   */
  let legInFlight = false;
  /**
   * Every call of this run that is no longer waiting, and how it was decided (by a person, the deadline or an
   * interrupt): a later confirmation for it is refused, naming that decision. A continued run starts with none pending.
   */
  const decided = new Map<string, DecidedCall>();
  /** the decisions a confirmation update is writing: the turn resumes the runtime only once they are written */
  const recording = new Map<string, Promise<void>>();
  /**
   * The session once its first turn has settled (idle after it, or terminated), for the scheduled run that watches it.
   * A continued session is past its first turn.
   */
  let settled: SessionSettled | null = carried ? { status: 'idle', stopReason } : null;

  setHandler(userMessageSignal, (message) => {
    if (!queue.some((queued) => queued.eventId === message.eventId)) queue.push(message);
  });
  // A person can answer as soon as the `agent.tool_use` event is in the log, which is before the turn's activity
  // returns the call to this workflow: such early answers wait here until the call is registered as pending.
  // The API sends decisions as toolConfirmationUpdate (below); this signal handler stays for workflows that still get
  // one (sent before that change, or by an older API during a deploy).
  const early = new Map<string, ToolConfirmation>();
  setHandler(toolConfirmationSignal, (confirmation) => {
    // separation of duties, held here too and not only by the API: the initiator's own decision does not count.
    // It changes nothing unless the agent sets the flag, so histories recorded before it still replay.
    if (agent.separationOfDuties && confirmation.actor.keyId === input.initiator.keyId) return;
    const approval = pending.get(confirmation.toolUseId);
    if (!approval) {
      if (!early.has(confirmation.toolUseId)) early.set(confirmation.toolUseId, confirmation);
      return;
    }
    // a second answer for a call already decided (or a replayed signal) changes nothing
    if (approval.decision) return;
    approval.decision = { result: confirmation.result, message: confirmation.denyMessage, actor: confirmation.actor, eventId: confirmation.eventId };
  });
  /** Why `confirmation` cannot be taken now, or null. `waiting`: a call unknown here may still come from the leg in flight. */
  function refusal(confirmation: ToolConfirmation, waiting: boolean): ApplicationFailure | null {
    const id = confirmation.toolUseId;
    const refuse = (type: ToolConfirmationRefusal, message: string) => ApplicationFailure.create({ type, message, details: [{ toolUseId: id }], nonRetryable: true });
    // separation of duties, held here too and not only by the API (the workflow has the value the session started with)
    if (agent.separationOfDuties && confirmation.actor.keyId === input.initiator.keyId) {
      return refuse('approval.self_approval', `key ${confirmation.actor.keyId} started session ${sessionId}: another key must decide its tool calls`);
    }
    const answered = pending.get(id)?.decision ?? early.get(id);
    const first = decided.get(id) ?? (answered ? { result: answered.result, decidedBy: answered.actor.keyId } : null);
    if (first) return refuse('approval.not_pending', alreadyDecided(id, first));
    if (!pending.has(id) && !(waiting && legInFlight)) return refuse('approval.unknown_call', `no tool call ${id} is waiting for a decision in session ${sessionId}`);
    return null;
  }

  function refuseAny(confirmations: ToolConfirmation[], waiting: boolean): void {
    for (const [i, confirmation] of confirmations.entries()) {
      if (confirmations.findIndex((c) => c.toolUseId === confirmation.toolUseId) !== i) {
        throw ApplicationFailure.create({ type: 'approval.not_pending', message: `tool call ${confirmation.toolUseId} is decided twice in one request`, details: [{ toolUseId: confirmation.toolUseId }], nonRetryable: true });
      }
      const refused = refusal(confirmation, waiting);
      if (refused) throw refused;
    }
  }

  // The validator refuses what cannot be taken before anything is written to history; the handler checks again after
  // waiting for the leg in flight (another confirmation may have come first), then decides every call of the request
  // at once and answers when their decisions are written. Histories without the update run none of this.
  setHandler(
    toolConfirmationUpdate,
    async ({ confirmations }) => {
      if (confirmations.some((c) => !pending.has(c.toolUseId))) await condition(() => !legInFlight);
      refuseAny(confirmations, false);
      for (const c of confirmations) {
        (pending.get(c.toolUseId) as PendingApproval).decision = { result: c.result, message: c.denyMessage, actor: c.actor, eventId: c.eventId };
      }
      // one write after the other, in the request's order; the turn waits for each before it resumes the runtime
      const written = (async () => {
        for (const c of confirmations) await writeDecision(c.toolUseId, (pending.get(c.toolUseId) as PendingApproval).decision);
      })();
      for (const c of confirmations) recording.set(c.toolUseId, written);
      await written;
      return { decisions: confirmations.map((c): RecordedDecision => ({ toolUseId: c.toolUseId, result: c.result, decidedBy: c.actor.keyId, eventId: c.eventId })) };
    },
    { validator: ({ confirmations }) => refuseAny(confirmations, true) },
  );
  setHandler(sessionWatchSignal, async (watcher) => {
    if (!patched(SESSION_WATCH_PATCH)) return;
    await condition(() => settled !== null);
    try {
      await getExternalWorkflowHandle(watcher.workflowId, watcher.runId).signal(sessionSettledSignal, settled as SessionSettled);
    } catch (err) {
      // the run stopped watching (cancelled, or timed out): the session goes on without it
      log.info('the workflow watching the session is gone', { sessionId, watcher: watcher.workflowId, error: String(err) });
    }
  });
  setHandler(interruptSignal, () => {
    interruptRequested = true;
    queue.length = 0;
    turnScope?.cancel();
  });
  setHandler(archiveSignal, () => {
    archived = true;
    turnScope?.cancel();
  });
  setHandler(policyUpdateSignal, (update) => {
    if (update.version > policyVersion) {
      policy = update.policy;
      policyVersion = update.version;
    }
  });
  setHandler(sessionStateQuery, () => ({
    status,
    stopReason,
    turn,
    spentMicros,
    policyVersion,
    queuedMessages: queue.length,
    pendingApprovals: [...pending.values()].filter((p) => !p.decision).map((p) => ({ toolUseId: p.toolUseId })),
  }));

  /** The status change as an event, and the state it leaves the workflow in. */
  function statusChange(next: SessionStatus, reason: StopReason | null, sourceId: string, eventIds: string[] = []) {
    status = next;
    stopReason = reason;
    const type = next === 'terminated' ? 'session.status_terminated' : next === 'running' ? 'session.status_running' : 'session.status_idle';
    const payload: Record<string, unknown> = next === 'running' ? {} : { stop_reason: reason };
    if (reason?.type === 'requires_action') payload.stop_reason = { type: 'requires_action', event_ids: eventIds };
    return { event: { sourceId, type, payload }, status: { status: next, stopReason: reason } };
  }

  async function setStatus(next: SessionStatus, reason: StopReason | null, sourceId: string, eventIds: string[] = []) {
    const change = statusChange(next, reason, sourceId, eventIds);
    await bookkeeping().recordEvents({ sessionId, events: [change.event], status: change.status });
  }

  /** One user message, from sending it to the end of the runtime's turn, approvals included. */
  async function runOneTurn(message: QueuedMessage): Promise<void> {
    turn += 1;
    const turnId = `t${turn}`;
    const userMessage = { id: message.eventId, sourceId: `msg:${message.eventId}`, type: 'user.message', payload: { content: [{ type: 'text', text: message.text }] } };
    const budget = checkSessionBudget(input.budget, spentMicros);
    if (!budget.ok) log.info('turn refused: budget reached', { sessionId, reason: budget.reason });
    const start = budget.ok ? statusChange('running', null, `${turnId}:running`) : statusChange('idle', { type: 'budget_reached' }, `${turnId}:budget`);
    if (patched(ONE_WRITE_TURN_START_PATCH)) {
      // the message and the status it leads to, in one write
      await bookkeeping().recordEvents({ sessionId, events: [userMessage, start.event], status: start.status });
    } else {
      await bookkeeping().recordEvents({ sessionId, events: [userMessage] });
      await bookkeeping().recordEvents({ sessionId, events: [start.event], status: start.status });
    }
    if (!budget.ok) return;
    let turnInput: TurnInput = { kind: 'message', turnId, messageId: `${sessionId}:${turnId}`, text: message.text };
    for (let leg = 0; ; leg++) {
      const outcome = await runLeg(turnId, leg, turnInput);
      if (outcome === 'cancelled') {
        await setStatus('idle', { type: 'interrupted' }, `${turnId}:${leg}:interrupted`);
        return;
      }
      spentMicros = outcome.spentMicros;
      const result = outcome.result;
      if (result.status === 'requires_action') {
        const decisions = await awaitDecisions(turnId, leg, result.pending);
        if (interruptRequested || archived) {
          // the runtime is still blocked on the call: release it with a refusal and stop the turn
          turnInput = { kind: 'resume', turnId, decisions: decisions.map((d) => ({ ...d, behavior: 'deny' as const, message: 'interrupted' })) };
          await runLeg(turnId, leg + 1, turnInput, true);
          await setStatus('idle', { type: 'interrupted' }, `${turnId}:${leg}:interrupted`);
          return;
        }
        await setStatus('running', null, `${turnId}:${leg}:resumed`);
        turnInput = { kind: 'resume', turnId, decisions };
        continue;
      }
      if (outcome.retriesExhausted) await setStatus('idle', { type: 'retries_exhausted', message: result.status === 'error' ? result.message : '' }, `${turnId}:${leg}:end`);
      else if (outcome.budgetReached) await setStatus('idle', { type: 'budget_reached' }, `${turnId}:${leg}:end`);
      else if (result.status === 'end_turn') await setStatus('idle', { type: 'end_turn' }, `${turnId}:${leg}:end`);
      else if (result.status === 'interrupted') await setStatus('idle', { type: 'interrupted' }, `${turnId}:${leg}:end`);
      else {
        await bookkeeping().recordEvents({ sessionId, events: [{ sourceId: `${turnId}:${leg}:error`, type: 'session.error', payload: { error: { type: 'turn_failed', message: result.message } } }] });
        await setStatus('idle', { type: 'error', message: result.message }, `${turnId}:${leg}:end`);
      }
      return;
    }
  }

  /** One activity call of a turn; a turn has several when it stops for approvals. The calls it stops on are pending once it returns. */
  async function runLeg(turnId: string, leg: number, turnInput: TurnInput, uncancellable = false): Promise<TurnOutcome | 'cancelled'> {
    legInFlight = true;
    try {
      const outcome = await callLeg(turnId, leg, turnInput, uncancellable);
      // (a leg that only releases an interrupted runtime stops on nothing anybody waits for)
      if (!uncancellable && outcome !== 'cancelled' && outcome.result.status === 'requires_action') awaitPerson(outcome.result.pending);
      return outcome;
    } finally {
      // from here, a confirmation for a call this workflow does not know is for a call nobody waits for
      legInFlight = false;
    }
  }

  async function callLeg(turnId: string, leg: number, turnInput: TurnInput, uncancellable: boolean): Promise<TurnOutcome | 'cancelled'> {
    const args = { sessionId, turnId, leg, agent, initiator: input.initiator, input: turnInput, policy, policyVersion, budget: input.budget };
    const call = async (): Promise<TurnOutcome> => noteHolder(await atHolder(onHolder, turns, (on) => on.runTurn(args)));
    if (uncancellable) return CancellationScope.nonCancellable(call);
    turnScope = new CancellationScope();
    try {
      return await turnScope.run(call);
    } catch (err) {
      if (isCancellation(err)) return 'cancelled';
      // a non-retryable failure (revoked credential, unknown runtime) is an error; anything else ran out of retries
      const cause = err instanceof ActivityFailure ? err.cause : err;
      const message = cause instanceof Error ? cause.message : String(cause);
      const final = cause instanceof ApplicationFailure && cause.nonRetryable;
      return { result: { status: 'error', message, retryable: false }, spentMicros, budgetReached: false, retriesExhausted: !final };
    } finally {
      turnScope = null;
    }
  }

  /**
   * `call` on the queue of the worker holding the session (affinity), or on the shared queue when there is none or it
   * did not take the call in time (it is gone: any worker continues the session).
   */
  async function atHolder<T>(holderActivities: (queue: string) => SessionActivities, shared: SessionActivities, call: (on: SessionActivities) => Promise<T>): Promise<T> {
    if (affinity && holder) {
      try {
        return await call(holderActivities(holder));
      } catch (err) {
        if (!holderGone(err)) throw err;
        log.info('the worker holding the session did not take its call: any worker takes it', { sessionId, holder });
        holder = null;
      }
    }
    return call(shared);
  }

  function noteHolder(outcome: TurnOutcome): TurnOutcome {
    if (affinity && outcome.heldBy) holder = outcome.heldBy;
    return outcome;
  }

  /** The calls a leg stopped on wait for a person from now on; an answer signalled before the leg returned is taken. */
  function awaitPerson(requests: Array<{ requestId: string; toolUseId: string }>): void {
    for (const request of requests) {
      const answered = early.get(request.toolUseId);
      early.delete(request.toolUseId);
      pending.set(request.toolUseId, { ...request, decision: answered ? { result: answered.result, message: answered.denyMessage, actor: answered.actor, eventId: answered.eventId } : null });
    }
  }

  /** Waits, durably, for a person to decide each pending tool call; what is still undecided at the deadline is denied. */
  async function awaitDecisions(turnId: string, leg: number, requests: Array<{ requestId: string; toolUseId: string }>): Promise<PermissionDecision[]> {
    await setStatus('requires_action', { type: 'requires_action', event_ids: [] }, `${turnId}:${leg}:requires_action`, requests.map((r) => r.toolUseId));
    const allDecided = () => requests.every((r) => pending.get(r.toolUseId)?.decision);
    const inTime = await condition(() => allDecided() || interruptRequested || archived, `${agent.approvalTimeoutSeconds} seconds`);
    const decisions: PermissionDecision[] = [];
    for (const request of requests) {
      const approval = pending.get(request.toolUseId) as PendingApproval;
      // read call by call, as before: a signalled answer for a later call that comes while an earlier one is written counts
      const decision = approval.decision;
      const behavior = decision?.result ?? 'deny';
      const message = decision?.message ?? (decision ? undefined : inTime ? 'interrupted' : 'approval timed out');
      // decided from here: a confirmation that comes while this is written is refused, naming this decision
      decided.set(request.toolUseId, { result: behavior, decidedBy: decision?.actor.keyId ?? null });
      const written = recording.get(request.toolUseId);
      if (written) await written;
      else {
        await writeDecision(request.toolUseId, decision, {
          message: message as string,
          reason: inTime ? 'interrupted before a decision' : `no decision within ${agent.approvalTimeoutSeconds}s: default deny`,
        });
      }
      pending.delete(request.toolUseId);
      recording.delete(request.toolUseId);
      decisions.push({ requestId: request.requestId, behavior, message });
    }
    return decisions;
  }

  /**
   * A call's decision as the event log, the approval row and the audit log keep it (the recordDecision activity), by a
   * person or, with `unanswered` saying why, by nobody.
   */
  function writeDecision(toolUseId: string, decision: PendingApproval['decision'], unanswered?: { message: string; reason: string }): Promise<void> {
    return bookkeeping().recordDecision({
      sessionId,
      toolUseId,
      result: decision?.result ?? 'deny',
      actor: decision?.actor ?? null,
      reason: decision ? `decided by ${decision.actor.keyId}` : (unanswered?.reason ?? 'no decision'),
      denyMessage: decision ? (decision.message ?? null) : (unanswered?.message ?? null),
      ...(decision?.eventId ? { eventId: decision.eventId } : {}),
    });
  }

  // ---- main loop ------------------------------------------------------------------------------------------
  // a new session is already `idle` in the index; like Managed Agents, it emits no status event until it runs
  for (;;) {
    const woke = await condition(() => queue.length > 0 || archived, `${agent.idleTimeoutSeconds} seconds`);
    if (archived || !woke) break;
    interruptRequested = false;
    const message = queue.shift() as QueuedMessage;
    await runOneTurn(message);
    settled ??= { status, stopReason };
    if (archived) break;
    if (workflowInfo().continueAsNewSuggested || turn % (input.turnsPerRun ?? DEFAULT_TURNS_PER_RUN) === 0) {
      await condition(allHandlersFinished);
      await continueAsNew<typeof agentSession>({
        ...input,
        // a message that arrived while handlers finished is carried, not dropped
        initialMessages: [...queue],
        carried: { turn, spentMicros, policy, policyVersion, stopReason, ...(affinity ? { holder } : {}) },
      });
    }
  }

  const reason: StopReason = archived ? { type: 'archived' } : { type: 'idle_timeout' };
  if (patched(CLOSE_BEFORE_TERMINATED_PATCH)) {
    await closeRuntime();
    await setStatus('terminated', reason, 'terminated');
  } else {
    await setStatus('terminated', reason, 'terminated');
    await remoteBookkeeping.closeRuntime({ sessionId, runtime: agent.runtime.type });
  }
  // a session that ends before its first turn settled (archived first) settles here
  settled ??= { status, stopReason };
  await condition(allHandlersFinished);
  return { stopReason: reason };

  /** The session's runtime is stopped where it runs: on the worker holding it, else (gone) on any. */
  async function closeRuntime(): Promise<void> {
    await atHolder(closeOnHolder, remoteBookkeeping, (on) => on.closeRuntime({ sessionId, runtime: agent.runtime.type }));
  }
}
