/**
 * The session event log. Every writer (workflow bookkeeping, a runtime turn, a retried turn) goes through
 * `appendEvents`: under the session row's lock it drops events already written (same sourceId), numbers the
 * rest without gaps, and commits them together with the status change and the ledger charges they carry.
 */
import { and, asc, desc, eq, gt, inArray, lt, sql } from 'drizzle-orm';
import type { Db } from '../client';
import { activeTraceId } from '../../observability/tracing';
import { stableId } from '../ids';
import { ledger, sessionEvents, sessions } from '../schema/index';

export interface NewEvent {
  sourceId: string;
  id?: string;
  type: string;
  payload: Record<string, unknown>;
}

export interface NewCharge {
  sourceId: string;
  model: string;
  inputTokens: number;
  outputTokens: number;
  cacheReadTokens: number;
  cacheCreationTokens: number;
  amountMicros: number;
  costSource: 'reported' | 'priced';
}

export type EventRow = typeof sessionEvents.$inferSelect;

export interface AppendResult {
  inserted: EventRow[];
  /** the session's total spend after this append */
  costMicros: number;
  /** what this append charged (charges already in the ledger are not counted again) */
  chargedMicros: number;
}

export async function appendEvents(
  db: Db,
  params: { sessionId: string; events: NewEvent[]; status?: { status: string; stopReason: unknown }; charges?: NewCharge[]; traceId?: string | null },
): Promise<AppendResult> {
  // every writer runs inside a span (API request, activity): its trace goes on the row without being passed down
  const traceId = params.traceId !== undefined ? params.traceId : activeTraceId();
  return db.transaction(async (tx) => {
    const [session] = await tx
      .select({ eventSeq: sessions.eventSeq, teamId: sessions.teamId, agentId: sessions.agentId, costMicros: sessions.costMicros })
      .from(sessions)
      .where(eq(sessions.id, params.sessionId))
      .for('update');
    if (!session) throw new Error(`session ${params.sessionId} does not exist`);

    const sourceIds = params.events.map((e) => e.sourceId);
    const seen = new Set(
      sourceIds.length === 0
        ? []
        : (
            await tx
              .select({ sourceId: sessionEvents.sourceId })
              .from(sessionEvents)
              .where(and(eq(sessionEvents.sessionId, params.sessionId), inArray(sessionEvents.sourceId, sourceIds)))
          ).map((r) => r.sourceId),
    );
    let seq = session.eventSeq;
    const fresh = params.events
      .filter((event) => {
        if (seen.has(event.sourceId)) return false;
        seen.add(event.sourceId);
        return true;
      })
      .map((event) => ({
        id: event.id ?? stableId('sevt', params.sessionId, event.sourceId),
        sessionId: params.sessionId,
        seq: ++seq,
        sourceId: event.sourceId,
        type: event.type,
        payload: event.payload,
        traceId,
      }));
    const inserted = fresh.length > 0 ? await tx.insert(sessionEvents).values(fresh).returning() : [];

    let added = { micros: 0, input: 0, output: 0, cacheRead: 0, cacheCreation: 0 };
    if (params.charges && params.charges.length > 0) {
      const charged = await tx
        .insert(ledger)
        .values(
          params.charges.map((c) => ({
            ...c,
            id: stableId('led', params.sessionId, c.sourceId),
            teamId: session.teamId,
            agentId: session.agentId,
            sessionId: params.sessionId,
          })),
        )
        .onConflictDoNothing()
        .returning();
      for (const c of charged) {
        added = {
          micros: added.micros + c.amountMicros,
          input: added.input + c.inputTokens,
          output: added.output + c.outputTokens,
          cacheRead: added.cacheRead + c.cacheReadTokens,
          cacheCreation: added.cacheCreation + c.cacheCreationTokens,
        };
      }
    }

    await tx
      .update(sessions)
      .set({
        eventSeq: seq,
        updatedAt: new Date(),
        costMicros: sql`${sessions.costMicros} + ${added.micros}`,
        inputTokens: sql`${sessions.inputTokens} + ${added.input}`,
        outputTokens: sql`${sessions.outputTokens} + ${added.output}`,
        cacheReadTokens: sql`${sessions.cacheReadTokens} + ${added.cacheRead}`,
        cacheCreationTokens: sql`${sessions.cacheCreationTokens} + ${added.cacheCreation}`,
        ...(params.status ? { status: params.status.status, stopReason: params.status.stopReason } : {}),
      })
      .where(eq(sessions.id, params.sessionId));
    return { inserted, costMicros: session.costMicros + added.micros, chargedMicros: added.micros };
  });
}

export async function listEvents(db: Db, params: { sessionId: string; afterSeq?: number; beforeSeq?: number; limit: number; order: 'asc' | 'desc' }) {
  const where = [eq(sessionEvents.sessionId, params.sessionId)];
  if (params.afterSeq !== undefined) where.push(gt(sessionEvents.seq, params.afterSeq));
  if (params.beforeSeq !== undefined) where.push(lt(sessionEvents.seq, params.beforeSeq));
  return db
    .select()
    .from(sessionEvents)
    .where(and(...where))
    .orderBy(params.order === 'asc' ? asc(sessionEvents.seq) : desc(sessionEvents.seq))
    .limit(params.limit);
}

export async function findEvent(db: Db, sessionId: string, eventId: string) {
  const [row] = await db
    .select()
    .from(sessionEvents)
    .where(and(eq(sessionEvents.sessionId, sessionId), eq(sessionEvents.id, eventId)));
  return row ?? null;
}

/** The public shape of an event (Managed Agents style). */
export function toPublicEvent(row: EventRow) {
  return { id: row.id, type: row.type, ...(row.payload as Record<string, unknown>), processed_at: row.createdAt.toISOString(), seq: row.seq, trace_id: row.traceId };
}
