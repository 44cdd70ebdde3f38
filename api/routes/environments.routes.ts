import { isIP } from 'node:net';
import { createRoute, z } from '@hono/zod-openapi';
import { appendAudit } from '../../db/queries/audit';
import { createEnvironment, getEnvironment, listEnvironments, updateEnvironment, type EnvironmentRow } from '../../db/queries/environments';
import type { EgressGuard } from '../../runtimes/kit/egress';
import { requires, type App, type AppDeps } from '../create-app';
import { ApiError, notFound } from '../errors';
import { idParam, json, jsonBody, page, PageQuery, problemResponses } from '../schemas/common';
import {
  allowedHostField,
  applyConfigParams,
  DEFAULT_ENVIRONMENT_CONFIG,
  EnvironmentCreateSchema,
  EnvironmentSchema,
  EnvironmentUpdateSchema,
  readEnvironmentConfig,
  type EnvironmentConfigParams,
} from '../schemas/environment.schema';
import { auditActor } from './agents.routes';

const EnvironmentId = idParam('environment_id', 'env');
const tags = ['environments'];
const MAX_METADATA_KEYS = 16;

function toResponse(row: EnvironmentRow) {
  return {
    id: row.id,
    type: 'environment' as const,
    name: row.name,
    description: row.description,
    // what the worker enforces: an environment saved before policies were checked shows the policy it runs under
    config: readEnvironmentConfig(row.config),
    metadata: row.metadata as Record<string, string>,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
    archived_at: row.archivedAt?.toISOString() ?? null,
  };
}

/**
 * An IP literal among `allowed_hosts` must be one the platform connects to: the sandbox's proxy would refuse a
 * private one anyway, so saving it would only mislead. Names are judged when connecting (they may resolve anywhere).
 */
async function checkAllowedAddresses(config: EnvironmentConfigParams | null | undefined, egress: EgressGuard): Promise<void> {
  const networking = config?.networking;
  if (networking?.type !== 'limited') return;
  for (const [index, host] of (networking.allowed_hosts ?? []).entries()) {
    if (isIP(host)) await egress.checkUrl(`http://${isIP(host) === 6 ? `[${host}]` : host}/`, allowedHostField(index));
  }
}

export function registerEnvironmentRoutes(app: App, deps: AppDeps): void {
  const { db } = deps;

  app.openapi(
    createRoute({ middleware: requires('environments:write'), method: 'post', path: '/v1/environments', tags, request: { body: jsonBody(EnvironmentCreateSchema) }, responses: { 200: json(EnvironmentSchema, 'The environment'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const body = c.req.valid('json');
      await checkAllowedAddresses(body.config, deps.egress);
      const config = applyConfigParams(DEFAULT_ENVIRONMENT_CONFIG, body.config);
      const row = await db.transaction(async (tx) => {
        const env = await createEnvironment(tx, { teamId: actor.teamId, name: body.name, description: body.description ?? null, config, metadata: body.metadata ?? {} });
        await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'environment.create', target: env.id, decision: 'ok', reason: 'environments:write', data: { networking: config.networking } });
        return env;
      });
      return c.json(toResponse(row), 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('environments:read'),
      method: 'get',
      path: '/v1/environments',
      tags,
      request: { query: PageQuery.extend({ include_archived: z.enum(['true', 'false']).default('false') }) },
      responses: { 200: json(page(EnvironmentSchema, 'EnvironmentPage'), 'Environments, newest first'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const q = c.req.valid('query');
      const rows = await listEnvironments(db, { teamId: actor.teamId, limit: q.limit, before: q.page, includeArchived: q.include_archived === 'true' });
      return c.json({ data: rows.map(toResponse), next_page: rows.length === q.limit ? (rows.at(-1)?.id ?? null) : null }, 200);
    },
  );

  app.openapi(
    createRoute({ middleware: requires('environments:read'), method: 'get', path: '/v1/environments/{environment_id}', tags, request: { params: EnvironmentId }, responses: { 200: json(EnvironmentSchema, 'The environment'), ...problemResponses } }),
    async (c) => {
      const row = await getEnvironment(db, { teamId: c.get('actor').teamId, environmentId: c.req.valid('param').environment_id });
      if (!row) throw notFound('environment');
      return c.json(toResponse(row), 200);
    },
  );

  /**
   * Changes the environment in place (it is not versioned, like Managed Agents'): running sessions take a new
   * `networking` from their next turn. The change is made on the row as locked, and written with its audit row.
   */
  app.openapi(
    createRoute({
      middleware: requires('environments:write'),
      method: 'post',
      path: '/v1/environments/{environment_id}',
      tags,
      request: { params: EnvironmentId, body: jsonBody(EnvironmentUpdateSchema) },
      responses: { 200: json(EnvironmentSchema, 'The environment as changed'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const environmentId = c.req.valid('param').environment_id;
      const body = c.req.valid('json');
      // another team's environment is a 404 before anything about the body is said
      if (!(await getEnvironment(db, { teamId: actor.teamId, environmentId }))) throw notFound('environment');
      await checkAllowedAddresses(body.config, deps.egress);
      const result = await db.transaction(async (tx) => {
        const updated = await updateEnvironment(tx, {
          teamId: actor.teamId,
          environmentId,
          change: (row) => ({
            ...(body.name == null ? {} : { name: body.name }),
            ...(body.description === undefined ? {} : { description: body.description }),
            ...(body.config == null ? {} : { config: applyConfigParams(readEnvironmentConfig(row.config), body.config) }),
            ...(body.metadata === undefined ? {} : { metadata: mergeMetadata(row.metadata as Record<string, string>, body.metadata) }),
          }),
        });
        if (updated.kind === 'ok' && updated.changed.length > 0) {
          const networking = { before: readEnvironmentConfig(updated.before.config).networking, after: readEnvironmentConfig(updated.after.config).networking };
          await appendAudit(tx, {
            ...auditActor(actor, c.get('requestId')),
            action: 'environment.update',
            target: environmentId,
            decision: 'ok',
            reason: 'environments:write',
            data: { fields: updated.changed, ...(updated.changed.includes('config') ? { networking } : {}) },
          });
        }
        return updated;
      });
      if (result.kind === 'not_found') throw notFound('environment');
      if (result.kind === 'archived') throw new ApiError(409, 'resource.conflict', `environment ${environmentId} is archived`);
      return c.json(toResponse(result.after), 200);
    },
  );
}

/** Managed Agents' metadata update: keys merged in, a key set to null or "" removed; the result keeps the cap. */
function mergeMetadata(current: Record<string, string>, changes: Record<string, string | null>): Record<string, string> {
  const merged = { ...current };
  for (const [key, value] of Object.entries(changes)) {
    if (value === null || value === '') delete merged[key];
    else merged[key] = value;
  }
  if (Object.keys(merged).length > MAX_METADATA_KEYS) {
    throw new ApiError(400, 'request.invalid', `body.metadata: the environment would have ${Object.keys(merged).length} metadata keys, more than ${MAX_METADATA_KEYS}`, [
      { name: 'body.metadata', reason: `at most ${MAX_METADATA_KEYS} keys after the merge` },
    ]);
  }
  return merged;
}
