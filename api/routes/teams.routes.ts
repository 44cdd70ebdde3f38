/**
 * Teams: the caller's own, and new ones. A new team comes with its first admin key (in the clear once); from
 * then on it sees only its own resources, like every team. Only a platform admin creates teams (`teams:create`):
 * a team's own admin cannot multiply tenants, and the 409 for a taken name tells only a platform admin which exist.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { appendAudit } from '../../db/queries/audit';
import { createApiKey, createTeamIfNameFree, getTeam } from '../../db/queries/teams';
import { requires, type App, type AppDeps } from '../create-app';
import { ApiError, notFound } from '../errors';
import { json, jsonBody, problemResponses } from '../schemas/common';
import { auditActor } from './agents.routes';
import { CreatedApiKeySchema, toKeyResponse } from './keys.routes';

const tags = ['teams'];

export const TeamSchema = z.object({ id: z.string(), type: z.literal('team'), name: z.string(), created_at: z.string() }).openapi('Team');

const CreatedTeamSchema = TeamSchema.extend({ admin_key: CreatedApiKeySchema }).openapi('CreatedTeam');

const TeamCreate = z.object({ name: z.string().trim().min(1).max(256) });

function toTeamResponse(team: { id: string; name: string; createdAt: Date }): z.infer<typeof TeamSchema> {
  return { id: team.id, type: 'team', name: team.name, created_at: team.createdAt.toISOString() };
}

export function registerTeamRoutes(app: App, deps: AppDeps): void {
  const { db } = deps;

  app.openapi(
    createRoute({
      method: 'get',
      path: '/v1/teams/current',
      tags,
      description: 'Any valid key may read the team it belongs to.',
      responses: { 200: json(TeamSchema, "The caller's team"), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const team = await getTeam(db, { teamId: actor.teamId });
      if (!team) throw notFound('team');
      return c.json(toTeamResponse(team), 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('teams:create'),
      method: 'post',
      path: '/v1/teams',
      tags,
      request: { body: jsonBody(TeamCreate) },
      responses: { 200: json(CreatedTeamSchema, 'The team and its first admin key, in the clear this once'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const { name } = c.req.valid('json');
      const created = await db.transaction(async (tx) => {
        const team = await createTeamIfNameFree(tx, { name });
        if (!team) return null;
        const admin = await createApiKey(tx, { teamId: team.id, name: 'first admin', role: 'admin' });
        // recorded in the creator's team, which is where the action was taken; never the key, only its id
        await appendAudit(tx, {
          ...auditActor(actor, c.get('requestId')),
          action: 'team.create',
          target: team.id,
          decision: 'ok',
          reason: 'teams:create',
          data: { name, admin_key_id: admin.key.id },
        });
        return { team, admin };
      });
      if (!created) throw new ApiError(409, 'resource.conflict', `a team named "${name}" already exists`);
      return c.json({ ...toTeamResponse(created.team), admin_key: { ...toKeyResponse(created.admin.key), key: created.admin.plain } }, 200);
    },
  );
}
