import { createHash, randomFillSync } from 'node:crypto';
import { encodeTime, ulid } from 'ulid';

export type IdPrefix = 'sesn' | 'agent' | 'cred' | 'team' | 'key' | 'env' | 'sevt' | 'led' | 'aud' | 'req' | 'bud' | 'whk' | 'dlv' | 'sched';

/** Prefixed, time-ordered ids: `sesn_01J…`. Lower case so they read well in URLs. */
export function newId(prefix: IdPrefix): string {
  return `${prefix}_${ulid(undefined, pooledRandom).toLowerCase()}`;
}

/**
 * ulid's random part from the operating system's CSPRNG, as its default, but drawn from a buffer refilled 4 KiB at a
 * time: the default asks the OS once per character, 16 times per id, which showed in the API's profile (one id per
 * request).
 */
const randomPool = new Uint8Array(4096);
let randomAt = randomPool.length;
function pooledRandom(): number {
  if (randomAt === randomPool.length) {
    randomFillSync(randomPool);
    randomAt = 0;
  }
  return randomPool[randomAt++]! / 256;
}

/** The same input always gives the same id: used where a retry must land on the row it wrote before. */
export function stableId(prefix: IdPrefix, ...parts: string[]): string {
  return `${prefix}_${createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 26)}`;
}

const CROCKFORD = '0123456789abcdefghjkmnpqrstvwxyz';

/**
 * A stable id that still sorts by time like `newId`: the time part is `at`, the rest derives from `parts`. Used
 * where the same event (a schedule's fire) must always get the same id and lists order by id.
 */
export function stableTimedId(prefix: IdPrefix, at: Date, ...parts: string[]): string {
  const digest = createHash('sha256').update(parts.join('\u0000')).digest();
  const random = Array.from(digest.subarray(0, 16), (byte) => CROCKFORD[byte % 32]).join('');
  return `${prefix}_${encodeTime(at.getTime(), 10).toLowerCase()}${random}`;
}
