/**
 * The tamper-evident audit log. Rows form one hash chain; appends serialise on a transaction-scoped advisory
 * lock so two writers can never fork the chain.
 */
import { createHash } from 'node:crypto';
import { and, asc, desc, eq, gt, gte, lt, lte, sql, type SQL } from 'drizzle-orm';
import { isTransaction, rowsOf, type Db } from '../client';
import { activeTraceId } from '../../observability/tracing';
import { newId } from '../ids';
import { auditCheckpoints, auditLog } from '../schema/index';

export const AUDIT_CHAIN_LOCK = 7_114_230;
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
  const [row] = isTransaction(db) ? await appendAuditRows(db, [entry]) : await db.transaction((tx) => appendAuditRows(tx, [entry]));
  return row!;
}

/**
 * The chain's last hash as this process last wrote it. A guess that saves the read of the tip under the lock; the
 * insert checks it against the table, so a stale guess (another process wrote since, or a rollback) only costs the read.
 */
let knownTip: string | null = null;

/** the tip to hash a new segment on: the one this process last wrote, else the genesis hash (checked by the writer) */
export function guessedTip(): string {
  return knownTip ?? GENESIS_HASH;
}

/** the tip a committed segment left: the next segment's guess */
export function rememberTip(tip: string): void {
  knownTip = tip;
}

/** New audit rows chained from `tip`, in order, created at `createdAt`: what a writer inserts if the tip holds. */
export function chainRows(entries: AuditEntry[], tip: string, createdAt: Date): Array<Omit<AuditRow, 'seq'>> {
  let prevHash = tip;
  return entries.map((entry) => {
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
      createdAt,
      prevHash,
    };
    prevHash = hashRow(row);
    return { ...row, hash: prevHash };
  });
}

/** audit rows as `jsonb_to_recordset` reads them (snake case), in chain order */
export function auditRecords(rows: Array<Omit<AuditRow, 'seq'>>) {
  return rows.map((r, ord) => ({ ord, id: r.id, team_id: r.teamId, actor_key_id: r.actorKeyId, actor_role: r.actorRole, action: r.action, target: r.target, decision: r.decision, reason: r.reason, request_id: r.requestId, trace_id: r.traceId, data: r.data, created_at: r.createdAt.toISOString(), prev_hash: r.prevHash, hash: r.hash }));
}

/**
 * Appends rows in order as one segment of the chain, inside the caller's transaction: one lock and one statement for
 * all of them. As late in the transaction as possible: the lock is held until its commit. (A group commit of tool
 * decisions writes its rows with its events in one call instead: `agentplane_record_decisions`.)
 */
export async function appendAuditRows(tx: Db, entries: AuditEntry[]): Promise<AuditRow[]> {
  if (entries.length === 0) return [];
  await tx.execute(sql`select pg_advisory_xact_lock(${AUDIT_CHAIN_LOCK})`);
  // statements after the lock see every row committed before it: the tip read here is the chain's tip
  const createdAt = new Date();
  const insert = async (rows: Array<Omit<AuditRow, 'seq'>>, checkTip: boolean) => {
    // the rows go in in chain order (`order by ord`), so their seqs follow the chain
    const written = rowsOf<{ id: string; seq: number }>(
      await tx.execute(sql`
        insert into audit_log (id, team_id, actor_key_id, actor_role, action, target, decision, reason, request_id, trace_id, data, created_at, prev_hash, hash)
        select v.id, v.team_id, v.actor_key_id, v.actor_role, v.action, v.target, v.decision, v.reason, v.request_id, v.trace_id, v.data, v.created_at, v.prev_hash, v.hash
        from jsonb_to_recordset(${JSON.stringify(auditRecords(rows))}::jsonb)
          as v(ord int, id text, team_id text, actor_key_id text, actor_role text, action text, target text, decision text, reason text, request_id text, trace_id text, data jsonb, created_at timestamptz, prev_hash text, hash text)
        where not ${checkTip} or (select hash from audit_log order by seq desc limit 1) is not distinct from ${rows[0]!.prevHash}
        order by v.ord
        returning id, seq`),
    );
    if (written.length === 0) return null;
    const seqs = new Map(written.map((w) => [w.id, Number(w.seq)]));
    rememberTip(rows.at(-1)!.hash);
    return rows.map((r) => ({ ...r, seq: seqs.get(r.id)! }));
  };
  const guessed = knownTip ? await insert(chainRows(entries, knownTip, createdAt), true) : null;
  if (guessed) return guessed;
  const [last] = await tx.select({ hash: auditLog.hash }).from(auditLog).orderBy(desc(auditLog.seq)).limit(1);
  return (await insert(chainRows(entries, last?.hash ?? GENESIS_HASH, createdAt), false))!;
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

export interface ChainWalk {
  /**
   * `checkpoint`: from the newest checkpoint (checking that its row still has the hash it was verified with), or from
   * the genesis when there is none yet. `start`: every row from the genesis.
   */
  from: 'checkpoint' | 'start';
  /** whose rows to count: the verdict reports that team's share of the chain, never another team's */
  teamId: string;
  pageSize?: number;
}

export type ChainVerdict =
  /** `teamRows`: the team's rows up to the newest row walked, all of which the chain now proves */
  | { ok: true; teamRows: number }
  /**
   * `teamRows`: the team's rows before the break; `brokenTeamId` lets a caller of another team be told only that the
   * break is not in its rows (null when the row is gone)
   */
  | { ok: false; teamRows: number; brokenSeq: number; brokenId: string | null; brokenTeamId: string | null; why: string };

/**
 * Walks the chain in order and names the first row whose hash or link does not hold. A walk that finds every row
 * sound records the last one as a checkpoint, so the next `from: 'checkpoint'` walk reads only what was appended
 * since. What that costs: a row before the checkpoint that a superuser changes afterwards (behind the append-only
 * guard) is seen only by a `from: 'start'` walk, or by the checkpoint check when it is the checkpoint's own row.
 */
export async function verifyAuditChain(db: Db, params: ChainWalk): Promise<ChainVerdict> {
  const pageSize = params.pageSize ?? 1000;
  const broken = async (row: { seq: number; id: string | null; teamId: string | null }, why: string): Promise<ChainVerdict> => ({
    ok: false,
    teamRows: await countTeamRows(db, { teamId: params.teamId, beforeSeq: row.seq }),
    brokenSeq: row.seq,
    brokenId: row.id,
    brokenTeamId: row.teamId,
    why,
  });
  let prevHash = GENESIS_HASH;
  let after = 0;
  const checkpoint = params.from === 'checkpoint' ? await latestAuditCheckpoint(db) : null;
  if (checkpoint) {
    const [row] = await db.select().from(auditLog).where(eq(auditLog.seq, checkpoint.seq));
    if (!row) return broken({ seq: checkpoint.seq, id: null, teamId: null }, 'the row of the last checkpoint is gone');
    if (row.hash !== checkpoint.hash) return broken(row, `the row of the last checkpoint no longer has the hash it was verified with at ${checkpoint.verifiedAt.toISOString()}`);
    if (hashRow(row) !== row.hash) return broken(row, 'row content does not match its hash');
    prevHash = row.hash;
    after = row.seq;
  }
  const from = after;
  for (;;) {
    const page = await db.select().from(auditLog).where(gt(auditLog.seq, after)).orderBy(asc(auditLog.seq)).limit(pageSize);
    for (const row of page) {
      if (row.prevHash !== prevHash) return broken(row, 'prev_hash does not match the row before it');
      if (hashRow(row) !== row.hash) return broken(row, 'row content does not match its hash');
      prevHash = row.hash;
      after = row.seq;
    }
    if (page.length < pageSize) break;
  }
  // rows appended meanwhile are simply not in this walk: appends commit in seq order (the chain lock), so every row up
  // to `after` was there to be read
  if (after > from) await recordAuditCheckpoint(db, { seq: after, hash: prevHash });
  return { ok: true, teamRows: await countTeamRows(db, { teamId: params.teamId, beforeSeq: after + 1 }) };
}

/** A team's rows before a position of the chain (audit_team_idx answers it). */
async function countTeamRows(db: Db, params: { teamId: string; beforeSeq: number }): Promise<number> {
  const [row] = await db
    .select({ n: sql<string>`count(*)` })
    .from(auditLog)
    .where(and(eq(auditLog.teamId, params.teamId), lt(auditLog.seq, params.beforeSeq)));
  return Number(row?.n ?? 0);
}

export async function latestAuditCheckpoint(db: Db) {
  const [row] = await db.select().from(auditCheckpoints).orderBy(desc(auditCheckpoints.seq)).limit(1);
  return row ?? null;
}

/** Two walks may prove the same row at once: the first record stands. */
async function recordAuditCheckpoint(db: Db, params: { seq: number; hash: string }): Promise<void> {
  await db.insert(auditCheckpoints).values(params).onConflictDoNothing({ target: auditCheckpoints.seq });
}
