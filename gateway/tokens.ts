/**
 * The token a session's runtime presents to the model gateway instead of a key.
 *
 * `apgw_` + base64url(HMAC-SHA256(key, session id, credential id)), with a key derived from the master key
 * (`Vault.deriveKeys`): indistinguishable from random to anyone without the master key, bound to the session and to
 * the credential whose key the gateway injects, and nothing to store. A runtime server that outlives its worker keeps
 * its token, and the next worker (or another one, once sessions move) makes the same one without a lookup. A session's
 * tokens under every master key still configured are accepted (`all`), so a rotation does not cut running sessions
 * off.
 *
 * A token alone opens nothing: the gateway takes it only on the session's own socket (./gateway.ts), only while the
 * session is registered there (it is revoked when the session ends), and never for another session's credential.
 */
import { createHmac } from 'node:crypto';

export const TOKEN_PURPOSE = 'agentplane:gateway-token:v1';
const PREFIX = 'apgw_';

export interface SessionTokens {
  /** the session's token for its credential */
  issue(sessionId: string, credentialId: string): string;
  /** the tokens the session may present for that credential: its token under each configured key, the current first */
  all(sessionId: string, credentialId: string): string[];
}

/** `keys`: the current key first (Vault.deriveKeys(TOKEN_PURPOSE)). */
export function createSessionTokens(keys: readonly Buffer[]): SessionTokens {
  if (keys.length === 0) throw new Error('the gateway needs at least one token key');
  const token = (key: Buffer, sessionId: string, credentialId: string) => `${PREFIX}${createHmac('sha256', key).update(`${sessionId}\0${credentialId}`).digest('base64url')}`;
  return {
    issue: (sessionId, credentialId) => token(keys[0]!, sessionId, credentialId),
    all: (sessionId, credentialId) => keys.map((key) => token(key, sessionId, credentialId)),
  };
}
