/**
 * Credentials are write-only: the secret goes in, metadata comes out. Response schemas are written by hand so a
 * secret can never ride along with a row.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { appendAudit } from '../../db/queries/audit';
import { createCredential, getCredential, listCredentials, revokeCredential, rewrapCredentials, rotateCredential, type CredentialMetadata } from '../../db/queries/credentials';
import { rewrapWebhookSecrets } from '../../db/queries/webhooks';
import { can } from '../../governance/permissions';
import { requires, type App, type AppDeps } from '../create-app';
import { ApiError, notFound } from '../errors';
import { idParam, json, jsonBody, page, PageQuery, problemResponses } from '../schemas/common';
import { auditActor } from './agents.routes';

export const CredentialSchema = z
  .object({
    id: z.string(),
    type: z.literal('credential'),
    name: z.string(),
    kind: z.string(),
    secret_version: z.number().int(),
    created_at: z.string(),
    rotated_at: z.string().nullable(),
    revoked_at: z.string().nullable(),
  })
  .openapi('Credential');

const CredentialCreate = z.object({
  name: z.string().min(1).max(256),
  kind: z.enum(['api_key']).default('api_key'),
  secret: z.string().min(1).max(16_384).openapi({ description: 'write-only: stored encrypted, never returned' }),
});

function toResponse(row: CredentialMetadata) {
  return {
    id: row.id,
    type: 'credential' as const,
    name: row.name,
    kind: row.kind,
    secret_version: row.secretVersion,
    created_at: row.createdAt.toISOString(),
    rotated_at: row.rotatedAt?.toISOString() ?? null,
    revoked_at: row.revokedAt?.toISOString() ?? null,
  };
}

export function registerCredentialRoutes(app: App, deps: AppDeps): void {
  app.openapi(
    createRoute({ middleware: requires('credentials:write'), method: 'post', path: '/v1/credentials', tags: ['credentials'], request: { body: jsonBody(CredentialCreate) }, responses: { 200: json(CredentialSchema, 'The credential, without its secret'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const body = c.req.valid('json');
      const row = await deps.db.transaction(async (tx) => {
        const created = await createCredential(tx, deps.vault, { teamId: actor.teamId, name: body.name, kind: body.kind, secret: body.secret });
        await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'credential.create', target: created.id, decision: 'ok', reason: 'credentials:write', data: { name: body.name } });
        return created;
      });
      return c.json(toResponse(row), 200);
    },
  );
  app.openapi(
    createRoute({ middleware: requires('credentials:read'), method: 'get', path: '/v1/credentials', tags: ['credentials'], request: { query: PageQuery }, responses: { 200: json(page(CredentialSchema, 'CredentialPage'), 'Credential metadata'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const rows = await listCredentials(deps.db, { teamId: actor.teamId, limit: c.req.valid('query').limit });
      return c.json({ data: rows.map(toResponse), next_page: null }, 200);
    },
  );
  app.openapi(
    createRoute({ middleware: requires('credentials:read'), method: 'get', path: '/v1/credentials/{credential_id}', tags: ['credentials'], request: { params: idParam('credential_id', 'cred') }, responses: { 200: json(CredentialSchema, 'Credential metadata'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const row = await getCredential(deps.db, { teamId: actor.teamId, credentialId: c.req.valid('param').credential_id });
      if (!row) throw notFound('credential');
      return c.json(toResponse(row), 200);
    },
  );

  const CredentialId = idParam('credential_id', 'cred');

  app.openapi(
    createRoute({
      middleware: requires('credentials:write'),
      method: 'post',
      path: '/v1/credentials/{credential_id}/rotate',
      tags: ['credentials'],
      request: { params: CredentialId, body: jsonBody(z.object({ secret: CredentialCreate.shape.secret })) },
      responses: { 200: json(CredentialSchema, 'Rotated: the next turn uses the new secret'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const credentialId = c.req.valid('param').credential_id;
      const row = await deps.db.transaction(async (tx) => {
        const rotated = await rotateCredential(tx, deps.vault, { teamId: actor.teamId, credentialId, secret: c.req.valid('json').secret });
        if (rotated) await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'credential.rotate', target: credentialId, decision: 'ok', reason: 'credentials:write', data: { secret_version: rotated.secretVersion } });
        return rotated;
      });
      if (!row) throw await missingOrRevoked(actor.teamId, credentialId);
      return c.json(toResponse(row), 200);
    },
  );

  app.openapi(
    createRoute({ middleware: requires('credentials:write'), method: 'post', path: '/v1/credentials/{credential_id}/revoke', tags: ['credentials'], request: { params: CredentialId }, responses: { 200: json(CredentialSchema, 'Revoked: sessions that need it stop at their next turn'), ...problemResponses } }),
    async (c) => {
      const actor = c.get('actor');
      const credentialId = c.req.valid('param').credential_id;
      const row = await deps.db.transaction(async (tx) => {
        const revoked = await revokeCredential(tx, { teamId: actor.teamId, credentialId });
        if (revoked) await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'credential.revoke', target: credentialId, decision: 'ok', reason: 'credentials:write' });
        return revoked;
      });
      if (!row) throw await missingOrRevoked(actor.teamId, credentialId);
      return c.json(toResponse(row), 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('keys:admin'),
      method: 'post',
      path: '/v1/credentials/rewrap',
      tags: ['credentials'],
      description:
        "Re-seals every secret the vault holds for the caller's team (credentials and webhook signing secrets) under the current master key, bound to its record. A platform_admin key re-seals every team's, after which the old master key can be dropped.",
      responses: {
        200: json(
          z.object({
            rewrapped: z.number().int(),
            master_key_id: z.string(),
            unreadable: z.array(z.string()).optional().openapi({ description: 'records whose secret opens under no configured key (altered, or sealed by a dropped key): left as they are' }),
          }),
          'How many secrets were re-sealed, and under which master key',
        ),
        ...problemResponses,
      },
    }),
    async (c) => {
      const actor = c.get('actor');
      const scope = can(actor.role, 'vault:rewrap_all') ? {} : { teamId: actor.teamId };
      const credentials = await rewrapCredentials(deps.db, deps.vault, scope);
      const webhooks = await rewrapWebhookSecrets(deps.db, deps.vault, scope);
      const rewrapped = credentials.rewrapped + webhooks.rewrapped;
      const unreadable = [...credentials.unreadable, ...webhooks.unreadable];
      await appendAudit(deps.db, {
        ...auditActor(actor, c.get('requestId')),
        action: 'vault.rewrap',
        target: deps.vault.currentKeyId,
        decision: 'ok',
        reason: scope.teamId ? 'keys:admin' : 'vault:rewrap_all',
        data: { rewrapped, unreadable, scope: scope.teamId ? 'team' : 'all teams' },
      });
      return c.json({ rewrapped, master_key_id: deps.vault.currentKeyId, ...(unreadable.length > 0 ? { unreadable } : {}) }, 200);
    },
  );

  async function missingOrRevoked(teamId: string, credentialId: string) {
    const existing = await getCredential(deps.db, { teamId, credentialId });
    return existing ? new ApiError(409, 'resource.conflict', `credential ${credentialId} is revoked`) : notFound('credential');
  }
}
