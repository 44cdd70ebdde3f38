/**
 * Every error leaves the API as application/problem+json: a stable `type`, a `title`, the `status`, a `detail`
 * a person can act on, and the `request_id`. Validation errors name the field.
 */
import type { Context } from 'hono';
import type { ZodError } from 'zod';
import type { AppEnv } from './context';

export type ProblemCode =
  | 'request.invalid'
  | 'request.method_not_allowed'
  | 'request.too_large'
  | 'request.rate_limited'
  | 'auth.missing_key'
  | 'auth.invalid_key'
  | 'auth.forbidden'
  | 'resource.not_found'
  | 'resource.conflict'
  | 'session.not_accepting'
  | 'approval.not_pending'
  | 'approval.self_approval'
  | 'temporal.unavailable'
  | 'internal';

const TITLES: Record<ProblemCode, string> = {
  'request.invalid': 'The request is invalid',
  'request.method_not_allowed': 'The resource does not take this method',
  'request.too_large': 'The request body is too large',
  'request.rate_limited': 'Too many requests',
  'auth.missing_key': 'An API key is required',
  'auth.invalid_key': 'The API key is not valid',
  'auth.forbidden': 'The API key lacks the permission',
  'resource.not_found': 'Not found',
  'resource.conflict': 'Conflict',
  'session.not_accepting': 'The session does not accept this event now',
  'approval.not_pending': 'The tool call is not waiting for a decision',
  'approval.self_approval': 'The initiator of a session cannot approve its tool calls',
  'temporal.unavailable': 'The workflow service is unavailable',
  internal: 'Internal error',
};

export interface InvalidParam {
  name: string;
  reason: string;
}

export class ApiError extends Error {
  constructor(
    readonly status: 400 | 401 | 403 | 404 | 405 | 409 | 413 | 422 | 429 | 503 | 500,
    readonly code: ProblemCode,
    detail: string,
    readonly invalidParams?: InvalidParam[],
  ) {
    super(detail);
  }
}

export const notFound = (what: string) => new ApiError(404, 'resource.not_found', `${what} was not found`);

/** The problem+json body of an error: the answer of a failed request, and the data of an SSE stream's `error` frame. */
export function problemBody(err: ApiError, requestId: string) {
  return {
    type: `https://agentplane.dev/problems/${err.code}`,
    title: TITLES[err.code],
    status: err.status,
    detail: err.message,
    code: err.code,
    request_id: requestId,
    ...(err.invalidParams ? { invalid_params: err.invalidParams } : {}),
    // Managed-Agents-style clients read `error.type` / `error.message`
    error: { type: err.code, message: err.message },
  };
}

export function problem(c: Context<AppEnv>, err: ApiError) {
  return c.body(JSON.stringify(problemBody(err, c.get('requestId'))), err.status, { 'content-type': 'application/problem+json' });
}

export function fromZodError(error: ZodError, where: 'body' | 'query' | 'path' | 'header'): ApiError {
  const params = error.issues.map((issue) => ({
    name: [where, ...issue.path.map(String)].join('.'),
    reason: issue.message,
  }));
  const detail = params.map((p) => `${p.name}: ${p.reason}`).join('; ');
  return new ApiError(400, 'request.invalid', detail, params);
}
