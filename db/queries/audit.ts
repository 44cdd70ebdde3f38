/**
 * The tamper-evident audit log. Rows form one hash chain; appends serialise on a transaction-scoped advisory
 * lock so two writers can never fork the chain.
 */
import { createHash } from 'node:crypto';
import { and, asc, desc, eq, gt, gte, lt, lte, sql, type SQL } from 'drizzle-orm';
import { isTransaction, rowsOf, type Db } from '../client';
import { activeTraceId } from '../../observability/tracing';
import { newId } from '../ids';
import { auditLog } from '../schema/index';

const AUDIT_CHAIN_LOCK = 7_114_230;
export const GENESIS_HASH = '0'.repeat(64);

export interface AuditEntry {
  teamId: string;
  actorKeyId: string;
  actorRole: string;
  action: string;
  target: string;
  decision: string;
  reason: string;
  requestId?: string | null;
  traceId?: string | null;
  data?: Record<string, unknown>;
}

type AuditRow = typeof auditLog.$inferSelect;

/**
 * Appends one row. Call it inside the transaction that makes the change it records, and as late in it as possible:
 * the chain lock is held from here to that transaction's commit.
 */
export async function appendAudit(db: Db, entry: AuditEntry): Promise<AuditRow> {
  return isTransaction(db) ? appendInTransaction(db, entry) : db.transaction((tx) => appendInTransaction(tx, entry));
}

/**
 * The chain's last hash as this process last wrote it. A guess that saves the read of the tip under the lock; the
 * insert checks it against the table, so a stale guess (another process wrote since, or a rollback) only costs the read.
 */
let knownTip: string | null = null;

async function appendInTransaction(tx: Db, entry: AuditEntry): Promise<AuditRow> {
  await tx.execute(sql`select pg_advisory_xact_lock(${AUDIT_CHAIN_LOCK})`);
  // statements after the lock see every row committed before it: the tip read here is the chain's tip
  const rowAfter = (prevHash: string) => {
    const row = {
      id: newId('aud'),
      teamId: entry.teamId,
      actorKeyId: entry.actorKeyId,
      actorRole: entry.actorRole,
      action: entry.action,
      target: entry.target,
      decision: entry.decision,
      reason: entry.reason,
      requestId: entry.requestId ?? null,
      // like events: the trace of the request or activity that writes the row, unless the caller names one
      traceId: entry.traceId !== undefined ? entry.traceId : activeTraceId(),
      data: entry.data ?? {},
      createdAt: new Date(),
      prevHash,
    };
    return { ...row, hash: hashRow(row) };
  };
  if (knownTip) {
    const row = rowAfter(knownTip);
    const [written] = rowsOf<{ seq: number }>(
      await tx.execute(sql`
        insert into audit_log (id, team_id, actor_key_id, actor_role, action, target, decision, reason, request_id, trace_id, data, created_at, prev_hash, hash)
        select ${row.id}, ${row.teamId}, ${row.actorKeyId}, ${row.actorRole}, ${row.action}, ${row.target}, ${row.decision}, ${row.reason}, ${row.requestId}, ${row.traceId},
          ${JSON.stringify(row.data)}::jsonb, ${row.createdAt.toISOString()}::timestamptz, ${row.prevHash}, ${row.hash}
        where (select hash from audit_log order by seq desc limit 1) = ${row.prevHash}
        returning seq`),
    );
    if (written) {
      knownTip = row.hash;
      return { ...row, seq: Number(written.seq) };
    }
  }
  const [last] = await tx.select({ hash: auditLog.hash }).from(auditLog).orderBy(desc(auditLog.seq)).limit(1);
  const [inserted] = await tx.insert(auditLog).values(rowAfter(last?.hash ?? GENESIS_HASH)).returning();
  knownTip = inserted!.hash;
  return inserted as AuditRow;
}

export function hashRow(row: Omit<AuditRow, 'seq' | 'hash'>): string {
  const body = canonicalJson({
    id: row.id,
    teamId: row.teamId,
    actorKeyId: row.actorKeyId,
    actorRole: row.actorRole,
    action: row.action,
    target: row.target,
    decision: row.decision,
    reason: row.reason,
    requestId: row.requestId,
    traceId: row.traceId,
    data: row.data,
    createdAt: row.createdAt.toISOString(),
  });
  return createHash('sha256').update(row.prevHash).update('\n').update(body).digest('hex');
}

/** JSON with object keys sorted at every level, so jsonb's reordering cannot change a hash. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value ?? null);
}

export interface AuditFilter {
  teamId: string;
  action?: string;
  actorKeyId?: string;
  target?: string;
  /** created at or after */
  since?: Date;
  /** created before */
  until?: Date;
}

/** A team's rows in chain order, paged by `seq` (`after` is the last seq of the previous page). */
export async function listAudit(db: Db, params: AuditFilter & { after?: number; limit: number; throughSeq?: number }) {
  const where: SQL[] = [eq(auditLog.teamId, params.teamId)];
  if (params.after !== undefined) where.push(gt(auditLog.seq, params.after));
  if (params.throughSeq !== undefined) where.push(lte(auditLog.seq, params.throughSeq));
  if (params.action) where.push(eq(auditLog.action, params.action));
  if (params.actorKeyId) where.push(eq(auditLog.actorKeyId, params.actorKeyId));
  if (params.target) where.push(eq(auditLog.target, params.target));
  if (params.since) where.push(gte(auditLog.createdAt, params.since));
  if (params.until) where.push(lt(auditLog.createdAt, params.until));
  return db.select().from(auditLog).where(and(...where)).orderBy(asc(auditLog.seq)).limit(params.limit);
}

/** The newest seq of the whole chain (0 when empty): an export stops there, so rows written meanwhile cannot keep it going. */
export async function lastAuditSeq(db: Db): Promise<number> {
  const [row] = await db.select({ seq: auditLog.seq }).from(auditLog).orderBy(desc(auditLog.seq)).limit(1);
  return row?.seq ?? 0;
}

export type ChainVerdict =
  | { ok: true; rows: number }
  /** `brokenTeamId` lets a caller of another team be told only that the break is not in its rows */
  | { ok: false; rows: number; brokenSeq: number; brokenId: string; brokenTeamId: string; why: string };

/** Walks the whole chain in order and names the first row whose hash or link does not hold. */
export async function verifyAuditChain(db: Db, pageSize = 1000): Promise<ChainVerdict> {
  let prevHash = GENESIS_HASH;
  let after = 0;
  let count = 0;
  for (;;) {
    const page = await db.select().from(auditLog).where(gt(auditLog.seq, after)).orderBy(asc(auditLog.seq)).limit(pageSize);
    for (const row of page) {
      count += 1;
      if (row.prevHash !== prevHash) return { ok: false, rows: count, brokenSeq: row.seq, brokenId: row.id, brokenTeamId: row.teamId, why: 'prev_hash does not match the row before it' };
      if (hashRow(row) !== row.hash) return { ok: false, rows: count, brokenSeq: row.seq, brokenId: row.id, brokenTeamId: row.teamId, why: 'row content does not match its hash' };
      prevHash = row.hash;
      after = row.seq;
    }
    if (page.length < pageSize) return { ok: true, rows: count };
  }
}

