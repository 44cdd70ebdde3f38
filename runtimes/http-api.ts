/**
 * The JSON half of a remote runtime's REST client (Cursor, Hermes): a Bearer key, JSON in and out, and errors that
 * carry the HTTP status and the server's message with the key redacted and resource ids folded out of the route, so
 * an error can be logged and shown without leaking the key or exploding label cardinality.
 */
import { redact } from './kit/redact';

export class RuntimeApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface JsonClientOptions {
  /** resource ids in paths, replaced by `{id}` in error messages */
  ids: RegExp;
  /** the adapter's own error class */
  error?: new (status: number, message: string) => RuntimeApiError;
}

export function createJsonClient(baseUrl: string, key: string | undefined, opts: JsonClientOptions) {
  const root = baseUrl.replace(/\/+$/, '');
  const auth = (): Record<string, string> => (key ? { authorization: `Bearer ${key}` } : {});
  const ErrorClass = opts.error ?? RuntimeApiError;

  async function failure(res: Response, what: string): Promise<RuntimeApiError> {
    const text = await res.text().catch(() => '');
    let message = text.slice(0, 500);
    try {
      const body = JSON.parse(text) as { error?: { message?: string } };
      message = body.error?.message ?? message;
    } catch {
      // not JSON
    }
    return new ErrorClass(res.status, `${what}: ${res.status} ${redact(message, [key])}`);
  }

  return {
    root,
    auth,
    failure,
    async request<T = any>(method: string, path: string, body?: unknown, extra: Record<string, string> = {}): Promise<T> {
      const res = await fetch(`${root}${path}`, {
        method,
        headers: { ...auth(), ...extra, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (!res.ok) throw await failure(res, `${method} ${path.replace(opts.ids, '/{id}')}`);
      return (await res.json()) as T;
    },
  };
}
