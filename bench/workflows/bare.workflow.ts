/**
 * The baseline of the overhead benchmark: the least a Temporal session can be. One signal per turn, one activity
 * per turn, nothing else (no events, no status, no governance).
 */
import { condition, defineSignal, proxyActivities, setHandler } from '@temporalio/workflow';

export interface BareActivities {
  bareTurn(turn: number): Promise<void>;
}

export const bareMessage = defineSignal<[number]>('bare.message');

const { bareTurn } = proxyActivities<BareActivities>({ startToCloseTimeout: '30 seconds' });

export async function bareSession(turns: number): Promise<void> {
  const queue: number[] = [];
  setHandler(bareMessage, (turn) => void queue.push(turn));
  for (let done = 0; done < turns; done++) {
    await condition(() => queue.length > 0);
    await bareTurn(queue.shift()!);
  }
}
