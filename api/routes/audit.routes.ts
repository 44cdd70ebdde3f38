/**
 * The audit log, read-only: a team's rows (paged, filtered), the same rows as JSON lines for export, and a walk of
 * the hash chain. The chain is one across all teams, so `verify` proves every row it walks but names and counts only
 * the caller's own: a break in another team's row is reported by its position alone. It walks from the last
 * checkpoint; from the first row only for audit:verify_full.
 */
import { createRoute, z } from '@hono/zod-openapi';
import { lastAuditSeq, listAudit, verifyAuditChain, type AuditFilter } from '../../db/queries/audit';
import type { auditLog } from '../../db/schema/index';
import type { Actor } from '../../governance/types';
import { requirePermission, requires, type App, type AppDeps } from '../create-app';
import { json, page, PageQuery, problemResponses } from '../schemas/common';

const tags = ['audit'];
/** rows read from the database at a time while exporting */
const EXPORT_PAGE = 500;

export const AuditRowSchema = z
  .object({
    seq: z.number().int().openapi({ description: 'position in the chain, global across teams' }),
    id: z.string(),
    actor: z.object({ key_id: z.string(), role: z.string() }),
    action: z.string().openapi({ example: 'agent.create' }),
    target: z.string(),
    decision: z.string(),
    reason: z.string().openapi({ description: 'the permission or rule that authorised it' }),
    request_id: z.string().nullable(),
    trace_id: z.string().nullable(),
    data: z.record(z.string(), z.unknown()),
    created_at: z.string(),
    prev_hash: z.string(),
    hash: z.string().openapi({ description: 'sha256(prev_hash, "\\n", the canonical row)' }),
  })
  .openapi('AuditRow');

const AuditFilterQuery = z.object({
  action: z.string().min(1).max(200).optional().openapi({ example: 'key.revoke' }),
  actor: z.string().min(1).max(100).optional().openapi({ description: 'the key id that acted' }),
  target: z.string().min(1).max(200).optional().openapi({ description: 'the id the action was on' }),
  since: z.iso.datetime({ offset: true }).optional().openapi({ description: 'created at or after (ISO 8601)' }),
  until: z.iso.datetime({ offset: true }).optional().openapi({ description: 'created before (ISO 8601)' }),
});

const AuditListQuery = PageQuery.extend({
  page: z.string().regex(/^\d{1,18}$/, 'not a cursor returned by this endpoint').optional().openapi({ description: 'the `next_page` cursor of the previous page' }),
}).extend(AuditFilterQuery.shape);

const VerifyQuery = z.object({
  from: z
    .enum(['checkpoint', 'start'])
    .default('checkpoint')
    .openapi({ description: '`checkpoint`: the rows appended since the last walk that found the chain sound; `start`: every row from the first (needs audit:verify_full)' }),
});

const VerifySchema = z
  .object({
    ok: z.boolean(),
    from: z.enum(['checkpoint', 'start']).openapi({ description: 'where the walk began' }),
    rows: z.number().int().openapi({ description: "the caller's team's rows the chain proves: all of them up to the newest row, or those before the break (other teams' rows are checked, never counted)" }),
    broken: z
      .object({
        seq: z.number().int(),
        id: z.string().nullable().openapi({ description: "null when the row is another team's, or gone" }),
        why: z.string(),
        other_team: z.boolean(),
      })
      .optional()
      .openapi({ description: 'the first row that does not verify' }),
  })
  .openapi('AuditVerification');

type AuditRow = typeof auditLog.$inferSelect;

export function toAuditResponse(row: AuditRow): z.infer<typeof AuditRowSchema> {
  return {
    seq: row.seq,
    id: row.id,
    actor: { key_id: row.actorKeyId, role: row.actorRole },
    action: row.action,
    target: row.target,
    decision: row.decision,
    reason: row.reason,
    request_id: row.requestId,
    trace_id: row.traceId,
    data: row.data as Record<string, unknown>,
    created_at: row.createdAt.toISOString(),
    prev_hash: row.prevHash,
    hash: row.hash,
  };
}

function toFilter(actor: Actor, q: z.infer<typeof AuditFilterQuery>): AuditFilter {
  return {
    teamId: actor.teamId,
    action: q.action,
    actorKeyId: q.actor,
    target: q.target,
    since: q.since ? new Date(q.since) : undefined,
    until: q.until ? new Date(q.until) : undefined,
  };
}

export function registerAuditRoutes(app: App, deps: AppDeps): void {
  const { db } = deps;

  app.openapi(
    createRoute({
      middleware: requires('audit:read'),
      method: 'get',
      path: '/v1/audit',
      tags,
      request: { query: AuditListQuery },
      responses: { 200: json(page(AuditRowSchema, 'AuditPage'), "The team's audit rows in chain order (oldest first)"), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const q = c.req.valid('query');
      const rows = await listAudit(db, { ...toFilter(actor, q), after: q.page === undefined ? undefined : Number(q.page), limit: q.limit });
      return c.json({ data: rows.map(toAuditResponse), next_page: rows.length === q.limit ? String(rows.at(-1)!.seq) : null }, 200);
    },
  );

  app.openapi(
    createRoute({
      middleware: requires('audit:read'),
      method: 'get',
      path: '/v1/audit/export',
      tags,
      request: { query: AuditFilterQuery },
      responses: {
        200: { description: "The team's audit rows as JSON lines, one row (as in GET /v1/audit) per line, in chain order", content: { 'application/x-ndjson': { schema: z.string() } } },
        ...problemResponses,
      },
    }),
    async (c) => {
      const actor = c.get('actor');
      const filter = toFilter(actor, c.req.valid('query'));
      // the export is the log as it stood at the request: rows appended meanwhile cannot keep it from ending
      const throughSeq = await lastAuditSeq(db);
      const encoder = new TextEncoder();
      let after = 0;
      // pulled a page at a time, as the client reads: a large log is never held in memory
      const body = new ReadableStream<Uint8Array>({
        async pull(controller) {
          try {
            const rows = await listAudit(db, { ...filter, after, throughSeq, limit: EXPORT_PAGE });
            if (rows.length > 0) {
              controller.enqueue(encoder.encode(rows.map((row) => `${JSON.stringify(toAuditResponse(row))}\n`).join('')));
              after = rows.at(-1)!.seq;
            }
            if (rows.length < EXPORT_PAGE) controller.close();
          } catch (err) {
            // the response is cut off rather than ended cleanly, so a reader cannot take a partial export for a whole one
            deps.log?.({ level: 'ERROR', msg: 'audit export failed', requestId: c.get('requestId'), error: String(err) });
            controller.error(err);
          }
        },
      });
      const res = c.newResponse(body, 200, { 'content-type': 'application/x-ndjson', 'content-disposition': `attachment; filename="audit-${actor.teamId}.jsonl"` });
      // zod-openapi types every application/…json… answer as one JSON body, x-ndjson included: this one is a stream
      return res as never;
    },
  );

  app.openapi(
    createRoute({
      // the permission the walk asked for, named before the query is validated (the handler checks it again on the
      // validated value)
      middleware: (c, next) => requires(c.req.query('from') === 'start' ? 'audit:verify_full' : 'audit:read')(c, next),
      method: 'get',
      path: '/v1/audit/verify',
      tags,
      description:
        "Walks the hash chain (one chain for every team's rows) and reports the first row whose hash or link does not hold. " +
        'By default the walk starts at the last checkpoint: it checks that the row verified last still has the hash it had, walks only the rows appended since, and, ' +
        'when they hold, moves the checkpoint to the newest. So a row changed behind the database guard after it was verified is found only by `from=start`, ' +
        'the whole chain from its first row, which needs audit:verify_full (platform admins). The answer counts only the caller\'s team\'s rows.',
      request: { query: VerifyQuery },
      responses: { 200: json(VerifySchema, 'The verdict'), ...problemResponses },
    }),
    async (c) => {
      const actor = c.get('actor');
      const { from } = c.req.valid('query');
      // the whole chain is every team's rows: walking it on every call is the platform's cost, not one tenant's
      if (from === 'start') requirePermission(actor, 'audit:verify_full');
      const verdict = await verifyAuditChain(db, { from, teamId: actor.teamId });
      if (verdict.ok) return c.json({ ok: true, from, rows: verdict.teamRows }, 200);
      const ours = verdict.brokenTeamId === actor.teamId;
      const gone = verdict.brokenTeamId === null;
      return c.json(
        {
          ok: false,
          from,
          rows: verdict.teamRows,
          broken:
            ours || gone
              ? { seq: verdict.brokenSeq, id: verdict.brokenId, why: verdict.why, other_team: false }
              : { seq: verdict.brokenSeq, id: null, why: 'a row of another team does not verify; its content is not shown', other_team: true },
        },
        200,
      );
    },
  );
}
