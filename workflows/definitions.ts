/**
 * The session workflow's public surface: input, state, signals and queries. Defined once, imported by the
 * workflow, the activities' types and the API. Wire names never change once shipped.
 */
import { defineQuery, defineSignal } from '@temporalio/workflow';
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
  decision: { result: 'allow' | 'deny'; message?: string; actor: Actor } | null;
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

export const userMessageSignal = defineSignal<[QueuedMessage]>('user.message');
export const toolConfirmationSignal = defineSignal<[ToolConfirmation]>('user.tool_confirmation');
export const interruptSignal = defineSignal<[{ actor: Actor; eventId: string }]>('user.interrupt');
export const archiveSignal = defineSignal<[{ actor: Actor }]>('session.archive');
export const policyUpdateSignal = defineSignal<[{ policy: ToolPolicy; version: number }]>('policy.update');
export const sessionStateQuery = defineQuery<SessionState>('session.state');

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
