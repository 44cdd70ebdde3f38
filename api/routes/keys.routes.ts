/**
 * API keys: created with a role, shown in the clear once, listed as metadata, revoked. The response schemas are
 * written by hand and the queries name their columns, so a key's hash never leaves the database.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { appendAudit } from '../../db/queries/audit';
import { createApiKey, forgetVerifiedKey, getApiKey, listApiKeys, revokeApiKey, type ApiKeyMetadata } from '../../db/queries/teams';
import { can, ROLE_PERMISSIONS } from '../../governance/permissions';
import { ROLES } from '../../governance/types';
import { requires, type App, type AppDeps } from '../create-app';
import { ApiError, notFound } from '../errors';
import { idParam, json, jsonBody, page, PageQuery, problemResponses } from '../schemas/common';
import { auditActor } from './agents.routes';

const tags = ['keys'];
const KeyId = idParam('key_id', 'key');

export const ApiKeySchema = z
  .object({
    id: z.string(),
    type: z.literal('api_key'),
    name: z.string(),
    role: z.enum(ROLES),
    prefix: z.string().openapi({ description: 'the first characters of the key, to tell keys apart' }),
    created_at: z.string(),
    revoked_at: z.string().nullable(),
  })
  .openapi('ApiKey');

export const CreatedApiKeySchema = ApiKeySchema.extend({
  key: z.string().openapi({ description: 'the key itself: shown this once, stored only as a hash' }),
}).openapi('CreatedApiKey');

const KeyCreate = z.object({ name: z.string().min(1).max(256), role: z.enum(ROLES) });

export function toKeyResponse(row: Omit<ApiKeyMetadata, 'teamId'>): z.infer<typeof ApiKeySchema> {
  return {
    id: row.id,
    type: 'api_key',
    name: row.name,
    role: row.role as (typeof ROLES)[number],
    prefix: row.prefix,
    created_at: row.createdAt.toISOString(),
    revoked_at: row.revokedAt?.toISOString() ?? null,
  };
}

export function registerKeyRoutes(app: App, deps: AppDeps): void {
  const { db } = deps;

  app.openapi(
    createRoute({ middleware: requires('keys:admin'), method: 'post', path: '/v1/keys', tags, request: { body: jsonBody(KeyCreate) }, responses: { 200: json(CreatedApiKeySchema, 'The key, in the clear this once'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const body = c.req.valid('json');
      // a key never mints a stronger one: a team admin cannot make a platform_admin key
      const beyond = [...ROLE_PERMISSIONS[body.role]].find((permission) => !can(actor.role, permission));
      if (beyond) {
        throw new ApiError(403, 'auth.forbidden', `body.role: a "${body.role}" key may "${beyond}", which role "${actor.role}" lacks`, [
          { name: 'body.role', reason: `only a key holding every permission of "${body.role}" may create one` },
        ]);
      }
      const created = await db.transaction(async (tx) => {
        const result = await createApiKey(tx, { teamId: actor.teamId, name: body.name, role: body.role });
        // the plain key and its hash stay out of the log: the id, name and role say what was made
        await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'key.create', target: result.key.id, decision: 'ok', reason: 'keys:admin', data: { name: body.name, role: body.role } });
        return result;
      });
      return c.json({ ...toKeyResponse(created.key), key: created.plain }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('keys:admin'),
      method: 'get',
      path: '/v1/keys',
      tags,
      request: { query: PageQuery },
      responses: { 200: json(page(ApiKeySchema, 'ApiKeyPage'), "The team's keys, revoked ones included, newest first"), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const q = c.req.valid('query');
      const rows = await listApiKeys(db, { teamId: actor.teamId, limit: q.limit, before: q.page });
      return c.json({ data: rows.map(toKeyResponse), next_page: rows.length === q.limit ? (rows.at(-1)?.id ?? null) : null }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('keys:admin'),
      method: 'post',
      path: '/v1/keys/{key_id}/revoke',
      tags,
      request: { params: KeyId },
      responses: { 200: json(ApiKeySchema, 'The revoked key: its next call gets 401'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const keyId = c.req.valid('param').key_id;
      // a team must not lock itself out by accident: the key in hand cannot revoke itself
      if (keyId === actor.keyId) throw new ApiError(409, 'resource.conflict', 'a key cannot revoke itself: revoke it with another admin key');
      const revoked = await db.transaction(async (tx) => {
        const row = await revokeApiKey(tx, { teamId: actor.teamId, keyId });
        if (row) await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'key.revoke', target: keyId, decision: 'ok', reason: 'keys:admin', data: { name: row.name, role: row.role } });
        return row;
      });
      if (revoked) {
        // this process forgets it at once (a request right after this answer is refused here); the others when they
        // hear the notification the commit sent
        forgetVerifiedKey(revoked.id);
        return c.json(toKeyResponse(revoked), 200);
      }
      const existing = await getApiKey(db, { teamId: actor.teamId, keyId });
      if (!existing) throw notFound('key');
      throw new ApiError(409, 'resource.conflict', `key ${keyId} was already revoked at ${existing.revokedAt?.toISOString()}`);
    },
  );
}
