/**
 * The session event log. Every writer (workflow bookkeeping, a runtime turn, a retried turn) goes through
 * `appendEvents`: under the session row's lock it drops events already written (same sourceId), numbers the
 * rest without gaps, and commits them together with the status change and the ledger charges they carry, and with
 * a notification (`CHANNELS.events`) that wakes the event streams of every API process when they commit.
 */
import { and, asc, desc, eq, gt, lt, sql } from 'drizzle-orm';
import { isTransaction, rowsOf, type Db } from '../client';
import { CHANNELS } from '../notifications';
import { activeTraceId } from '../../observability/tracing';
import { stableId } from '../ids';
import { sessionEvents } from '../schema/index';

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
  /** how many of the events were new (the others were written before, by an earlier attempt) */
  appended: number;
  /** the session's total spend after this append */
  costMicros: number;
  /** what this append charged (charges already in the ledger are not counted again) */
  chargedMicros: number;
}

/**
 * One statement, so one round trip whether or not the caller holds a transaction: it locks the session row, drops
 * events whose sourceId is already in the log (and repeats within the batch), numbers the rest from the row's
 * `event_seq`, inserts the new charges (a charge already in the ledger is not charged again), and moves the row's
 * counters, status and spend by what was actually inserted.
 *
 * Two appends of the same session serialise on the row lock. The second one's duplicate check reads the snapshot it
 * started with, so if both carry the same sourceId (a retry racing the attempt it retries) the unique index refuses
 * the second: outside a transaction it is re-run once and then finds the event; inside one, the caller's retry does.
 *
 * When it wrote events it also sends `pg_notify` with the session id and its new highest seq: Postgres delivers it
 * when the caller's transaction commits, and never if it rolls back, so a stream that wakes on it finds the events.
 * A notification is a wake-up, not the data: streams read the log after their cursor (api/event-streams.ts).
 */
export async function appendEvents(
  db: Db,
  params: { sessionId: string; events: NewEvent[]; status?: { status: string; stopReason: unknown }; charges?: NewCharge[]; traceId?: string | null },
): Promise<AppendResult> {
  // every writer runs inside a span (API request, activity): its trace goes on the row without being passed down
  const traceId = params.traceId !== undefined ? params.traceId : activeTraceId();
  const events = params.events
    .filter((e, i) => params.events.findIndex((x) => x.sourceId === e.sourceId) === i)
    .map((e, ord) => ({ ord, id: e.id ?? stableId('sevt', params.sessionId, e.sourceId), source_id: e.sourceId, type: e.type, payload: e.payload }));
  const charges = (params.charges ?? []).map((c) => ({
    id: stableId('led', params.sessionId, c.sourceId),
    source_id: c.sourceId,
    model: c.model,
    input_tokens: c.inputTokens,
    output_tokens: c.outputTokens,
    cache_read_tokens: c.cacheReadTokens,
    cache_creation_tokens: c.cacheCreationTokens,
    amount_micros: c.amountMicros,
    cost_source: c.costSource,
  }));
  const status = params.status ?? null;
  const statement = sql`
    with s as (
      select event_seq, team_id, agent_id from sessions where id = ${params.sessionId} for update
    ),
    incoming as (
      select e.ord, e.id, e.source_id, e.type, e.payload
      from jsonb_to_recordset(${JSON.stringify(events)}::jsonb) as e(ord int, id text, source_id text, type text, payload jsonb)
      where not exists (select 1 from session_events x where x.session_id = ${params.sessionId} and x.source_id = e.source_id)
    ),
    ins as (
      insert into session_events (id, session_id, seq, source_id, type, payload, trace_id)
      select i.id, ${params.sessionId}, s.event_seq + row_number() over (order by i.ord), i.source_id, i.type, i.payload, ${traceId}
      from incoming i cross join s
      returning 1
    ),
    charged as (
      insert into ledger (id, team_id, agent_id, session_id, source_id, model, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens, amount_micros, cost_source)
      select c.id, s.team_id, s.agent_id, ${params.sessionId}, c.source_id, c.model, c.input_tokens, c.output_tokens, c.cache_read_tokens, c.cache_creation_tokens, c.amount_micros, c.cost_source
      from jsonb_to_recordset(${JSON.stringify(charges)}::jsonb)
        as c(id text, source_id text, model text, input_tokens bigint, output_tokens bigint, cache_read_tokens bigint, cache_creation_tokens bigint, amount_micros bigint, cost_source text)
      cross join s
      on conflict do nothing
      returning amount_micros, input_tokens, output_tokens, cache_read_tokens, cache_creation_tokens
    ),
    added as (
      select coalesce(sum(amount_micros), 0)::bigint as micros, coalesce(sum(input_tokens), 0)::bigint as input, coalesce(sum(output_tokens), 0)::bigint as output,
        coalesce(sum(cache_read_tokens), 0)::bigint as cache_read, coalesce(sum(cache_creation_tokens), 0)::bigint as cache_creation
      from charged
    ),
    appended as (select count(*)::int as n from ins)
    update sessions set
      event_seq = sessions.event_seq + appended.n,
      updated_at = now(),
      cost_micros = sessions.cost_micros + added.micros,
      input_tokens = sessions.input_tokens + added.input,
      output_tokens = sessions.output_tokens + added.output,
      cache_read_tokens = sessions.cache_read_tokens + added.cache_read,
      cache_creation_tokens = sessions.cache_creation_tokens + added.cache_creation,
      status = case when ${status !== null} then ${status?.status ?? null}::text else sessions.status end,
      stop_reason = case when ${status !== null} then ${status ? JSON.stringify(status.stopReason ?? null) : null}::jsonb else sessions.stop_reason end
    from added, appended
    where sessions.id = ${params.sessionId}
    returning appended.n as appended, sessions.cost_micros as cost_micros, added.micros as charged_micros,
      case when appended.n > 0 then pg_notify(${CHANNELS.events}, json_build_object('session_id', sessions.id, 'seq', sessions.event_seq)::text) end as notified`;
  const run = async () => rowsOf<{ appended: number; cost_micros: number; charged_micros: number }>(await db.execute(statement))[0];
  let row;
  try {
    row = await run();
  } catch (err) {
    // the same sourceId committed by a concurrent writer after this statement's snapshot: the rerun sees it
    if (!(err instanceof Error && 'constraint' in err && err.constraint === 'session_events_source_idx') || isTransaction(db)) throw err;
    row = await run();
  }
  if (!row) throw new Error(`session ${params.sessionId} does not exist`);
  return { appended: row.appended, costMicros: Number(row.cost_micros), chargedMicros: Number(row.charged_micros) };
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

/**
 * The highest seq of each session's log (`event_seq`, moved by the statement that appends), for sessions of the given
 * teams only: one read tells an API process which of the sessions it streams have events its streams have not read.
 */
export async function eventHeads(db: Db, params: { sessions: Array<{ teamId: string; sessionId: string }> }): Promise<Map<string, number>> {
  if (params.sessions.length === 0) return new Map();
  const wanted = JSON.stringify(params.sessions.map((s) => ({ team_id: s.teamId, session_id: s.sessionId })));
  const rows = rowsOf<{ id: string; event_seq: number }>(
    await db.execute(sql`
      select s.id, s.event_seq from sessions s
      join jsonb_to_recordset(${wanted}::jsonb) as w(team_id text, session_id text) on s.id = w.session_id and s.team_id = w.team_id`),
  );
  return new Map(rows.map((r) => [r.id, Number(r.event_seq)]));
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
