/**
 * The baseline of the overhead benchmark: the least a Temporal session can be. One update per turn, one activity per
 * turn, nothing else (no events, no status, no governance, no database). The update returns when the activity's result
 * is back in the workflow, which is where an agentplane turn ends too (it writes `session.status_idle` from there).
 */
import { condition, defineSignal, defineUpdate, proxyActivities, setHandler } from '@temporalio/workflow';

export interface BareActivities {
  bareTurn(turn: number): Promise<number>;
}

export const bareTurnUpdate = defineUpdate<number, [number]>('bare.turn');
export const bareStop = defineSignal('bare.stop');

const { bareTurn } = proxyActivities<BareActivities>({ startToCloseTimeout: '30 seconds' });

export async function bareSession(): Promise<void> {
  let stopped = false;
  setHandler(bareTurnUpdate, (turn) => bareTurn(turn));
  setHandler(bareStop, () => void (stopped = true));
  await condition(() => stopped);
}
