import { createHash } from 'node:crypto';
import { ulid } from 'ulid';

export type IdPrefix = 'sesn' | 'agent' | 'cred' | 'team' | 'key' | 'env' | 'sevt' | 'led' | 'aud' | 'req' | 'bud' | 'whk' | 'dlv';

/** Prefixed, time-ordered ids: `sesn_01J…`. Lower case so they read well in URLs. */
export function newId(prefix: IdPrefix): string {
  return `${prefix}_${ulid().toLowerCase()}`;
}

/** The same input always gives the same id: used where a retry must land on the row it wrote before. */
export function stableId(prefix: IdPrefix, ...parts: string[]): string {
  return `${prefix}_${createHash('sha256').update(parts.join('\u0000')).digest('hex').slice(0, 26)}`;
}
