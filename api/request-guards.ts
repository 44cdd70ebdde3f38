/**
 * Two answers every /v1 route shares, whatever its own schema: input that no schema refuses but the database cannot
 * store, and a method the path does not take. Both were found by the API fuzzer (docs/reliability.md, "API
 * fuzzing"); test/api.fuzz-regressions.test.ts keeps them.
 */
import { ApiError, type InvalidParam } from './errors';

const NUL = '\u0000';
const NUL_REASON = 'contains a NUL character (U+0000), which no text field can store';

/**
 * Postgres cannot store U+0000 in text or jsonb, so a NUL in a validated path parameter, query value or body field
 * would reach the database and fail there as a 500. Called with what a route's schema let through (extra keys it
 * strips are gone, so they never count): the 400 names every field that holds one.
 */
export function nulCharacterProblem(data: unknown, where: 'body' | 'query' | 'path' | 'header'): ApiError | null {
  const invalid: InvalidParam[] = nulPaths(data, [where]).map((name) => ({ name, reason: NUL_REASON }));
  if (invalid.length === 0) return null;
  return new ApiError(400, 'request.invalid', invalid.map((p) => `${p.name}: ${p.reason}`).join('; '), invalid);
}

/** The dotted path of every string (value or key) in a JSON value that holds a NUL. */
function nulPaths(value: unknown, path: string[]): string[] {
  const show = (segment: string) => segment.replaceAll(NUL, '\\u0000');
  if (typeof value === 'string') return value.includes(NUL) ? [path.join('.')] : [];
  if (Array.isArray(value)) return value.flatMap((item, i) => nulPaths(item, [...path, String(i)]));
  if (value && typeof value === 'object') {
    return Object.entries(value).flatMap(([key, item]) => (key.includes(NUL) ? [[...path, show(key)].join('.')] : nulPaths(item, [...path, key])));
  }
  return [];
}

/**
 * The methods a /v1 path takes, from the app's own route table (read after every route is registered). A request
 * whose path names a resource but whose method does not gets 405 with these in an Allow header (RFC 9110 §15.5.6),
 * not the 404 of a path that does not exist. As in OpenAPI path matching, a concrete path (`/v1/credentials/rewrap`)
 * is its own resource and hides the templated one it also matches (`/v1/credentials/{credential_id}`).
 */
export function allowedMethods(routes: ReadonlyArray<{ method: string; path: string }>): (path: string) => string[] {
  const table = routes
    .filter((r) => r.method !== 'ALL' && r.path.startsWith('/v1/'))
    .map((r) => {
      const segments = r.path.split('/');
      return {
        method: r.method.toUpperCase(),
        params: segments.filter((s) => s.startsWith(':')).length,
        pattern: new RegExp(`^${segments.map((s) => (s.startsWith(':') ? '[^/]+' : escapeRegExp(s))).join('/')}/?$`),
      };
    });
  return (path) => {
    const matching = table.filter((r) => r.pattern.test(path));
    const fewest = Math.min(...matching.map((r) => r.params));
    return [...new Set(matching.filter((r) => r.params === fewest).map((r) => r.method))].sort();
  };
}

const escapeRegExp = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
