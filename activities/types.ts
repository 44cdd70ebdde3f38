/**
 * Activity inputs and outputs: the only activity code the workflow sandbox sees (as types).
 */
import type { Actor, AgentSnapshot, SessionBudget, ToolPolicy } from '../governance/types';
import type { TurnInput, TurnResult } from '../runtimes/runtime-adapter';
import type { SessionSettled, SessionStatus, SessionWorkflowInput, StopReason } from '../workflows/definitions';

export interface WorkflowEvent {
  /** dedupe key: the same sourceId is written once per session, however often the activity retries */
  sourceId: string;
  /** a fixed public id (e.g. the one the API already returned for a user event); derived from sourceId otherwise */
  id?: string;
  type: string;
  payload: Record<string, unknown>;
}

export interface RecordEventsInput {
  sessionId: string;
  events: WorkflowEvent[];
  status?: { status: SessionStatus; stopReason: StopReason | null };
}

export interface RunTurnInput {
  sessionId: string;
  turnId: string;
  /** which activity call of the turn this is (a turn that stops for approval has several) */
  leg: number;
  agent: AgentSnapshot;
  initiator: Actor;
  input: TurnInput;
  policy: ToolPolicy;
  policyVersion: number;
  budget: SessionBudget;
}

export interface TurnOutcome {
  result: TurnResult;
  /** what the session has spent in total, read from the ledger after the turn */
  spentMicros: number;
  /** the turn was stopped because the session's cap was crossed */
  budgetReached: boolean;
  retriesExhausted?: boolean;
  /**
   * the task queue of the worker that ran the leg and now holds the session's live runtime (its processes run there):
   * the session's next legs go to it. Absent for a runtime that runs nothing on the worker (remote, in-process).
   */
  heldBy?: string;
}

export interface RecordDecisionInput {
  sessionId: string;
  toolUseId: string;
  result: 'allow' | 'deny';
  /** the person who decided; null when the deadline decided */
  actor: Actor | null;
  reason: string;
  denyMessage: string | null;
  /** the id the API gave the decision: its `user.tool_confirmation` event gets it (absent: derived, as for a deadline) */
  eventId?: string;
}

export interface SessionActivities {
  recordEvents(input: RecordEventsInput): Promise<void>;
  runTurn(input: RunTurnInput): Promise<TurnOutcome>;
  recordDecision(input: RecordDecisionInput): Promise<void>;
  closeRuntime(input: { sessionId: string; runtime: string }): Promise<void>;
}

export interface CreateScheduledSessionInput {
  scheduleId: string;
  teamId: string;
  /** the scheduled workflow's id: unique per fire, so the session id derives from it */
  runId: string;
  /** ISO time the schedule fired for */
  scheduledAt: string;
}

export interface ScheduledSession {
  sessionId: string;
  input: SessionWorkflowInput;
}

export interface ScheduleActivities {
  createScheduledSession(input: CreateScheduledSessionInput): Promise<ScheduledSession>;
  /**
   * resolves once the session is idle after a turn, or terminated, polling its row; heartbeats meanwhile. Only runs
   * started before the session told its run itself (`sessionWatchSignal`) still call it.
   */
  awaitSessionSettled(input: { sessionId: string }): Promise<SessionSettled>;
  /** the session's status and stop reason as its row has them now: one read */
  sessionOutcome(input: { sessionId: string }): Promise<SessionSettled>;
}
