import { z } from '@hono/zod-openapi';

export const Problem = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    code: z.string(),
    request_id: z.string(),
    invalid_params: z.array(z.object({ name: z.string(), reason: z.string() })).optional(),
    error: z.object({ type: z.string(), message: z.string() }),
  })
  .openapi('Problem');

export const problemResponses = {
  400: { description: 'Invalid request', content: { 'application/problem+json': { schema: Problem } } },
  401: { description: 'Missing or invalid API key', content: { 'application/problem+json': { schema: Problem } } },
  403: { description: 'The key lacks the permission', content: { 'application/problem+json': { schema: Problem } } },
  404: { description: 'Not found (or another team\'s)', content: { 'application/problem+json': { schema: Problem } } },
  409: { description: 'Conflict with the current state', content: { 'application/problem+json': { schema: Problem } } },
  413: { description: 'The body is larger than the limit (AGENTPLANE_MAX_BODY_BYTES)', content: { 'application/problem+json': { schema: Problem } } },
} as const;

/** For the routes that cap how many of them one key may hold open; `Retry-After` says when to try again. */
export const rateLimitedResponse = {
  429: {
    description: 'The key holds as many of these as it may at once',
    headers: { 'Retry-After': { description: 'seconds to wait before trying again', schema: { type: 'integer' as const } } },
    content: { 'application/problem+json': { schema: Problem } },
  },
} as const;

/** Postgres `integer` columns hold versions: a larger number cannot name a row, so it is refused as invalid, not looked up. */
export const MAX_VERSION = 2_147_483_647;
export const Version = z.number().int().positive().max(MAX_VERSION);

export const PageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(1000).default(20).openapi({ description: 'page size (1–1000)' }),
  page: z.string().min(1).max(200).optional().openapi({ description: 'the `next_page` cursor of the previous page' }),
});

export const Metadata = z.record(z.string().max(64), z.string().max(512)).refine((m) => Object.keys(m).length <= 16, 'at most 16 keys');

export function page<T extends z.ZodTypeAny>(item: T, name: string) {
  return z.object({ data: z.array(item), next_page: z.string().nullable() }).openapi(name);
}

export const json = <T extends z.ZodTypeAny>(schema: T, description: string) => ({ description, content: { 'application/json': { schema } } });
export const jsonBody = <T extends z.ZodTypeAny>(schema: T) => ({ required: true, content: { 'application/json': { schema } } });

/** Prefixed ids in paths; a malformed id is a 404 like an unknown one (it cannot exist). */
export const idParam = <K extends string>(name: K, prefix: string) =>
  z.object({ [name]: z.string().min(1).max(100).openapi({ param: { name, in: 'path' }, example: `${prefix}_01j…` }) } as Record<K, z.ZodString>);
