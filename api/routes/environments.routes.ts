import { createRoute, z } from '@hono/zod-openapi';
import { appendAudit } from '../../db/queries/audit';
import { createEnvironment, listEnvironments } from '../../db/queries/agents';
import { requires, type App, type AppDeps } from '../create-app';
import { json, jsonBody, Metadata, page, PageQuery, problemResponses } from '../schemas/common';
import { auditActor } from './agents.routes';

export const EnvironmentSchema = z
  .object({
    id: z.string(),
    type: z.literal('environment'),
    name: z.string(),
    config: z.record(z.string(), z.unknown()),
    metadata: z.record(z.string(), z.string()),
    created_at: z.string(),
    archived_at: z.string().nullable(),
  })
  .openapi('Environment');

const EnvironmentCreate = z.object({
  name: z.string().min(1).max(256),
  description: z.string().max(2048).optional(),
  config: z.record(z.string(), z.unknown()).optional().openapi({ description: 'runtime environment settings (Managed Agents: {type: "cloud", networking, packages})' }),
  metadata: Metadata.optional(),
});

function toResponse(row: { id: string; name: string; config: unknown; metadata: unknown; createdAt: Date; archivedAt: Date | null }) {
  return {
    id: row.id,
    type: 'environment' as const,
    name: row.name,
    config: row.config as Record<string, unknown>,
    metadata: row.metadata as Record<string, string>,
    created_at: row.createdAt.toISOString(),
    archived_at: row.archivedAt?.toISOString() ?? null,
  };
}

export function registerEnvironmentRoutes(app: App, deps: AppDeps): void {
  app.openapi(
    createRoute({ middleware: requires('environments:write'), method: 'post', path: '/v1/environments', tags: ['environments'], request: { body: jsonBody(EnvironmentCreate) }, responses: { 200: json(EnvironmentSchema, 'The environment'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const body = c.req.valid('json');
      const row = await deps.db.transaction(async (tx) => {
        const env = await createEnvironment(tx, { teamId: actor.teamId, name: body.name, config: body.config ?? { type: 'local' }, metadata: body.metadata ?? {} });
        await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'environment.create', target: env.id, decision: 'ok', reason: 'environments:write' });
        return env;
      });
      return c.json(toResponse(row), 200);
    },
  );
  app.openapi(
    createRoute({ middleware: requires('environments:read'), method: 'get', path: '/v1/environments', tags: ['environments'], request: { query: PageQuery }, responses: { 200: json(page(EnvironmentSchema, 'EnvironmentPage'), 'Environments'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const rows = await listEnvironments(deps.db, { teamId: actor.teamId, limit: c.req.valid('query').limit });
      return c.json({ data: rows.map(toResponse), next_page: null }, 200);
    },
  );
}
