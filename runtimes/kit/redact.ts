/**
 * The one redaction for text that may carry a secret (runtime errors, stderr, tool output, log values): the secrets
 * the caller knows are cut out, and so is anything shaped like a key, known or not: provider keys (`sk-…`, which
 * covers Anthropic's `sk-ant-…`), agentplane keys (`ap_…`), webhook signing secrets (`whsec_…`) and bearer tokens.
 * Every adapter, the runtime HTTP clients and the structured logger call this; a new shape is added here once.
 */
export const REDACTED = '[redacted]';

const KEY_SHAPES = /\b(?:sk-|ap_|whsec_)[A-Za-z0-9_-]{8,}|\b[Bb]earer\s+[A-Za-z0-9._~+/=-]{8,}/g;

/**
 * `text` without the given secrets and without anything key-shaped. Secrets shorter than 4 characters are not cut:
 * no key is that short, and cutting one would shred the message.
 */
export function redact(text: string, secrets: ReadonlyArray<string | undefined> = []): string {
  let out = text;
  // longest first: a secret that contains another is removed whole
  for (const secret of [...secrets].filter((s): s is string => typeof s === 'string' && s.length >= 4).sort((a, b) => b.length - a.length)) {
    out = out.split(secret).join(REDACTED);
  }
  return out.replace(KEY_SHAPES, REDACTED);
}
