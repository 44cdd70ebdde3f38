/**
 * The notifier: sends the webhook outbox (`webhook_deliveries`) from the worker process.
 *
 * Each poll claims due deliveries (SKIP LOCKED plus a lease, so replicas never send one at the same time), POSTs
 * each payload signed with its webhook's secret, and records the outcome: 2xx is delivered; anything else, a
 * network error or a timeout is retried with exponential backoff until `maxAttempts`, then failed. Every connection
 * goes through the egress guard (runtimes/kit/egress.ts), so a receiver whose name resolves to a refused address by
 * the time of sending gets nothing. `last_error` keeps the status and a short reason, never the receiver's body.
 *
 * Signature scheme (v1), also in the README:
 *   x-agentplane-timestamp: <unix seconds when this attempt was sent>
 *   x-agentplane-signature: v1=<hex HMAC-SHA256(key = the webhook secret as UTF-8, message = `${timestamp}.${raw body}`)>
 * A receiver recomputes the HMAC over the raw body bytes it received, compares in constant time, and refuses a
 * timestamp more than 5 minutes away from its clock (`verifySignature` does all three). The delivery id
 * (`x-agentplane-delivery`) stays the same across retries: receivers dedupe on it.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { Db } from '../db/client';
import { claimDueDeliveries, markDelivered, markFailed, rescheduleDelivery, type ClaimedDelivery } from '../db/queries/webhooks';
import { sealContext, type Vault } from '../db/vault';
import { createEgressGuard, describeRequestError, describeResponse, type EgressGuard } from '../runtimes/kit/egress';

export const SIGNATURE_HEADER = 'x-agentplane-signature';
export const TIMESTAMP_HEADER = 'x-agentplane-timestamp';
export const DELIVERY_HEADER = 'x-agentplane-delivery';
export const EVENT_HEADER = 'x-agentplane-event';

/** The hex HMAC-SHA256 of `${timestamp}.${body}` keyed with the secret; the header value is `v1=<this>`. */
export function signPayload(secret: string, timestamp: number, body: string | Uint8Array): string {
  return createHmac('sha256', secret).update(`${timestamp}.`).update(body).digest('hex');
}

export type VerifyResult = { ok: true; timestamp: number } | { ok: false; reason: 'missing_header' | 'bad_timestamp' | 'timestamp_out_of_tolerance' | 'signature_mismatch' };

type HeaderBag = Headers | Record<string, string | string[] | undefined>;

/**
 * Checks a received webhook: the timestamp is within `toleranceSeconds` of `now` (either way) and one of the
 * `v1=` signatures matches the raw body. `body` must be the bytes as received, before any JSON parsing.
 */
export function verifySignature(secret: string, headers: HeaderBag, body: string | Uint8Array, toleranceSeconds = 300, now: Date = new Date()): VerifyResult {
  const timestampHeader = header(headers, TIMESTAMP_HEADER);
  const signatureHeader = header(headers, SIGNATURE_HEADER);
  if (timestampHeader === undefined || signatureHeader === undefined) return { ok: false, reason: 'missing_header' };
  if (!/^\d{1,12}$/.test(timestampHeader)) return { ok: false, reason: 'bad_timestamp' };
  const timestamp = Number(timestampHeader);
  if (Math.abs(now.getTime() / 1000 - timestamp) > toleranceSeconds) return { ok: false, reason: 'timestamp_out_of_tolerance' };
  const expected = Buffer.from(signPayload(secret, timestamp, body), 'hex');
  // several signatures may be sent (e.g. while a secret is rotated): any one that matches will do
  for (const part of signatureHeader.split(/[\s,]+/)) {
    if (!part.startsWith('v1=')) continue;
    const given = Buffer.from(part.slice(3), 'hex');
    if (given.length === expected.length && timingSafeEqual(given, expected)) return { ok: true, timestamp };
  }
  return { ok: false, reason: 'signature_mismatch' };
}

function header(headers: HeaderBag, name: string): string | undefined {
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  const key = Object.keys(headers).find((k) => k.toLowerCase() === name);
  const value = key === undefined ? undefined : headers[key];
  return Array.isArray(value) ? value.join(',') : value;
}

export interface NotifierOptions {
  db: Db;
  vault: Vault;
  /** every delivery connects through it: a receiver on a refused address gets nothing (default: all refused) */
  egress?: EgressGuard;
  /** the clock for due times, backoff and the signed timestamp */
  now?: () => Date;
  /** how long to wait between polls when there was nothing (or not a full batch) to send */
  pollMs?: number;
  /** attempts before a delivery is given up as `failed` */
  maxAttempts?: number;
  /** the first retry waits this long; each next one twice as long, up to `maxDelayMs` */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** one attempt's time limit, connection to the last byte of the answer */
  timeoutMs?: number;
  /** how many deliveries one poll claims and sends at once */
  batchSize?: number;
  log?: (entry: Record<string, unknown>) => void;
}

export interface RunSummary {
  claimed: number;
  delivered: number;
  retried: number;
  failed: number;
}

export interface Notifier {
  start(): void;
  /** stops polling and waits for the poll in flight to record its outcomes */
  stop(): Promise<void>;
  /** one poll: claim what is due, send it, record the outcomes */
  runOnce(): Promise<RunSummary>;
}

export function createNotifier(opts: NotifierOptions): Notifier {
  const { db, vault } = opts;
  const send = (opts.egress ?? createEgressGuard({ allowPrivate: [] })).fetch;
  const now = opts.now ?? (() => new Date());
  const pollMs = opts.pollMs ?? 1000;
  const maxAttempts = opts.maxAttempts ?? 8;
  const baseDelayMs = opts.baseDelayMs ?? 10_000;
  const maxDelayMs = opts.maxDelayMs ?? 10 * 60_000;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const batchSize = opts.batchSize ?? 20;
  // the lease outlives a send and its write; after a crash the delivery is retried when it runs out
  const leaseMs = timeoutMs + 50_000;
  const log = opts.log ?? (() => undefined);

  async function attempt(delivery: ClaimedDelivery): Promise<{ ok: true } | { ok: false; error: string }> {
    let secret: string;
    try {
      secret = vault.open(delivery.sealedSecret, sealContext.webhook(delivery.teamId, delivery.webhookId));
    } catch (err) {
      return { ok: false, error: `cannot open the signing secret: ${(err as Error).message}` };
    }
    const body = JSON.stringify(delivery.payload);
    const timestamp = Math.floor(now().getTime() / 1000);
    try {
      const res = await send(delivery.url, {
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          'user-agent': 'agentplane-webhooks/1',
          [EVENT_HEADER]: delivery.eventType,
          [DELIVERY_HEADER]: delivery.id,
          [TIMESTAMP_HEADER]: String(timestamp),
          [SIGNATURE_HEADER]: `v1=${signPayload(secret, timestamp, body)}`,
        },
        body,
        // a redirect is an answer, not a new destination: the receiver's URL is what the admin registered
        redirect: 'manual',
        signal: AbortSignal.timeout(timeoutMs),
      });
      if (res.status >= 200 && res.status < 300) {
        await res.body?.cancel().catch(() => undefined);
        return { ok: true };
      }
      // the receiver's words are not recorded: its status and at most its JSON error's type (see describeResponse)
      return { ok: false, error: `HTTP ${await describeResponse(res)}` };
    } catch (err) {
      const described = describeRequestError(err);
      return { ok: false, error: described === 'timeout' ? `no answer within ${timeoutMs / 1000} s` : `request failed: ${described}` };
    }
  }

  async function deliver(delivery: ClaimedDelivery): Promise<'delivered' | 'retried' | 'failed'> {
    if (delivery.webhookDisabled) {
      await markFailed(db, { id: delivery.id, claimedAttempts: delivery.attempts, error: 'the webhook was deleted', countAttempt: false });
      return 'failed';
    }
    const outcome = await attempt(delivery);
    const attempts = delivery.attempts + 1;
    const fields = { deliveryId: delivery.id, webhookId: delivery.webhookId, teamId: delivery.teamId, event: delivery.eventType, attempts };
    if (outcome.ok) {
      await markDelivered(db, { id: delivery.id, claimedAttempts: delivery.attempts, now: now() });
      log({ level: 'INFO', msg: 'webhook delivered', ...fields });
      return 'delivered';
    }
    if (attempts >= maxAttempts) {
      await markFailed(db, { id: delivery.id, claimedAttempts: delivery.attempts, error: outcome.error });
      log({ level: 'WARN', msg: 'webhook delivery failed for good', ...fields, error: outcome.error });
      return 'failed';
    }
    const delayMs = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempts - 1));
    await rescheduleDelivery(db, { id: delivery.id, claimedAttempts: delivery.attempts, nextAttemptAt: new Date(now().getTime() + delayMs), error: outcome.error });
    log({ level: 'INFO', msg: 'webhook delivery will be retried', ...fields, error: outcome.error, delayMs });
    return 'retried';
  }

  async function runOnce(): Promise<RunSummary> {
    const claimed = await claimDueDeliveries(db, { limit: batchSize, now: now(), leaseMs });
    const summary: RunSummary = { claimed: claimed.length, delivered: 0, retried: 0, failed: 0 };
    for (const result of await Promise.allSettled(claimed.map(deliver))) {
      if (result.status === 'fulfilled') summary[result.value] += 1;
      // recording the outcome failed (database gone): the lease runs out and the delivery is tried again
      else log({ level: 'ERROR', msg: 'webhook outcome not recorded', error: String(result.reason) });
    }
    return summary;
  }

  let stopped = true;
  let timer: NodeJS.Timeout | undefined;
  let inFlight: Promise<void> | undefined;

  function schedule(ms: number) {
    timer = setTimeout(() => {
      inFlight = (async () => {
        let full = false;
        try {
          full = (await runOnce()).claimed === batchSize;
        } catch (err) {
          log({ level: 'ERROR', msg: 'webhook poll failed', error: String(err) });
        }
        if (!stopped) schedule(full ? 0 : pollMs);
      })();
    }, ms);
  }

  return {
    runOnce,
    start() {
      if (!stopped) return;
      stopped = false;
      schedule(0);
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await inFlight;
    },
  };
}
