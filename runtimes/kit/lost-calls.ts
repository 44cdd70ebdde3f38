/**
 * Calls that waited for a person when their runtime was lost (its host died, or the worker restarted and the runtime
 * with it). A runtime that cannot re-enter a pending call is restored from its session's snapshot, told what the person
 * decided, and makes an approved call again; the sink allows that call once on the approval (`approvedAs`).
 */
import { canonicalJson } from '../../db/queries/audit';
import type { CanonicalTool } from '../../governance/types';
import type { PermissionDecision } from '../runtime-adapter';

/** A call a turn parked for a person: recorded in the runtime's checkpoint when the turn parks. */
export interface AskedCall {
  /** the runtime's id for the pending request */
  requestId: string;
  /** its `agent.tool_use` id: what the person's approval names */
  toolUseId: string;
  tool: CanonicalTool;
  input: Record<string, unknown>;
}

/** The asked calls a person decided, with each decision. */
export function decidedCalls<T extends AskedCall>(asked: readonly T[], decisions: readonly PermissionDecision[]): Array<{ call: T; decision: PermissionDecision }> {
  return decisions.flatMap((decision) => {
    const call = asked.find((a) => a.requestId === decision.requestId);
    return call ? [{ call, decision }] : [];
  });
}

/** What the agent is told when its runtime was lost while its calls waited for a person, and what a person decided. */
export function lossNotice(decided: Array<{ call: AskedCall; decision: PermissionDecision }>, interruptedAs?: string): string {
  const lines = decided.map(({ call, decision }) =>
    decision.behavior === 'allow'
      ? `- ${call.tool} ${JSON.stringify(call.input)}: approved. Make this call again now, exactly as before.`
      : `- ${call.tool} ${JSON.stringify(call.input)}: denied${decision.message ? ` (${decision.message})` : ''}. Do not make it; go on without it.`,
  );
  return [
    `Your session moved to another machine while these tool calls waited for approval, so they did not run${interruptedAs ? ` (${JSON.stringify(interruptedAs)})` : ''}. A person has decided:`,
    ...lines,
    'Then finish the task you were given.',
  ].join('\n');
}

/** Whether a call made after the loss is this asked call made again: the same tool and the same input. */
export function sameCall(call: AskedCall, tool: CanonicalTool, input: Record<string, unknown>): boolean {
  return call.tool === tool && canonicalJson(call.input) === canonicalJson(input);
}

/** An approved call the agent was told to make again, and whether it has been. */
export type CarriedCall = AskedCall & { used?: boolean };

/**
 * The approved call a call made after the loss is (the same tool and input, not made again yet): its `agent.tool_use`
 * id, for the sink's `approvedAs`, and the carried calls with it used, to checkpoint before asking the sink. Null when
 * it is none of them.
 */
export function takeCarried(carried: readonly CarriedCall[] | undefined, tool: CanonicalTool, input: Record<string, unknown>): { approvedAs: string; carried: CarriedCall[] } | null {
  const found = carried?.find((c) => !c.used && sameCall(c, tool, input));
  if (!found || !carried) return null;
  return { approvedAs: found.toolUseId, carried: carried.map((c) => (c === found ? { ...c, used: true } : c)) };
}
