/**
 * The token a session's runtime presents to the model gateway instead of a key.
 *
 * `apgw_` + base64url(HMAC-SHA256(key, session id, credential id)), with a key derived from the master key
 * (`Vault.deriveKeys`): indistinguishable from random to anyone without the master key, bound to the session and to
 * the credential whose key the gateway injects, and nothing to store. A runtime server that outlives its worker keeps
 * its token, and the next worker (or another one, once sessions move) verifies it without a lookup. Verification
 * accepts tokens made with an older master key still configured, so a rotation does not cut running sessions off.
 *
 * A token alone opens nothing: the gateway takes it only on the session's own socket (./gateway.ts), only while the
 * session is registered there (it is revoked when the session ends), and never for another session's credential.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const TOKEN_PURPOSE = 'agentplane:gateway-token:v1';
const PREFIX = 'apgw_';

export interface SessionTokens {
  /** the session's token for its credential */
  issue(sessionId: string, credentialId: string): string;
  /** whether `token` is the session's token for that credential (constant time) */
  verify(token: string, sessionId: string, credentialId: string): boolean;
}

/** `keys`: the current key first (Vault.deriveKeys(TOKEN_PURPOSE)). */
export function createSessionTokens(keys: readonly Buffer[]): SessionTokens {
  if (keys.length === 0) throw new Error('the gateway needs at least one token key');
  const mac = (key: Buffer, sessionId: string, credentialId: string) => createHmac('sha256', key).update(`${sessionId}\0${credentialId}`).digest();
  return {
    issue: (sessionId, credentialId) => `${PREFIX}${mac(keys[0]!, sessionId, credentialId).toString('base64url')}`,
    verify(token, sessionId, credentialId) {
      if (!token.startsWith(PREFIX)) return false;
      const given = Buffer.from(token.slice(PREFIX.length), 'base64url');
      if (given.length !== 32) return false;
      let ok = false;
      for (const key of keys) ok = timingSafeEqual(given, mac(key, sessionId, credentialId)) || ok;
      return ok;
    },
  };
}
