/**
 * The JSON half of a remote runtime's REST client (Cursor, Hermes): a Bearer key, JSON in and out, every request
 * through the egress guard's fetch, and errors that carry the HTTP status and at most a short token from the server's
 * JSON error (never its body: a URL pointed at the wrong server must not turn its pages into session errors), with
 * resource ids folded out of the route, so an error can be logged and shown without leaking anything or exploding
 * label cardinality.
 */
import { describeResponse } from './egress';

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
  /** the egress guard's fetch (runtimes/kit/egress.ts): the base URL is the tenant's choice */
  fetch: typeof fetch;
}

export function createJsonClient(baseUrl: string, key: string | undefined, opts: JsonClientOptions) {
  const root = baseUrl.replace(/\/+$/, '');
  const auth = (): Record<string, string> => (key ? { authorization: `Bearer ${key}` } : {});
  const ErrorClass = opts.error ?? RuntimeApiError;

  async function failure(res: Response, what: string): Promise<RuntimeApiError> {
    return new ErrorClass(res.status, `${what}: ${await describeResponse(res, [key])}`);
  }

  return {
    root,
    auth,
    failure,
    fetch: opts.fetch,
    async request<T = any>(method: string, path: string, body?: unknown, extra: Record<string, string> = {}): Promise<T> {
      const what = `${method} ${path.replace(opts.ids, '/{id}')}`;
      const res = await opts.fetch(`${root}${path}`, {
        method,
        headers: { ...auth(), ...extra, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      if (!res.ok) throw await failure(res, what);
      const text = await res.text();
      try {
        return JSON.parse(text) as T;
      } catch {
        // JSON.parse's message quotes the text it choked on
        throw new ErrorClass(502, `${what}: ${res.status} answer is not JSON`);
      }
    },
  };
}
