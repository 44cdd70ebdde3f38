/**
 * Signed webhook notifications, on the real stack (Postgres, the shared Temporal dev server, a worker with the
 * scripted runtime) and a real HTTP receiver on 127.0.0.1: the outbox (a notification exists iff its cause
 * committed), the signature scheme as the README documents it, retries with growing delays, SKIP LOCKED claims
 * across notifiers, the events filter, the secret shown once and nowhere else, and approve/deny actions that
 * decide a real pending tool call through the API with the approver's own key.
 */
import { createHmac } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sql } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase, rowsOf } from '../db/client';
import { createApiKey, createTeam } from '../db/queries/teams';
import { claimDueDeliveries, deliveryIdOf, enqueueNotification } from '../db/queries/webhooks';
import { approvalRequested, budgetThreshold } from '../governance/notifications';
import { createScriptedAdapter } from '../runtimes/scripted/scripted.adapter';
import { createNotifier, signPayload, verifySignature, type NotifierOptions } from '../worker/notifier';
import { eventsOf, LOCAL_RECEIVERS, startStack, waitForStatus, type Stack } from './support/stack';

let stack: Stack;

// ---- the receiver -------------------------------------------------------------------------------------------

interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  /** the raw body, exactly as it arrived */
  body: string;
}

let receiver: Server;
let receiverUrl = '';
const received: Received[] = [];
/** per path: the statuses to answer with, in order (the last one repeats); 200 when absent */
const answers = new Map<string, number[]>();
/** per path: how long to wait before answering; `Infinity` never answers */
const delays = new Map<string, number>();
/** per path: the body to answer with (default: a short text naming the status) */
const bodies = new Map<string, { type: string; text: string }>();

function receivedAt(path: string): Received[] {
  return received.filter((r) => r.path === path);
}

/** The README's scheme, written out here rather than imported, so the test checks the documentation too. */
function verifiesByTheReadme(secret: string, r: Received): boolean {
  const timestamp = r.headers['x-agentplane-timestamp'];
  const expected = `v1=${createHmac('sha256', secret).update(`${timestamp}.${r.body}`).digest('hex')}`;
  return r.headers['x-agentplane-signature'] === expected;
}

// ---- helpers --------------------------------------------------------------------------------------------------

/** A team of its own per test, so one test's webhooks never receive another's notifications. */
async function freshTeam(): Promise<{ teamId: string; adminKey: string }> {
  const team = await createTeam(stack.db.db, { name: `webhooks-${Math.random().toString(36).slice(2)}` });
  const admin = await createApiKey(stack.db.db, { teamId: team.id, name: 'admin', role: 'admin' });
  return { teamId: team.id, adminKey: admin.plain };
}

async function register(adminKey: string, path: string, extra: Record<string, unknown> = {}): Promise<{ id: string; secret: string }> {
  const res = await stack.call('POST', '/v1/webhooks', { url: `${receiverUrl}${path}`, ...extra }, adminKey);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return { id: res.body.id, secret: res.body.secret };
}

function approvalPayload(teamId: string, n: number | string = 1) {
  return approvalRequested({
    publicUrl: stack.url,
    teamId,
    sessionId: `sesn_test${n}`,
    toolUseId: `toolu_${n}`,
    tool: 'bash',
    input: { command: `echo ${n}` },
    agent: { id: 'agent_test', name: 'test agent' },
    expiresAt: new Date(Date.now() + 3_600_000),
  });
}

function budgetPayload(teamId: string) {
  return budgetThreshold({ teamId, budgetId: 'bud_test', scope: 'team', agentId: null, percent: 80, spentUsd: 8, limitUsd: 10, periodStart: new Date('2026-01-01T00:00:00Z') });
}

/** Runs the cause's transaction: the notification is written with it, or not at all. */
async function enqueue(teamId: string, payload: ReturnType<typeof approvalPayload> | ReturnType<typeof budgetPayload>): Promise<string[]> {
  return stack.db.db.transaction((tx) => enqueueNotification(tx, { teamId, type: payload.type, payload }));
}

/** A port nobody listens on (port 1 and friends are refused by fetch itself). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

function notifier(opts: Partial<NotifierOptions> = {}) {
  return createNotifier({ db: stack.db.db, vault: stack.vault, egress: stack.egress, ...opts });
}

async function deliveryRows(webhookId: string): Promise<Array<Record<string, any>>> {
  return rowsOf(await stack.db.db.execute(sql`select * from webhook_deliveries where webhook_id = ${webhookId} order by created_at, id`));
}

// ---- setup ----------------------------------------------------------------------------------------------------

beforeAll(async () => {
  // the receiver listens on 127.0.0.1: the only address this file's API and notifiers may reach
  stack = await startStack({ runtimes: { scripted: createScriptedAdapter() }, allowPrivateEgress: LOCAL_RECEIVERS });
  receiver = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const path = req.url ?? '/';
      received.push({ path, headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
      const queue = answers.get(path) ?? [];
      const status = (queue.length > 1 ? queue.shift() : queue[0]) ?? 200;
      const delay = delays.get(path) ?? 0;
      if (delay === Infinity) return;
      const body = bodies.get(path) ?? { type: 'text/plain', text: status < 300 ? 'ok' : `receiver answered ${status}` };
      setTimeout(() => res.writeHead(status, { 'content-type': body.type }).end(body.text), delay);
    });
  });
  await new Promise<void>((resolve) => receiver.listen(0, '127.0.0.1', resolve));
  receiverUrl = `http://127.0.0.1:${(receiver.address() as AddressInfo).port}`;
});

afterEach(async () => {
  // what a test left pending must not be claimed by the next one's notifier
  await stack.db.db.execute(sql`update webhook_deliveries set status = 'failed', last_error = 'test cleanup' where status = 'pending'`);
});

afterAll(async () => {
  receiver?.closeAllConnections();
  await new Promise((resolve) => receiver?.close(resolve));
  await stack?.stop();
});

// ---- delivery and signatures ----------------------------------------------------------------------------------

describe('delivery', () => {
  it('signs every attempt, and retries a failing receiver with growing delays until it answers 2xx, with the same delivery id and body', async () => {
    const { teamId, adminKey } = await freshTeam();
    const hook = await register(adminKey, '/retry', { events: ['approval.requested'] });
    answers.set('/retry', [500, 500, 200]);
    const payload = approvalPayload(teamId);
    const [deliveryId] = await enqueue(teamId, payload);
    expect(deliveryId).toBe(deliveryIdOf(hook.id, payload.id));

    const t0 = Date.now();
    let clock = t0;
    const sender = notifier({ now: () => new Date(clock), baseDelayMs: 1000 });
    const nextAttemptAt = async () => new Date((await deliveryRows(hook.id))[0]!.next_attempt_at).getTime();

    expect(await sender.runOnce()).toEqual({ claimed: 1, delivered: 0, retried: 1, failed: 0 });
    expect(await nextAttemptAt()).toBe(t0 + 1000);
    expect((await deliveryRows(hook.id))[0]).toMatchObject({ status: 'pending', attempts: 1, last_error: 'HTTP 500 Internal Server Error' });

    clock = t0 + 999;
    expect((await sender.runOnce()).claimed).toBe(0);
    clock = t0 + 1000;
    expect(await sender.runOnce()).toMatchObject({ claimed: 1, retried: 1 });
    expect(await nextAttemptAt()).toBe(t0 + 1000 + 2000);

    clock = t0 + 2999;
    expect((await sender.runOnce()).claimed).toBe(0);
    clock = t0 + 3000;
    expect(await sender.runOnce()).toMatchObject({ claimed: 1, delivered: 1 });
    clock = t0 + 3_600_000;
    expect((await sender.runOnce()).claimed).toBe(0);

    const attempts = receivedAt('/retry');
    expect(attempts).toHaveLength(3);
    expect(attempts.map((r) => r.headers['x-agentplane-delivery'])).toEqual([deliveryId, deliveryId, deliveryId]);
    expect(new Set(attempts.map((r) => r.body)).size).toBe(1);
    expect(JSON.parse(attempts[0]!.body)).toEqual(payload);
    expect(attempts.map((r) => Number(r.headers['x-agentplane-timestamp']))).toEqual([t0, t0 + 1000, t0 + 3000].map((t) => Math.floor(t / 1000)));
    for (const r of attempts) {
      expect(r.headers['content-type']).toBe('application/json');
      expect(r.headers['x-agentplane-event']).toBe('approval.requested');
      expect(r.headers['x-agentplane-signature']).toMatch(/^v1=[0-9a-f]{64}$/);
      expect(verifiesByTheReadme(hook.secret, r)).toBe(true);
      expect(verifySignature(hook.secret, r.headers, r.body, 300, new Date(Number(r.headers['x-agentplane-timestamp']) * 1000))).toMatchObject({ ok: true });
    }

    const listed = await stack.call('GET', `/v1/webhooks/${hook.id}/deliveries`, undefined, adminKey);
    expect(listed.status).toBe(200);
    expect(listed.body.data).toEqual([
      expect.objectContaining({ id: deliveryId, webhook_id: hook.id, event_type: 'approval.requested', status: 'delivered', attempts: 3, last_error: null, next_attempt_at: null }),
    ]);
    expect(listed.body.data[0].delivered_at).toBe(new Date(t0 + 3000).toISOString());
  });

  it('fails a delivery after maxAttempts, keeping the last error, and counts refused connections and timeouts as failures', async () => {
    const { teamId, adminKey } = await freshTeam();
    const failing = await register(adminKey, '/always-500');
    answers.set('/always-500', [503]);
    const silent = await register(adminKey, '/silent');
    delays.set('/silent', Infinity);
    const closed = await stack.call('POST', '/v1/webhooks', { url: `http://127.0.0.1:${await closedPort()}/nobody-listens` }, adminKey);
    expect(closed.status).toBe(200);
    await enqueue(teamId, approvalPayload(teamId));

    let clock = Date.now();
    const sender = notifier({ now: () => new Date(clock), baseDelayMs: 10, maxAttempts: 3, timeoutMs: 300 });
    for (let i = 0; i < 3; i += 1) {
      expect((await sender.runOnce()).claimed).toBe(3);
      clock += 1000;
    }
    expect(await sender.runOnce()).toEqual({ claimed: 0, delivered: 0, retried: 0, failed: 0 });

    expect((await deliveryRows(failing.id))[0]).toMatchObject({ status: 'failed', attempts: 3, last_error: 'HTTP 503 Service Unavailable' });
    expect((await deliveryRows(silent.id))[0]).toMatchObject({ status: 'failed', attempts: 3, last_error: 'no answer within 0.3 s' });
    expect((await deliveryRows(closed.body.id))[0]).toMatchObject({ status: 'failed', attempts: 3, last_error: 'request failed: ECONNREFUSED' });
    expect(receivedAt('/always-500')).toHaveLength(3);
  });

  it("keeps a receiver's answer out of the delivery row and the deliveries API: a status and a short token, never its body", async () => {
    const { teamId, adminKey } = await freshTeam();
    const leak = `sk-live-${Math.random().toString(36).slice(2)}-DO-NOT-ECHO`;
    const html = await register(adminKey, '/leaky-html');
    answers.set('/leaky-html', [500]);
    bodies.set('/leaky-html', { type: 'text/html', text: `<html><body>Internal admin. Token: ${leak}</body></html>` });
    const json = await register(adminKey, '/leaky-json');
    answers.set('/leaky-json', [401]);
    bodies.set('/leaky-json', { type: 'application/json', text: JSON.stringify({ error: { type: 'invalid_token', message: `the token ${leak} is wrong` } }) });
    await enqueue(teamId, approvalPayload(teamId));
    expect(await notifier({ maxAttempts: 1 }).runOnce()).toMatchObject({ claimed: 2, failed: 2 });
    expect(receivedAt('/leaky-html')).toHaveLength(1);
    expect((await deliveryRows(html.id))[0]).toMatchObject({ status: 'failed', last_error: 'HTTP 500 Internal Server Error' });
    expect((await deliveryRows(json.id))[0]).toMatchObject({ status: 'failed', last_error: 'HTTP 401 invalid_token' });
    const listed = [await stack.call('GET', `/v1/webhooks/${html.id}/deliveries`, undefined, adminKey), await stack.call('GET', `/v1/webhooks/${json.id}/deliveries`, undefined, adminKey)];
    expect(listed.map((r) => r.body.data[0].last_error)).toEqual(['HTTP 500 Internal Server Error', 'HTTP 401 invalid_token']);
    expect(JSON.stringify([listed.map((r) => r.body), await deliveryRows(html.id), await deliveryRows(json.id)])).not.toContain(leak);
  });

  it('does not send what a deleted webhook still had pending', async () => {
    const { teamId, adminKey } = await freshTeam();
    const hook = await register(adminKey, '/deleted');
    await enqueue(teamId, approvalPayload(teamId));
    const deleted = await stack.call('DELETE', `/v1/webhooks/${hook.id}`, undefined, adminKey);
    expect(deleted.status).toBe(200);
    expect(deleted.body.disabled_at).toEqual(expect.any(String));
    expect((await stack.call('DELETE', `/v1/webhooks/${hook.id}`, undefined, adminKey)).status).toBe(404);
    expect((await notifier().runOnce()).claimed).toBe(0);
    expect(receivedAt('/deleted')).toEqual([]);
    expect((await deliveryRows(hook.id))[0]).toMatchObject({ status: 'failed', attempts: 0, last_error: 'the webhook was deleted' });
    // a deleted webhook is no longer listed and takes no new notifications; its history stays readable
    expect((await stack.call('GET', '/v1/webhooks', undefined, adminKey)).body.data).toEqual([]);
    expect(await enqueue(teamId, approvalPayload(teamId, 2))).toEqual([]);
    expect((await stack.call('GET', `/v1/webhooks/${hook.id}/deliveries`, undefined, adminKey)).body.data).toHaveLength(1);
  });
});

describe('signatures', () => {
  it('do not verify with a wrong secret, or over a body that was changed', async () => {
    const { teamId, adminKey } = await freshTeam();
    const hook = await register(adminKey, '/verify');
    await enqueue(teamId, approvalPayload(teamId));
    expect((await notifier().runOnce()).delivered).toBe(1);
    const [r] = receivedAt('/verify');
    expect(verifySignature(hook.secret, r!.headers, r!.body)).toMatchObject({ ok: true });
    expect(verifySignature(hook.secret, new Headers(r!.headers as Record<string, string>), Buffer.from(r!.body))).toMatchObject({ ok: true });

    const other = await register(adminKey, '/verify-other');
    expect(other.secret).not.toBe(hook.secret);
    expect(verifySignature(other.secret, r!.headers, r!.body)).toEqual({ ok: false, reason: 'signature_mismatch' });
    expect(verifiesByTheReadme(other.secret, r!)).toBe(false);
    const changed = r!.body.replace('"allow"', '"deny"');
    expect(changed).not.toBe(r!.body);
    expect(verifySignature(hook.secret, r!.headers, changed)).toEqual({ ok: false, reason: 'signature_mismatch' });
    expect(verifySignature(hook.secret, { ...r!.headers, 'x-agentplane-signature': undefined }, r!.body)).toEqual({ ok: false, reason: 'missing_header' });
  });

  it('are refused when the timestamp is older (or newer) than the tolerance, even when the HMAC matches', () => {
    const secret = 'whsec_test-secret-for-timestamps';
    const body = JSON.stringify({ type: 'budget.threshold', percent: 80 });
    const now = new Date('2026-03-01T12:00:00Z');
    const at = (secondsAgo: number) => {
      const timestamp = Math.floor(now.getTime() / 1000) - secondsAgo;
      return { 'x-agentplane-timestamp': String(timestamp), 'x-agentplane-signature': `v1=${signPayload(secret, timestamp, body)}` };
    };
    expect(verifySignature(secret, at(299), body, 300, now)).toMatchObject({ ok: true });
    expect(verifySignature(secret, at(301), body, 300, now)).toEqual({ ok: false, reason: 'timestamp_out_of_tolerance' });
    expect(verifySignature(secret, at(3600), body, 300, now)).toEqual({ ok: false, reason: 'timestamp_out_of_tolerance' });
    expect(verifySignature(secret, at(-301), body, 300, now)).toEqual({ ok: false, reason: 'timestamp_out_of_tolerance' });
    expect(verifySignature(secret, at(3600), body, 7200, now)).toMatchObject({ ok: true });
    expect(verifySignature(secret, { ...at(0), 'x-agentplane-timestamp': 'yesterday' }, body, 300, now)).toEqual({ ok: false, reason: 'bad_timestamp' });
    // a receiver that rotates secrets may get several signatures: one match is enough
    const rotating = { ...at(0), 'x-agentplane-signature': `v1=${'0'.repeat(64)}, ${at(0)['x-agentplane-signature']}` };
    expect(verifySignature(secret, rotating, body, 300, now)).toMatchObject({ ok: true });
  });
});

// ---- concurrency ----------------------------------------------------------------------------------------------

describe('claims', () => {
  it('skip rows another transaction holds instead of waiting for them or taking them too', async () => {
    const { teamId, adminKey } = await freshTeam();
    await register(adminKey, '/claims');
    for (let i = 0; i < 6; i += 1) await enqueue(teamId, approvalPayload(teamId, `claim${i}`));
    const now = new Date(Date.now() + 1000);

    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let first: string[] = [];
    let firstClaimed!: () => void;
    const claimedByFirst = new Promise<void>((resolve) => (firstClaimed = resolve));
    const holder = stack.db.db.transaction(async (tx) => {
      first = (await claimDueDeliveries(tx, { limit: 4, now })).map((d) => d.id);
      firstClaimed();
      await held; // the rows stay locked, the lease uncommitted
    });
    await claimedByFirst;
    const secondClaim = claimDueDeliveries(stack.db.db, { limit: 10, now });
    // a claim that waited for the held rows would still be waiting here (and would get nothing once they commit)
    const beforeRelease = await Promise.race([secondClaim.then(() => 'claimed'), new Promise((r) => setTimeout(() => r('still waiting'), 2000))]);
    release();
    await holder;
    const second = (await secondClaim).map((d) => d.id);
    expect(beforeRelease).toBe('claimed');

    expect(first).toHaveLength(4);
    expect(second).toHaveLength(2);
    expect(second.filter((id) => first.includes(id))).toEqual([]);
    // both leases are committed now: nothing is due until they run out
    expect(await claimDueDeliveries(stack.db.db, { limit: 10, now })).toEqual([]);
  });

  it('let two notifiers with their own connections race over the same due rows and send each delivery once', async () => {
    const { teamId, adminKey } = await freshTeam();
    const hook = await register(adminKey, '/race');
    delays.set('/race', 15);
    const count = 40;
    for (let i = 0; i < count; i += 1) await enqueue(teamId, approvalPayload(teamId, `race${i}`));

    const replica = await openDatabase({ url: stack.databaseUrl, migrate: false });
    try {
      const a = notifier({ batchSize: 3 });
      const b = createNotifier({ db: replica.db, vault: stack.vault, egress: stack.egress, batchSize: 3 });
      const drain = async (n: ReturnType<typeof notifier>) => {
        let delivered = 0;
        for (let summary = await n.runOnce(); summary.claimed > 0; summary = await n.runOnce()) delivered += summary.delivered;
        return delivered;
      };
      const [byA, byB] = await Promise.all([drain(a), drain(b)]);
      expect(byA + byB).toBe(count);
    } finally {
      await replica.close();
    }
    const ids = receivedAt('/race').map((r) => r.headers['x-agentplane-delivery']);
    expect(ids).toHaveLength(count);
    expect(new Set(ids).size).toBe(count);
    expect((await deliveryRows(hook.id)).every((d) => d.status === 'delivered' && d.attempts === 1)).toBe(true);
  });

  it('start() sends on its own, and stop() waits for the poll in flight', async () => {
    const { teamId, adminKey } = await freshTeam();
    await register(adminKey, '/loop');
    delays.set('/loop', 200);
    await enqueue(teamId, approvalPayload(teamId));
    const loop = notifier({ pollMs: 20 });
    loop.start();
    const deadline = Date.now() + 10_000;
    while (receivedAt('/loop').length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    await loop.stop();
    expect(receivedAt('/loop')).toHaveLength(1);
    // stop() returned after the outcome was recorded
    expect(rowsOf<{ status: string }>(await stack.db.db.execute(sql`select status from webhook_deliveries where team_id = ${teamId}`))).toEqual([{ status: 'delivered' }]);
  });
});

// ---- the outbox -----------------------------------------------------------------------------------------------

describe('enqueueNotification', () => {
  it('writes one delivery per active webhook whose events take the type, once per notification, and only if the cause commits', async () => {
    const { teamId, adminKey } = await freshTeam();
    const budgetOnly = await register(adminKey, '/filter-budget', { events: ['budget.threshold'] });
    const approvalsOnly = await register(adminKey, '/filter-approvals', { events: ['approval.requested'] });
    const everything = await register(adminKey, '/filter-all');
    const both = await register(adminKey, '/filter-both', { events: ['approval.requested', 'budget.threshold', 'approval.requested'] });
    const gone = await register(adminKey, '/filter-gone');
    expect((await stack.call('DELETE', `/v1/webhooks/${gone.id}`, undefined, adminKey)).status).toBe(200);
    const elsewhere = await freshTeam();
    await register(elsewhere.adminKey, '/filter-other-team');

    const approval = approvalPayload(teamId);
    const forApproval = await enqueue(teamId, approval);
    expect(forApproval.sort()).toEqual([approvalsOnly, everything, both].map((h) => deliveryIdOf(h.id, approval.id)).sort());
    const budget = budgetPayload(teamId);
    const forBudget = await enqueue(teamId, budget);
    expect(forBudget.sort()).toEqual([budgetOnly, everything, both].map((h) => deliveryIdOf(h.id, budget.id)).sort());

    // the same notification again (a retried activity) adds nothing
    expect(await enqueue(teamId, approval)).toEqual([]);
    // a cause that rolls back takes its notification with it
    const rolledBack = approvalPayload(teamId, 'rolled-back');
    await expect(
      stack.db.db.transaction(async (tx) => {
        expect(await enqueueNotification(tx, { teamId, type: 'approval.requested', payload: rolledBack })).toHaveLength(3);
        throw new Error('the cause failed');
      }),
    ).rejects.toThrow('the cause failed');
    const rows = rowsOf(await stack.db.db.execute(sql`select webhook_id, event_type, payload from webhook_deliveries where team_id = ${teamId}`));
    expect(rows).toHaveLength(6);
    expect(JSON.stringify(rows)).not.toContain('rolled-back');

    expect((await notifier().runOnce()).delivered).toBe(6);
    expect(receivedAt('/filter-budget').map((r) => r.headers['x-agentplane-event'])).toEqual(['budget.threshold']);
    expect(receivedAt('/filter-approvals').map((r) => r.headers['x-agentplane-event'])).toEqual(['approval.requested']);
    expect(receivedAt('/filter-all').map((r) => r.headers['x-agentplane-event']).sort()).toEqual(['approval.requested', 'budget.threshold']);
    expect(receivedAt('/filter-gone')).toEqual([]);
    expect(receivedAt('/filter-other-team')).toEqual([]);
  });
});

// ---- the API --------------------------------------------------------------------------------------------------

describe('webhook routes', () => {
  it('show the secret once, in the answer to the create call, and nowhere else: not in other answers, rows or the audit log', async () => {
    const { teamId, adminKey } = await freshTeam();
    const given = `whsec_given-${Math.random().toString(36).slice(2)}${Math.random().toString(36).slice(2)}`;
    const created = await stack.call('POST', '/v1/webhooks', { url: `${receiverUrl}/secret?token=abc`, events: ['approval.requested'], secret: given }, adminKey);
    expect(created.status).toBe(200);
    expect(created.body).toMatchObject({ type: 'webhook', url: `${receiverUrl}/secret?token=abc`, events: ['approval.requested'], disabled_at: null, secret: given });
    expect(created.body.id).toMatch(/^whk_/);
    const generated = await stack.call('POST', '/v1/webhooks', { url: `${receiverUrl}/secret-generated` }, adminKey);
    expect(generated.status).toBe(200);
    expect(generated.body.secret).toMatch(/^whsec_[A-Za-z0-9_-]{40,}$/);
    expect(generated.body.events).toEqual([]);
    const secrets = [given, generated.body.secret as string];

    await enqueue(teamId, approvalPayload(teamId));
    expect((await notifier().runOnce()).delivered).toBe(2);
    const responses = [
      await stack.call('GET', '/v1/webhooks', undefined, adminKey),
      await stack.call('GET', `/v1/webhooks/${created.body.id}/deliveries`, undefined, adminKey),
      await stack.call('GET', `/v1/webhooks/${generated.body.id}/deliveries`, undefined, adminKey),
      await stack.call('DELETE', `/v1/webhooks/${generated.body.id}`, undefined, adminKey),
    ];
    for (const res of responses) expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(responses[0]!.body.data.map((w: any) => w.id).sort()).toEqual([created.body.id, generated.body.id].sort());
    const stored = JSON.stringify([
      rowsOf(await stack.db.db.execute(sql`select * from webhooks where team_id = ${teamId}`)),
      rowsOf(await stack.db.db.execute(sql`select * from webhook_deliveries where team_id = ${teamId}`)),
      rowsOf(await stack.db.db.execute(sql`select * from audit_log where team_id = ${teamId}`)),
      received.map((r) => [r.headers, r.body]),
    ]);
    for (const secret of secrets) {
      for (const res of responses) expect(JSON.stringify(res.body)).not.toContain(secret.slice(6));
      expect(stored).not.toContain(secret.slice(6));
    }
    // the audit log records who did what, with the receiver's origin only (a URL may carry a token)
    const audit = rowsOf<{ action: string; target: string; data: any }>(await stack.db.db.execute(sql`select action, target, data from audit_log where team_id = ${teamId} order by seq`));
    expect(audit.map((a) => [a.action, a.target])).toEqual([
      ['webhook.create', created.body.id],
      ['webhook.create', generated.body.id],
      ['webhook.delete', generated.body.id],
    ]);
    expect(audit[0]!.data).toEqual({ origin: receiverUrl, events: ['approval.requested'], secret_generated: false });
    expect(JSON.stringify(audit)).not.toContain('token=abc');
  });

  it('refuse a URL that is not http(s), an unknown event type and a short secret, naming the field', async () => {
    for (const [body, field] of [
      [{ url: 'ftp://example.com/hook' }, 'body.url'],
      [{ url: 'not a url' }, 'body.url'],
      [{ url: `${receiverUrl}/x`, events: ['session.created'] }, 'body.events.0'],
      [{ url: `${receiverUrl}/x`, secret: 'short' }, 'body.secret'],
    ] as const) {
      const res = await stack.call('POST', '/v1/webhooks', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.invalid_params.map((p: any) => p.name)).toContain(field);
    }
  });

  it('keep each team to its own webhooks and deliveries', async () => {
    const mine = await freshTeam();
    const theirs = await freshTeam();
    const hook = await register(mine.adminKey, '/scoped');
    expect((await stack.call('GET', '/v1/webhooks', undefined, theirs.adminKey)).body.data).toEqual([]);
    expect((await stack.call('GET', `/v1/webhooks/${hook.id}/deliveries`, undefined, theirs.adminKey)).status).toBe(404);
    expect((await stack.call('DELETE', `/v1/webhooks/${hook.id}`, undefined, theirs.adminKey)).status).toBe(404);
    expect((await stack.call('GET', '/v1/webhooks', undefined, mine.adminKey)).body.data.map((w: any) => w.id)).toEqual([hook.id]);
  });
});

// ---- payloads and their actions -------------------------------------------------------------------------------

describe('payloads', () => {
  it("carry approve and deny actions that decide a real pending tool call through the API with the approver's key", async () => {
    const agent = await stack.call('POST', '/v1/agents', {
      name: 'webhook agent',
      model: 'scripted',
      runtime: { type: 'scripted' },
      tool_policy: { rules: [{ tool: 'write', action: 'ask' }], default: 'allow' },
    });
    expect(agent.status, JSON.stringify(agent.body)).toBe(200);
    const hook = await register(stack.adminKey, '/approvals', { events: ['approval.requested'] });
    const started = await stack.call('POST', '/v1/sessions', { agent: agent.body.id, initial_events: [{ type: 'user.message', content: 'tool write /tmp/x' }] });
    expect(started.status, JSON.stringify(started.body)).toBe(200);
    const sessionId = started.body.id as string;
    const waiting = await waitForStatus(stack, sessionId, 'requires_action');
    const pending = waiting.pending_approvals[0];
    expect(pending).toMatchObject({ tool: 'write', input: { file_path: '/tmp/x' } });

    // the turn activity wrote the notification in the transaction that recorded the pending call
    const written = await deliveryRows(hook.id);
    expect(written.map((d) => [d.event_type, d.status])).toEqual([['approval.requested', 'pending']]);
    const payload = approvalRequested({
      publicUrl: stack.url,
      teamId: stack.teamId,
      sessionId,
      toolUseId: pending.tool_use_id,
      tool: pending.tool,
      input: pending.input,
      agent: { id: agent.body.id, name: agent.body.name },
      expiresAt: new Date(pending.expires_at),
    });
    expect(written[0]!.id).toBe(deliveryIdOf(hook.id, payload.id));
    expect({ ...written[0]!.payload, created_at: null }).toEqual({ ...payload, created_at: null });
    // the same cause notified again (a retried activity) is the same notification: nothing more is written
    expect(await enqueue(stack.teamId, payload)).toEqual([]);
    expect((await notifier().runOnce()).delivered).toBe(1);

    const [delivery] = receivedAt('/approvals');
    expect(verifySignature(hook.secret, delivery!.headers, delivery!.body)).toMatchObject({ ok: true });
    const body = JSON.parse(delivery!.body);
    expect(body).toMatchObject({
      type: 'approval.requested',
      team_id: stack.teamId,
      session_id: sessionId,
      tool_use_id: pending.tool_use_id,
      tool: 'write',
      input: { file_path: '/tmp/x' },
      agent: { id: agent.body.id, name: 'webhook agent' },
      expires_at: pending.expires_at,
    });
    expect(body.text).toContain('webhook agent wants to run write /tmp/x');
    expect(body.text).not.toContain('\n');
    expect(body.actions.map((a: any) => [a.id, a.label, a.method, a.url])).toEqual([
      ['approve', 'Approve', 'POST', `${stack.url}/v1/sessions/${sessionId}/events`],
      ['deny', 'Deny', 'POST', `${stack.url}/v1/sessions/${sessionId}/events`],
    ]);
    const [approve, deny] = body.actions;
    expect(deny.body).toEqual({ events: [{ type: 'user.tool_confirmation', tool_use_id: pending.tool_use_id, result: 'deny' }] });

    // the bot presses a button for a person: the call carries that person's key, and the API's rules apply
    const viewer = await stack.key('viewer');
    const refused = await stack.call(approve.method, approve.url.slice(stack.url.length), approve.body, viewer);
    expect(refused.status).toBe(403);
    const approver = await createApiKey(stack.db.db, { teamId: stack.teamId, name: 'chat approver', role: 'approver' });
    const decided = await stack.call(approve.method, approve.url.slice(stack.url.length), approve.body, approver.plain);
    expect(decided.status, JSON.stringify(decided.body)).toBe(200);
    expect(decided.body.data).toMatchObject([{ type: 'user.tool_confirmation', tool_use_id: pending.tool_use_id, result: 'allow' }]);

    await waitForStatus(stack, sessionId, 'idle', 'end_turn');
    const approval = rowsOf<{ status: string; decided_by_key_id: string }>(
      await stack.db.db.execute(sql`select status, decided_by_key_id from approvals where session_id = ${sessionId} and tool_use_id = ${pending.tool_use_id}`),
    );
    expect(approval).toEqual([{ status: 'allowed', decided_by_key_id: approver.key.id }]);
    expect((await eventsOf(stack, sessionId)).map((e) => e.type)).toContain('agent.tool_result');
    // pressing deny afterwards is a conflict, not a second decision
    expect((await stack.call(deny.method, deny.url.slice(stack.url.length), deny.body, approver.plain)).status).toBe(409);
  });

  it('describe a budget threshold with numbers a person can read, and give the same id to the same crossing', () => {
    const at = new Date('2026-02-01T00:00:00Z');
    const payload = budgetThreshold({ teamId: 'team_1', budgetId: 'bud_1', scope: 'agent', agentId: 'agent_1', percent: 80, spentUsd: 40.5, limitUsd: 50, periodStart: at, createdAt: at });
    expect(payload).toEqual({
      type: 'budget.threshold',
      id: 'budget.threshold:bud_1:2026-02-01T00:00:00.000Z:80',
      created_at: '2026-02-01T00:00:00.000Z',
      team_id: 'team_1',
      budget_id: 'bud_1',
      scope: 'agent',
      agent_id: 'agent_1',
      percent: 80,
      spent_usd: 40.5,
      limit_usd: 50,
      period_start: '2026-02-01T00:00:00.000Z',
      text: 'Budget bud_1 of agent agent_1 crossed 80%: $40.50 of $50.00 spent since 2026-02-01T00:00:00.000Z',
    });
    expect(budgetThreshold({ teamId: 'team_1', budgetId: 'bud_1', scope: 'agent', agentId: 'agent_1', percent: 80, spentUsd: 41, limitUsd: 50, periodStart: at }).id).toBe(payload.id);
    expect(budgetThreshold({ teamId: 'team_1', budgetId: 'bud_1', scope: 'team', agentId: '', percent: 100, spentUsd: 50, limitUsd: 50, periodStart: at })).toMatchObject({
      agent_id: null,
      text: expect.stringContaining('of the team crossed 100%'),
    });
  });
});
