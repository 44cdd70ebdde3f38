/**
 * The API over fetch: the key goes in the Authorization header and nowhere else, and an error answer becomes a
 * CliError carrying the API's problem+json title and detail, with the exit code its status maps to.
 */
import { CliError, EXIT, exitCodeForStatus } from './errors';
import type { Credentials } from './config';

export interface Page<T> {
  data: T[];
  next_page: string | null;
}

export type Query = Record<string, string | number | undefined>;

export interface ApiClient {
  readonly url: string;
  get<T>(path: string, query?: Query): Promise<T>;
  post<T>(path: string, body: unknown): Promise<T>;
  /** every item of a paged list, following `next_page` */
  list<T>(path: string, query?: Query): Promise<T[]>;
  /** an open text/event-stream response, checked like any other */
  stream(path: string, headers: Record<string, string>, signal?: AbortSignal): Promise<Response>;
}

export function createClient(credentials: Credentials): ApiClient {
  const { url, apiKey } = credentials;

  async function send(method: string, path: string, opts: { query?: Query; body?: unknown; headers?: Record<string, string>; signal?: AbortSignal } = {}): Promise<Response> {
    const target = new URL(`${url}${path}`);
    for (const [name, value] of Object.entries(opts.query ?? {})) if (value !== undefined) target.searchParams.set(name, String(value));
    let res: Response;
    try {
      res = await fetch(target, {
        method,
        headers: { authorization: `Bearer ${apiKey}`, ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }), ...opts.headers },
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        signal: opts.signal,
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new CliError(EXIT.api, `cannot reach ${url}: ${cause?.code ?? cause?.message ?? (err as Error).message}`);
    }
    if (!res.ok) throw await problemError(res);
    return res;
  }

  async function json<T>(res: Response): Promise<T> {
    return (await res.json()) as T;
  }

  return {
    url,
    get: async (path, query) => json(await send('GET', path, { query })),
    post: async (path, body) => json(await send('POST', path, { body })),
    async list<T>(path: string, query: Query = {}) {
      const items: T[] = [];
      let page: string | undefined;
      do {
        const res = await json<Page<T>>(await send('GET', path, { query: { limit: 1000, ...query, page } }));
        items.push(...res.data);
        page = res.next_page ?? undefined;
      } while (page);
      return items;
    },
    stream: (path, headers, signal) => send('GET', path, { headers: { accept: 'text/event-stream', ...headers }, signal }),
  };
}

/** "Title: detail" from a problem+json answer, or the status line when the body is something else. */
async function problemError(res: Response): Promise<CliError> {
  const text = await res.text();
  try {
    const problem = JSON.parse(text) as { title?: string; detail?: string };
    if (problem.title || problem.detail) return cliErrorOf(problem, res.status);
  } catch {
    // not problem+json (a proxy's page, say): the status line says enough
  }
  return new CliError(exitCodeForStatus(res.status), `${res.status} ${res.statusText} (HTTP ${res.status})`);
}

/** A problem+json body as the error the command exits with: from an answer, or from an event stream's `error` frame. */
export function cliErrorOf(problem: { title?: string; detail?: string }, status: number): CliError {
  return new CliError(exitCodeForStatus(status), `${[problem.title, problem.detail].filter(Boolean).join(': ')} (HTTP ${status})`);
}
