/**
 * Webhooks: where a team's notifications (approval requests, budget thresholds) are POSTed, signed. The signing
 * secret is shown once, in the answer to the create call, and is sealed in the database like a credential; no
 * other answer, row or audit entry carries it. Response schemas are written by hand so it cannot ride along.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { appendAudit } from '../../db/queries/audit';
import { createWebhook, deleteWebhook, generateWebhookSecret, getWebhook, listDeliveries, listWebhooks, type DeliveryRow, type WebhookMetadata } from '../../db/queries/webhooks';
import { NOTIFICATION_TYPES } from '../../governance/notifications';
import { requires, type App, type AppDeps } from '../create-app';
import { notFound } from '../errors';
import { idParam, json, jsonBody, page, PageQuery, problemResponses } from '../schemas/common';
import { auditActor } from './agents.routes';

const tags = ['webhooks'];
const WebhookId = idParam('webhook_id', 'whk');

export const WebhookSchema = z
  .object({
    id: z.string(),
    type: z.literal('webhook'),
    url: z.string(),
    events: z.array(z.enum(NOTIFICATION_TYPES)).openapi({ description: 'event types delivered; empty = all' }),
    created_at: z.string(),
    disabled_at: z.string().nullable(),
  })
  .openapi('Webhook');

const WebhookCreated = WebhookSchema.extend({
  secret: z.string().openapi({ description: 'the signing secret: shown here once, never again' }),
}).openapi('WebhookCreated');

const WebhookCreate = z.object({
  url: z
    .string()
    .max(2048)
    .refine((value) => URL.canParse(value) && ['http:', 'https:'].includes(new URL(value).protocol), 'must be an http or https URL'),
  events: z.array(z.enum(NOTIFICATION_TYPES)).max(NOTIFICATION_TYPES.length * 4).default([]).openapi({ description: 'event types to deliver; empty or absent = all' }),
  secret: z
    .string()
    .min(16)
    .max(256)
    .optional()
    .openapi({ description: 'the HMAC-SHA256 signing secret; a `whsec_…` one is generated when absent. Write-only.' }),
});

const DeliverySchema = z
  .object({
    id: z.string(),
    type: z.literal('webhook_delivery'),
    webhook_id: z.string(),
    event_type: z.string(),
    status: z.enum(['pending', 'delivered', 'failed']),
    attempts: z.number().int(),
    next_attempt_at: z.string().nullable(),
    last_error: z.string().nullable(),
    created_at: z.string(),
    delivered_at: z.string().nullable(),
    payload: z.unknown().openapi({ description: 'the JSON body sent' }),
  })
  .openapi('WebhookDelivery');

function toResponse(row: WebhookMetadata) {
  return {
    id: row.id,
    type: 'webhook' as const,
    url: row.url,
    events: row.events,
    created_at: row.createdAt.toISOString(),
    disabled_at: row.disabledAt?.toISOString() ?? null,
  };
}

function toDelivery(row: DeliveryRow) {
  return {
    id: row.id,
    type: 'webhook_delivery' as const,
    webhook_id: row.webhookId,
    event_type: row.eventType,
    status: row.status as 'pending' | 'delivered' | 'failed',
    attempts: row.attempts,
    next_attempt_at: row.status === 'pending' ? row.nextAttemptAt.toISOString() : null,
    last_error: row.lastError,
    created_at: row.createdAt.toISOString(),
    delivered_at: row.deliveredAt?.toISOString() ?? null,
    payload: row.payload,
  };
}

/** A receiver's URL may carry a token in its path or query (chat incoming-webhook URLs do): the audit log keeps the origin only. */
function auditedUrl(url: string): string {
  return new URL(url).origin;
}

export function registerWebhookRoutes(app: App, deps: AppDeps): void {
  const { db } = deps;

  app.openapi(
    createRoute({
      middleware: requires('webhooks:admin'),
      method: 'post',
      path: '/v1/webhooks',
      tags,
      request: { body: jsonBody(WebhookCreate) },
      responses: { 200: json(WebhookCreated, 'The webhook, with its signing secret (shown this once)'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const body = c.req.valid('json');
      await deps.egress.checkUrl(body.url, 'body.url');
      const secret = body.secret ?? generateWebhookSecret();
      const created = await db.transaction(async (tx) => {
        const row = await createWebhook(tx, deps.vault, { teamId: actor.teamId, url: body.url, events: body.events, secret });
        await appendAudit(tx, {
          ...auditActor(actor, c.get('requestId')),
          action: 'webhook.create',
          target: row.id,
          decision: 'ok',
          reason: 'webhooks:admin',
          data: { origin: auditedUrl(row.url), events: row.events, secret_generated: body.secret === undefined },
        });
        return row;
      });
      return c.json({ ...toResponse(created), secret }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('webhooks:admin'),
      method: 'get',
      path: '/v1/webhooks',
      tags,
      request: { query: PageQuery.pick({ limit: true }) },
      responses: { 200: json(page(WebhookSchema, 'WebhookPage'), 'Active webhooks, newest first, without their secrets'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const rows = await listWebhooks(db, { teamId: actor.teamId, limit: c.req.valid('query').limit });
      return c.json({ data: rows.map(toResponse), next_page: null }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('webhooks:admin'),
      method: 'delete',
      path: '/v1/webhooks/{webhook_id}',
      tags,
      request: { params: WebhookId },
      responses: { 200: json(WebhookSchema, 'The deleted webhook; what it still had to send is failed'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const webhookId = c.req.valid('param').webhook_id;
      const deleted = await db.transaction(async (tx) => {
        const row = await deleteWebhook(tx, { teamId: actor.teamId, webhookId });
        if (row) await appendAudit(tx, { ...auditActor(actor, c.get('requestId')), action: 'webhook.delete', target: webhookId, decision: 'ok', reason: 'webhooks:admin' });
        return row;
      });
      if (!deleted) throw notFound('webhook');
      return c.json(toResponse(deleted), 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('webhooks:admin'),
      method: 'get',
      path: '/v1/webhooks/{webhook_id}/deliveries',
      tags,
      request: { params: WebhookId, query: PageQuery },
      responses: { 200: json(page(DeliverySchema, 'WebhookDeliveryPage'), 'Deliveries, newest first'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const webhookId = c.req.valid('param').webhook_id;
      const q = c.req.valid('query');
      if (!(await getWebhook(db, { teamId: actor.teamId, webhookId }))) throw notFound('webhook');
      const rows = await listDeliveries(db, { teamId: actor.teamId, webhookId, limit: q.limit, before: q.page });
      return c.json({ data: rows.map(toDelivery), next_page: rows.length === q.limit ? (rows.at(-1)?.id ?? null) : null }, 200);
    },
  );
}
