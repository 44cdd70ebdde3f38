/**
 * One redaction for every runtime, the runtime HTTP clients and the logger (runtimes/kit/redact.ts): the secrets a
 * caller knows, and anything shaped like a key.
 */
import { describe, expect, it } from 'vitest';
import { createJsonLog } from '../observability/logger';
import { redact } from '../runtimes/kit/redact';

describe('redact', () => {
  it('removes the given secrets and every key shape, so an error echoing a key it was not told about leaks nothing', () => {
    const text = [
      'given: the-session-secret-0123',
      'openai: sk-proj-AbCdEf0123456789xyz',
      'anthropic: sk-ant-api03-AbCdEf0123456789',
      'agentplane: ap_0123456789abcdef0123',
      'webhook: whsec_0123456789abcdefABCD',
      'header: Authorization: Bearer eyJhbGciOi.payload.sig',
    ].join('\n');
    const out = redact(text, ['the-session-secret-0123', undefined]);
    for (const leaked of ['the-session-secret-0123', 'sk-proj-', 'sk-ant-', 'ap_0123', 'whsec_', 'eyJhbGciOi']) expect(out).not.toContain(leaked);
    expect(out.match(/\[redacted\]/g)).toHaveLength(6);
  });

  it('removes a secret that contains another whole, and leaves ordinary words and short values alone', () => {
    expect(redact('key=abcd1234 long=abcd1234xyz', ['abcd1234', 'abcd1234xyz'])).toBe('key=[redacted] long=[redacted]');
    expect(redact('task-runner sk-short ap_x bearer token', ['ab'])).toBe('task-runner sk-short ap_x bearer token');
  });

  it('is what the logger masks values with', () => {
    const lines: string[] = [];
    createJsonLog((line) => lines.push(line))({ msg: 'x', note: 'sk-ant-api03-AbCdEf0123456789 and whsec_0123456789abcdefABCD' });
    expect(JSON.parse(lines[0]!).note).toBe('[redacted] and [redacted]');
  });
});
