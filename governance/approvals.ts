/**
 * A tool call that is no longer waiting for a person, as told to the next person who tries to decide it. The API
 * (from the approvals table) and the session workflow (from its own state) say it in the same words, so a client sees
 * one answer whichever of the two refused the decision.
 */

export interface DecidedCall {
  result: 'allow' | 'deny';
  /** the key that decided; null when nobody did (the deadline passed, or the turn was interrupted first) */
  decidedBy: string | null;
}

export function alreadyDecided(toolUseId: string, decided: DecidedCall): string {
  return `tool call ${toolUseId} was already decided by ${decided.decidedBy ?? 'system'} (${decided.result})`;
}
