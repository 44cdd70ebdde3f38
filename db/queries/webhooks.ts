/**
 * Webhooks and their delivery outbox.
 *
 * A notification is written as `webhook_deliveries` rows by `enqueueNotification`, inside the transaction that
 * records its cause: a notification exists if and only if its cause committed. The worker's notifier then claims
 * due rows and sends them. What must stay true:
 * - the signing secret is sealed by the vault like a credential; reads for the API select metadata columns by
 *   name, never `*`, and only the notifier (through `claimDueDeliveries`) sees the sealed value;
 * - a claim takes rows with `FOR UPDATE SKIP LOCKED` and leases them (pushes `next_attempt_at` past the send's
 *   timeout), so replicas never send one delivery at the same time, and a replica that dies mid-send only delays
 *   it until the lease runs out (at-least-once: receivers dedupe on the delivery id);
 * - an attempt's outcome is recorded only by the claim that made it (`attempts` must still be what it claimed).
 */
import { randomBytes } from 'node:crypto';
import { and, desc, eq, isNull, ne, notLike, or, sql } from 'drizzle-orm';
import type { NotificationType } from '../../governance/notifications';
import { rowsOf, type Db } from '../client';
import { newId, stableId } from '../ids';
import { webhookDeliveries, webhooks } from '../schema/index';
import { sealContext, VaultError, type SealedSecret, type Vault } from '../vault';
import type { RewrapResult } from './credentials';

const metadataColumns = {
  id: webhooks.id,
  teamId: webhooks.teamId,
  url: webhooks.url,
  events: webhooks.events,
  createdAt: webhooks.createdAt,
  disabledAt: webhooks.disabledAt,
};

export interface WebhookMetadata {
  id: string;
  teamId: string;
  url: string;
  events: NotificationType[];
  createdAt: Date;
  disabledAt: Date | null;
}

const deliveryColumns = {
  id: webhookDeliveries.id,
  webhookId: webhookDeliveries.webhookId,
  teamId: webhookDeliveries.teamId,
  eventType: webhookDeliveries.eventType,
  payload: webhookDeliveries.payload,
  status: webhookDeliveries.status,
  attempts: webhookDeliveries.attempts,
  nextAttemptAt: webhookDeliveries.nextAttemptAt,
  lastError: webhookDeliveries.lastError,
  createdAt: webhookDeliveries.createdAt,
  deliveredAt: webhookDeliveries.deliveredAt,
};

export type DeliveryStatus = 'pending' | 'delivered' | 'failed';

export interface DeliveryRow {
  id: string;
  webhookId: string;
  teamId: string;
  eventType: string;
  payload: unknown;
  status: string;
  attempts: number;
  nextAttemptAt: Date;
  lastError: string | null;
  createdAt: Date;
  deliveredAt: Date | null;
}

/** A signing secret for a webhook that was created without one. */
export function generateWebhookSecret(): string {
  return `whsec_${randomBytes(32).toString('base64url')}`;
}

export async function createWebhook(db: Db, vault: Vault, params: { teamId: string; url: string; events: NotificationType[]; secret: string }): Promise<WebhookMetadata> {
  const id = newId('whk');
  const sealed = vault.seal(params.secret, sealContext.webhook(params.teamId, id));
  const [row] = await db
    .insert(webhooks)
    .values({ id, teamId: params.teamId, url: params.url, events: [...new Set(params.events)], ...sealed })
    .returning(metadataColumns);
  return row as WebhookMetadata;
}

/**
 * Master-key rotation for signing secrets, as `rewrapCredentials` does it for credentials: every secret sealed by an
 * older master key, or before it was bound to its webhook, re-sealed under the current one (deleted webhooks too:
 * nothing may be left that only the old key opens). Without `teamId`, every team's.
 */
export async function rewrapWebhookSecrets(db: Db, vault: Vault, params: { teamId?: string } = {}): Promise<RewrapResult> {
  const where = [or(ne(webhooks.masterKeyId, vault.currentKeyId), notLike(webhooks.wrappedKey, 'v2.%'), notLike(webhooks.ciphertext, 'v2.%'))];
  if (params.teamId) where.push(eq(webhooks.teamId, params.teamId));
  const stale = await db.select().from(webhooks).where(and(...where));
  const result: RewrapResult = { rewrapped: 0, unreadable: [] };
  for (const row of stale) {
    let resealed: SealedSecret;
    try {
      resealed = vault.reseal(row, sealContext.webhook(row.teamId, row.id));
    } catch (err) {
      if (!(err instanceof VaultError)) throw err;
      // already unreadable (altered, or sealed by a key no longer configured): named, so an operator can act on it
      result.unreadable.push(row.id);
      continue;
    }
    await db
      .update(webhooks)
      .set(resealed)
      .where(and(eq(webhooks.id, row.id), eq(webhooks.ciphertext, row.ciphertext)));
    result.rewrapped += 1;
  }
  return result;
}

/** The team's active webhooks, newest first. */
export async function listWebhooks(db: Db, params: { teamId: string; limit: number }): Promise<WebhookMetadata[]> {
  const rows = await db
    .select(metadataColumns)
    .from(webhooks)
    .where(and(eq(webhooks.teamId, params.teamId), isNull(webhooks.disabledAt)))
    .orderBy(desc(webhooks.id))
    .limit(params.limit);
  return rows as WebhookMetadata[];
}

/** One webhook of the team, deleted or not (its delivery history stays readable). */
export async function getWebhook(db: Db, params: { teamId: string; webhookId: string }): Promise<WebhookMetadata | null> {
  const [row] = await db
    .select(metadataColumns)
    .from(webhooks)
    .where(and(eq(webhooks.id, params.webhookId), eq(webhooks.teamId, params.teamId)));
  return (row as WebhookMetadata | undefined) ?? null;
}

/**
 * Disables the webhook (the row stays for its delivery history) and fails what it still had to send. Null when
 * the team has no such active webhook.
 */
export async function deleteWebhook(db: Db, params: { teamId: string; webhookId: string }): Promise<WebhookMetadata | null> {
  const [row] = await db
    .update(webhooks)
    .set({ disabledAt: sql`now()` })
    .where(and(eq(webhooks.id, params.webhookId), eq(webhooks.teamId, params.teamId), isNull(webhooks.disabledAt)))
    .returning(metadataColumns);
  if (!row) return null;
  await db
    .update(webhookDeliveries)
    .set({ status: 'failed', lastError: 'the webhook was deleted' })
    .where(and(eq(webhookDeliveries.webhookId, params.webhookId), eq(webhookDeliveries.status, 'pending')));
  return row as WebhookMetadata;
}

/**
 * Writes one pending delivery per active webhook of the team that takes `type` (its `events` is empty or names
 * it). Call it inside the transaction that records the cause. Idempotent: a delivery's id is derived from the
 * webhook and the payload's `id`, so running it again for the same notification adds nothing. The webhooks are
 * read FOR SHARE: a concurrent delete waits for this transaction, then fails what it wrote. Returns the ids of
 * the deliveries written now.
 */
export async function enqueueNotification(db: Db, params: { teamId: string; type: NotificationType; payload: { id: string; type: string } }): Promise<string[]> {
  if (params.payload.type !== params.type) throw new Error(`payload of type ${params.payload.type} enqueued as ${params.type}`);
  const targets = await db
    .select({ id: webhooks.id })
    .from(webhooks)
    .where(
      and(
        eq(webhooks.teamId, params.teamId),
        isNull(webhooks.disabledAt),
        sql`(${webhooks.events} = '[]'::jsonb or ${webhooks.events} @> jsonb_build_array(${params.type}::text))`,
      ),
    )
    .for('share');
  if (targets.length === 0) return [];
  const written = await db
    .insert(webhookDeliveries)
    .values(
      targets.map((webhook) => ({
        id: deliveryIdOf(webhook.id, params.payload.id),
        webhookId: webhook.id,
        teamId: params.teamId,
        eventType: params.type,
        payload: params.payload,
        status: 'pending',
      })),
    )
    .onConflictDoNothing({ target: webhookDeliveries.id })
    .returning({ id: webhookDeliveries.id });
  return written.map((row) => row.id);
}

/** The id of a notification's delivery to one webhook: the same on every retry of the enqueueing transaction. */
export function deliveryIdOf(webhookId: string, notificationId: string): string {
  return stableId('dlv', webhookId, notificationId);
}

export interface ClaimedDelivery {
  id: string;
  webhookId: string;
  teamId: string;
  eventType: string;
  payload: unknown;
  /** attempts made before this one; the outcome is recorded against it */
  attempts: number;
  url: string;
  /** the webhook was deleted after the delivery was written: it must not be sent */
  webhookDisabled: boolean;
  /** the signing secret, still sealed: only the notifier opens it */
  sealedSecret: SealedSecret;
}

/**
 * Claims up to `limit` pending deliveries due at `now`, oldest first, and leases them until `now + leaseMs`.
 * Rows another transaction holds are skipped, not waited for, so concurrent claims get disjoint sets.
 */
export async function claimDueDeliveries(db: Db, params: { limit: number; now: Date; leaseMs?: number }): Promise<ClaimedDelivery[]> {
  const now = params.now.toISOString();
  const leaseUntil = new Date(params.now.getTime() + (params.leaseMs ?? 60_000)).toISOString();
  const result = await db.execute(sql`
    with due as (
      select id from webhook_deliveries
      where status = 'pending' and next_attempt_at <= ${now}::timestamptz
      order by next_attempt_at, id
      limit ${params.limit}
      for update skip locked
    )
    update webhook_deliveries d
    set next_attempt_at = ${leaseUntil}::timestamptz
    from due, webhooks w
    where d.id = due.id and w.id = d.webhook_id
    returning d.id, d.webhook_id, d.team_id, d.event_type, d.payload, d.attempts, w.url,
              w.disabled_at is not null as webhook_disabled, w.master_key_id, w.wrapped_key, w.ciphertext
  `);
  type Row = {
    id: string;
    webhook_id: string;
    team_id: string;
    event_type: string;
    payload: unknown;
    attempts: number;
    url: string;
    webhook_disabled: boolean;
    master_key_id: string;
    wrapped_key: string;
    ciphertext: string;
  };
  return rowsOf<Row>(result).map((r) => ({
    id: r.id,
    webhookId: r.webhook_id,
    teamId: r.team_id,
    eventType: r.event_type,
    payload: typeof r.payload === 'string' ? JSON.parse(r.payload) : r.payload,
    attempts: Number(r.attempts),
    url: r.url,
    webhookDisabled: r.webhook_disabled,
    sealedSecret: { masterKeyId: r.master_key_id, wrappedKey: r.wrapped_key, ciphertext: r.ciphertext },
  }));
}

/** Each returns false when the claim is stale (another claim recorded an attempt since): nothing is changed. */
export async function markDelivered(db: Db, params: { id: string; claimedAttempts: number; now: Date }): Promise<boolean> {
  const rows = await db
    .update(webhookDeliveries)
    .set({ status: 'delivered', attempts: params.claimedAttempts + 1, deliveredAt: params.now, lastError: null })
    .where(claimed(params))
    .returning({ id: webhookDeliveries.id });
  return rows.length === 1;
}

export async function rescheduleDelivery(db: Db, params: { id: string; claimedAttempts: number; nextAttemptAt: Date; error: string }): Promise<boolean> {
  const rows = await db
    .update(webhookDeliveries)
    .set({ attempts: params.claimedAttempts + 1, nextAttemptAt: params.nextAttemptAt, lastError: params.error })
    .where(claimed(params))
    .returning({ id: webhookDeliveries.id });
  return rows.length === 1;
}

export async function markFailed(db: Db, params: { id: string; claimedAttempts: number; error: string; countAttempt?: boolean }): Promise<boolean> {
  const rows = await db
    .update(webhookDeliveries)
    .set({ status: 'failed', attempts: params.claimedAttempts + (params.countAttempt === false ? 0 : 1), lastError: params.error })
    .where(claimed(params))
    .returning({ id: webhookDeliveries.id });
  return rows.length === 1;
}

function claimed(params: { id: string; claimedAttempts: number }) {
  return and(eq(webhookDeliveries.id, params.id), eq(webhookDeliveries.status, 'pending'), eq(webhookDeliveries.attempts, params.claimedAttempts));
}

/** A webhook's deliveries, newest first. Scoped by team like every read. */
export async function listDeliveries(db: Db, params: { teamId: string; webhookId: string; limit: number; before?: string }): Promise<DeliveryRow[]> {
  const rows = await db
    .select(deliveryColumns)
    .from(webhookDeliveries)
    .where(
      and(
        eq(webhookDeliveries.teamId, params.teamId),
        eq(webhookDeliveries.webhookId, params.webhookId),
        params.before === undefined ? undefined : sql`(${webhookDeliveries.createdAt}, ${webhookDeliveries.id}) < (select created_at, id from webhook_deliveries where id = ${params.before})`,
      ),
    )
    .orderBy(desc(webhookDeliveries.createdAt), desc(webhookDeliveries.id))
    .limit(params.limit);
  return rows as DeliveryRow[];
}
