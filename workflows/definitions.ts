/**
 * The session workflow's public surface: input, state, signals, queries and updates. Defined once, imported by the
 * workflow, the activities' types and the API. Wire names never change once shipped.
 */
import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';
import type { Actor, AgentSnapshot, SessionBudget, ToolPolicy } from '../governance/types';

export const SESSION_WORKFLOW = 'agentSession';

export type SessionStatus = 'idle' | 'running' | 'requires_action' | 'terminated';

export type StopReason =
  | { type: 'end_turn' }
  | { type: 'requires_action'; event_ids: string[] }
  | { type: 'budget_reached' }
  | { type: 'retries_exhausted'; message: string }
  | { type: 'interrupted' }
  | { type: 'error'; message: string }
  | { type: 'idle_timeout' }
  | { type: 'archived' };

export type SessionTrigger = 'api' | 'schedule' | 'cli';

export interface QueuedMessage {
  /** the `sevt_` id the API gave the user.message event */
  eventId: string;
  text: string;
}

export interface SessionWorkflowInput {
  sessionId: string;
  /** frozen at start: later agent versions do not change a running session, except by policy signal */
  agent: AgentSnapshot;
  initiator: Actor;
  trigger: SessionTrigger;
  budget: SessionBudget;
  initialMessages: QueuedMessage[];
  /** the team's policy revision `agent.toolPolicy` was composed at */
  policyVersion?: number;
  /** continue-as-new after this many turns (default 200) even if the server has not suggested it */
  turnsPerRun?: number;
  /** set when the workflow continues as new */
  carried?: CarriedState;
}

/** What survives continue-as-new. */
export interface CarriedState {
  turn: number;
  spentMicros: number;
  policy: ToolPolicy;
  policyVersion: number;
  stopReason: StopReason | null;
  /** the task queue of the worker that holds the session's live runtime (affinity); absent: none known */
  holder?: string | null;
}

export interface PendingApproval {
  toolUseId: string;
  requestId: string;
  /** `eventId`: the id the API gave the decision, which its `user.tool_confirmation` event then has in the log */
  decision: { result: 'allow' | 'deny'; message?: string; actor: Actor; eventId?: string } | null;
}

export interface SessionState {
  status: SessionStatus;
  stopReason: StopReason | null;
  turn: number;
  spentMicros: number;
  policyVersion: number;
  queuedMessages: number;
  pendingApprovals: Array<{ toolUseId: string }>;
}

export interface ToolConfirmation {
  toolUseId: string;
  result: 'allow' | 'deny';
  denyMessage?: string;
  actor: Actor;
  eventId: string;
}

/** The tool confirmations of one API request: the workflow takes all of them, or refuses all of them. */
export interface ToolConfirmations {
  confirmations: ToolConfirmation[];
}

/** A decision as the workflow recorded it (its event, the approval row and the audit row committed) before answering. */
export interface RecordedDecision {
  toolUseId: string;
  result: 'allow' | 'deny';
  /** the key that decided */
  decidedBy: string;
  /** the id of its `user.tool_confirmation` event in the log */
  eventId: string;
}

/**
 * Why the workflow refused a `toolConfirmationUpdate`: the type of the ApplicationFailure it fails with, whose message
 * a person can read and whose details are `[{ toolUseId }]`, the call it refused.
 */
export type ToolConfirmationRefusal = 'approval.not_pending' | 'approval.unknown_call' | 'approval.self_approval';

export const userMessageSignal = defineSignal<[QueuedMessage]>('user.message');
/**
 * How confirmations arrived before they were updates. Still handled, for signals sent before the API changed; a second
 * answer to a decided call is dropped here without a word, which is why the API now sends `toolConfirmationUpdate`.
 */
export const toolConfirmationSignal = defineSignal<[ToolConfirmation]>('user.tool_confirmation');
/**
 * A person's decisions, answered with what the workflow did: recorded, or refused (ToolConfirmationRefusal) when a
 * call is unknown, already decided, or the initiator's own under separation of duties. Updates and signals are
 * separate namespaces in Temporal: this one has the name of the event it records, as the signal did.
 */
export const toolConfirmationUpdate = defineUpdate<{ decisions: RecordedDecision[] }, [ToolConfirmations]>('user.tool_confirmation');
export const interruptSignal = defineSignal<[{ actor: Actor; eventId: string }]>('user.interrupt');
export const archiveSignal = defineSignal<[{ actor: Actor }]>('session.archive');
export const policyUpdateSignal = defineSignal<[{ policy: ToolPolicy; version: number }]>('policy.update');
export const sessionStateQuery = defineQuery<SessionState>('session.state');

/** Where a session sends `sessionSettledSignal`: a scheduled run's workflow (this run of it, not a later one). */
export interface SessionWatcher {
  workflowId: string;
  runId: string;
}

/** A session's state once its first turn has settled: idle after the turn, or terminated. */
export interface SessionSettled {
  status: SessionStatus;
  stopReason: StopReason | null;
}

/** Sent to a session: signal `watcher` once the first turn has settled (at once if it already has). */
export const sessionWatchSignal = defineSignal<[SessionWatcher]>('session.watch');
/** Sent by a session to the workflow that watches it. */
export const sessionSettledSignal = defineSignal<[SessionSettled]>('session.settled');

// ---- scheduled runs ---------------------------------------------------------------------------------------

export const SCHEDULED_RUN_WORKFLOW = 'scheduledRun';

/**
 * What a schedule's action starts: the schedule is read when the run fires, so an update to its prompt or agent
 * needs no change to the Temporal schedule.
 */
export interface ScheduledRunInput {
  scheduleId: string;
  teamId: string;
}

export interface ScheduledRunResult {
  sessionId: string;
  status: SessionStatus;
  stopReason: StopReason | null;
}
